"""ViT-B train step (16 × 224², AdamW): this loop's step against transformers VideoMAE (SDPA attention) +
torch AdamW at the same precision, batch and device, step time and peak memory, each configuration in
its own process, in one run (SPEC §9).

  python benchmarks/train_step.py [--batches 1,2] [--steps 2] [--rounds 1] [--dtype float32|bfloat16] [--tf32]
      [--layouts scanned,per_block[,scanned+options]] [--compiler_options JSON] [--torch_compile]

bfloat16: Flax computes in bfloat16 (float32 master weights) and PyTorch runs under bfloat16 autocast.
float32: full float32 matmuls on both sides, or TF32 on both with --tf32 (it matters on GPUs only).
Flax's blocks are stacked and scanned (`scanned`, the checkpoints' layout, `train.scan_blocks = True`) or
one parameter subtree per block (`per_block`, `train.scan_blocks = False`), each layout in its own
processes against the same PyTorch processes; `+options` compiles a layout's step with --compiler_options
(`train.compiler_options`). With --torch_compile PyTorch's step also runs with the model under torch.compile
(its first step compiles), in processes of its own, and every Flax layout is compared with both.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.common import (attention_note, flax_variants, machine, matmul_precision, options_note,  # noqa: E402
                               paired_runs, print_table, run_alternating, tunables_note)

PREAMBLE = """
import json, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from benchmarks.common import peak_rss_bytes, reset_peak_rss, rss_bytes
before = rss_bytes()  # before the framework's import: its libraries, params, optimiser state and activations count
"""

# A PyTorch child up to `step()`: one AdamW step of transformers VideoMAE (SDPA) on one batch.
TORCH_SETUP = """
import torch, transformers
torch.manual_seed(0)
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = {tf32}
model = transformers.VideoMAEForVideoClassification(
    transformers.VideoMAEConfig(num_labels=400, attn_implementation="sdpa")).train()
device = "cuda" if torch.cuda.is_available() else "cpu"
model.to(device)
forward = torch.compile(model) if {compile} else model  # torch.compile's default mode: the first step compiles
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
clips = torch.randn({batch}, 16, 3, 224, 224, device=device)
labels = torch.randint(0, 400, ({batch},), device=device)
def step():
  opt.zero_grad(set_to_none=True)
  with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled={autocast}):
    loss = torch.nn.functional.cross_entropy(forward(clips).logits.float(), labels)
  loss.backward()
  opt.step()
  return float(loss)
"""

TORCH_CHILD = PREAMBLE + TORCH_SETUP + """
step()
first_peak = peak_rss_bytes() - before
reset_peak_rss()  # the steps' own peak, as for Flax (whose first call also compiles)
times = []
for _ in range({steps}):
  start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
peak = torch.cuda.max_memory_allocated() if device == "cuda" else peak_rss_bytes() - before
print(json.dumps(dict(seconds=float(np.median(times)), peak_bytes=peak,
                      first_peak_bytes=first_peak if device == "cpu" else peak)))
"""

# The timed part of a Flax child: `train_fn(state, batch, key, votes)` built above it, {steps} steps.
FLAX_TIMING = """
votes = global_batch(mesh, dict(v=np.zeros(jax.local_device_count(), np.int32)))["v"]
key = jax.random.key(0)
start = time.perf_counter()
train_fn = train.compile_alone(train_fn, state, batch, key, votes)  # as `train.fit` compiles its step
device = jax.devices()[0]
def allocator_peak():  # on a GPU; None on the CPU, where the process RSS is measured
  return None if device.platform == "cpu" else device.memory_stats()["peak_bytes_in_use"]
compile_peak = allocator_peak()  # XLA's autotuning allocates from the same pool while compiling
state, metrics = train_fn(state, batch, key, votes); float(metrics["loss"])
first_call = time.perf_counter() - start
first_peak = peak_rss_bytes() - before
reset_peak_rss()
times = []
for _ in range({steps}):
  start = time.perf_counter(); state, metrics = train_fn(state, batch, key, votes); float(metrics["loss"])
  times.append(time.perf_counter() - start)
gpu_peak = allocator_peak()
peak = peak_rss_bytes() - before if gpu_peak is None else gpu_peak
print(json.dumps(dict(seconds=float(np.median(times)), peak_bytes=peak, first_call=first_call,
                      first_peak_bytes=first_peak if gpu_peak is None else peak,
                      **({{}} if compile_peak is None else dict(compile_peak_bytes=compile_peak)))))
"""

# A Flax child up to `train_fn`, `state` and `batch`: this loop's step on the same model and batch.
FLAX_SETUP = """
import jax, jax.numpy as jnp, ml_collections
jax.config.update("jax_default_matmul_precision", {precision!r})
from gardener_jax import optim, train
from gardener_jax.models import ModelConfig, VideoMAE, init_params
from gardener_jax.models.videomae import per_block
from gardener_jax.sharding import global_batch, make_mesh, replicated
config = ModelConfig.from_variant("vit_b", num_classes=400, remat={remat})
params = train.master_weights(init_params(config))  # host arrays, as `train.fit` makes them
params = params if {scan_blocks} else per_block(params)
optim_config = ml_collections.ConfigDict(dict(lr=1e-3, warmup_steps=0, weight_decay=0.05, b1=0.9, b2=0.999,
                                              clip_norm=0.0, layer_decay=1.0, accumulate=1))
