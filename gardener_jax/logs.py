"""Logging shared by the command-line entry points (`gardener train|pretrain|sweep`)."""

from absl import flags, logging

_VERBOSE = flags.DEFINE_bool("verbose", False, "also log the libraries' INFO messages (JAX, TFDS, orbax, grain)")


def quiet_logging() -> None:
  """INFO logs from gardener_jax; from other libraries only warnings and errors, unless --verbose."""
  logging.set_verbosity(logging.INFO)
  if not _VERBOSE.value:
    logging.get_absl_handler().addFilter(_ours_or_a_warning)


def _ours_or_a_warning(record) -> bool:
  return record.levelno >= logging.converter.STANDARD_WARNING or any(
      part in record.pathname for part in ("/gardener_jax/", "/tools/convert_torch/"))
