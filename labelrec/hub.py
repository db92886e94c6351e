"""A model directory on the Hugging Face Hub (``labelrec push``).

What is uploaded is the model as ``labelrec suggest``, the MLflow flavor and transformers read it:
weights, tokenizer, tags, thresholds, the other voters, ``labelrec.json`` and the model card
(written again for the repository's name, which its code then loads).
Training state (``checkpoints/``, ``tuning/``, ``.saving/``), hidden files and a product index
kept inside the folder (it holds the catalog's titles) stay behind. Loading from the Hub is
transformers' own path (``model.backbone`` takes a Hub id); this module only uploads.
"""

from __future__ import annotations

from pathlib import Path

from labelrec.errors import ModelError
from labelrec.modeldir import CARD_FILE, CAUSAL_INFO, LABELREC_FILE, TRAINING_ONLY, read_json


def ignored(model_dir: str | Path) -> list[str]:
    """Patterns (as ``upload_folder`` reads them) of what a push leaves out of ``model_dir``."""
    from labelrec.recommend.index import MANIFEST_FILE

    root = Path(model_dir)
    patterns = [f"{name}/**" for name in TRAINING_ONLY]
    patterns += [".*", "**/.*", "*.lock"]
    for manifest in sorted(root.rglob(MANIFEST_FILE)):  # a product index, at any depth
        if manifest.parent != root:
            patterns.append(f"{manifest.parent.relative_to(root).as_posix()}/**")
    return patterns


def _unreachable() -> tuple[type[BaseException], ...]:
    """The errors of a Hub that cannot be reached (refused, timed out, no route): the HTTP
    client's transport errors (httpx, or the httpx2 of newer huggingface_hub) and OSError."""
    import importlib

    kinds: list[type[BaseException]] = [OSError]
    for module in ("httpx", "httpx2"):
        try:
            kinds.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(kinds)


def push(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    message: str | None = None,
    token: str | None = None,
    api: object | None = None,
) -> str:
    """Upload the model in ``model_dir`` to the Hub repository ``repo_id`` (created if it does
    not exist, ``private`` then); returns the commit's URL. ``revision``: a branch (created
    from the main one when new). ``api``: a ``huggingface_hub.HfApi`` (one with ``token``)."""
    root = Path(model_dir)
    if not ((root / LABELREC_FILE).is_file() or (root / CAUSAL_INFO).is_file()):
        raise ModelError(
            f"{model_dir} is not a labelrec model directory (no {LABELREC_FILE} or {CAUSAL_INFO})"
        )
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repository {repo_id!r}: give it as owner/name")
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
    from huggingface_hub.utils import filter_repo_objects

    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(root / name))
        for name in filter_repo_objects(files, ignore_patterns=ignored(root))
        if name != CARD_FILE  # written below for the repository
    ]
    if (root / LABELREC_FILE).is_file():  # the card names the model as it is loaded now
        from labelrec.modelcard import tagger_card

        card = tagger_card(read_json(root / LABELREC_FILE), repo_id)
        operations.append(CommitOperationAdd(CARD_FILE, str(card).encode("utf-8")))
    else:  # a describer: its card from causal.json
        from labelrec.modelcard import describer_card

        card = describer_card(read_json(root / CAUSAL_INFO), repo_id)
        operations.append(CommitOperationAdd(CARD_FILE, str(card).encode("utf-8")))
    hub = api if api is not None else HfApi(token=token)
    try:
        hub.create_repo(repo_id, private=private, exist_ok=True)  # type: ignore[attr-defined]
        if revision is not None:
            hub.create_branch(repo_id, branch=revision, exist_ok=True)  # type: ignore[attr-defined]
        commit = hub.create_commit(  # type: ignore[attr-defined]
            repo_id=repo_id,
            operations=operations,
            revision=revision,
            commit_message=message or f"labelrec model {root.resolve().name}",
        )
    except OfflineModeIsEnabled:
        raise ModelError(
            "HF_HUB_OFFLINE is set: uploading needs the Hub (unset it, and log in with `hf auth"
            " login` or HF_TOKEN)"
        ) from None
    except HfHubHTTPError as err:  # no token, no rights, a name taken: the Hub's own words
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelError(f"{repo_id}: {first}") from None
    except _unreachable() as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelError(
            f"{repo_id}: cannot reach the Hub ({type(err).__name__}: {first}); nothing was uploaded"
        ) from None
    return str(getattr(commit, "commit_url", commit))
