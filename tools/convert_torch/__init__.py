"""PyTorch VideoMAE (original release, HuggingFace) ⇄ gardener_jax checkpoints, bit-exact."""

from tools.convert_torch.convert import convert, export
from tools.convert_torch.errors import ConversionError
from tools.convert_torch.layouts import HF, ORIGINAL

__all__ = ["HF", "ORIGINAL", "ConversionError", "convert", "export"]
