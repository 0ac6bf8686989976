"""Video data: builders on tiny videos written with PyAV, VideoMAE sampling, the grain pipelines."""

import dataclasses
import os
import sys
import threading
import time

import ml_collections
import numpy as np
import pytest

from gardener_jax.data import builders, input_pipeline, sampling, sources, synthetic, video_io
from gardener_jax.data.input_pipeline import ClipSpec

SPEC = ClipSpec(num_frames=4, sampling_rate=2, image_size=32)


def test_train_indices_follow_videomae():
  rng = np.random.default_rng(0)
  for _ in range(20):
    index = sampling.train_indices(100, 8, 4, rng)
    assert len(index) == 8 and np.all(np.diff(index) >= 4) and index[-1] - index[0] <= 32 and index.max() < 100
  # shorter than 8 × 4 frames: 10 // 4 points spread over [0, 10] (clipped), then the last frame repeated
  assert sampling.train_indices(10, 8, 4, rng).tolist() == [0, 9, 9, 9, 9, 9, 9, 9]
  assert sampling.train_indices(30, 8, 4, rng).tolist() == [0, 5, 10, 15, 20, 25, 29, 29]
  assert sampling.train_indices(1, 4, 4, rng).tolist() == [0, 0, 0, 0]


def test_eval_indices_and_crops():
  clips = sampling.eval_indices(100, 8, 4, num_clips=3)
  assert clips.shape == (3, 8) and clips[0, 0] == 0 and clips[-1, -1] == 96 and np.all(np.diff(clips) == 4)
  assert sampling.eval_indices(100, 8, 4, num_clips=1)[0, 0] == 8 * 4  # centred: 25 strided frames, 17 spare
  assert sampling.eval_indices(6, 4, 2, num_clips=2).tolist() == [[0, 2, 4, 4], [0, 2, 4, 4]]
  assert sampling.eval_crop_boxes(32, 48, 32, 3) == [(0, 0, 32, 32), (0, 8, 32, 32), (0, 16, 32, 32)]
  assert sampling.eval_crop_boxes(48, 32, 32, 1) == [(8, 0, 32, 32)]
  top, left, h, w = sampling.random_resized_crop_box(40, 60, np.random.default_rng(1))
  assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 60


def test_synthetic_motion_is_deterministic_and_motion_defined():
  a = synthetic.render("disc_up", 32, 8, seed=(0, 1))
  assert np.array_equal(a, synthetic.render("disc_up", 32, 8, seed=(0, 1)))
  b = synthetic.render("disc_down", 32, 8, seed=(0, 1))
  assert np.array_equal(a[0], b[0]) and not np.array_equal(a[4], b[4])  # same first frame, different motion


def _write_tree(root, classes=("jump", "run", "walk"), per_class=3, suffixes=(".mp4", ".avi")):
  for c, name in enumerate(classes):
    (root / name).mkdir(parents=True)
    for i in range(per_class):
      frames = synthetic.render(synthetic.CLASSES[c], 48, 12 + 4 * i, seed=(c, i))
      video_io.write_video(root / name / f"v_{name}_{i}{suffixes[i % len(suffixes)]}", frames)
  return root


def test_video_folder_with_split_lists_and_a_corrupt_file(tmp_path):
  root = _write_tree(tmp_path / "videos")
  (root / "run" / "broken.mp4").write_bytes(b"not a video")
  (root / "splits").mkdir()
  (root / "splits" / "train.txt").write_text("jump/v_jump_0.mp4\njump/v_jump_1.avi\nrun/v_run_0.mp4\nrun/broken.mp4\n")
  (root / "splits" / "test.txt").write_text("walk/v_walk_2.mp4 2\nrun/v_run_1.avi\n")
  builders.build("video_folder", tmp_path / "data", manual_dir=root)
  train, info = sources.open_split(tmp_path / "data", "video_folder", "train")
  assert info.features["label"].names == ["jump", "run", "walk"]
  assert len(train) == 3  # the broken video is skipped
  by_id = {train[i]["video_id"].decode(): train[i] for i in range(len(train))}
  assert by_id["jump/v_jump_1.avi"]["num_frames"] == 16 and by_id["run/v_run_0.mp4"]["label"] == 1
  assert len(by_id["jump/v_jump_1.avi"]["frames"]) == 16
  test, _ = sources.open_split(tmp_path / "data", "video_folder", "test")
  assert sorted(test[i]["video_id"].decode() for i in range(len(test))) == ["run/v_run_1.avi", "walk/v_walk_2.mp4"]


