"""Fine-tuning recipe: setup, train (one readable loop), finish, save, cleanup, through Accelerate.

Works the same on CPU, one GPU or several (``accelerate launch``): batches are length-bucketed and
padded to their longest item, valid scores are gathered across processes, only the main process
writes files and reports to the tracker.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import random
import shutil
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from labelrec import data as data_mod
from labelrec import metrics
from labelrec.config import Config, ConfigError, checked, config_to_dict
from labelrec.evaluate import evaluate_scores_on, new_tag_threshold
from labelrec.flops import StepFlops
from labelrec.fusion import FUSION_WEIGHTS, FusionInputs
from labelrec.model import (
    ModelInfo,
    TagModel,
    base_model_of,
    build_model,
    check_not_backbone,
    count_parameters,
    cpu_processes,
    enable_checkpointing,
    encode_products,
    make_accelerator,
    pad_batch,
    pair_separator,
    process_state,
    recorded_backbone,
    resolve_mixed_precision,
    save_model,
    save_thresholds,
    tag_prior,
    unknown_share,
    warmup_steps,
)
from labelrec.modeldir import (
    CHECKPOINTS_DIR,
    HISTORY_FILE,
    LABELREC_FILE,
    SAVING_DIR,
    THRESHOLDS_FILE,
    TUNED_FILE,
    TUNING_DIR,
    VOCAB_FILE,
    disk_room,
    finish_publish,
    holds_cwd,
    jsonable,
    manifest,
    output_lock,
    publish_staged,
)
from labelrec.runs import (  # noqa: F401  (their home is runs.py; labelrec.train names them too)
    NullTracker,
    Splits,
    Tracker,
    TrainResult,
    load_splits,
    merge_feedback,
    refit_products,
)

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
BEST_FILE = "best_trainable.pt"


class RefitTracker:
    """A tracker for the refit of a run whose tuning run reports to ``inner``: the refit's
    metrics get a ``refit_`` prefix, its training catalog is the dataset ``refit``, and of its
    parameters only what differs from the tuning run is logged (``refit.*``)."""

    PARAMS = ("n_tags", "n_train", "n_valid", "train.epochs")

    def __init__(self, inner: Tracker) -> None:
        self.inner = inner

    def log_params(self, params: dict[str, Any]) -> None:
        self.inner.log_params({f"refit.{k}": params[k] for k in self.PARAMS if k in params})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.inner.log_metrics({f"refit_{k}": v for k, v in metrics.items()}, step=step)

    def log_dataset(self, name: str, source: str, products: list, n_tags: int) -> None:
        if name == "train":
            self.inner.log_dataset("refit", source, products, n_tags)


class FirstFoldTracker:
    """The tracker of the first tuning fold (``train.tuning_folds``): the run shows its
    parameters and per-epoch metrics, its product counts as ``fold1.n_*`` and its own
    ``final_*`` metrics as ``fold1_final_*``. The run's ``final_*`` are every fold's out-of-fold
    ones, its ``n_*`` and train and valid datasets the catalogs (``tune_by_folds``), not the
    fold's halves."""

    COUNTS = ("n_tags", "n_train", "n_valid")

    def __init__(self, inner: Tracker) -> None:
        self.inner = inner

    def log_params(self, params: dict[str, Any]) -> None:
        self.inner.log_params(
            {f"fold1.{k}" if k in self.COUNTS else k: v for k, v in params.items()}
        )

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        renamed = {f"fold1_{k}" if k.startswith("final_") else k: v for k, v in metrics.items()}
        self.inner.log_metrics(renamed, step=step)

    def log_dataset(self, name: str, source: str, products: list, n_tags: int) -> None:
        if name not in ("train", "valid"):
            self.inner.log_dataset(name, source, products, n_tags)


@dataclass
class TunedSettings:
    """What a tuning run chose on valid, carried into the refit on train + valid."""

    epochs: int
    global_threshold: float
    tag_thresholds: dict[str, float]
    # weight, embedding_weight, span_weight, new_threshold of the fusion (fusion.FUSION_WEIGHTS)
    lexical: dict[str, float] | None = None
    # weight, new_weight, new_threshold of the tag generator
    generator: dict[str, float] | None = None
    valid_metrics: dict[str, float] = field(default_factory=dict)
    # train.epochs of the tuning run: a resume that asks for another number tunes again
    planned_epochs: int | None = None

    def thresholds_for(self, tags: list[str]) -> np.ndarray:
        """Per-tag thresholds for a vocabulary: the tuned one per tag, the global one for tags
        the tuning run did not have."""
        g = self.global_threshold
        return np.asarray([self.tag_thresholds.get(t, g) for t in tags], dtype=np.float32)

    def save(self, path: str | Path) -> None:
        """Write as JSON (under a temporary name, then renamed)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=1), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> TunedSettings:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


def complete_checkpoints(ckpt_dir: Path) -> list[Path]:
    """``epoch-N`` checkpoints with their state file, oldest first (a checkpoint cut short,
    e.g. by kill -9 while saving, is an ``epoch-N.tmp`` folder or lacks the state file)."""
    found = []
    for path in ckpt_dir.glob("epoch-*") if ckpt_dir.is_dir() else []:
        number = path.name.removeprefix("epoch-")
        if number.isdigit() and (path / STATE_FILE).is_file():
            found.append((int(number), path))
    return [path for _, path in sorted(found)]


RUN_FILE = "run.json"  # beside checkpoints (and tuned.json): the settings of the run


# Settings that change how a run is watched or kept, not what it trains: a resume may change them.
UNTRAINED_SETTINGS = (
    "output",
    "train.epochs",  # a refit's epochs come from its tuning run; a resume may train longer
    "train.eval_batch_size",
    "train.fused_adamw",  # the same update, computed another way
    "train.num_workers",
    "train.log_every",
    "train.keep_checkpoints",
)
# Files whose products the data digest covers: compared by content, not by how they are named.
DATA_FILES = ("data.train", "data.valid", "data.feedback", "data.holdout")
BACKBONES = ("model.backbone", "generate.backbone", "describe.backbone")


def run_settings(cfg: Config, data: str | None = None) -> dict[str, Any]:
    """The settings a resumed run shares with the run it continues: all but those of
    ``UNTRAINED_SETTINGS``; the number of processes (the learning-rate schedule counts their
    updates); and ``data``, a digest of the products it trains and tunes on
    (`data_fingerprint`), which stands for the file paths of ``DATA_FILES``. A backbone folder
    is recorded by its absolute path (``runs/dapt/`` is ``runs/dapt``)."""
    flat = json.loads(json.dumps(_flat_config(cfg), default=str))
    for key in UNTRAINED_SETTINGS:
        flat.pop(key, None)
    for key in BACKBONES:
        if isinstance(flat.get(key), str) and Path(flat[key]).expanduser().is_dir():
            flat[key] = str(Path(flat[key]).expanduser().resolve())
    # the separator in effect (null means that of data.hierarchy_separator, else " > ", which
    # a labelrec before the null default recorded as given)
    flat["lexical.path_separator"] = data_mod.path_separator(cfg)
    # the folds in effect (auto: two with a refit): a run.json that records the number compares
    # equal
    flat["train.tuning_folds"] = cfg.tuning_fold_count
    flat["processes"] = process_state().num_processes
    if data is not None:
        flat["data"] = data
        for key in DATA_FILES:
            flat.pop(key, None)
    return flat


def data_fingerprint(*parts: list[data_mod.Product]) -> str:
    """A digest of product lists (ids, texts, tags, rejected tags, in order): a catalog
    edited, or reviews added, between a run and its resume make another run."""
    digest = hashlib.sha256()
    for products in parts:
        for p in products:
            row = [p.id, p.title, p.description, p.tags, p.rejected]
            digest.update(json.dumps(row, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def write_run_settings(path: Path, cfg: Config, data: str | None = None) -> None:
    path.write_text(json.dumps(run_settings(cfg, data), indent=1), encoding="utf-8")


def check_same_run(path: Path, cfg: Config, what: str, data: str | None = None) -> None:
    """``ValueError`` when ``path`` (``run.json``) records other settings or data than ``cfg``'s
    and ``data``'s: a resume continues the run it names, not another one. Without the file
    nothing is checked, and what a file does not record (older runs) is not compared."""
    if not path.is_file():
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    now = run_settings(cfg, data)
    for key in ("processes", "data", *UNTRAINED_SETTINGS):
        if key not in saved or key not in now:  # not recorded by an older labelrec
            saved.pop(key, None)
            now.pop(key, None)
    if "data" in now:  # the digests compare the products, whatever the files are called
        for key in DATA_FILES:
            saved.pop(key, None)
    else:  # compared by path where no digest stands for the files
        flat = json.loads(json.dumps(_flat_config(cfg), default=str))
        now.update({k: v for k, v in flat.items() if k in DATA_FILES})
    for key in BACKBONES:  # an older labelrec recorded the path as given
        if isinstance(saved.get(key), str) and Path(saved[key]).expanduser().is_dir():
            saved[key] = str(Path(saved[key]).expanduser().resolve())
    differ = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if differ:
        names = {
            "data": "the products (catalog files or reviews changed, or read otherwise by this"
            " version of labelrec)"
        }
        shown = ", ".join(
            f"{names.get(k, k)}: {saved.get(k)!r} there, {now.get(k)!r} now" for k in differ[:4]
        )
        more = f" (and {len(differ) - 4} more)" if len(differ) > 4 else ""
        raise ValueError(
            f"--resume: {what} belong to a run with other settings ({shown}{more});"
            " run without --resume to start again"
        )


class EncodedSet(torch.utils.data.Dataset):
    """Token ids and multi-hot labels of a product list; with ``negatives`` (the tags reviewers
    rejected) a label row holds -1 there."""

    def __init__(self, token_ids: list[list[int]], labels: Any, negatives: Any = None) -> None:
        self.token_ids = token_ids
        self.labels = labels.tocsr() if labels is not None else None
        self.negatives = negatives.tocsr() if negatives is not None and negatives.nnz else None

    def __len__(self) -> int:
        return len(self.token_ids)

    def __getitem__(self, i: int) -> tuple[int, list[int], np.ndarray | None]:
        row = None
        if self.labels is not None:
            row = self.labels[i].toarray()[0]
            if self.negatives is not None:
                row = row - self.negatives[i].toarray()[0]
        return i, self.token_ids[i], row


BODY_LR = {True: 3e-4, False: 1e-4}  # train.lr null: LoRA adapters / the whole backbone
UNKNOWN_TOKENS_WARN = 0.2  # a larger share of the backbone's unknown token is warned about
# train.tuning_folds auto: the most labelled products x tags it tunes by two folds. The pooled
# tuning holds every labelled product's scores (zh_taobao, 43 million: 5.9 GB at peak against
# 3.3 tuned on valid, docs/architecture.md); past it auto tunes on valid, valid's rows alone.
AUTO_FOLDS_MAX_CELLS = 50_000_000


def body_lr(lr: float | None, lora: bool) -> float:
    """The learning rate of the backbone's trainable weights: ``train.lr``, or when it is None
    the one for LoRA adapters or for the whole backbone (``BODY_LR``)."""
    return BODY_LR[bool(lora)] if lr is None else float(lr)


def weighted_bce(
    logits: torch.Tensor, labels: torch.Tensor, negative_weight: float
) -> torch.Tensor:
    """Mean binary cross-entropy; a label of -1 (a rejected tag) is a negative weighted
    ``negative_weight`` (the same as ``BCEWithLogitsLoss`` when there is none)."""
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, (labels > 0).to(logits.dtype), reduction="none"
    )
    weight = torch.where(labels < 0, negative_weight, 1.0).to(loss.dtype)
    return (loss * weight).mean()


def _collate(
    items: list[tuple[int, list[int], np.ndarray | None]], pad_id: int, padding_side: str
) -> dict:
    batch = pad_batch([t for _, t, _ in items], pad_id, padding_side)
    batch["index"] = torch.tensor([i for i, _, _ in items], dtype=torch.long)
    if items[0][2] is not None:
        batch["labels"] = torch.from_numpy(np.stack([y for _, _, y in items]))
    return batch


def make_collate(pad_id: int, padding_side: str) -> Callable:
    """Pad each batch to its longest item; stack labels and indices. A module-level function
    (picklable), so loader workers started by spawn or forkserver (macOS, Windows) can run it."""
    return functools.partial(_collate, pad_id=pad_id, padding_side=padding_side)


def median_epochs(best_epochs: list[int]) -> int:
    """The refit's epochs from the tuning folds' best: their median, a half rounded up (the
    best epochs 2 and 3 of two folds give 3, as 3 and 4 give 4), at least 1."""
    return max(1, math.floor(statistics.median(best_epochs) + 0.5))


def group_weights(n_batches: int, grad_accum: int) -> list[float]:
    """Each batch's loss weight in an epoch of ``n_batches`` updated every ``grad_accum``:
    Accelerate divides every loss by ``grad_accum``, so a last, shorter group (an update the
    end of the epoch forces) has its losses weighted up to make its update a mean gradient,
    as the full groups' are."""
    tail = n_batches % grad_accum
    weights = [1.0] * n_batches
    for i in range(n_batches - tail, n_batches):
        weights[i] = grad_accum / tail
    return weights


