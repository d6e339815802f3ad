"""Video inference end to end: the model directory, `emoflow predict` on a SynthCrowd video, the
predictions schema, the annotated video, a faceless video, one-line mistakes."""

import contextlib
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from assets.runner import ROOT, predict

from data_pipelines.synthcrowd import crowds, videos
from emoflow import bundle, cli, pipeline
from emoflow.labels import EMOTIONS, GROUP_EMOTIONS
from emoflow.models import EmoNet
from emoflow.tasks import group as group_task
from emoflow.tasks import video as video_task
from emoflow.vision import detect, draw, retinaface, rpn
from emoflow.vision import video as video_io

M, N, G = 16, 4, 3
GROUP_MODEL = {"fusion": "fec", "num_classes": 3, "max_faces": N, "flow_units": 1, "flow_width": 4,
               "prior": "learned_gaussian", "ce_weight": 1.0, "feb_hidden": 8}
VIDEO_MODEL = {"cell": "tnvpf", "num_classes": 3, "max_groups": G, "max_faces": N, "hidden": 8,
               "group_units": 1, "group_width": 4, "frame_units": 1, "frame_width": 4,
               "group_pooling": "mean", "prior": "learned_gaussian", "nll_weight": 0.0}


def _save_bundle(directory, with_video: bool = True, with_detector: bool = False,
                 with_rpn: bool = False) -> None:
  """Untrained models of every stage, saved as export_model does."""
  emonet = EmoNet(num_classes=8, embed_dim=M).init(jax.random.key(0), jnp.zeros((1, 112, 112, 3)))
  fusion = group_task.make_fusion(ml_collections.ConfigDict(GROUP_MODEL))
  variables = {"emonet": emonet, "group": fusion.init(
      jax.random.key(1), jnp.zeros((1, N, M)), jnp.ones((1, N), bool))}
  config = {"emonet": {"num_classes": 8, "embed_dim": M}, "group": GROUP_MODEL, "video": None,
            "sampling_fps": 2.0, "labels": pipeline.vocabulary(EMOTIONS),
            "preprocessing": pipeline.preprocessing()}
  if with_video:
    temporal = video_task.make_fusion(ml_collections.ConfigDict(VIDEO_MODEL))
    variables["video"] = temporal.init(jax.random.key(2), jnp.zeros((1, 1, G, N, M)),
                                       jnp.ones((1, 1, G, N), bool), jnp.ones((1, 1, G), bool),
                                       jnp.ones((1, 1), bool))
    config["video"] = VIDEO_MODEL
  if with_detector:  # score threshold 0: an untrained network still fills every face slot
    variables["detector"] = retinaface.RetinaFace().init(jax.random.key(3),
                                                         jnp.zeros((1, 64, 64, 3)))
    config["detector"] = {"trunk": "mobilenet0.25", "dtype": "float32", "input_scale": 0.5,
                          "score_threshold": 0.0, "nms_threshold": 0.4}
  if with_rpn:  # untrained: offsets near 0, so its proposals are anchors (threshold 0)
    variables["rpn"] = rpn.RPN(num_anchors=4, width=0.125).init(jax.random.key(4),
                                                               jnp.zeros((1, 64, 64, 3)))
    config["rpn"] = {"width": 0.125, "dtype": "float32", "scales": [40.0, 80.0],
                     "ratios": [1.0, 2.0], "input_scale": 0.5, "score_threshold": 0.0,
                     "nms_threshold": 0.7, "max_proposals": 6, "min_size": 1.0}
  bundle.save(str(directory), config, jax.device_get(variables))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
  directory = tmp_path_factory.mktemp("model") / "bundle"
  _save_bundle(directory)
  return str(directory)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
  """A 2-3 s SynthCrowd video (8-16 faces, 1-3 groups) and its annotation."""
  directory = tmp_path_factory.mktemp("video")
  annotation = videos.render_video(
      np.random.default_rng(0), str(directory), "clip",
      crowds.CrowdDifficulty(num_faces=(8, 16), num_groups=(1, 3)),
      videos.VideoSpec(duration_s=(2.0, 3.0), fps=(5, 8)))
  return str(directory / "clip.mp4"), annotation


def _predict_as_typed(*args):
  """`python -m emoflow.cli predict ARGS` in a new interpreter, as a user types it."""
  return subprocess.run([sys.executable, "-m", "emoflow.cli", "predict", *map(str, args)],
                        cwd=ROOT, capture_output=True, text=True, timeout=600)


