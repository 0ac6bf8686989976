"""Human-readable output of rankings and prunings: tables, JSON, bar plots."""

from __future__ import annotations

import pathlib

import numpy as np

from gardener_jax.criteria import CRITERIA, Ranking
from gardener_jax.entropy import NEARLY_ALL_DISTINCT


def ranking_rows(ranking: Ranking) -> tuple[list[str], list[list[str]]]:
  position = {block: i + 1 for i, block in enumerate(ranking.removal_order)}
  header = ["block", ranking.criterion, "removal rank (k = 1)" if ranking.selections else "removal rank"]
  if ranking.entropy is not None:
    header += ["distinct values", "H / ln N"]
  rows = []
  for i, block in enumerate(ranking.block_ids):
    row = [str(block), f"{ranking.scores[i]:.6g}", str(position[block])]
    if ranking.entropy is not None:
      row += [f"{int(ranking.entropy.distinct[i]):,}", f"{ranking.entropy.efficiency[i]:.6f}"]
    rows.append(row)
  return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def distinct_warning(ranking: Ranking) -> str | None:
  """Names the remedy when exact entropy cannot rank the blocks (a float32 checkpoint)."""
  stats = ranking.entropy
  if stats is None or not stats.nearly_all_distinct():
    return None
  gap = float(np.max(np.log(stats.num_weights) - stats.entropy))
  return (f"in every block at least {NEARLY_ALL_DISTINCT:.0%} of the {stats.num_weights:,} weights are distinct "
          f"({ranking.discretization} values, as in a float32 checkpoint): each H is within {gap:.2g} nats of "
          f"ln N = {np.log(stats.num_weights):.4f} and the ranking is noise. "
          "Use --discretize float16, bfloat16 or hist:K (e.g. hist:4096).")


def data_used(calibration: dict | None) -> str:
  return "none (data-free)" if calibration is None else f"calibration, {calibration['source']}"


def criterion_label(ranking: Ranking) -> str:
  """The criterion with its value grid (entropy criteria) or its calibration data, e.g. 'entropy (exact)'."""
  if ranking.entropy is not None:
    return f"{ranking.criterion} ({ranking.discretization})"
  if ranking.calibration is not None:
    return f"{ranking.criterion} (on {ranking.calibration['source']})"
  return ranking.criterion


def describe(ranking: Ranking) -> str:
  header, rows = ranking_rows(ranking)
  grid = f"discretize {ranking.discretization}; " if ranking.entropy is not None else ""
  text = [f"criterion {ranking.criterion} ({CRITERIA[ranking.criterion].description}); "
          f"{grid}the {CRITERIA[ranking.criterion].remove} score is removed first",
          f"data: {data_used(ranking.calibration)}", markdown_table(header, rows)]
  if ranking.selections:
    text.append("blocks removed for each k (one span each): " + "; ".join(
        f"k = {k}: {', '.join(map(str, blocks))}" for k, blocks in ranking.selections.items()))
  else:
    text.append(f"removal order: {', '.join(map(str, ranking.removal_order))}")
  if warning := distinct_warning(ranking):
    text.append(f"warning: {warning}")
  return "\n\n".join(text)


def plot_scores(ranking: Ranking, path, removed=()) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(ranking.block_ids)), 3.5), layout="constrained")
  colors = ["tab:red" if b in removed else "tab:blue" for b in ranking.block_ids]
  scores = np.asarray(ranking.scores)
  positions = np.arange(len(ranking.block_ids))  # block ids as tick labels (strings would be categorical units)
  ax.bar(positions, scores, color=colors)
  ax.set_xticks(positions, [str(b) for b in ranking.block_ids])
  span = scores.max() - scores.min()
  if span > 0 and scores.min() > 0 and span < 0.2 * scores.max():  # zoom in on close scores
    ax.set_ylim(scores.min() - 0.1 * span, scores.max() + 0.1 * span)
  ax.set_xlabel("block (original id)")
  ax.set_ylabel(ranking.criterion)
  title = f"{criterion_label(ranking)}, {CRITERIA[ranking.criterion].remove} removed first"
  if removed:
    title += f"; removed (red): {', '.join(map(str, sorted(removed)))}"
  ax.set_title(title, fontsize=9)
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def prune_markdown(report: dict, ranking: Ranking | None) -> str:
  before, after = report["before"], report["after"]
  lines = [f"# Pruning report: {report['source']}", "",
           f"- chosen by: {report['chosen_by']}",
           f"- removed blocks: {', '.join(map(str, report['removed_blocks']))}",
           f"- kept blocks: {', '.join(map(str, report['kept_blocks']))}", "",
           "| | depth | parameters | GFLOPs (multiply-adds per clip) |", "|---|---|---|---|",
           f"| before | {before['depth']} | {before['params']:,} | {before['gflops']:.4g} |",
           f"| after | {after['depth']} | {after['params']:,} | {after['gflops']:.4g} |",
           f"| after / before | {after['depth'] / before['depth']:.3f} | {after['params'] / before['params']:.3f} | "
           f"{after['gflops'] / before['gflops']:.3f} |"]
  if ranking is not None:
    lines += ["", "## Scores", "", describe(ranking), "", "![scores](scores.png)"]
  return "\n".join(lines) + "\n"


