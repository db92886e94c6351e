"""Domain-adaptive pretraining: masked-LM on catalog texts, writing a backbone ``train`` accepts."""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from labelrec import data as data_mod
from labelrec.backbones import backbone_unavailable
from labelrec.config import Config, checked
from labelrec.model import (
    PRETRAIN_FILE,
    base_model_of,
    check_max_length,
    check_not_backbone,
    cpu_processes,
    is_decoder,
    load_pretrained,
    load_tokenizer,
    make_accelerator,
    recorded_backbone,
    resolve_backbone,
    with_lora,
)
from labelrec.modeldir import LABELREC_FILE, holds_cwd, output_lock, staged_dir

logger = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    """Where the backbone went and how the held-out MLM loss moved."""

    output: Path
    history: list[dict[str, float]]


def collect_texts(cfg: Config) -> list[str]:
    """Catalog texts: the unlabelled file plus titles and descriptions of the training catalog;
    the demo catalog's when neither file is set."""
    texts: list[str] = []
    if cfg.data.unlabeled:
        texts += data_mod.read_texts(cfg.data.unlabeled, cfg.data)
    if cfg.data.train:
        catalog = data_mod.read_catalog(cfg.data.train, cfg.data, require_tags=False)
        texts += [f"{p.title} {p.description}".strip() for p in catalog.products]
    given = [f for f in (cfg.data.unlabeled, cfg.data.train) if f]
    if given and not any(texts):
        raise ValueError(
            f"{' and '.join(map(str, given))}: no texts to pretrain on (read from the columns"
            f" {cfg.data.title_column!r} and {cfg.data.description_column!r}, data.title_column"
            " and data.description_column, or one text a line of a .txt file)"
        )
    if not texts:
        logger.info("no data.unlabeled or data.train: pretraining on the demo catalog's texts")
        from labelrec.demo import generate_catalog

        rows = generate_catalog(cfg.data.demo_products, seed=cfg.seed)
        texts = [f"{r['title']} {r['description']}".strip() for r in rows]
    return [t for t in dict.fromkeys(texts) if t]


# The settings of the model and lora sections that pretraining reads (the others shape the
# tagger trained on the backbone later); it reads the pretrain and data sections whole.
SETTINGS_READ = {
    "model": {"backbone", "max_length", "trust_remote_code"},
    "lora": {"r", "alpha", "dropout", "target_modules"},
}

# Draws of a held-out batch's masks before one that masks a token is given up on.
MASK_DRAWS = 100


def _masked(batch: dict[str, torch.Tensor]) -> int:
    """How many tokens of a collated batch are masked (labels other than -100)."""
    return int((batch["labels"] != -100).sum())


def _mlm_loss(model: Any, batches: list[dict[str, torch.Tensor]], device: torch.device) -> float:
    """The mean loss per masked token over the held-out batches (each holds at least one)."""
    model.eval()
    total, n = 0.0, 0
    with torch.inference_mode():
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            masked = _masked(batch)
            total += model(**batch).loss.item() * masked
            n += masked
    model.train()
    return total / n


def pretrain(cfg: Config, progress: bool = True) -> PretrainResult:
    """Masked-LM on catalog texts; saves a merged backbone directory to ``cfg.output``. The
    directory is written beside it and then takes its place, so that a run stopped on the way
    leaves the old one (or none), never half of one; a second run into the same output
    meanwhile is refused."""
    cfg = checked(cfg)  # edited in code since it was loaded: checked now, not after a run
    data_mod.check_input_files(cfg.data, ("unlabeled", "train"))  # before the output's lock
    with output_lock(cfg.output):
        return _pretrain(cfg, progress)


