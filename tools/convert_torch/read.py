"""Reading PyTorch VideoMAE checkpoints into flat {key: numpy array} dicts, without changing a bit.

Supported: original-release `.pth` files (weights under `model`, `module`, `state_dict` or bare, an
`argparse.Namespace` under `args`), HuggingFace directories (`config.json` + `model.safetensors`,
sharded safetensors or `pytorch_model.bin`) and single `.safetensors` / `.bin` files. Safetensors
files are read without torch.
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import json
import pathlib
from typing import Any, Callable

import numpy as np

from tools.convert_torch.errors import ConversionError

_WEIGHT_ENTRIES = ("model", "module", "state_dict")


class LazyTensors(collections.abc.Mapping):
  """{key: numpy array}, each array read from its file only when asked for.

  The converter pops every tensor as it moves it, so at most the tensors of one Flax leaf are held
  twice, and a large checkpoint never sits in memory in both layouts at once.
  """

  def __init__(self, shapes: dict[str, tuple[int, ...]], load: Callable[[str], np.ndarray]):
    self._shapes, self._load = dict(shapes), load

  def __getitem__(self, key: str) -> np.ndarray:
    if key not in self._shapes:
      raise KeyError(key)
    return self._load(key)

  def __iter__(self):
    return iter(self._shapes)

  def __len__(self) -> int:
    return len(self._shapes)

  def shape(self, key: str) -> tuple[int, ...]:
    return self._shapes[key]

  def pop(self, key: str) -> np.ndarray:
    value = self[key]
    del self._shapes[key]
    return value

  def rename(self, mapping: dict[str, str]) -> LazyTensors:
    """The same tensors under new keys (`mapping`: old → new)."""
    inverse = {new: old for old, new in mapping.items()}
    return LazyTensors({mapping[k]: v for k, v in self._shapes.items()}, lambda key: self._load(inverse[key]))

  def merge(self, other: LazyTensors) -> LazyTensors:
    both = {**{k: self for k in self._shapes}, **{k: other for k in other._shapes}}
    return LazyTensors({**self._shapes, **other._shapes}, lambda key: both[key][key])


@dataclasses.dataclass
class Source:
  """What a checkpoint file holds: its weights, metadata that describes the model, and what was skipped."""

  path: pathlib.Path
  tensors: LazyTensors
  hf_config: dict[str, Any] | None = None  # config.json of a HuggingFace directory.
  train_args: dict[str, Any] | None = None  # the original release's pickled argparse.Namespace.
  gardener_config: dict[str, Any] | None = None  # the ModelConfig that `--to-original` stores beside the weights.
  ignored: dict[str, str] = dataclasses.field(default_factory=dict)  # entry -> why it was not read.


def read_source(path: str | pathlib.Path) -> Source:
  path = pathlib.Path(path)
  if path.is_dir():
    return _read_hf_directory(path)
  if not path.is_file():
    raise ConversionError(f"{path}: no such file or directory")
  if path.suffix == ".safetensors":
    return Source(path, _read_safetensors(path))
  return _read_torch_file(path)


def _read_hf_directory(directory: pathlib.Path) -> Source:
  config_path = directory / "config.json"
  if not config_path.is_file():
    raise ConversionError(f"{directory}: a HuggingFace directory needs config.json; none found")
  try:
    hf_config = json.loads(config_path.read_text())
  except json.JSONDecodeError as e:
    raise ConversionError(f"{config_path}: not valid JSON ({e})") from None
  index = directory / "model.safetensors.index.json"
  if (directory / "model.safetensors").is_file():
    tensors = _read_safetensors(directory / "model.safetensors")
  elif index.is_file():
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    tensors = _read_safetensors(directory / shards[0])
    for shard in shards[1:]:
      tensors = tensors.merge(_read_safetensors(directory / shard))
  elif (directory / "pytorch_model.bin").is_file():
    return dataclasses.replace(_read_torch_file(directory / "pytorch_model.bin"), path=directory, hf_config=hf_config)
  else:
    raise ConversionError(
        f"{directory}: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )
  return Source(directory, tensors, hf_config=hf_config)


def _read_safetensors(path: pathlib.Path) -> LazyTensors:
  from safetensors import SafetensorError, safe_open

  def load(key):
    try:
      with safe_open(path, framework="np", backend="pread") as f:
        return f.get_tensor(key)
    except (SafetensorError, OSError, ValueError) as e:
      raise ConversionError(f"{path}: cannot read tensor '{key}' ({e}); the file may be truncated or corrupt") from None

  try:
    with safe_open(path, framework="np", backend="pread") as f:
      shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
  except (SafetensorError, OSError, ValueError) as e:
    raise ConversionError(f"{path}: cannot read safetensors file ({e}); it may be truncated or corrupt") from None
  return LazyTensors(shapes, load)


def _read_torch_file(path: pathlib.Path) -> Source:
  import pickle

  import torch

  try:
    with torch.serialization.safe_globals([argparse.Namespace]):
      try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
      except RuntimeError as e:
        if "mmap" not in str(e):  # legacy (non-zip) files cannot be memory-mapped
          raise
        obj = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    first_line = str(e).strip().splitlines()[0]
    raise ConversionError(
        f"{path}: refused to unpickle; only tensors, plain containers and argparse.Namespace are "
        f"allowed ({first_line})"
    ) from None
  except (RuntimeError, EOFError, OSError, ValueError) as e:
    raise ConversionError(f"{path}: cannot read PyTorch checkpoint ({e}); it may be truncated or corrupt") from None

  if not isinstance(obj, dict):
    raise ConversionError(f"{path}: expected a dict of tensors or a dict with a 'model' entry, got {type(obj).__name__}")
  source = Source(path, LazyTensors({}, None))
  entry = next((k for k in _WEIGHT_ENTRIES if isinstance(obj.get(k), dict)), None)
  weights = obj[entry] if entry else obj
  if entry:
    for key in obj:
      if key != entry:
        source.ignored[key] = "top-level entry beside the weights"
    if isinstance(obj.get("args"), argparse.Namespace):
      source.train_args = vars(obj["args"])
    if isinstance(obj.get("gardener_config"), dict):
      source.gardener_config = obj["gardener_config"]
  tensors = {}
  for key, value in weights.items():
    if isinstance(value, torch.Tensor):
      tensors[key] = value
    else:
      source.ignored[key] = f"not a tensor ({type(value).__name__})"
  source.tensors = LazyTensors({k: tuple(v.shape) for k, v in tensors.items()}, lambda k: _tensor_to_numpy(tensors[k]))
  if not tensors:
    raise ConversionError(f"{path}: no tensors found (looked under {', '.join(_WEIGHT_ENTRIES)} and at the top level)")
  return source


def _tensor_to_numpy(tensor) -> np.ndarray:
  import ml_dtypes
  import torch

  tensor = tensor.detach()
  if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret the bits.
    return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return tensor.numpy()