def test_ucf101_and_hmdb51_layouts(tmp_path):
  ucf = tmp_path / "ucf"
  _write_tree(ucf / "UCF-101", classes=("ApplyEyeMakeup", "Archery"), per_class=2)
  lists = ucf / "ucfTrainTestlist"
  lists.mkdir()
  (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
  (lists / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_0.mp4 1\nArchery/v_Archery_0.mp4 2\n")
  (lists / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_1.avi\nArchery/v_Archery_1.avi\n")
  builders.build("ucf101", tmp_path / "data", "split_1", manual_dir=ucf)
  test, info = sources.open_split(tmp_path / "data", "ucf101", "test", "split_1")
  assert info.features["label"].names == ["ApplyEyeMakeup", "Archery"]
  assert sorted(int(test[i]["label"]) for i in range(len(test))) == [0, 1]

  hmdb = tmp_path / "hmdb"
  _write_tree(hmdb / "videos", classes=("brush_hair", "cartwheel"), per_class=3, suffixes=(".avi",))
  (hmdb / "testTrainMulti_7030_splits").mkdir()
  for name in ("brush_hair", "cartwheel"):
    (hmdb / "testTrainMulti_7030_splits" / f"{name}_test_split1.txt").write_text(
        f"v_{name}_0.avi 1 \nv_{name}_1.avi 2 \nv_{name}_2.avi 0 \n")
  builders.build("hmdb51", tmp_path / "data", "split_1", manual_dir=hmdb)
  train, info = sources.open_split(tmp_path / "data", "hmdb51", "train", "split_1")
  assert info.features["label"].names == ["brush_hair", "cartwheel"] and len(train) == 2
  assert len(sources.open_split(tmp_path / "data", "hmdb51", "test", "split_1")[0]) == 2


def test_per_class_split_is_fixed_and_disjoint():
  videos = [f"c{c}/v{i}.avi" for c in range(3) for i in range(12)]
  train, test = builders.per_class_split(videos, train=7, test=2, seed=0)
  assert len(train) == 21 and len(test) == 6 and not set(train) & set(test)
  assert (train, test) == builders.per_class_split(list(reversed(videos)), train=7, test=2, seed=0)
  with pytest.raises(ValueError, match="class 'c0' has 12 videos in 12 groups; the split needs 70 \\+ 10"):
    builders.per_class_split(videos, train=70, test=10, seed=0)


def test_gardener_70_10_keeps_each_ucf101_group_on_one_side():
  # UCF101's layout: 25 groups per class, 4 to 7 clips each (v_<Class>_g<group>_c<clip>.avi)
  rng = np.random.default_rng(0)
  videos = [f"{c}/v_{c}_g{g:02d}_c{i:02d}.avi" for c in ("Archery", "Biking", "Diving") for g in range(1, 26)
            for i in range(1, int(rng.integers(4, 8)) + 1)]
  train, test = builders.per_class_split(videos, train=70, test=10, seed=0)
  assert len(train) == 3 * 70 and len(test) == 3 * 10

  def groups(paths):
    return {(p.split("/")[0], builders.video_group(p)) for p in paths}
  assert groups(train) and not groups(train) & groups(test)
  assert builders.video_group("Archery/v_Archery_g08_c03.avi") == "08"


@pytest.fixture(scope="module")
def synthetic_source(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("data")
  builders.build("synthetic_motion", data_dir, "tiny")
  return sources.open_split(data_dir, "synthetic_motion", "train")[0], data_dir


def _batches(pipeline, n):
  iterator = iter(pipeline)
  return [next(iterator) for _ in range(n)]


def test_train_pipeline_is_seeded_and_workers_agree(synthetic_source):
  source, _ = synthetic_source
  a = _batches(input_pipeline.train_pipeline(source, SPEC, batch_size=4, seed=1), 5)
  b = _batches(input_pipeline.train_pipeline(source, SPEC, batch_size=4, seed=1, num_workers=2), 5)
  c = _batches(input_pipeline.train_pipeline(source, SPEC, batch_size=4, seed=2), 5)
  assert all(np.array_equal(x["clips"], y["clips"]) and np.array_equal(x["label"], y["label"]) for x, y in zip(a, b))
  assert not all(np.array_equal(x["clips"], y["clips"]) for x, y in zip(a, c))
  assert a[0]["clips"].shape == (4, 4, 32, 32, 3) and a[0]["clips"].dtype == np.uint8
  labels = np.concatenate([x["label"] for x in a[:4]])  # 16 videos: an epoch covers every one
  assert sorted(labels.tolist()) == sorted([i // 4 for i in range(16)])


def test_each_host_shuffles_and_augments_with_its_own_seed(synthetic_source):
  """Two shards holding copies of one video: the same seed on both would give the same clips in the same order."""
  source, _ = synthetic_source
  copies = [source[0]] * 8

  def first_batches(shard: int):
    return _batches(input_pipeline.train_pipeline(copies, SPEC, batch_size=2, seed=3, shard_index=shard,
                                                  shard_count=2), 2)

  zero, one = first_batches(0), first_batches(1)
  assert not any(np.array_equal(x["clips"], y["clips"]) for x, y in zip(zero, one))
  single = _batches(input_pipeline.train_pipeline(copies[::2], SPEC, batch_size=2, seed=3), 2)
  assert all(np.array_equal(x["clips"], y["clips"]) for x, y in zip(zero, single))  # process 0 keeps the job's seed


def test_host_shards_are_disjoint_and_cover_the_split(synthetic_source):
  source, _ = synthetic_source
  spec = ClipSpec(num_frames=4, sampling_rate=2, image_size=32, num_clips=2, num_crops=3)
  seen = []
  for shard in range(3):
    for batch in input_pipeline.eval_pipeline(source, spec, batch_size=4, shard_index=shard, shard_count=3):
      assert batch["clips"].shape[1:] == (6, 4, 32, 32, 3)
      seen += batch["video_index"].tolist()
  assert sorted(seen) == list(range(len(source)))


def test_corrupt_stored_frames_are_counted_and_skipped(synthetic_source):
  source, _ = synthetic_source
  examples = [source[i] for i in range(4)]
  examples[2] = {**examples[2], "frames": [b"garbage"] * len(examples[2]["frames"])}
  pipeline = input_pipeline.train_pipeline(examples, SPEC, batch_size=3, seed=0, num_epochs=1)
  batches = list(pipeline)
  assert len(batches) == 1 and pipeline.skipped.count == 1


@pytest.mark.parametrize("workers", [0, 2])
def test_a_restored_train_stream_continues_exactly_after_skipped_videos(synthetic_source, workers):
  source, _ = synthetic_source
  examples = [source[i] for i in range(len(source))]
  examples[5] = {**examples[5], "frames": [b"garbage"] * len(examples[5]["frames"])}
  pipeline = input_pipeline.train_pipeline(examples, SPEC, batch_size=3, seed=0, num_workers=workers)
  iterator = iter(pipeline)
  for _ in range(4):  # an epoch of 16 videos, one unreadable: 5 batches of 3
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(5)]
  assert pipeline.skipped.count >= 1

  resumed = iter(input_pipeline.train_pipeline(examples, SPEC, batch_size=3, seed=0, num_workers=workers))
  resumed.set_state(state)
  for want, got in zip(expected, (next(resumed) for _ in range(5)), strict=True):
    np.testing.assert_array_equal(want["clips"], got["clips"])
    np.testing.assert_array_equal(want["label"], got["label"])


@pytest.mark.parametrize("workers", [0, 2])
def test_device_prefetch_state_is_the_batches_handed_out_not_those_read_ahead(synthetic_source, workers):
  source, _ = synthetic_source
  reference = _batches(input_pipeline.train_pipeline(source, SPEC, batch_size=3, seed=0), 7)
  puts = []

  def put(batch):
    puts.append(1)
    return {k: np.array(v) for k, v in batch.items()}

  prefetch = input_pipeline.DevicePrefetch(iter(input_pipeline.train_pipeline(source, SPEC, batch_size=3, seed=0,
                                                                              num_workers=workers)), put, size=2)
  for want in reference[:3]:
    np.testing.assert_array_equal(next(prefetch)["clips"], want["clips"])
  deadline = time.monotonic() + 30
  while len(puts) < 5 and time.monotonic() < deadline:  # the thread reads two batches ahead of the consumer
    time.sleep(0.01)
  assert len(puts) >= 5
  state = prefetch.get_state()
  prefetch.close()
  resumed = input_pipeline.DevicePrefetch(iter(input_pipeline.train_pipeline(source, SPEC, batch_size=3, seed=0,
                                                                             num_workers=workers)), put)
  resumed.set_state(state)
  for want in reference[3:]:
    got = next(resumed)
    np.testing.assert_array_equal(got["clips"], want["clips"])
    np.testing.assert_array_equal(got["label"], want["label"])
  with pytest.raises(RuntimeError, match="before the first batch"):
    resumed.set_state(state)
  resumed.close()


def test_device_prefetch_ends_with_its_stream_and_raises_its_errors():
  assert list(input_pipeline.DevicePrefetch(iter([{"x": 1}, {"x": 2}, {"x": 3}]), lambda b: b["x"])) == [1, 2, 3]

  def failing():
    yield {"x": 1}
    raise video_io.VideoError("broken.mp4: cannot decode")

  prefetch = input_pipeline.DevicePrefetch(failing(), lambda b: b["x"])
  assert next(prefetch) == 1
  for _ in range(2):  # and again: the error is not lost to a later call
    with pytest.raises(video_io.VideoError, match="broken.mp4"):
      next(prefetch)


@pytest.mark.skipif(sys.platform != "linux", reason="niceness per thread is Linux's")
def test_device_prefetch_reads_at_low_priority_and_leaves_the_caller_alone():
  def niceness():
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

  def batches():
    started = []
    thread = threading.Thread(target=lambda: started.append(niceness()))  # as grain's reading threads start
    thread.start()
    thread.join()
    yield {"reader": niceness(), "started": started[0]}

  caller = niceness()
  assert next(input_pipeline.DevicePrefetch(batches(), dict, nice=19)) == {"reader": 19, "started": 19}
  assert next(input_pipeline.DevicePrefetch(batches(), dict)) == {"reader": caller, "started": caller}
  assert niceness() == caller
  config = ml_collections.ConfigDict(dict(num_frames=4, sampling_rate=2, image_size=32, augment=False, flip=False,
                                          min_crop_area=0.5, num_clips=1, num_crops=1, workers=0,
                                          eval_batch_size=4))
  assert input_pipeline.pipelines_from_config(config, seed=0).input_nice == 19  # the default where unset


def test_clips_stay_uint8_until_the_device_normalises_them(synthetic_source):
  import jax

  source, _ = synthetic_source
  views = input_pipeline.eval_views(source[0], 0, ClipSpec(num_frames=4, sampling_rate=2, image_size=32))
  assert views["clips"].dtype == np.uint8
  on_host = sampling.normalize(views["clips"])
  on_device = jax.jit(sampling.normalize)(views["clips"])
  np.testing.assert_array_equal(np.asarray(on_device), on_host)  # the same bits: seeded runs do not move
  np.testing.assert_array_equal(on_host, (views["clips"].astype(np.float32) / 255.0 - sampling.IMAGENET_MEAN)
                                / sampling.IMAGENET_STD)
  pixel = views["clips"][0, 1, 2, 3].astype(np.float64)
  np.testing.assert_allclose(on_host[0, 1, 2, 3], (pixel / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225],
                             rtol=1e-6)
  with pytest.raises(TypeError, match="expected uint8 RGB frames, got float32"):
    sampling.normalize(on_host)


def test_data_inspect_describes_a_batch_and_draws_a_contact_sheet(synthetic_source, tmp_path):
  from gardener_jax.data import inspect

  _, data_dir = synthetic_source
  text = inspect.inspect(data_dir, "synthetic_motion", "tiny", SPEC, str(tmp_path / "sheet.png"), batch_size=3)
  assert "train: 16 videos" in text and "clips (3, 4, 32, 32, 3) uint8" in text
  from PIL import Image
  assert Image.open(tmp_path / "sheet.png").size == (4 * 32, 3 * 32)
  assert (tmp_path / "sheet.txt").read_text().count("row ") == 3


def test_frames_stored_larger_than_needed_are_decoded_at_a_reduced_scale():
  frames = synthetic.render("disc_up", 128, 8, seed=(0, 0))
  jpegs = video_io.encode_jpeg(frames)
  assert video_io.jpeg_size(jpegs, 0) == (128, 128)
  assert video_io.decode_jpeg(jpegs, [0, 3], min_size=(32, 32)).shape == (2, 32, 32, 3)  # 1/4
  assert video_io.decode_jpeg(jpegs, [0], min_size=(40, 40)).shape == (1, 48, 48, 3)  # 3/8
  assert video_io.decode_jpeg(jpegs, [0], min_size=(70, 70)).shape == (1, 128, 128, 3)  # under 2 ×: whole
  example = {"frames": jpegs, "num_frames": 8, "label": 1, "video_id": b"big"}
  spec = ClipSpec(num_frames=4, sampling_rate=2, image_size=32, augment=False)
  index = sampling.eval_indices(8, 4, 2, 1)[0]
  whole = video_io.resize_short_side(video_io.decode_jpeg(jpegs, index), 32)
  np.testing.assert_array_equal(input_pipeline.eval_views(example, 0, spec)["clips"][0], whole)  # off by default
  scaled = dataclasses.replace(spec, scaled_decode=True)
  reduced = input_pipeline.eval_views(example, 0, scaled)["clips"][0]
  assert reduced.shape == whole.shape == (4, 32, 32, 3) and not np.array_equal(reduced, whole)
  assert np.abs(reduced.astype(int) - whole.astype(int)).mean() < 4  # the same picture, resampled otherwise
  for seed in range(5):
    for train_spec in (SPEC, dataclasses.replace(SPEC, scaled_decode=True)):
      clip = input_pipeline.train_clip(example, np.random.default_rng(seed), train_spec)["clips"]
      assert clip.shape == (4, 32, 32, 3) and clip.dtype == np.uint8


def test_an_unreadable_jpeg_header_is_a_video_error():
  with pytest.raises(video_io.VideoError, match="header"):
    video_io.jpeg_size([b"garbage"], 0)


@pytest.mark.parametrize("scaled_decode", [False, True])
def test_a_video_with_fewer_stored_frames_than_it_claims_is_skipped_or_invalid(scaled_decode):
  example = {"frames": [], "num_frames": 8, "label": 0, "video_id": b"short"}
  spec = dataclasses.replace(SPEC, scaled_decode=scaled_decode)
  assert "corrupt" in input_pipeline.train_clip(example, np.random.default_rng(0), spec)
  views = input_pipeline.eval_views(example, 3, dataclasses.replace(spec, augment=False))
  assert not views["valid"] and views["clips"].dtype == np.uint8 and views["video_index"] == 3
