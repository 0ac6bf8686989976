"""ViT-B masked-pretraining step (16 × 224², tube masks at ratio 0.9, decoder 384 × 4, AdamW β = (0.9, 0.95)):
this loop's step against HuggingFace VideoMAEForPreTraining + torch AdamW on equal terms (SPEC §9):
the same precision (bfloat16: PyTorch under autocast; float32: no TF32 on either side), batch, mask
count and device, PyTorch's SDPA
attention, host → device copies on neither side (inputs are on the device before timing), the first
call on its own row, the median of the timed steps; memory as in `train_step.py`. Flax runs with its blocks'
parameters stacked and scanned (the checkpoints' layout, `train.scan_blocks = True`) and one subtree per block
(`train.scan_blocks = False`), each against the same PyTorch processes.

  python benchmarks/pretrain_step.py [--batches 1,2] [--steps 3] [--rounds 1] [--dtype float32|bfloat16]
      [--layouts scanned,per_block[,scanned+options]] [--compiler_options JSON]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.common import (attention_note, flax_variants, machine, matmul_precision, options_note,  # noqa: E402
                               paired_runs, print_table, run_alternating, tunables_note)
from benchmarks.train_step import FLAX_TIMING, PREAMBLE  # noqa: E402

# A PyTorch child up to `step()`: one AdamW step of HuggingFace VideoMAEForPreTraining (SDPA) on one batch.
TORCH_SETUP = """
import contextlib, torch, transformers
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # float32 is float32 (SPEC §9)
torch.manual_seed(0)
config = transformers.VideoMAEConfig(use_mean_pooling=False, norm_pix_loss=True, attn_implementation="sdpa")
model = transformers.VideoMAEForPreTraining(config).train()
device = "cuda" if torch.cuda.is_available() else "cpu"
model.to(device)
opt = torch.optim.AdamW(model.parameters(), lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)
clips = torch.randn({batch}, 16, 3, 224, 224, device=device)
grid, frames = 14 * 14, 8
masked = int(0.9 * grid)
rows = [torch.randperm(grid)[:masked] for _ in range({batch})]
mask = torch.zeros({batch}, grid, dtype=torch.bool)
for b, r in enumerate(rows):
  mask[b, r] = True
mask = mask.repeat(1, frames).to(device)
autocast = torch.autocast(device, dtype=torch.bfloat16) if {dtype!r} == "bfloat16" else contextlib.nullcontext()
def step():
  opt.zero_grad(set_to_none=True)
  with autocast:
    loss = model(clips, bool_masked_pos=mask).loss
  loss.backward()
  opt.step()
  if device == "cuda":
    torch.cuda.synchronize()
  return float(loss)
"""
TORCH_CHILD = PREAMBLE + TORCH_SETUP + """
start = time.perf_counter(); step(); first_call = time.perf_counter() - start
first_peak = peak_rss_bytes() - before
reset_peak_rss()
times = []
for _ in range({steps}):
  start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
peak = torch.cuda.max_memory_allocated() if device == "cuda" else peak_rss_bytes() - before
print(json.dumps(dict(seconds=float(np.median(times)), peak_bytes=peak, first_call=first_call,
                      first_peak_bytes=first_peak if device == "cpu" else peak)))
"""

# A Flax child up to `train_fn`, `state` and `batch`: this loop's masked-pretraining step.
FLAX_SETUP = """
import jax, jax.numpy as jnp, ml_collections
jax.config.update("jax_default_matmul_precision", {precision!r})  # no TF32
from gardener_jax import optim, pretrain, train
from gardener_jax.models import DecoderConfig, ModelConfig
from gardener_jax.models.pretraining import VideoMAEPretraining, init_pretraining_params
from gardener_jax.models.videomae import per_block
from gardener_jax.sharding import global_batch, make_mesh, replicated
config = ModelConfig.from_variant("vit_b", use_mean_pooling=False, decoder=DecoderConfig())
params = train.master_weights(init_pretraining_params(config, 0, 0.9))  # host arrays, as `train.fit` makes them
params = params if {scan_blocks} else per_block(params)
optim_config = ml_collections.ConfigDict(dict(lr=1.5e-4, warmup_steps=0, weight_decay=0.05, b1=0.9, b2=0.95,
                                              clip_norm=0.0, layer_decay=1.0, accumulate=1))
