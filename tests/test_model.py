"""The Flax VideoMAE: config, position table, stacked blocks, execution options."""

import json

import jax
import numpy as np
import pytest
from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

from gardener_jax import optim, pipeline
from gardener_jax.models import ModelConfig, VideoMAE, init_params, sinusoid_position_table
from gardener_jax.models.videomae import per_block, stacked
from tests import factories

TINY = ModelConfig(width=32, depth=3, num_heads=4, mlp_dim=64, num_classes=5, num_frames=4, image_size=32)


def test_position_table_matches_transformers():
  for tokens, width in [(1568, 768), (16, 32), (392, 384)]:
    np.testing.assert_array_equal(sinusoid_position_table(tokens, width), get_sinusoid_encoding_table(tokens, width)[0])


def test_config_json_round_trip_and_validation():
  assert TINY.kept_blocks == (1, 2, 3) and TINY.num_tokens == 8
  pruned = TINY.replace(depth=2, kept_blocks=(1, 3))
  assert ModelConfig.from_dict(json.loads(pruned.to_json())) == pruned
  for bad, message in [(dict(kept_blocks=(1, 2)), "kept_blocks has 2 entries"),
                       (dict(kept_blocks=(3, 2, 1)), "increasing"),
                       (dict(num_heads=5), "not a multiple of num_heads"),
                       (dict(num_frames=5), "num_frames 5")]:
    with pytest.raises(ValueError, match=message):
      TINY.replace(**bad)
  with pytest.raises(ValueError, match="unknown ModelConfig fields \\['heads'\\]"):
    ModelConfig.from_dict({**TINY.to_dict(), "heads": 3})
  assert ModelConfig.from_variant("vit_b").num_heads == 12


def test_blocks_are_stacked_along_depth():
  params = init_params(TINY)
  assert {leaf.shape[0] for leaf in jax.tree.leaves(params["blocks"])} == {3}
  assert params["blocks"]["attn"]["qkv"]["kernel"].shape == (3, 32, 96)
  assert params["patch_embed"]["proj"]["kernel"].shape == (2, 16, 16, 3, 32)
  vit_b = jax.eval_shape(lambda: init_params(ModelConfig.from_variant("vit_b", num_classes=101)))
  assert sum(np.prod(x.shape[1:]) for x in jax.tree.leaves(vit_b["blocks"])) == 7_087_104  # one block, SPEC §1
  patch, fc_norm, head = 768 * 3 * 2 * 16 * 16 + 768, 2 * 768, 768 * 101 + 101
  assert sum(np.prod(x.shape) for x in jax.tree.leaves(vit_b)) == patch + 12 * 7_087_104 + fc_norm + head  # 86.3 M


def test_per_block_layout_computes_the_same_function_gradients_and_layer_decay():
  params = init_params(TINY.replace(layer_scale=True), 1)
  blocks = per_block(params)
  assert sorted(blocks["blocks"]) == ["0", "1", "2"]
  assert blocks["blocks"]["1"]["attn"]["qkv"]["kernel"].shape == (32, 96)
  np.testing.assert_array_equal(blocks["blocks"]["2"]["gamma_2"], params["blocks"]["gamma_2"][2])
  assert jax.tree.all(jax.tree.map(np.array_equal, stacked(blocks), params))  # and back, bit for bit
  x = factories.clips()

  def loss_and_grads(model, tree):
    return jax.value_and_grad(lambda p: (model.apply({"params": p}, x) ** 2).sum())(tree)

  loss, grads = loss_and_grads(VideoMAE(TINY.replace(layer_scale=True)), params)
  loss_per_block, grads_per_block = loss_and_grads(VideoMAE(TINY.replace(layer_scale=True), scan_blocks=False), blocks)
  np.testing.assert_allclose(loss_per_block, loss, rtol=1e-6)
  for ours, reference in zip(jax.tree.leaves(stacked(grads_per_block)), jax.tree.leaves(grads), strict=True):
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6 * np.abs(reference).max())
  for ours, reference in zip(jax.tree.leaves(optim.layer_decay_scales(blocks, 3, 0.5)),
                             jax.tree.leaves(per_block(optim.layer_decay_scales(params, 3, 0.5))), strict=True):
    np.testing.assert_array_equal(np.broadcast_to(ours, reference.shape), reference)


def test_wrong_clip_shape_is_a_clear_error():
  with pytest.raises(ValueError, match=r"expects \(batch, \*\(4, 32, 32, 3\)\)"):
    VideoMAE(TINY).apply({"params": init_params(TINY)}, np.zeros((1, 8, 32, 32, 3), np.float32))


