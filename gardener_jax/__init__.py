"""gardener_jax: data-free block pruning of VideoMAE transformers in JAX/Flax (Gardener, arXiv 2602.03918)."""

from gardener_jax.checkpoint import load_checkpoint, load_pretraining_checkpoint, save_checkpoint
from gardener_jax.models import DecoderConfig, ModelConfig, VideoMAE, init_params
from gardener_jax.models.pretraining import VideoMAEPretraining

__all__ = ["DecoderConfig", "ModelConfig", "VideoMAE", "VideoMAEPretraining", "init_params", "load_checkpoint",
           "load_pretraining_checkpoint", "save_checkpoint"]
