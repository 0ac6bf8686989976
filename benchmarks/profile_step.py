"""Where the time of a ViT-B train step goes (16 × 224², AdamW, float32, the step of `train_step.py`, or
with --pretrain the masked-pretraining step of `pretrain_step.py`): each side profiled over one step
after two warm-up steps, in its own process, in one run; op time grouped by what the ops do.

  python benchmarks/profile_step.py [--batch 1] [--pretrain] [--per_block] [--compiler_options JSON]

PyTorch: torch.profiler's self time per aten op (ops run one after another, each on every core).
Flax: the XLA CPU runtime's trace, one event per HLO instruction of the compiled step, named after its
source in the model; independent instructions may run at the same time on different cores. Time
outside every instruction's event is its own row: the runtime's own work and waits, and on XLA:CPU
most of the weight-gradient matmuls (Eigen contractions whose work outlives their instruction's event;
the forward and input-gradient matmuls run through YNNPACK inside theirs).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, matmul_precision, print_table, run_child  # noqa: E402
from benchmarks import pretrain_step, train_step  # noqa: E402

CATEGORIES = ("linear layers (matmuls)", "attention", "layout copies", "zero fills",
              "block weights out of / activations into the stacked arrays", "everything else (norms, GELU, residual "
              "adds, loss, AdamW)", "outside every op's event (runtime, waits; Flax: weight-gradient matmuls)")

# Each profile follows a child's setup (`train_step` or `pretrain_step`), which defines `step()` or `train_fn`.
TORCH_PROFILE = """
from torch.profiler import ProfilerActivity, profile
step(); step()
with profile(activities=[ProfilerActivity.CPU]) as prof:
  start = time.perf_counter(); step(); wall = time.perf_counter() - start
seconds = {{}}
for event in prof.key_averages():
  name, self_seconds = event.key, event.self_cpu_time_total / 1e6
  if name in ("aten::mm", "aten::addmm", "aten::bmm"):
    category = 0
  elif "scaled_dot_product" in name:
    category = 1
  elif name in ("aten::copy_", "aten::clone", "aten::contiguous"):
    category = 2
  elif name in ("aten::fill_", "aten::zero_", "aten::zeros", "aten::zeros_like"):
    category = 3
  else:
    category = 5
  seconds[category] = seconds.get(category, 0.0) + self_seconds
seconds[6] = max(0.0, wall - sum(seconds.values()))
print(json.dumps(dict(wall=wall, seconds=seconds)))
"""

FLAX_PROFILE = """
import collections, glob, gzip, re, tempfile
votes = global_batch(mesh, dict(v=np.zeros(jax.local_device_count(), np.int32)))["v"]
key = jax.random.key(0)
compiled = train.compile_alone(train_fn, state, batch, key, votes)  # as `train.fit` compiles its step
instructions = {{}}  # name → (opcode, the model op it comes from); a shape, tuple or not, has no "word("
for match in re.finditer(r'^\\s*(?:ROOT )?%?([\\w.-]+) = .*?([a-z][\\w-]*)\\((.*)$', compiled.as_text(), re.MULTILINE):
  op_name = re.search(r'op_name="([^"]*)"', match[3])
  instructions[match[1]] = (match[2], op_name[1] if op_name else "")

def category(name, opcode, op_name):
  if "/attn/while" in op_name:  # the per-head loop of `attention_per_head`, forward and backward
    return 1
  if opcode == "dot" or (name.startswith("ynn_fusion") and "dot_general" in op_name):
    return 0
  if "dynamic-slice" in name or "dynamic-update-slice" in name:
    return 4
  if "copy" in name or "transpose" in name:
    return 2
  if name.startswith("wrapped_broadcast"):
    return 3
  return 5

for _ in range(2):
  state, metrics = compiled(state, batch, key, votes); float(metrics["loss"])
trace_dir = tempfile.mkdtemp()
jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
start = time.perf_counter(); state, metrics = compiled(state, batch, key, votes); float(metrics["loss"])
wall = time.perf_counter() - start
jax.profiler.stop_trace()
events = json.load(gzip.open(glob.glob(trace_dir + "/**/*.trace.json.gz", recursive=True)[0]))
events = events["traceEvents"] if isinstance(events, dict) else events
seconds = collections.Counter()
for event in events:
  found = instructions.get(event.get("name"))
  if event.get("ph") == "X" and found and found[0] not in ("while", "conditional", "call"):
    seconds[category(event["name"], *found)] += event["dur"] / 1e6
seconds[6] = max(0.0, wall - sum(seconds.values()))
print(json.dumps(dict(wall=wall, seconds=seconds)))
"""


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--pretrain", action="store_true",
                      help="the masked-pretraining step (ratio 0.9, decoder 384 × 4)")
  parser.add_argument("--per_block", action="store_true",
                      help="Flax's blocks one subtree each (train.scan_blocks = False), not scanned")
  parser.add_argument("--compiler_options", default="{}", help="XLA compile options (JSON) for Flax's step")
  args = parser.parse_args()
  root = str(pathlib.Path(__file__).resolve().parents[1])
  job = pretrain_step if args.pretrain else train_step
  fill = dict(root=root, batch=args.batch, autocast=False, tf32=False, compile=False, dtype="float32", remat=False,
              precision=matmul_precision("float32"), attention=None, scan_blocks=not args.per_block,
              compiler_options=json.loads(args.compiler_options))
  torch_run = run_child((train_step.PREAMBLE + job.TORCH_SETUP + TORCH_PROFILE).format(**fill))
  flax_run = run_child((train_step.PREAMBLE + job.FLAX_SETUP + FLAX_PROFILE).format(**fill))
  rows = [[name, torch_run["seconds"].get(str(i), 0.0), flax_run["seconds"].get(str(i), 0.0)]
          for i, name in enumerate(CATEGORIES)]
  rows.append(["the step (wall)", torch_run["wall"], flax_run["wall"]])
  blocks = ' (Flax: one subtree per block)' if args.per_block else ''
  print_table(f"ViT-B {'masked-pretraining' if args.pretrain else 'train'} step{blocks}, batch {args.batch}, 16×224², "
              f"AdamW, float32 (no TF32) on both sides: seconds of op "
              f"time by what the ops do (Flax's ops may overlap on different cores; see the docstring); {machine()}",
              ["", "PyTorch s", "Flax s"], rows)


if __name__ == "__main__":
  main()
