"""Model surgery as small pure functions over (params, config): what a new task does to a model."""

from __future__ import annotations

from gardener_jax.models.config import ModelConfig
from gardener_jax.models.videomae import init_params


def replace_head(params, config: ModelConfig, num_classes: int, seed: int) -> tuple[dict, ModelConfig]:
  """Params and config for `num_classes` outputs: the head is kept if it fits, else newly initialised."""
  if config.num_classes == num_classes:
    return params, config
  config = config.replace(num_classes=num_classes)
  fresh = init_params(config.replace(depth=1), seed)  # only the head is taken from it
  return {**params, "head": fresh["head"]}, config