class TagTrainer:
    """setup() -> train() -> finish() -> save() -> cleanup(); ``run()`` does them all.

    ``splits`` replaces the catalogs of the config; with ``tuned`` (a refit: no valid products)
    the fusion weights and thresholds are taken from it instead of tuned.
    """

    def __init__(
        self,
        cfg: Config,
        resume: bool = False,
        tracker: Tracker | None = None,
        progress: bool = True,
        splits: Splits | None = None,
        tuned: TunedSettings | None = None,
        given_cfg: Config | None = None,
        fit_reranker: bool = True,
    ) -> None:
        """``given_cfg``: the configuration the user gave, where ``cfg`` is what this run trains
        with (a tuning run into a subfolder, a refit for the tuned epochs; default ``cfg``): a
        tuning run logs it as the run's params, a refit saves it with the model (and logs what
        it trains with, ``RefitTracker``). ``fit_reranker=False``: no reranker even with
        ``lexical.rerank`` (a tuning fold's run: the reranker is fitted on every fold's
        evidence together, ``tune_by_folds``)."""
        self.cfg = cfg
        self.fit_reranker = fit_reranker
        self.given_cfg = given_cfg or cfg
        self.resume = resume
        self.tracker = tracker or NullTracker()
        self.progress = progress
        self.given_splits = splits
        self.tuned = tuned
        self.output = Path(cfg.output)
        self.ckpt_dir = self.output / CHECKPOINTS_DIR
        self.flops = StepFlops()  # the first batch's FLOPs per token (labelrec.flops)

    # ---------------------------------------------------------------- setup
    def setup(self) -> None:
        """Accelerator, data, vocabulary, model, optimizer, scheduler; restore a checkpoint."""
        from accelerate.utils import set_seed
        from transformers import get_scheduler

        cfg, tcfg = self.cfg, self.cfg.train
        mp = resolve_mixed_precision(tcfg.mixed_precision)
        self.accelerator = make_accelerator(
            mp, gradient_accumulation_steps=tcfg.grad_accum, cpu=cpu_processes()
        )
        self.fused_adamw = use_fused_adamw(tcfg.fused_adamw, mp, self.accelerator.device.type)
        set_seed(cfg.seed)
        self.is_main = self.accelerator.is_main_process
        if not self.is_main:  # one log of a distributed run: the other processes warn only
            logging.getLogger("labelrec").setLevel(logging.WARNING)

        splits = self.given_splits or load_splits(cfg)
        if not splits.train:
            raise ValueError(f"{splits.train_source}: no products to train on")
        if not splits.valid and self.tuned is None and not cfg.train.refit:  # refit warns itself
            logger.warning(
                "no valid products: the epochs, fusion weights and thresholds are not tuned"
                " (their defaults are kept); give data.valid or more products"
            )
        self.splits = splits
        # the run's vocabulary sits with its checkpoints until the model is saved, so a model
        # already in the output stays loadable while the run trains (older runs kept it in the
        # output); only a resume from a checkpoint takes it
        vocab_path = self.ckpt_dir / VOCAB_FILE
        if not vocab_path.is_file():
            vocab_path = self.output / VOCAB_FILE
        if self.resume and complete_checkpoints(self.ckpt_dir) and vocab_path.is_file():
            self.vocab = data_mod.TagVocab.load(vocab_path)
        else:
            self.vocab = data_mod.TagVocab.from_products(splits.train, cfg.data.min_tag_count)
        if len(self.vocab) == 0:
            raise ValueError(
                f"{splits.train_source}: no tag reaches data.min_tag_count"
                f" ({cfg.data.min_tag_count} products)"
            )
        if self.given_splits is None:  # a run of its own (a refit's runs: warned before)
            warn_case_variants(self.vocab, splits.train_source)
        y_train = self.vocab.encode(splits.train)
        keep = np.asarray(y_train.sum(axis=1)).ravel() > 0
        self.train_products = [p for p, k in zip(splits.train, keep, strict=True) if k]
        y_train = y_train[keep]
        self.valid_products = splits.valid
        self.y_valid = self.vocab.encode(self.valid_products)
        if self.valid_products and self.y_valid.nnz == 0:
            hint = "give a valid split from the same catalog"
            if " (fold " in splits.valid_source:  # a tuning fold the user did not choose
                hint = "too few products to tune by folds: train.tuning_folds=1 tunes on valid"
            raise ValueError(
                f"{splits.valid_source}: none of its {len(self.valid_products)} products has a tag"
                f" that the training products of {splits.train_source} have: nothing to tune or"
                f" measure on ({hint})"
            )

        if cfg.generate.enabled:  # a generator that cannot load fails now, not after the tagger
            from labelrec.taggers.generator import check_generator_backbone

            check_generator_backbone(cfg.generate, cfg.model.trust_remote_code)
        prior = tag_prior(np.asarray(y_train.sum(axis=0)).ravel(), y_train.shape[0])
        self.model, self.tokenizer = build_model(cfg.model, cfg.lora, self.vocab.tags, prior)
        if tcfg.gradient_checkpointing:  # memory for decoders on GPUs; the loss is unchanged
            enable_checkpointing(self.model.hf_model)
        self.padding_side = getattr(self.tokenizer, "padding_side", "right")
        max_len = cfg.model.max_length
        self.pair_separator = pair_separator(self.tokenizer)  # recorded with the model
        self.train_ids = encode_products(
            self.tokenizer,
            [p.title for p in self.train_products],
            [p.description for p in self.train_products],
            max_len,
            self.pair_separator,
        )
        self.valid_ids = encode_products(
            self.tokenizer,
            [p.title for p in self.valid_products],
            [p.description for p in self.valid_products],
            max_len,
            self.pair_separator,
        )
        unknown = unknown_share(self.tokenizer, self.train_ids)
        if unknown > UNKNOWN_TOKENS_WARN:
            logger.warning(
                "%.0f%% of the training texts' tokens are unknown to the tokenizer of %s (outside"
                " its vocabulary: another script, such as Chinese for an English model): the model"
                " reads little of them, the lexical voters read every character; a backbone whose"
                " vocabulary covers the catalog's language reads them (docs/llm.md, decoder"
                " taggers)",
                100 * unknown,
                cfg.model.backbone,
            )
        negatives = self.vocab.encode([p.rejected for p in self.train_products])
        self.train_set = EncodedSet(self.train_ids, y_train, negatives)
        self.collate = make_collate(self.tokenizer.pad_token_id, self.padding_side)

        head_params = list(self.model.head.parameters())
        head_ids = {id(p) for p in head_params}
        body = [p for p in self.model.parameters() if p.requires_grad and id(p) not in head_ids]
        self.optimizer = make_adamw(
            [
                {
                    "params": body,
                    "lr": body_lr(tcfg.lr, self.model.lora),
                    "weight_decay": tcfg.weight_decay,
                },
                {"params": head_params, "lr": tcfg.head_lr, "weight_decay": 0.0},
            ],
            fused=self.fused_adamw,
        )
        n_proc = self.accelerator.num_processes
        batches_per_epoch = math.ceil(len(self.train_set) / tcfg.batch_size / n_proc)
        self.updates_per_epoch = max(1, math.ceil(batches_per_epoch / tcfg.grad_accum))
        total = self.updates_per_epoch * tcfg.epochs
        if tcfg.max_steps is not None:
            total = min(total, tcfg.max_steps)
        # Accelerate's prepared scheduler steps once per process at each update, so the schedule
        # is laid out in updates x processes.
        self.scheduler = get_scheduler(
            tcfg.scheduler if tcfg.scheduler != "constant" else "constant_with_warmup",
            self.optimizer,
            num_warmup_steps=warmup_steps(total, tcfg.warmup_ratio) * n_proc,
            num_training_steps=total * n_proc,
        )
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(
            self.model, self.optimizer, self.scheduler
        )

        self.state: dict[str, Any] = {
            "epoch": 0,
            "global_step": 0,
            "best_metric": float("-inf"),  # a run without valid products ranks -train_loss
            "best_epoch": 0,
            "bad_epochs": 0,
            "history": [],
            "train_seconds": 0.0,
        }
        if self.resume:
            self._restore()
        elif self.is_main:
            if (self.output / LABELREC_FILE).is_file():
                logger.warning(
                    "%s holds a model: it stays loadable while this run trains, and this run's"
                    " model replaces it when saved (train into another output to keep both)",
                    self.output,
                )
            self._fresh_checkpoints()
        trainable, total_params = count_parameters(self.accelerator.unwrap_model(self.model))
        if self.is_main and self.state["epoch"] == 0:
            self.tracker.log_params(
                {
                    **_flat_config(self.cfg if self.tuned is not None else self.given_cfg),
                    "n_tags": len(self.vocab),
                    "n_train": len(self.train_products),
                    "n_valid": len(self.valid_products),
                    "trainable_params": trainable,
                    "total_params": total_params,
                    "num_processes": n_proc,
                    "device": str(self.accelerator.device),
                    "mixed_precision": mp,
                    "torch": torch.__version__,
                    "cuda": torch.version.cuda or "none",
                }
            )
            self.tracker.log_dataset(
                "train", splits.train_source, self.train_products, len(self.vocab)
            )
            self.tracker.log_dataset(
                "valid", splits.valid_source, self.valid_products, len(self.vocab)
            )
            if splits.feedback_source:
                self.tracker.log_dataset(
                    "feedback", splits.feedback_source, splits.feedback, len(self.vocab)
                )
                # reviews of data.holdout products, left out of training
                self.tracker.log_params({"feedback_held_out": splits.held_out})

    def _fresh_checkpoints(self) -> None:
        """An empty checkpoint folder holding this run's vocabulary: an earlier run's
        checkpoints are not this run's to resume."""
        if self.ckpt_dir.is_dir():
            shutil.rmtree(self.ckpt_dir)
        self.ckpt_dir.mkdir(parents=True)
        self.vocab.save(self.ckpt_dir / VOCAB_FILE)
        write_run_settings(self.ckpt_dir / RUN_FILE, self.cfg, self._data_digest())

    def _data_digest(self) -> str:
        return data_fingerprint(self.splits.train, self.splits.valid)

    def _restore(self) -> None:
        ckpts = complete_checkpoints(self.ckpt_dir)
        if not ckpts:
            logger.warning("--resume: no checkpoint in %s, starting from scratch", self.ckpt_dir)
            if self.is_main:
                self._fresh_checkpoints()
            return
        check_same_run(
            self.ckpt_dir / RUN_FILE,
            self.cfg,
            f"the checkpoints in {self.ckpt_dir}",
            self._data_digest(),
        )
        last = ckpts[-1]
        state = json.loads((last / STATE_FILE).read_text(encoding="utf-8"))
        if state["epoch"] > self.cfg.train.epochs:
            raise ValueError(
                f"--resume: the checkpoints in {self.ckpt_dir} hold {state['epoch']} epochs,"
                f" more than train.epochs={self.cfg.train.epochs}; give train.epochs="
                f"{state['epoch']} or more, or run without --resume to start again"
            )
        self.accelerator.load_state(str(last))
        # the optimizer's state brings the kernel choice of the run that saved it: this run's
        set_adamw_kernel(self.optimizer, self.fused_adamw)
        self.state = state
        self.flops.flops_per_token = state.get("flops_per_token")
        self.flops.uncountable = state.get("flops_uncountable")
        logger.info("resumed from %s (epoch %d)", last, self.state["epoch"])

    # ---------------------------------------------------------------- train
    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one batch (a forward pass)."""
        logits = self.model(batch["input_ids"], batch["attention_mask"])
        if self.train_set.negatives is None:
            return torch.nn.functional.binary_cross_entropy_with_logits(
                logits.float(), batch["labels"].float()
            )
        return weighted_bce(logits.float(), batch["labels"].float(), self.cfg.train.negative_weight)

    def _forward_backward(self, batch: dict[str, torch.Tensor], weight: float) -> torch.Tensor:
        """The loss of one batch, its gradients accumulated (``weight`` times the loss's: see
        ``group_weights``)."""
        loss = self._loss(batch)
        self.accelerator.backward(loss * weight if weight != 1.0 else loss)
        return loss

    def train(self) -> None:
        """Epochs of updates, a valid evaluation after each, checkpoints and early stopping."""
        tcfg = self.cfg.train
        acc = self.accelerator
        start_epoch = self.state["epoch"]
        for epoch in range(start_epoch, tcfg.epochs):
            if self._done() or self._stopped_early():  # a resumed run that had stopped stays so
                break
            batches = data_mod.bucketed_batches(
                [len(t) for t in self.train_ids],
                tcfg.batch_size,
                tcfg.bucket_size,
                seed=self.cfg.seed + epoch,
            )
            loader = DataLoader(
                self.train_set,
                batch_sampler=batches,
                collate_fn=self.collate,
                num_workers=tcfg.num_workers,
            )
            loader = acc.prepare(loader)
            self.model.train()
            bar = self._bar(len(loader), f"epoch {epoch + 1}/{tcfg.epochs}")
            t0 = time.perf_counter()
            seen = tokens = 0
            loss_sum = torch.zeros((), device=acc.device)
            n_loss = 0
            weights = group_weights(len(loader), tcfg.grad_accum)
            for i, batch in enumerate(loader):
                with acc.accumulate(self.model):
                    loss = self.flops.run(
                        batch["input_ids"].numel(),
                        self._forward_backward,
                        batch,
                        weights[i],
                        reset=self.model.zero_grad,  # the first step: nothing accumulated yet
                    )
                    if acc.sync_gradients:
                        if tcfg.max_grad_norm > 0:
                            acc.clip_grad_norm_(self.model.parameters(), tcfg.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad()
                if acc.sync_gradients:
                    self.state["global_step"] += 1
                loss_sum += loss.detach()
                n_loss += 1
                seen += batch["input_ids"].shape[0] * acc.num_processes
                tokens += batch["input_ids"].numel() * acc.num_processes
                if bar is not None:
                    bar.update(1)
                    if n_loss % tcfg.log_every == 0:
                        rate = seen / max(time.perf_counter() - t0, 1e-9)
                        bar.set_postfix(
                            loss=f"{loss.item():.4f}", products_s=f"{rate:.0f}", refresh=False
                        )
                if self._done():
                    break
            if bar is not None:
                bar.close()
            epoch_seconds = time.perf_counter() - t0
            mean_loss = acc.reduce(loss_sum, reduction="mean").item() / max(n_loss, 1)
            self.state["train_seconds"] += epoch_seconds
            valid_scores = self.predict_valid()
            record = {
                "epoch": epoch + 1,
                "train_loss": mean_loss,
                "lr": self.scheduler.get_last_lr()[0],
                "head_lr": self.scheduler.get_last_lr()[-1],
                "products_per_s": seen / max(epoch_seconds, 1e-9),
                "epoch_seconds": epoch_seconds,
            }
            flops = self.flops.per_s(tokens, epoch_seconds)
            if flops is not None:
                record["train_flops_per_s"] = flops
            if acc.device.type == "cuda":
                record["peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated(acc.device) / 2**30
            if valid_scores is not None:
                valid_metrics = evaluate_scores_on(
                    valid_scores, self.valid_products, self.vocab, 0.5
                ).metrics
                record.update({f"valid_{k}": v for k, v in valid_metrics.items()})
            self.state["epoch"] = epoch + 1
            self.state["history"].append(record)
            improved = self._track_best(record)
            if self.is_main:
                self.tracker.log_metrics(
                    {k: v for k, v in record.items() if k != "epoch"}, step=epoch + 1
                )
                if "valid_nDCG@3" in record:
                    logger.info(
                        "epoch %d: loss %.4f, valid nDCG@3 %.4f%s",
                        epoch + 1,
                        mean_loss,
                        record["valid_nDCG@3"],
                        " (best)" if improved else "",
                    )
                else:  # a refit: no valid products
                    logger.info("epoch %d: loss %.4f", epoch + 1, mean_loss)
            self._checkpoint(epoch + 1, improved)
            if self._stopped_early():
                logger.info("early stopping after epoch %d", epoch + 1)
                break

    def _done(self) -> bool:
        max_steps = self.cfg.train.max_steps
        return max_steps is not None and self.state["global_step"] >= max_steps

    def _stopped_early(self) -> bool:
        """Whether early stopping ends the run (never a refit's: it trains the epochs tuned)."""
        patience = self.cfg.train.early_stopping_patience
        return bool(patience) and self.tuned is None and self.state["bad_epochs"] >= patience

    def _bar(self, total: int, desc: str) -> Any:
        if not (self.progress and self.is_main):
            return None
        from labelrec.progress import progress_bar

        return progress_bar(total=total, desc=desc, unit="batch", dynamic_ncols=True, leave=False)

    def _track_best(self, record: dict[str, float]) -> bool:
        value = record.get("valid_nDCG@3", -record["train_loss"])
        if value > self.state["best_metric"] + 1e-6:
            self.state["best_metric"] = value
            self.state["best_epoch"] = record["epoch"]
            self.state["bad_epochs"] = 0
            return True
        self.state["bad_epochs"] += 1
        return False

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        model = self.accelerator.unwrap_model(self.model)
        names = {n for n, p in model.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}

    def _checkpoint(self, epoch: int, improved: bool) -> None:
        """Save ``epoch-N`` (and ``best.pt`` when valid improved): each written under a temporary
        name, then renamed, so a checkpoint on disk is complete or absent."""
        acc = self.accelerator
        if improved and self.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.ckpt_dir / f"{BEST_FILE}.tmp"
            state = self._trainable_state()
            try:
                with disk_room(tmp, "the best weights"):
                    torch.save(state, tmp)
            except BaseException:  # the best weights written before stay
                tmp.unlink(missing_ok=True)
                raise
            del state
            os.replace(tmp, self.ckpt_dir / BEST_FILE)
        path = self.ckpt_dir / f"epoch-{epoch}"
        tmp_dir = self.ckpt_dir / f"epoch-{epoch}.tmp"
        if self.is_main:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        acc.wait_for_everyone()
        try:
            with disk_room(tmp_dir, "the checkpoint"):
                acc.save_state(str(tmp_dir))
                acc.wait_for_everyone()
                if self.is_main:
                    # a resume takes the count over rather than counting its own first step,
                    # whose gradients the counter's dispatch changes in the last bits (decoders)
                    self.state["flops_per_token"] = self.flops.flops_per_token
                    self.state["flops_uncountable"] = self.flops.uncountable
                    (tmp_dir / STATE_FILE).write_text(
                        json.dumps(self.state, indent=1), encoding="utf-8"
                    )
        except BaseException:  # the last complete checkpoint stays for --resume
            if self.is_main:
                shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        if self.is_main:
            shutil.rmtree(path, ignore_errors=True)
            os.replace(tmp_dir, path)
            for old in self.ckpt_dir.glob("epoch-*"):
                if old != path:
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    @torch.inference_mode()
    def predict_valid(self) -> np.ndarray | None:
        """Valid scores in valid order, computed on every process and gathered."""
        if not self.valid_products:
            return None
        acc = self.accelerator
        model = self.model
        model.eval()
        order = sorted(range(len(self.valid_ids)), key=lambda i: -len(self.valid_ids[i]))
        bs = self.cfg.train.eval_batch_size
        batches = [order[i : i + bs] for i in range(0, len(order), bs)]
        loader = DataLoader(
            EncodedSet(self.valid_ids, None), batch_sampler=batches, collate_fn=self.collate
        )
        loader = acc.prepare(loader)
        n_tags = len(self.vocab)
        scores = np.zeros((len(self.valid_ids), n_tags), dtype=np.float32)
        for batch in loader:
            logits = model(batch["input_ids"], batch["attention_mask"])
            probs = torch.sigmoid(logits.float())
            # Batches differ in size across processes (length-sorted, the last one short, repeats
            # to even out the count): pad to one size, gather, drop the padding by index -1.
            # Repeated products are written twice with the same scores.
            idx = acc.pad_across_processes(batch["index"], dim=0, pad_index=-1)
            probs = acc.pad_across_processes(probs, dim=0)
            idx, probs = acc.gather((idx, probs))
            keep = idx >= 0
            scores[idx[keep].cpu().numpy()] = probs[keep].cpu().numpy()
        model.train()
        return scores

    # ---------------------------------------------------------------- finish
    def finish(self) -> TrainResult:
        """Best weights back, the other taggers fitted and fused, thresholds tuned on valid.

        A refit (``tuned`` given) keeps its last weights and takes its fusion weights and
        thresholds from ``tuned``. Writes nothing (``save`` does)."""
        acc = self.accelerator
        acc.wait_for_everyone()
        # without the mixed-precision wrapper: what follows scores as the saved model will
        model: TagModel = acc.unwrap_model(self.model, keep_fp32_wrapper=False)
        best_file = self.ckpt_dir / BEST_FILE
        if best_file.is_file() and self.tuned is None:
            model.load_state_dict(torch.load(best_file, weights_only=True), strict=False)
        stored = model.storage_dtype(self.cfg.model.save_dtype)
        if stored != "float32":  # what follows is tuned and measured on the weights as saved
            model.as_stored(stored)
        scores = self.predict_valid()
        fusion, lexical_report, fusion_inputs = None, {}, None
        if self.cfg.lexical.enabled:  # the other taggers, fused with the model (fusion.py)
            from labelrec.fusion import fit_fusion
            from labelrec.model import score_token_ids
            from labelrec.taggers import TrainingSet

            embeddings = [None, None]
            if self.cfg.lexical.embedding_k > 0:  # pooled vectors for the embedding neighbours
                logger.info(
                    "embedding %d training and %d valid products for the embedding neighbours",
                    len(self.train_ids),
                    len(self.valid_ids),
                )
                model.eval()
                embeddings = [
                    score_token_ids(
                        model,
                        ids,
                        self.tokenizer.pad_token_id,
                        self.cfg.train.eval_batch_size,
                        acc.device,
                        with_embeddings=True,
                    )[1]
                    for ids in (self.train_ids, self.valid_ids)
                ]
            train = TrainingSet(
                self.train_products,
                self.train_set.labels,
                self.vocab,
                embeddings[0],
                self.cfg.seed,
            )
            fusion, scores, lexical_report, fusion_inputs = fit_fusion(
                self.cfg, train, self.valid_products, scores, embeddings[1]
            )
        if fusion_inputs is None and scores is not None and self.valid_products:
            from labelrec.fusion import FusionInputs

            fusion_inputs = FusionInputs(list(self.valid_products), self.vocab.tags, scores)
        generator, generator_report, gen_votes = None, {}, None
        fused_scores = scores
        tuned_products, y_tuned = self.valid_products, self.y_valid
        if self.cfg.generate.enabled:  # the decoder that writes tags, one more voter
            generator, scores, tuned_products, generator_report, gen_votes = self._fit_generator(
                fusion, scores
            )
            y_tuned = self.vocab.encode(tuned_products)
        # the new (open-vocabulary) tags of the tuned products and the score they need, as
        # the model will propose them: measured with the known ones, as `labelrec eval` does
        valid_new, new_threshold = None, 1.0
        if fusion is not None and fusion_inputs is not None and scores is not None:
            from labelrec.rerank import fusion_new_tags

            valid_new, new_threshold = fusion_new_tags(fusion_inputs, fusion), fusion.new_threshold
        if gen_votes is not None and generator is not None:
            valid_new, new_threshold = gen_votes.final_new, generator.new_threshold
        reranker, rerank_report = None, {}
        if fusion is not None and self.cfg.lexical.rerank and self.fit_reranker:
            if self.tuned is not None:
                reranker = self._carried_reranker()
            elif scores is not None and fusion_inputs is not None:
                reranker, scores, reranked_new, rerank_report = self._fit_reranker(
                    fusion, generator, fusion_inputs, fused_scores, scores, gen_votes
                )
                if reranker is not None:
                    valid_new, new_threshold = reranked_new, reranker.new_threshold
        result_metrics: dict[str, float] = {}
        global_t, per_tag = 0.5, np.full(len(self.vocab), 0.5, dtype=np.float32)
        if scores is not None:
            global_t = metrics.tune_global_threshold(y_tuned, scores)
            per_tag = metrics.tune_tag_thresholds(
                y_tuned, scores, global_t, prior=self.cfg.train.threshold_prior
            )
            result_metrics = evaluate_scores_on(
                scores,
                tuned_products,
                self.vocab,
                per_tag,
                new_tags=valid_new,
                new_threshold=new_threshold,
                hierarchy=fusion.hierarchy if fusion is not None else None,
            ).metrics
            result_metrics["global_threshold"] = float(global_t)
        result_metrics.update(lexical_report)
        result_metrics.update(generator_report)
        result_metrics.update(rerank_report)
        refit = None
        if self.tuned is not None:  # a refit: what the tuning run chose on valid
            t = self.tuned
            global_t, per_tag = t.global_threshold, t.thresholds_for(self.vocab.tags)
            if fusion is not None and t.lexical is not None:
                for key, value in t.lexical.items():
                    setattr(fusion, key, value)
            if generator is not None and t.generator is not None:
                for key, value in t.generator.items():
                    setattr(generator, key, value)
            refit = {
                "train_products": len(self.train_products),
                "epochs": self.state["epoch"],
                "train_seconds": self.state["train_seconds"],
                "tuning_dir": TUNING_DIR,
            }
            result_metrics = dict(t.valid_metrics)
        tuned = TunedSettings(
            epochs=self.state["best_epoch"],
            global_threshold=float(global_t),
            tag_thresholds={t: float(v) for t, v in zip(self.vocab.tags, per_tag, strict=True)},
            lexical=_floats(fusion, FUSION_WEIGHTS),
            generator=_floats(generator, GENERATOR_TUNED),
            valid_metrics=result_metrics,
        )
        self.fusion, self.generator, self.reranker = fusion, generator, reranker
        return TrainResult(
            output=self.output,
            metrics=result_metrics,
            history=self.state["history"],
            best_epoch=self.state["best_epoch"],
            train_seconds=self.state["train_seconds"],
            n_tags=len(self.vocab),
            valid_scores=scores,
            valid_products=list(tuned_products),
            vocab=self.vocab,
            global_threshold=float(global_t),
            tag_thresholds=per_tag,
            tuned=tuned,
            refit=refit,
            fusion_inputs=fusion_inputs,
            hierarchy=fusion.hierarchy if fusion is not None else None,
        )

    def save(self, result: TrainResult) -> None:
        """The model directory (main process): merged weights, tokenizer, vocabulary,
        thresholds, the fusion and its taggers, history, ``labelrec.json`` last; checkpoints
        stay for ``--resume``."""
        acc = self.accelerator
        model: TagModel = acc.unwrap_model(self.model)
        refit, result_metrics = result.refit, result.metrics
        if self.is_main:
            model.eval()
            info = ModelInfo(
                backbone=recorded_backbone(self.cfg.model.backbone),
                pooling=model.pooling,
                max_length=self.cfg.model.max_length,
                n_tags=len(self.vocab),
                extra={
                    "best_epoch": self.state["best_epoch"] if refit is None else refit["epochs"],
                    "num_processes": acc.num_processes,
                    # trained as adapters, merged when saved (or before, to score as stored)
                    "lora_adapters": hasattr(model.seq, "peft_config") or model.merged_adapters,
                    # a refit model's are the tuning run's: the last valid it did not train on
                    "valid_metrics": result_metrics,
                    "train_source": self.splits.train_source,
                    "valid_source": self.splits.valid_source,  # where valid_metrics come from
                    # a refit's: as given (its tuned epochs are under "refit"), so it trains again
                    "config": config_to_dict(self.given_cfg if refit is not None else self.cfg),
                },
            )
            if refit is not None:
                info.extra["refit"] = refit
            if self.pair_separator is not None:  # what goes between title and description
                info.extra["pair_separator"] = self.pair_separator
            base_model = base_model_of(self.cfg.model.backbone)
            if base_model is not None:  # a backbone of `labelrec pretrain`
                info.extra["base_model"] = recorded_backbone(base_model)
            # The new model is written beside the old one (OUTPUT/.saving), which stays loadable
            # meanwhile, then its files replace the old ones with labelrec.json last: while they
            # move, the directory is no model to load (a service polling it keeps the version it
            # has), then it is one, complete.
            stage = self.output / SAVING_DIR
            if stage.exists():
                shutil.rmtree(stage)
            stage.mkdir(parents=True)
            pending = f"{LABELREC_FILE}.pending"
            try:
                with disk_room(self.output, "the model"):
                    self._write_stage(model, stage, info, result, pending)
            except BaseException:  # the model in OUTPUT stays as it was; half a new one goes
                shutil.rmtree(stage, ignore_errors=True)
                raise
            publish_staged(stage, self.output, info_file=pending)
            if refit is None:
                self.tracker.log_metrics({f"final_{k}": v for k, v in result_metrics.items()})
            else:
                self.tracker.log_metrics(
                    {k: float(refit[k]) for k in ("train_products", "epochs", "train_seconds")}
                )

    def _write_stage(
        self, model: TagModel, stage: Path, info: ModelInfo, result: TrainResult, pending: str
    ) -> None:
        """The model's files into ``stage``, its info as ``pending`` (``publish_staged`` moves
        them in)."""
        save_model(
            model,
            self.tokenizer,
            stage,
            info,
            info_file=pending,
            dtype=self.cfg.model.save_dtype,
        )
        self.vocab.save(stage / VOCAB_FILE)
        save_thresholds(stage / THRESHOLDS_FILE, result.global_threshold, result.tag_thresholds)
        from labelrec.fusion import save_fusion

        save_fusion(self.fusion, stage)
        from labelrec.taggers.generator import save_generator

        save_generator(self.generator, stage)
        from labelrec.rerank import save_reranker

        save_reranker(self.reranker, stage)
        (stage / HISTORY_FILE).write_text(
            json.dumps(jsonable(self.state["history"]), indent=1), encoding="utf-8"
        )
        info_path = stage / pending
        written = json.loads(info_path.read_text(encoding="utf-8"))
        written["components"] = manifest(stage, info_file=pending)
        info_path.write_text(json.dumps(written, indent=2), encoding="utf-8")
        from labelrec.modelcard import write_tagger_card

        write_tagger_card(stage, written, name=self.output.name)

    # ---------------------------------------------------------------- cleanup
    def cleanup(self) -> None:
        """Every process done; the optimizer and the model's state released."""
        self.accelerator.wait_for_everyone()
        self.model, self.optimizer = self.accelerator.free_memory(self.model, self.optimizer)

    def _fit_generator(
        self, fusion: Any, scores: np.ndarray | None
    ) -> tuple[Any, np.ndarray | None, list[data_mod.Product], dict[str, float], Any]:
        """Train the tag generator, tune its fusion weight on (a subset of) valid.

        Returns (generator, final scores of the tuned products, those products, report, its
        votes on them: ``GeneratorVotes`` or None). With ``generate.tune_products`` set,
        thresholds and final metrics come from that subset.
        """
        from labelrec.fusion import tune_generator
        from labelrec.taggers import TrainingSet
        from labelrec.taggers.generator import TagGenerator

        gcfg = self.cfg.generate
        if self.tuned is not None and not gcfg.refit:
            return self._carried_generator(), scores, self.valid_products, {}, None
        train = TrainingSet(
            self.train_products,
            self.train_set.labels,
            self.vocab,
            seed=self.cfg.seed,
            progress=self.progress and self.is_main,
        )
        generator = TagGenerator.fit(train, self.cfg)
        history = generator.history
        report: dict[str, float] = {
            "generator_train_seconds": float(generator.meta["train_seconds"]),
            "generator_train_products_per_s": float(history[-1]["products_per_s"]),
            "generator_final_loss": float(history[-1]["loss"]),
        }
        if "train_flops_per_s" in history[-1]:
            report["generator_train_flops_per_s"] = float(history[-1]["train_flops_per_s"])
        if scores is None:
            return generator, scores, self.valid_products, report, None
        rows = list(range(len(self.valid_products)))
        if gcfg.tune_products is not None and gcfg.tune_products < len(rows):
            rows = sorted(random.Random(self.cfg.seed).sample(rows, gcfg.tune_products))
            report["valid_products_sampled_from"] = float(len(self.valid_products))
        products = [self.valid_products[i] for i in rows]
        fused = scores[rows]
        new = [{} for _ in rows]
        if fusion is not None:
            new = fusion.new_tags(products)
        t0 = time.perf_counter()
        gen_known, gen_new = generator.votes(products, self.progress and self.is_main)
        report["generator_products_per_s"] = len(products) / max(time.perf_counter() - t0, 1e-9)
        tuning = tune_generator(
            products, self.vocab, fused, new, gen_known, gen_new, gcfg.weight, gcfg.new_weight
        )
        generator.weight, generator.new_weight = tuning.weight, tuning.new_weight
        generator.new_threshold = tuning.new_threshold
        report.update(tuning.report)
        logger.info(
            "generator: weight %.2f (new tags %.2f), valid objective %.4f -> %.4f",
            tuning.weight,
            tuning.new_weight,
            tuning.report["fused_objective_without_generator"],
            tuning.report["fused_objective_with_generator"],
        )
        votes = GeneratorVotes(rows, new, gen_known, gen_new, tuning.new)
        return generator, tuning.known, products, report, votes

    def _fit_reranker(
        self,
        fusion: Any,
        generator: Any,
        inputs: Any,
        fused: np.ndarray,
        final: np.ndarray,
        gen_votes: GeneratorVotes | None,
    ) -> tuple[Any, np.ndarray, list[dict[str, float]], dict[str, float]]:
        """The reranker fitted on the tuned valid products (``labelrec.rerank``): (it or None,
        their out-of-fold reranked known scores and new tags, report)."""
        from labelrec.rerank import Reranker, fusion_votes

        rows = gen_votes.rows if gen_votes is not None else None
        votes = fusion_votes(inputs, fusion, fused, rows)
        votes.final = final
        if gen_votes is not None:
            votes.final_new = gen_votes.final_new
            votes.fused_new = gen_votes.new
            if max(generator.weight, generator.new_weight) > 0:
                votes.gen_known, votes.gen_new = gen_votes.known, gen_votes.new_tags
        rows = list(range(len(inputs.products))) if rows is None else rows
        products = [inputs.products[i] for i in rows]
        parents = fusion.parents if fusion.ancestor_consistency else None
        logger.info("fitting the reranker on %d valid products", len(products))
        t0 = time.perf_counter()
        reranker, known, new, report = Reranker.fit(
            products,
            self.vocab,
            votes,
            fusion.separator,
            parents,
            self.cfg.lexical.rerank_candidates,
            self.cfg.seed,
        )
        report["rerank_seconds"] = time.perf_counter() - t0
        if "rerank_objective_after" not in report:
            from labelrec.rerank import MIN_PRODUCTS

            logger.info(
                "reranker: not fitted on %d valid products (it needs %d, with right and wrong"
                " candidates among them)",
                len(products),
                MIN_PRODUCTS,
            )
        else:
            logger.info(
                "reranker: valid objective %.4f -> %.4f out of fold, %s",
                report["rerank_objective_before"],
                report["rerank_objective_after"],
                "kept" if reranker is not None else "not kept",
            )
        return reranker, known, new, report

    def _carried_reranker(self) -> Any:
        """The tuning run's reranker in a refit (None when it kept none)."""
        from labelrec.rerank import Reranker

        return Reranker.load(Path(self.cfg.output) / TUNING_DIR)

    def _carried_generator(self) -> Any:
        """The tuning run's generator in a refit with ``generate.refit: false``, writing the
        refit's (larger) vocabulary."""
        from labelrec.taggers.generator import TagGenerator

        tuning = Path(self.cfg.output) / TUNING_DIR
        device = "cuda" if torch.cuda.is_available() else "cpu"
        generator = TagGenerator.load(tuning, data_mod.TagVocab.load(tuning / VOCAB_FILE), device)
        if generator is None:
            raise FileNotFoundError(f"generate.refit=false: {tuning} has no generator to carry")
        logger.info("refit: the tuning run's generator is carried over (generate.refit=false)")
        return generator.with_vocab(self.vocab)

    def run(self) -> TrainResult:
        """setup, train, finish (fit and fuse the other taggers), save, cleanup."""
        self.setup()
        self.train()
        result = self.finish()
        self.save(result)
        self.cleanup()
        return result


GENERATOR_TUNED = ("weight", "new_weight", "new_threshold")


@dataclass
class GeneratorVotes:
    """The generator's votes on the tuned valid products (rows of valid), and the new tags
    before and after it voted: what the reranker reads."""

    rows: list[int]
    new: list[dict[str, float]]
    known: np.ndarray
    new_tags: list[dict[str, float]]
    final_new: list[dict[str, float]]


def _floats(obj: Any, names: tuple[str, ...]) -> dict[str, float] | None:
    return None if obj is None else {k: float(getattr(obj, k)) for k in names}


def _flat_config(cfg: Config) -> dict[str, Any]:
    from labelrec.config import flatten

    return flatten(config_to_dict(cfg))


def train(
    cfg: Config, resume: bool = False, tracker: Tracker | None = None, progress: bool = True
) -> TrainResult:
    """Fine-tune a tagger (``task: describe``: a describer) and save it to ``cfg.output``. A
    second run into the same output meanwhile is refused (``modeldir.output_lock``). Python's,
    numpy's and torch's global random generators are seeded with ``cfg.seed``."""
    cfg = checked(cfg)  # edited in code since it was loaded: checked now, not after training
    check_output(cfg)
    check_inputs(cfg)
    with output_lock(cfg.output):
        finish_publish(cfg.output)  # a killed run's new model, half moved in: completed
        if cfg.task == "describe":
            from labelrec.describe import train_describer

            return train_describer(cfg, resume=resume, tracker=tracker, progress=progress)
        if not cfg.train.refit:
            result = TagTrainer(cfg, resume=resume, tracker=tracker, progress=progress).run()
        else:
            result = train_and_refit(cfg, resume=resume, tracker=tracker, progress=progress)
        if not cfg.train.keep_checkpoints:
            remove_checkpoints(Path(cfg.output))
        return result


def warn_case_variants(vocab: data_mod.TagVocab, source: str) -> None:
    """Warn of the tags of ``vocab`` that differ only in case: each is trained as a tag of its
    own, which a reader of the catalog would not expect."""
    if variants := vocab.variants():
        shown = "; ".join(" / ".join(g) for g in variants[:5])
        logger.warning(
            "%s: tags that differ only in case, in %d group(s) (%s%s): each is trained as a"
            " tag of its own; spell a tag one way in the catalog to train it as one",
            source,
            len(variants),
            shown,
            "; ..." if len(variants) > 5 else "",
        )


def use_fused_adamw(wanted: bool, mixed_precision: str, device_type: str) -> bool:
    """Whether the tagger's AdamW runs torch's fused kernel: where ``train.fused_adamw`` asks
    for it and the device has one, but not under fp16's gradient scaler (a fused optimizer
    skips an overflowed step inside its kernel, unseen by Accelerate, whose learning-rate
    schedule would then move on)."""
    if not wanted or mixed_precision == "fp16":
        return False
    try:  # torch's own list of the devices with fused optimizer kernels
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # a torch that moved it: the two every torch >= 2.4 has
        devices = {"cpu", "cuda"}
    return device_type in devices


def make_adamw(groups: list[dict[str, Any]], fused: bool) -> torch.optim.AdamW:
    """torch's AdamW over parameter ``groups``: by its fused kernel where ``fused`` (on the CPU
    it updates the weights in one pass instead of a loop of small operations per tensor, which
    dominates a step on short titles), else by torch's default implementation."""
    return torch.optim.AdamW(groups, fused=fused or None)


def set_adamw_kernel(optimizer: Any, fused: bool) -> None:
    """Make a (wrapped) AdamW whose state was loaded from a checkpoint run by ``fused``'s
    kernel: loading takes the saved run's choice with its hyperparameters, and the fused kernel
    keeps each weight's step count on the weight's device, the default one on the CPU."""
    inner = getattr(optimizer, "optimizer", optimizer)
    for group in inner.param_groups:
        group["fused"] = fused or None
        if fused:
            group["foreach"] = None
        for param in group["params"]:
            step = inner.state.get(param, {}).get("step")
            if isinstance(step, torch.Tensor):
                device = param.device if fused else torch.device("cpu")
                inner.state[param]["step"] = step.to(device=device, dtype=torch.float32)


def check_inputs(cfg: Config) -> None:
    """The catalogs the run reads are there (a ``FileNotFoundError`` naming the setting): a
    missing one stops it before it locks its output or loads a backbone."""
    # data.holdout is read with data.feedback only (reviews of held-out products left out)
    names = ["train", "valid", "feedback", *(["holdout"] if cfg.data.feedback else [])]
    data_mod.check_input_files(cfg.data, names)


def check_output(cfg: Config) -> None:
    """Refuse an output folder whose contents the run would destroy or leave misdescribed: the
    backbone's own folder; for a describer (saved by replacing its whole folder) a folder of
    anything but a describer; for a tagger (saved file by file) a describer's folder, whose
    ``causal.json`` would still name it a describer."""
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output={cfg.output}: is a file; give a directory for the model")
    describe = cfg.task == "describe"
    check_not_backbone(out, cfg.describe.backbone if describe else cfg.model.backbone)
    if not out.is_dir():
        return
    if describe and holds_cwd(out):
        raise ValueError(
            f"output={cfg.output}: the current folder or one above it, and a describer's save"
            " replaces its whole folder; give a folder inside it"
        )
    from labelrec.describe import is_describer_dir

    is_describer = is_describer_dir(out)  # a tag generator's folder holds a causal.json too
    if describe and (out / LABELREC_FILE).is_file():
        raise ValueError(
            f"output={cfg.output}: holds a tagging model; train the describer into another folder"
        )
    if describe and not is_describer and any(out.iterdir()):
        raise ValueError(
            f"output={cfg.output}: holds files that are not a describer's, and a describer's save"
            " replaces the whole folder; give a new or empty folder"
        )
    if not describe and is_describer:
        raise ValueError(
            f"output={cfg.output}: holds a describer; train the tagger into another folder"
        )


def remove_checkpoints(output: Path) -> list[Path]:
    """Remove the checkpoint folders of a finished run (its own, its tuning runs'); the saved
    model and the tuning run's model stay. Main process only; returns the folders removed."""
    if not process_state().is_main_process:
        return []
    runs = [output, output / TUNING_DIR, *sorted((output / TUNING_DIR).glob("fold-*"))]
    found = [run / CHECKPOINTS_DIR for run in runs if (run / CHECKPOINTS_DIR).is_dir()]
    for folder in found:
        shutil.rmtree(folder, ignore_errors=True)
        logger.info("removed %s (train.keep_checkpoints: false)", folder)
    return found


def settle_auto_folds(cfg: Config, splits: Splits) -> Config:
    """``cfg`` with ``train.tuning_folds: auto`` set to 1 where two folds' pooled tuning would
    hold more than ``AUTO_FOLDS_MAX_CELLS`` products x tags (train + valid by the vocabulary of
    ``data.min_tag_count``), or where train + valid's titles make fewer than two groups of
    near-duplicates (variants of one title stay in one fold); else ``cfg`` itself. The run then
    records the 1 it trained with. A number of folds above the groups is a ``ConfigError``."""
    if cfg.tuning_fold_count == 1:
        return cfg
    pool = refit_products(splits)
    groups = data_mod.title_groups(pool)
    if groups < cfg.tuning_fold_count:
        if cfg.train.tuning_folds != "auto":
            raise ConfigError(
                f"train.tuning_folds={cfg.tuning_fold_count}: the {len(pool)} products of train"
                f" + valid have {groups} titles that differ by more than case, digits and"
                f" punctuation, and each fold holds whole groups of such variants: set"
                f" train.tuning_folds to at most {groups}, or 1 (tune on valid)"
            )
        logger.warning(
            "train.tuning_folds auto: the %d products of train + valid have %d titles that differ"
            " by more than case, digits and punctuation, too few for two folds: tuning on valid",
            len(pool),
            groups,
        )
        return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, tuning_folds=1))
    if cfg.train.tuning_folds != "auto":
        return cfg
    n_tags = len(data_mod.TagVocab.from_products(pool, cfg.data.min_tag_count))
    if len(pool) * n_tags <= AUTO_FOLDS_MAX_CELLS:
        return cfg
    logger.warning(
        "train.tuning_folds auto: %d labelled products x %d tags is over %d cells for two"
        " folds' pooled tuning: tuning on valid (train.tuning_folds=2 tunes by folds anyway)",
        len(pool),
        n_tags,
        AUTO_FOLDS_MAX_CELLS,
    )
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, tuning_folds=1))


