"""What the prepared GPU check (gpu_check.sh) needs on a lent machine that the machine's image lacks.

  python benchmarks/gpu_packages.py [--python 3.12]  # here: name==version of each distribution to carry
  python benchmarks/gpu_packages.py --check [--backend gpu]  # there: import what the scripts import

The modules are read from the scripts gpu_check.sh runs: their own imports, those in the child processes' code
they hold, and those inside functions of this project's modules they reach. The carry list starts from the
distributions those modules and this project's modules import directly, keeps those the image lacks and adds
what they require (with the extras they ask for) that it lacks too, at this environment's tested versions.
jax, jaxlib, torch and transformers are the image's own CUDA builds and are never carried.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.metadata
import pathlib
import re
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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


def check_scripts() -> list[pathlib.Path]:
  """The benchmark scripts gpu_check.sh runs (its `row` lines)."""
  check = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
  return sorted({ROOT / script for script in re.findall(r"^  row \d+ (benchmarks/\w+\.py)", check, re.M)})


def statement_imports(nodes) -> set[str]:
  """The modules the import statements among `nodes` name; `from package import name` also gives package.name,
  in case it is a submodule."""
  modules = set()
  for node in nodes:
    if isinstance(node, ast.Import):
      modules.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level and node.module != "__future__":
      modules.add(node.module)
      modules.update(f"{node.module}.{alias.name}" for alias in node.names)
  return modules


def child_code_imports(tree: ast.Module) -> set[str]:
  """The imports in the child-process code that the string constants of `tree` hold, line by line: the code
  has format fields, so it does not parse whole, and prose that starts with "import" does not parse at all."""
  modules = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
      for line in node.value.splitlines():
        if line.lstrip().startswith(("import ", "from ")):
          try:
            modules |= statement_imports(ast.parse(line.strip()).body)
          except SyntaxError:
            pass
  return modules


def imported_modules(source: pathlib.Path, nested: bool = True) -> set[str]:
  """The modules `source` imports: at module level, or (`nested`) anywhere, its child-process code included."""
  tree = ast.parse(source.read_text())
  if not nested:
    return statement_imports(tree.body)
  return statement_imports(ast.walk(tree)) | child_code_imports(tree)


def own_source(module: str) -> pathlib.Path | None:
  path = ROOT.joinpath(*module.split("."))
  return next((file for file in (path.with_suffix(".py"), path / "__init__.py") if file.is_file()), None)


def check_modules() -> set[str]:
  """Every module the check's scripts import, with what the benchmark helpers they import import inside
  functions (`machine()` imports gardener_jax.frameworks only when a table prints)."""
  scripts = check_scripts()
  modules = set().union(*map(imported_modules, scripts))
  helpers = {own_source(module) for module in modules if module.startswith("benchmarks.")} - {None, *scripts}
  return modules.union(*map(imported_modules, helpers))


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


def requirements(distribution: str, extras: frozenset[str], python: str, base: bool) -> set[tuple[str, frozenset]]:
  """(name, extras) of what `distribution` requires on `python`: its own requirements if `base`, and those of
  `extras`."""
  environment = dict(python_version=python, python_full_version=f"{python}.0")

  def wanted(requirement: Requirement) -> bool:
    if requirement.marker is None:
      return base
    if "extra" not in str(requirement.marker):
      return base and requirement.marker.evaluate(dict(environment, extra=""))
    return any(requirement.marker.evaluate(dict(environment, extra=extra)) for extra in extras)

  listed = map(Requirement, importlib.metadata.requires(distribution) or ())
  return {(canonicalize_name(requirement.name), frozenset(requirement.extras)) for requirement in listed
          if wanted(requirement)}


def to_carry(modules: set[str], python: str) -> list[str]:
  """name==version of what the image lacks among the distributions of `modules` and of this project's loaded
  modules' module-level imports, with what those require (and the extras they ask for) that it lacks."""
  own = [imported_modules(pathlib.Path(module.__file__), nested=False) for name, module in list(sys.modules.items())
         if name.split(".")[0] in OWN and getattr(module, "__file__", None)]
  tops = {name.split(".")[0] for name in modules.union(*own)} - set(OWN)
  providers = importlib.metadata.packages_distributions()
  todo = [(canonicalize_name(dist), frozenset()) for top in tops for dist in providers.get(top, ())]
  carry, followed = set(), set()
  while todo:
    name, extras = todo.pop()
    if (name, extras) in followed:
      continue
    followed.add((name, extras))
    in_image = name in IMAGE  # the image's own requirements are its business; extras asked of it are ours
    if not in_image:
      carry.add(name)
    todo.extend(requirements(name, extras, python, base=not in_image))
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
  parser.add_argument("--python", default="3.12", help="the lent machine's Python, for requirement markers")
  parser.add_argument("--backend", default="", help="with --check: exit 1 unless JAX's default backend is this one "
                      "(gpu: a CUDA plugin that failed to load leaves JAX on the CPU, where every row would time out)")
  args = parser.parse_args()
  modules = check_modules()
  failed = import_all(modules)
  if args.check:
    sys.exit(0 if preflight(failed, args.backend) else 1)
  if failed:
    sys.exit(f"gpu_packages: these imports fail here, so the carry list would be incomplete: {failed}")
  print("\n".join(to_carry(modules, args.python)))


if __name__ == "__main__":
  main()
