"""The prepared GPU check runs on a lent machine with minutes to spare: a flag its scripts do not take, a part
that outlasts one command or a package the machine lacks would waste the loan, so each is checked here."""

import pathlib
import re
import subprocess
import sys

from benchmarks import gpu_packages

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHECK = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
COMMAND_LIMIT_S = 600  # one command on a lent machine
SET_UP_S = 50  # each part installs the carried wheels, imports everything and starts both frameworks on the GPU
KILL_AFTER_S = 10  # `timeout -k`: a row that ignores SIGTERM at its limit is killed this much later


def run(*args, **kwargs):
  return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, **kwargs)


def test_the_gpu_check_passes_only_flags_its_scripts_take():
  calls = re.findall(r"^  row \d+ (benchmarks/\w+\.py)(.*)$", CHECK, re.M)
  assert len(calls) == 11 and {ROOT / script for script, _ in calls} == set(gpu_packages.check_scripts()), calls
  helps = {}
  for script, arguments in calls:
    if script not in helps:
      helps[script] = run(script, "--help", check=True).stdout
    for flag in re.findall(r"--\w+", arguments):  # an option line of the help, not its description's prose
      assert re.search(rf"^\s+(-\w, )?{flag}\b", helps[script], re.M), f"gpu_check.sh passes {flag} to {script}"


def test_each_part_of_the_gpu_check_fits_one_command_with_time_to_set_up():
  parts = re.findall(r"^(\w+)\(\) \{\n(.*?)^\}", CHECK, re.M | re.S)
  limits = {name: [int(limit) + KILL_AFTER_S for limit in re.findall(r"^  row (\d+) ", body, re.M)]
            for name, body in parts}
  assert set(limits) == {"core", "pretrain", "more", "extra"}, limits
  for name, seconds in limits.items():
    assert 0 < sum(seconds) <= COMMAND_LIMIT_S - SET_UP_S, (name, seconds)


def test_the_gpu_check_carries_what_its_imports_need_and_never_the_images_own_builds():
  carry = run("benchmarks/gpu_packages.py", check=True).stdout.split()
  names = {line.split("==")[0] for line in carry}
  assert all(re.fullmatch(r"[a-z0-9-]+==[\w.+]+", line) for line in carry), carry
  assert {"grain", "ml-collections"} <= names  # the step's children import gardener_jax.train (grain), ml_collections
  assert not names & {"jax", "jaxlib", "torch", "transformers", "flax", "numpy"}, names


def test_the_gpu_checks_preflight_names_a_missing_package():
  hide_grain = ("import runpy, sys; sys.modules['grain'] = None; sys.argv = ['gpu_packages.py', '--check']; "
                "runpy.run_path('benchmarks/gpu_packages.py', run_name='__main__')")
  failed = run("-c", hide_grain)
  assert failed.returncode == 1
  assert "cannot import gardener_jax.train" in failed.stderr and "grain" in failed.stderr, failed.stderr
  assert run("benchmarks/gpu_packages.py", "--check").returncode == 0
