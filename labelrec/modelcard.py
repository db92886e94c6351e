"""The model card of a model directory: ``README.md`` in the Hugging Face Hub's format.

Its YAML header (read by ``huggingface_hub.ModelCard``) names the library, the backbone and the
valid metrics as a ``model-index``; its text says what the model suggests, how to use it and how
it was trained. The card is written from what ``labelrec.json`` holds, so a directory shared on
the Hub, logged to MLflow or copied elsewhere describes itself.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from labelrec.backbones import find_packaged
from labelrec.modeldir import CARD_FILE, CAUSAL_INFO, LABELREC_FILE, TUNING_DIR

# metric in labelrec.json -> (model-index metric type, its name on the card)
CARD_METRICS = {
    "P@1": ("precision_at_1", "P@1"),
    "P@3": ("precision_at_3", "P@3"),
    "P@5": ("precision_at_5", "P@5"),
    "R@5": ("recall_at_5", "R@5"),
    "nDCG@3": ("ndcg_at_3", "nDCG@3"),
    "nDCG@5": ("ndcg_at_5", "nDCG@5"),
    "PSP@5": ("psp_at_5", "PSP@5"),
    "micro_f1": ("f1", "micro F1 at the tuned thresholds"),
}

# component in labelrec.json's manifest -> what it adds, in the card's words
COMPONENT_WORDS = {
    "tfidf": "TF-IDF neighbours",
    "embedding": "embedding neighbours",
    "lexical": "TF-IDF and embedding neighbours",
    "span": "a span tagger (title spans, also tags never seen in training)",
    "generator": "a decoder LLM that writes tags",
    "rerank": "a reranker of each product's best candidates",
    "rules": "rules",
}


def _file_names(source: str) -> str:
    """A training source (``a/train.jsonl + b/valid.jsonl + feedback c/reviewed.jsonl``) with
    each file cut to its name: a card says which files, not where they were."""
    parts = []
    for part in source.split(" + "):
        label = "feedback " if part.startswith("feedback ") else ""
        parts.append(label + Path(part.removeprefix(label)).name)
    return " + ".join(parts)


# the default backbone (an offline package of it): its Hub id and licence
MINILM = ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")
MINILM_LICENCE = ("Apache-2.0", "apache-2.0")


def _hub_id(backbone: str) -> str | None:
    """The Hub id of ``backbone``: its own when it reads as one (``owner/name``, not a local
    folder), that of a name labelrec knows (``all-MiniLM-L6-v2``, ``gemma-3-270m``), else
    None."""
    if backbone in MINILM:
        return MINILM[0]
    if (packaged := find_packaged(backbone)) is not None:
        return packaged.hub_id
    if backbone.count("/") != 1 or backbone.startswith((".", "/", "~")) or Path(backbone).exists():
        return None
    return backbone


def _local_name(name: str) -> str:
    """The folder a card's commands read: a Hub repository (``owner/name``) is downloaded into
    a folder of its name."""
    return name.split("/")[1] if name.count("/") == 1 and _hub_id(name) == name else name


def _download(name: str, local: str) -> list[str]:
    """The card's command that downloads a Hub repository, where ``name`` is one."""
    return [f"hf download {name} --local-dir {local}   # labelrec reads a folder"] * (local != name)


def _metric_table(results: list[EvalResult]) -> list[str]:
    return [
        "| metric | value |",
        "|---|---:|",
        *(f"| {r.metric_name} | {r.metric_value:.4f} |" for r in results),
    ]


def _licence(hub_id: str | None) -> tuple[str, str] | None:
    """(name, Hub identifier) of the licence of a backbone labelrec knows, else None."""
    if hub_id == MINILM[0]:
        return MINILM_LICENCE
    packaged = find_packaged(hub_id or "")
    return None if packaged is None else (packaged.licence, packaged.licence_id)


def _shown_backbone(backbone: str) -> str:
    """A backbone as a card names it: a Hub id, a name or a URI (``runs:/...``) as given, a
    local folder by its name."""
    # a URI's scheme has two letters or more: C:/ is a Windows drive
    if re.match(r"[A-Za-z][\w+.-]+:/", backbone) or _hub_id(backbone) is not None:
        return backbone
    return Path(backbone).name if "/" in backbone or "\\" in backbone else backbone


