"""Logging shared by the command-line entry points."""

from absl import logging


def quiet_logging() -> None:
  """INFO logs from absl, without orbax's per-file chatter."""
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(lambda record: "/orbax/" not in record.pathname)
