"""Full-size ViT-B (random init, 16 × 224²): conversion time and memory, Flax vs PyTorch logits and
forward time at batch N, measured in one run on equal terms (SPEC §9).

  python benchmarks/convert.py [--variant vit_b] [--batch 1] [--repeats 3] [--tf32] [--no_compile]

Forward: float32 on both sides with the same matmul precision (full float32, or TF32 on both with --tf32;
it matters on GPUs only). Every call on both sides starts from the same host numpy clips (the host→device
copy is timed) and ends with the logits on the host. The first call (Flax: trace + compile + run; torch.compile:
compile + run) has a row of its own; the median is of the calls after it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
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

from benchmarks.common import (first_and_median, jax_device_name, machine, print_table, run_child,  # noqa: E402
                               torch_device_name)
from gardener_jax import load_checkpoint  # noqa: E402
from gardener_jax.models import VARIANTS, VideoMAE, default_attention  # noqa: E402

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


def set_matmul_precision(tf32: bool) -> str:
  """The same float32 matmul precision on both sides: full float32, or TF32 on both. Returns its name."""
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
  torch.set_float32_matmul_precision("high" if tf32 else "highest")
  jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
  return "TF32 matmuls" if tf32 else "full float32 matmuls"


def random_torch_model(size: dict, num_classes: int):
  torch.manual_seed(0)
  hf_config = transformers.VideoMAEConfig(
      hidden_size=size["width"], num_hidden_layers=size["depth"], num_attention_heads=size["num_heads"],
      intermediate_size=size["mlp_dim"], num_labels=num_classes)
  return transformers.VideoMAEForVideoClassification(hf_config).eval()


def convert_in_child(torch_model) -> tuple[list, object, object]:
  """The conversion table's row, measured in a fresh process, and the converted params and config."""
  root = str(pathlib.Path(__file__).resolve().parents[1])
  with tempfile.TemporaryDirectory() as tmp:
    src, out = f"{tmp}/hf", f"{tmp}/flax"
    torch_model.save_pretrained(src)
    file_bytes = os.path.getsize(f"{src}/model.safetensors")
    conversion = run_child(CONVERT_CHILD.format(root=root, src=src, out=out))
    _, params, config = load_checkpoint(out)
  row = [file_bytes / 2**20, conversion["seconds"], conversion["peak_bytes"] / 2**20,
         conversion["peak_bytes"] / file_bytes]
  return row, params, config


def flax_forward(params, config, clips: np.ndarray, attention):
  apply = jax.jit(lambda p, x: VideoMAE(config, attention=attention).apply({"params": p}, x, train=False))
  return lambda: np.asarray(apply(params, clips))  # numpy in: the host→device copy is timed; logits to the host


def torch_forward(model, clips: np.ndarray, device: str):
  def run():
    with torch.no_grad():
      pixels = torch.from_numpy(clips).permute(0, 1, 4, 2, 3).to(device)  # the host→device copy is timed
      return model(pixels).logits.cpu().numpy()  # .cpu() waits for the GPU
  return run


def short_reason(error: Exception) -> str:
  lines = str(error).strip().splitlines()
  return f"{type(error).__name__}: {lines[0][:100] if lines else ''}"


@dataclasses.dataclass(frozen=True)
class Forward:
  name: str
  device: str
  first_call_is: str  # what the first call does beyond a step (Flax: trace + compile)
  first_call: float = 0.0
  seconds: float = 0.0
  logits: np.ndarray | None = None
  not_run: str = ""  # why it did not run

  def rows(self, reference_seconds: float) -> list[list]:
    """Its median row, then its first call on a row of its own (SPEC §9)."""
    if self.not_run:
      return [[self.name, self.device, f"not run: {self.not_run}", ""]]
    return [[self.name, self.device, self.seconds, self.seconds / reference_seconds],
            [f"  first call ({self.first_call_is})", self.device, self.first_call, ""]]


