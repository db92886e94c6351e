"""The serving core without HTTP: the micro-batcher through which /suggest requests share passes."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labelrec.serving import MicroBatcher, Snapshot


class SlowModel:
    """Scores a product by its title length; every pass takes ``seconds`` and is recorded."""

    def __init__(self, seconds: float = 0.02, fail: bool = False) -> None:
        self.seconds = seconds
        self.fail = fail
        self.passes: list[list[str]] = []

    def score(self, texts: list[dict[str, str]]) -> tuple[np.ndarray, list[dict[str, float]]]:
        time.sleep(self.seconds)
        if self.fail:
            raise RuntimeError("model broke")
        self.passes.append([t["title"] for t in texts])
        scores = np.asarray([[len(t["title"]), 1.0] for t in texts], dtype=np.float32)
        return scores, [{f"new:{t['title']}": 0.5} for t in texts]


def snapshot(model: Any, generation: int = 1) -> Snapshot:
    return Snapshot(model, str(generation), {}, generation, time.time())


def products(n: int, prefix: str = "p") -> list[dict[str, str]]:
    return [{"title": f"{prefix}{'x' * i}", "description": ""} for i in range(n)]


def test_concurrent_requests_share_passes_and_get_their_own_rows() -> None:
    model = SlowModel()
    snap = snapshot(model)
    batcher = MicroBatcher(threading.Lock(), max_batch=64)
    requests = [products(1 + i % 3, prefix=f"r{i}-") for i in range(40)]

    async def main() -> list[tuple[np.ndarray, list[dict[str, float]]]]:
        return await asyncio.gather(*(batcher.score(snap, r) for r in requests))

    answers = asyncio.run(main())
    for request, (scores, new) in zip(requests, answers, strict=True):
        assert scores[:, 0].tolist() == [len(p["title"]) for p in request]
        assert [next(iter(row)) for row in new] == [f"new:{p['title']}" for p in request]
    n_products = sum(len(r) for r in requests)
    assert batcher.products == n_products == sum(len(p) for p in model.passes)
    assert batcher.passes == len(model.passes) < len(requests) / 4  # shared forward passes
    assert max(len(p) for p in model.passes) <= 64


def test_a_lone_request_is_scored_at_once() -> None:
    model = SlowModel(seconds=0.0)
    batcher = MicroBatcher(max_batch=8)

    async def main() -> float:
        t0 = time.perf_counter()
        await batcher.score(snapshot(model), products(1))
        return time.perf_counter() - t0

    assert asyncio.run(main()) < 0.5 and batcher.passes == 1


def test_passes_keep_snapshots_apart_and_cap_their_size() -> None:
    old, new = SlowModel(), SlowModel()
    batcher = MicroBatcher(max_batch=5)

    async def main() -> None:
        calls = [batcher.score(snapshot(old, 1), products(2, "a")) for _ in range(4)]
        calls += [batcher.score(snapshot(new, 2), products(3, "b")) for _ in range(3)]
        calls.append(batcher.score(snapshot(new, 2), products(7, "c")))  # over the cap: alone
        await asyncio.gather(*calls)

    asyncio.run(main())
    assert all(t.startswith("a") for p in old.passes for t in p)
    assert all(t[0] in "bc" for p in new.passes for t in p)
    assert sum(map(len, old.passes)) == 8 and sum(map(len, new.passes)) == 16
    assert sorted(len(p) for p in new.passes if any(t.startswith("c") for t in p)) == [7]
    assert all(len(p) <= 5 for p in old.passes + new.passes if not p[0].startswith("c"))


def test_a_failing_pass_fails_its_requests_and_the_next_ones_are_served() -> None:
    broken, fine = SlowModel(fail=True), SlowModel()
    batcher = MicroBatcher()

    async def main() -> None:
        results = await asyncio.gather(
            *(batcher.score(snapshot(broken, 1), products(1)) for _ in range(3)),
            return_exceptions=True,
        )
        assert all(isinstance(r, RuntimeError) and "model broke" in str(r) for r in results)
        scores, _ = await batcher.score(snapshot(fine, 2), products(2))
        assert scores.shape == (2, 2)

    asyncio.run(main())


def test_a_request_cancelled_while_waiting_does_not_stop_the_others() -> None:
    model = SlowModel(seconds=0.05)
    batcher = MicroBatcher()

    async def main() -> None:
        first = asyncio.ensure_future(batcher.score(snapshot(model), products(1, "first")))
        await asyncio.sleep(0.01)  # the first pass is running; these two queue behind it
        gone = asyncio.ensure_future(batcher.score(snapshot(model), products(1, "gone")))
        kept = asyncio.ensure_future(batcher.score(snapshot(model), products(1, "kept")))
        await asyncio.sleep(0)
        gone.cancel()
        scores, _ = await kept
        assert scores[0, 0] == len("kept")
        await first

    asyncio.run(main())
    assert ["gone"] not in model.passes and ["kept"] in model.passes


def test_each_event_loop_gets_its_own_queue() -> None:
    model = SlowModel(seconds=0.0)
    batcher = MicroBatcher()
    for _ in range(2):  # a closed loop's worker must not hold up the next loop's requests
        scores, _ = asyncio.run(batcher.score(snapshot(model), products(1)))
        assert scores.shape == (1, 2)


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        MicroBatcher(max_batch=0)
    with pytest.raises(ValueError, match="passes must be >= 1"):
        MicroBatcher(passes=0)


class CountingModel(SlowModel):
    """A SlowModel that records how many of its passes ran at the same time."""

    def __init__(self, seconds: float = 0.05) -> None:
        super().__init__(seconds)
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def score(self, texts: list[dict[str, str]]) -> tuple[np.ndarray, list[dict[str, float]]]:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return super().score(texts)
        finally:
            with self._lock:
                self.running -= 1


@pytest.mark.parametrize("passes", [1, 2, 3])
def test_passes_run_side_by_side_up_to_the_slots_of_busy(passes: int) -> None:
    model = CountingModel()
    snap = snapshot(model)
    batcher = MicroBatcher(threading.BoundedSemaphore(passes), max_batch=4, passes=passes)
    requests = [products(2, prefix=f"r{i}-") for i in range(24)]

    async def main() -> list[tuple[np.ndarray, list[dict[str, float]]]]:
        return await asyncio.gather(*(batcher.score(snap, r) for r in requests))

    answers = asyncio.run(main())
    for request, (scores, _) in zip(requests, answers, strict=True):
        assert scores[:, 0].tolist() == [len(p["title"]) for p in request]
    assert model.most == passes
    assert batcher.products == 48 and all(len(p) <= 4 for p in model.passes)


def test_a_busy_slot_held_elsewhere_leaves_one_pass_at_a_time() -> None:
    model = CountingModel(seconds=0.02)
    busy = threading.BoundedSemaphore(2)
    busy.acquire()  # an explanation or a file being scored holds the other slot
    batcher = MicroBatcher(busy, max_batch=2, passes=2)

    async def main() -> None:
        await asyncio.gather(*(batcher.score(snapshot(model), products(1)) for _ in range(8)))

    asyncio.run(main())
    busy.release()
    assert model.most == 1 and batcher.passes == len(model.passes) >= 4


def test_a_directory_that_changes_while_loading_is_refused(
    trained_model_dir, tmp_path, monkeypatch
) -> None:
    import shutil

    from labelrec import serving

    model = shutil.copytree(
        trained_model_dir, tmp_path / "m", ignore=shutil.ignore_patterns("checkpoints")
    )
    real = serving.open_tagger

    def open_while_a_retrain_writes(*args, **kwargs):
        rec = real(*args, **kwargs)
        (model / "thresholds.json").write_text(
            (model / "thresholds.json").read_text(encoding="utf-8") + " ", encoding="utf-8"
        )
        return rec

    holder = serving.ModelHolder(str(model))
    monkeypatch.setattr(serving, "open_tagger", open_while_a_retrain_writes)
    result = holder.reload()
    assert result.status == "refused" and "changed while it was loading" in result.error
    monkeypatch.setattr(serving, "open_tagger", real)
    assert holder.reload().status == "reloaded"  # once it stops changing


def test_a_refused_version_is_tried_again_when_its_index_is_rebuilt_or_after_a_wait(
    trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new version refused because its product index is the last model's loads once the index
    is rebuilt; one refused by an error that may not come again (I/O) is tried again by a poll
    after a wait that doubles with each refusal in a row, also when nothing serves yet."""
    import types

    from labelrec import serving
    from labelrec.predict import TagRecommender

    rec = TagRecommender.load(trained_model_dir, backend="torch")
    state = {"version": "1", "index": "1", "fails": 1}
    loads: list[str] = []
    clock = [1000.0]
    monkeypatch.setattr(
        serving, "time", types.SimpleNamespace(time=time.time, monotonic=lambda: clock[0])
    )

    def loader(uri: str) -> tuple:
        loads.append(state["version"])
        if state["fails"]:
            state["fails"] -= 1
            raise OSError(5, "Input/output error")
        return rec, state["version"], {}

    class Index:
        def sources(self) -> dict:
            return {"built_for": state["index"]}

        def __call__(self, snap: object) -> str:
            if state["index"] != snap.version:
                raise ValueError("the index is another model's: rebuild it")
            return "index"

    holder = serving.ModelHolder("m", poll_seconds=30.0, loader=loader)
    monkeypatch.setattr(holder, "latest_version", lambda: state["version"])
    holder.extensions["index"] = Index()
    assert holder.reload().status == "refused" and not holder.ready  # nothing serves yet
    assert holder.reload().status == "refused" and loads == ["1"]  # waits a poll
    clock[0] += 30
    assert holder.reload().status == "reloaded" and loads == ["1", "1"]

    state["version"] = "2"  # a retrain; the index is still the first model's
    for tries in (1, 1, 1):
        result = holder.reload()
        assert result.status == "refused" and "rebuild it" in result.error
        assert loads.count("2") == tries and holder.current.version == "1"
    state["index"] = "2"  # rebuilt for the new version: taken up at the next check
    assert holder.reload().status == "reloaded" and holder.current.version == "2"

    state.update(version="3", index="3", fails=3)  # a new version whose reads fail three times
    interactions = iter(range(1000))  # a file the index reads, rewritten at every check
    monkeypatch.setattr(Index, "sources", lambda self: {"interactions": next(interactions)})
    waits = []
    for _ in range(3):
        assert holder.reload().status == "refused"
        waits.append(holder.retry_seconds(holder._refusals))
        clock[0] += waits[-1] - 1
        assert holder.reload().status == "refused"  # not yet
        clock[0] += 1
    assert waits == [30.0, 60.0, 120.0] and loads.count("3") == 3
    assert holder.reload().status == "reloaded" and holder.current.version == "3"
    assert holder.retry_seconds(99) == serving.RETRY_MAX_SECONDS


def test_workers_share_the_cores_and_poll_a_directory(tmp_path, monkeypatch) -> None:
    """Several workers divide the cores among all their passes, and a model directory is polled
    (a reload asked of one process reaches no other); one worker polls only a registry URI."""
    from labelrec.serving import REGISTRY_POLL_SECONDS, ModelHolder, threads_per_pass

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert threads_per_pass(1) is None  # one pass in one process: the library's default
    assert (threads_per_pass(2), threads_per_pass(1, 2), threads_per_pass(2, 2)) == (4, 4, 2)
    assert threads_per_pass(4, 4) == 1
    folder = str(tmp_path)
    assert ModelHolder.configured(folder).poll_seconds == 0.0
    assert ModelHolder.configured(folder, workers=2).poll_seconds == REGISTRY_POLL_SECONDS
    assert ModelHolder.configured(folder, 0.0, workers=2).poll_seconds == 0.0
    assert ModelHolder.configured("models:/m@champion").poll_seconds == REGISTRY_POLL_SECONDS
    assert ModelHolder.configured(folder, workers=2).num_threads == 4
    with pytest.raises(ValueError, match="workers must be >= 1"):
        ModelHolder(folder, workers=0)
