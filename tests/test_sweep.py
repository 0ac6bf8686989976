"""Sweeps: the plan, resume, run index, failure records, the oracle's top-k and greedy sets, the tables,
the correlations against scipy, the paper comparison, and one real sweep at toy size."""

import csv
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from scipy import stats

from gardener_jax import cli, compare, criteria, sweep, validate
from gardener_jax import stats as stats_lib
from gardener_jax.checkpoint import save_checkpoint
from gardener_jax.models import ModelConfig, init_params

DEPTH = 4
BLOCKS = tuple(range(1, DEPTH + 1))
# Fake finetuning: WAR = 90 − the cost of each removed block, and 30 more when blocks 1 and 2 both go,
# so the oracle (best singles, all at once) takes {1, 2} at k = 2 and the greedy oracle does not.
COST = {1: 1.0, 2: 2.0, 3: 5.0, 4: 9.0}


EVAL_VIDEOS = 80


def _fake_war(removed, seed: int) -> float:
  """The fake finetune's WAR: the blocks' costs, and with a training seed other than 0 a few points of
  seed noise that differ between removed sets."""
  war = 90.0 - sum(COST[b] for b in removed) - (30.0 if {1, 2} <= set(removed) else 0.0)
  return war + (((7 * sum(removed) + 13 * seed + len(removed)) % 5) - 2.0 if seed else 0.0)


def _fake_finetune(calls, fail=()):
  def train_fn(config, workdir, initial):
    removed = [int(b) for b in config.prune.blocks.split(",") if b]
    calls.append((workdir.name, tuple(sorted(removed)), config.train.epochs, config.seed))
    if tuple(sorted(removed)) in fail:
      raise RuntimeError(f"injected failure for {removed}")
    war = _fake_war(removed, config.seed)
    return {"metrics": {"war": war, "uar": war - 1, "top1": war, "top5": 100.0, "videos": EVAL_VIDEOS},
            "params": 1000 - 100 * len(removed), "gflops": 1.0 - 0.2 * len(removed)}
  return train_fn


def _config(checkpoint, **sweep_overrides) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      seed=0, init=dict(source=str(checkpoint)), prune=dict(criterion="entropy", discretize="hist:64", blocks=""),
      train=dict(epochs=0),
      sweep={**dict(criteria=("entropy", "random", "l1", "oracle"), levels=(1, 2, 3), random_seeds=(0, 1),
                    baseline=True, greedy=True, keep_checkpoints=False, epochs=(3, 3, 4, 5)), **sweep_overrides}))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  path = tmp_path_factory.mktemp("initial") / "checkpoint"
  model = ModelConfig(width=32, depth=DEPTH, num_heads=2, mlp_dim=64, num_classes=3, num_frames=4, image_size=32)
  save_checkpoint(path, init_params(model, 3), model)
  return path


def test_the_plan_is_fixed_by_the_config(checkpoint):
  runs = sweep.plan(_config(checkpoint).sweep, BLOCKS)
  names = [r.name for r in runs]
  assert names[:5] == ["unpruned", "single_b1", "single_b2", "single_b3", "single_b4"]
  assert names[5:8] == ["entropy_k1", "entropy_k2", "entropy_k3"]
  assert names[8:14] == ["random_k1_s0", "random_k1_s1", "random_k2_s0", "random_k2_s1", "random_k3_s0", "random_k3_s1"]
  assert names[17:20] == ["oracle_k1", "oracle_k2", "oracle_k3"]
  assert names[20:] == ["greedy_k2_c0", "greedy_k2_c1", "greedy_k2_c2", "greedy_k3_c0", "greedy_k3_c1"]
  with pytest.raises(ValueError, match=r"sweep.levels \[4\]"):
    sweep.plan(_config(checkpoint, levels=(1, 4)).sweep, BLOCKS)
  with pytest.raises(ValueError, match="unknown criterion 'entorpy'"):
    sweep.plan(_config(checkpoint, criteria=("entorpy",)).sweep, BLOCKS)
  with pytest.raises(ValueError, match="sweep.epochs has 2 entries"):
    sweep.plan(_config(checkpoint, epochs=(1, 2)).sweep, BLOCKS)
  with pytest.raises(ValueError, match=r"sweep.criteria \['entropy', 'l1', 'entropy'\]: each value once"):
    sweep.plan(_config(checkpoint, criteria=("entropy", "l1", "entropy")).sweep, BLOCKS)
  with pytest.raises(ValueError, match=r"sweep.random_seeds \[1, 1\]: each value once"):
    sweep.plan(_config(checkpoint, random_seeds=(1, 1)).sweep, BLOCKS)
  pruned = [r.name for r in sweep.plan(_config(checkpoint).sweep, (1, 2, 4, 6))]  # a pruned initial model's blocks
  assert pruned[1:5] == ["single_b1", "single_b2", "single_b4", "single_b6"]