def measure(name: str, device: str, first_call_is: str, run, repeats: int) -> Forward:
  first_call, seconds, logits = first_and_median(run, repeats)
  print(f"{name} on {device}: first call {first_call:.3f} s, median {seconds:.3f} s", flush=True)  # if stopped early
  return Forward(name, device, first_call_is, first_call, seconds, logits)


def measure_compiled(model, clips: np.ndarray, device: str, repeats: int) -> Forward:
  """The sdpa model under torch.compile (default mode), or why it did not run (no C++ compiler…)."""
  name, where, first_call_is = "PyTorch (transformers, sdpa, torch.compile)", torch_device_name(device), "compile + run"
  try:
    return measure(name, where, first_call_is, torch_forward(torch.compile(model), clips, device), repeats)
  except Exception as error:  # noqa: BLE001 — compilation fails in many ways
    return Forward(name, where, first_call_is, not_run=short_reason(error))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--variant", default="vit_b", choices=sorted(VARIANTS))
  parser.add_argument("--num_classes", type=int, default=400)
  parser.add_argument("--repeats", type=int, default=3, help="timed calls after the first; their median is shown")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--tf32", action="store_true", help="TF32 matmuls on both sides (default: full float32)")
  parser.add_argument("--no_compile", action="store_true", help="skip the torch.compile row")
  args = parser.parse_args()
  precision = set_matmul_precision(args.tf32)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  torch_model = random_torch_model(VARIANTS[args.variant], args.num_classes)
  conversion_row, params, config = convert_in_child(torch_model)
  params = jax.device_put(params)

  clips = np.random.default_rng(0).standard_normal((args.batch, 16, 224, 224, 3), np.float32)
  torch_model.to(device)
  torch_eager = copy.deepcopy(torch_model)
  torch_eager.set_attn_implementation("eager")
  torch_name, jax_name = torch_device_name(device), jax_device_name()
  attention = default_attention(np.float32)
  sdpa = measure("PyTorch (transformers, sdpa)", torch_name, "first step", torch_forward(torch_model, clips, device),
                 args.repeats)
  eager = measure("PyTorch (transformers, eager attention)", torch_name, "first step",
                  torch_forward(torch_eager, clips, device), args.repeats)
  flax_default = measure(f"Flax (jit, default attention: {attention})", jax_name, "trace + compile + run",
                         flax_forward(params, config, clips, None), args.repeats)
  flax_einsum = measure("Flax (jit, one batched einsum attention)", jax_name, "trace + compile + run",
                        flax_forward(params, config, clips, "einsum"), args.repeats)
  # where the default attends blockwise (float32 on GPUs), also XLA's own attention, which materialises the softmax
  flax_fused = [] if attention != "blockwise" else [measure(
      "Flax (jit, XLA's attention: jax.nn.dot_product_attention)", jax_name, "trace + compile + run",
      flax_forward(params, config, clips, "fused"), args.repeats)]
  # last: Inductor's compilation is the slowest call here and the likeliest to fail
  compiled = [] if args.no_compile else [measure_compiled(torch_model, clips, device, args.repeats)]
  rows = [row for forward in [sdpa, *compiled, eager, flax_default, *flax_fused, flax_einsum]
          for row in forward.rows(sdpa.seconds)]

  print_table(f"Conversion, {args.variant} ({config.depth} blocks, {args.num_classes} classes), HF safetensors → "
              f"gardener_jax checkpoint; {machine()}",
              ["checkpoint MB", "wall s", "peak MB (over baseline)", "peak / size"], [conversion_row])
  print_table(f"Forward, {args.variant}, batch {args.batch}, 16×224², float32 with {precision} on both sides; every "
              f"call starts from the same host numpy clips (host→device copy timed on both sides) and ends with the "
              f"logits on the host; median of {args.repeats} calls after the first, which has a row of "
              f"its own; {machine()}", ["", "device", "seconds", "ratio to PyTorch sdpa (medians)"], rows)
  print(f"\nmax |logits Flax − PyTorch sdpa| = {np.abs(flax_default.logits - sdpa.logits).max():.2e} "
        f"(logit scale {np.abs(sdpa.logits).max():.2e}, {precision})")


if __name__ == "__main__":
  main()