@pytest.mark.parametrize("layer_scale", [False, True])
def test_execution_options_compute_the_same_function(layer_scale):
  config = TINY.replace(layer_scale=layer_scale)
  params = init_params(config, 1)
  x = factories.clips()
  reference = VideoMAE(config, attention="einsum").apply({"params": params}, x)
  for variant in [VideoMAE(config, attention="per_head"), VideoMAE(config, attention="blockwise"),
                  VideoMAE(config, attention="fused"), VideoMAE(config.replace(remat=True))]:
    np.testing.assert_allclose(variant.apply({"params": params}, x), reference, atol=1e-5, rtol=0)
  train = VideoMAE(config).apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(0)})
  np.testing.assert_allclose(train, reference, atol=1e-5, rtol=0)  # no dropout configured: same function


def test_drop_path_and_dropout_act_only_in_training():
  config = TINY.replace(drop_path_rate=0.5, dropout_rate=0.5, attention_dropout_rate=0.2)
  params, x = init_params(config), factories.clips()
  model = VideoMAE(config)
  evaluation = model.apply({"params": params}, x)
  np.testing.assert_allclose(evaluation, VideoMAE(TINY).apply({"params": params}, x), atol=1e-6)
  one = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(0)})
  two = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(one, evaluation) and not np.allclose(one, two)


def test_job_converts_a_random_huggingface_model(tmp_path):
  import ml_collections
  import transformers

  config = ml_collections.ConfigDict(dict(seed=0, init=dict(source="random_hf", variant="", num_heads=None,
                                                               num_frames=None, image_size=None),
                                          data=dict(num_frames=4, image_size=32),
                                          model=dict(width=32, depth=2, num_heads=4, mlp_dim=64, patch_size=16,
                                                     tubelet_size=2, num_classes=5)))
  checkpoint = pipeline.convert_stage(config, tmp_path)
  assert checkpoint == tmp_path / "checkpoint" and pipeline.convert_stage(config, tmp_path) == checkpoint
  torch_model = transformers.VideoMAEForVideoClassification.from_pretrained(tmp_path / "torch_hf").eval()
  x = factories.clips()
  np.testing.assert_allclose(factories.flax_logits(checkpoint, x), factories.hf_logits(torch_model, x), atol=1e-5)


def _softmax_attention(qkv, scale):
  q, k, v = qkv[:, :, 0] * scale, qkv[:, :, 1], qkv[:, :, 2]
  probabilities = jax.nn.softmax(jax.numpy.einsum("bqhd,bkhd->bhqk", q, k), axis=-1)
  return jax.numpy.einsum("bhqk,bkhd->bqhd", probabilities, v)


@pytest.mark.parametrize("query_block", [None, 16, 25, 512])  # None: per head; 50 tokens in 4 padded, 2 or 1 block(s)
def test_flash_style_attention_and_its_gradients_match_autodiff_of_softmax(query_block):
  from gardener_jax.models.videomae import attention_blockwise, attention_per_head

  rng = np.random.default_rng(0)
  qkv, weights = (jax.numpy.asarray(rng.standard_normal(shape), np.float32) for shape in [(2, 50, 3, 3, 8),
                                                                                          (2, 50, 3, 8)])
  scale = 8**-0.5
  attention = (lambda x: attention_per_head(x, scale)) if query_block is None else (
      lambda x: attention_blockwise(x, scale, query_block))
  np.testing.assert_allclose(attention(qkv), _softmax_attention(qkv, scale), atol=2e-6)
  ours = jax.grad(lambda qkv: (attention(qkv) * weights).sum())(qkv)
  expected = jax.grad(lambda qkv: (_softmax_attention(qkv, scale) * weights).sum())(qkv)
  assert ours.shape == qkv.shape
  np.testing.assert_allclose(ours, expected, atol=2e-5, rtol=1e-5)
  if query_block is not None:  # in bfloat16 too, k's and v's gradients summed over the blocks in float32
    low = qkv.astype(jax.numpy.bfloat16)
    ours = jax.grad(lambda x: (attention(x).astype(np.float32) * weights).sum())(low)
    expected = jax.grad(lambda x: (_softmax_attention(x.astype(np.float32), scale) * weights).sum())(low)
    assert ours.dtype == jax.numpy.bfloat16
    np.testing.assert_allclose(ours.astype(np.float32), expected.astype(np.float32), atol=0.05, rtol=0.05)


