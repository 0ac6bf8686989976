from gardener_jax.models.config import VARIANTS, ModelConfig
from gardener_jax.models.videomae import VideoMAE, init_params, sinusoid_position_table

__all__ = ["VARIANTS", "ModelConfig", "VideoMAE", "init_params", "sinusoid_position_table"]
