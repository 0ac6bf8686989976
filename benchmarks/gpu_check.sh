#!/usr/bin/env bash
# The prepared accelerator check: every GPU row of the README, each on equal terms (SPEC §9), in an
# estimated 13-16 minutes on one H100 or H200 (first calls compile: Flax's fp32 steps take longest);
# `gpu_check.sh steps` runs part 1 only, `gpu_check.sh others` parts 2-4, `gpu_check.sh memory` part 5,
# for machines that limit one command to less.
# Logs go to ${OUT:-/tmp}; the card's name and the library versions head gpu.txt and every table.
# 1. the ViT-B finetuning step, Flax against transformers + torch AdamW at the same precision: bf16
#    (PyTorch autocast, SDPA) at batch 8 and 32 (model FLOPs utilisation against the dense bf16 peak),
#    fp32 with full float32 matmuls on both sides at batch 8; bf16 with Flax's blocks stacked and scanned
#    and one subtree per block (train.scan_blocks);
#    the masked-pretraining step in bf16 at batch 32, both block layouts;
# 2. the ViT-B forward at batch 8 in fp32, full float32 matmuls on both sides, then TF32 on both: sdpa,
#    eager attention and torch.compile against Flax, host→device copies timed on both sides;
# 3. exact block entropy against torch.unique on the same GPU;
# 4. pruned-model forward throughput in bf16;
# 5. fp32 memory: the masked-pretraining step at batch 8 with the default attention (blockwise for fp32 on
#    GPUs), then with XLA's materialised attention ('fused'); XLA's temporaries of the finetuning step
#    with both.
set -uo pipefail
part=${1:-all}
if [[ ! $part =~ ^(all|steps|others|memory)$ ]]; then
  echo "usage: gpu_check.sh [all|steps|others|memory]" >&2
  exit 2
fi
out=${OUT:-/tmp}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import jax, flax, torch, transformers; print(jax.__version__, flax.__version__, torch.__version__, transformers.__version__, jax.devices())" | tee -a "$out/gpu.txt"
if [[ $part == all || $part == steps ]]; then
  python3 benchmarks/train_step.py --batches 8,32 --steps 5 --dtype bfloat16 --layouts scanned,per_block 2>&1 | tee "$out/train_bf16.txt"
  python3 benchmarks/train_step.py --batches 8 --steps 5 --dtype float32 --peak_tflops 67 2>&1 | tee "$out/train_fp32.txt"
  python3 benchmarks/pretrain_step.py --batches 32 --steps 5 --dtype bfloat16 2>&1 | tee "$out/pretrain_bf16.txt"
fi
if [[ $part == all || $part == others ]]; then
  : > "$out/convert.txt"
  for precision in "" --tf32; do  # full float32 matmuls on both sides, then TF32 on both
    python3 benchmarks/convert.py --batch 8 --repeats 5 $precision 2>&1 | grep -v "Writing\|Loading" | tee -a "$out/convert.txt"
  done
  python3 benchmarks/entropy.py --repeats 3 2>&1 | tee "$out/entropy.txt"
  python3 benchmarks/speedup.py --batch 32 --repeats 5 --dtype bfloat16 2>&1 | tee "$out/speedup.txt"
fi
if [[ $part == all || $part == memory ]]; then
  : > "$out/pretrain_fp32.txt"
  for attention in "" fused; do  # the default (blockwise), then XLA's materialised attention
    python3 benchmarks/pretrain_step.py --batches 8 --steps 5 --dtype float32 --layouts scanned --attention "$attention" 2>&1 | tee -a "$out/pretrain_fp32.txt"
  done
  python3 benchmarks/step_memory.py --batch 8 --dtype float32 --attention fused,blockwise --jobs finetune 2>&1 | tee "$out/step_memory.txt"
fi