def train_and_refit(
    cfg: Config, resume: bool = False, tracker: Tracker | None = None, progress: bool = True
) -> TrainResult:
    """Tune, then train the final model on train + valid with what the tuning chose.

    The tuning is ``train.tuning_folds`` runs over train + valid (``tune_by_folds``; ``auto``
    settled by ``settle_auto_folds``), or one run on train tuned on valid (early stopping,
    fusion weights, thresholds, all on valid), saved in ``OUTPUT/tuning`` with its choices in
    ``tuned.json``; the final model in ``OUTPUT`` is trained for the tuning's epoch count on
    train + valid, with its fusion weights and per-tag thresholds (tags new in the larger
    vocabulary get the global threshold). Its recorded valid metrics are the tuning's (out of
    fold, or on valid), and so are the valid scores returned: valid is training data of the
    final model. Without valid products this is one plain run.
    """
    tracker = tracker or NullTracker()
    splits = load_splits(cfg)
    warn_case_variants(
        data_mod.TagVocab.from_products(splits.train, cfg.data.min_tag_count), splits.train_source
    )
    if not splits.valid:
        logger.warning("train.refit: no valid products to tune on, training once on train")
        return TagTrainer(cfg, resume, tracker, progress, splits=splits).run()
    cfg = settle_auto_folds(cfg, splits)
    tuning_dir = Path(cfg.output) / TUNING_DIR
    tuned_file = tuning_dir / TUNED_FILE
    tuning: TrainResult | None = None
    if not resume and process_state().is_main_process:
        # an earlier run's tuning (its choices, its runs on valid or a fold) and refit
        # checkpoints are not this run's to resume from, nor to be read beside its own
        shutil.rmtree(tuning_dir, ignore_errors=True)
        shutil.rmtree(Path(cfg.output) / CHECKPOINTS_DIR, ignore_errors=True)
    done: TunedSettings | None = None
    earlier: TunedSettings | None = None  # a tuning run resumed to another epoch count
    if resume and tuned_file.is_file():
        check_same_run(
            tuning_dir / RUN_FILE,
            cfg,
            f"the tuning run's choices {tuned_file}",
            data_fingerprint(splits.train, splits.valid),
        )
        done = TunedSettings.load(tuned_file)
        if done.planned_epochs not in (None, cfg.train.epochs):
            # the tuning run continues to the new count (its checkpoints hold where it
            # stopped); the refit trains again where that changes what it chose
            logger.info(
                "--resume: train.epochs=%d, the tuning run had %d: tuning goes on",
                cfg.train.epochs,
                done.planned_epochs,
            )
            done, earlier = None, done
    if done is not None:
        tuned = done
        logger.info("--resume: tuning run done (%s), refitting", tuned_file)
    else:
        if cfg.tuning_fold_count > 1:
            tuning = tune_by_folds(cfg, splits, tuning_dir, resume, tracker, progress)
        else:
            tuning_cfg = dataclasses.replace(cfg, output=str(tuning_dir))
            tuning = TagTrainer(
                tuning_cfg, resume, tracker, progress, splits=splits, given_cfg=cfg
            ).run()
        assert tuning.tuned is not None
        tuned = tuning.tuned
        tuned.planned_epochs = cfg.train.epochs
        if earlier is not None and _choices(tuned) != _choices(earlier):
            # the refit's checkpoints were trained with other choices: it starts again (they
            # go before the new choices are saved, so a resume never pairs the two)
            logger.info("--resume: the tuning run chose anew: the refit trains again")
            if process_state().is_main_process:
                shutil.rmtree(Path(cfg.output) / CHECKPOINTS_DIR, ignore_errors=True)
            process_state().wait_for_everyone()
        if process_state().is_main_process:
            tuned.save(tuned_file)
            write_run_settings(
                tuning_dir / RUN_FILE, cfg, data_fingerprint(splits.train, splits.valid)
            )
    logger.info(
        "refit on %d train + %d valid products for %d epochs",
        len(splits.train),
        len(splits.valid),
        tuned.epochs,
    )
    # the fusion weights and thresholds come from ``tuned`` in the refit's finish
    refit_cfg = dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, epochs=max(1, tuned.epochs))
    )
    both = f"{splits.train_source} + {splits.valid_source}"
    merged = dataclasses.replace(
        splits,
        train=refit_products(splits),
        valid=[],
        train_source=both,
        # where the tuning's metrics, which the refit model reports, were measured
        valid_source=both if cfg.tuning_fold_count > 1 else splits.valid_source,
    )
    result = TagTrainer(
        refit_cfg,
        resume,
        RefitTracker(tracker),
        progress,
        splits=merged,
        tuned=tuned,
        given_cfg=cfg,
    ).run()
    result.best_epoch = tuned.epochs
    if tuning is not None:  # the valid evaluation to report is the tuning run's
        result.valid_scores, result.valid_products = tuning.valid_scores, tuning.valid_products
        result.vocab = tuning.vocab
        result.global_threshold, result.tag_thresholds = (
            tuning.global_threshold,
            tuning.tag_thresholds,
        )
    return result


