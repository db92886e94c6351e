"""The model card of a model directory: ``README.md`` in the Hugging Face Hub's format.

Its YAML header (read by ``huggingface_hub.ModelCard``) names the library, the backbone and the
valid metrics as a ``model-index``; its text says what the model suggests, how to use it and how
it was trained. The card is written from what ``labelrec.json`` holds, so a directory shared on
the Hub, logged to MLflow or copied elsewhere describes itself.
"""

from __future__ import annotations

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


def _hub_id(backbone: str) -> str | None:
    """``backbone`` when it reads as a Hub id (``owner/name``, not a local folder), else None."""
    if backbone.count("/") != 1 or backbone.startswith((".", "/", "~")) or Path(backbone).exists():
        return None
    return backbone


def tagger_card(info: dict[str, Any], name: str) -> ModelCard:
    """The card of a tag recommender from its ``labelrec.json`` content (``info``)."""
    backbone = str(info.get("backbone", ""))
    config = info.get("config") or {}
    metrics = info.get("valid_metrics") or {}
    refit = info.get("refit")
    valid_name = Path(str((config.get("data") or {}).get("valid") or "valid")).name
    results = [
        EvalResult(
            task_type="text-classification",
            task_name="multi-label tag recommendation",
            dataset_type="json",
            dataset_name=valid_name,
            dataset_split="validation",
            metric_type=kind,
            metric_name=label,
            metric_value=round(float(metrics[key]), 4),
        )
        for key, (kind, label) in CARD_METRICS.items()
        if isinstance(metrics.get(key), (int, float))
    ]
    packaged = find_packaged(backbone)
    data = ModelCardData(
        library_name="labelrec",
        base_model=_hub_id(str(info.get("base_model") or backbone)),
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
        details.insert(0, f"`{info['base_model']}` after masked-LM pretraining on catalog texts")
    lines = [
        f"# {name}",
        "",
        f"A labelrec tag recommender: it suggests tags from a vocabulary of "
        f"{info.get('n_tags', '?')} for a product from its title and description. A classifier "
        f"fine-tuned from `{backbone}` ({'; '.join(details)})"
        + (f" votes with {', '.join(parts)}." if parts else "."),
        "",
        "## Use",
        "",
        "```",
        f"labelrec suggest {name} < titles.txt   # one title a line: tag<TAB>score",
        f"LABELREC_MODEL_URI={name} bentoml serve labelrec.service:LabelRec   # HTTP service",
        "```",
        "",
        "```python",
        "from labelrec.predict import TagRecommender",
        f'rec = TagRecommender.load("{name}")',
        'rec.suggest([{"title": "Wooden railway set, 50 pieces"}], limit=5)',
        "```",
        "",
        "## Training",
        "",
        f"- Training data: `{_file_names(str(info.get('train_source', '?')))}`"
        f"{'' if refit is None else ' (the refit: train + valid, with the tuning run choices)'}.",
        f"- Epochs: {info.get('best_epoch', '?')}; seed {config.get('seed', '?')}; the whole "
        f"configuration is in `labelrec.json`.",
    ]
    if packaged is not None:
        lines.append(f"- Backbone licence: {packaged.licence}.")
    if results:
        lines += [
            "",
            f"## Measured on `{valid_name}`",
            "",
            "| metric | value |",
            "|---|---:|",
            *(f"| {r.metric_name} | {r.metric_value:.4f} |" for r in results),
        ]
        if refit is not None:
            lines += [
                "",
                "These are the tuning run's figures: the saved model was then trained again on "
                "train + valid, so valid cannot measure it.",
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
    from) as the backbone of the model in ``model_dir`` and of its tuning run: in
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
    for folder in (Path(model_dir), Path(model_dir) / TUNING_DIR):
        if not (folder / LABELREC_FILE).is_file():
            continue
        info = rewrite(folder / LABELREC_FILE, renamed)
        if (folder / CARD_FILE).is_file():
            write_tagger_card(folder, info, name=folder.name)
