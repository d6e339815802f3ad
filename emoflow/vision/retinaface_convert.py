"""The public PyTorch RetinaFace checkpoints as Flax variables, read without PyTorch.

The trained weights of github.com/biubug6/Pytorch_Retinaface are linked from
that repository's README (section "Training": a Google Drive folder and a Baidu
Cloud mirror, password given there): `mobilenet0.25_Final.pth` (~1.7 MB) and
`Resnet50_Final.pth` (~105 MB). Download them by hand; emoflow does not fetch
weights. (`mobilenetV1X0.25_pretrain.tar` in the same folder is an ImageNet
backbone only, not a detector.) Then

  model, variables = load_retinaface("weights/mobilenet0.25_Final.pth")
  loc, conf, landm = model.apply(variables, retinaface.preprocess(frames))

Both of torch.save's formats are read: the zip archive (torch >= 1.6:
<name>/data.pkl plus one raw little-endian file <name>/data/<key> per storage)
and the older single-file stream (magic number, protocol, system info, the
pickle, its storage keys, then per storage an int64 element count and the raw
bytes), which is what checkpoints of the PyTorch 1.1 era use. The pickle is
read by an unpickler that resolves only the few globals a state_dict needs
(OrderedDict, torch's tensor rebuild functions, typed storage classes) to
numpy builders and refuses every other global, so a checkpoint cannot run code.

Name mapping (Flax variable -> state_dict key; a "module." prefix from
DataParallel and a {"state_dict": ...} wrapper are removed first):
- the Flax module path joined by "." with `stage{s}_{i}`, `layer{n}_{i}` ->
  `stage{s}.{i}`, `layer{n}.{i}`; `{class,bbox,landmark}_head_{i}` ->
  `ClassHead.{i}`, `BboxHead.{i}`, `LandmarkHead.{i}`; inside conv_bn units
  `conv`, `bn` -> `0`, `1`; inside depthwise-separable units `dw`, `dw_bn`,
  `pw`, `pw_bn` -> `0`, `1`, `3`, `4` (2 and 5 are the activations);
  `downsample_conv`, `downsample_bn` -> `downsample.0`, `downsample.1`;
  every other name is kept (`conv1`, `bn1`, `fpn`, `output1`, `conv7x7_3`, ...).
- leaves: conv `kernel` (H, W, I, O) <- `weight` (O, I, H, W) transposed;
  conv `bias` <- `bias`; BatchNorm `scale`, `bias`, `mean`, `var` <- `weight`,
  `bias`, `running_mean`, `running_var`. `num_batches_tracked` is ignored.
"""

import collections
import io
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from emoflow.vision import retinaface

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch's typed storage classes, as pickled (module torch), and their element types.
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
  """Stands in for a torch.*Storage class: only its element type matters here."""

  def __init__(self, dtype):
    self.dtype = np.dtype(dtype)


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_) -> np.ndarray:
  """torch._utils._rebuild_tensor(_v2): a strided view of a flat storage (legacy: filled later).

  The view is checked to stay inside the storage: as_strided would read any memory.
  """
  size, stride = tuple(map(int, size)), tuple(map(int, stride))
  last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
  if offset < 0 or min(size + stride, default=0) < 0 or (0 not in size and last >= storage.size):
    raise pickle.UnpicklingError(f"tensor of size {size}, stride {stride} at offset {offset} "
                                 f"exceeds its storage of {storage.size} elements")
  item = storage.itemsize
  return np.lib.stride_tricks.as_strided(storage[offset:], tuple(size),
                                         tuple(s * item for s in stride), writeable=False)


_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    **{("torch", name): _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):
  """Resolves only _GLOBALS; storages come from `load_storage(key, dtype, numel)`."""

  def __init__(self, file, load_storage: Callable[[str, np.dtype, int], np.ndarray] | None = None):
    super().__init__(file)
    self._load_storage = load_storage

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _GLOBALS[module, name]
    except KeyError:
      raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a checkpoint "
                                   "(only tensors and OrderedDicts are read)") from None

  def persistent_load(self, pid: Any) -> np.ndarray:
    if self._load_storage is None or not isinstance(pid, tuple) or pid[0] != "storage":
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    storage_type, key, _, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
    storage = self._load_storage(str(key), storage_type.dtype, int(numel))
    view = pid[5] if len(pid) > 5 else None  # legacy: (view key, offset, size) or None
    if view is not None:
      _, offset, size = view
      storage = storage[offset:offset + size]
    return storage


def _load_zip(path: str) -> Any:
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
      raise ValueError(f"{path}: not a torch.save archive (no single data.pkl)")
    prefix = pickles[0][:-len("data.pkl")]

    storages = {}

    def load_storage(key, dtype, numel):
      if key not in storages:
        data = archive.read(f"{prefix}data/{key}")
        storages[key] = np.frombuffer(data, dtype.newbyteorder("<"), count=numel).astype(dtype)
      return storages[key]

    return _Unpickler(io.BytesIO(archive.read(pickles[0])), load_storage).load()


