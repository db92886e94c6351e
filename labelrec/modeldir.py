"""The layout of a model directory written by ``labelrec train``: the one place that names its
files, and the manifest of the components a directory holds.

    labelrec.json                 info: backbone, pooling, format version, metrics, config
    config.json, model.safetensors, tokenizer files    the neural tagger (merged, transformers)
    tags.json                     the tag vocabulary
    thresholds.json               global and per-tag thresholds
    fusion.json                   the fusion: which taggers vote, their weights (labelrec.fusion)
    tfidf.json, tfidf.npz         TF-IDF neighbours (labelrec.taggers.neighbours)
    embedding_knn.json, .npz      embedding neighbours (labelrec.taggers.neighbours)
    spans.json, spans.npz         the span tagger: open-vocabulary tags (labelrec.taggers.span)
    generator/                    the tag generator, a decoder LLM (labelrec.taggers.generator)
    rerank.json, rerank.joblib    the reranker over every voter's evidence (labelrec.rerank)
    rules.yaml                    rules stored with the model
    history.json                  training history
    README.md                     the model card (labelrec.modelcard), for people and the Hub
    checkpoints/, tuning/         training state; tuning/ holds a refit's tuning run and its
                                  choices (tuned.json): not part of the model
    .saving/                      a new model being written (``publish_staged`` moves it in)

Each component keeps its own format version in its meta file; ``manifest`` reads them. A
directory of labelrec before the taggers were saved apart holds the fusion, TF-IDF and embedding
neighbours together in ``lexical.json`` and ``lexical.npz`` (format 1), which still load.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from labelrec.errors import ModelError

T = TypeVar("T")
logger = logging.getLogger(__name__)

LABELREC_FILE = "labelrec.json"
VOCAB_FILE = "tags.json"
THRESHOLDS_FILE = "thresholds.json"
HISTORY_FILE = "history.json"
CARD_FILE = "README.md"
FUSION_META = "fusion.json"
TFIDF_META = "tfidf.json"
TFIDF_ARRAYS = "tfidf.npz"
EMBEDDING_META = "embedding_knn.json"
EMBEDDING_ARRAYS = "embedding_knn.npz"
LEXICAL_META = "lexical.json"  # format 1: fusion, TF-IDF and embedding neighbours in one
LEXICAL_ARRAYS = "lexical.npz"
SPAN_META = "spans.json"
SPAN_ARRAYS = "spans.npz"
GENERATOR_DIR = "generator"
RERANK_META = "rerank.json"
RERANK_MODEL = "rerank.joblib"
CAUSAL_INFO = "causal.json"
RULES_FILE = "rules.yaml"
CHECKPOINTS_DIR = "checkpoints"
TUNING_DIR = "tuning"
TUNED_FILE = "tuned.json"  # in tuning/: the epochs, fusion weights and thresholds it chose
PUBLISH_MARKER = ".publishing.json"  # in SAVING_DIR while its model moves in (what is left)
SAVING_DIR = ".saving"  # a model being written, which then replaces the one in the directory
TRAINING_ONLY = (CHECKPOINTS_DIR, TUNING_DIR, SAVING_DIR)
# A write that fails while its file system has less room than this reports a full disk.
FULL_DISK_BYTES = 64 * 2**20


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars, NaN and other objects made JSON-safe."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None  # JSON has no NaN
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def read_json(path: str | Path) -> Any:
    """A model file's JSON; a file that is not JSON is a ValueError naming it (a truncated copy,
    a hand edit), not the parser's bare line and column."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{path}: not valid JSON ({err}); the model directory is damaged"
        ) from None


# component -> (its meta file, which holds its format version, or None; its other files)
COMPONENTS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "tagger": (LABELREC_FILE, (VOCAB_FILE, THRESHOLDS_FILE, "config.json", "model.safetensors")),
    "fusion": (FUSION_META, ()),
    "tfidf": (TFIDF_META, (TFIDF_ARRAYS,)),
    "embedding": (EMBEDDING_META, (EMBEDDING_ARRAYS,)),
    "lexical": (LEXICAL_META, (LEXICAL_ARRAYS,)),  # format 1
    "span": (SPAN_META, (SPAN_ARRAYS,)),
    "generator": (f"{GENERATOR_DIR}/{CAUSAL_INFO}", ()),
    "rerank": (RERANK_META, (RERANK_MODEL,)),
    "rules": (None, (RULES_FILE,)),
}


