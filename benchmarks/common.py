"""Helpers shared by the benchmark scripts: timing, peak memory of a child process, a table printer."""

from __future__ import annotations

import ctypes
import dataclasses
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def median_time(fn, repeats: int = 3) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def first_and_median(fn, repeats: int = 3) -> tuple[float, float, object]:
  """The first call timed on its own (it traces and compiles, or fills caches), then the median of `repeats`
  calls after it (SPEC §9). Returns (first call s, median s, the first call's result)."""
  start = time.perf_counter()
  result = fn()
  first_call = time.perf_counter() - start
  return first_call, median_time(fn, repeats), result


@dataclasses.dataclass(frozen=True)
class Rate:
  """Clips per second, and how many cores the process kept busy meanwhile (its CPU seconds, all
  threads, per wall second)."""

  clips_per_sec: float
  cores_busy: float

  @property
  def clips_per_cpu_sec(self) -> float:
    return self.clips_per_sec / self.cores_busy

  @property
  def cpu_ms_per_clip(self) -> float:
    return 1e3 / self.clips_per_cpu_sec


def batch_rate(batches, timed: int, warmup: int = 1, consume=None) -> Rate:
  """The rate over `timed` batches of `batches` (dicts with a 'label' per clip) after `warmup` more
  (which start workers or compile), each passed to `consume` if given; the timing starts before the
  first timed batch is read."""
  batches = iter(batches)
  consume = consume or (lambda batch: None)
  for batch in itertools.islice(batches, warmup):
    consume(batch)
  start, cpu_start, clips = time.perf_counter(), time.process_time(), 0
  for batch in itertools.islice(batches, timed):
    consume(batch)
    clips += len(batch["label"])
  wall = time.perf_counter() - start
  return Rate(clips / wall, (time.process_time() - cpu_start) / wall)


def rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
  """The process's resident high-water mark (VmHWM), since it started or since `reset_peak_rss`."""
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def reset_peak_rss() -> None:
  """Resets VmHWM to the current RSS (Linux: clear_refs 5), so a later peak excludes one-off work.

  First it hands the heap's free pages back to the OS (glibc's `malloc_trim`), on both sides of a
  comparison: glibc keeps what the first call freed (XLA's compiler: 0.2–0.4 GB for a ViT-B step;
  PyTorch's first step), and the steps' peak should count the memory they use, not that.
  """
  ctypes.CDLL("libc.so.6").malloc_trim(0)
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
  except OSError:  # gVisor has no clear_refs; on a GPU the peak is the allocator's anyway
    pass


def run_child(code: str, glibc_tunables: str = "") -> dict:
  """Runs `code` in a fresh interpreter (so peak memory is its own); it prints one JSON line last.
  `glibc_tunables`, if given, is the child's GLIBC_TUNABLES (glibc reads it only as a process starts)."""
  env = {**os.environ, "GLIBC_TUNABLES": glibc_tunables} if glibc_tunables else None
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
  try:
    if not out.returncode:
      return json.loads(out.stdout.strip().splitlines()[-1])
  except (IndexError, json.JSONDecodeError):
    pass
  raise RuntimeError(f"benchmark child failed (status {out.returncode}, no JSON line last):\n{out.stderr[-3000:]}")


def matmul_precision(dtype: str, tf32: bool = False) -> str:
  """JAX's matmul precision for a Flax side at compute `dtype`, matching PyTorch's (SPEC §9): TF32 where both
  sides use it, otherwise full float32 for float32 and the default for bfloat16 (autocast)."""
  return "tensorfloat32" if tf32 else "highest" if dtype == "float32" else "default"


def tunables_note(glibc_tunables: str) -> str:
  """For a table's title: the GLIBC_TUNABLES both sides ran with, if any."""
  return f"GLIBC_TUNABLES={glibc_tunables} on both sides; " if glibc_tunables else ""


def flax_variants(layouts: str, compiler_options: str) -> dict[str, dict]:
  """`--layouts` (comma-separated `scanned` or `per_block`, each optionally `+options`) → each one's fields for
  a Flax child: `scan_blocks`, and `compiler_options`, the JSON of `--compiler_options` where `+options` asks."""
  options = json.loads(compiler_options or "{}")
  variants = {}
  for name in layouts.split(","):
    layout, _, extra = name.partition("+")
    if layout not in ("scanned", "per_block") or extra not in ("", "options"):
      raise SystemExit(f"--layouts: {name!r} is not scanned or per_block, each optionally with +options")
    variants[name] = dict(scan_blocks=layout == "scanned", compiler_options=options if extra else {})
  return variants


def attention_note(attention: str, dtype: str) -> str:
  """For a table's title: the attention implementation of the Flax side (`--attention`, or the default)."""
  from gardener_jax.models import default_attention

  return f"Flax attention: {attention or default_attention(dtype) + ' (the default here)'}; "


def options_note(compiler_options: str) -> str:
  """For a table's title: the XLA compile options of the layouts marked `+options`, if any."""
  return f"'+options': Flax's step compiled with {compiler_options}; " if compiler_options else ""


def run_alternating(codes: dict[str, str], rounds: int, glibc_tunables: str = "") -> dict[str, dict]:
  """Runs each child of `codes` (name → code) once per round, in turn, and gives each name the median of
  every number its children printed: on a machine whose speed drifts, alternating keeps the drift from
  landing on one side. `glibc_tunables` is passed to every child alike. Each child's numbers are printed as
  it ends, and a child that fails is reported and left out, so a script stopped early or one failing
  configuration keeps what the others measured; a name whose every child failed is missing."""
  runs = {name: [] for name in codes}
  for _ in range(rounds):
    for name, code in codes.items():
      try:
        runs[name].append(run_child(code, glibc_tunables))
      except RuntimeError as error:
        print(f"{name}: {error}", file=sys.stderr, flush=True)
        continue
      print(f"{name}: {json.dumps(runs[name][-1])}", flush=True)
  return {name: {key: statistics.median(run[key] for run in results) for key in results[0]}
          for name, results in runs.items() if results}


def paired_runs(runs: dict[str, dict], torch_sides: list[str], layouts: list[str]):
  """(PyTorch side, Flax layout, its numbers, Flax's) for each pair that `run_alternating` has numbers for."""
  return [(side, layout, runs[side], runs[layout]) for side in torch_sides for layout in layouts
          if side in runs and layout in runs]


def machine() -> str:
  """The CPU model and core count (and the GPU where torch sees one) and the library versions, for
  every table's title: ratios differ between machines (SPEC §9)."""
  import jax
  import torch
  import transformers

  from gardener_jax.frameworks import cpu_model

  cpu = cpu_model()
  gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
  return (f"{cpu} ({os.cpu_count()} cores){gpu}; jax {jax.__version__}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}")


def jax_device_name() -> str:
  """The device JAX computes on, for a table row."""
  import jax

  device = jax.devices()[0]
  return "CPU (XLA)" if device.platform == "cpu" else device.device_kind


def torch_device_name(device: str) -> str:
  """The device PyTorch computes on ('cpu' or 'cuda'), for a table row."""
  import torch

  return torch.cuda.get_device_name() if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"


def print_table(title: str, header: list[str], rows: list[list]) -> None:
  cells = [header] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
  print(f"\n{title}")
  for i, row in enumerate(cells):
    print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    if i == 0:
      print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
