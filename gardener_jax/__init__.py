"""gardener_jax: data-free block pruning of VideoMAE transformers in JAX/Flax (Gardener, arXiv 2602.03918)."""

from gardener_jax.checkpoint import load_checkpoint, save_checkpoint
from gardener_jax.models import ModelConfig, VideoMAE, init_params

__all__ = ["ModelConfig", "VideoMAE", "init_params", "load_checkpoint", "save_checkpoint"]