def _choices(tuned: TunedSettings) -> dict[str, Any]:
    """What a refit trains with from its tuning run (not how that run was planned or scored)."""
    out = dataclasses.asdict(tuned)
    for key in ("planned_epochs", "valid_metrics"):
        out.pop(key)
    return out


def tuning_folds(
    pool: list[data_mod.Product], k: int, seed: int
) -> list[tuple[list[data_mod.Product], list[data_mod.Product]]]:
    """The ``train.tuning_folds`` splits of ``pool``: (the rest, the products held out) for each
    of ``k`` folds, near-duplicate titles kept in one fold."""
    splits = []
    for held in data_mod.grouped_folds(pool, k, seed):
        out = {int(j) for j in held}
        splits.append(
            ([p for j, p in enumerate(pool) if j not in out], [pool[j] for j in sorted(out)])
        )
    return splits


def pool_evidence(
    parts: list[FusionInputs], pool: list[data_mod.Product]
) -> tuple[FusionInputs, data_mod.TagVocab]:
    """The folds' out-of-fold evidence over one tag list, and its vocabulary counted on ``pool``."""
    tags = sorted({t for p in parts for t in p.tags})
    vocab = data_mod.TagVocab(tags, _tag_counts(pool, tags), len(pool))
    return FusionInputs.pool(parts, tags), vocab


