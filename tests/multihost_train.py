"""One of two local processes joined by jax.distributed, training a few data-parallel steps together.

  python tests/multihost_train.py PROCESS_ID PORT DATA_DIR WORKDIR OUT.npz
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402


def main(process_id: int, port: int, data_dir: str, workdir: str, out: str):
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id)
  import ml_collections
  import numpy as np

  from gardener_jax import train
  from gardener_jax.data import input_pipeline
  from gardener_jax.models import ModelConfig, init_params

  assert jax.process_count() == 2 and jax.device_count() == 2
  spec = input_pipeline.ClipSpec(num_frames=4, sampling_rate=2, image_size=32)
  model = ModelConfig(width=32, depth=2, num_heads=4, mlp_dim=64, num_classes=4, num_frames=4, image_size=32)
  config = ml_collections.ConfigDict(dict(
      train=dict(batch_size=4, epochs=1, seed=0, log_every=1, checkpoint_every=2, eval_every_epochs=1,
                 label_smoothing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0, inject_nan_at_step=-1, dtype="float32"),
      optim=dict(lr=1e-3, warmup_steps=1, weight_decay=0.05, b1=0.9, b2=0.999, clip_norm=1.0, layer_decay=1.0,
                 accumulate=1)))
  train_source = input_pipeline.open_split(data_dir, "synthetic_motion", "train")[0]
  eval_source = input_pipeline.open_split(data_dir, "synthetic_motion", "test")[0]
  result = train.fit(model_config=model, params=init_params(model), train_source=train_source,
                     eval_source=eval_source, num_classes=4, config=config, workdir=workdir,
                     pipelines=input_pipeline.Pipelines(spec, spec, seed=0))
  leaves = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(result["params"])}
  np.savez(out, steps=result["steps"], war=result["eval"]["war"], videos=result["eval"]["videos"], **leaves)


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:])
