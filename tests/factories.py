"""Small random PyTorch VideoMAE models and clips the tests build themselves (nothing is downloaded)."""

import numpy as np
import torch
import transformers

from gardener_jax import load_checkpoint
from tests.torch_reference import VisionTransformer

TINY = dict(width=32, depth=3, num_heads=4, mlp_dim=64, num_classes=5, num_frames=4, image_size=32, patch_size=16)


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
  """Non-trivial values for every parameter (LayerNorm scales, zero-initialised biases included)."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for param in model.parameters():
      param.add_(0.05 * torch.randn(param.shape, generator=generator))
  return model.eval()


def hf_config(**overrides) -> transformers.VideoMAEConfig:
  c = {**TINY, **overrides}
  return transformers.VideoMAEConfig(
      hidden_size=c["width"], num_hidden_layers=c["depth"], num_attention_heads=c["num_heads"],
      intermediate_size=c["mlp_dim"], num_labels=c["num_classes"], num_frames=c["num_frames"],
      image_size=c["image_size"], patch_size=c["patch_size"], tubelet_size=c.get("tubelet_size", 2),
      use_mean_pooling=c.get("use_mean_pooling", True), decoder_hidden_size=16, decoder_num_hidden_layers=1,
      decoder_num_attention_heads=2, decoder_intermediate_size=32)


def hf_classifier(seed=0, **overrides):
  torch.manual_seed(seed)
  return _randomize(transformers.VideoMAEForVideoClassification(hf_config(**overrides)), seed)


def hf_pretraining(seed=0, **overrides):
  """Like the hub's pretraining checkpoints: use_mean_pooling=False, so the encoder ends in a LayerNorm."""
  overrides = {"use_mean_pooling": False, **overrides}
  torch.manual_seed(seed)
  return _randomize(transformers.VideoMAEForPreTraining(hf_config(**overrides)), seed)


def original_classifier(seed=0, **overrides) -> VisionTransformer:
  torch.manual_seed(seed)
  return _randomize(VisionTransformer(**{**TINY, **overrides}), seed)


def clips(config_like: dict | None = None, batch=2, seed=0) -> np.ndarray:
  """(B, T, H, W, C) float32 clips for a model built from TINY + `config_like`."""
  c = {**TINY, **(config_like or {})}
  rng = np.random.default_rng(seed)
  return rng.standard_normal((batch, c["num_frames"], c["image_size"], c["image_size"], 3), np.float32)


def hf_logits(model, x: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.from_numpy(x).permute(0, 1, 4, 2, 3)).logits.numpy()


def original_logits(model, x: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.from_numpy(x).permute(0, 4, 1, 2, 3)).numpy()


def flax_logits(checkpoint, x: np.ndarray) -> np.ndarray:
  model, params, _ = load_checkpoint(checkpoint)
  return np.asarray(model.apply({"params": params}, x, train=False))


def state_numpy(state: dict) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy() for k, v in state.items()}
