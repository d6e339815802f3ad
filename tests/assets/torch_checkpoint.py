"""Writes a state_dict in torch.save's on-disk formats, without torch, for the converter tests.

The pickle names the same globals torch's does (torch._utils._rebuild_tensor_v2,
torch.FloatStorage, ..., collections.OrderedDict): stand-ins are registered as
the modules `torch` and `torch._utils` in sys.modules only while pickling, so
the pickler writes them by reference, and storages go out as persistent ids.
"""

import collections
import contextlib
import pickle
import struct
import sys
import types
import zipfile

import numpy as np

_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                  np.dtype(np.int64): "LongStorage"}


def _rebuild_tensor_v2(*args):
  raise AssertionError("a stand-in, only pickled by reference")


@contextlib.contextmanager
def _fake_torch():
  """Modules torch and torch._utils holding the stand-ins, for the duration of the block."""
  torch = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")
  for name in _STORAGE_NAMES.values():
    setattr(torch, name, type(name, (), {"__module__": "torch"}))
  _rebuild_tensor_v2.__module__ = "torch._utils"
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  torch._utils = utils
  saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
  sys.modules.update({"torch": torch, "torch._utils": utils})
  try:
    yield torch
  finally:
    for name, module in saved.items():
      if module is None:
        del sys.modules[name]
      else:
        sys.modules[name] = module


class _Storage:
  def __init__(self, key: str, array: np.ndarray):
    self.key, self.array = key, np.ascontiguousarray(array).reshape(-1)


class _Tensor:
  """Pickles as torch's: _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)."""

  def __init__(self, storage: _Storage, shape: tuple[int, ...]):
    self.storage, self.shape = storage, shape

  def __reduce__(self):
    strides = tuple(int(s) // 4 for s in np.empty(self.shape, np.float32).strides)
    return (_rebuild_tensor_v2,
            (self.storage, 0, self.shape, strides, False, collections.OrderedDict()))


def _little_endian(array: np.ndarray) -> bytes:
  return array.astype(array.dtype.newbyteorder("<")).tobytes()


def _pickler(file, torch, legacy: bool) -> pickle.Pickler:
  pickler = pickle.Pickler(file, protocol=2)

  def persistent_id(obj):
    if not isinstance(obj, _Storage):
      return None
    storage_type = getattr(torch, _STORAGE_NAMES[obj.array.dtype])
    pid = ("storage", storage_type, obj.key, "cpu", obj.array.size)
    return pid + (None,) if legacy else pid

  pickler.persistent_id = persistent_id
  return pickler


def write(path, state: dict[str, np.ndarray], legacy: bool = False,
          archive: str = "archive") -> None:
  """torch.save(state) as the zip archive (torch >= 1.6) or, if `legacy`, the older stream."""
  storages = [_Storage(str(i), np.asarray(v)) for i, v in enumerate(state.values())]
  obj = collections.OrderedDict(
      (name, _Tensor(s, tuple(np.shape(v)))) for (name, v), s in zip(state.items(), storages))
  with _fake_torch() as torch:
    if legacy:
      with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001,
                       {"protocol_version": 1001, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 8}}):
          pickle.dump(header, f, protocol=2)
        _pickler(f, torch, legacy=True).dump(obj)
        pickle.dump([s.key for s in storages], f, protocol=2)
        for s in storages:
          f.write(struct.pack("<q", s.array.size))
          f.write(_little_endian(s.array))
      return
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
      with z.open(f"{archive}/data.pkl", "w") as f:
        _pickler(f, torch, legacy=False).dump(obj)
      z.writestr(f"{archive}/byteorder", "little")
      for s in storages:
        z.writestr(f"{archive}/data/{s.key}", _little_endian(s.array))
      z.writestr(f"{archive}/version", "3\n")