def test_a_sweep_records_failures_reuses_equal_trainings_and_resumes(checkpoint, tmp_path):
  calls = []
  job = sweep.prepare(_config(checkpoint), tmp_path, _fake_finetune(calls, fail={(3,)}))
  results = {r["name"]: r for r in sweep.run_all(job)}
  assert len(results) == len(job.runs) == 25

  # The failure is recorded, and what depends on it waits: the oracle needs every single removal.
  assert results["single_b3"]["status"] == "failed" and "injected failure for [3]" in results["single_b3"]["error"]
  assert results["oracle_k1"]["status"] == "failed" and "single_b3" in results["oracle_k1"]["error"]
  assert results["greedy_k2_c0"]["status"] == "failed"
  assert results["entropy_k3"]["status"] == "ok"  # the others went on

  # Equal removed sets with equal schedules train once.
  trained = [c for c in calls if c[1] != (3,)]
  assert len(trained) == len({c[1] for c in trained})
  k1 = [r for r in results.values() if r["k"] == 1 and r["status"] == "ok" and r["criterion"] != "oracle_single"]
  assert k1 and all(r["reused_from"].startswith("single_b") for r in k1)
  assert all(r["epochs"] == (3, 3, 4, 5)[r["k"]] for r in results.values() if "epochs" in r)

  # Relaunch: finished runs are skipped, failed ones retried (the failure is gone now).
  calls.clear()
  job = sweep.open_sweep(_config(checkpoint), tmp_path, _fake_finetune(calls))
  results = {r["name"]: r for r in sweep.run_all(job)}
  assert all(r["status"] == "ok" for r in results.values()), [r.get("error") for r in results.values()]
  retried = {c[0] for c in calls}
  assert "single_b3" in retried and "entropy_k3" not in retried and "unpruned" not in retried

  # The oracle: the k blocks whose single removal hurt least, all at once; greedy avoids the bad pair.
  assert [results[f"oracle_k{k}"]["removed_blocks"] for k in (1, 2, 3)] == [[1], [1, 2], [1, 2, 3]]
  assert results["oracle_k2"]["war"] == 90 - 1 - 2 - 30
  greedy = compare.level_table(list(results.values()))["oracle_greedy"]
  assert greedy == {2: [90 - 1 - 5], 3: [90 - 1 - 5 - 9]}  # {1, 3}, then {1, 3, 4}: 1 and 2 never together
  assert json.loads((tmp_path / "oracle.json").read_text())["accuracy"] == {"1": 89.0, "2": 88.0, "3": 85.0,
                                                                            "4": 81.0}
  # The entropy runs remove what `gardener prune` would.
  entropy = criteria.rank(job.params, job.model_config, "entropy", "hist:64")
  assert results["entropy_k2"]["removal_order"] == entropy.removal_order[:2]


