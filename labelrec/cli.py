"""Command line: a thin front end over the library (Annif's verbs: train, eval, suggest, index)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _load_recommender(args: argparse.Namespace) -> Any:
    from labelrec.predict import TagRecommender

    return TagRecommender.load(
        args.model, quantize=getattr(args, "quantize", False), batch_size=args.batch_size
    )


def _data_config(args: argparse.Namespace, model_dir: str | None = None) -> Any:
    """Column mapping for reading catalogs: --config and overrides, else the model's own."""
    from labelrec.config import Config, _build, load_config

    if getattr(args, "config", None) or getattr(args, "overrides", None):
        return load_config(args.config, args.overrides).data
    if model_dir is not None:
        info_path = Path(model_dir) / "labelrec.json"
        if info_path.is_file():
            info = json.loads(info_path.read_text(encoding="utf-8"))
            data = dict((info.get("config") or {}).get("data") or {})
            for key in ("train", "valid", "unlabeled", "max_products"):
                data.pop(key, None)
            return _build(Config, {"data": data}, "").data
    return Config().data


def cmd_train(args: argparse.Namespace) -> int:
    from labelrec.config import load_config
    from labelrec.train import train

    cfg = load_config(args.config, args.overrides)
    result = train(cfg, resume=args.resume, progress=not args.no_progress)
    print(f"model saved to {result.output} (best epoch {result.best_epoch}, {result.n_tags} tags)")
    _print_metrics(result.metrics)
    return 0


def _print_metrics(values: dict[str, float]) -> None:
    for key, value in values.items():
        print(f"{key:<22}{value:.4f}" if isinstance(value, float) else f"{key:<22}{value}")


def cmd_eval(args: argparse.Namespace) -> int:
    import csv

    from labelrec.data import read_catalog
    from labelrec.evaluate import evaluate_scores_on

    rec = _load_recommender(args)
    catalog = read_catalog(args.data, _data_config(args, args.model))
    if catalog.skipped:
        print(f"skipped {catalog.n_skipped} bad rows of {args.data}", file=sys.stderr)
    scores, _ = rec.predict_scores(catalog.products)
    result = evaluate_scores_on(scores, catalog.products, rec.vocab, rec.thresholds(args.threshold))
    _print_metrics(result.metrics)
    if args.metrics_file:
        Path(args.metrics_file).write_text(json.dumps(result.metrics, indent=2), encoding="utf-8")
    if args.results_file:
        with open(args.results_file, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(result.per_tag[0]))
            writer.writeheader()
            writer.writerows(result.per_tag)
    return 0


def _parse_line(line: str, number: int) -> dict[str, str]:
    text = line.rstrip("\n")
    if text.lstrip().startswith("{"):
        try:
            item = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"<stdin>, line {number}: invalid JSON: {err.msg}") from None
        if not isinstance(item, dict) or not isinstance(item.get("title"), str):
            raise ValueError(f"<stdin>, line {number}, field 'title': missing or not a string")
        return item
    return {"title": text}


def cmd_suggest(args: argparse.Namespace) -> int:
    rec = _load_recommender(args)
    items = []
    for number, line in enumerate(sys.stdin, start=1):
        if line.strip():
            items.append(_parse_line(line, number))
    results = rec.recommend(items, limit=args.limit, threshold=args.threshold)
    for i, (item, suggestions) in enumerate(zip(items, results, strict=True)):
        if args.format == "jsonl":
            row = {"title": item["title"], "tags": [s.to_dict() for s in suggestions]}
            print(json.dumps(row, ensure_ascii=False))
            continue
        if i:
            print()
        for s in suggestions:
            print(f"{s.tag}\t{s.score:.4f}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from labelrec.batch import score_file

    rec = _load_recommender(args)

    def scorer(products: list) -> list:
        return [
            [s.to_dict() for s in row]
            for row in rec.recommend(products, limit=args.limit, threshold=args.threshold)
        ]

    bar = tqdm(unit="product", desc="index", disable=args.no_progress)
    n = score_file(
        args.data,
        args.output,
        _data_config(args, args.model),
        scorer,
        chunk_size=args.chunk_size,
        progress=bar.update,
    )
    bar.close()
    print(f"wrote {n} products to {args.output}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from labelrec.config import load_config
    from labelrec.pretrain import pretrain

    cfg = load_config(args.config, args.overrides)
    result = pretrain(cfg, progress=not args.no_progress)
    print(f"backbone saved to {result.output}")
    for row in result.history:
        print(json.dumps(row))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from labelrec.demo import write_demo

    paths = write_demo(args.output, n_products=args.products, seed=args.seed)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``labelrec`` argument parser."""
    parser = argparse.ArgumentParser(prog="labelrec", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    def config_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="YAML config (configs/default.yaml)")
        p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=1")

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help="model directory written by `labelrec train`")
        p.add_argument("--limit", type=int, default=10, help="at most this many tags a product")
        p.add_argument(
            "--threshold",
            type=float,
            default=None,
            help="score cut-off; default: the per-tag thresholds tuned on valid",
        )
        p.add_argument("--batch-size", type=int, default=64, help="products per forward pass")
        p.add_argument("--quantize", action="store_true", help="dynamic int8 (CPU)")

    p = sub.add_parser("train", help="fine-tune a tagger")
    config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a model on a labelled catalog")
    model_args(p)
    p.add_argument("--data", required=True, help="labelled catalog")
    p.add_argument("--metrics-file", help="write metrics as JSON")
    p.add_argument("--results-file", help="write per-tag results as CSV")
    config_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("suggest", help="tags for titles (or JSON objects) read from stdin")
    model_args(p)
    p.add_argument("--format", choices=["text", "jsonl"], default="text", help="output format")
    p.set_defaults(func=cmd_suggest)

    p = sub.add_parser("index", help="tag every product of a catalog file")
    model_args(p)
    p.add_argument("--data", required=True, help="catalog (.jsonl, .csv, .parquet)")
    p.add_argument("--output", required=True, help="output (.jsonl, .csv, .parquet)")
    p.add_argument("--chunk-size", type=int, default=1000, help="products per chunk")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    config_args(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("pretrain", help="domain-adaptive masked-LM pretraining")
    config_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("demo", help="write the built-in demo catalog")
    p.add_argument("--output", default="demo_data", help="folder for train/valid.jsonl")
    p.add_argument("--products", type=int, default=2400, help="number of products")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``labelrec`` command."""
    from labelrec.config import ConfigError
    from labelrec.data import CatalogError
    from labelrec.model import ModelError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "urllib3", "transformers", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except (ConfigError, CatalogError, ModelError, ValueError, FileNotFoundError) as err:
        print(f"labelrec {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
