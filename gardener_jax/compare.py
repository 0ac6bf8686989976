"""A sweep's results as the paper shows them: sweep.csv, sweep.md, sweep.png, correlations.json,
against_random.json, and the side-by-side with the paper's UCF101 numbers (SPEC §6). Every cell is a
mean over training seeds with its spread, count and 95 % interval (`stats`)."""

from __future__ import annotations

import csv
import json
import math
import pathlib
import warnings

import numpy as np
from scipy import stats

from gardener_jax import criteria, stats as stats_lib
from gardener_jax.files import atomic_path, write_json
from gardener_jax.report import markdown_table
from gardener_jax.sweep import BASELINE, GREEDY, ORACLE, RANKINGS_FILE, SINGLE, Pending, Sweep

CSV_COLUMNS = ["run", "criterion", "k", "ratio", "seed", "draw", "framework", "removed_blocks", "war", "uar", "top1",
               "top5", "videos", "params", "gflops", "epochs", "status", "reused_from", "error"]
NEWER_COLUMNS = {"draw", "framework", "videos"}  # sweeps written before them lack them

# The paper's UCF101 results, WAR % (SPEC §6): unpruned, single-block removal, and the table by ratio.
PAPER_UNPRUNED = 91.78
PAPER_SINGLE = dict(enumerate([46.73, 90.58, 86.14, 74.65, 88.32, 87.43, 88.51, 88.02, 90.79, 90.30, 91.09, 91.29],
                              start=1))
PAPER_COLUMNS = {"oracle": ("oracle",), "Gardener": ("entropy",), "L1": ("l1",), "random": ("random",),
                 "variance/std": ("variance", "std"), "L2": ("l2",), "kurtosis": ("kurtosis",),
                 "MI": ("mutual_information",)}  # the paper's column → our criteria
PAPER_TABLE = {k: dict(zip(PAPER_COLUMNS, row)) for k, row in {  # blocks removed of 12 → column → WAR
    1: (91.29, 91.29, 46.73, 84.49, 88.51, 88.51, 46.73, 46.73),
    3: (86.63, 85.54, 68.81, 76.45, 85.25, 83.56, 64.36, 60.99),
    5: (84.26, 82.97, 72.18, 76.21, 79.70, 81.58, 70.30, 62.48),
    7: (78.91, 79.90, 69.80, 73.70, 78.02, 78.02, 70.40, 65.15),
    9: (76.44, 73.56, 69.01, 72.46, 72.97, 72.97, 70.30, 69.01),
    11: (68.81, 68.81, 59.01, 62.05, 68.81, 59.01, 58.32, 59.01),
}.items()}
PAPER_ENTROPY = (9.54843, 9.41702, 9.38557, 9.39459, 9.38296, 9.38941, 9.37754, 9.37866, 9.36123, 9.35138, 9.35394,
                 9.34871)  # SPEC §2: the K400 VideoMAE-B's block entropies, blocks 1 … 12
PAPER_DEPTH = 12


def csv_rows(results: list[dict]) -> list[dict]:
  rows = []
  for r in results:
    row = {c: r.get(c, "") for c in CSV_COLUMNS}
    row.update(run=r["name"], removed_blocks=" ".join(map(str, r.get("removed_blocks", []))),
               reused_from=r.get("reused_from", ""), error=r.get("error", ""))
    rows.append(row)
  return rows


def line_name(result: dict) -> str:
  """The criterion, and the framework where it is not this one's: rows of a PyTorch run added to
  sweep.csv (framework 'torch') make a line of their own beside ours."""
  framework = result.get("framework") or "flax"
  return result["criterion"] if framework == "flax" else f"{result['criterion']} ({framework})"


def level_table(results: list[dict]) -> dict[str, dict[int, list[float]]]:
  """criterion line → k → the WARs at that level (one per training seed, × draws for random); the greedy
  oracle's values at k are those of its candidate of step k with the best mean; the single-removal runs
  are the k = 1 of no line."""
  table: dict[str, dict[int, list[float]]] = {}
  greedy: dict[int, dict[tuple, list[float]]] = {}
  for r in results:
    if r.get("status") != "ok" or r["criterion"] in (BASELINE, SINGLE):
      continue
    if r["criterion"] == GREEDY:
      greedy.setdefault(r["k"], {}).setdefault(tuple(r["removed_blocks"]), []).append(r["war"])
    else:
      table.setdefault(line_name(r), {}).setdefault(r["k"], []).append(r["war"])
  for k, candidates in sorted(greedy.items()):
    table.setdefault(GREEDY, {})[k] = max(candidates.values(), key=np.mean)
  return table


