#!/usr/bin/env bash
# Prepared accelerator check of the finetuning step, Flax against PyTorch at the same precision: bf16 (PyTorch
# autocast) and fp32 with full float32 matmuls on both sides.
set -uo pipefail
out=${OUT:-/tmp}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/gpu.txt"
python3 benchmarks/train_step.py --batches 8,32 --steps 5 --dtype bfloat16 2>&1 | tee "$out/train_bf16.txt"
python3 benchmarks/train_step.py --batches 8 --steps 5 --dtype float32 --peak_tflops 494 2>&1 | tee "$out/train_fp32.txt"
