"""The prepared GPU check runs on a lent machine with minutes to spare: a flag its scripts do not take would
waste the loan, so every call it makes is checked against the script's --help here."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_gpu_check_passes_only_flags_its_scripts_take():
  check = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
  calls = re.findall(r"python3 (benchmarks/\w+\.py)([^|\n]*)", check)
  assert len(calls) == 8, calls
  helps = {}
  for script, arguments in calls:
    if script not in helps:
      helps[script] = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                                     check=True).stdout
    for flag in re.findall(r"--\w+", arguments):
      assert re.search(rf"{flag}\b", helps[script]), f"gpu_check.sh passes {flag} to {script}, which does not take it"
  loop_flags = re.findall(r'for precision in "" (--\w+)', check)  # passed through $precision
  assert loop_flags == ["--tf32"] and "--tf32" in helps["benchmarks/convert.py"]