def eval_videos(results: list[dict]) -> int | None:
  """The eval split's size (every run is evaluated on the same videos); None where not recorded."""
  return next((int(r["videos"]) for r in results if r.get("status") == "ok" and r.get("videos")), None)


def _random_draws(results: list[dict], k: int) -> np.ndarray | None:
  """random's WARs at level k as (training seeds × draws), when every draw finished with every seed."""
  wars = {(int(r.get("seed") or 0), int(r.get("draw") or 0)): float(r["war"]) for r in results
          if r.get("status") == "ok" and line_name(r) == "random" and int(r["k"]) == k}
  seeds, draws = sorted({s for s, _ in wars}), sorted({d for _, d in wars})
  if not wars or len(wars) != len(seeds) * len(draws):
    return None
  return np.asarray([[wars[s, d] for d in draws] for s in seeds])


def cell_summary(results: list[dict], line: str, k: int, values: list[float] | None, videos: int | None) -> dict | None:
  """`stats.cell` of a line's WARs at level k; random's, whose draws are crossed with the training seeds,
  by `stats.crossed_cell`."""
  draws = _random_draws(results, k) if line == "random" and values else None
  return stats_lib.crossed_cell(draws, videos) if draws is not None else stats_lib.cell(values or [], videos)


def _cell(values: list[float] | None, videos: int | None, results: list[dict] = (), line: str = "", k: int = 0) -> str:
  return stats_lib.format_cell(cell_summary(list(results), line, k, values, videos))


def _removed(result: dict) -> list[int]:
  """A result's removed blocks, from result.json (a list) or sweep.csv (space-separated)."""
  blocks = result["removed_blocks"]
  return [int(b) for b in (blocks.split() if isinstance(blocks, str) else blocks)]


def per_seed(results: list[dict], line: str) -> dict:
  """(k, or the block of a single removal) → training seed → the WARs of the ok runs of `line` (random:
  one per draw); `results` are result records or sweep.csv rows."""
  table: dict = {}
  for r in results:
    if r.get("status") == "ok" and line_name(r) == line:
      key = _removed(r)[0] if r["criterion"] == SINGLE else int(r["k"])
      table.setdefault(key, {}).setdefault(int(r.get("seed") or 0), []).append(float(r["war"]))
  return table


def against_random(results: list[dict]) -> list[dict]:
  """Every criterion at every level against random, paired by training seed (`stats.paired_against_random`)."""
  random = per_seed(results, "random")
  skip = {BASELINE, SINGLE, GREEDY, "random"}
  lines = dict.fromkeys(line_name(r) for r in results if r.get("status") == "ok" and r["criterion"] not in skip
                        and line_name(r) == r["criterion"])
  out = []
  for name in lines:
    for k, by_seed in sorted(per_seed(results, name).items()):
      if k in random and (paired := stats_lib.paired_against_random(
          {t: wars[0] for t, wars in by_seed.items()}, random[k])):
        out.append({"criterion": name, "k": k, **paired})
  return out


def random_sentence(comparisons: list[dict], seeds: list[int], alpha: float = 0.05) -> str:
  """What the paired tests against random support, in a sentence."""
  tested = [c for c in comparisons if c["p"] is not None]
  if not tested:
    return ("No difference from random can be tested: that needs two or more training seeds (`sweep.seeds`) "
            "and a difference that varies between them.")
  supported = [c for c in tested if c["p"] < alpha]
  n = max(c["n"] for c in tested)
  how = (f"two-sided paired t-tests over {'up to ' if n < len(seeds) else ''}{n} training seeds, {len(tested)} "
         f"comparisons, no correction "
         f"for their number: about {alpha * len(tested):.1f} would pass by chance alone")
  if not supported:
    return f"No difference from random is supported at p < {alpha} ({how})."
  listed = "; ".join(f"{c['criterion']} {'above' if c['mean_difference'] > 0 else 'below'} random at k = {c['k']} "
                     f"({c['mean_difference']:+.2f} points, p = {c['p']:.3f})" for c in supported)
  return f"At p < {alpha} ({how}) the data support: {listed}. No other difference from random is supported."


