#!/usr/bin/env python
"""Training speed per backbone, and its share of the machine's FLOP limit, in one table.

    .venv/bin/python benchmarks/train_speed.py --catalog amazon_uk_toys --steps 20

Each row trains one part for ``--steps`` optimizer steps on the catalog's first training
products, with the settings of its config (``configs/default.yaml`` for the MiniLM tagger,
``configs/llm.yaml`` for the decoders): the tagger (``labelrec train`` without valid or
refit) on each ``--taggers`` backbone, and the tag generator (``fit_generator``) on each
``--generators`` backbone. Columns: training products/s; the FLOP/s that torch counted for the
first batch, scaled by the tokens (``labelrec.flops``); and its share of the matmul peak of the
same device and dtype (square products, measured here: the practical limit, not a datasheet
figure). The dtype is the one the row computes in: bfloat16 where its ``mixed_precision``
(``auto``: ``labelrec.model.resolve_mixed_precision``) autocasts, else float32. On a GPU the
same command measures the GPU.
Needs ``../shared/data``; the decoders need ``make install-llm``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
NAMES = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "gemma3": "google/gemma-3-270m",
}
COMPUTE = {"no": "float32", "bf16": "bfloat16", "fp16": "float16"}  # mixed_precision -> dtype


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--catalog", default="amazon_uk_toys", help="folder name under --data")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared catalogs root")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps a row")
    p.add_argument(
        "--taggers",
        nargs="*",
        default=["minilm", "smollm2", "gemma3"],
        help="tagger backbones: minilm, smollm2, gemma3, or an encoder's hub id or folder",
    )
    p.add_argument(
        "--generators",
        nargs="*",
        default=["smollm2", "gemma3"],
        help="generator backbones: smollm2, gemma3, or a decoder's hub id or folder",
    )
    p.add_argument(
        "--mixed-precision",
        choices=("auto", "no", "bf16"),
        help="every row's train/generate.mixed_precision (default: its config's, auto)",
    )
    p.add_argument(
        "--whole-vocabulary",
        action="store_true",
        help="generators' loss over the whole vocabulary (generate.narrow_training=false)",
    )
    p.add_argument("--json", type=Path, help="write the rows here too")
    return p.parse_args(argv)


def tagger_row(
    backbone: str, train_file: Path, steps: int, mixed_precision: str | None = None
) -> dict[str, float]:
    from labelrec.config import load_config
    from labelrec.model import resolve_mixed_precision
    from labelrec.train import train

    decoder = backbone in ("smollm2", "gemma3")  # other names and folders: encoders
    config = ROOT / "configs" / ("llm.yaml" if decoder else "default.yaml")
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(
            config,
            [
                f"model.backbone={NAMES.get(backbone, backbone)}",
                f"data.train={train_file}",
                "data.valid=null",
                f"train.max_steps={steps}",
                "train.epochs=1",
                "train.refit=false",
                "generate.enabled=false",
                f"output={Path(out) / 'model'}",  # its lock file beside it goes with it
            ]
            + ([f"train.mixed_precision={mixed_precision}"] if mixed_precision else []),
        )
        batch = cfg.train.batch_size
        cfg.data.max_products = steps * batch  # the products those steps read
        result = train(cfg, progress=False)
    record = result.history[-1]
    return {
        "batch": batch,
        "products/s": record["products_per_s"],
        "flops/s": record.get("train_flops_per_s", float("nan")),
        "seconds": record["epoch_seconds"],
        "dtype": cfg.model.dtype,
        "computes in": COMPUTE[resolve_mixed_precision(cfg.train.mixed_precision)],
    }


def generator_row(
    backbone: str,
    train_file: Path,
    steps: int,
    mixed_precision: str | None = None,
    whole_vocabulary: bool = False,
) -> dict[str, float]:
    from labelrec.config import load_config
    from labelrec.data import TagVocab, category_separator, read_catalog
    from labelrec.model import resolve_mixed_precision
    from labelrec.taggers.generator import fit_generator

    cfg = load_config(ROOT / "configs" / "llm.yaml", [])
    gcfg = cfg.generate
    gcfg.backbone = NAMES.get(backbone, backbone)
    gcfg.epochs = 1
    gcfg.mixed_precision = mixed_precision or gcfg.mixed_precision
    gcfg.max_train_products = steps * gcfg.batch_size
    gcfg.narrow_training = gcfg.narrow_training and not whole_vocabulary
    products = read_catalog(train_file, cfg.data).products
    vocab = TagVocab.from_products(products)
    _, history = fit_generator(
        gcfg,
        cfg.lexical,
        products,
        vocab,
        cfg.seed,
        progress=False,
        path_separator=category_separator(cfg),
    )
    record = history[-1]
    return {
        "batch": gcfg.batch_size,
        "products/s": record["products_per_s"],
        "flops/s": record.get("train_flops_per_s", float("nan")),
        "seconds": record["epoch_seconds"],
        "dtype": gcfg.dtype,
        "computes in": COMPUTE[resolve_mixed_precision(gcfg.mixed_precision)],
        "loss over": "tag tokens" if gcfg.narrow_training else "vocabulary",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    train_file = args.data / args.catalog / "train.jsonl"
    if not train_file.is_file():
        print(f"train_speed: {train_file} not found (needs ../shared/data)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    import torch

    from labelrec.flops import matmul_peak

    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    rows: list[dict] = []
    for kind, names, fn in (
        ("tagger", args.taggers, tagger_row),
        (
            "generator",
            args.generators,
            partial(generator_row, whole_vocabulary=args.whole_vocabulary),
        ),
    ):
        for name in names:
            print(f"{kind} {name}: {args.steps} steps ...", file=sys.stderr)
            t0 = time.perf_counter()
            row = fn(name, train_file, args.steps, args.mixed_precision)
            row.update(part=kind, backbone=NAMES.get(name, name))
            row["wall s"] = time.perf_counter() - t0
            rows.append(row)
    peaks = {  # after training: the same warm machine
        name: matmul_peak(device, getattr(torch, name))
        for name in sorted({r["computes in"] for r in rows})
    }
    where = torch.cuda.get_device_name(0) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{args.catalog}, {args.steps} steps a row, {where}, torch {torch.__version__}")
    for name, peak in peaks.items():
        print(f"matmul peak ({name}): {peak / 1e9:.0f} GFLOP/s")
    print(
        "\n| part | backbone | batch | computes in | loss over | training products/s"
        " | GFLOP/s (torch's count) | share of matmul peak |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        share = r["flops/s"] / peaks[r["computes in"]]
        print(
            f"| {r['part']} | {r['backbone']} | {r['batch']} | {r['computes in']} "
            f"| {r.get('loss over', '-')} | {r['products/s']:.1f} "
            f"| {r['flops/s'] / 1e9:.1f} | {100 * share:.0f}% |"
        )
        r["share"] = share
    if args.json:
        args.json.write_text(json.dumps({"peak_flops_per_s": peaks, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