def _load_legacy(path: str) -> Any:
  with open(path, "rb") as f:
    if _Unpickler(f).load() != LEGACY_MAGIC:
      raise ValueError(f"{path}: neither a torch.save zip archive nor a legacy torch.save file")
    if _Unpickler(f).load() != LEGACY_PROTOCOL:
      raise ValueError(f"{path}: unsupported legacy torch.save protocol")
    sys_info = _Unpickler(f).load()
    if not sys_info.get("little_endian", True):
      raise ValueError(f"{path}: big-endian checkpoints are not supported")
    storages = {}

    def load_storage(key, dtype, numel):
      if key not in storages:
        storages[key] = np.zeros(numel, dtype)  # filled below, after the pickle
      return storages[key]

    result = _Unpickler(f, load_storage).load()
    for key in _Unpickler(f).load():
      storage = storages[str(key)]
      (numel,) = struct.unpack("<q", f.read(8))
      data = f.read(numel * storage.itemsize)
      if numel != storage.size or len(data) != storage.nbytes:
        raise ValueError(f"{path}: storage {key} is truncated or has the wrong size")
      storage[...] = np.frombuffer(data, storage.dtype.newbyteorder("<"))
  return result


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A torch.save'd state_dict as {name: numpy array}, without torch or arbitrary code.

  Unwraps {"state_dict": ...} and strips DataParallel's "module." prefix.
  """
  path = os.fspath(path)
  state = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
  if isinstance(state, Mapping) and "state_dict" in state:
    state = state["state_dict"]
  if not isinstance(state, Mapping):
    raise ValueError(f"{path}: holds a {type(state).__name__}, not a state_dict")
  return {k.removeprefix("module."): np.array(v) for k, v in state.items()}


_SEGMENTS = {"conv": "0", "bn": "1", "dw": "0", "dw_bn": "1", "pw": "3", "pw_bn": "4",
             "downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}
_HEADS = {"class_head": "ClassHead", "bbox_head": "BboxHead", "landmark_head": "LandmarkHead"}
_INDEXED = re.compile(r"^(stage\d|layer\d|class_head|bbox_head|landmark_head)_(\d+)$")
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
           "var": "running_var"}


def torch_name(path: tuple[str, ...]) -> str:
  """The state_dict key of the Flax variable at `path` (module names..., leaf; no collection)."""
  *modules, leaf = path
  parts = []
  for name in modules:
    indexed = _INDEXED.match(name)
    if name in _SEGMENTS:
      parts.append(_SEGMENTS[name])
    elif indexed:
      parts.append(f"{_HEADS.get(indexed[1], indexed[1])}.{indexed[2]}")
    else:
      parts.append(name)
  return ".".join(parts + [_LEAVES[leaf]])


def torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
  """The state_dict shape of the Flax variable at `path`: conv kernels HWIO -> OIHW."""
  return tuple(shape[i] for i in (3, 2, 0, 1)) if path[-1] == "kernel" else tuple(shape)


def _from_torch_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  return np.transpose(value, (2, 3, 1, 0)) if path[-1] == "kernel" else value


def variable_shapes(trunk: str) -> dict:
  """The RetinaFace variables' shapes (ShapeDtypeStructs), computed without running the model."""
  model = retinaface.RetinaFace(trunk)
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def guess_trunk(state: Mapping[str, Any]) -> str:
  """"mobilenet0.25" or "resnet50", from the trunk's first weight name."""
  if "body.stage1.0.0.weight" in state:
    return "mobilenet0.25"
  if "body.conv1.weight" in state:
    return "resnet50"
  raise ValueError("not a RetinaFace state_dict: neither body.stage1.0.0.weight (mobilenet0.25) "
                   "nor body.conv1.weight (resnet50) is present")


def _listing(names, limit: int = 5) -> str:
  names = sorted(names)
  more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
  return ", ".join(names[:limit]) + more


def convert(state: Mapping[str, np.ndarray], trunk: str | None = None) -> dict:
  """A RetinaFace state_dict -> Flax variables {"params", "batch_stats"} for `RetinaFace(trunk)`.

  Raises a one-line ValueError naming every missing or unexpected key and
  every shape mismatch.
  """
  trunk = trunk or guess_trunk(state)
  shapes = flax.traverse_util.flatten_dict(flax.core.unfreeze(variable_shapes(trunk)))
  names = {path: torch_name(path[1:]) for path in shapes}
  given = {k for k in state if not k.endswith("num_batches_tracked")}
  missing = set(names.values()) - given
  unexpected = given - set(names.values())
  mismatched = []
  for path, name in names.items():
    if name in state:
      want = torch_shape(path, shapes[path].shape)
      if tuple(state[name].shape) != want:
        mismatched.append(f"{name} is {tuple(state[name].shape)}, expected {want}")
  problems = []
  if missing:
    problems.append(f"missing {_listing(missing)}")
  if unexpected:
    problems.append(f"unexpected {_listing(unexpected)}")
  if mismatched:
    problems.append(f"shape mismatch: {_listing(mismatched, 3)}")
  if problems:
    raise ValueError(f"state_dict does not fit RetinaFace({trunk!r}): {'; '.join(problems)}")
  flat = {path: jnp.asarray(_from_torch_layout(path, np.asarray(state[name], np.float32)))
          for path, name in names.items()}
  return flax.traverse_util.unflatten_dict(flat)


def load_retinaface(path: str | os.PathLike,
                    trunk: str | None = None) -> tuple[retinaface.RetinaFace, dict]:
  """(model, variables) from a public RetinaFace checkpoint file; the trunk is guessed if None."""
  state = load_state_dict(path)
  trunk = trunk or guess_trunk(state)
  return retinaface.RetinaFace(trunk), convert(state, trunk)
