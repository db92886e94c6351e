"""benchmarks/serve.py: the report's targets and CPU table from a run's raw numbers."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import serve  # noqa: E402


def _load(p50: float, req_per_s: float, products_per_s: float, **cpu: float) -> dict:
    return {
        "p50_ms": p50,
        "p99_ms": 2 * p50,
        "req_per_s": req_per_s,
        "products_per_s": products_per_s,
        **cpu,
    }


def _results(c32_cpu_ms: float) -> dict:
    def cpu(ms: float, cores: float, client: float, per_pass: float) -> dict:
        return {
            "server_cpu_ms_per_product": ms,
            "server_cores": cores,
            "client_cores": client,
            "products_per_pass": per_pass,
        }

    service = {
        "suggest_c1": _load(8.0, 120.0, 120.0, **cpu(10.0, 1.2, 0.05, 1.0)),
        "suggest_c8": _load(30.0, 200.0, 200.0, **cpu(6.0, 1.4, 0.06, 4.0)),
        "suggest_c32": _load(100.0, 300.0, 300.0, **cpu(c32_cpu_ms, 1.5, 0.07, 16.0)),
        "batch": _load(250.0, 6.0, 400.0, **cpu(3.0, 1.7, 0.01, 64.0)),
        "in_process": {"products_per_s": 450.0, "batch1_p50_ms": 5.0},
    }
    base = {k: _load(40.0, 25.0, 25.0) for k in ("suggest_c1", "suggest_c8", "suggest_c32")}
    base["batch"] = _load(4000.0, 0.5, 32.0)
    return {"service": service, "baseline": base}


def test_table_reports_targets_client_cores_and_share_per_server_cpu() -> None:
    text = serve.table(_results(c32_cpu_ms=4.0))
    lines = text.splitlines()
    # 300 requests/s at concurrency 32 against 400 products/s in batches: 75%, not met
    assert any("concurrency 32 >= 80%" in line and "| 75% | no |" in line for line in lines)
    assert any("< 12 ms" in line and "| 8.0 ms | yes |" in line for line in lines)
    assert any(">= 80% of in-process (450" in line and "| 89% | yes |" in line for line in lines)
    assert "| /suggest, concurrency 32 | 4.00 | 1.50 | 0.07 | 16.0 |" in lines
    assert "| /suggest_batch (64/request, concurrency 2) | 3.00 | 1.70 | 0.01 | 64.0 |" in lines
    assert "Per second of server CPU, /suggest at concurrency 32 scores 75% " in text
    # a costlier request lowers the share per server CPU second
    assert "scores 50% " in serve.table(_results(c32_cpu_ms=6.0))


def test_table_without_server_cpu_has_no_cpu_table() -> None:
    results = _results(c32_cpu_ms=4.0)
    for row in results["service"].values():
        row.pop("server_cpu_ms_per_product", None)
    text = serve.table(results)
    assert "server CPU ms per product" not in text
    assert "Per second of server CPU" not in text
