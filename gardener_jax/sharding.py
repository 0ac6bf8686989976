"""One mesh axis, 'data', over every device of every process: parameters replicated, batches split."""

from __future__ import annotations

from typing import Callable, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils
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


T = TypeVar("T")


def on_primary(name: str, write: Callable[[], T]) -> T | None:
  """Runs `write` (files every process would otherwise write at once) on process 0 only; the other
  processes wait until it is done, so that they can read what it wrote. `write` must not call
  `on_primary` itself: process 0 would wait at a barrier the others never reach."""
  result = write() if jax.process_index() == 0 else None
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
  return result
