"""The embedded default: everything runs on a model and data the job makes itself, on 2 CPU cores.

Stage 1 of the pipeline (convert): a random-init HuggingFace VideoMAE is saved with
`save_pretrained`, converted to a gardener_jax checkpoint, checked against PyTorch, and exported back.

  python -m gardener_jax.main --config configs/demo.py --workdir runs/demo
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Where the initial weights come from. 'random_hf': a seeded random transformers VideoMAE of
  # `model`'s size, made by the job; otherwise a path to a PyTorch checkpoint (HF directory, .pth,
  # .safetensors) or to a gardener_jax checkpoint directory.
  config.init = ml_collections.ConfigDict()
  config.init.source = "random_hf"
  config.init.variant = ""  # what shapes cannot tell: vit_s, vit_b, vit_l, vit_h (or the flags below)
  config.init.num_heads = ml_collections.config_dict.placeholder(int)
  config.init.num_frames = ml_collections.config_dict.placeholder(int)
  config.init.image_size = ml_collections.config_dict.placeholder(int)

  config.model = ml_collections.ConfigDict(dict(
      width=96, depth=6, num_heads=4, mlp_dim=384, num_frames=8, image_size=64, patch_size=16, tubelet_size=2,
      num_classes=10))

  config.parity = ml_collections.ConfigDict(dict(batch=2, atol=1e-5))
  return config