def plot_curves(history: list[dict], path) -> None:
  """Training loss (and batch accuracy, when classifying), and each evaluated split's WAR or loss,
  against the step."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  train = [h for h in history if "loss" in h]
  fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5), layout="constrained")
  left.plot([h["step"] for h in train], [h["loss"] for h in train], label="train (batch)")
  left.set_xlabel("step")
  left.set_ylabel("loss")
  if any("accuracy" in h for h in train):
    right.plot([h["step"] for h in train], [100 * h["accuracy"] for h in train], label="train accuracy (batch)")
  for split in ("val", "test"):
    if evals := [h for h in history if f"{split}_war" in h]:
      right.plot([h["step"] for h in evals], [h[f"{split}_war"] for h in evals], "o-", label=f"{split} WAR")
    if evals := [h for h in history if f"{split}_loss" in h]:
      left.plot([h["step"] for h in evals], [h[f"{split}_loss"] for h in evals], "o-", label=f"{split}")
  right.set_xlabel("step")
  right.set_ylabel("%")
  for ax in (left, right):
    if ax.get_legend_handles_labels()[0]:
      ax.legend()
  if not right.lines:
    right.set_visible(False)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_reconstructions(original, masked, reconstructed, path, max_frames: int = 8) -> None:
  """One picture to judge masked pretraining by: for each clip, its frames (top row), the masked input
  the encoder saw (hidden tubes grey) and the reconstruction (visible tubes as given, hidden ones
  predicted). Arrays (clips, T, H, W, 3) in [0, 1]."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  original, masked, reconstructed = (np.asarray(a) for a in (original, masked, reconstructed))
  frames = np.linspace(0, original.shape[1] - 1, min(max_frames, original.shape[1])).round().astype(int)
  rows = [(f"clip {c + 1}: {name}", images[c]) for c in range(len(original))
          for name, images in (("original", original), ("masked input", masked), ("reconstruction", reconstructed))]
  fig, axes = plt.subplots(len(rows), len(frames), figsize=(1.3 * len(frames), 1.4 * len(rows)), squeeze=False,
                           layout="constrained")
  for (label, clip), row in zip(rows, axes):
    for t, ax in zip(frames, row):
      ax.imshow(clip[t])
      ax.set_xticks([])
      ax.set_yticks([])
    row[0].set_ylabel(label, fontsize=7)
  for t, ax in zip(frames, axes[0]):
    ax.set_title(f"frame {t}", fontsize=7)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _metrics_row(name: str, m: dict) -> str:
  return (f"| {name} | {m['war']:.2f} | {m['uar']:.2f} | {m['top1']:.2f} | {m['top5']:.2f} | "
          f"{m['videos']} | {m['skipped']} |")