tx, schedule = optim.make_optimizer(optim_config, params, config.depth, 100)
mesh = make_mesh()
model = VideoMAE(config, dtype=jnp.dtype({dtype!r}), scan_blocks={scan_blocks}, attention={attention!r})
loss_fn = train.classification_loss(model, 400, train.TrainOptions())
train_fn = train.compile_train_step(mesh, loss_fn, tx, schedule, compiler_options={compiler_options!r})
state = jax.device_put(train.init_state(params, tx), replicated(mesh))
del params
rng = np.random.default_rng(0)
batch = global_batch(mesh, dict(clips=rng.integers(0, 256, ({batch}, 16, 224, 224, 3), np.uint8),  # as pipelines give
                                label=rng.integers(0, 400, {batch}).astype(np.int32)))
"""
FLAX_CHILD = PREAMBLE + FLAX_SETUP + FLAX_TIMING


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batches", default="1,2")
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--rounds", type=int, default=1, help="processes per side, run in turn; medians reported")
  parser.add_argument("--glibc_tunables", default="",
                      help="GLIBC_TUNABLES for both sides' processes, e.g. glibc.malloc.hugetlb=1 (on CPU XLA maps its "
                           "temporaries afresh every step; where transparent huge pages are 'madvise', every 4 KiB "
                           "page of them faults in)")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--remat", action="store_true", help="rematerialise blocks in the backward pass")
  parser.add_argument("--peak_tflops", type=float, default=989.0,
                      help="the accelerator's dense peak for --dtype, for model FLOPs utilisation (H100/H200 bf16: "
                           "989)")
  parser.add_argument("--tf32", action="store_true", help="float32: TF32 matmuls on both sides (default: neither)")
  parser.add_argument("--torch_compile", action="store_true",
                      help="also PyTorch's step with the model under torch.compile (default mode), against every "
                           "Flax layout")
  parser.add_argument("--layouts", default="scanned",
                      help="Flax's block layouts to time, comma-separated: scanned (stacked, nn.scan), per_block "
                           "(one subtree each); either with +options: compiled with --compiler_options")
  parser.add_argument("--attention", default="", help="Flax's attention implementation (default: the model's "
                      "choice for the backend and dtype: per_head, blockwise, fused or einsum)")
  parser.add_argument("--compiler_options", default="",
                      help='XLA compile options (JSON) of the +options layouts, e.g. {"xla_cpu_scheduler_type": '
                           '"CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}')
  args = parser.parse_args()
  root = str(pathlib.Path(__file__).resolve().parents[1])
  bf16 = args.dtype == "bfloat16"
  precision = "bfloat16 (Flax compute dtype; PyTorch autocast)" if bf16 else (
      f"float32, {'TF32' if args.tf32 else 'full float32'} matmuls on both sides")
  from gardener_jax.models import ModelConfig
  from gardener_jax.prune import gflops

  step_flops = 6 * gflops(ModelConfig.from_variant("vit_b", num_classes=400)) * 1e9  # forward + backward, per clip
  variants = flax_variants(args.layouts, args.compiler_options)
  layouts = list(variants)
  torch_sides = ["eager", "torch.compile"] if args.torch_compile else ["eager"]
  rows = []
  for batch in (int(b) for b in args.batches.split(",")):
    fill = dict(root=root, batch=batch, steps=args.steps, dtype=args.dtype, remat=args.remat,
                precision=matmul_precision(args.dtype, args.tf32), attention=args.attention or None)
    torch_fill = dict(root=root, batch=batch, steps=args.steps, autocast=bf16, tf32=args.tf32)
    runs = run_alternating({
        **{name: TORCH_CHILD.format(**torch_fill, compile=name == "torch.compile") for name in torch_sides},
        **{layout: FLAX_CHILD.format(**fill, **variant) for layout, variant in variants.items()}},
        args.rounds, args.glibc_tunables)
    for torch_side, layout, torch_run, flax_run in paired_runs(runs, torch_sides, layouts):  # failures left out
      rows.append([args.dtype, batch, torch_side, layout, torch_run["seconds"], flax_run["seconds"],
                   flax_run["seconds"] / torch_run["seconds"],
                   torch_run["peak_bytes"] / 2**30, flax_run["peak_bytes"] / 2**30,
                   flax_run["peak_bytes"] / torch_run["peak_bytes"],
                   flax_run["first_peak_bytes"] / torch_run["first_peak_bytes"], flax_run["first_call"],
                   step_flops * batch / flax_run["seconds"] / 1e12,
                   step_flops * batch / flax_run["seconds"] / 1e12 / args.peak_tflops])
  print_table(f"ViT-B train step, 16×224², AdamW, {precision}{', Flax with remat' if args.remat else ''}; median of "
              f"{args.steps} steps after the first, median over {args.rounds} process(es) per side run in turn; "
              f"{attention_note(args.attention, args.dtype)}{tunables_note(args.glibc_tunables)}"
              f"{options_note(args.compiler_options)}{machine()} (peak: on CPU the process RSS high-water mark during "
              f"the timed steps over the RSS before the framework's import, free heap handed back first on both "
              f"sides; on GPU the allocator peak; 'first-step ratio' also counts the first call: Flax's compilation, "
              f"PyTorch's lazy optimiser state)",
              ["precision", "batch", "PyTorch", "Flax blocks", "PyTorch s", "Flax s", "Flax / PyTorch",
               "PyTorch peak GiB", "Flax peak GiB", "memory ratio", "first-step memory ratio", "Flax first call s",
               "Flax model TFLOP/s", "MFU"], rows)


if __name__ == "__main__":
  main()
