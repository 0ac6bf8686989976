"""Random-access video sources: prepared TFDS splits, class subsets, and a validation set held out of
the training split — what a job's data config names, opened without TensorFlow."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

import numpy as np

from gardener_jax.sharding import on_primary


def prepared(data_dir, name: str, config: str | None = None) -> list[pathlib.Path]:
  """The prepared versions of a dataset (config None: any config), current version last if present."""
  from gardener_jax.data.builders import VERSION

  root = pathlib.Path(data_dir) / name
  found = [p for p in root.glob(f"{config or '*'}/*") if (p / "dataset_info.json").is_file()]
  return sorted(found, key=lambda p: (p.name == str(VERSION), p.parent.name, p.name))


def open_split(data_dir, name: str, split: str, config: str | None = None):
  """The random-access source of a prepared split (of the current builder version where prepared),
  and the dataset's info."""
  import tensorflow_datasets as tfds

  root = pathlib.Path(data_dir) / name
  candidates = prepared(data_dir, name, config)
  if not candidates:
    raise FileNotFoundError(f"{root}: no prepared dataset{f' with config {config!r}' if config else ''}; "
                            f"run `gardener data build {name} --data_dir {data_dir}` first")
  builder = tfds.builder_from_directory(candidates[-1])
  if split not in builder.info.splits:
    raise ValueError(f"{candidates[-1]}: no split {split!r}; it has {list(builder.info.splits)}")
  return builder.as_data_source(split=split), builder.info


class View:
  """The examples `indices` of `source`, in that order, with labels mapped through `relabel` if given."""

  def __init__(self, source, indices: Sequence[int], relabel: dict[int, int] | None = None):
    self._source, self._indices, self._relabel = source, [int(i) for i in indices], relabel

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, i: int) -> dict:
    example = self._source[self._indices[i]]
    if self._relabel is None:
      return example
    return {**example, "label": self._relabel[int(example["label"])]}


def class_subset(source, names: list[str], classes: Sequence[str]) -> View:
  """The examples of `classes` (a new task from the same videos), relabelled 0 … len(classes) − 1."""
  index_of = {name: i for i, name in enumerate(names)}
  if unknown := [c for c in classes if c not in index_of]:
    raise ValueError(f"classes {unknown} are not in the dataset; it has {names}")
  relabel = {index_of[c]: i for i, c in enumerate(classes)}
  return View(source, [i for i in range(len(source)) if int(source[i]["label"]) in relabel], relabel)


def holdout(source, fraction: float, seed: int) -> tuple[View, View]:
  """(rest, held out): a seeded random `fraction` of the examples set aside, e.g. for validation."""
  if not 0 < fraction < 1:
    raise ValueError(f"data.val_fraction must lie strictly between 0 and 1, got {fraction}")
  order = np.random.default_rng(seed).permutation(len(source))
  count = max(1, round(fraction * len(source)))
  return View(source, np.sort(order[count:])), View(source, np.sort(order[:count]))


@dataclasses.dataclass
class Splits:
  train: object
  val: object | None  # chooses best/; None: no validation set
  test: object | None
  names: list[str]  # class names, in label order
  val_description: str = ""  # where the validation examples come from, for the reports


def _location(data) -> tuple[pathlib.Path, str | None]:
  """(data_dir, builder config) of a job's `config.data`."""
  return pathlib.Path(data.data_dir or "data"), data.config or None


def _build_if_missing(data) -> None:
  from gardener_jax.data import builders

  data_dir, config = _location(data)
  if not any(p.name == str(builders.VERSION) for p in prepared(data_dir, data.name, config)):
    builders.build(data.name, data_dir, config, data.manual_dir or None)


def prepare(data) -> None:
  """Builds the dataset of a job's `config.data` if it is not prepared yet; every process calls it before the
  job's first stage. Hosts that share `data_dir` must not build at once (TFDS moves its finished build into
  place with a rename, which fails on every host but the first), so process 0 builds first while the others
  wait; a host that still finds nothing (its `data_dir` is on its own disk) then builds its own copy."""
  on_primary(f"prepare {data.name}", lambda: _build_if_missing(data))
  _build_if_missing(data)


def from_config(data, classes: Sequence[str] = (), seed: int = 0) -> Splits:
  """The train, validation and test sources of a job's `config.data`, restricted to `classes` if given.

  Validation comes from `data.val_split` (a split of the dataset) or `data.val_fraction` (held out of
  the training split, seeded); with neither, there is none. It builds the dataset if it is missing; on several
  hosts a job calls `prepare` first.
  """
  _build_if_missing(data)
  data_dir, config = _location(data)
  train, info = open_split(data_dir, data.name, data.train_split, config)
  names = list(info.features["label"].names)
  opened = {"test": open_split(data_dir, data.name, data.eval_split, config)[0] if data.eval_split else None,
            "val": open_split(data_dir, data.name, data.val_split, config)[0] if data.get("val_split") else None}
  if classes:
    train = class_subset(train, names, classes)
    opened = {k: None if v is None else class_subset(v, names, classes) for k, v in opened.items()}
    names = list(classes)
  val, description = opened["val"], f"split {data.get('val_split')!r}"
  if val is None and data.get("val_fraction"):
    train, val = holdout(train, data.val_fraction, seed)
    description = f"{len(val)} videos ({data.val_fraction:.1%}) held out of split {data.train_split!r}"
  return Splits(train, val, opened["test"], names, description if val is not None else "")
