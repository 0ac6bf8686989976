"""TFDS builders for video classification sets, written as array_record files without TensorFlow.

Every builder stores one example per video: its frames JPEG-encoded one by one (so reading a clip
decodes only the frames it samples), the label, a video id, the fps and the frame count. Real
archives are read from `manual_dir` (see the README for what to put there); `synthetic_motion`
is generated. Builders take their class list from their config, which `make_builder` fills from
the manual directory, so a prepared dataset always records the classes it was built with.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from gardener_jax.data import synthetic, video_io

VERSION = tfds.core.Version("1.1.0")
RELEASE_NOTES = {"1.0.0": "First release.",
                 "1.1.0": "synthetic_motion: a smooth background instead of random 4-pixel cells."}
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg")


@dataclasses.dataclass
class VideoConfig(tfds.core.BuilderConfig):
  classes: tuple[str, ...] = ()
  max_short_side: int = 320  # frames with a larger short side are resized down before JPEG encoding
  jpeg_quality: int = 90


@dataclasses.dataclass
class SyntheticConfig(VideoConfig):
  image_size: int = 64
  num_frames: int = 32
  train_per_class: int = 80
  test_per_class: int = 10
  seed: int = 0


class _VideoBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  VERSION = VERSION
  RELEASE_NOTES = RELEASE_NOTES

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=tfds.features.FeaturesDict({
            "frames": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_)),  # JPEG bytes
            "label": tfds.features.ClassLabel(names=list(self.builder_config.classes)),
            "video_id": tfds.features.Text(),
            "fps": np.float32,
            "num_frames": np.int32,
        }),
        supervised_keys=None,
    )

  def _example(self, video_id: str, label: int, frames: np.ndarray, fps: float) -> dict:
    frames = video_io.resize_short_side(frames, min(self.builder_config.max_short_side, min(frames.shape[1:3])))
    return {"frames": video_io.encode_jpeg(frames, self.builder_config.jpeg_quality), "label": label,
            "video_id": video_id, "fps": fps, "num_frames": len(frames)}

  def _labelled(self, root: pathlib.Path, relative_paths) -> list[tuple[str, int, pathlib.Path]]:
    """(video id, label, path) items for `class/video` paths under `root`."""
    label_of = {name: i for i, name in enumerate(self.builder_config.classes)}
    return [(rel, label_of[rel.split("/")[0]], root / rel) for rel in relative_paths]

  def _generate_examples(self, items):
    """Examples from (video id, label, path) items; an unreadable source video is logged and skipped."""
    skipped = 0
    for video_id, label, path in items:
      try:
        frames, fps = video_io.read_video(path)
      except video_io.VideoError as e:
        skipped += 1
        logging.warning("skipping unreadable video (%d so far): %s", skipped, e)
        continue
      yield video_id, self._example(video_id, label, frames, fps)


class SyntheticMotion(_VideoBuilder, skip_registration=True):
  """Procedural clips whose class is a motion (which object moves, where, how fast, which way it turns);
  every frame alone looks alike across classes."""

  BUILDER_CONFIGS = [
      SyntheticConfig(name="default", classes=synthetic.CLASSES),
      SyntheticConfig(name="small", classes=synthetic.CLASSES[:4], image_size=64, num_frames=16, train_per_class=32,
                      test_per_class=8),
      SyntheticConfig(name="tiny", classes=synthetic.CLASSES[:4], image_size=32, num_frames=16, train_per_class=4,
                      test_per_class=2),
  ]

  def _split_generators(self, dl_manager):
    c = self.builder_config
    return {"train": self._rendered("train", c.train_per_class), "test": self._rendered("test", c.test_per_class)}

  def _rendered(self, split: str, per_class: int):
    c = self.builder_config
    for label, name in enumerate(c.classes):
      for i in range(per_class):
        video_id = f"{split}_{name}_{i:04d}"
        frames = synthetic.render(name, c.image_size, c.num_frames, seed=(c.seed, split == "test", label, i))
        yield video_id, self._example(video_id, label, frames, 25.0)


class VideoFolder(_VideoBuilder, skip_registration=True):
  """Any `root/<class>/<video>` tree. Split lists `root/splits/<split>.txt` (one `class/video` path a
  line) define the splits; without them every video is in `train`."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = "--manual_dir ROOT with ROOT/<class>/<video>; optionally ROOT/splits/<split>.txt"
  CONFIG_NAMES = ("default",)

  def _split_generators(self, dl_manager):
    root = pathlib.Path(dl_manager.manual_dir)
    lists = sorted((root / "splits").glob("*.txt"))
    if not lists:
      return {"train": self._generate_examples(self._labelled(root, _all_videos(root)))}
    return {p.stem: self._generate_examples(self._labelled(root, _read_list(p))) for p in lists}


