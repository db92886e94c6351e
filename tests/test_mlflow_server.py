"""Tracking and registry against a real `mlflow server` on 127.0.0.1 (MLFLOW_TRACKING_URI=http)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from mlflow_fixtures import MLFLOW_ENV, fresh_db  # noqa: E402

from labelrec.mlflow import store  # noqa: E402
from labelrec.mlflow.steps import run_evaluate, run_train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow server not healthy after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """`mlflow server` on a free loopback port with its own SQLite store and artifact folder."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    db = fresh_db(folder / "server.db", tmp_path_factory)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_ENV}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = folder / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "mlflow", "server",
                "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{db}",
                "--artifacts-destination", str(folder / "artifacts"),
            ],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_healthy(url, proc, log)
        yield {"url": url, "folder": folder}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.slow
def test_train_register_evaluate_through_a_server(
    mlflow_server,
    tiny_backbone: Path,
    toy_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in MLFLOW_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server["url"])
    monkeypatch.chdir(tmp_path)

    info = store.configure()
    assert info.tracking_uri == mlflow_server["url"]
    assert info.artifact_location.startswith("mlflow-artifacts:/")  # the server's proxy

    cfg_overrides = [f"model.backbone={tiny_backbone}", "train.epochs=2"]
    trained = run_train(
        str(ROOT / "configs" / "tiny.yaml"),
        str(toy_data_dir / "train.jsonl"),
        str(toy_data_dir / "valid.jsonl"),
        cfg_overrides,
        name="labelrec-server",
        progress=False,
    )
    client = mlflow.MlflowClient()
    challenger = client.get_model_version_by_alias("labelrec-server", "challenger")
    assert str(challenger.version) == trained["version"] == "1"
    assert challenger.run_id == trained["run_id"]
    assert challenger.tags["data.train.digest"] == trained["datasets"]["train"]["digest"]
    history = client.get_metric_history(trained["run_id"], "valid_nDCG_at_3")
    assert [m.step for m in history] == [1, 2]
    files = {a.path for a in client.list_artifacts(trained["run_id"], "valid")}
    assert "valid/per_tag.csv" in files and "valid/f1_by_tag_frequency.png" in files

    # The registered model, loaded back through the server, gives the training run's numbers.
    evaluated = run_evaluate(
        "models:/labelrec-server@challenger", str(toy_data_dir / "valid.jsonl")
    )
    assert evaluated["metrics"]["nDCG@3"] == pytest.approx(trained["metrics"]["nDCG@3"])
    run = client.get_run(evaluated["run_id"])
    assert run.data.tags["labelrec.model.version"] == "1"
    assert run.data.metrics["nDCG_at_3"] == pytest.approx(trained["metrics"]["nDCG@3"])

    # Everything went to the server: its artifact folder, no local store.
    stored = list((mlflow_server["folder"] / "artifacts").rglob("model.safetensors"))
    assert stored, "the model's weights are not in the server's artifact folder"
    assert not (tmp_path / "mlruns.db").exists() and not (tmp_path / "mlruns").exists()