def correlations(sweep: Sweep, singles: dict[int, dict[int, float]], baselines: dict[int, float]) -> dict:
  """Spearman and Kendall between each criterion's block importance and the oracle's accuracy drop (the
  mean over training seeds), with bootstrap intervals over blocks and seeds, and the overlap of each
  criterion's removed set with the oracle's at each level."""
  blocks = list(singles)
  seeds = sorted(set.intersection(*(set(by_seed) for by_seed in singles.values())))
  drops = np.asarray([[baselines.get(t, 0.0) - singles[b][t] for t in seeds] for b in blocks])
  accuracy = {b: float(np.mean([singles[b][t] for t in seeds])) for b in blocks}
  oracle_order = criteria.removal_order(list(accuracy.values()), criteria.HIGHEST, blocks)
  with_baseline = all(t in baselines for t in seeds)
  out = {"metric": "war", "seeds": seeds,
         "drop": "unpruned WAR − WAR with the block removed, per training seed, averaged" if with_baseline
         else "− WAR with the block removed, averaged over training seeds (no unpruned run for every seed)",
         "oracle_removal_order": oracle_order, "criteria": {}}
  for name, seed in sweep.scored_criteria():
    ranking = sweep.ranking(name, seed)
    score = dict(zip(ranking.block_ids, ranking.scores))
    importance = np.asarray([score[b] for b in blocks]) * (1 if criteria.get(name).remove == criteria.LOWEST else -1)
    out["criteria"][name if name != "random" else f"random (seed {seed})"] = {
        **rank_correlations(importance, drops.mean(axis=1)),
        **stats_lib.bootstrap_correlations(importance, drops),
        "calibration": ranking.calibration,
        "overlap_with_oracle": {str(k): len(set(ranking.blocks_to_remove(k)) & set(oracle_order[:k])) / k
                                for k in map(int, sweep.config.sweep.levels)}}
  return out


def rank_correlations(x, y) -> dict:
  """scipy's Spearman ρ and Kendall τ-b with p-values; None where undefined (a constant input)."""
  def clean(v):
    return None if v is None or not math.isfinite(v) else float(v)

  with warnings.catch_warnings():
    warnings.simplefilter("ignore", stats.ConstantInputWarning)
    rho, tau = stats.spearmanr(x, y), stats.kendalltau(x, y)
  return {"spearman": clean(rho.statistic), "spearman_p": clean(rho.pvalue), "kendall": clean(tau.statistic),
          "kendall_p": clean(tau.pvalue)}


def _ordered_columns(table: dict, order: list[str]) -> list[str]:
  return [c for c in dict.fromkeys(order) if c in table] + [c for c in table if c not in order]


