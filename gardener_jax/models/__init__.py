from gardener_jax.models.config import DECODER_VARIANTS, VARIANTS, DecoderConfig, ModelConfig
from gardener_jax.models.videomae import VideoMAE, default_attention, init_params, sinusoid_position_table

__all__ = ["DECODER_VARIANTS", "VARIANTS", "DecoderConfig", "ModelConfig", "VideoMAE", "default_attention",
           "init_params", "sinusoid_position_table"]