def _check_schema(doc: dict) -> None:
  """The predictions layout (emoflow.pipeline): types, label vocabularies, probability sums."""
  def probabilities(scores, names):
    assert set(scores) == set(names)
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-3)

  assert set(doc) == {"video", "fps", "num_frames", "width", "height", "sampled_fps", "label",
                      "scores", "scores_mean_of_frames", "frames", "tracks", "model"}
  assert doc["label"] in GROUP_EMOTIONS + ("unknown",)
  for key in ("scores", "scores_mean_of_frames"):
    if doc[key] is not None:
      probabilities(doc[key], GROUP_EMOTIONS)
  indices = [f["index"] for f in doc["frames"]]
  assert indices == sorted(set(indices)) and all(0 <= i < doc["num_frames"] for i in indices)
  for frame in doc["frames"]:
    assert set(frame) == {"index", "time", "label", "scores", "faces", "groups", "dropped_faces"}
    assert isinstance(frame["dropped_faces"], int) and frame["dropped_faces"] >= 0
    assert frame["label"] in GROUP_EMOTIONS + ("unknown",)
    for face in frame["faces"]:
      assert set(face) == {"box", "landmarks", "emotion", "scores", "detection_score", "track"}
      assert len(face["box"]) == 4 and np.asarray(face["landmarks"]).shape == (5, 2)
      assert face["emotion"] in EMOTIONS and isinstance(face["track"], int)
      probabilities(face["scores"], EMOTIONS)
    members = sorted(i for g in frame["groups"] for i in g["faces"])
    assert len(members) == len(set(members)) and all(0 <= i < len(frame["faces"]) for i in members)
    for g in frame["groups"]:
      assert set(g) == {"box", "label", "scores", "faces"} and g["label"] in GROUP_EMOTIONS
      probabilities(g["scores"], GROUP_EMOTIONS)
  for track in doc["tracks"]:
    assert len(track["frames"]) == len(track["emotions"])


def test_bundle_round_trip_and_replace(tmp_path):
  _save_bundle(tmp_path / "m", with_video=False)
  first = bundle.load(str(tmp_path / "m"))
  assert first.config["video"] is None and set(first.variables) == {"emonet", "group"}
  _save_bundle(tmp_path / "m")
  second = bundle.load(str(tmp_path / "m"))
  assert set(second.variables) == {"emonet", "group", "video"}
  assert sorted(os.listdir(tmp_path)) == ["m"]  # no staging or replaced directory left
  with pytest.raises(ValueError, match="is not an emoflow model directory"):
    bundle.load(str(tmp_path))


@pytest.mark.slow
def test_predict_on_a_synthcrowd_video(tmp_path, model_dir, clip):
  path, annotation = clip
  result = _predict_as_typed(path, "--model", model_dir, "--out", tmp_path / "out", "--quiet")
  assert result.returncode == 0, result.stderr[-3000:]
  doc = json.loads((tmp_path / "out" / "predictions.json").read_text())
  _check_schema(doc)
  step = max(1, round(annotation.fps / 2.0))  # the bundle's sampling_fps
  assert len(doc["frames"]) == len(range(0, annotation.num_frames, step))
  for frame in doc["frames"]:  # the annotations detector: exactly the rendered faces
    truth = annotation.frames[frame["index"]].faces
    assert len(frame["faces"]) == len(truth)
  assert doc["label"] in GROUP_EMOTIONS
  assert video_io.probe(str(tmp_path / "out" / "annotated.mp4")).num_frames == annotation.num_frames
  assert os.path.getsize(tmp_path / "out" / "timeline.png") > 0


@pytest.mark.slow
def test_predict_runs_the_model_directorys_detector(tmp_path, clip):
  path, annotation = clip
  _save_bundle(tmp_path / "m", with_detector=True)
  assert bundle.load(str(tmp_path / "m")).config["detector"]["trunk"] == "mobilenet0.25"
  result = predict(path, "--model", tmp_path / "m", "--out", tmp_path / "out", "--quiet",
                    "--no-video", "--max-faces", 5, "--detector-scale", 0.25)
  assert result.returncode == 0, result.stderr[-3000:]
  doc = json.loads((tmp_path / "out" / "predictions.json").read_text())
  _check_schema(doc)
  # Not the annotation beside the video (8-16 faces a frame): the detector's 5 slots, all filled.
  assert [len(f["faces"]) for f in doc["frames"]] == [5] * len(doc["frames"])


@pytest.mark.slow
def test_predict_groups_by_the_model_directorys_rpn(tmp_path, clip):
  path, _ = clip
  _save_bundle(tmp_path / "m", with_video=False, with_rpn=True)
  result = predict(path, "--model", tmp_path / "m", "--out", tmp_path / "out", "--quiet",
                    "--no-video", "--grouping", "rpn")
  assert result.returncode == 0, result.stderr[-3000:]
  doc = json.loads((tmp_path / "out" / "predictions.json").read_text())
  _check_schema(doc)
  for frame in doc["frames"]:  # every face in exactly one group, whatever the proposals
    assert sorted(i for g in frame["groups"] for i in g["faces"]) == list(range(len(frame["faces"])))


