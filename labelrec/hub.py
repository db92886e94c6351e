"""A model directory on the Hugging Face Hub (``labelrec push``).

What is uploaded is the model as ``labelrec suggest``, the MLflow flavor and transformers read it:
weights, tokenizer, tags, thresholds, the other voters, ``labelrec.json`` and the model card.
Training state (``checkpoints/``, ``tuning/``, ``.saving/``), hidden files and a product index
kept inside the folder (it holds the catalog's titles) stay behind. Loading from the Hub is
transformers' own path (``model.backbone`` takes a Hub id); this module only uploads.
"""

from __future__ import annotations

from pathlib import Path

from labelrec.errors import ModelError
from labelrec.modeldir import CAUSAL_INFO, LABELREC_FILE, TRAINING_ONLY


def ignored(model_dir: str | Path) -> list[str]:
    """``upload_folder`` patterns of what a push leaves out of ``model_dir``."""
    from labelrec.recommend.index import MANIFEST_FILE

    root = Path(model_dir)
    patterns = [f"{name}/**" for name in TRAINING_ONLY]
    patterns += [".*", "**/.*", "*.lock"]
    for manifest in sorted(root.glob(f"*/{MANIFEST_FILE}")):  # a product index
        patterns.append(f"{manifest.parent.name}/**")
    return patterns


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
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    hub = api if api is not None else HfApi(token=token)
    try:
        hub.create_repo(repo_id, private=private, exist_ok=True)  # type: ignore[attr-defined]
        if revision is not None:
            hub.create_branch(repo_id, branch=revision, exist_ok=True)  # type: ignore[attr-defined]
        commit = hub.upload_folder(  # type: ignore[attr-defined]
            repo_id=repo_id,
            folder_path=str(root),
            revision=revision,
            commit_message=message or f"labelrec model {root.resolve().name}",
            ignore_patterns=ignored(root),
        )
    except OfflineModeIsEnabled:
        raise ModelError(
            "HF_HUB_OFFLINE is set: uploading needs the Hub (unset it, and log in with `hf auth"
            " login` or HF_TOKEN)"
        ) from None
    except HfHubHTTPError as err:  # no token, no rights, a name taken: the Hub's own words
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelError(f"{repo_id}: {first}") from None
    return str(getattr(commit, "commit_url", commit))
