#!/usr/bin/env bash
# The prepared accelerator check: the README's GPU rows, each on equal terms (SPEC §9), in parts sized for a
# lent machine (15 minutes of device time per session, its start included; at most 10 minutes a command).
# Each script has its own time limit (and 10 s more to die), which with the set-up keeps a part within one
# command; the estimates are from earlier sessions' compile and step times on an H200 (Flax's fp32 steps compile
# longest: 83 s for the pretraining step at full float32 precision):
#   core     (≈ 5 min) #13's targets: the ViT-B finetuning step in bf16 at batch 32 against PyTorch autocast
#            with SDPA, eager and under torch.compile (model FLOPs utilisation against the dense bf16 peak); the
#            forward at batch 8 in fp32 with TF32 on both sides (sdpa, eager and torch.compile against Flax,
#            host→device copies timed on both sides);
#   pretrain (≈ 6 min) #11's: the masked-pretraining step in bf16 at batch 32, blocks scanned and one subtree
#            per block; in fp32 (full float32 matmuls on both sides) at batch 8 with Flax's default attention
#            (blockwise for fp32 on GPUs); XLA's temporaries of that step with blockwise and with XLA's
#            materialised attention ('fused'), compiled without running;
#   more     (≈ 5 min) the finetuning step in fp32 at batch 8, and in bf16 at batch 8 with both block layouts;
#            XLA's temporaries of the fp32 finetuning step by attention;
#   extra    (≈ 3 min) the forward with full float32 matmuls; exact block entropy against torch.unique on the
#            same GPU; pruned-model forward throughput in bf16;
#   all      the four in turn (≈ 19 min: more than one session's device time);
#   ready    only what every part does first: install the carried wheels, print versions and devices, import
#            everything the scripts import, and stop unless JAX and PyTorch both see the GPU.
# Packages: `gpu_check.sh wheels`, run here with the project's .venv (not there), downloads into .whl/
# the wheels, for the lent machine's Python 3.12, of what the scripts import that its image lacks
# (benchmarks/gpu_packages.py); carry .whl and every part installs them before its first row, so a missing
# package costs seconds, not the loan.
# Logs: $OUT/gpu.txt (the card, driver, versions, devices) and $OUT/<part>.txt; every table names the card too,
# and the step scripts print each child's numbers as it ends, so a script stopped at its limit keeps them.
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:-core}
if [[ ! $part =~ ^(core|pretrain|more|extra|all|ready|wheels)$ ]]; then
  echo "usage: gpu_check.sh [core|pretrain|more|extra|all|ready|wheels]" >&2
  exit 2
fi
if [[ $part == wheels ]]; then  # here, with the project's environment (PYTHON, default .venv/bin/python)
  python=${PYTHON:-.venv/bin/python} gpu_python=${GPU_PYTHON:-3.12}
  packages=$("$python" benchmarks/gpu_packages.py --python "$gpu_python") || exit 3
  rm -rf .whl && mkdir .whl
  exec "$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$gpu_python" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform any -d .whl $packages
fi
out=${OUT:-/tmp}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 3
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
python3 benchmarks/gpu_packages.py --check --backend gpu 2>&1 | tee -a "$out/gpu.txt" || exit 3
[[ $part == ready ]] && exit 0

row() {  # row SECONDS SCRIPT ARGS...: one benchmark script, stopped after SECONDS (killed 10 s later)
  echo "+ $*"
  timeout -k 10 "$1" python3 "${@:2}" 2>&1 | grep --line-buffered -v -E $'^\r?(Writing|Loading)'  # progress bars
  local status=${PIPESTATUS[0]}
  if ((status)); then echo "! $2 ended with status $status (124: stopped at its $1 s limit)"; fi
}

core() {
  row 230 benchmarks/train_step.py --batches 32 --steps 5 --dtype bfloat16 --torch_compile
  row 230 benchmarks/convert.py --batch 8 --repeats 5 --tf32
}

pretrain() {
  row 140 benchmarks/pretrain_step.py --batches 32 --steps 5 --dtype bfloat16
  row 170 benchmarks/pretrain_step.py --batches 8 --steps 5 --dtype float32 --layouts scanned
  row 150 benchmarks/step_memory.py --batch 8 --dtype float32 --attention blockwise,fused --jobs pretrain
}

more() {
  row 190 benchmarks/train_step.py --batches 8 --steps 5 --dtype float32 --peak_tflops 67
  row 140 benchmarks/train_step.py --batches 8 --steps 5 --dtype bfloat16 --layouts scanned,per_block
  row 110 benchmarks/step_memory.py --batch 8 --dtype float32 --attention blockwise,fused --jobs finetune
}

extra() {
  row 120 benchmarks/convert.py --batch 8 --repeats 5 --no_compile
  row 45 benchmarks/entropy.py --repeats 3
  row 80 benchmarks/speedup.py --batch 32 --repeats 5 --dtype bfloat16
}

for each in $([[ $part == all ]] && echo core pretrain more extra || echo "$part"); do
  "$each" 2>&1 | tee "$out/$each.txt"
done