def manifest(model_dir: str | Path, info_file: str = LABELREC_FILE) -> dict[str, dict[str, Any]]:
    """The components present in ``model_dir``: for each, its files there and its format
    version (None where the component has none). ``info_file``: where ``labelrec.json`` is while
    the directory is being written (its final name is reported)."""
    root = Path(model_dir)
    out: dict[str, dict[str, Any]] = {}
    for name, (meta, files) in COMPONENTS.items():
        on_disk = info_file if meta == LABELREC_FILE else meta
        if not (root / (on_disk or files[0])).exists():
            continue
        version = None
        if on_disk is not None:
            try:
                info = json.loads((root / on_disk).read_text(encoding="utf-8"))
                version = info.get("format_version")
            except (OSError, ValueError, AttributeError):
                version = None
        present = [meta] if meta else []
        present += [f for f in files if (root / f).exists()]
        out[name] = {"files": present, "format_version": version}
    return out


def remove_component(model_dir: str | Path, name: str) -> None:
    """Delete the files of component ``name`` (e.g. left in ``model_dir`` by an earlier run)."""
    import shutil

    if name == "tagger":
        raise ValueError("the neural tagger's files are the model itself")
    meta, files = COMPONENTS[name]
    for file in ((meta,) if meta else ()) + files:
        top = Path(model_dir) / Path(file).parts[0]
        if top.is_dir():
            shutil.rmtree(top)
        else:
            top.unlink(missing_ok=True)


def publish_staged(stage: str | Path, model_dir: str | Path, info_file: str) -> None:
    """Replace the model in ``model_dir`` with the one written in ``stage`` (its
    ``labelrec.json`` still named ``info_file``): the old ``labelrec.json`` goes first, then the
    components the new model lacks (not ``rules.yaml``, which people put there), then each file
    replaces its old version, the new ``labelrec.json`` last; ``stage`` is removed. A Ctrl-C
    meanwhile waits for the end (``uninterrupted``); a process killed meanwhile leaves
    ``stage/.publishing.json`` saying what is left, and ``finish_publish`` completes it."""
    stage, root = Path(stage), Path(model_dir)
    with uninterrupted():
        present = manifest(stage, info_file=info_file)
        plan = {
            "info_file": info_file,
            "remove": [n for n in COMPONENTS if n not in present and n not in ("tagger", "rules")],
        }
        marker = stage / PUBLISH_MARKER
        marker.with_suffix(".tmp").write_text(json.dumps(plan), encoding="utf-8")
        os.replace(marker.with_suffix(".tmp"), marker)
        _publish(stage, root, plan)


def _publish(stage: Path, root: Path, plan: dict[str, Any]) -> None:
    """Move ``stage``'s model into ``root`` by ``plan`` (what ``publish_staged`` wrote in its
    marker); each step may be done again after a kill."""
    info_file = plan["info_file"]
    if (stage / info_file).is_file():  # else the new labelrec.json is in place: only tidy up
        (root / LABELREC_FILE).unlink(missing_ok=True)
        for name in plan["remove"]:
            remove_component(root, name)
        for entry in sorted(stage.iterdir()):
            if entry.name in (info_file, PUBLISH_MARKER):
                continue
            target = root / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
        os.replace(stage / info_file, root / LABELREC_FILE)
    (stage / PUBLISH_MARKER).unlink()
    stage.rmdir()


