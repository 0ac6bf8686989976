"""Forward throughput of ViT-B (16 × 224²) keeping 12, 9, 6, 3 and 1 blocks, against the ideal
speed-up given by the GFLOPs ratio. Pruned models are physically smaller, so time should follow.

  python benchmarks/speedup.py [--batch 2] [--repeats 3] [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import machine, median_time, print_table  # noqa: E402
from gardener_jax import prune  # noqa: E402
from gardener_jax.models import ModelConfig, VideoMAE, init_params  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--keep", default="12,9,6,3,1")
  args = parser.parse_args()
  dtype = jnp.dtype(args.dtype)
  config = ModelConfig.from_variant("vit_b", num_classes=400)
  params = init_params(config)
  clips = jnp.asarray(np.random.default_rng(0).standard_normal((args.batch, 16, 224, 224, 3), np.float32), dtype)

  rows, full = [], None
  for keep in (int(k) for k in args.keep.split(",")):
    remove = list(range(keep + 1, config.depth + 1))
    pruned, pruned_config = prune.prune(params, config, remove) if remove else (params, config)
    pruned = jax.device_put(pruned)
    forward = jax.jit(lambda p, x, c=pruned_config: VideoMAE(c, dtype=dtype).apply({"params": p}, x))
    forward(pruned, clips).block_until_ready()
    seconds = median_time(lambda: forward(pruned, clips).block_until_ready(), args.repeats)
    if full is None:
      full = (seconds, prune.gflops(pruned_config))
    measured, ideal = full[0] / seconds, full[1] / prune.gflops(pruned_config)
    print(f"{keep} blocks kept: {seconds:.4f} s", flush=True)  # kept if the script is stopped before its table
    rows.append([keep, f"{prune.gflops(pruned_config):.1f}", seconds, args.batch / seconds, measured, ideal,
                 measured / ideal])
  print_table(f"ViT-B forward, batch {args.batch}, {args.dtype}, {jax.devices()[0].device_kind} "
              f"({jax.device_count()} device), median of {args.repeats}; {machine()}",
              ["blocks kept", "GFLOPs/clip", "seconds", "clips/s", "speed-up", "ideal (GFLOPs)", "measured / ideal"],
              rows)


if __name__ == "__main__":
  main()
