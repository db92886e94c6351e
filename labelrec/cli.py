"""Command line: a thin front end over the library (Annif's verbs: train, eval, suggest, index)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from labelrec.config import NOT_PROMOTED

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SUGGEST_CHUNK = 256  # products of stdin that `suggest` scores and prints at a time
DESCRIBE_BATCHES = 4  # batches of `describe` written at a time


def _load_recommender(args: argparse.Namespace) -> Any:
    """The tagging model ``args.model`` names (a directory or an MLflow URI); ``args.model_dir``
    is set to its local directory."""
    from labelrec.opener import open_tagger, resolve

    rules = getattr(args, "rules", None)
    if rules:  # a bad rules file is said before the model loads
        from labelrec.rules import Rules

        rules = Rules.load(rules)
    resolved = resolve(args.model)
    args.model_dir = str(resolved.path)
    return open_tagger(
        resolved,
        quantize=getattr(args, "quantize", False),
        batch_size=args.batch_size,
        backend=getattr(args, "backend", "auto"),
        generate=not getattr(args, "no_generate", False),
        rules=rules,
    )


def _data_config(args: argparse.Namespace, model_dir: str | None = None) -> Any:
    """Column mapping for reading catalogs: --config with the overrides, else the model's own
    with the overrides on top of it. A config's ``data.max_products`` (a training file's cap)
    does not cut the catalog; a ``data.max_products=N`` override does."""
    from labelrec.config import reading_data_config

    info: dict[str, Any] = {}
    if model_dir is not None and not getattr(args, "config", None):
        info_path = Path(model_dir) / "labelrec.json"
        if info_path.is_file():
            info = json.loads(info_path.read_text(encoding="utf-8"))
    return reading_data_config(
        getattr(args, "config", None), getattr(args, "overrides", None), info
    )


def _check_config_args(args: argparse.Namespace) -> None:
    """--config and the overrides of a verb that reads a catalog with a model, checked before
    the model loads (seconds to minutes): only ``data.*`` settings, whose values are checked as
    training would."""
    from labelrec.config import ConfigError

    overrides = getattr(args, "overrides", None) or []
    ignored = [o for o in overrides if not o.split("=", 1)[0].strip().startswith("data.")]
    if ignored:
        raise ConfigError(
            f"{ignored[0]}: {args.command} reads catalogs with the model's settings and takes"
            " data.* overrides only (the columns, on_error...)"
        )
    _data_config(args)  # keys and values: a misspelt data.on_error before the model, not after


def _at_least(low: int) -> Any:
    """An argparse type: an integer >= ``low``."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if number < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {number}")
        return number

    return parse


def _checked_text(text: str, where: str) -> str:
    """``text`` unless it holds bytes that were not UTF-8 (read as lone surrogates)."""
    from labelrec.data import undecoded

    if (bad := undecoded(text)) is not None:
        raise ValueError(f"{where}: {bad}")
    return text


def _output_file(path: str | None, option: str) -> None:
    """Refuse an output file path that is a directory or lies under a file, before the work;
    its missing folders are created when it is written (:func:`_open_output`), so a run that
    fails first leaves none behind."""
    if path is None:
        return
    if path == "-":  # stdout carries the printed summary already
        raise ValueError(f"{option} -: give a file name (stdout shows the metrics as text)")
    if Path(path).is_dir():
        raise ValueError(f"{option} {path}: is a directory; give a file name")
    for folder in Path(path).absolute().parents:
        if folder.exists():
            if not folder.is_dir():
                raise ValueError(f"{option} {path}: {folder} is a file, not a folder")
            break


