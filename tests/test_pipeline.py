"""Video inference end to end: the model directory, `emoflow predict` on a SynthCrowd video, the
predictions schema, the annotated video, a faceless video, one-line mistakes."""

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
from emoflow import bundle, pipeline
from emoflow.labels import EMOTIONS, GROUP_EMOTIONS
from emoflow.models import EmoNet
from emoflow.tasks import group as group_task
from emoflow.tasks import video as video_task
from emoflow.vision import detect, retinaface, rpn
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
