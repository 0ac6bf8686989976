"""Procedural motion clips: the class is what moves and how, never what a single frame shows.

Every clip holds the same three objects on a static background: a square, a disc and a bar, at
random positions, on a background that shades linearly across the frame in a random direction:
like a natural scene it is predictable from its visible parts, which is what masked pretraining
learns to exploit. One class moves the square or the disc in one of four directions
(wrapping around the frame) at a random speed; the other two turn the bar clockwise or
counter-clockwise. Everything is drawn from a seed, so a clip is the same on every machine.
"""

from __future__ import annotations

import numpy as np

DIRECTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}
CLASSES = tuple(f"{shape}_{d}" for shape in ("square", "disc") for d in DIRECTIONS) + (
    "bar_clockwise", "bar_counterclockwise")


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
  """(size, size, 3) uint8: a base colour plus a linear ramp across the frame in a random direction,
  of random strength per channel."""
  rows, cols = np.mgrid[0:size, 0:size].astype(np.float64) / size - 0.5
  angle = rng.uniform(0, 2 * np.pi)
  ramp = rows * np.cos(angle) + cols * np.sin(angle)
  field = rng.uniform(60, 100, 3) + ramp[..., None] * rng.uniform(40, 80, 3) * rng.choice([-1, 1], 3)
  return np.clip(field, 0, 255).astype(np.uint8)


def render(name: str, size: int, num_frames: int, seed) -> np.ndarray:
  """(num_frames, size, size, 3) uint8 frames of class `name`."""
  if name not in CLASSES:
    raise ValueError(f"unknown synthetic class {name!r}; known: {CLASSES}")
  rng = np.random.default_rng(np.asarray(seed, dtype=np.uint64) if not isinstance(seed, int) else seed)
  background = _gradient(rng, size)
  radius = size / 10
  position = {k: rng.uniform(radius, size - radius, 2) for k in ("square", "disc", "bar")}
  colors = {k: rng.integers(150, 256, 3).astype(np.uint8) for k in ("square", "disc", "bar")}
  angle0, speed = rng.uniform(0, np.pi), rng.uniform(1.0, 2.0) * size / 64
  turn = rng.uniform(0.08, 0.2) * {"bar_clockwise": 1, "bar_counterclockwise": -1}.get(name, 0)
  shape, _, direction = name.partition("_")
  step = np.array(DIRECTIONS.get(direction, (0, 0))) * speed

  rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
  frames = np.empty((num_frames, size, size, 3), np.uint8)
  for t in range(num_frames):
    frame = background.copy()
    for obj in ("square", "disc", "bar"):
      r, c = (position[obj] + (step * t if obj == shape else 0)) % size
      dr, dc = (rows - r + size / 2) % size - size / 2, (cols - c + size / 2) % size - size / 2  # wrap around
      if obj == "square":
        mask = (np.abs(dr) < radius) & (np.abs(dc) < radius)
      elif obj == "disc":
        mask = dr**2 + dc**2 < radius**2
      else:
        angle = angle0 + turn * t
        along, across = dr * np.sin(angle) + dc * np.cos(angle), dr * np.cos(angle) - dc * np.sin(angle)
        mask = (np.abs(along) < 2 * radius) & (np.abs(across) < radius / 3)
      frame[mask] = colors[obj]
    frames[t] = frame
  return frames
