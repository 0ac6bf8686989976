"""A small PyTorch implementation of the original-release VideoMAE classifier (MCG-NJU/VideoMAE's
`modeling_finetune.VisionTransformer`), written for the tests: same modules, same state-dict keys,
clips laid out (B, C, T, H, W)."""

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):

  def __init__(self, dim, num_heads):
    super().__init__()
    self.num_heads = num_heads
    self.qkv = nn.Linear(dim, 3 * dim, bias=False)
    self.q_bias = nn.Parameter(torch.zeros(dim))
    self.v_bias = nn.Parameter(torch.zeros(dim))
    self.proj = nn.Linear(dim, dim)

  def forward(self, x):
    b, n, c = x.shape
    bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
    qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * (c // self.num_heads) ** -0.5) @ k.transpose(-2, -1)
    x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
    return self.proj(x)


class Mlp(nn.Module):

  def __init__(self, dim, hidden):
    super().__init__()
    self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

  def forward(self, x):
    return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):

  def __init__(self, dim, num_heads, mlp_dim, layer_scale):
    super().__init__()
    self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
    self.attn, self.mlp = Attention(dim, num_heads), Mlp(dim, mlp_dim)
    if layer_scale:
      self.gamma_1 = nn.Parameter(torch.full((dim,), 0.1))
      self.gamma_2 = nn.Parameter(torch.full((dim,), 0.1))
    else:
      self.gamma_1 = self.gamma_2 = None

  def forward(self, x):
    if self.gamma_1 is None:
      x = x + self.attn(self.norm1(x))
      return x + self.mlp(self.norm2(x))
    x = x + self.gamma_1 * self.attn(self.norm1(x))
    return x + self.gamma_2 * self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):

  def __init__(self, dim, in_channels, tubelet, patch):
    super().__init__()
    self.proj = nn.Conv3d(in_channels, dim, (tubelet, patch, patch), (tubelet, patch, patch))

  def forward(self, x):
    return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):

  def __init__(self, *, width, depth, num_heads, mlp_dim, num_classes, num_frames, image_size, patch_size=16,
               tubelet_size=2, in_channels=3, layer_scale=False, use_mean_pooling=True):
    super().__init__()
    from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

    self.patch_embed = PatchEmbed(width, in_channels, tubelet_size, patch_size)
    tokens = (num_frames // tubelet_size) * (image_size // patch_size) ** 2
    self.pos_embed = get_sinusoid_encoding_table(tokens, width)  # a plain attribute: not in the state dict
    self.blocks = nn.ModuleList(Block(width, num_heads, mlp_dim, layer_scale) for _ in range(depth))
    self.norm = nn.Identity() if use_mean_pooling else nn.LayerNorm(width, eps=1e-6)
    self.fc_norm = nn.LayerNorm(width, eps=1e-6) if use_mean_pooling else None
    self.head = nn.Linear(width, num_classes) if num_classes else nn.Identity()

  def forward(self, x):
    x = self.patch_embed(x) + self.pos_embed.type_as(x)
    for block in self.blocks:
      x = block(x)
    x = self.norm(x)
    x = self.fc_norm(x.mean(1)) if self.fc_norm is not None else x[:, 0]
    return self.head(x)


class PretrainVisionTransformer(nn.Module):
  """The original release's masked autoencoder (`modeling_pretrain.PretrainVisionTransformer`): an
  encoder on the visible tokens ending in `norm`, `encoder_to_decoder`, `mask_token`, and a decoder of
  the same blocks with a final norm and a pixel head. State-dict keys as the release's."""

  def __init__(self, *, width, depth, num_heads, mlp_dim, num_frames, image_size, decoder_width, decoder_depth,
               decoder_heads, patch_size=16, tubelet_size=2, in_channels=3):
    super().__init__()
    from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

    tokens = (num_frames // tubelet_size) * (image_size // patch_size) ** 2
    self.encoder = nn.Module()
    self.encoder.patch_embed = PatchEmbed(width, in_channels, tubelet_size, patch_size)
    self.encoder.blocks = nn.ModuleList(Block(width, num_heads, mlp_dim, False) for _ in range(depth))
    self.encoder.norm = nn.LayerNorm(width, eps=1e-6)
    self.encoder_to_decoder = nn.Linear(width, decoder_width, bias=False)
    self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_width))
    self.decoder = nn.Module()
    self.decoder.blocks = nn.ModuleList(Block(decoder_width, decoder_heads, 4 * decoder_width, False)
                                        for _ in range(decoder_depth))
    self.decoder.norm = nn.LayerNorm(decoder_width, eps=1e-6)
    self.decoder.head = nn.Linear(decoder_width, in_channels * tubelet_size * patch_size**2)
    self.encoder_pos = get_sinusoid_encoding_table(tokens, width)  # plain attributes: not in the state dict
    self.decoder_pos = get_sinusoid_encoding_table(tokens, decoder_width)

  def forward(self, x, mask):
    """x: (B, C, T, H, W); mask: (B, tokens) bool, True where masked → (B, masked, C · tubelet · patch²)."""
    tokens = self.encoder.patch_embed(x) + self.encoder_pos.type_as(x)
    b, _, c = tokens.shape
    visible = tokens[~mask].reshape(b, -1, c)
    for block in self.encoder.blocks:
      visible = block(visible)
    visible = self.encoder_to_decoder(self.encoder.norm(visible))
    pos = self.decoder_pos.expand(b, -1, -1).type_as(x)
    d = visible.shape[-1]
    full = torch.cat([visible + pos[~mask].reshape(b, -1, d), self.mask_token + pos[mask].reshape(b, -1, d)], dim=1)
    for block in self.decoder.blocks:
      full = block(full)
    masked = int(mask[0].sum())
    return self.decoder.head(self.decoder.norm(full[:, -masked:]))