def plain_use(info: dict[str, Any], name: str) -> list[str]:
    """The card's lines on scoring the model with transformers alone: the tagger's head reads a
    pooling that a ``...ForSequenceClassification`` class does not do (mean pooling for
    encoders) or a bias it lacks (decoders), so its pipeline gives other scores."""
    pooling = info.get("pooling")
    max_length = info.get("max_length", 128)
    separator = info.get("pair_separator") or ""  # put before a description by some tokenizers
    lines = [
        "## Scores without labelrec",
        "",
        '`transformers.pipeline("text-classification")` does **not** give this model\'s '
        "scores: "
        + (
            "its head reads the mean of the token vectors, where the "
            "`...ForSequenceClassification` class feeds it the first token through an untrained "
            "pooler."
            if pooling == "mean"
            else "its head reads the first token's vector as it is, where the "
            "`...ForSequenceClassification` class puts it through a pooler first."
            if pooling == "cls"
            else "its head has a bias (`head_bias` in `labelrec.json`) that the "
            "`...ForSequenceClassification` class has no place for."
            if info.get("head_bias")
            else f"it pools the tokens as `{pooling}`."
        )
        + " The tagger alone, without the other voters and the tuned thresholds:",
        "",
        "```python",
        "import json, torch",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        f'tok = AutoTokenizer.from_pretrained("{name}")',
        f'model = AutoModelForSequenceClassification.from_pretrained("{name}").eval()',
        f'batch = tok(["Wooden railway set"], [{json.dumps(separator + "50 pieces, ages 3+")}], '
        f'truncation=True, max_length={max_length}, padding=True, return_tensors="pt")',
    ]
    if info.get("head_bias"):  # labelrec.json beside the weights: a folder or the Hub
        lines += [
            "from pathlib import Path",
            "from huggingface_hub import hf_hub_download",
            f'info = Path("{name}", "labelrec.json")',
            f'info = info if info.is_file() else hf_hub_download("{name}", "labelrec.json")',
            'bias = torch.tensor(json.loads(Path(info).read_text())["head_bias"])',
        ]
    # labelrec's own pooling (model.pool) and head, without token types (labelrec passes none)
    pooled = {
        "mean": "(hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)",
        "cls": "hidden[:, 0]  # the first token, no pooler",
        "last": "hidden[torch.arange(len(ids)), (mask * torch.arange(mask.shape[1])).argmax(1)]",
    }.get(str(pooling), f"...  # `{pooling}` pooling")
    lines += [
        "with torch.no_grad():",
        '    ids, mask = batch["input_ids"], batch["attention_mask"]',
        "    hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state",
        '    head = model.classifier if hasattr(model, "classifier") else model.score',
        f"    logits = head({pooled.split('  #')[0]})"
        + (f"  #{pooled.split('  #')[1]}" if "  #" in pooled else ""),
    ]
    if info.get("head_bias"):
        lines += ["    logits = logits + bias"]
    lines += [
        "scores = torch.sigmoid(logits)  # one column per tag: model.config.id2label",
        "```",
        "",
        "A product's title and description are read as a text pair"
        + (f" (the description after {separator!r})" if separator else "")
        + f", truncated to {max_length} tokens.",
    ]
    return lines


