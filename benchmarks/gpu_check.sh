#!/usr/bin/env bash
# The prepared accelerator check: conversion parity and forward speed on the GPU, pruned-model
# throughput in float32 and bfloat16, and the entropy engines. Writes logs under ${OUT:-/tmp}.
set -uo pipefail
out=${OUT:-/tmp}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import jax, flax, torch, transformers; print(jax.__version__, flax.__version__, torch.__version__, transformers.__version__, jax.devices())" | tee -a "$out/gpu.txt"
python3 benchmarks/convert.py --batch 8 --repeats 5 2>&1 | grep -v "Writing\|Loading" | tee "$out/convert.txt"
JAX_DEFAULT_MATMUL_PRECISION=highest python3 benchmarks/convert.py --batch 8 --repeats 3 2>&1 | grep -v "Writing\|Loading" | tail -3 | tee -a "$out/convert.txt"
python3 benchmarks/speedup.py --batch 32 --repeats 5 --dtype bfloat16 2>&1 | tee "$out/speedup.txt"
python3 benchmarks/speedup.py --batch 16 --repeats 5 --dtype float32 2>&1 | tee -a "$out/speedup.txt"
python3 benchmarks/entropy.py 2>&1 | tee "$out/entropy.txt"