class Ucf101(_VideoBuilder, skip_registration=True):
  """UCF101: the official splits 1-3, and the Gardener paper's per-class split (70 train / 10 test)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "From the UCF101 page of UCF's Center for Research in Computer Vision, download UCF101.rar and "
      "UCF101TrainTestSplits-RecognitionTask.zip and extract both into --manual_dir, which then holds "
      "UCF-101/<Class>/v_*.avi and ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt.")

  CONFIG_NAMES = ("split_1", "split_2", "split_3", "gardener_70_10")  # the class list comes from the user's files

  def _split_generators(self, dl_manager):
    root = pathlib.Path(dl_manager.manual_dir)
    lists, videos = root / "ucfTrainTestlist", root / "UCF-101"
    name = self.builder_config.name
    if name == "gardener_70_10":
      train, test = per_class_split(_all_videos(videos), train=70, test=10, seed=0)
    else:
      n = name.removeprefix("split_")
      train = _read_list(lists / f"trainlist0{n}.txt")
      test = _lines(lists / f"testlist0{n}.txt")
    return {"train": self._generate_examples(self._labelled(videos, train)),
            "test": self._generate_examples(self._labelled(videos, test))}


class Hmdb51(_VideoBuilder, skip_registration=True):
  """HMDB51: the official splits 1-3 (70 train / 30 test videos per class)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "From the HMDB51 page of the Serre lab, download hmdb51_org.rar and test_train_splits.rar; extract the "
      "per-class archives into --manual_dir/videos/<class>/*.avi and the split lists into "
      "--manual_dir/testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt.")

  CONFIG_NAMES = ("split_1", "split_2", "split_3")

  def _split_generators(self, dl_manager):
    root = pathlib.Path(dl_manager.manual_dir)
    n = self.builder_config.name.removeprefix("split_")
    splits = {"train": [], "test": []}
    for label, name in enumerate(self.builder_config.classes):
      for line in _lines(root / "testTrainMulti_7030_splits" / f"{name}_test_split{n}.txt"):
        video, usage = line.split()
        if usage in ("1", "2"):
          splits["train" if usage == "1" else "test"].append((f"{name}/{video}", label, root / "videos" / name / video))
    return {split: self._generate_examples(items) for split, items in splits.items()}


BUILDERS = {"synthetic_motion": SyntheticMotion, "video_folder": VideoFolder, "ucf101": Ucf101, "hmdb51": Hmdb51}


def _lines(path: pathlib.Path) -> list[str]:
  if not path.is_file():
    raise FileNotFoundError(f"{path}: split list not found")
  return [line.strip().replace("\\", "/") for line in path.read_text().splitlines() if line.strip()]


def _read_list(path: pathlib.Path) -> list[str]:
  return [line.split()[0] for line in _lines(path)]


def _all_videos(root: pathlib.Path) -> list[str]:
  return sorted(str(p.relative_to(root)) for p in root.glob("*/*") if p.suffix.lower() in VIDEO_SUFFIXES)


