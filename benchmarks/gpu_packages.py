"""What the prepared GPU check (gpu_check.sh) needs on a lent machine that the machine's image lacks.

  python benchmarks/gpu_packages.py          # here: name==version of each distribution to carry as a wheel
  python benchmarks/gpu_packages.py --check  # there: import what the check's scripts import; name what fails

The modules are read from the scripts gpu_check.sh runs, their child processes' code included. The carry list
starts from the distributions those scripts and this project's modules import directly, keeps those the image
lacks and adds what they require that it lacks too, at this environment's (tested) versions. jax, jaxlib, torch
and transformers are the image's own CUDA builds and are never carried.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The Python packages of the lent machines' image ('cuda'), as /work/.library/device/KINDS.md read them on
# 2026-11-17; its Python is 3.12.
IMAGE = frozenset("""
    absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
    certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
    cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
    flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
    huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
    jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
    linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
    mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
    numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
    nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
    nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx
    onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
    orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
    propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
    pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning
    pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
    sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
    tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers
    toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
    triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash
    yarl zipp
""".split())
OWN = ("benchmarks", "gardener_jax", "tools")
SHOWN = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "torch", "transformers", "grain", "numpy")


def normalized(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


def check_scripts() -> list[pathlib.Path]:
  """The benchmark scripts gpu_check.sh runs (its `row` lines)."""
  check = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
  return sorted({ROOT / script for script in re.findall(r"^  row \d+ (benchmarks/\w+\.py)", check, re.M)})


def imported_modules(source: pathlib.Path, indented: bool = True) -> set[str]:
  """Every module an import statement in `source` names, in its own code or in the child code it holds
  (`indented`: in functions too); `from package import name` also gives package.name, in case it is a
  submodule."""
  text = source.read_text()
  indent = r"\s*" if indented else ""
  modules = set()
  for package, names in re.findall(rf"^{indent}from ([\w.]+) import \(?([\w, ]+)", text, re.M):
    modules.add(package)
    modules.update(f"{package}.{name.strip()}" for name in names.split(",") if name.strip())
  for names in re.findall(rf"^{indent}import ([\w., ]+?)\s*(?:#.*)?$", text, re.M):
    modules.update(name.split(" as ")[0].strip() for name in names.split(","))
  return {module for module in modules if not module.startswith("__future__")}


def import_all(modules: set[str]) -> dict[str, str]:
  """Imports each module; returns {module: why it failed}."""
  failed = {}
  for module in sorted(modules):
    try:
      importlib.import_module(module)
    except ImportError as error:
      is_attribute = (isinstance(error, ModuleNotFoundError) and error.name == module
                      and module.rpartition(".")[0] in modules)  # `from package import name`, not a submodule
      if not is_attribute:
        failed[module] = str(error)
  return failed


def version_or_missing(distribution: str) -> str:
  try:
    return importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    return "missing"


def requirements(distribution: str) -> set[str]:
  """The distributions `distribution` requires, without extras."""
  from packaging.requirements import Requirement  # here only: the lent image's list does not name packaging

  listed = map(Requirement, importlib.metadata.requires(distribution) or ())
  return {normalized(requirement.name) for requirement in listed
          if requirement.marker is None or requirement.marker.evaluate({"extra": ""})}


def to_carry(modules: set[str]) -> list[str]:
  """name==version of what the image lacks among the distributions of `modules` and of this project's loaded
  modules' module-level imports, with what those require that the image lacks."""
  own = [imported_modules(pathlib.Path(module.__file__), indented=False) for name, module in list(sys.modules.items())
         if name.split(".")[0] in OWN and getattr(module, "__file__", None)]
  tops = {name.split(".")[0] for name in modules.union(*own)}
  providers = importlib.metadata.packages_distributions()
  todo = [normalized(dist) for top in tops - set(OWN) for dist in providers.get(top, ())]
  carry = set()
  while todo:
    name = todo.pop()
    if name not in IMAGE and name not in carry:
      carry.add(name)
      todo.extend(requirements(name))
  return sorted(f"{name}=={importlib.metadata.version(name)}" for name in carry)


def preflight(failed: dict[str, str], backend_wanted: str) -> bool:
  """Prints the versions, both frameworks' devices and what failed to import; True if nothing failed and, where
  `backend_wanted` is gpu, JAX's backend is the GPU and PyTorch sees CUDA."""
  print("versions:", {name: version_or_missing(name) for name in SHOWN})
  jax = None if "jax" in failed else importlib.import_module("jax")
  torch = None if "torch" in failed else importlib.import_module("torch")
  backend, cuda = jax and jax.default_backend(), torch and torch.cuda.is_available()
  print("JAX backend:", backend, "devices:", jax and jax.devices(), "PyTorch CUDA:", cuda)
  for module, why in failed.items():
    print(f"gpu_packages: cannot import {module} ({why}); carry its wheel (gpu_check.sh wheels)", file=sys.stderr)
  wrong_backend = bool(backend_wanted) and (backend != backend_wanted or (backend_wanted == "gpu" and not cuda))
  if wrong_backend:
    print(f"gpu_packages: JAX's backend is {backend} and PyTorch's CUDA {cuda}; wanted {backend_wanted} on both",
          file=sys.stderr)
  return not failed and not wrong_backend


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--check", action="store_true", help="report the modules that fail to import, exit 1 if any")
  parser.add_argument("--backend", default="", help="with --check: exit 1 unless JAX's default backend is this one "
                      "(gpu: a CUDA plugin that failed to load leaves JAX on the CPU, where every row would time out)")
  args = parser.parse_args()
  modules = set().union(*map(imported_modules, check_scripts()))
  failed = import_all(modules)
  if args.check:
    sys.exit(0 if preflight(failed, args.backend) else 1)
  if failed:
    sys.exit(f"gpu_packages: these imports fail here, so the carry list would be incomplete: {failed}")
  print("\n".join(to_carry(modules)))


if __name__ == "__main__":
  main()
