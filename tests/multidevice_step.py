"""One train step of a tiny model on a fixed global batch; run with 1 or 8 (fake) devices.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/multidevice_step.py OUT.npz
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from gardener_jax import optim, train  # noqa: E402
from gardener_jax.models import ModelConfig, VideoMAE, init_params  # noqa: E402
from gardener_jax.sharding import global_batch, make_mesh, replicated  # noqa: E402


def main(out):
  config = ModelConfig(width=32, depth=2, num_heads=4, mlp_dim=64, num_classes=5, num_frames=4, image_size=32)
  params = init_params(config, 0)
  rng = np.random.default_rng(0)
  batch = {"clips": rng.integers(0, 256, (16, 4, 32, 32, 3), np.uint8),
           "label": rng.integers(0, 5, 16).astype(np.int32)}
  optim_config = ml_collections.ConfigDict(dict(lr=1e-2, warmup_steps=0, weight_decay=0.05, b1=0.9, b2=0.999,
                                                clip_norm=1.0, layer_decay=0.75, accumulate=1))
  tx, schedule = optim.make_optimizer(optim_config, params, config.depth, 10)
  mesh = make_mesh()
  loss_fn = train.classification_loss(VideoMAE(config), 5, train.TrainOptions(label_smoothing=0.1))
  step = train.compile_train_step(mesh, loss_fn, tx, schedule)
  state = jax.device_put(train.init_state(params, tx), replicated(mesh))
  votes = global_batch(mesh, {"votes": np.zeros(jax.local_device_count(), np.int32)})["votes"]
  state, metrics = step(state, global_batch(mesh, batch), jax.random.key(0), votes)
  flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(state.params)}
  np.savez(out, loss=np.asarray(metrics["loss"]), grad_norm=np.asarray(metrics["grad_norm"]),
           devices=jax.device_count(), **flat)


if __name__ == "__main__":
  main(sys.argv[1])