_UCF_GROUP = re.compile(r"_g(\d+)_c\d+")  # v_<Class>_g08_c01.avi: clip 1 of group 8, cut from one long video


def video_group(relative_path: str) -> str:
  """The group a video belongs to: UCF101's clips of one group are cut from the same long video (same
  actor, same scene); any other video is a group of its own."""
  name = relative_path.rsplit("/", 1)[-1]
  match = _UCF_GROUP.search(name)
  return match[1] if match else name


def per_class_split(relative_paths: list[str], train: int, test: int, seed: int) -> tuple[list[str], list[str]]:
  """A fixed number of train and test videos per class, no group on both sides.

  Each class's groups are shuffled (seeded); the test videos are taken group by group, and the rest
  of the group that completes the test set is left out of both sides; the train videos are a seeded
  draw from the remaining groups.
  """
  by_class: dict[str, dict[str, list[str]]] = {}
  for rel in sorted(relative_paths):
    by_class.setdefault(rel.split("/")[0], {}).setdefault(video_group(rel), []).append(rel)
  train_set, test_set = [], []
  for name, groups in sorted(by_class.items()):
    rng = np.random.default_rng([seed, len(name), *name.encode()])
    order = [groups[g] for g in rng.permutation(sorted(groups))]
    chosen_test, rest = [], []
    for videos in order:
      if len(chosen_test) < test:
        chosen_test += videos[:test - len(chosen_test)]
      else:
        rest += videos
    if len(chosen_test) < test or len(rest) < train:
      total = sum(map(len, order))
      raise ValueError(f"class {name!r} has {total} videos in {len(order)} groups; the split needs {train} + {test} "
                       f"with no group on both sides")
    test_set += sorted(chosen_test)
    train_set += sorted(rng.permutation(rest)[:train])
  return train_set, test_set


def class_names(name: str, manual_dir) -> tuple[str, ...]:
  """The class list a builder takes from the user's files (synthetic_motion needs none)."""
  root = pathlib.Path(manual_dir)
  if name == "ucf101":  # classInd.txt: "<1-based id> <name>"
    entries = [line.split() for line in _lines(root / "ucfTrainTestlist" / "classInd.txt")]
    return tuple(n for _, n in sorted(entries, key=lambda e: int(e[0])))
  if name == "hmdb51":
    splits = root / "testTrainMulti_7030_splits"
    return tuple(sorted({re.sub(r"_test_split\d\.txt$", "", p.name) for p in splits.glob("*_test_split*.txt")}))
  if name == "video_folder":
    return tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "splits"))
  raise ValueError(f"{name} takes no class list")


def make_builder(name: str, data_dir, config: str | None = None, manual_dir=None) -> tfds.core.DatasetBuilder:
  if name not in BUILDERS:
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(BUILDERS)}")
  cls = BUILDERS[name]
  if name == "synthetic_motion":
    return cls(data_dir=str(data_dir), config=config or cls.BUILDER_CONFIGS[0].name, file_format="array_record")
  config = config or cls.CONFIG_NAMES[0]
  if config not in cls.CONFIG_NAMES:
    raise ValueError(f"{name} has no config {config!r}; known: {', '.join(cls.CONFIG_NAMES)}")
  if manual_dir is None:
    raise ValueError(f"{name} is built from your files: pass --manual_dir. {cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")
  builder_config = VideoConfig(name=config, classes=class_names(name, manual_dir))
  return cls(data_dir=str(data_dir), config=builder_config, file_format="array_record")


def build(name: str, data_dir, config: str | None = None, manual_dir=None) -> tfds.core.DatasetBuilder:
  """Prepares the dataset under data_dir/<name>/<config>/<version>/ as array_record files."""
  builder = make_builder(name, data_dir, config, manual_dir)
  download_config = tfds.download.DownloadConfig(manual_dir=str(manual_dir)) if manual_dir else None
  builder.download_and_prepare(download_config=download_config)
  return builder