def _open_output(path: str, **kwargs: Any) -> Any:
    """``open(path, "w")`` after creating its missing folders."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return open(path, "w", encoding="utf-8", **kwargs)


def _no_library_progress() -> None:
    """--no-progress: transformers' own bars too (loading and writing weights)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def cmd_train(args: argparse.Namespace) -> int:
    from labelrec.config import load_config

    cfg = load_config(args.config, args.overrides)  # config errors before the heavy imports
    from labelrec.train import train

    if args.no_progress:
        _no_library_progress()
    result = train(cfg, resume=args.resume, progress=not args.no_progress)
    from labelrec.model import process_state

    if not process_state().is_main_process:  # under `accelerate launch`: one summary, not one each
        return 0
    if cfg.task == "describe":
        m = result.metrics
        print(f"describer saved to {result.output}: {result.train_seconds:.1f} s training")
        if "valid_rougeL_f1" in m:
            print(
                f"valid ({int(m['valid_n_products'])} products): ROUGE-L F1"
                f" {m['valid_rougeL_f1']:.4f}, {int(m['valid_empty_outputs'])} empty"
            )
        if "valid_rougeL_copy_nearest" in m:
            print(
                "copying the nearest training product's description:"
                f" {m['valid_rougeL_copy_nearest']:.4f}; describer minus copying"
                f" {m['valid_rougeL_gain']:+.4f} (95% interval {m['valid_rougeL_gain_low']:+.4f}"
                f" to {m['valid_rougeL_gain_high']:+.4f})"
            )
        return 0
    folds = int(result.metrics.get("tuning_folds", 1))  # > 1: tuned out of fold
    if result.refit is None:
        print(
            f"model saved to {result.output}: {result.n_tags} tags, best epoch {result.best_epoch}"
            f" of {len(result.history)}, {result.train_seconds:.1f} s training"
        )
    else:
        r = result.refit
        runs = f"the {folds} tuning runs are" if folds > 1 else "the tuning run is"
        print(
            f"model saved to {result.output}: {result.n_tags} tags, refit on {r['train_products']}"
            f" train + valid products for {r['epochs']} epochs ({r['train_seconds']:.1f} s);"
            f" {runs} in {result.output / r['tuning_dir']}"
        )
    keys = ("P@1", "P@3", "P@5", "nDCG@3", "PSP@5", "micro_f1", "macro_f1")
    shown = [f"{k} {result.metrics[k]:.4f}" for k in keys if k in result.metrics]
    if shown:
        which = "valid" if result.refit is None else "valid, tuning run"
        if folds > 1:
            which = f"train + valid out of fold, {folds} tuning folds"
        n = int(result.metrics.get("n_products", 0))
        print(f"{which} ({n} products): " + ", ".join(shown))
    return 0


def _print_metrics(values: dict[str, float]) -> None:
    for key, value in values.items():
        if key.startswith("n_") and isinstance(value, float) and value.is_integer():
            value = int(value)  # a count: n_products 42, not 42.0000
        print(f"{key:<22}{value:.4f}" if isinstance(value, float) else f"{key:<22}{value}")


def cmd_eval(args: argparse.Namespace) -> int:
    import csv

    from labelrec.data import check_catalog_file, read_catalog

    _output_file(args.metrics_file, "--metrics-file")  # before the work, not after it
    _output_file(args.results_file, "--results-file")
    check_catalog_file(args.data)
    _check_config_args(args)
    rec = _load_recommender(args)
    catalog = read_catalog(args.data, _data_config(args, args.model_dir))  # logs skipped rows
    if not catalog.products:
        raise ValueError(f"{args.data}: no products to evaluate")
    result = _evaluate_with_progress(rec, catalog.products, args)
    _print_metrics(result.metrics)
    if args.metrics_file:
        from labelrec.modeldir import jsonable

        # a metric with nothing to measure (a band without gold tags) is null: NaN is not JSON
        with _open_output(args.metrics_file) as fh:
            fh.write(json.dumps(jsonable(result.metrics), indent=2, allow_nan=False))
    if args.results_file:
        with _open_output(args.results_file, newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(result.per_tag[0]))
            writer.writeheader()
            writer.writerows(result.per_tag)
    return 0


def _evaluate_with_progress(rec: Any, products: list, args: argparse.Namespace) -> Any:
    """The evaluation of ``rec`` on ``products`` (``evaluate.EvaluationStream``), scored a part
    at a time (``score_parts``) under a progress bar: the scores of one part in memory at once."""
    from labelrec.evaluate import EvaluationStream
    from labelrec.progress import progress_bar

    stream = EvaluationStream.for_model(rec, products, args.threshold, args.limit)
    bar = progress_bar(total=len(products), unit="product", desc="eval", disable=args.no_progress)
    with bar:
        for scores, new in rec.score_parts(products):
            stream.add(scores, None if args.known_only else new)
            bar.update(len(scores))
    return stream.result()


def _utf8_stdout() -> None:
    """Results are written in UTF-8 whatever the locale, as stdin is read: a pipe or file on
    Windows (cp1252) or under ``LC_ALL=C`` (ASCII) could not hold a Chinese tag."""
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    if encoding != "utf8" and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8")


def _stdin_lines() -> Iterator[tuple[int, str]]:
    """(number, line) of stdin, without a byte order mark before the first line; a lone carriage
    return ends a line too (classic Mac text), as it does in catalog files. Bytes are decoded
    line by line, whatever the locale: those that are not UTF-8 become lone surrogates, which
    ``_checked_text`` names with their line."""
    binary = getattr(sys.stdin, "buffer", None)
    lines = sys.stdin if binary is None else (b.decode("utf-8", "surrogateescape") for b in binary)
    number = 0
    for raw in lines:
        pieces = re.split(r"\r(?!\n)", raw)
        if len(pieces) > 1 and not pieces[-1]:
            pieces.pop()  # the line ended with its lone carriage return
        for line in pieces:
            number += 1
            yield number, line.lstrip("\ufeff") if number == 1 else line


