"""gardener_jax checkpoints: a directory with the params (orbax), the model config (JSON) and reports.

    DIR/config.json     ModelConfig fields (depth, kept_blocks, ...)
    DIR/params/         orbax checkpoint of {'params': ...}: a classifier's, or a pretraining model's (the
                        encoder's plus `encoder_to_decoder`, `mask_token` and `decoder`)
    DIR/<report files>  whatever the writer adds (conversion report, pruning report)

Directories are written under a temporary name and renamed when complete, so a failure never
leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from gardener_jax.files import atomic_directory
from gardener_jax.sharding import on_primary
from gardener_jax.models import ModelConfig, VideoMAE
from gardener_jax.models.pretraining import VideoMAEPretraining
from gardener_jax.models.surgery import classifier_from_pretraining

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"


def _this_process_alone() -> ocp.options.MultiprocessingOptions:
  """Checkpoint files that this process writes or reads by itself: in a multi-process job the others
  do not join (the collective, sharded checkpoints are the training loop's)."""
  return ocp.options.MultiprocessingOptions(primary_host=jax.process_index(), active_processes={jax.process_index()})


def write_checkpoint(directory: pathlib.Path, params, config: ModelConfig):
  """Writes params and config into an existing (temporary) directory; see `atomic_directory`."""
  params = jax.device_get(params)  # orbax refuses a process's own jax.Arrays in a multi-process job
  with ocp.StandardCheckpointer(multiprocessing_options=_this_process_alone()) as checkpointer:
    checkpointer.save(pathlib.Path(directory).absolute() / PARAMS_DIR, {"params": params})
  (pathlib.Path(directory) / CONFIG_FILE).write_text(config.to_json() + "\n")


def save_checkpoint(out, params, config: ModelConfig, overwrite: bool = False):
  """Writes a checkpoint directory (in a multi-process job, process 0 writes it and the others wait)."""
  on_primary(f"save {out}", lambda: _save(out, params, config, overwrite))


def _save(out, params, config: ModelConfig, overwrite: bool):
  with atomic_directory(out, overwrite) as tmp:
    write_checkpoint(tmp, params, config)


def read_config(directory) -> ModelConfig:
  path = pathlib.Path(directory) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{directory}: not a gardener_jax checkpoint (no {CONFIG_FILE})")
  try:
    return ModelConfig.from_dict(json.loads(path.read_text()))
  except (json.JSONDecodeError, TypeError, ValueError) as e:
    raise ValueError(f"{path}: {e}") from None


def load_tree(directory) -> dict:
  """The stored tree as numpy arrays with their stored dtypes (bit-exact): {'params': ...}."""
  path = pathlib.Path(directory).absolute() / PARAMS_DIR
  if not path.is_dir():
    raise FileNotFoundError(f"{directory}: not a gardener_jax checkpoint (no {PARAMS_DIR}/)")
  with ocp.StandardCheckpointer(multiprocessing_options=_this_process_alone()) as checkpointer:
    return checkpointer.restore(path)


def load_checkpoint(directory) -> tuple[VideoMAE, dict, ModelConfig]:
  """Loads a converted or pruned checkpoint: `model.apply({'params': params}, clips, train=False)` → logits.
  Of a pretraining checkpoint, the model is its encoder as the release finetunes it (`classifier_from_pretraining`,
  no head): the tokens mean-pooled through a fresh `fc_norm` (no scale or shift yet), (batch, width) features."""
  config = read_config(directory)
  params = load_tree(directory)["params"]
  if config.is_pretraining:
    params, config = classifier_from_pretraining(params, config, num_classes=0, seed=0)
  return VideoMAE(config), jax.device_put(params), config


def load_pretraining_checkpoint(directory) -> tuple[VideoMAEPretraining, dict, ModelConfig]:
  """Loads a pretraining checkpoint, encoder and decoder:
  `model.apply({'params': params}, clips, mask, train=False)` → {'loss', 'pred', 'target'}."""
  config = read_config(directory)
  if not config.is_pretraining:
    raise ValueError(f"{directory}: not a pretraining checkpoint (its config has no decoder); use load_checkpoint")
  params = jax.device_put(load_tree(directory)["params"])
  return VideoMAEPretraining(config), params, config


def cast_floats(params, dtype):
  """`params` as numpy arrays, every floating leaf (bfloat16 included) cast to `dtype`."""
  def cast(x):
    x = np.asarray(x)
    return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
  return jax.tree.map(cast, params)


def count_params(params) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))