def test_blockwise_attention_memory_grows_with_tokens_not_their_square():
  """XLA's temporaries for the gradient: a materialised softmax keeps (tokens, tokens) arrays per head."""
  from gardener_jax.models.videomae import attention_blockwise

  def temporaries(attention, tokens):
    qkv = jax.ShapeDtypeStruct((1, tokens, 3, 4, 16), np.float32)
    gradient = jax.jit(jax.grad(lambda x: (attention(x) ** 2).sum())).lower(qkv).compile()
    return gradient.memory_analysis().temp_size_in_bytes

  blockwise = [temporaries(lambda x: attention_blockwise(x, 0.25, 128), n) for n in (1024, 2048)]
  materialised = [temporaries(lambda x: _softmax_attention(x, 0.25), n) for n in (1024, 2048)]
  assert materialised[1] > 3.5 * materialised[0] and materialised[0] > 4 * 1024**2 * 4  # ≥ one f32 score matrix
  assert blockwise[1] < 2.5 * blockwise[0] and blockwise[1] < materialised[1] / 4


def test_attention_chosen_by_backend_and_compute_dtype(monkeypatch):
  from gardener_jax.models import default_attention

  assert default_attention(np.float32) == default_attention(jax.numpy.bfloat16) == "per_head"  # this CPU
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert default_attention(np.float32) == "blockwise" and default_attention(jax.numpy.bfloat16) == "fused"
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert default_attention(np.float32) == default_attention(jax.numpy.bfloat16) == "fused"


def test_lean_gelu_and_layer_norm_match_autodiff_of_the_library_ones():
  """`gelu` and `LayerNorm` keep fewer arrays for the backward pass; values and gradients are flax's."""
  import flax.linen as nn

  from gardener_jax.models.videomae import LayerNorm, gelu

  rng = np.random.default_rng(0)
  x, weights = (jax.numpy.asarray(rng.standard_normal((2, 50, 48)) * 3 + 1, np.float32) for _ in range(2))
  np.testing.assert_array_equal(gelu(x), jax.nn.gelu(x, approximate=False))
  np.testing.assert_allclose(jax.grad(lambda y: (gelu(y) * weights).sum())(x),
                             jax.grad(lambda y: (jax.nn.gelu(y, approximate=False) * weights).sum())(x), rtol=1e-6,
                             atol=1e-6)

  ours, theirs = LayerNorm(epsilon=1e-6), nn.LayerNorm(epsilon=1e-6)
  params = {"params": {"scale": jax.numpy.asarray(rng.standard_normal(48), np.float32),
                       "bias": jax.numpy.asarray(rng.standard_normal(48), np.float32)}}
  assert jax.tree.map(np.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(np.shape, params)
  np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), atol=2e-6)

  def loss(module):
    return lambda p, y: (module.apply(p, y) * weights).sum()

  for a, b in zip(jax.tree.leaves(jax.grad(loss(ours), argnums=(0, 1))(params, x)),
                  jax.tree.leaves(jax.grad(loss(theirs), argnums=(0, 1))(params, x))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5)


def test_normalized_projection_matches_autodiff_and_keeps_only_the_normalised_input():
  """LayerNorm → projection: autodiff's values and gradients, with one (tokens, width) residual, not two."""
  import contextlib
  import io

  import flax.linen as nn
  from jax.ad_checkpoint import print_saved_residuals

  from gardener_jax.models.videomae import normalized_projection

  rng = np.random.default_rng(1)
  x = jax.numpy.asarray(rng.standard_normal((2, 50, 48)) * 3 + 1, np.float32)
  scale, bias = (jax.numpy.asarray(rng.standard_normal(48), np.float32) for _ in range(2))
  kernel = jax.numpy.asarray(rng.standard_normal((48, 72)), np.float32)
  weights = jax.numpy.asarray(rng.standard_normal((2, 50, 72)), np.float32)

  def reference(x, scale, bias, kernel):
    normed = nn.LayerNorm(epsilon=1e-6).apply({"params": {"scale": scale, "bias": bias}}, x)
    return normed @ kernel

  ours = lambda x, scale, bias, kernel: normalized_projection(x, scale, bias, kernel, 1e-6)  # noqa: E731
  np.testing.assert_allclose(ours(x, scale, bias, kernel), reference(x, scale, bias, kernel), rtol=1e-5, atol=2e-5)
  grads = [jax.grad(lambda *a: (f(*a) * weights).sum(), argnums=(0, 1, 2, 3))(x, scale, bias, kernel)
           for f in (ours, reference)]
  for a, b in zip(*grads):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)

  def token_sized_residuals(f):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
      print_saved_residuals(lambda *a: (f(*a) * weights).sum(), x, scale, bias, kernel)
    return sum(line.startswith("f32[2,50,48] ") for line in printed.getvalue().splitlines())

  assert token_sized_residuals(ours) == 1 and token_sized_residuals(reference) >= 2