def _parse_line(line: str, number: int) -> dict[str, str]:
    """One product of ``suggest``'s stdin: a title, or a JSON object with ``title`` and an
    optional ``description``."""
    text = _checked_text(line.rstrip("\r\n"), f"<stdin>, line {number}")
    if text.lstrip().startswith("{"):
        return _parse_product_line(text, number)
    return {"title": text}


def cmd_suggest(args: argparse.Namespace) -> int:
    """Products of stdin scored ``SUGGEST_CHUNK`` at a time, each chunk printed as it is done:
    memory holds one chunk, and a bad line stops the run after the lines before it are out."""
    from labelrec.data import clean_text

    rec = _load_recommender(args)
    printed = 0

    def answer(items: list[dict[str, Any]], numbers: list[int]) -> None:
        nonlocal printed
        if not items:
            return
        if args.explain:
            results = rec.explain(items, limit=args.limit, threshold=args.threshold)
        else:
            results = [
                [s.to_dict() for s in row]
                for row in rec.suggest(items, limit=args.limit, threshold=args.threshold)
            ]
        for item, number, suggestions in zip(items, numbers, results, strict=True):
            if args.format == "jsonl":
                row = {"line": number}
                if item.get("id") is not None:
                    row["id"] = item["id"]
                row.update(title=item["title"], tags=suggestions)
                print(json.dumps(row, ensure_ascii=False))
                continue
            if printed:
                print()
            printed += 1
            for s in suggestions:
                line = f"{s['tag']}\t{s['score']:.4f}"
                if "evidence" in s:
                    evidence = s["evidence"].items()
                    line += "\t" + " ".join(_evidence_text(k, v) for k, v in evidence if v)
                print(line)
        sys.stdout.flush()

    items: list[dict[str, Any]] = []
    numbers: list[int] = []
    for number, line in _stdin_lines():
        if not clean_text(line):  # a blank line (or zero-width marks) is no product;
            continue  # `line` in the JSON rows says which lines were products
        try:
            items.append(_parse_line(line, number))
        except ValueError:
            answer(items, numbers)  # the lines before the bad one
            raise
        numbers.append(number)
        if len(items) == SUGGEST_CHUNK:
            answer(items, numbers)
            items, numbers = [], []
    answer(items, numbers)
    return 0


def _evidence_text(key: str, value: Any) -> str:
    """One part of ``suggest --explain``'s text line: ``neural=0.412``; the nearest training
    products as ``nearest=id:similarity,...`` (``--format jsonl`` has their titles)."""
    if isinstance(value, float):
        return f"{key}={value:.3f}"
    if isinstance(value, list) and all(isinstance(v, dict) and "id" in v for v in value):
        return f"{key}=" + ",".join(
            f"{v['id']}:{v['similarity']:.3f}" if "similarity" in v else str(v["id"]) for v in value
        )
    return f"{key}={value}"


def _parse_product_line(line: str, number: int) -> dict[str, Any]:
    """A JSON object with ``title`` and optional ``id``, ``tags``, ``description``."""
    from labelrec.data import clean_text, split_tag_string

    where = f"<stdin>, line {number}"
    try:
        item = json.loads(_checked_text(line, where))
    except json.JSONDecodeError as err:
        hint = (
            "a line that starts with '{' is read as a JSON object; a title that starts with one"
            ' goes in it: {"title": "..."}'
            if line.lstrip().startswith("{")
            else 'each line is a JSON object: {"title": "...", "tags": [...]}'
        )
        raise ValueError(f"{where}: invalid JSON: {err.msg} ({hint})") from None
    except RecursionError:
        raise ValueError(f"{where}: invalid JSON: nested too deeply") from None
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected a JSON object with a 'title'")
    title = item.get("title")
    if not isinstance(title, str) or not clean_text(title):  # zero-width alone: empty
        raise ValueError(f"{where}, field 'title': missing, empty or not a string")
    tags = item.get("tags")  # a list, or one string with "|" between tags (as catalogs have)
    if isinstance(tags, str):
        item["tags"] = tags = split_tag_string(tags)
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise ValueError(
            f"{where}, field 'tags': expected a list of strings or one string with '|' between tags"
        )
    if not isinstance(item.get("description", ""), (str, type(None))):
        raise ValueError(f"{where}, field 'description': expected a string")
    pid = item.get("id")
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, (str, int))):
        raise ValueError(f"{where}, field 'id': expected a string or an integer")
    if pid is not None:  # echoed as a string, as the service and the catalog reader read ids
        item["id"] = str(pid)
    from labelrec.data import unicode_problem

    for key in ("id", "title", "description", "tags"):
        values = item.get(key)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and (problem := unicode_problem(value)) is not None:
                raise ValueError(f"{where}, field {key!r}: {problem}")
    return item