def test_run_index_runs_one_run_alone(checkpoint, tmp_path):
  config = _config(checkpoint)
  calls = []
  sweep.prepare(config, tmp_path, _fake_finetune(calls))
  plan = json.loads((tmp_path / "plan.json").read_text())
  assert [r["name"] for r in plan["runs"]] == [r.name for r in sweep.plan(config.sweep, BLOCKS)]
  saved = json.loads((tmp_path / "rankings.json").read_text())
  assert sorted(saved["rankings"]) == ["entropy/0", "l1/0", "random/0", "random/1"]  # scored once, by --prepare
  job = sweep.open_sweep(config, tmp_path, _fake_finetune(calls))
  index = [r.name for r in job.runs].index("l1_k2")
  assert job.execute(job.runs[index])["status"] == "ok"
  assert [c[0] for c in calls] == ["l1_k2"]
  assert job._params is None  # a task reads the saved ranking, not the weights
  assert job.result(job.runs[index])["removal_order"] == saved["rankings"]["l1/0"]["removal_order"][:2]
  (tmp_path / "runs" / "l1_k2" / "pruned").mkdir()  # as a killed attempt would leave it

  with config.unlocked():
    config.prune.discretize = "hist:32"  # other settings: the saved rankings and results no longer apply
  with pytest.raises(ValueError, match="not the one --prepare planned"):
    sweep.open_sweep(config, tmp_path)  # a task of a job array must not run another plan than its index names
  job = sweep.prepare(config, tmp_path, _fake_finetune(calls))
  assert job.ranking("entropy").discretization == "hist:32"
  assert job.result(job.runs[index]) is None and job.results() == []  # made under the old settings: not reported
  calls.clear()
  assert job.execute(job.runs[index])["status"] == "ok" and [c[0] for c in calls] == ["l1_k2"]  # trained again
  assert not (tmp_path / "runs" / "l1_k2" / "pruned").exists()  # the old attempt's files were removed first
  assert sorted(p.parent.name for p in (tmp_path / "runs").glob("*/result.json")) == ["l1_k2"]
  oracle = job.execute(job.runs[[r.name for r in job.runs].index("oracle_k2")])
  assert oracle["status"] == "failed" and "the oracle needs every single-block run" in oracle["error"]
  with pytest.raises(FileNotFoundError, match="plan.json"):
    sweep.open_sweep(config, tmp_path / "elsewhere")


def test_tables_correlations_and_the_paper_comparison(checkpoint, tmp_path):
  job = sweep.prepare(_config(checkpoint, greedy=False), tmp_path, _fake_finetune([]))
  sweep.run_all(job)
  compare.write(job)

  with (tmp_path / "sweep.csv").open() as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == len(job.runs) and list(rows[0]) == compare.CSV_COLUMNS
  row = next(r for r in rows if r["run"] == "oracle_k2")
  assert (row["removed_blocks"], float(row["war"]), float(row["ratio"])) == ("1 2", 57.0, 0.5)

  table = (tmp_path / "sweep.md").read_text()
  assert "| ratio % | k | oracle | entropy | random | l1 |" in table
  random_k2 = [float(r["war"]) for r in rows if r["criterion"] == "random" and r["k"] == "2"]
  assert f"| {_expected_cell(random_k2)} |" in table
  assert (tmp_path / "sweep.png").stat().st_size > 10_000

  corr = json.loads((tmp_path / "correlations.json").read_text())
  drop = [90.0 - (90.0 - COST[b]) for b in range(1, DEPTH + 1)]  # unpruned WAR − single-removal WAR
  entropy = criteria.rank(job.params, job.model_config, "entropy", "hist:64").scores
  assert corr["criteria"]["entropy"]["spearman"] == pytest.approx(stats.spearmanr(entropy, drop).statistic)
  assert corr["criteria"]["entropy"]["kendall"] == pytest.approx(stats.kendalltau(entropy, drop).statistic)
  kurtosis_free = corr["criteria"]["l1"]
  l1 = criteria.rank(job.params, job.model_config, "l1").removal_order
  assert kurtosis_free["overlap_with_oracle"] == {str(k): len(set(l1[:k]) & set([1, 2, 3][:k])) / k for k in (1, 2, 3)}
  assert set(corr["criteria"]) == {"entropy", "l1", "random (seed 0)", "random (seed 1)"}

  assert cli.main(["compare-paper", str(tmp_path)]) == 0
  text = (tmp_path / "compare_paper.md").read_text()
  entropy_k1 = next(float(r["war"]) for r in rows if r["run"] == "entropy_k1")
  assert "| 25.0 | " in text and f"{_expected_cell([entropy_k1])} / 85.54" in text  # 1 of 4 ↔ the paper's 3 of 12
  assert "| paper (from SPEC §2 and §6) | 0.755 | 0.667 |" in text

  # A PyTorch run's rows added to sweep.csv make a line of their own beside ours.
  torch_rows = [{**r, "run": f"torch_{r['run']}", "framework": "torch", "war": "12.5"} for r in rows
                if r["criterion"] in ("entropy", "unpruned")]
  with (tmp_path / "sweep.csv").open("a", newline="") as f:
    csv.DictWriter(f, compare.CSV_COLUMNS).writerows(torch_rows)
  text = compare.compare_paper(tmp_path)
  assert "| ratio % | unpruned (torch) | entropy (torch) |" in text
  torch_cell = _expected_cell([12.5])
  assert f"| 0.0 | {torch_cell} | — |" in text and f"| 25.0 | — | {torch_cell} |" in text
  assert f"{_expected_cell([entropy_k1])} / 85.54" in text and f"unpruned {_expected_cell([90.0])}" in text