def _first_process() -> bool:
    """True but in the later processes of a distributed launch (``RANK`` above 0)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def finish_publish(model_dir: str | Path) -> bool:
    """Complete a ``publish_staged`` into ``model_dir`` that a killed process left half done
    (its ``.saving/.publishing.json``); True, with a warning, when there was one. The caller holds
    ``output_lock(model_dir)``: no publish is running. Only the first process of a distributed
    launch (``RANK`` 0) does it, as only it holds the lock."""
    if not _first_process():
        return False  # the first process of a distributed launch finishes it for all
    stage = Path(model_dir) / SAVING_DIR
    try:
        plan = json.loads((stage / PUBLISH_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # none, or killed while it was written: nothing of the model moved yet
    with uninterrupted():
        _publish(stage, Path(model_dir), plan)
    logger.warning("%s: finished moving in a model a killed training left", model_dir)
    return True


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of ``path``; None when it is not there."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def load_whole(
    model_dir: str | Path,
    info_file: str,
    load: Callable[[], T],
    attempts: int = 4,
    wait: float = 0.5,
) -> T:
    """``load()`` of a model directory whose files a training may be replacing meanwhile: the
    result counts only when ``info_file`` is the same file after as before (a new model's
    ``labelrec.json`` goes last and the old one first, ``publish_staged``; a describer's folder
    is swapped whole, ``replace_dir``), else it is tried again after ``wait`` seconds. A load
    that fails while the directory is not changing fails as it is."""
    info = Path(model_dir) / info_file
    saving = Path(model_dir) / SAVING_DIR
    for attempt in range(attempts):
        before = _stamp(info)
        try:
            loaded = load()
        except Exception:
            moving_in = before is None and (saving / PUBLISH_MARKER).is_file()
            swapping = before is None and _replaced_meanwhile(model_dir)
            if (_stamp(info) == before and not (moving_in or swapping)) or (
                attempt == attempts - 1
            ):
                raise
            if moving_in:
                _finish_left_publish(model_dir)
        else:
            if before is not None and _stamp(info) == before:
                return loaded
        if attempt < attempts - 1:
            time.sleep(wait)
    raise ModelError(
        f"{model_dir}: the model changed while it was loading, {attempts} times (a training"
        " writing into it?); load it when the training is done"
    )


def _replaced_meanwhile(model_dir: str | Path) -> bool:
    """Whether ``model_dir`` is absent while its old folder stands beside it, moved aside
    (``replace_dir``'s ``.<name>.*.old``): between ``replace_dir``'s two renames the directory
    is briefly not there. A first training's staged folder alone (no old one) is no such gap:
    its one rename brings the folder in whole."""
    folder = Path(model_dir)
    if folder.exists():
        return False
    siblings = folder.parent.glob(f".{glob.escape(folder.name)}.*.old")
    return any(p.is_dir() for p in siblings)


def _finish_left_publish(model_dir: str | Path) -> None:
    """``finish_publish`` for a reader that finds a model half moved in: done at once when no
    labelrec writes the directory (a killed one left it), else left to the writer."""
    try:
        with output_lock(model_dir):
            finish_publish(model_dir)
    except OutputBusy:
        pass  # its publish is running: the next attempt reads what it wrote
    except PermissionError as err:
        raise ModelError(
            f"{model_dir}: a training was killed while it moved a new model in; labelrec"
            f" finishes that where it may write ({err.strerror})"
        ) from None


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """SIGINT and SIGTERM held back while the block runs, then delivered: a folder swapped or
    files replaced one by one are not left half done by a Ctrl-C between two steps. In the main
    thread only (the one that receives Python's signals); elsewhere the block runs as is."""
    held = (signal.SIGINT, signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or any(
        signal.getsignal(s) is None
        for s in held  # a handler set outside Python: left alone
    ):
        yield
        return
    caught: list[int] = []
    before = {s: signal.signal(s, lambda signum, _frame: caught.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        if caught:
            signal.raise_signal(caught[0])


def replace_dir(new: str | Path, target: str | Path) -> None:
    """Put the complete folder ``new`` (a sibling of ``target``) in ``target``'s place: the old
    folder moves aside, ``new`` takes its name, the old one is deleted. A reader finds the old
    folder or the new one, never half of one; SIGINT and SIGTERM wait until the old one is gone,
    and a rename that fails puts the old folder back."""
    new, target = Path(new), Path(target)
    old = new.with_name(new.name + ".old")
    shutil.rmtree(old, ignore_errors=True)  # left by a process killed here before
    with uninterrupted():
        moved = target.exists()
        if moved:
            os.replace(target, old)
        try:
            os.replace(new, target)
        except BaseException:
            if moved:
                os.replace(old, target)
            raise
        if moved:
            shutil.rmtree(old, ignore_errors=True)


class DiskFull(OSError):
    """A write failed because its file system is (nearly) full (``disk_room``)."""

    def __str__(self) -> str:
        return str(self.strerror or super().__str__())


def free_bytes(path: str | Path) -> int | None:
    """Bytes free to this user on the file system of ``path`` (or of its nearest existing
    parent); None where the system does not say."""
    try:
        place = Path(path).absolute()
        while not place.exists() and place != place.parent:
            place = place.parent
        return shutil.disk_usage(place).free
    except OSError:
        return None


def _not_the_disk(err: Exception) -> bool:
    """An error that a full disk does not cause: another refusal of the system, or memory."""
    if isinstance(err, OSError):
        return err.errno not in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"


@contextlib.contextmanager
def disk_room(path: str | Path, what: str) -> Iterator[None]:
    """The block writes ``what`` at ``path``: an error that says the disk is full (ENOSPC,
    EDQUOT), or another that a writer raised while that file system has less than
    ``FULL_DISK_BYTES`` free (torch's and safetensors' writers report a full disk as their own
    RuntimeError, such as "unexpected pos"), becomes ``DiskFull``, which names them and the
    room left. Other errors (a refusal such as PermissionError, memory), and any on a disk with
    room, pass as they are."""
    try:
        yield
    except DiskFull:  # an inner block's: it names its own file
        raise
    except Exception as err:
        if _not_the_disk(err):
            raise
        free = free_bytes(path)
        says_full = isinstance(err, OSError)  # ENOSPC or EDQUOT: _not_the_disk let it by
        if not says_full and (free is None or free >= FULL_DISK_BYTES):
            raise
        room = "" if free is None else f"{free / 2**20:.1f} MB free; "
        raise DiskFull(
            errno.ENOSPC,
            f"could not write {what} {path}: its disk is full ({room}{type(err).__name__}: {err})",
        ) from err


@contextlib.contextmanager
def staged_dir(target: str | Path) -> Iterator[Path]:
    """A new folder beside ``target`` to write a whole one into (with the umask's modes, not
    ``tempfile``'s private ones): leaving the block replaces ``target`` with it
    (``replace_dir``); an error on the way deletes it and leaves ``target`` as it was (on a full
    disk, ``DiskFull``)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    shared_mode(stage)
    try:
        with disk_room(target, "the folder"):  # measured before the stage goes
            yield stage
            replace_dir(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def holds_cwd(path: str | Path) -> bool:
    """Whether ``path`` is the current folder or one above it, which a folder replaced whole
    (``replace_dir``) would take along."""
    here = Path.cwd().resolve()
    return Path(path).resolve() in (here, *here.parents)


def shared_mode(path: str | Path) -> None:
    """Give ``path`` (made private by ``tempfile``: 0700, 0600) the mode a plain ``mkdir`` or
    ``open`` would have given it under the process's umask, so that a folder or file written
    through a temporary name is as readable as one written in place."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~_umask())


def _umask() -> int:
    """The process's umask: read from Linux's ``/proc`` where it is there; else set and put
    back, which leaves a moment in which another thread's new file would get mode 0666."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def output_lock(path: str | Path) -> Iterator[None]:
    """Held while ``path`` (a file or folder) is written: a second labelrec that would write
    it meanwhile is refused with an ``OutputBusy`` naming it, instead of both writing one
    output. The lock is the hidden file ``.<name>.lock`` beside ``path``, which stays. Of the
    processes of one distributed launch, the first (``RANK`` 0) holds it for all. The thread
    that holds it may take it again (a step that trains, then logs and registers the output,
    holds it throughout); another thread is refused like another process."""
    import filelock

    if not _first_process():
        yield
        return
    path = Path(path).resolve()
    me = threading.get_ident()
    with _HELD_GUARD:
        again = _HELD.get(path) == me
    if again:  # the outer block releases it
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(path.with_name(f".{path.name}.lock")), timeout=0)
    try:
        lock.acquire()
    except PermissionError as err:
        # the lock and the copy written before the swap both sit beside the output
        raise PermissionError(
            err.errno,
            f"{path}: cannot write in its folder {path.parent} ({err.strerror}); labelrec"
            " writes an output's lock and its new copy beside it: choose an output whose"
            " folder is writable",
        ) from None
    except filelock.Timeout:
        raise OutputBusy(
            f"{path}: another labelrec is writing it now; wait for it to finish, or write to"
            " another path"
        ) from None
    with _HELD_GUARD:
        _HELD[path] = me
    try:
        yield
    finally:
        with _HELD_GUARD:
            del _HELD[path]
        lock.release()


_HELD: dict[Path, int] = {}  # outputs this process locks, and the thread that holds each
_HELD_GUARD = threading.Lock()


class OutputBusy(OSError):
    """Another process is writing the output named (``output_lock``)."""