tx, schedule = optim.make_optimizer(optim_config, params, config.depth, 100)
mesh = make_mesh()
model = VideoMAEPretraining(config, dtype=jnp.dtype({dtype!r}), scan_blocks={scan_blocks}, attention={attention!r})
train_fn = train.compile_train_step(mesh, pretrain.masked_reconstruction_loss(model, 0.9), tx, schedule,
                                    compiler_options={compiler_options!r})
state = jax.device_put(train.init_state(params, tx), replicated(mesh))
del params
rng = np.random.default_rng(0)
batch = global_batch(mesh, dict(clips=rng.integers(0, 256, ({batch}, 16, 224, 224, 3), np.uint8),  # as pipelines give
                                label=np.zeros({batch}, np.int32)))
"""
FLAX_CHILD = PREAMBLE + FLAX_SETUP + FLAX_TIMING


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batches", default="1,2")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--rounds", type=int, default=1, help="processes per side, run in turn; medians reported")
  parser.add_argument("--glibc_tunables", default="",
                      help="GLIBC_TUNABLES for both sides' processes (see train_step.py)")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--layouts", default="scanned,per_block",
                      help="Flax's block layouts to time: scanned (stacked, nn.scan), per_block (one subtree each); "
                           "either with +options: compiled with --compiler_options")
  parser.add_argument("--attention", default="", help="Flax's attention implementation (see train_step.py)")
  parser.add_argument("--compiler_options", default="",
                      help='XLA compile options (JSON) of the +options layouts, e.g. {"xla_cpu_scheduler_type": '
                           '"CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}')
  args = parser.parse_args()
  root = str(pathlib.Path(__file__).resolve().parents[1])
  variants = flax_variants(args.layouts, args.compiler_options)
  layouts = list(variants)
  rows = []
  for batch in (int(b) for b in args.batches.split(",")):
    fill = dict(root=root, batch=batch, steps=args.steps, dtype=args.dtype, precision=matmul_precision(args.dtype),
                attention=args.attention or None)
    runs = run_alternating(dict(torch=TORCH_CHILD.format(**fill), **{
        layout: FLAX_CHILD.format(**fill, **variant) for layout, variant in variants.items()}), args.rounds,
        args.glibc_tunables)
    for _, layout, torch_run, flax_run in paired_runs(runs, ["torch"], layouts):  # failed children left out
      rows.append([batch, args.dtype, layout, torch_run["seconds"], flax_run["seconds"],
                   flax_run["seconds"] / torch_run["seconds"], torch_run["peak_bytes"] / 2**30,
                   flax_run["peak_bytes"] / 2**30, flax_run["peak_bytes"] / torch_run["peak_bytes"],
                   torch_run["first_call"], flax_run["first_call"]])
  precision = "bfloat16 (PyTorch: autocast)" if args.dtype == "bfloat16" else "float32, no TF32"
  print_table(f"ViT-B masked-pretraining step (16×224², ratio 0.9, AdamW), both sides {precision}, PyTorch "
              f"attention SDPA; median of {args.steps} steps after the first, median over {args.rounds} process(es) "
              f"per configuration run in turn (one PyTorch process per round for both Flax layouts); "
              f"{attention_note(args.attention, args.dtype)}{tunables_note(args.glibc_tunables)}"
              f"{options_note(args.compiler_options)}{machine()}",
              ["batch", "precision", "Flax blocks", "PyTorch s", "Flax s", "Flax / PyTorch", "PyTorch peak GiB",
               "Flax peak GiB", "memory ratio", "PyTorch first call s", "Flax first call s (compiles)"], rows)


if __name__ == "__main__":
  main()