def write_run_report(workdir, summary: dict, history: list[dict]) -> None:
  workdir = pathlib.Path(workdir)
  plot_curves(history, workdir / "curves.png")
  t = summary["throughput"]
  versions = summary.get("versions") or {}
  lines = ["# Run report", "", f"- framework: {summary.get('framework', 'flax')} "
           f"({', '.join(f'{k} {v}' for k, v in versions.items())})",
           f"- kept blocks: {summary['kept_blocks']} of {summary['original_depth']}",
           f"- removed blocks: {summary['removed_blocks'] or 'none'}",
           f"- parameters: {summary['params']:,}; GFLOPs per clip: {summary['gflops']:.4g}",
           f"- classes: {len(summary['classes'])}; steps: {summary['steps']}; saved as {summary['saved_dtype']}",
           f"- throughput: {t['train_clips_per_sec']:.1f} train clips/s, "
           f"{t['eval_clips_per_sec'] or 0:.1f} eval clips/s", "",
           "| final params on | WAR | UAR | top-1 | top-5 | videos | skipped (unreadable) |",
           "|---|---|---|---|---|---|---|"]
  if validation := summary["validation"]:
    lines.append(_metrics_row("validation", validation["final"]))
  if summary["metrics"] and summary["metrics"]["split"] == "test":
    lines.append(_metrics_row("test", summary["metrics"]))
  if validation:
    lines += ["", f"Validation: {validation['source']}; `best/` holds step {validation['best_step']}, the best "
              "validation WAR. The test split is evaluated once, on the final params."]
  lines += ["", "![curves](curves.png)"]
  if summary.get("source"):
    lines += ["", *source_lines(summary["source"])]
  if pruning := summary.get("pruning"):
    lines += ["", "## Pruning", "", f"{pruning['chosen_by']}; removed blocks {summary['removed_blocks'] or 'none'} "
              "(`pruned/prune_report.md` has the full table).", ""]
    if ranking := pruning.get("ranking"):
      header = ["block", f"{ranking['criterion']} ({ranking['discretize']})", "removed"]
      lines.append(markdown_table(header, [[str(b), f"{score:.6g}", "yes" if b in summary["removed_blocks"] else ""]
                                           for b, score in zip(ranking["block_ids"], ranking["scores"])]))
      lines += ["", "![scores](pruned/scores.png)"]
  (workdir / "report.md").write_text("\n".join(lines) + "\n")


def source_lines(source: dict) -> list[str]:
  """How the embedded default made the model it prunes (pipeline.pretrain_stage's summary)."""
  masked, supervised = source.get("masked_pretraining"), source["supervised"]
  steps = []
  if masked:
    loss, validation = masked["train_loss"], masked["validation"]
    steps.append(f"masked pretraining on the clips of {len(source['classes'])} classes (labels unread), mask ratio "
                 f"{masked['mask_ratio']}, {masked['steps']} steps: train loss {loss['first']:.4f} → {loss['last']:.4f}"
                 + (f", validation loss {validation['final']['loss']:.4f} (predicting each tube's mean: ≈ 1.0)"
                    if validation else ""))
  metrics = supervised["metrics"]
  steps.append(f"supervised {'finetuning' if masked else 'training from scratch'} on the "
               f"{len(source['classes'])} classes, {supervised['steps']} steps"
               + (f": {metrics['split']} WAR {metrics['war']:.2f}" if metrics else ""))
  steps.append(f"stored as {source['saved_dtype']}, the checkpoint that is scored and pruned")
  lines = ["## Source model", "", *(f"{i}. {step}" for i, step in enumerate(steps, 1))]
  if masked:
    lines += ["", "Masked pretraining: original frames, the masked input and the reconstruction "
              "(`masked_pretraining/report.md` has the loss curve):", "",
              "![reconstructions](masked_pretraining/reconstructions.png)"]
  return lines


def write_pretraining_report(workdir, summary: dict, history: list[dict]) -> None:
  workdir = pathlib.Path(workdir)
  plot_curves(history, workdir / "curves.png")
  loss, validation = summary["train_loss"], summary["validation"]
  lines = ["# Masked pretraining report", "", f"- checkpoint: `{summary['checkpoint']}` (encoder and decoder)",
           f"- parameters: {summary['params']:,}; steps: {summary['steps']}",
           f"- mask ratio {summary['mask_ratio']}: {summary['masked_tokens_per_clip']} tokens hidden per clip",
           f"- train loss (batch): {loss['first']:.4f} at the first logged step, {loss['last']:.4f} at the last "
           "(predicting each tube's mean scores ≈ 1.0 with normalised-pixel targets)",
           f"- throughput: {summary['throughput']['train_clips_per_sec']:.1f} train clips/s"]
  if validation:
    lines.append(f"- validation ({validation['source']}): loss {validation['final']['loss']:.4f} on fixed masks; "
                 f"`best/` holds step {validation['best_step']}")
  lines += ["", "![loss](curves.png)", "", "Original frames, the masked input the encoder saw (hidden tubes grey) "
            "and the reconstruction:", "", "![reconstructions](reconstructions.png)"]
  (workdir / "report.md").write_text("\n".join(lines) + "\n")
