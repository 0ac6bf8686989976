"""One mesh axis, 'data', over every device of every process: parameters replicated, batches split."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"


def make_mesh() -> jax.sharding.Mesh:
  return jax.make_mesh((jax.device_count(),), (AXIS,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(mesh, local: dict) -> dict:
  """This process's numpy arrays → global arrays split along their first axis over every device.

  Every process must pass arrays of the same shape: the global shape is the local one times the
  number of processes.
  """
  sharding = NamedSharding(mesh, P(AXIS))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}