def _expected_cell(values, videos=EVAL_VIDEOS) -> str:
  """The cell sweep.md should show, computed here with scipy: mean ± std (n) [95 % interval], the interval
  mean ± q · sqrt(s²/n + p(1 − p)/videos) in %, q Student's t at the Welch–Satterthwaite degrees of
  freedom (the seeds' part estimated with n − 1, the binomial part known)."""
  n, mean = len(values), float(np.mean(values))
  std = float(np.std(values, ddof=1)) if n > 1 else 0.0
  p = mean / 100
  seeds, binomial = (std / 100) ** 2 / n, p * (1 - p) / videos
  q = stats.t.ppf(0.975, (seeds + binomial) ** 2 / (seeds ** 2 / (n - 1))) if seeds else stats.norm.ppf(0.975)
  half = 100 * q * np.sqrt(seeds + binomial)
  return f"{mean:.2f} ± {std:.2f} ({n}) [{max(0, mean - half):.1f}, {min(100, mean + half):.1f}]"


def _expected_crossed_cell(wars: np.ndarray, videos=EVAL_VIDEOS) -> str:
  """Random's cell (seeds × draws): the two-way random-effects variance of the mean, written out here."""
  s_count, d_count = wars.shape
  x = wars / 100
  residual = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean()
  ms = {"seed": d_count * np.var(x.mean(axis=1), ddof=1), "draw": s_count * np.var(x.mean(axis=0), ddof=1),
        "rest": np.sum(residual ** 2) / ((s_count - 1) * (d_count - 1))}
  dfs = {"seed": s_count - 1, "draw": d_count - 1, "rest": (s_count - 1) * (d_count - 1)}
  # S·D·Var(mean) = D·σ²_seed + S·σ²_draw + σ²_rest, each component's estimate taken as 0 where negative
  var_seed, var_draw = max(0.0, (ms["seed"] - ms["rest"]) / d_count), max(0.0, (ms["draw"] - ms["rest"]) / s_count)
  combined = d_count * var_seed + s_count * var_draw + ms["rest"]
  coef = {"seed": float(var_seed > 0), "draw": float(var_draw > 0)}
  coef["rest"] = 1 - coef["seed"] - coef["draw"]  # combined as a sum of mean squares, for Satterthwaite's df
  df = combined ** 2 / sum((coef[key] * ms[key]) ** 2 / dfs[key] for key in ms if coef[key])
  mean = float(wars.mean())
  runs, binomial = combined / wars.size, (mean / 100) * (1 - mean / 100) / videos
  half = 100 * stats.t.ppf(0.975, (runs + binomial) ** 2 / (runs ** 2 / df)) * np.sqrt(runs + binomial)
  return (f"{mean:.2f} ± {np.std(wars, ddof=1):.2f} ({wars.size}) "
          f"[{max(0, mean - half):.1f}, {min(100, mean + half):.1f}]")


@pytest.mark.parametrize("case", ["both components", "seeds only", "neither"])
def test_random_cells_drop_each_negative_variance_component_alone(case):
  seed_effect = {"both components": [0, 6, 12], "seeds only": [0, 6, 12], "neither": [0, 0, 0]}[case]
  draw_effect = {"both components": [0, 5], "seeds only": [0, 0], "neither": [0, 0]}[case]
  noise = np.array([[0.5, -0.5], [-1.0, 1.0], [0.25, -0.25]])
  wars = 50 + np.add.outer(seed_effect, draw_effect) + noise
  assert stats_lib.format_cell(stats_lib.crossed_cell(wars, EVAL_VIDEOS)) == _expected_crossed_cell(wars)


