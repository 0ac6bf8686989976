"""Model surgery as small pure functions over (params, config): what a new task does to a model."""

from __future__ import annotations

from gardener_jax.models.config import ModelConfig
from gardener_jax.models.videomae import init_params

PRETRAINING_ONLY = ("norm", "encoder_to_decoder", "mask_token", "decoder")


def replace_head(params, config: ModelConfig, class_names, seed: int) -> tuple[dict, ModelConfig]:
  """Params and config for the task of `class_names`: the head is kept if it was trained for these
  classes (or for as many classes of unknown names), else newly initialised."""
  class_names = tuple(class_names)
  if config.num_classes == len(class_names) and config.class_names in (None, class_names):
    return params, config.replace(class_names=class_names)
  config = config.replace(num_classes=len(class_names), class_names=class_names)
  fresh = init_params(config.replace(depth=1), seed)  # only the head is taken from it
  return {**params, "head": fresh["head"]}, config


def classifier_from_pretraining(params, config: ModelConfig, num_classes: int, seed: int,
                                head_norm_eps: float = 1e-6) -> tuple[dict, ModelConfig]:
  """A pretraining checkpoint as the release finetunes it (SPEC §8): the encoder without its final
  norm, tokens mean-pooled, a fresh `fc_norm` (scale 1, bias 0) and a fresh head; the decoder dropped."""
  config = config.replace(decoder=None, use_mean_pooling=True, head_norm_eps=head_norm_eps, num_classes=num_classes,
                          class_names=None)
  fresh = init_params(config.replace(depth=1), seed)
  encoder = {k: v for k, v in params.items() if k not in PRETRAINING_ONLY}
  head = {"head": fresh["head"]} if num_classes else {}  # 0 classes: the pooled features, no head
  return {**encoder, "fc_norm": fresh["fc_norm"], **head}, config
