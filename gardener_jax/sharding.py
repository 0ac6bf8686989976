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
  processes wait until it is done, so that they can read what it wrote. If `write` raises, every process
  raises (process 0 its error, the others one that points to it), so no process waits for one that
  stopped. `write` must not call `on_primary` itself: process 0 would wait at a barrier the others never
  reach."""
  result, error = None, None
  if jax.process_index() == 0:
    try:
      result = write()
    except Exception as e:  # noqa: BLE001 — raised below, after the others have heard of it
      error = e
  if jax.process_count() > 1:
    failed = multihost_utils.broadcast_one_to_all(np.int32(error is not None))  # a collective: the barrier
    if failed and error is None:
      raise RuntimeError(f"{name}: process 0 failed (its log says why)")
  if error is not None:
    raise error
  return result
