"""benchmarks/serve_profile.py: sampled stacks filed by part of the request's path."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import serve_profile as sp  # noqa: E402

PROC = 'process 7:"bentoml serve labelrec.service:LabelRec"'
HTTP_OUTER = "run (uvicorn/server.py:60);__call__ (starlette/applications.py:9)"
ENDPOINT = "BodyLimit.__call__ (labelrec/service.py:120);suggest (labelrec/service.py:400)"
RAW = "\n".join(
    [
        # the micro-batcher's forward pass, under labelrec frames
        f"{PROC};_run (labelrec/serving.py:80);score_batch (labelrec/runtime.py:130);"
        "Session.run (onnxruntime/capi/onnxruntime_inference_collection.py:260) 30",
        # the voters, named by the innermost labelrec module
        f"{PROC};suggest (labelrec/predict.py:200);scores (labelrec/taggers/neighbours.py:90);"
        "_matmul_multivector (scipy/sparse/_compressed.py:500) 7",
        f"{PROC};suggest (labelrec/predict.py:200);span_features (labelrec/taggers/span.py:40) 4",
        f"{PROC};_rerank (labelrec/predict.py:300);features (labelrec/rerank.py:70);"
        "predict (sklearn/ensemble/_hist_gradient_boosting/predictor.py:10) 3",
        f"{PROC};rank (labelrec/predict.py:400);ancestor_consistent (labelrec/taxonomy.py:50) 2",
        # beneath the endpoint only the HTTP side: the response being sent, the access log
        f"{PROC};{HTTP_OUTER};{ENDPOINT};send (uvicorn/protocols/http/httptools_impl.py:1) 5",
        f"{PROC};{HTTP_OUTER};{ENDPOINT};emit (logging/__init__.py:1100) 6",
        f"{PROC};{HTTP_OUTER};{ENDPOINT} 8",  # on labelrec's own lines
        f"{PROC};{HTTP_OUTER};route (bentoml/_internal/server/http/traffic.py:30) 1",
        f"{PROC};run_forever (asyncio/base_events.py:600) 2",
        "",
        "not a stack line",
    ]
)


def test_part_of_files_a_stack_by_its_innermost_labelrec_module() -> None:
    parts = sp.summarize(RAW)
    assert parts == {
        sp.FORWARD: 30,
        sp.VOTERS: 7,
        sp.SPAN: 4,
        sp.RERANK: 3,
        sp.RANK: 2,
        sp.ENDPOINT: 8,
        sp.HTTP: 12,
        sp.OTHER: 2,
    }
    # a forward pass is the forward pass wherever it is called from
    assert sp.part_of([ENDPOINT, "run (x.py:1)", "Session.run (onnxruntime/a.py:1)"]) == sp.FORWARD


def test_table_gives_sampled_ms_per_product_for_each_load() -> None:
    loads = {
        "one a request": {
            "samples": {sp.FORWARD: 400, sp.HTTP: 200},
            "products": 100,
            "products_per_s": 50.0,
        },
        "batch": {
            "samples": {sp.FORWARD: 600, sp.VOTERS: 100},
            "products": 300,
            "products_per_s": 150.0,
        },
    }
    out = sp.table(loads, rate=200)  # a sample is 5 ms of a thread
    lines = out.splitlines()
    assert (
        lines[0] == "| part of the path | one a request, ms per product | batch, ms per product |"
    )
    assert f"| {sp.FORWARD} | 20.00 | 10.00 |" in lines
    assert f"| {sp.VOTERS} | 0.00 | 1.67 |" in lines
    assert f"| {sp.HTTP} | 10.00 | 0.00 |" in lines
    assert not any(sp.SPAN in line for line in lines)  # parts no load sampled are left out
    assert "| all sampled threads | 30.00 | 11.67 |" in lines
    assert lines[-1] == "| products/s while sampled | 50 | 150 |"


def test_a_missing_model_is_skipped_with_a_reason(tmp_path: Path, capsys) -> None:
    assert sp.main(["--model", str(tmp_path / "none")]) == 0
    assert "skipped: model" in capsys.readouterr().out