def cmd_describe(args: argparse.Namespace) -> int:
    from labelrec.describe import as_product

    ids, products = [], []
    for number, line in _stdin_lines():
        if line.strip():
            item = _parse_product_line(line, number)
            ids.append(item.get("id"))
            # read as the describer reads it, before the model loads
            products.append(as_product(item, where=f"<stdin>, line {number}"))
    from labelrec.opener import open_describer

    if args.no_progress:
        _no_library_progress()
    describer = open_describer(args.describer)
    settings = {
        "batch_products": args.batch_size,
        "num_beams": args.num_beams,
        "max_new_tokens": args.max_new_tokens,
        "min_new_tokens": args.min_new_tokens,
        "length_penalty": args.length_penalty,
        "repetition_penalty": args.repetition_penalty,
        "no_repeat_ngram_size": args.no_repeat_ngram_size,
    }
    try:
        describer = describer.with_decoding(**settings)
    except ValueError as err:  # named as the options of this command name them
        from labelrec.describe import named_as

        def option(name: str) -> str:
            return "--batch-size" if name == "batch_products" else f"--{name.replace('_', '-')}"

        raise ValueError(named_as(err, option)) from None
    # printed a few batches at a time (prompts of similar length batched together within
    # them): a long run shows its progress, and a stop keeps what is printed
    from labelrec.progress import progress_bar

    chunk = describer.batch_products * DESCRIBE_BATCHES
    bar = progress_bar(
        total=len(products), unit="product", desc="describe", disable=args.no_progress
    )
    with bar:
        for start in range(0, len(products), chunk):
            texts = describer.describe(products[start : start + chunk])
            for pid, text in zip(ids[start : start + chunk], texts, strict=True):
                print(json.dumps({"id": pid, "description": text}, ensure_ascii=False))
            sys.stdout.flush()
            bar.update(len(texts))
    return 0


def _catalog_total(path: str, data_cfg: Any) -> int | None:
    """A progress bar's total for reading ``path``: at most ``data.max_products``."""
    from labelrec.data import count_records

    total = count_records(path)
    limit = data_cfg.max_products
    return total if limit is None or total is None else min(total, limit)