def test_a_seeded_sweep_trains_every_run_per_seed_and_reports_intervals_and_tests(checkpoint, tmp_path):
  seeds = (0, 1, 2)
  config = _config(checkpoint, criteria=("entropy", "random", "oracle"), levels=(1, 2), seeds=seeds, greedy=False)
  calls = []
  job = sweep.prepare(config, tmp_path, _fake_finetune(calls))
  names = [r.name for r in job.runs]
  assert names[:6] == ["unpruned_t0", "unpruned_t1", "unpruned_t2", "single_b1_t0", "single_b1_t1", "single_b1_t2"]
  assert len(names) == 3 * len(sweep.plan(_config(checkpoint, criteria=("entropy", "random", "oracle"),
                                                  levels=(1, 2), greedy=False).sweep, BLOCKS))

  # --run_index over the seeded plan: one run, one training, with its seed.
  alone = sweep.open_sweep(config, tmp_path, _fake_finetune(calls))
  assert alone.execute(alone.runs[names.index("single_b3_t1")])["seed"] == 1
  assert calls == [("single_b3_t1", (3,), 3, 1)]

  results = {r["name"]: r for r in sweep.run_all(sweep.open_sweep(config, tmp_path, _fake_finetune(calls)))}
  assert all(r["status"] == "ok" for r in results.values())
  trained = [(c[1], c[3]) for c in calls]
  assert len(trained) == len(set(trained)) and {s for _, s in trained} == set(seeds)  # equal trainings reuse per seed
  assert {r["seed"] for r in results.values()} == set(seeds)
  assert results["entropy_k1_t2"]["reused_from"].startswith("single_b") and results["entropy_k1_t2"]["seed"] == 2

  # The oracle chooses by the single removals' mean over the seeds.
  mean_single = {b: np.mean([_fake_war([b], t) for t in seeds]) for b in range(1, DEPTH + 1)}
  assert json.loads((tmp_path / "oracle.json").read_text())["accuracy"] == {
      str(b): pytest.approx(a) for b, a in mean_single.items()}
  top2 = sorted(sorted(mean_single, key=lambda b: -mean_single[b])[:2])
  assert all(results[f"oracle_k2_t{t}"]["removed_blocks"] == top2 for t in seeds)

  calls.clear()  # a relaunch trains nothing
  sweep.run_all(sweep.open_sweep(config, tmp_path, _fake_finetune(calls)))
  assert calls == []

  # One seed names no run after it: a relaunch with another seed retrains instead of taking the old results.
  single = _config(checkpoint, criteria=("entropy",), levels=(1,), greedy=False)
  first = sweep.prepare(single, tmp_path / "single", _fake_finetune(calls))
  assert first.execute(first.runs[0])["seed"] == 0
  with single.unlocked():
    single.seed = 1
  again = sweep.prepare(single, tmp_path / "single", _fake_finetune(calls))
  assert again.runs[0].name == "unpruned" and again.execute(again.runs[0])["seed"] == 1
  assert [c[3] for c in calls] == [0, 1]
  calls.clear()

  compare.write(job)
  rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
  assert {r["seed"] for r in rows} == {"0", "1", "2"} and {r["videos"] for r in rows} == {str(EVAL_VIDEOS)}
  table = (tmp_path / "sweep.md").read_text()
  entropy_k2 = [results[f"entropy_k2_t{t}"]["war"] for t in seeds]
  random_k2 = {t: [results[f"random_k2_s{d}_t{t}"]["war"] for d in (0, 1)] for t in seeds}
  assert f"| {_expected_cell(entropy_k2)} |" in table
  assert f"| {_expected_crossed_cell(np.asarray([random_k2[t] for t in seeds]))} |" in table
  assert f"unpruned: {_expected_cell([_fake_war([], t) for t in seeds])}" in table

  # Paired against random: the same p-value as scipy's paired t-test over the seeds.
  comparisons = json.loads((tmp_path / "against_random.json").read_text())["comparisons"]
  tests = {(c["criterion"], c["k"]): c for c in comparisons}
  expected = stats.ttest_rel(entropy_k2, [np.mean(random_k2[t]) for t in seeds])
  assert tests["entropy", 2]["p"] == pytest.approx(expected.pvalue)
  assert tests["entropy", 2]["mean_difference"] == pytest.approx(np.mean(entropy_k2) - np.mean(
      [np.mean(random_k2[t]) for t in seeds]))
  assert tests["oracle", 2]["n"] == 3 and "paired t-tests over 3 training seeds" in table

  # Correlations on the seed-mean drop, with bootstrap intervals for every criterion.
  corr = json.loads((tmp_path / "correlations.json").read_text())
  drop = [np.mean([_fake_war([], t) - _fake_war([b], t) for t in seeds]) for b in range(1, DEPTH + 1)]
  entropy = criteria.rank(job.params, job.model_config, "entropy", "hist:64").scores
  assert corr["criteria"]["entropy"]["spearman"] == pytest.approx(stats.spearmanr(entropy, drop).statistic)
  for c in corr["criteria"].values():
    for key in ("spearman_interval", "kendall_interval"):
      assert -1 <= c[key][0] <= c[key][1] <= 1


