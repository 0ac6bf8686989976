"""Full-size ViT-B (random init, 16 × 224²): conversion time and memory, Flax vs PyTorch logits and
forward time at batch 1, measured in one run.

  python benchmarks/convert.py [--variant vit_b] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from benchmarks.common import median_time, print_table, run_child  # noqa: E402
from gardener_jax import load_checkpoint  # noqa: E402
from gardener_jax.models import VARIANTS, VideoMAE  # noqa: E402

CONVERT_CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from benchmarks.common import peak_rss_bytes, rss_bytes
from tools.convert_torch import convert
before = rss_bytes()
start = time.perf_counter()
convert({src!r}, {out!r})
seconds = time.perf_counter() - start
print(json.dumps(dict(seconds=seconds, peak_bytes=peak_rss_bytes() - before)))
"""


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--variant", default="vit_b", choices=sorted(VARIANTS))
  parser.add_argument("--num_classes", type=int, default=400)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--batch", type=int, default=1)
  args = parser.parse_args()
  torch_device = "cuda" if torch.cuda.is_available() else "cpu"
  size = VARIANTS[args.variant]
  root = str(pathlib.Path(__file__).resolve().parents[1])
  torch.manual_seed(0)
  hf_config = transformers.VideoMAEConfig(
      hidden_size=size["width"], num_hidden_layers=size["depth"], num_attention_heads=size["num_heads"],
      intermediate_size=size["mlp_dim"], num_labels=args.num_classes)
  torch_model = transformers.VideoMAEForVideoClassification(hf_config).eval()

  with tempfile.TemporaryDirectory() as tmp:
    src, out = f"{tmp}/hf", f"{tmp}/flax"
    torch_model.save_pretrained(src)
    file_bytes = os.path.getsize(f"{src}/model.safetensors")
    conversion = run_child(CONVERT_CHILD.format(root=root, src=src, out=out))
    _, params, config = load_checkpoint(out)

  clips = np.random.default_rng(0).standard_normal((args.batch, 16, 224, 224, 3), np.float32)
  torch_clips = torch.from_numpy(clips).permute(0, 1, 4, 2, 3).contiguous().to(torch_device)
  torch_model.to(torch_device)
  def flax_forward(attention):
    apply = jax.jit(lambda p, x: VideoMAE(config, attention=attention).apply({"params": p}, x, train=False))
    return lambda: apply(params, clips).block_until_ready()

  def torch_forward(model):
    def run():
      with torch.no_grad():
        logits = model(torch_clips).logits.cpu().numpy()  # .cpu() waits for the GPU
      return logits
    return run

  torch_eager = copy.deepcopy(torch_model)
  torch_eager.set_attn_implementation("eager")
  flax_default = flax_forward(None)
  compile_seconds = median_time(flax_default, repeats=1)
  flax_logits, torch_logits = np.asarray(flax_default()), torch_forward(torch_model)()
  runs = {"PyTorch (transformers, sdpa)": torch_forward(torch_model),
          "PyTorch (transformers, eager attention)": torch_forward(torch_eager),
          f"Flax (jit, default attention: {'per_head' if jax.default_backend() == 'cpu' else 'fused'})": flax_default,
          "Flax (jit, one batched einsum attention)": flax_forward("einsum")}
  for run in runs.values():
    run()  # warm-up and compile
  seconds = {name: median_time(run, args.repeats) for name, run in runs.items()}
  reference = seconds["PyTorch (transformers, sdpa)"]

  print_table(f"Conversion, {args.variant} ({config.depth} blocks, {args.num_classes} classes), HF safetensors → "
              "gardener_jax checkpoint", ["checkpoint MB", "wall s", "peak MB (over baseline)", "peak / size"],
              [[file_bytes / 2**20, conversion["seconds"], conversion["peak_bytes"] / 2**20,
                conversion["peak_bytes"] / file_bytes]])
  print_table(f"Forward, batch {args.batch}, 16×224², fp32, JAX on {jax.devices()[0].device_kind}, PyTorch on "
              f"{torch_device} ({torch.get_num_threads()} threads), median of {args.repeats}", ["", "seconds", "ratio to PyTorch sdpa"],
              [[name, t, t / reference] for name, t in seconds.items()]
              + [["Flax first call (trace + compile + run)", compile_seconds, ""]])
  print(f"\nmax |logits Flax − PyTorch| = {np.abs(flax_logits - torch_logits).max():.2e} "
        f"(logit scale {np.abs(torch_logits).max():.2e})")


if __name__ == "__main__":
  main()