def test_a_video_without_faces_gives_empty_lists_and_unknown(tmp_path, model_dir):
  path = str(tmp_path / "empty.mp4")
  with video_io.write_video(path, 5.0, (64, 48)) as write:
    for _ in range(6):
      write(np.full((48, 64, 3), 90, np.uint8))
  frames = [{"index": i, "label": None, "faces": [], "groups": []} for i in range(6)]
  (tmp_path / "empty.json").write_text(json.dumps({"frames": frames}))
  result = predict(path, "--model", model_dir, "--out", tmp_path / "out", "--quiet", "--fps", "5")
  assert result.returncode == 0, result.stderr[-3000:]
  doc = json.loads((tmp_path / "out" / "predictions.json").read_text())
  _check_schema(doc)
  assert doc["label"] == "unknown" and doc["scores"] is None and doc["tracks"] == []
  assert [f["faces"] for f in doc["frames"]] == [[]] * 6
  assert all(f["groups"] == [] and f["label"] == "unknown" for f in doc["frames"])


def test_mistakes_are_one_line(tmp_path, model_dir, clip):
  path, _ = clip
  cases = {
      (str(tmp_path / "nope.mp4"), "--model", model_dir): f"error: {tmp_path}/nope.mp4 does not exist",
      (path, "--model", str(tmp_path)):
          f"error: {tmp_path} is not an emoflow model directory (no model.json, weights.msgpack); "
          "make one with `python -m experiments.export_model`",
      (path, "--model", model_dir, "--detector-scale", "0"):
          "error: --detector-scale must be positive, got 0.0",
      (path, "--model", model_dir, "--rpn-scale", "-1"):
          "error: --rpn-scale must be positive, got -1.0",
      (path, "--model", model_dir, "--detector", "yunet"):
          "error: --detector yunet needs --yunet-model FILE.onnx",
      (path, "--model", model_dir, "--annotations", str(tmp_path / "none.json"), "--detector",
       "auto"): f"error: no detector: {tmp_path}/none.json does not exist and {model_dir} holds "
                "none; give --detector mtcnn, --detector retinaface --retinaface-weights "
                "FILE.pth, --detector yunet --yunet-model FILE.onnx, or --annotations FILE.json",
      (path, "--model", model_dir, "--detector", "retinaface"):
          f"error: --detector retinaface needs --retinaface-weights FILE.pth ({model_dir} holds "
          "no detector; see experiments.export_model --detector)",
      (path, "--model", model_dir, "--detector", "retinaface", "--retinaface-weights",
       str(tmp_path / "none.pth")): f"error: {tmp_path}/none.pth does not exist",
      (path, "--model", model_dir, "--grouping", "rpn"):
          "error: the model directory holds no group proposal network; add one with "
          "`experiments.export_model --rpn=RUN` or use --grouping kmeans",
  }
  for args, message in cases.items():
    result = predict(*args, "--quiet")
    assert result.returncode == 2, (args, result.stderr[-2000:])
    assert result.stderr.strip().splitlines() == [message], args


class _RecordingDetector:
  """Annotation faces, recording the number of frames of every call."""

  def __init__(self, annotation_path: str):
    with open(annotation_path) as f:
      faces = {frame["index"]: frame["faces"] for frame in json.load(f)["frames"]}
    self.inner, self.batch_sizes = detect.make("annotations", faces=faces), []

  def __call__(self, frames, indices=None):
    self.batch_sizes.append(len(frames))
    return self.inner(frames, indices)


@pytest.mark.slow
def test_a_short_last_batch_runs_in_the_full_batches_shape_and_changes_nothing(model_dir, clip):
  path, annotation = clip
  model = bundle.load(model_dir)
  annotation_path = os.path.splitext(path)[0] + ".json"
  batched = _RecordingDetector(annotation_path)
  doc = pipeline.Pipeline(model, batched).run(path, batch_frames=3, progress=False)
  assert len(doc["frames"]) % 3 and len(doc["frames"]) > 3  # the clip ends with a short batch
  assert set(batched.batch_sizes) == {3}  # one program for every batch
  single = pipeline.Pipeline(model, _RecordingDetector(annotation_path)).run(
      path, batch_frames=1, progress=False)
  assert [f["index"] for f in doc["frames"]] == [f["index"] for f in single["frames"]]
  for ours, theirs in zip(doc["frames"], single["frames"]):
    assert [f["box"] for f in ours["faces"]] == [f["box"] for f in theirs["faces"]]
    assert [f["track"] for f in ours["faces"]] == [f["track"] for f in theirs["faces"]]
    for a, b in zip(ours["faces"] + ours["groups"], theirs["faces"] + theirs["groups"]):
      assert a["scores"] == pytest.approx(b["scores"], abs=1e-4)
  assert doc["scores"] == pytest.approx(single["scores"], abs=1e-4)