def plot(table: dict, results: list[dict], depth: int, baseline: float | None, videos: int | None, path) -> None:
  """WAR against pruning ratio, a line per criterion: the mean over runs, a band over its 95 % interval."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
  colors, markers = plt.get_cmap("tab20").colors, "os^vD<>phX*"
  for i, (name, by_k) in enumerate(table.items()):
    ks = sorted(by_k)
    ratio = [100 * k / depth for k in ks]
    cells = [cell_summary(results, name, k, by_k[k], videos) for k in ks]
    style = {"color": colors[i % len(colors)], "marker": markers[i % len(markers)]}
    if name == "entropy":
      style = {"color": "black", "marker": "o", "linewidth": 2.5}
    elif name in (ORACLE, GREEDY):
      style = {"color": "black", "marker": "*", "linestyle": "--" if name == ORACLE else ":"}
    ax.plot(ratio, [c["mean"] for c in cells], label="entropy (Gardener)" if name == "entropy" else name, **style)
    ax.fill_between(ratio, [c["low"] for c in cells], [c["high"] for c in cells], color=style["color"], alpha=0.08)
  if baseline is not None:
    ax.axhline(baseline, color="gray", linewidth=1, label="unpruned")
  ax.set_xlabel("pruning ratio (% of blocks removed)")
  ax.set_ylabel("WAR (%), mean over seeds; band: 95 % interval")
  ax.legend(fontsize=8, ncol=2)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write(sweep: Sweep) -> dict:
  """Writes sweep.csv, sweep.md, sweep.png, against_random.json and (once the oracle runs are in)
  correlations.json."""
  results, depth, out = sweep.results(), sweep.depth, sweep.dir
  rows = csv_rows(results)
  with atomic_path(out / "sweep.csv") as tmp, tmp.open("w", newline="") as f:
    writer = csv.DictWriter(f, CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)

  videos = eval_videos(results)
  baselines = {t: wars[0] for t, wars in per_seed(results, BASELINE).get(0, {}).items()}
  baseline = float(np.mean(list(baselines.values()))) if baselines else None
  table = level_table(results)
  order = [ORACLE, GREEDY, "entropy"] + list(sweep.config.sweep.criteria)
  columns = _ordered_columns(table, order)
  levels = sorted({k for by_k in table.values() for k in by_k})
  sweep_config = sweep.config.sweep
  draws = f" (random: × draws {list(sweep_config.random_seeds)})" if "random" in sweep_config.criteria else ""
  text = [f"# Sweep: {len(results)} of {len(sweep.runs)} runs recorded, "
          f"{sum(r.get('status') == 'ok' for r in results)} ok", "",
          f"Initial checkpoint `{sweep.initial}` ({depth} blocks); WAR % on the {videos or '?'} eval videos; "
          f"unpruned: {_cell(list(baselines.values()), videos)}. Each cell: mean ± std (n runs) [95 % interval] "
          f"over training seeds {sweep.seeds}{draws}; the interval adds the eval set's binomial variance to the "
          f"seeds' (`gardener_jax/stats.py`). {_data_sentence(sweep)}", "",
          markdown_table(["ratio %", "k"] + columns,
                         [[f"{100 * k / depth:.1f}", str(k)]
                          + [_cell(table[c].get(k), videos, results, c, k) for c in columns] for k in levels]),
          "", "![WAR against pruning ratio](sweep.png)"]
  comparisons = against_random(results)
  write_json(out / "against_random.json", {"test": "two-sided paired t-test over training seeds of the criterion's "
                                                   "WAR minus the mean of random's draws with the same seed",
                                           "comparisons": comparisons})
  if comparisons:
    text += ["", "## Against random, paired by training seed", "",
             markdown_table(["criterion", "k", "WAR − random", "95 % interval", "p", "seeds"],
                            [[c["criterion"], str(c["k"]), f"{c['mean_difference']:+.2f}",
                              "—" if c["low"] is None else f"[{c['low']:+.2f}, {c['high']:+.2f}]",
                              _fmt(c["p"]), str(c["n"])] for c in comparisons]),
             "", random_sentence(comparisons, sweep.seeds)]
  singles = per_seed(results, SINGLE)
  if singles:
    text += ["", "## Single-block removal (the oracle's sensitivity)", "",
             markdown_table([f"RB-{b}" for b in sorted(singles)],
                            [[_cell(sum(singles[b].values(), []), videos) for b in sorted(singles)]])]
  correlation = None
  try:
    correlation = correlations(sweep, sweep.single_accuracies(), baselines)
  except Pending as e:  # no oracle in this sweep, or its runs are unfinished
    text += ["", f"No correlations yet: {e}"]
  if correlation:
    write_json(out / "correlations.json", correlation)
    text += ["", "## Block scores against the oracle's accuracy drop (95 % bootstrap intervals over blocks and "
                 "seeds)", "",
             markdown_table(["criterion", "Spearman ρ", "Kendall τ"]
                            + [f"overlap k={k}" for k in sweep.config.sweep.levels],
                            [[name, _with_interval(c["spearman"], c["spearman_interval"]),
                              _with_interval(c["kendall"], c["kendall_interval"])]
                             + [f"{v:.2f}" for v in c["overlap_with_oracle"].values()]
                             for name, c in correlation["criteria"].items()])]
  if failed := [r for r in results if r.get("status") != "ok"]:
    text += ["", "## Failed runs", "", *[f"- {r['name']}: {r.get('error')}" for r in failed]]
  (out / "sweep.md").write_text("\n".join(text) + "\n")
  if table:
    plot(table, results, depth, baseline, videos, out / "sweep.png")
  return {"table": table, "baseline": baseline, "correlations": correlation, "against_random": comparisons}


def _with_interval(value: float | None, interval: list[float] | None) -> str:
  return _fmt(value) + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")


def _data_sentence(sweep: Sweep) -> str:
  with_data = [name for name in sweep.config.sweep.criteria if criteria.needs_data(name)]
  if not with_data:
    return "Every criterion is data-free."
  source = sweep.ranking(with_data[0]).calibration["source"]
  return f"Criteria that read data: {', '.join(with_data)}, on {source}; the others are data-free."


def _fmt(value: float | None) -> str:
  return "—" if value is None else f"{value:.3f}"


def read_csv(path) -> list[dict]:
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: run `gardener sweep` into that directory first")
  with path.open() as f:
    rows = list(csv.DictReader(f))
  if rows and (missing := set(CSV_COLUMNS) - NEWER_COLUMNS - set(rows[0])):
    raise ValueError(f"{path}: not a sweep.csv, columns {sorted(missing)} are missing")
  return rows


def compare_paper(directory) -> str:
  """Markdown: the sweep's WAR next to the paper's at the ratios both have, then the single removals and
  the entropy–drop correlation."""
  directory = pathlib.Path(directory)
  rows = read_csv(directory / "sweep.csv")
  ok = [r for r in rows if r["status"] == "ok"]
  depth = json.loads((directory / "plan.json").read_text())["depth"]
  videos = eval_videos(ok)
  ours: dict[str, dict[float, list[float]]] = {}
  for r in ok:
    ours.setdefault(line_name(r), {}).setdefault(round(int(r["k"]) / depth, 3), []).append(float(r["war"]))

  def cell(column: str, ratio: float) -> str:
    values = {name: _cell(ours.get(name, {}).get(ratio), videos, ok, name, round(ratio * depth))
              for name in PAPER_COLUMNS[column]}
    return next(iter(values.values())) if len(set(values.values())) == 1 else ", ".join(
        f"{name} {value}" for name, value in values.items())

  body = []
  for k, paper in PAPER_TABLE.items():
    ratio = round(k / PAPER_DEPTH, 3)
    body.append([f"{100 * ratio:.1f}"] + [f"{cell(c, ratio)} / {paper[c]:.2f}" for c in PAPER_COLUMNS])
  baseline = _cell(ours.get(BASELINE, {}).get(0.0), videos)
  text = ["# This sweep next to the paper (UCF101, VideoMAE-B, WAR %)", "",
          f"Each cell: ours / paper. Ours: mean ± std (n runs) [95 % interval, with the binomial variance of the "
          f"{videos or '?'} eval videos], {depth} blocks, unpruned {baseline}; paper: one run, 12 blocks, unpruned "
          f"{PAPER_UNPRUNED}. Ratios the sweep lacks show —. The paper's variance and std share a column.", "",
          markdown_table(["ratio %", *PAPER_COLUMNS], body)]
  corr_file = directory / "correlations.json"
  correlation = json.loads(corr_file.read_text())["criteria"] if corr_file.is_file() else {}
  in_paper = {name for names in PAPER_COLUMNS.values() for name in names} | {BASELINE, SINGLE, GREEDY}
  rankings_file = directory / RANKINGS_FILE
  rankings = json.loads(rankings_file.read_text())["rankings"] if rankings_file.is_file() else {}
  if others := [name for name in ours if name not in in_paper]:
    def header(name):
      data = (rankings.get(f"{name}/0") or {}).get("calibration")
      return f"{name} ({data['clips']} clips)" if data else name
    ratios = sorted({ratio for name in others for ratio in ours[name]})
    text += ["", "## Criteria the paper did not compare, and other frameworks' runs (clips: calibration data)", "",
             markdown_table(["ratio %", *map(header, others)],
                            [[f"{100 * ratio:.1f}"]
                             + [_cell(ours[name].get(ratio), videos, ok, name, round(ratio * depth)) for name in others]
                             for ratio in ratios])]
  singles = per_seed(ok, SINGLE)
  if singles:
    text += ["", "## Single-block removal, ours / paper", "",
             markdown_table([f"RB-{b}" for b in PAPER_SINGLE],
                            [[_cell(sum(singles.get(b, {}).values(), []), videos) + f" / {PAPER_SINGLE[b]:.2f}"
                              for b in PAPER_SINGLE]])]
  paper_corr = rank_correlations(PAPER_ENTROPY, [PAPER_UNPRUNED - PAPER_SINGLE[b] for b in PAPER_SINGLE])
  ours_corr = correlation.get("entropy") or {}
  text += ["", "## Entropy against the single-removal accuracy drop", "",
           markdown_table(["", "Spearman ρ", "Kendall τ"],
                          [["ours (95 % bootstrap interval)",
                            _with_interval(ours_corr.get("spearman"), ours_corr.get("spearman_interval")),
                            _with_interval(ours_corr.get("kendall"), ours_corr.get("kendall_interval"))],
                           ["paper (from SPEC §2 and §6)", _fmt(paper_corr["spearman"]), _fmt(paper_corr["kendall"])]])]
  return "\n".join(text) + "\n"