def test_rank_correlations_match_scipy_and_the_spec():
  entropy = compare.PAPER_ENTROPY
  drop = [91.78 - a for a in compare.PAPER_SINGLE.values()]
  c = compare.rank_correlations(entropy, drop)
  assert c["spearman"] == pytest.approx(0.7552447552, abs=1e-9) and c["kendall"] == pytest.approx(2 / 3, abs=1e-12)
  assert c["spearman_p"] == pytest.approx(stats.spearmanr(entropy, drop).pvalue)
  assert compare.rank_correlations([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["spearman"] is None


def test_compare_paper_names_a_missing_sweep(tmp_path, capsys):
  assert cli.main(["compare-paper", str(tmp_path)]) == 1
  assert "sweep.csv not found" in capsys.readouterr().err


def test_a_real_sweep_at_toy_size_from_the_command_line(tmp_path):
  """configs/sweep_demo.py shrunk: pretrain, score, prune, finetune and collect, through `gardener sweep`."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  overrides = [
      f"--config.data.data_dir={tmp_path / 'data'}", "--config.data.config=tiny", "--config.data.image_size=32",
      "--config.data.num_frames=4", "--config.data.num_clips=1", "--config.data.classes=('square_right','square_left')",
      "--config.pretrain.classes=('square_down','square_up')", "--config.pretrain.train.epochs=1",
      "--config.pretrain.train.batch_size=4", "--config.train.batch_size=4", "--config.model.width=32",
      "--config.model.depth=3", "--config.model.mlp_dim=64",
      "--config.sweep.criteria=('entropy','random','oracle','block_influence','angular_distance','alpha')",
      "--config.prune.calibration_clips=3",
      "--config.sweep.levels=(1,2)", "--config.sweep.random_seeds=(0,1)", "--config.sweep.epochs=(1,1,1)",
      "--config.sweep.seeds=(0,)"]
  command = [sys.executable, "-m", "gardener_jax", "sweep", "--config", os.path.join(root, "configs", "sweep_demo.py"),
             "--workdir", str(tmp_path / "sweep"), *overrides]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]

  rows = list(csv.DictReader((tmp_path / "sweep" / "sweep.csv").open()))
  assert [r["run"] for r in rows] == ["unpruned", "single_b1", "single_b2", "single_b3", "entropy_k1", "entropy_k2",
                                      "random_k1_s0", "random_k1_s1", "random_k2_s0", "random_k2_s1",
                                      "block_influence_k1", "block_influence_k2", "angular_distance_k1",
                                      "angular_distance_k2", "alpha_k1", "alpha_k2", "oracle_k1", "oracle_k2"]
  assert all(r["status"] == "ok" for r in rows) and all(0 <= float(r["war"]) <= 100 for r in rows)
  assert {r["framework"] for r in rows} == {"flax"}
  k2 = next(r for r in rows if r["run"] == "entropy_k2")
  assert len(k2["removed_blocks"].split()) == 2 and float(k2["gflops"]) < float(rows[0]["gflops"])
  assert int(k2["params"]) < int(next(r for r in rows if r["run"] == "entropy_k1")["params"]) < int(rows[0]["params"])
  for name in ("sweep.md", "sweep.png", "correlations.json", "oracle.json", "plan.json"):
    assert (tmp_path / "sweep" / name).is_file(), name
  assert not (tmp_path / "sweep" / "runs" / "entropy_k2" / "final").exists()  # keep_checkpoints=False
  span = next(r for r in rows if r["run"] == "angular_distance_k2")["removed_blocks"].split()
  assert int(span[1]) == int(span[0]) + 1  # one contiguous span
  assert ("Criteria that read data: block_influence, angular_distance, on 3 clips of synthetic_motion/tiny training "
          "split (seed 0)") in (tmp_path / "sweep" / "sweep.md").read_text()
  correlated = json.loads((tmp_path / "sweep" / "correlations.json").read_text())["criteria"]
  assert correlated["block_influence"]["calibration"]["clips"] == 3 and correlated["alpha"]["calibration"] is None
  assert cli.main(["compare-paper", str(tmp_path / "sweep")]) == 0
  assert "| ratio % | block_influence (3 clips) | angular_distance (3 clips) | alpha |" in (
      tmp_path / "sweep" / "compare_paper.md").read_text()

  reused = sum(bool(r["reused_from"]) for r in rows)
  dry = subprocess.run(command + ["--dry_run"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
  assert f"{len(rows) - reused} trainings, {reused} runs reuse an equal one" in dry.stdout, dry.stdout + dry.stderr
  again = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0 and "removing blocks" not in again.stderr  # every run is skipped


@pytest.mark.parametrize("name, runs, levels", [
    ("sweep_demo", 3 * (1 + 12 + (1 + 1 + 2) * 3 + 3), {3, 5, 9}),  # 3 seeds; entropy, l1, random × 2 draws
    ("sweep_ucf101_vitb", 1 + 12 + 12 * 6 + 6, {1, 3, 5, 7, 9, 11})])
def test_the_sweep_configs_plan(name, runs, levels):
  import importlib

  config = importlib.import_module(f"configs.{name}").get_config()
  plan = sweep.plan(config.sweep, range(1, 13), sweep.training_seeds(config))
  assert len(plan) == runs
  assert {r.k for r in plan if r.criterion == "entropy"} == levels
  assert sum(r.criterion == "oracle_single" for r in plan) == 12 * len(config.sweep.seeds)
  assert not [p for p in validate.sweep_problems(config) if p.field.startswith("sweep.")]


def test_interval_and_test_pieces_against_scipy():
  from gardener_jax import stats as sweep_stats

  one = sweep_stats.cell([50.0], videos=100)  # one run: the binomial (Wald) interval of 50 of 100 videos
  assert (one["low"], one["high"]) == pytest.approx((50 - 100 * 1.959964 * 0.05, 50 + 100 * 1.959964 * 0.05))
  assert sweep_stats.cell([70.0, 70.0], videos=None)["high"] == 70.0  # no spread, no eval size: no width
  only_seeds = sweep_stats.cell([60.0, 64.0, 68.0], videos=None)  # no eval size: the t interval over seeds
  assert only_seeds["high"] == pytest.approx(64 + stats.t.ppf(0.975, 2) * 4 / np.sqrt(3))
  paired = sweep_stats.paired_against_random({0: 60.0, 1: 55.0, 2: 58.0}, {0: [50.0, 52.0], 1: [54.0], 2: [49.0, 51]})
  assert paired["p"] == pytest.approx(stats.ttest_1samp([9.0, 1.0, 8.0], 0.0).pvalue)
  assert sweep_stats.paired_against_random({0: 60.0}, {0: [50.0]})["p"] is None  # one seed: no test
  # Importance that orders the blocks as every seed's drop does: every resample agrees, the interval is [1, 1].
  drops = np.asarray([[1.0, 2.0], [3.0, 5.0], [6.0, 7.0], [9.0, 8.5]])
  boot = sweep_stats.bootstrap_correlations([0.1, 0.2, 0.3, 0.4], drops, samples=200)
  assert boot["spearman_interval"] == [1.0, 1.0] and boot["kendall_interval"] == [1.0, 1.0]
  assert boot["used"] <= 200  # resamples of one repeated block have no correlation and are left out
