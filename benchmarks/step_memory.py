"""XLA's temporary memory for one ViT-B train step (finetuning and masked pretraining at 16 × 224², AdamW, this
loop's step) by attention implementation. Each step is compiled abstractly for this machine's first device:
no parameters are made and nothing runs, so it is quick even for batches that would not fit.

  python benchmarks/step_memory.py [--batch 8] [--dtype float32] [--attention fused,blockwise]
      [--jobs finetune,pretrain]

The temporaries are what a step needs besides its inputs and outputs (parameters, optimiser state, batch):
the activations the backward pass keeps, and the scratch of every op. A materialised softmax ('fused' where
no flash kernel applies, as for float32 on GPUs) keeps a (tokens, tokens) probability matrix per head;
'blockwise' keeps none (see `gardener_jax.models.videomae.attention_blockwise`).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.common import jax_device_name, machine, matmul_precision, print_table  # noqa: E402


def step_temporaries(job: str, attention: str, batch: int, dtype: str) -> int:
  """Bytes of XLA temporaries of the ViT-B `job` ('finetune' or 'pretrain') step, compiled abstractly."""
  import jax
  import jax.numpy as jnp
  import ml_collections
  from jax.sharding import NamedSharding, PartitionSpec

  from gardener_jax import optim, pretrain, train
  from gardener_jax.models import DecoderConfig, ModelConfig, VideoMAE, init_params
  from gardener_jax.models.pretraining import VideoMAEPretraining, init_pretraining_params
  from gardener_jax.sharding import make_mesh, replicated

  if job == "pretrain":
    config = ModelConfig.from_variant("vit_b", use_mean_pooling=False, decoder=DecoderConfig())
    shapes = jax.eval_shape(lambda: init_pretraining_params(config, 0, 0.9))
    model = VideoMAEPretraining(config, dtype=jnp.dtype(dtype), attention=attention)
    loss_fn = pretrain.masked_reconstruction_loss(model, 0.9)
  else:
    config = ModelConfig.from_variant("vit_b", num_classes=400)
    shapes = jax.eval_shape(lambda: init_params(config))
    loss_fn = train.classification_loss(VideoMAE(config, dtype=jnp.dtype(dtype), attention=attention), 400,
                                        train.TrainOptions())
  mesh = make_mesh()
  params = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, jnp.float32), shapes)  # master weights
  optim_config = ml_collections.ConfigDict(dict(lr=1e-3, warmup_steps=0, weight_decay=0.05, b1=0.9, b2=0.999,
                                                clip_norm=0.0, layer_decay=1.0, accumulate=1))
  tx, schedule = optim.make_optimizer(optim_config, params, config.depth, 100)
  state = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated(mesh)),
                       jax.eval_shape(lambda p: train.init_state(p, tx), params))
  data = NamedSharding(mesh, PartitionSpec("data"))
  batch_spec = dict(clips=jax.ShapeDtypeStruct((batch, 16, 224, 224, 3), jnp.uint8, sharding=data),
                    label=jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=data))
  votes = jax.ShapeDtypeStruct((jax.device_count(),), jnp.int32, sharding=data)
  step = train.compile_train_step(mesh, loss_fn, tx, schedule)
  with jax.default_matmul_precision(matmul_precision(dtype)):
    compiled = step.lower(state, batch_spec, jax.random.key(0), votes).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--attention", default="fused,blockwise", help="implementations (gardener_jax Attention)")
  parser.add_argument("--jobs", default="finetune,pretrain")
  args = parser.parse_args()
  import jax

  rows = []
  for job in args.jobs.split(","):
    first = None
    for attention in args.attention.split(","):
      temporaries = step_temporaries(job, attention, args.batch, args.dtype)
      first = first or temporaries
      rows.append([job, args.batch, args.dtype, attention, temporaries / 2**30, temporaries / first])
      print(f"{job}, {attention}: {temporaries / 2**30:.3f} GiB", flush=True)  # kept if a later compile is stopped
  print_table(f"XLA temporaries of one ViT-B train step (16×224², AdamW), compiled for {jax_device_name()} "
              f"({jax.device_count()} device(s)), nothing run; {machine()}",
              ["step", "batch", "precision", "attention", "temporaries GiB", "ratio to the first"], rows)


if __name__ == "__main__":
  main()