def cmd_index(args: argparse.Namespace) -> int:
    from labelrec.batch import check_score_paths, score_file
    from labelrec.progress import progress_bar

    check_score_paths(args.data, args.output)  # before the model loads
    _check_config_args(args)
    rec = _load_recommender(args)

    def scorer(products: list) -> list:
        return [
            [s.to_dict() for s in row]
            for row in rec.suggest(products, limit=args.limit, threshold=args.threshold)
        ]

    data_cfg = _data_config(args, args.model_dir)
    total = _catalog_total(args.data, data_cfg)
    bar = progress_bar(total=total, unit="product", desc="index", disable=args.no_progress)
    n = score_file(
        args.data,
        args.output,
        data_cfg,
        scorer,
        chunk_size=args.chunk_size,
        progress=bar.update,
    )
    bar.close()
    print(f"wrote {n} products to {args.output}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from labelrec.config import flatten, load_config, parse_overrides, unused_settings
    from labelrec.pretrain import SETTINGS_READ, pretrain

    cfg = load_config(args.config, args.overrides)
    read = ", ".join(f"{s}.{n}" for s, names in SETTINGS_READ.items() for n in sorted(names))
    for key in flatten(parse_overrides(args.overrides or [])):  # those load_config let pass
        section, _, name = key.partition(".")
        elsewhere = section in ("train", "lexical", "generate")
        if elsewhere and unused_settings(cfg, [key]):
            continue  # load_config said so
        if elsewhere or name.split(".")[0] not in SETTINGS_READ.get(section, {name}):
            hint = " (pretrain.lora adds LoRA adapters)" if key == "lora.enabled" else ""
            logging.getLogger(__name__).warning(
                "%s: not used by pretrain%s (it reads the pretrain and data sections and %s)",
                key,
                hint,
                read,
            )
    if args.no_progress:
        _no_library_progress()
    result = pretrain(cfg, progress=not args.no_progress)
    from labelrec.model import process_state

    if not process_state().is_main_process:  # under `accelerate launch`: one summary
        return 0
    print(f"backbone saved to {result.output}")
    for row in result.history:
        print(json.dumps(row))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from labelrec.demo import write_demo

    paths = write_demo(args.output, n_products=args.products, seed=args.seed, force=args.force)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from labelrec.hub import push

    url = push(
        args.model_dir,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        message=args.message,
    )
    print(f"pushed {args.model_dir} to {url}")
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    from labelrec.feedback import FeedbackStore

    # reading verbs: a mistyped database path is an error, not a new empty database
    store = (
        FeedbackStore(args.uri, create=False) if args.uri else FeedbackStore.from_env(create=False)
    )
    with store:
        if args.action == "export":
            n = store.export(args.output, args.hierarchy_separator)
            print(f"wrote {n} reviewed products to {args.output}")
            return 0
        stats = store.stats(args.hierarchy_separator)
    if args.format == "json":
        print(json.dumps(stats, ensure_ascii=False, indent=1))
        return 0
    keys = ("reviews", "products", "reviewers", "accepted", "rejected", "added", "unknown")
    for key in keys:
        print(f"{key:<16}{stats[key]}")
    if stats["overruled"]:
        overruled = f"{stats['overruled']} products (the last verdict on each tag is exported)"
        print(f"{'overruled':<16}{overruled}")
    rate = stats["acceptance_rate"]
    print(f"{'acceptance_rate':<16}{'-' if rate is None else f'{rate:.3f}'}")
    for version, n in stats["model_versions"].items():
        print(f"model version {version}: {n} reviews")
    if stats["most_rejected"]:
        print("most rejected: " + ", ".join(f"{t} ({n})" for t, n in stats["most_rejected"]))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:

    from labelrec.config import PromotionConfig, catalog_data_config, from_arguments
    from labelrec.mlflow.registry import promote
    from labelrec.mlflow.store import configure

    gate = from_arguments(PromotionConfig, args)
    _check_config_args(args)
    configure()
    data_cfg = catalog_data_config(args.config, args.overrides) if args.config else None
    d = promote(
        args.name,
        args.data,
        data_cfg=data_cfg,
        data_overrides=args.overrides,
        **dataclasses.asdict(gate),
    )
    verdict = "promoted" if d.promoted else "not promoted"
    print(f"{args.name} version {d.challenger_version}: {verdict}: {d.reason}")
    if d.challenger_score is not None:
        line = f"{d.metric}: challenger {d.challenger_score:.4f}"
        if d.champion_score is not None:
            line += f", champion (version {d.champion_version}) {d.champion_score:.4f}"
            line += f", difference {d.diff:+.4f}, 95% interval [{d.ci_low:+.4f}, {d.ci_high:+.4f}]"
        print(line)
    for band, drop in d.band_drops.items():
        print(f"recall@5 {band}: {-drop:+.4f}")
    return NOT_PROMOTED if args.exit_code and not d.promoted else 0


def cmd_product_index(args: argparse.Namespace) -> int:
    from labelrec.progress import progress_bar

    if args.command == "index-build":
        print("labelrec: `index-build` is an alias of `product-index`", file=sys.stderr)

    from labelrec.data import check_catalog_file
    from labelrec.modeldir import output_lock
    from labelrec.opener import is_model_uri, open_tagger, resolve
    from labelrec.recommend import FaissBackend, ProductSearch, build_index_from_file
    from labelrec.recommend.index import check_index_destination

    if args.ann and not FaissBackend.available():  # before the index is built, not after
        raise ValueError("--ann needs faiss-cpu: pip install 'labelrec[ann]'")
    if args.no_embeddings and args.embedding_dim is not None:
        raise ValueError("--embedding-dim sets the embeddings that --no-embeddings leaves out")
    check_catalog_file(args.catalog)  # before the model loads and the catalog is scored
    check_index_destination(args.output)
    _check_config_args(args)
    with output_lock(args.output):
        resolved = resolve(args.model)
        tagger = open_tagger(resolved, batch_size=args.batch_size, generate=not args.no_generate)
        data_cfg = _data_config(args, str(resolved.path))
        total = _catalog_total(args.catalog, data_cfg)
        bar = progress_bar(
            total=total, unit="product", desc="product-index", disable=args.no_progress
        )
        index = build_index_from_file(
            tagger,
            args.catalog,
            data_cfg,
            chunk_size=args.chunk_size,
            progress=bar.update,
            top_k=args.top_k,
            embeddings=not args.no_embeddings,
            **({} if args.embedding_dim is None else {"embedding_dim": args.embedding_dim}),
            model_source=args.model if is_model_uri(args.model) else str(resolved.path.resolve()),
        )
        bar.close()
        if not len(index):
            raise ValueError(f"{args.catalog}: no products to index")
        ann = FaissBackend(ProductSearch(index).scorer) if args.ann else None
        index.save(args.output, write_more=None if ann is None else ann.save)
    print(f"indexed {len(index)} products ({len(index.tags)} tags) into {args.output}")
    if args.log_mlflow or args.run_id:
        from labelrec.mlflow.index import log_index
        from labelrec.mlflow.store import configure

        configure()
        model_uri = args.model if is_model_uri(args.model) else None
        logged = log_index(args.output, model_uri, run_id=args.run_id)
        where = f"model version {logged['model_version']}" if logged["model_version"] else "run"
        print(f"logged to MLflow as {logged['artifact_uri']} ({where})")
    return 0


def _print_recommendation(result: dict[str, Any], fmt: str) -> None:
    from labelrec.recommend import format_results

    if fmt == "json":
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print("\n".join(format_results(result)))


def _product_search(args: argparse.Namespace) -> Any:
    from labelrec.opener import open_tagger
    from labelrec.recommend import ProductSearch

    tagger = open_tagger(args.model) if getattr(args, "model", None) else None
    return ProductSearch.load(args.index, tagger)


def cmd_similar(args: argparse.Namespace) -> int:
    if (args.id is None) == (args.title is None):
        raise ValueError("give --id of an indexed product or --title of a new one (one of them)")
    _checked_text(args.title or "", "--title")
    _checked_text(args.description or "", "--description")
    product = None if args.title is None else {"title": args.title, "description": args.description}
    result = _product_search(args).similar(
        id=args.id, product=product, limit=args.limit, tags=args.tag, tag_weight=args.tag_weight
    )
    _print_recommendation(result, args.format)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    _checked_text(args.query, "the query")
    result = _product_search(args).search(
        args.query, limit=args.limit, tags=args.tag, tag_weight=args.tag_weight
    )
    _print_recommendation(result, args.format)
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    engine = _product_search(args)
    engine.set_interactions(args.interactions, half_life_days=args.half_life_days)
    result = engine.recommend(
        args.user, limit=args.limit, tags=args.tag, tag_weight=args.tag_weight
    )
    _print_recommendation(result, args.format)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``labelrec`` argument parser."""
    from importlib.metadata import PackageNotFoundError, version

    from labelrec.config import PromotionConfig, add_arguments, score_argument

    try:
        installed = version("labelrec")
    except PackageNotFoundError:  # run from a source tree that was never installed
        installed = "unknown (not installed)"
    parser = argparse.ArgumentParser(prog="labelrec", description=__doc__)
    verbose_help = "log debug messages"
    quiet_help = "log warnings and errors only (the progress bars: --no-progress)"
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    parser.add_argument("-q", "--quiet", action="store_true", help=quiet_help)
    parser.add_argument("--version", action="version", version=f"labelrec {installed}")
    sub = parser.add_subparsers(dest="command", required=True)

    def verbose_arg(p: argparse.ArgumentParser) -> None:
        # also after the verb (`labelrec train -v`); unset there, the top-level value stands
        p.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help
        )
        p.add_argument(
            "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=quiet_help
        )

    def verb(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, **kwargs)
        p.set_defaults(verb_parser=p)  # its own usage for an argument it does not take
        verbose_arg(p)
        return p

    def config_args(p: argparse.ArgumentParser, example: str = "train.epochs=1") -> None:
        p.add_argument(
            "--config",
            help="YAML config (default: the built-in settings, which configs/default.yaml lists)",
        )
        p.add_argument("overrides", nargs="*", help=f"key=value overrides, e.g. {example}")

    def reading_args(p: argparse.ArgumentParser) -> None:
        """--config and overrides of a verb that reads a catalog with a model: data.* only."""
        p.add_argument(
            "--config",
            help="YAML config whose data section reads the catalog (default: the model's own"
            " data settings; a config's max_products does not apply)",
        )
        p.add_argument(
            "overrides",
            nargs="*",
            help="data.key=value overrides of how the catalog is read, e.g. data.on_error=skip",
        )

    def model_args(p: argparse.ArgumentParser, ranks: bool = True) -> None:
        p.add_argument(
            "model",
            help="model directory written by `labelrec train`, or an MLflow URI"
            " (models:/labelrec@champion, models:/labelrec/3, runs:/<run>/model)",
        )
        if ranks:  # eval has a --limit of its own (for its decisions)
            p.add_argument(
                "--limit",
                type=_at_least(1),
                default=10,
                help="at most this many tags a product (default: 10)",
            )
        p.add_argument(
            "--threshold",
            type=score_argument,
            default=None,
            help="score cut-off; default: the per-tag thresholds tuned in training",
        )
        p.add_argument(
            "--batch-size",
            type=_at_least(1),
            default=None,
            help="products per forward pass (default: 8 on the CPU, 64 on a GPU)",
        )
        p.add_argument("--quantize", action="store_true", help="dynamic int8 (CPU)")
        p.add_argument(
            "--backend",
            choices=("auto", "torch", "onnx"),
            default="auto",
            help="what runs the model: ONNX Runtime (CPU encoders; same scores, faster), torch, "
            "or auto (ONNX Runtime where it can run)",
        )
        p.add_argument(
            "--no-generate",
            action="store_true",
            help="leave out the tag generator (a decoder LLM: seconds per product on a CPU)",
        )
        if ranks:  # eval measures the model's scores, which rules do not change
            p.add_argument(
                "--rules",
                default=None,
                help="rules file (deny, rename, allow, max_per_facet) for the suggestions;"
                " default: the model's own rules.yaml",
            )

    p = verb("train", help="fine-tune a tagger")
    config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = verb("eval", help="evaluate a model on a labelled catalog")
    model_args(p, ranks=False)
    p.add_argument(
        "--limit",
        type=_at_least(1),
        default=None,
        help="decisions (F1, --results-file) are at most this many tags a product, as `suggest"
        " --limit` returns them; rank metrics (P@k, nDCG@k) are unchanged (default: no limit)",
    )
    p.add_argument("--data", required=True, help="labelled catalog")
    p.add_argument("--metrics-file", help="write metrics as JSON")
    p.add_argument("--results-file", help="write per-tag results as CSV")
    p.add_argument(
        "--known-only",
        action="store_true",
        help="rank the vocabulary's tags alone, leaving out the new tags the model proposes",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    reading_args(p)
    p.set_defaults(func=cmd_eval)

    p = verb("suggest", help="tags for titles (or JSON objects) read from stdin")
    model_args(p)
    p.add_argument(
        "--explain", action="store_true", help="show what each part of the fusion gave each tag"
    )
    p.add_argument(
        "--format", choices=["text", "jsonl"], default="text", help="output format (default: text)"
    )
    p.set_defaults(func=cmd_suggest)

    p = verb("describe", help="descriptions for products read from stdin (JSON lines)")
    p.add_argument(
        "describer",
        help="describer directory (labelrec train with task: describe) or its MLflow URI",
    )
    p.add_argument(
        "--batch-size",
        type=_at_least(1),
        default=None,
        help="products per generation batch (default: the describer's describe.batch_products)",
    )
    # Decoding settings the describer was trained with, changed for this call only.
    p.add_argument(
        "--num-beams", type=_at_least(1), default=None, help="beam search width; 1: greedy"
    )
    p.add_argument(
        "--max-new-tokens",
        type=_at_least(1),
        default=None,
        help="longest description, in tokens (a trained minimum above it comes down to it)",
    )
    p.add_argument("--min-new-tokens", type=int, default=None, help="shortest description")
    p.add_argument(
        "--length-penalty", type=float, default=None, help="with beams: > 1 favours longer texts"
    )
    p.add_argument(
        "--repetition-penalty", type=float, default=None, help="on tokens already written; 1: none"
    )
    p.add_argument(
        "--no-repeat-ngram-size", type=int, default=None, help="no n-gram this long twice; 0: off"
    )
    p.add_argument("--no-progress", action="store_true", help="no bar while the weights load")
    p.set_defaults(func=cmd_describe)

    p = verb("index", help="tag every product of a catalog file (Annif's `index`)")
    model_args(p)
    p.add_argument("--data", required=True, help="catalog (.jsonl, .csv, .parquet)")
    p.add_argument(
        "--output", required=True, help="output (.jsonl, .csv, .parquet; .json is JSON Lines)"
    )
    p.add_argument(
        "--chunk-size", type=_at_least(1), default=1000, help="products per chunk (default: 1000)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    reading_args(p)
    p.set_defaults(func=cmd_index)

    p = verb("pretrain", help="domain-adaptive masked-LM pretraining")
    config_args(p, "pretrain.epochs=1")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pretrain)

    p = verb("demo", help="write the built-in demo catalog")
    p.add_argument("--output", default="demo_data", help="folder for train, valid and test .jsonl")
    p.add_argument(
        "--products", type=_at_least(1), default=2400, help="number of products (default: 2400)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument(
        "--force", action="store_true", help="overwrite train, valid and test .jsonl if present"
    )
    p.set_defaults(func=cmd_demo)

    p = verb(
        "product-index",
        aliases=["index-build"],  # its former name
        help="build the product index for similar/search/recommend",
    )
    p.add_argument("model", help="model directory or MLflow URI (models:/labelrec@champion)")
    p.add_argument(
        "--catalog",
        "--data",
        dest="catalog",
        required=True,
        help="catalog (.jsonl, .csv, .parquet); --data as eval and index call it",
    )
    p.add_argument("--output", required=True, help="index directory to write")
    p.add_argument("--top-k", type=_at_least(1), default=32, help="predicted tags kept per product")
    p.add_argument("--no-embeddings", action="store_true", help="tag vectors only")
    p.add_argument(
        "--embedding-dim", type=_at_least(0), help="PCA dimensions (default 128; 0: keep all)"
    )
    p.add_argument("--ann", action="store_true", help="also save a FAISS graph (labelrec[ann])")
    p.add_argument(
        "--log-mlflow",
        action="store_true",
        help="log the index with its model: a models:/ version's run (tagged), else a new run",
    )
    p.add_argument("--run-id", help="MLflow run to log the index to (implies --log-mlflow)")
    p.add_argument(
        "--batch-size",
        type=_at_least(1),
        default=None,
        help="products per forward pass (default: 8 on the CPU, 64 on a GPU)",
    )
    p.add_argument(
        "--chunk-size", type=_at_least(1), default=1000, help="products per chunk (default: 1000)"
    )
    p.add_argument(
        "--no-generate",
        action="store_true",
        help="leave out the tag generator (a decoder LLM: seconds per product on a CPU)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    reading_args(p)
    p.set_defaults(func=cmd_product_index)

    def query_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("index", help="index directory written by `labelrec product-index`")
        p.add_argument(
            "--limit", type=_at_least(1), default=10, help="number of products (default: 10)"
        )
        p.add_argument("--tag", action="append", help="only products with this tag (repeat)")
        p.add_argument("--tag-weight", type=score_argument, help="1: tags only, 0: embedding only")
        p.add_argument("--model", help="tagging model (default: the one named in the index)")
        p.add_argument(
            "--format", choices=["text", "json"], default="text", help="output (default: text)"
        )

    p = verb("similar", help="products similar to an indexed or a new product")
    query_args(p)
    p.add_argument("--id", help="id of an indexed product")
    p.add_argument("--title", help="title of a new product (tagged by the model)")
    p.add_argument("--description", default="", help="description of the new product")
    p.set_defaults(func=cmd_similar)

    p = verb("search", help="products for a free-text query")
    query_args(p)
    p.add_argument("query", help="words to search for")
    p.set_defaults(func=cmd_search)

    p = verb("recommend", help="products for a user from their interactions")
    query_args(p)
    p.add_argument("--interactions", required=True, help="user_id,product_id[,weight,timestamp]")
    p.add_argument("--user", required=True, help="user id (unknown users get popular products)")
    p.add_argument("--half-life-days", type=float, help="time decay of interaction weights")
    p.set_defaults(func=cmd_recommend)

    p = verb("feedback", help="reviewer feedback: export a training catalog, stats")
    actions = p.add_subparsers(dest="action", required=True)
    for action, text in (("export", "reviewed products as a catalog"), ("stats", "summary")):
        a = actions.add_parser(action, help=text)
        verbose_arg(a)
        a.add_argument(
            "--uri", default=None, help="feedback database (default: $LABELREC_FEEDBACK_URI)"
        )
        a.add_argument(
            "--hierarchy-separator",
            default=None,
            help="of the category paths (data.hierarchy_separator, e.g. ' > '): a verdict on"
            " a category reaches the paths under it when reviews are merged",
        )
        if action == "export":
            a.add_argument("--output", required=True, help="catalog to write (.jsonl)")
        else:
            a.add_argument("--format", choices=("text", "json"), default="text")
        a.set_defaults(func=cmd_feedback, verb_parser=a)

    p = verb(
        "push",
        help="upload a model directory to the Hugging Face Hub (not its checkpoints or index)",
    )
    p.add_argument("model_dir", help="model directory written by `labelrec train`")
    p.add_argument("repo_id", help="Hub repository, owner/name (created when it does not exist)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    p.add_argument("--message", default=None, help="commit message")
    p.set_defaults(func=cmd_push)

    p = verb("promote", help="move @champion to @challenger if it is better")
    p.add_argument("--name", default="labelrec", help="registered model name")
    p.add_argument("--data", required=True, help="labelled evaluation catalog")
    add_arguments(p, PromotionConfig)
    p.add_argument(
        "--exit-code",
        action="store_true",
        help=f"exit {NOT_PROMOTED} when the challenger is not promoted (a gate in CI); else 0",
    )
    reading_args(p)
    p.set_defaults(func=cmd_promote)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``labelrec`` command."""
    from labelrec.config import ConfigError
    from labelrec.data import CatalogError
    from labelrec.model import ModelError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides after an option (`--resume train.epochs=5`) are overrides too
        if hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
            args.overrides = [*(args.overrides or []), *extra]
        else:
            getattr(args, "verb_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.verbose and args.quiet:
        parser.error("-v/--verbose and -q/--quiet: give one")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "urllib3", "transformers", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _utf8_stdout()
    previous = _on_sigterm_unwind()
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        from labelrec.opener import downloads_in

        # a log line goes above an open bar, not onto it; a model read from a remote MLflow
        # store is downloaded for this command only
        with logging_redirect_tqdm(), downloads_in():
            return args.func(args)
    except (ConfigError, CatalogError, ModelError, ValueError, FileNotFoundError) as err:
        print(f"labelrec {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as err:  # a path the system refuses (a directory, a file, no permission)
        print(f"labelrec {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(BaseException):
    """SIGTERM (``kill``, a scheduler stopping the job) as an exception, so that what is being
    written is finished or set aside as on Ctrl-C (``labelrec index`` keeps the rows scored)."""


def _on_sigterm_unwind() -> Any:
    """Raise :class:`Terminated` on SIGTERM; returns the handler it replaced (None off the main
    thread, where a handler cannot be set)."""

    def unwind(signum: int, frame: Any) -> None:
        raise Terminated

    try:
        return signal.signal(signal.SIGTERM, unwind)
    except ValueError:
        return None


if __name__ == "__main__":
    sys.exit(main())
