"""The preprocessing traps pinned: every label order (emoflow's vocabularies and each dataset's
mapping to them), the alignment template, and a model directory that records both, which
predict checks."""

import os

import numpy as np
import pytest
from test_pipeline import _save_bundle

from data_pipelines.builders import emotiw_gaf, vgaf
from emoflow import bundle, cli, labels, pipeline
from emoflow.vision import align
from emoflow.vision import video as video_io


def test_vocabularies_keep_their_order():
  # Class indices of every checkpoint depend on these tuples: a reorder silently mislabels.
  assert labels.EMOTIONS == ("neutral", "happy", "sad", "surprised", "fearful", "disgusted",
                             "angry", "awed")
  assert labels.GROUP_EMOTIONS == ("positive", "negative", "neutral")
  # AffectNet's published expression codes 0-7.
  assert labels.AFFECTNET_EXPRESSIONS == ("neutral", "happy", "sad", "surprised", "fearful",
                                          "disgusted", "angry", "contempt")


def test_dataset_label_mappings():
  assert vgaf.LABELS == {"1": "positive", "2": "neutral", "3": "negative"}  # VGAF's labels files
  for name, index in [("Positive", 0), ("NEGATIVE", 1), ("neutral", 2)]:  # GAF folders, GECV labels
    assert labels.group_emotion_index(name) == index
  with pytest.raises(ValueError, match="unknown group emotion 'happy'"):
    labels.group_emotion_index("happy")


def test_gaf_folders_map_to_their_labels(tmp_path):
  for folder in ("Negative", "Neutral", "Positive"):
    os.makedirs(tmp_path / folder)
    (tmp_path / folder / "a.jpg").write_bytes(b"")
  got = [(os.path.basename(os.path.dirname(p)), label)
         for p, label in emotiw_gaf.labelled_images(str(tmp_path))]
  assert got == [("Positive", "positive"), ("Negative", "negative"), ("Neutral", "neutral")]


def test_alignment_template_is_arcfaces():
  np.testing.assert_array_equal(align.ARCFACE_TEMPLATE, np.float32(
      [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
       [70.7299, 92.2041]]))
  assert align.FACE_SIZE == 112


def _config(tmp_path):
  _save_bundle(tmp_path / "m", with_video=False)
  return bundle.load(str(tmp_path / "m")).config


@pytest.mark.slow
def test_predict_accepts_a_model_with_this_codes_labels_and_preprocessing(tmp_path):
  config = _config(tmp_path)
  assert config["labels"] == {"emotions": list(labels.EMOTIONS),
                              "groups": ["positive", "negative", "neutral"]}
  assert config["preprocessing"]["channels"] == "RGB"
  pipeline.check_model(config)


@pytest.mark.parametrize("change,message", [
    (lambda c: c.pop("labels"), "the model directory records no label vocabulary or "
     "preprocessing (it was exported by an older emoflow); export it again with "
     "experiments.export_model"),
    (lambda c: c["labels"].update(emotions=list(labels.AFFECTNET_EXPRESSIONS)),
     "the model's labels.emotions is ['neutral', 'happy', 'sad', 'surprised', 'fearful', "
     "'disgusted', 'angry', 'contempt'], emoflow's is ['neutral', 'happy', 'sad', 'surprised', "
     "'fearful', 'disgusted', 'angry', 'awed']; predictions would be mislabelled or misaligned, "
     "so predict refuses the model"),
    (lambda c: c["labels"].update(groups=["negative", "neutral", "positive"]),
     "the model's labels.groups is ['negative', 'neutral', 'positive']"),
    (lambda c: c["preprocessing"].update(channels="BGR"),
     "the model's preprocessing.channels is BGR, emoflow's is RGB;"),
    (lambda c: c["preprocessing"]["alignment"][0].__setitem__(0, 38.0),
     "the model's preprocessing.alignment is [[38.0, 51.6963]"),
])
def test_predict_refuses_a_mismatch(tmp_path, change, message):
  config = _config(tmp_path)
  change(config)
  with pytest.raises(ValueError) as error:
    pipeline.check_model(config)
  assert str(error.value).startswith(message)


def test_predict_command_refuses_in_one_line(tmp_path, capsys):
  _save_bundle(tmp_path / "m", with_video=False)
  model = bundle.load(str(tmp_path / "m"))
  config = {**model.config, "labels": {**model.config["labels"],
                                       "emotions": list(labels.AFFECTNET_EXPRESSIONS)}}
  bundle.save(str(tmp_path / "m"), config, model.variables)
  with video_io.write_video(str(tmp_path / "v.mp4"), 5.0, (32, 32)) as write:
    write(np.zeros((32, 32, 3), np.uint8))
  with pytest.raises(SystemExit) as exited:
    cli.main(["predict", str(tmp_path / "v.mp4"), "--model", str(tmp_path / "m"), "--quiet"])
  assert exited.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: the model's labels.emotions is [")
  assert not (tmp_path / "v_emoflow").exists()
