"""Outputs written whole or not at all: each is filled under a temporary sibling name and renamed into
place only when complete, so a crash, a kill or a bad input never leaves half a file or directory."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import uuid


def _temporary_sibling(out: pathlib.Path) -> pathlib.Path:
  return out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike, overwrite: bool = False):
  """Yields a temporary directory to fill; it becomes `out` only if the block succeeds."""
  out = pathlib.Path(out).absolute()
  if out.exists() and not overwrite:
    raise FileExistsError(f"{out} already exists; choose another output or allow overwriting")
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = _temporary_sibling(out)
  tmp.mkdir()
  try:
    yield tmp
    if out.exists():
      shutil.rmtree(out)
    tmp.rename(out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(out: str | os.PathLike, overwrite: bool = True):
  """Yields a temporary path to write one file to; it replaces `out` only if the block succeeds."""
  out = pathlib.Path(out)
  if out.exists() and not overwrite:
    raise FileExistsError(f"{out} already exists; choose another output or allow overwriting")
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = _temporary_sibling(out)
  try:
    yield tmp
    os.replace(tmp, out)
  finally:
    tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
  with atomic_path(path) as tmp:
    tmp.write_text(text)


def write_json(path: str | os.PathLike, value) -> None:
  write_text(path, json.dumps(value, indent=2) + "\n")


def read_json(path: str | os.PathLike):
  path = pathlib.Path(path)
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None