def _pretrain(cfg: Config, progress: bool) -> PretrainResult:
    from accelerate.utils import set_seed
    from transformers import (
        AutoConfig,
        AutoModelForMaskedLM,
        DataCollatorForLanguageModeling,
        get_scheduler,
    )

    from labelrec.progress import progress_bar

    pcfg = cfg.pretrain
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output={cfg.output}: is a file; give a directory for the backbone")
    if (out / LABELREC_FILE).is_file():  # its weights would become the bare encoder
        raise ValueError(
            f"output={cfg.output}: holds a trained labelrec model; pretrain into another folder"
        )
    check_not_backbone(cfg.output, cfg.model.backbone)
    if holds_cwd(out):
        raise ValueError(
            f"output={cfg.output}: the current folder or one above it, and the pretrained"
            " backbone replaces its whole folder; give a folder inside it"
        )
    if out.is_dir() and any(out.iterdir()) and not (out / PRETRAIN_FILE).is_file():
        raise ValueError(
            f"output={cfg.output}: holds other files, and the pretrained backbone replaces its"
            " whole folder; give a new folder, or an earlier pretraining's"
        )
    texts = collect_texts(cfg)  # a bad catalog fails before the backbone loads
    if len(texts) < 2:
        given = [str(f) for f in (cfg.data.unlabeled, cfg.data.train) if f]
        raise ValueError(
            f"{' and '.join(given) or 'pretrain'}: {len(texts)} distinct text; masked-LM"
            " pretraining needs at least two (one is held out to measure it)"
        )
    accelerator = make_accelerator(cpu=cpu_processes())
    if not accelerator.is_main_process:  # one log of the epochs, not one each
        logging.getLogger("labelrec").setLevel(logging.WARNING)
    set_seed(cfg.seed)
    source = resolve_backbone(cfg.model.backbone)
    trust = cfg.model.trust_remote_code
    try:
        tokenizer = load_tokenizer(source, trust)
        hf_config = AutoConfig.from_pretrained(source, trust_remote_code=trust)
        if is_decoder(hf_config):
            raise ValueError(
                f"model.backbone={cfg.model.backbone}: a decoder ({type(hf_config).__name__});"
                " masked-LM pretraining is for encoders (BERT, MiniLM)"
            )
        if tokenizer.mask_token is None:
            raise ValueError(f"{cfg.model.backbone}: tokenizer has no mask token; MLM needs one")
        check_max_length(hf_config, cfg.model.max_length, cfg.model.backbone)
        model = load_pretrained(
            AutoModelForMaskedLM, source, config=hf_config, trust_remote_code=trust
        )
    except OSError as err:  # not a local folder, and not on the hub or in its cache (offline)
        if Path(source).is_dir():
            raise
        raise backbone_unavailable(cfg.model.backbone, err) from None
    if pcfg.lora:
        from peft import LoraConfig

        model = with_lora(
            model,
            LoraConfig(
                r=cfg.lora.r,
                lora_alpha=cfg.lora.alpha,
                lora_dropout=cfg.lora.dropout,
                target_modules=cfg.lora.target_modules,
            ),
        )
        # The MLM head stays trainable: backbones saved without one (all-MiniLM-L6-v2, the tiny
        # test models) start from a random head, and a frozen random head blocks the adapters.
        # It only serves the objective: the saved backbone is the encoder alone.
        mlm = model.get_base_model()
        encoder = {id(p) for p in mlm.base_model.parameters()}
        for param in mlm.parameters():
            if id(param) not in encoder:
                param.requires_grad_(True)

    rng = random.Random(cfg.seed)
    rng.shuffle(texts)
    n_held = max(1, int(len(texts) * pcfg.heldout_fraction))
    heldout, train_texts = texts[:n_held], texts[n_held:]
    if not train_texts:
        raise ValueError("pretrain: need at least two distinct texts")
    enc = tokenizer(train_texts, truncation=True, max_length=cfg.model.max_length)
    enc_h = tokenizer(heldout, truncation=True, max_length=cfg.model.max_length)
    train_items = [{"input_ids": ids} for ids in enc["input_ids"]]
    held_items = [{"input_ids": ids} for ids in enc_h["input_ids"]]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=pcfg.mlm_probability)
    loader = DataLoader(train_items, batch_size=pcfg.batch_size, shuffle=True, collate_fn=collator)
    # A fixed masking of the held-out texts, so losses of different epochs compare; a batch
    # of short texts may draw no mask at all (no loss to measure): it is drawn again.
    torch.manual_seed(cfg.seed)
    held_batches = []
    for i in range(0, len(held_items), pcfg.batch_size):
        for _ in range(MASK_DRAWS):
            batch = collator(held_items[i : i + pcfg.batch_size])
            if _masked(batch):
                held_batches.append(batch)
                break
    if not held_batches:
        raise ValueError(
            f"pretrain: no token of the {len(heldout)} held-out texts was masked in"
            f" {MASK_DRAWS} draws (pretrain.mlm_probability {pcfg.mlm_probability}): give more"
            " or longer texts, or a larger pretrain.heldout_fraction"
        )
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=pcfg.lr, weight_decay=0.01
    )
    n_proc = accelerator.num_processes
    total = math.ceil(len(loader) / n_proc) * pcfg.epochs
    if pcfg.max_steps is not None:
        total = min(total, pcfg.max_steps)
    # The prepared scheduler steps once per process at each step: lay it out in steps x processes.
    scheduler = get_scheduler(
        "linear",
        optimizer,
        num_warmup_steps=int(0.06 * total) * n_proc,
        num_training_steps=total * n_proc,
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    history = [{"epoch": 0, "heldout_mlm_loss": _mlm_loss(model, held_batches, accelerator.device)}]
    logger.info("held-out MLM loss before: %.4f", history[0]["heldout_mlm_loss"])
    step = 0
    for epoch in range(pcfg.epochs):
        bar = progress_bar(
            total=len(loader),
            desc=f"pretrain {epoch + 1}/{pcfg.epochs}",
            disable=not (progress and accelerator.is_main_process),
            leave=False,
        )
        t0 = time.perf_counter()
        for batch in loader:
            loss = model(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if step >= total:
                break
        bar.close()
        held = _mlm_loss(model, held_batches, accelerator.device)
        history.append(
            {"epoch": epoch + 1, "heldout_mlm_loss": held, "seconds": time.perf_counter() - t0}
        )
        logger.info("epoch %d: held-out MLM loss %.4f", epoch + 1, held)
        if step >= total:
            break

    out = Path(cfg.output)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(model)
        if pcfg.lora:
            model = model.merge_and_unload()
        out = out.resolve()  # "." has a name to write a sibling beside
        with staged_dir(out) as stage:
            _save_backbone(model, tokenizer, stage, cfg, len(texts), history)
    return PretrainResult(out, history)


def _save_backbone(
    model: Any, tokenizer: Any, out: Path, cfg: Config, n_texts: int, history: list[dict]
) -> None:
    """The encoder alone (no MLM head: what ``train`` loads as a backbone), its tokenizer and
    ``pretrain.json``."""
    pcfg = cfg.pretrain
    model.base_model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    # what it was pretrained from (the first backbone of a chain of pretrainings): models
    # trained on it name that base on their card
    record = {
        "base_model": recorded_backbone(base_model_of(cfg.model.backbone) or cfg.model.backbone),
        "texts": n_texts,
        "max_length": cfg.model.max_length,
        "epochs": pcfg.epochs,
        "lora": bool(pcfg.lora),
        "history": history,
    }
    (out / PRETRAIN_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