def _tag_counts(products: list[data_mod.Product], tags: list[str]) -> np.ndarray:
    """How many of ``products`` carry each of ``tags``."""
    counts = Counter(t for p in products for t in set(p.tags))
    return np.asarray([counts[t] for t in tags], dtype=np.int64)


def fold_counts(
    folds: list[tuple[list[data_mod.Product], list[data_mod.Product]]],
    tags: list[str],
    scored: list[int],
) -> list[np.ndarray]:
    """Per pooled out-of-fold product (fold by fold, ``scored[i]`` of fold ``i``, as
    ``pool_evidence`` concatenates them), the tag counts of the products its fold's voters were
    trained on: a count over the whole pool would count the product itself, a sign of its own
    gold tags that no product scored later shows."""
    out: list[np.ndarray] = []
    for (rest, _), n in zip(folds, scored, strict=True):
        out += [_tag_counts(rest, tags)] * n
    return out


def scorable_cells(tags: list[str], fold_tags: list[list[str]], sizes: list[int]) -> np.ndarray:
    """(products, ``tags``): whether the voters that scored each pooled out-of-fold product had
    each tag among their columns (``fold_tags[i]``, of the ``sizes[i]`` products of fold ``i``,
    as ``FusionInputs.pool`` stacks them; a tag a fold lacks scores 0 in its rows)."""
    rows = []
    for known, n in zip(fold_tags, sizes, strict=True):
        known = set(known)
        row = np.fromiter((t in known for t in tags), bool, len(tags))
        rows.append(np.broadcast_to(row, (n, len(tags))))
    return np.concatenate(rows) if rows else np.zeros((0, len(tags)), dtype=bool)


