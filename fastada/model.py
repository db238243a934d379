"""A trained model: its feature spec, weights and accumulators, and its file format.

File format (version 1), never a pickle::

    bytes 0..7    magic  b"FASTADA\\n"
    bytes 8..15   uint64 little-endian: length H of the JSON header
    bytes 16..19  uint32 little-endian: CRC-32 of the JSON header
    bytes 20..    the JSON header (UTF-8), then zero padding to a multiple of 64 bytes
    then          raw little-endian arrays, each starting at a multiple of 64 bytes

The header holds ``format_version``, ``fastada_version``, ``spec`` (the FeatureSpec: column roles,
bits, hash seed), ``learn`` (the LearnConfig), ``summary`` (rows, seconds, progressive logloss...)
and ``arrays``: name -> {dtype, shape, offset, nbytes, crc32}. The arrays are ``weights``
(float32, slots + 1, the bias last) and ``accumulators`` (float32, slots + 1: Adagrad's G, so
training can continue). Files are written to a temporary name, fsynced and renamed, so a crash
never leaves a partial model where a model was. Loading checks magic, version, sizes, dtypes and
checksums; ``mmap=True`` maps the weights instead of reading them (the weights' checksum is
still verified).

Version 2 is the sparse form, written when fewer than a third of the weights of a model of 2^16
slots or more are non-zero (an L1-trained FTRL model, or a table far larger than its data): ``sparse: true`` in the header and
the arrays ``index`` (uint32, the slots with a non-zero weight, increasing, the bias last),
``weights`` and ``accumulators`` (float32, those slots' values). Loading expands it.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib

import numpy as np

from . import __version__
from .config import FastadaError, FeatureSpec

MAGIC = b"FASTADA\n"
FORMAT_VERSION = 1
SPARSE_FORMAT_VERSION = 2
SPARSE_SHARE = 1 / 3  # written sparse below this share of non-zero weights (12 bytes a weight vs 8 a slot)
SPARSE_MIN_SLOTS = 1 << 16  # ... and from this size (a smaller file gains nothing worth a second layout)
_ALIGN = 64
_PREFIX = struct.Struct("<8sQI")
_MAX_HEADER = 1 << 24


class Model:
    """Weights and accumulators over the hashed slots of a :class:`FeatureSpec`.

    ``weights[-1]`` is the bias; every slot's lazy regularisation has been settled.
    """

    def __init__(self, spec: FeatureSpec, weights: np.ndarray, accumulators: np.ndarray | None = None,
                 learn: dict | None = None, summary: dict | None = None, factors: np.ndarray | None = None):
        if weights.shape != (spec.slots + 1,):
            raise FastadaError(f"weights have shape {weights.shape}, expected ({spec.slots + 1},) for bits={spec.bits}")
        self.spec = spec
        self.weights = weights
        self.accumulators = accumulators
        self.factors = factors  # learner="ffm" / "fm": (factor slots, fields (1 for fm), K) latent vectors
        self.learn = dict(learn or {})
        self.summary = dict(summary or {})

    def __repr__(self) -> str:
        s = self.spec
        return (f"Model(label={s.label!r}, categorical={len(s.categorical)}, numeric={len(s.numeric)}, "
                f"crosses={len(s.crosses)}, bits={s.bits}, rows={self.summary.get('rows')})")

    # -- scoring (the driver does the streaming) ---------------------------------------------

    def predict(self, data, *, threads: int | None = None, chunk_rows: int = 65536,
                margin: bool = False) -> np.ndarray:
        """Probabilities for every row of ``data`` (Parquet paths, or data in memory as
        :func:`fastada.train` takes it), in order; ``margin=True``: their log-odds (the bias plus
        each feature's weight times its value), exact where a probability rounds to 0 or 1."""
        from .score import predict_batches
        parts = [p for p, _, _ in predict_batches(self, data, threads=threads, chunk_rows=chunk_rows, margin=margin)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float64)

    def evaluate(self, data, *, label: str | None = None, threads: int | None = None,
                 chunk_rows: int = 65536) -> dict:
        """logloss, auc, ne, calibration and rows of the model on labelled ``data``."""
        from .score import evaluate_model
        return evaluate_model(self, data, label=label, threads=threads, chunk_rows=chunk_rows)

    # -- files ---------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the model atomically (temporary file, fsync, rename); sparse (format version 2)
        when fewer than a third of its slots were touched."""
        header = {"kind": "model", "spec": self.spec.to_dict(), "learn": self.learn, "summary": self.summary}
        weights = np.asarray(self.weights)
        kept = weights != 0  # the touched slots: a weight, or (L1 at zero) an accumulator
        if self.accumulators is not None:
            kept |= np.asarray(self.accumulators) != 0
        kept[-1] = True  # the bias, always
        count = int(kept.sum())
        if weights.size > SPARSE_MIN_SLOTS and count < SPARSE_SHARE * weights.size:
            index = np.flatnonzero(kept).astype("<u4")
            arrays = {"index": index, "weights": weights[index]}
            if self.accumulators is not None:
                arrays["accumulators"] = np.asarray(self.accumulators)[index]
            if self.factors is not None:
                arrays["factors"] = np.asarray(self.factors)
            write_file(path, {**header, "sparse": True}, arrays, version=SPARSE_FORMAT_VERSION)
            return
        arrays = {"weights": self.weights}
        if self.accumulators is not None:
            arrays["accumulators"] = self.accumulators
        if self.factors is not None:
            arrays["factors"] = np.asarray(self.factors)
        write_file(path, header, arrays)


def write_file(path, header: dict, arrays: dict[str, np.ndarray], version: int = FORMAT_VERSION) -> None:
    """Write ``header`` (JSON-able) and ``arrays`` (float32; uint32 ones stay uint32) in the fastada
    file format, atomically."""
    arrays = {name: np.ascontiguousarray(a, dtype="<u4" if a.dtype == np.uint32 else "<f4")
              for name, a in arrays.items()}
    header = {"format_version": version, "fastada_version": __version__, **header}
    # The header lists the array offsets, which depend on the header's size: reserve room
    # for it (a trial layout plus slack for longer numbers), then lay the arrays out after it.
    reserved = _pad(_PREFIX.size + len(json.dumps(_with_layout(header, arrays, 0))) + 256)
    header = _with_layout(header, arrays, reserved)
    body = json.dumps(header).encode().ljust(reserved - _PREFIX.size)
    parts, position = [_PREFIX.pack(MAGIC, len(body), zlib.crc32(body)), body], reserved
    for a in arrays.values():
        parts.append(a.data)
        position += a.nbytes
        parts.append(bytes(_pad(position) - position))
        position = _pad(position)
    atomic_write(path, parts)


def _with_layout(header: dict, arrays: dict, start: int) -> dict:
    """``header`` with ``arrays`` laid out from byte ``start`` (64-byte aligned, with CRC-32s)."""
    header = dict(header)
    layout, offset = {}, start
    for name, a in arrays.items():
        layout[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": offset,
                        "nbytes": a.nbytes, "crc32": zlib.crc32(a) if start else 0}
        offset = _pad(offset + a.nbytes)
    header["arrays"] = layout
    return header


def _pad(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def check_outputs(outputs: dict, inputs=()) -> None:
    """Refuse, before any work, output paths that would destroy something or fail late.

    ``outputs``: what each output is called (an option name) -> its path, or None; a name ending
    in "-dir" is a folder. ``inputs``: paths this run reads. An output must not be one of the
    inputs or another output (its file would be replaced by ours), nor a device, pipe or other
    special file (a rename would replace it with a plain file), and its folder must exist and be
    writable."""
    taken: dict[str, str] = {}
    real_inputs = {os.path.realpath(os.fspath(p)): os.fspath(p) for p in inputs}
    for name, path in outputs.items():
        if path is None:
            continue
        path = os.fspath(path)
        real = os.path.realpath(path)
        folder_wanted = name.endswith("-dir")
        if real in real_inputs:
            raise FastadaError(f"{name} {path} is also an input of this run ({real_inputs[real]}); writing it "
                               f"would replace it: choose another path")
        if real in taken:
            raise FastadaError(f"{name} {path} is also {taken[real]}: give each output a path of its own")
        taken[real] = name
        if os.path.exists(real):
            if folder_wanted:
                if not os.path.isdir(real):
                    raise FastadaError(f"{name} {path} is a file, not a folder")
                folder = real
            elif os.path.isdir(real):
                raise FastadaError(f"{name} {path} is a folder; give a file path")
            elif not os.path.isfile(real):
                raise FastadaError(f"{name} {path} is a device, pipe or other special file; fastada writes "
                                   f"a new file and renames it into place, which would replace it")
            else:
                folder = os.path.dirname(real)
        else:
            folder = os.path.dirname(real) if not folder_wanted else os.path.dirname(real.rstrip(os.sep)) or "."
        if not os.path.isdir(folder):
            raise FastadaError(f"{name} {path}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise FastadaError(f"{name} {path}: folder {folder} cannot be written")


def atomic_write(path, parts) -> None:
    """Write ``parts`` (bytes-like) to ``path`` via a temporary file, fsync and rename."""
    target = atomic_replace_target(path)
    try:
        with open(target.path, "wb") as f:
            for part in parts:
                f.write(part)
        target.commit()
    except OSError as e:
        raise FastadaError(f"{target.target}: cannot write ({e.strerror or e}); "
                           f"the previous file is unchanged") from None
    finally:
        target.discard()


class atomic_replace_target:
    """A temporary path beside ``path``: write it, then :meth:`commit` (fsync, rename) or
    :meth:`discard`. Until the commit, whatever was at ``path`` stays untouched."""

    def __init__(self, path):
        self.target = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(self.target))
        if not os.path.isdir(directory):
            raise FastadaError(f"{self.target}: folder {directory} does not exist")
        fd, self.path = tempfile.mkstemp(prefix=f".{os.path.basename(self.target)}.", suffix=".tmp",
                                         dir=directory)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.path, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        self.directory = directory

    def commit(self) -> None:
        """fsync the file, rename it over the target, fsync the folder (so the rename lasts)."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.path, self.target)
        self.path = None
        try:
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass

    def discard(self) -> None:
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.path = None


def load(path: str | os.PathLike, *, mmap: bool = False, verify: bool | None = None) -> Model:
    """Read a model file, checking magic, version, sizes, dtypes and checksums.

    The weights' checksum is always verified (``verify=False`` skips it): a model with one
    changed weight must not score silently wrong, and the check costs about 0.45 s a GiB
    (2^28 slots). Mapped (``mmap``), the accumulators, which scoring never reads, are verified
    only with ``verify=True``."""
    path = os.fspath(path)
    header, read = read_file(path, mmap=mmap, verify=verify is not False)
    kind = header.get("kind", "model")
    if kind != "model":
        raise FastadaError(f"{path}: is a fastada {kind} file, not a model")
    try:
        spec = FeatureSpec.from_dict(header["spec"])
    except FastadaError as e:
        raise FastadaError(f"{path}: corrupt model header ({e})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise FastadaError(f"{path}: corrupt model header (spec: {type(e).__name__}: {e})") from None
    if header.get("sparse"):
        weights, accumulators = _expand(path, header, read, spec.slots + 1)
    else:
        weights = read("weights", (spec.slots + 1,))
        accumulators = (read("accumulators", (spec.slots + 1,), verify=verify if verify is not None else not mmap)
                        if "accumulators" in header["arrays"] else None)
    learn = header.get("learn") or {}
    factors = None
    if learn.get("learner") in ("fm", "ffm") or "factors" in header["arrays"]:
        factors = _read_factors(path, header, read, learn)
    return Model(spec, weights, accumulators, learn=learn, summary=header.get("summary"), factors=factors)


def _read_factors(path: str, header: dict, read, learn: dict) -> np.ndarray:
    """An FFM model's latent vectors, their shape checked against its header."""
    entry = header["arrays"].get("factors")
    if learn.get("learner") not in ("fm", "ffm") or entry is None:
        raise FastadaError(f"{path}: corrupt model (learner {learn.get('learner')!r} "
                           f"{'without' if entry is None else 'with'} a factor table)")
    try:
        shape = tuple(int(x) for x in entry["shape"])
        fields = int((header.get("summary") or {})["fields"])
        k = int(learn["factors"])
    except (KeyError, TypeError, ValueError):
        raise FastadaError(f"{path}: corrupt model header (factor table: no shape, fields or factors)") from None
    if len(shape) != 3 or shape[1:] != (fields, k) or shape[0] & (shape[0] - 1):
        raise FastadaError(f"{path}: corrupt model (factor table of shape {shape}, expected (2^b, {fields}, {k}))")
    return read("factors", shape, verify=True)


def _expand(path: str, header: dict, read, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Dense weights and accumulators from a sparse model file (every checksum verified)."""
    try:
        count = int(header["arrays"]["index"]["shape"][0])
    except (KeyError, TypeError, ValueError, IndexError):
        raise FastadaError(f"{path}: corrupt sparse model (no index array)") from None
    index = read("index", (count,), verify=True, dtype="<u4")
    if count == 0 or index[-1] != size - 1 or (count > 1 and not (np.diff(index.astype(np.int64)) > 0).all()):
        raise FastadaError(f"{path}: corrupt sparse model (its slot index is not increasing up to the bias)")
    weights = np.zeros(size, dtype=np.float32)
    weights[index] = read("weights", (count,), verify=True)
    accumulators = None
    if "accumulators" in header["arrays"]:
        accumulators = np.zeros(size, dtype=np.float32)
        accumulators[index] = read("accumulators", (count,), verify=True)
    return weights, accumulators


def read_file(path: str, *, mmap: bool = False, verify: bool | None = None):
    """(header, read) of a fastada file; ``read(name, shape)`` returns that float32 array.

    Checks magic, header checksum and version here, and each array's dtype, shape, extent and
    (unless mapped without ``verify``) checksum when it is read (``read(name, shape, verify=)``
    decides for one array).
    """
    verify = (not mmap) if verify is None else verify
    try:
        if os.path.exists(path) and not (os.path.isfile(path) or os.path.isdir(path)):
            raise FastadaError(f"{path}: a device, pipe or other special file, not a fastada file")
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            prefix = f.read(_PREFIX.size)
            if len(prefix) < _PREFIX.size or prefix[:8] != MAGIC:
                raise FastadaError(f"{path}: not a fastada file (bad magic)")
            _, header_len, header_crc = _PREFIX.unpack(prefix)
            if header_len > min(_MAX_HEADER, size - _PREFIX.size):
                raise FastadaError(f"{path}: corrupt file (header length {header_len} exceeds the file)")
            body = f.read(header_len)
    except FileNotFoundError:
        raise FastadaError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise FastadaError(f"{path}: is a folder, not a fastada file") from None
    except OSError as e:
        raise FastadaError(f"{path}: cannot read ({e.strerror or e})") from None
    if zlib.crc32(body) != header_crc:
        raise FastadaError(f"{path}: corrupt file (header checksum mismatch)")
    try:
        header = json.loads(body)
        version = header["format_version"]
        layout = header["arrays"]
        if not isinstance(header, dict) or not isinstance(layout, dict):
            raise TypeError("header is not an object")
    except (ValueError, KeyError, TypeError) as e:
        raise FastadaError(f"{path}: corrupt header ({e})") from None
    if version not in (FORMAT_VERSION, SPARSE_FORMAT_VERSION) or (version == SPARSE_FORMAT_VERSION) != bool(
            header.get("sparse")):
        raise FastadaError(f"{path}: format version {version} is not supported "
                           f"(this fastada reads versions {FORMAT_VERSION} and {SPARSE_FORMAT_VERSION}, sparse)")

    def read(name: str, shape: tuple[int, ...], verify: bool = verify, dtype: str = "<f4") -> np.ndarray:
        if name not in layout:
            raise FastadaError(f"{path}: corrupt file (no {name} array)")
        return _read_array(path, size, name, layout[name], shape, mmap and dtype == "<f4" and not header.get("sparse"),
                           verify, dtype)

    return header, read


def _read_array(path, size, name, entry, expected, mmap, verify, wanted="<f4") -> np.ndarray:
    try:
        dtype = np.dtype(entry["dtype"])
        shape = tuple(int(x) for x in entry["shape"])
        offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
    except (KeyError, TypeError, ValueError) as e:
        raise FastadaError(f"{path}: corrupt header for {name} ({e})") from None
    length = int(np.prod(expected))
    if dtype != np.dtype(wanted) or shape != tuple(expected) or nbytes != length * 4:
        raise FastadaError(f"{path}: {name} has dtype {dtype} and shape {shape}, "
                           f"expected {np.dtype(wanted).name} {tuple(expected)}")
    if offset < 0 or offset + nbytes > size:
        raise FastadaError(f"{path}: truncated file ({name} ends at byte {offset + nbytes}, "
                           f"the file has {size})")
    if mmap:
        a = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    else:
        a = np.fromfile(path, dtype=dtype, count=length, offset=offset).reshape(shape)
        if a.size != length:
            raise FastadaError(f"{path}: truncated file ({name})")
    if verify and zlib.crc32(a) != entry.get("crc32"):
        raise FastadaError(f"{path}: corrupt file ({name} checksum mismatch): it was changed or damaged after "
                           f"it was written; train it again or restore it")
    return a