def test_annotated_video_hands_the_writer_what_a_plain_loop_draws(tmp_path, monkeypatch):
  """write_annotated_video (drawing laid out once per sampled frame, decoding in a thread) gives
  the frames of a loop drawing every input frame with draw's functions, frames before the first
  sampled one included."""
  rng = np.random.default_rng(0)
  source, size, num_frames = str(tmp_path / "in.mp4"), (160, 96), 9
  with video_io.write_video(source, 10.0, size) as write:
    for _ in range(num_frames):
      write(rng.integers(0, 256, (size[1], size[0], 3), np.uint8))
  faces = [{"box": [10.2, 20.0, 40.6, 48.7], "emotion": "happy"},
           {"box": [60.5, 30.0, 90.0, 60.0], "emotion": None}]
  frames = [{"index": 2, "label": "positive", "faces": faces,
             "groups": [{"box": [8.0, 18.0, 92.0, 62.0], "label": "positive", "faces": [0, 1]}]},
            {"index": 5, "label": "unknown", "faces": [faces[0] | {"emotion": "angry"}],
             "groups": [{"box": [8.0, 18.0, 42.0, 50.0], "label": "negative", "faces": [0]}]}]
  doc = {"fps": 10.0, "num_frames": num_frames, "width": size[0], "height": size[1],
         "frames": frames}
  written, real = [], video_io.write_video

  @contextlib.contextmanager
  def recording(*args):
    with real(*args) as write:
      yield lambda frame: (written.append(frame.copy()), write(frame))

  monkeypatch.setattr(video_io, "write_video", recording)
  cli.write_annotated_video(source, doc, str(tmp_path / "annotated.mp4"), progress=False)
  segments = [(2 / 9, 5 / 9, "positive"), (5 / 9, 1.0, "unknown")]
  expected = []
  for index, image in video_io.read_frames(source):
    if index >= 2:
      frame = frames[0] if index < 5 else frames[1]
      image = draw.draw_annotations(
          image, [f["box"] for f in frame["faces"]], [f["emotion"] for f in frame["faces"]],
          [g["box"] for g in frame["groups"]], [g["label"] for g in frame["groups"]],
          frame_label=frame["label"])
      draw.draw_group_hulls(image, [f["box"] for f in frame["faces"]],
                            [g["faces"] for g in frame["groups"]],
                            [g["label"] for g in frame["groups"]])
    expected.append(draw.draw_label_strip(image, segments, index / num_frames))
  assert len(written) == num_frames
  for index, (got, want) in enumerate(zip(written, expected)):
    np.testing.assert_array_equal(got, want, err_msg=f"frame {index}")
  assert video_io.probe(str(tmp_path / "annotated.mp4")).num_frames == num_frames


@pytest.mark.slow
def test_a_second_process_on_another_video_of_the_same_size_compiles_nothing(tmp_path, model_dir):
  spec = videos.VideoSpec(duration_s=(2.0, 2.0), fps=(6, 6))
  crowd = crowds.CrowdDifficulty(num_faces=(8, 16), num_groups=(1, 3))
  paths = []
  for seed, name in enumerate(("first", "second")):
    videos.render_video(np.random.default_rng(seed), str(tmp_path), name, crowd, spec)
    paths.append(str(tmp_path / f"{name}.mp4"))
  cache, jax_default = tmp_path / "cache", tmp_path / "jax_default"
  env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(jax_default)}

  def run(video, out, *flags, **more_env):
    result = subprocess.run([sys.executable, "-m", "emoflow.cli", "predict", video, "--model",
                             model_dir, "--out", str(tmp_path / out), "--quiet", "--no-video",
                             *flags], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**env, **more_env})
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / out / "predictions.json") as f:
      return json.load(f)

  run(paths[0], "cold", "--compile-cache", str(cache))
  programs = sorted(os.listdir(cache))
  assert programs
  warm = run(paths[1], "warm", "--compile-cache", str(cache))
  assert sorted(os.listdir(cache)) == programs  # every program came from the cache
  assert run(paths[1], "uncached", EMOFLOW_COMPILE_CACHE="off") == warm
  assert not jax_default.exists() or not os.listdir(jax_default)  # off: JAX's own dir unused too