def tagger_card(info: dict[str, Any], name: str) -> ModelCard:
    """The card of a tag recommender from its ``labelrec.json`` content (``info``); ``name``:
    its folder, or its repository on the Hub (``owner/name``, which the card downloads)."""
    local = _local_name(name)
    backbone = str(info.get("backbone", ""))
    config = info.get("config") or {}
    metrics = info.get("valid_metrics") or {}
    refit = info.get("refit")
    data_files = config.get("data") or {}
    valid_name = Path(str(data_files.get("valid") or "valid")).name
    folds = int(metrics.get("tuning_folds") or 1)  # >1: measured out of fold (train.tuning_folds)
    # where the valid metrics were measured (a tuning fold's run: its fold of train + valid;
    # tuned by folds: train + valid); a labelrec.json without valid_source: its config's files
    measured_on, split = valid_name, "validation"
    if folds > 1:
        measured_on = f"{Path(str(data_files.get('train') or 'train')).name} + {valid_name}"
        split = f"out-of-fold ({folds} folds)"
    if info.get("valid_source"):
        measured_on = _file_names(str(info["valid_source"]))
    # a generator tuned on a sample of valid (generate.tune_products) measured that sample
    n, of = metrics.get("n_products"), metrics.get("valid_products_sampled_from")
    sample = f"a random {n:.0f} of its {of:.0f} products" if n and of else None
    if sample:
        split += f", {sample}"
    results = [
        EvalResult(
            task_type="text-classification",
            task_name="multi-label tag recommendation",
            dataset_type="json",
            dataset_name=measured_on,
            dataset_split=split,
            metric_type=kind,
            metric_name=label,
            metric_value=round(float(metrics[key]), 4),
        )
        for key, (kind, label) in CARD_METRICS.items()
        if isinstance(metrics.get(key), (int, float))
    ]
    base_model = _hub_id(str(info.get("base_model") or backbone))
    licence = _licence(base_model)
    data = ModelCardData(
        library_name="labelrec",
        license=None if licence is None else licence[1],
        base_model=base_model,
        pipeline_tag="text-classification",
        tags=["labelrec", "tag-recommendation", "multi-label-classification"],
        model_name=name,
        eval_results=results or None,
    )
    parts = [COMPONENT_WORDS[c] for c in info.get("components", {}) if c in COMPONENT_WORDS]
    lora = config.get("lora") or {}
    if info.get("lora_adapters"):
        trained = f"LoRA adapters, r={lora.get('r', '?')}, merged into the weights"
    elif "lora_adapters" in info:
        trained = "every weight trained"
    else:
        trained = f"lora.enabled: {lora.get('enabled', '?')}"
    details = [f"{info.get('pooling', '?')} pooling, {info.get('max_length', '?')} tokens", trained]
    if info.get("base_model"):  # a backbone written by `labelrec pretrain`
        details.insert(
            0,
            f"`{_shown_backbone(info['base_model'])}` after masked-LM pretraining on catalog texts",
        )
    lines = [
        f"# {name}",
        "",
        f"A labelrec tag recommender: it suggests tags from a vocabulary of "
        f"{info.get('n_tags', '?')} for a product from its title and description. A classifier "
        f"fine-tuned from `{_shown_backbone(backbone)}` ({'; '.join(details)})"
        + (f" votes with {', '.join(parts)}." if parts else "."),
        "",
        "## Use",
        "",
        "```",
        *_download(name, local),
        f"labelrec suggest {local} < titles.txt   # one title a line: tag<TAB>score",
        f"LABELREC_MODEL_URI={local} bentoml serve labelrec.service:LabelRec   # HTTP service",
        "```",
        "",
        "```python",
        "from labelrec.predict import TagRecommender",
        f'rec = TagRecommender.load("{local}")',
        'rec.suggest([{"title": "Wooden railway set, 50 pieces"}], limit=5)',
        "```",
        "",
        "## Training",
        "",
        f"- Training data: `{_file_names(str(info.get('train_source', '?')))}`"
        f"{'' if refit is None else ' (the refit: train + valid, with the tuning choices)'}.",
        f"- Epochs: {info.get('best_epoch', '?')}; seed {config.get('seed', '?')}; the whole "
        f"configuration is in `labelrec.json`.",
    ]
    if licence is not None:
        lines.append(f"- Backbone licence: {licence[0]}.")
    if results:
        lines += [
            "",
            f"## Measured on `{measured_on}`"
            + (" out of fold" if folds > 1 else "")
            + (f" ({sample})" if sample else ""),
            "",
            *_metric_table(results),
        ]
        if folds > 1:
            lines += [
                "",
                f"Each product was scored by the model of one of {folds} tuning folds that did "
                "not train on it; the saved model was then trained on all of them.",
            ]
        elif refit is not None:
            lines += [
                "",
                "These are the tuning run's figures: the saved model was then trained again on "
                "train + valid, so valid cannot measure it.",
            ]
    lines += ["", *plain_use(info, name)]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def describer_card(meta: dict[str, Any], name: str) -> ModelCard:
    """The card of a describer from its ``causal.json`` content (``meta``); ``name``: its
    folder, or its repository on the Hub (``owner/name``, which the card downloads)."""
    local = _local_name(name)
    backbone = str(meta.get("backbone", ""))
    base_model = _hub_id(backbone)
    licence = _licence(base_model)
    metrics = meta.get("valid_metrics") or {}
    rouge, n = metrics.get("valid_rougeL_f1"), metrics.get("valid_n_products")
    results = None
    if isinstance(rouge, (int, float)):
        results = [
            EvalResult(
                task_type="text-generation",
                task_name="product description writing",
                dataset_type="json",
                dataset_name="valid",
                dataset_split="validation",
                metric_type="rougeL",
                metric_name="ROUGE-L F1 (first 60 words, lowercased)",
                metric_value=round(float(rouge), 4),
            )
        ]
    data = ModelCardData(
        library_name="labelrec",
        license=None if licence is None else licence[1],
        base_model=base_model,
        pipeline_tag="text-generation",
        tags=["labelrec", "product-descriptions"],
        model_name=name,
        eval_results=results,
    )
    reference = bool(meta.get("reference"))
    lines = [
        f"# {name}",
        "",
        "A labelrec describer: it writes a product's description from its title and tags"
        + (
            ", shown the description of the most like training product (by TF-IDF over titles)."
            " `neighbours.jsonl` holds the training titles and descriptions it is shown."
            if reference
            else "."
        )
        + f" A decoder fine-tuned from `{_shown_backbone(backbone)}` (LoRA adapters merged into"
        " the weights).",
        "",
        "## Use",
        "",
        "```",
        *_download(name, local),
        f"labelrec describe {local} < products.jsonl   # id, title, tags: one JSON object a line",
        "```",
        "",
        "```python",
        "from labelrec.describe import Describer",
        f'describer = Describer.load("{local}")',
        'describer.describe([{"title": "Wooden railway set, 50 pieces", "tags": ["Toys"]}])',
        "```",
        "",
        "## Training",
        "",
        f"- Products: {meta.get('n_train', '?')}; the settings are in `causal.json`.",
    ]
    if licence is not None:
        lines.append(f"- Backbone licence: {licence[0]}.")
    if results:
        lines += [
            "",
            "## Measured on valid"
            + (f" ({n:.0f} products)" if isinstance(n, (int, float)) else ""),
            "",
            *_metric_table(results),
        ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def write_tagger_card(model_dir: str | Path, info: dict[str, Any], name: str | None = None) -> Path:
    """Write ``README.md`` into ``model_dir`` from ``info`` (``labelrec.json``'s content); the
    model is called ``name`` (default: the directory's name)."""
    path = Path(model_dir) / CARD_FILE
    tagger_card(info, name or Path(model_dir).name).save(path)
    return path


def name_backbone(model_dir: str | Path, source: str) -> None:
    """Record ``source`` (e.g. the ``runs:/.../backbone`` URI a temporary download was made
    from) as the backbone of the model in ``model_dir`` and of its tuning runs: in
    ``labelrec.json`` (``backbone`` and ``config.model.backbone``) and on the card, which
    otherwise name a folder that is gone once training ends. A describer's ``causal.json``
    gets it as ``backbone``."""
    import json
    import os

    def rewrite(path: Path, change: Any) -> dict[str, Any]:  # under a temporary name, renamed
        data = json.loads(path.read_text(encoding="utf-8"))
        change(data)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
        return data

    def renamed(info: dict[str, Any]) -> None:
        info["backbone"] = source
        info.setdefault("config", {}).setdefault("model", {})["backbone"] = source

    if (Path(model_dir) / CAUSAL_INFO).is_file():
        rewrite(Path(model_dir) / CAUSAL_INFO, lambda meta: meta.update(backbone=source))
    tuning = Path(model_dir) / TUNING_DIR  # one tuning run, or one a fold (train.tuning_folds)
    for folder in (Path(model_dir), tuning, *sorted(tuning.glob("fold-*"))):
        if not (folder / LABELREC_FILE).is_file():
            continue
        info = rewrite(folder / LABELREC_FILE, renamed)
        if (folder / CARD_FILE).is_file():
            write_tagger_card(folder, info, name=folder.name)