def tune_by_folds(
    cfg: Config,
    splits: Splits,
    tuning_dir: Path,
    resume: bool = False,
    tracker: Tracker | None = None,
    progress: bool = True,
) -> TrainResult:
    """What the refit trains with, chosen by ``train.tuning_folds``-fold cross-validation over
    train + valid: one run per fold (``tuning_dir/fold-K``, trained on the other folds, its
    taggers fitted there), then the fusion weights and per-tag thresholds tuned on every
    product's out-of-fold evidence together, and the epochs the median of the folds' best.

    Returns a ``TrainResult`` of the out-of-fold evaluation (its ``tuned`` holds the choices; the
    first fold's run reports to ``tracker``)."""
    from labelrec.fusion import Fusion, tune_fusion
    from labelrec.taxonomy import parent_index

    k = cfg.tuning_fold_count
    pool = refit_products(splits)  # train + valid, every review merged in
    if tracker is not None and process_state().is_main_process:  # the catalogs, not the halves
        n_tags = len(data_mod.TagVocab.from_products(splits.train, cfg.data.min_tag_count))
        tracker.log_params(
            {"n_tags": n_tags, "n_train": len(splits.train), "n_valid": len(splits.valid)}
        )
        tracker.log_dataset("train", splits.train_source, splits.train, n_tags)
        tracker.log_dataset("valid", splits.valid_source, splits.valid, n_tags)
    results: list[TrainResult] = []
    t0 = time.perf_counter()
    folds = tuning_folds(pool, k, cfg.seed)
    both = f"{splits.train_source} + {splits.valid_source}"
    for i, (rest, held) in enumerate(folds):
        fold_splits = dataclasses.replace(
            splits,
            train=rest,
            valid=held,
            # a suffix without "/": a model card cuts each " + " part to its file name
            train_source=f"{both} (fold {i + 1} of {k} out)",
            valid_source=f"{both} (fold {i + 1} of {k})",
        )
        logger.info(
            "tuning fold %d/%d: %d train, %d held out",
            i + 1,
            k,
            len(fold_splits.train),
            len(fold_splits.valid),
        )
        fold_cfg = dataclasses.replace(cfg, output=str(tuning_dir / f"fold-{i}"))
        fold_tracker: Tracker = NullTracker()
        if i == 0 and tracker is not None:
            fold_tracker = FirstFoldTracker(tracker)
        results.append(
            TagTrainer(
                fold_cfg,
                resume,
                fold_tracker,
                progress,
                splits=fold_splits,
                given_cfg=cfg,
                fit_reranker=False,  # fitted below on every fold's evidence together
            ).run()
        )
    parts = [r.fusion_inputs for r in results if r.fusion_inputs is not None]
    if len(parts) < len(results):
        raise ValueError("train.tuning_folds: a fold had no held-out products to score")
    pooled, vocab = pool_evidence(parts, pool)
    part_tags, part_sizes = [p.tags for p in parts], [len(p.products) for p in parts]
    for r in results:  # pooled: the folds' own copies are freed for the tuning
        r.fusion_inputs = None
    del parts
    tags = vocab.tags
    lx = cfg.lexical
    separator = data_mod.category_separator(cfg)
    # without the lexical voters a model has no fusion and serves its neural scores as they are
    consistent = lx.enabled and lx.ancestor_consistency
    fusion = Fusion(None, 0.5, parent_index(tags, separator), separator, consistent)
    logger.info(
        "tuning the fusion weights on %d out-of-fold products x %d tags",
        len(pooled.products),
        len(vocab),
    )
    scores, report = tune_fusion(fusion, pooled, vocab, cfg)
    from labelrec.rerank import fusion_new_tags

    # the new tags the model proposes, measured with the known ones as `labelrec eval` does
    new_tags = fusion_new_tags(pooled, fusion)
    # a tag is new to a product's voters when its fold's vocabulary lacks it, though the
    # pooled columns (every fold's tags) hold it: the new tags' threshold counts it so
    fold_keys = [frozenset(data_mod.tag_key(t) for t in tags) for tags in part_tags]
    row_keys = [keys for keys, n in zip(fold_keys, part_sizes, strict=True) for _ in range(n)]
    if any(new_tags):  # the span tagger votes and proposes some
        fusion.new_threshold = new_tag_threshold(new_tags, pooled.products, row_keys)
    new_threshold = fusion.new_threshold
    if lx.enabled and lx.rerank:  # fitted on every product's out-of-fold evidence
        from labelrec.rerank import Reranker, fusion_votes, save_reranker

        logger.info("fitting the reranker on %d out-of-fold products", len(pooled.products))
        parents = fusion.parents if lx.ancestor_consistency else None
        reranker, scores, reranked_new, rerank_report = Reranker.fit(
            pooled.products,
            vocab,
            fusion_votes(pooled, fusion, scores),
            separator,
            parents,
            lx.rerank_candidates,
            cfg.seed,
            row_counts=fold_counts(folds, tags, part_sizes),
        )
        report.update(rerank_report)
        if reranker is not None:
            if any(reranked_new):
                reranker.new_threshold = new_tag_threshold(reranked_new, pooled.products, row_keys)
            new_tags, new_threshold = reranked_new, reranker.new_threshold
        if process_state().is_main_process:
            save_reranker(reranker, tuning_dir)  # the refit carries it from there
    y = vocab.encode(pooled.products)
    # Every cell counts for the global threshold (micro-F1's best cut falls with the gold tags
    # that no threshold reaches, and a product scored later has such tags too: ones its model
    # never saw). A tag's own threshold counts only the cells whose fold's vocabulary had the
    # tag: elsewhere it was never scored (0), and the refit, which knows it, scores it.
    global_t = metrics.tune_global_threshold(y, scores)
    per_tag = metrics.tune_tag_thresholds(
        y,
        scores,
        global_t,
        prior=cfg.train.threshold_prior,
        counted=scorable_cells(tags, part_tags, part_sizes),
    )
    oof = evaluate_scores_on(  # each product's tags new to its fold counted as new
        scores,
        pooled.products,
        vocab,
        per_tag,
        new_tags=new_tags,
        new_threshold=new_threshold,
        row_keys=row_keys,
        hierarchy=fusion.hierarchy,
    ).metrics
    oof.update(report, global_threshold=float(global_t), tuning_folds=float(k))
    oof["tuning_seconds"] = time.perf_counter() - t0
    if tracker is not None and process_state().is_main_process:
        tracker.log_metrics({f"final_{key}": v for key, v in oof.items()})
    tuned = TunedSettings(
        epochs=median_epochs([r.best_epoch for r in results]),
        global_threshold=float(global_t),
        tag_thresholds={t: float(v) for t, v in zip(tags, per_tag, strict=True)},
        lexical=_floats(fusion, FUSION_WEIGHTS) if lx.enabled else None,
        valid_metrics=oof,
    )
    logger.info(
        "tuned on %d out-of-fold products: epochs %d, weights %s, nDCG@3 %.4f",
        len(pooled.products),
        tuned.epochs,
        tuned.lexical,
        oof.get("nDCG@3", float("nan")),
    )
    return TrainResult(
        output=tuning_dir,
        metrics=oof,
        history=results[0].history,
        best_epoch=tuned.epochs,
        train_seconds=sum(r.train_seconds for r in results),
        n_tags=len(vocab),
        valid_scores=scores,
        valid_products=list(pooled.products),
        vocab=vocab,
        global_threshold=float(global_t),
        tag_thresholds=per_tag,
        tuned=tuned,
        hierarchy=fusion.hierarchy,
    )
