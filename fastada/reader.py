"""Streaming Parquet (or an in-memory Arrow table) a chunk at a time.

The reader knows files and Arrow, nothing of features or learning. A data set is a list of
*units* (one Parquet row group each, or one batch of an in-memory table); a chunk is at most
``chunk_rows`` rows of one unit, read with column projection and with string columns
dictionary-encoded (but for columns whose dictionary overflowed into plain pages: plain, once a
row group of the file shows it). Memory stays bounded by the chunk size: each row group is read
through its own ``iter_batches`` call, which avoids the growth of a whole-file read (see
shared/DESIGN-NOTES.md).
"""

from __future__ import annotations

import errno
import glob
import hashlib
import itertools
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .config import FastadaError, UnreadableData

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")

_pool_lock = threading.Lock()
_pool_users = 0
_pool_before: pa.MemoryPool | None = None


@contextmanager
def system_allocator():
    """Arrow's default memory pool set to the C library's allocator while fastada reads (and put
    back after), unless ``ARROW_DEFAULT_MEMORY_POOL`` names one. Arrow's own allocators ask the
    system for memory in 2 MiB pages, which the system clears whole when first touched, and
    hand them back when freed (mimalloc by itself within milliseconds, both when
    :meth:`DataSet.unit_chunks` releases what is unused, see :data:`RELEASE_EVERY`): on a virtual
    machine that gives freed memory back to its host, memory never touched before costs about
    2 s of system time a GiB. `fastada train` on 1M rows started cold, 2026-12-06 (Intel Xeon,
    2 cores, a Firecracker VM): mimalloc 2.32-2.40 s, jemalloc 1.71-1.87 s, the C library's
    1.39-1.57 s."""
    global _pool_users, _pool_before
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        yield
        return
    with _pool_lock:
        if _pool_users == 0:
            _pool_before = pa.default_memory_pool()
            pa.set_memory_pool(pa.system_memory_pool())
        _pool_users += 1
    try:
        yield
    finally:
        with _pool_lock:
            _pool_users -= 1
            if _pool_users == 0:
                pa.set_memory_pool(_pool_before)
                _pool_before = None


@dataclass(frozen=True)
class Unit:
    """One readable piece of a data set: row group ``row_group`` of file ``file`` (an index)."""

    file: int
    row_group: int
    rows: int


@dataclass
class Chunk:
    """Rows ``row .. row + batch.num_rows`` of a unit, with where they came from."""

    batch: pa.RecordBatch
    unit: Unit
    row: int
    where: str  # "file.parquet, row group 3" — for error messages


class DataSet:
    """Parquet files (local paths, folders, globs or filesystem URIs), or data in memory: an Arrow
    table or batch, a pandas DataFrame, or any object with ``__arrow_c_stream__`` (read whole)."""

    def __init__(self, data, skip_unreadable: bool = False):
        """``skip_unreadable``: leave out files whose footer cannot be read (listed in
        ``unreadable`` as messages) instead of raising :class:`UnreadableData`."""
        self._table: pa.Table | None = None
        self.unreadable: list[str] = []
        self._sizes: dict[str, int] = {}  # files of object stores: their sizes when first opened
        # file -> string columns read plain: those whose dictionary grew within a row group of it
        # (the writer's dictionary overflowed and its pages went on plain-encoded), and, from a
        # file's first read on, those that overflowed in the files read before it
        self.plain_columns: dict[int, set[str]] = {}
        self._overflowed: set[str] = set()
        self.retried_reads = 0  # reads that failed for the network or the store and were tried again
        self._row_groups_read = 0  # (Arrow's unused memory is given back every RELEASE_EVERY of them)
        self.files: list[tuple[pafs.FileSystem | None, str]] = []
        data = _as_table(data)
        self._spool = data if isinstance(data, _Spool) else None  # (its file lives as long as this)
        if self._spool is not None:
            data = self._spool.path
        if isinstance(data, pa.Table):
            self._table = data
        else:
            paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
            if not paths:
                raise FastadaError("no data given: pass one or more Parquet files, folders or globs")
            seen = set()
            for p in paths:
                for fs, path in _resolve(os.fspath(p)):
                    # once each: a recursive glob through a symlink loop, or a folder and a glob
                    # that overlap, name one file many times
                    key = os.path.realpath(path) if fs is None else (id(fs), path)
                    if key not in seen:
                        seen.add(key)
                        self.files.append((fs, path))
        self._metadata: list[pq.FileMetaData] = []
        self._schemas: dict[int, pa.Schema] = {}  # each file's Arrow schema, once asked for
        self.schema = self._read_schema(skip_unreadable)
        self.units = self._list_units()
        self.num_rows = sum(u.rows for u in self.units)

    def name(self, file: int) -> str:
        return "<table>" if self._table is not None else "<stream>" if self._spool is not None else self.files[file][1]

    def _open(self, file: int, **kwargs) -> pq.ParquetFile:
        fs, path = self.files[file]
        try:
            if fs is None:
                return pq.ParquetFile(path, **kwargs)
            source = fs.open_input_file(path)
            self._sizes.setdefault(path, source.size())  # (as first seen: see _remote_check)
            return pq.ParquetFile(source, **kwargs)
        except FileNotFoundError:
            raise self._remote_check(file, UnreadableData(f"{path}: file not found (was it removed?)")) from None
        except (pa.ArrowException, OSError) as e:
            raise self._remote_check(file, _read_error(e, path, "not a readable Parquet file")) from None

    def _footer(self, file: int) -> pq.FileMetaData:
        attempt = 0
        while True:
            try:
                return self._open(file).metadata
            except TransientReadError:
                if attempt >= READ_RETRIES:
                    raise
                self._wait_to_retry(attempt)
                attempt += 1

    def _read_schema(self, skip_unreadable: bool) -> pa.Schema:
        if self._table is not None:
            return self._table.schema
        readable = []
        for i in range(len(self.files)):
            try:
                metadata = self._footer(i)
            except UnreadableData as e:
                if not skip_unreadable:
                    raise
                self.unreadable.append(str(e))
                continue
            readable.append(self.files[i])
            self._metadata.append(metadata)
        if not readable:
            raise UnreadableData(f"no readable Parquet file among {len(self.files)}: {self.unreadable[0]}")
        self.files = readable
        schema = self._metadata[0].schema.to_arrow_schema()
        names = schema.names
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise FastadaError(f"{self.files[0][1]}: column name {duplicated[0]!r} appears more than once")
        return schema

    def check_columns(self, kinds: dict[str, tuple[set[str], str]]) -> None:
        """Refuse, before any reading, a file that lacks one of the columns or stores it with a type
        of another kind. ``kinds``: column -> (the type kinds it may have, see :func:`type_kind`;
        its role, for messages)."""
        for file in range(len(self.files) if self._table is None else 1):  # (a table: its one schema)
            schema = self.file_schema(file)
            for name, (allowed, role) in kinds.items():
                i = schema.get_field_index(name)
                if i < 0:
                    raise FastadaError(f"{self.name(file)}: column {name!r} is missing (the "
                                       f"{'table' if self._table is not None else 'file'} has "
                                       f"{column_list(schema.names)})")
                kind = type_kind(schema.field(i).type)
                if kind not in allowed:
                    first = self.schema.field(name).type
                    if type_kind(first) == kind:
                        raise FastadaError(f"{self.name(file)}: {role} column {name!r} has type "
                                           f"{schema.field(i).type}; it must be "
                                           f"{' or '.join(sorted(allowed - {'null'}))}")
                    raise FastadaError(f"{self.name(file)}: column {name!r} has type {schema.field(i).type} "
                                       f"but {first} in {self.name(0)}; a column must keep its kind "
                                       f"({' or '.join(sorted(allowed - {'null'}))}) in every file")

    def _list_units(self) -> list[Unit]:
        if self._table is not None:
            self._table_batches = self._table.to_batches()
            return [Unit(0, i, b.num_rows) for i, b in enumerate(self._table_batches)]
        return [Unit(f, rg, md.row_group(rg).num_rows)
                for f, md in enumerate(self._metadata) for rg in range(md.num_row_groups)]

    def fingerprint(self) -> dict:
        """What identifies this data set for a resumed run: its files and their sizes, row groups
        and schema (a file rewritten with the same row counts changes its size, almost always);
        for a table in memory, its content."""
        digest = hashlib.sha256()
        for fs, path in self.files:
            try:
                size = os.path.getsize(path) if fs is None else fs.get_file_info(path).size
            except OSError:
                size = -1  # gone: the reader will say so when it gets there
            digest.update((os.path.abspath(path) if fs is None else path).encode() + b"\0%d\0" % size)
        if self._table is not None:  # in memory: its content (a table of the same shape is other data)
            for batch in self._table_batches:
                digest.update(batch.serialize())
        digest.update(str(self.schema).encode())
        digest.update(b",".join(b"%d:%d:%d" % (u.file, u.row_group, u.rows) for u in self.units))
        return {"files": len(self.files) if self._table is None else 0, "rows": self.num_rows,
                "units": len(self.units), "sha256": digest.hexdigest()}

    def column_type(self, name: str) -> pa.DataType:
        """The type of column ``name``: of the first file where it is not all-null (type null),
        so a column empty in the first file takes its type from the files that hold values."""
        for file in range(max(1, len(self.files)) if self._table is None else 1):
            schema = self.file_schema(file)
            i = schema.get_field_index(name)
            if i >= 0 and not pa.types.is_null(schema.field(i).type):
                return schema.field(i).type
        return self.schema.field(name).type

    def file_schema(self, file: int) -> pa.Schema:
        if self._table is not None:
            return self._table.schema
        schema = self._schemas.get(file)
        if schema is None:  # (made from the footer once: 0.6 ms a time, and the roles ask 170 times)
            schema = self._schemas[file] = self._metadata[file].schema.to_arrow_schema()
        return schema

    def chunks(self, columns: Sequence[str], chunk_rows: int,
               units: Sequence[Unit] | None = None, dictionary: Sequence[str] = ()) -> Iterator[Chunk]:
        """Chunks of the projected ``columns``, unit by unit (default: file order).

        ``dictionary``: string/binary columns to read dictionary-encoded (hashed once per
        dictionary instead of once per row).
        """
        for unit in self.units if units is None else units:
            yield from self.unit_chunks(unit, columns, chunk_rows, dictionary)

    def unit_chunks(self, unit: Unit, columns: Sequence[str], chunk_rows: int,
                    dictionary: Sequence[str] = (), start_row: int = 0,
                    decode_threads: bool = True) -> Iterator[Chunk]:
        """Chunks of one unit from row ``start_row`` on, cut at the same rows as a read from 0
        (so a resumed stream sees exactly the chunks an uninterrupted one would).
        ``decode_threads``: let Arrow decode the columns on its own thread pool."""
        columns = list(columns)
        if self._table is not None:
            batch = self._table_batches[unit.row_group].select(columns)
            for row in range(0, batch.num_rows, chunk_rows):
                if row + chunk_rows > start_row:
                    yield _from(Chunk(batch.slice(row, chunk_rows), unit, row,
                                      f"<table>, batch {unit.row_group}"), start_row)
            return
        attempt = 0
        while True:
            try:
                for chunk in self._file_chunks(unit, columns, chunk_rows, dictionary, decode_threads):
                    if chunk.row + chunk.batch.num_rows > start_row:
                        yield _from(chunk, start_row)
                        start_row = chunk.row + chunk.batch.num_rows
                return
            except (TransientReadError, UnreadableData) as e:  # read again from the first row not yet given
                # (chunks are cut alike); a remote file that looks corrupt is read again too, fewer
                # times, before it is believed: a response cut short can look like a corrupt file
                remote_corrupt = not isinstance(e, TransientReadError) and self.files[unit.file][0] is not None
                if attempt >= (CORRUPT_RETRIES if remote_corrupt else READ_RETRIES) or (
                        isinstance(e, UnreadableData) and not remote_corrupt):
                    raise
                self._wait_to_retry(attempt)
                attempt += 1

    def _wait_to_retry(self, attempt: int) -> None:
        self.retried_reads += 1
        time.sleep(RETRY_SECONDS * 2 ** attempt)

    def _file_chunks(self, unit, columns, chunk_rows, dictionary, decode_threads=True):
        path = self.files[unit.file][1]
        schema = self.file_schema(unit.file)
        missing = [c for c in columns if schema.get_field_index(c) < 0]
        if missing:
            raise FastadaError(f"{path}: column {missing[0]!r} is missing "
                               f"(the file has {column_list(schema.names)})")
        plain = self.plain_columns.setdefault(unit.file, set(self._overflowed))
        read_dictionary = [c for c in dictionary if c in schema.names and c not in plain]
        # metadata: the footer read when the data set was opened (no second read per row group);
        # pre_buffer=False: faster here, and its cache would keep every row group read so far
        pf = self._open(unit.file, metadata=self._metadata[unit.file],
                        read_dictionary=read_dictionary or None, pre_buffer=False)
        where = f"{path}, row group {unit.row_group}"
        row = 0
        sizes = {}
        try:
            for batch in pf.iter_batches(batch_size=chunk_rows, row_groups=[unit.row_group],
                                         columns=columns, use_threads=decode_threads):
                self._note_plain_pages(unit.file, batch, read_dictionary, sizes)
                yield Chunk(batch, unit, row, where)
                row += batch.num_rows
            # Arrow's allocator keeps freed blocks; without giving them back, peak RSS creeps up
            # with the number of row groups read (15% more at 10x the rows), not with the chunk size
            self._row_groups_read += 1
            if self._row_groups_read % RELEASE_EVERY == 0:
                pa.default_memory_pool().release_unused()
        except FileNotFoundError:
            raise UnreadableData(f"{path}: file not found (was it removed?)") from None
        except (pa.ArrowException, OSError) as e:
            raise self._remote_check(unit.file, _read_error(e, where, "cannot be read")) from None

    def _note_plain_pages(self, file: int, batch: pa.RecordBatch, read_dictionary: list[str], sizes: dict) -> None:
        """Arrow hands every batch of a row group its column's dictionary; one that grows from
        batch to batch is being built from plain-encoded pages (the writer's dictionary filled
        up: a column of many distinct values, Zipf 0.8 or flatter). Building it costs more than
        reading the strings and hashing each row (6M such rows: decoding 25% faster, the whole
        read 10%; the hashes are the same either way), so the file's later row groups, and the
        files first read after it, read the column plain (a writer's files mostly overflow alike:
        the same 2M flat rows as 8 files of one row group, 1.94-2.05 -> 1.88-1.91 s). A file
        written without dictionaries shows it too (its columns of many values: 2M flat rows
        2.54-2.62 s read as dictionaries throughout, 2.21-2.44 s so)."""
        for name in read_dictionary:
            arr = batch.column(name)
            if not pa.types.is_dictionary(arr.type):
                continue
            size = len(arr.dictionary)
            if size > sizes.get(name, size):
                self.plain_columns[file].add(name)
                self._overflowed.add(name)
            sizes[name] = size

    def _remote_check(self, file: int, error: FastadaError) -> FastadaError:
        """A file of an object store that reads as corrupt while the store no longer lists it (or
        lists it with another size):
        the store, not the file, failed (Arrow's S3 client gives a cut response to the Parquet
        reader, which calls it corrupt, and reports an unreachable store as "not found")."""
        fs, path = self.files[file]
        if fs is None or not isinstance(error, UnreadableData):
            return error
        try:
            info = fs.get_file_info(path)  # (a cut answer gives a file of size 0)
            listed = info.type == pafs.FileType.File and info.size == self._sizes.get(path, info.size)
        except (pa.ArrowException, OSError):
            listed = False
        if listed:
            return error
        return TransientReadError(f"{error}; and the store no longer lists the file: it cannot be read now: access, "
                                  f"the network or the store failed, not the data, so it is not skipped as bad "
                                  f"data; fix that and run again")


class TransientReadError(FastadaError):
    """A read that failed for access, the network or the machine, not the data: retried
    (:data:`READ_RETRIES`), never skipped as bad data."""


# Arrow's unused memory is given back to the system after every RELEASE_EVERY row groups read, not
# after each: memory given back is new memory when the next row group is decoded, and the system
# clears each page of it as it is first written. On a virtual machine that gives freed memory back
# to its host that costs about 2 s a GiB: with the C library's allocator (system_allocator), after
# each row group, 4M rows trained in 4.29-4.67 s, after every 8th in 3.88-3.98 s (system time 2.7-2.9
# -> 1.8 s), and 10M rows in 9.82-9.90 s -> 8.43-8.72 s, peak RSS 913-924 -> 953-957 MB (2026-12-06,
# Intel Xeon VM, 2 cores; 262,144-row row groups).
RELEASE_EVERY = 8
READ_RETRIES = 5      # a read that fails for the network or the store is tried again this many times,
RETRY_SECONDS = 0.5   # after 0.5, 1, 2, 4 and 8 s (object stores drop connections and throttle)
CORRUPT_RETRIES = 2   # times a file of an object store that reads as corrupt is read again before it is believed


# Read failures that say nothing about the data: no permission, a network or storage service that
# failed or timed out. Skipping them as bad data (--on-bad-rows skip) would silently train on less.
_TRANSIENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED,
                     errno.ECONNABORTED, errno.ENETDOWN, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EAGAIN,
                     errno.EINTR, errno.ENOMEM, errno.EMFILE, errno.ENFILE}
_TRANSIENT_WORDS = ("aws error", "connection", "timed out", "timeout", "throttl", "slow down", "service unavailable",
                    "permission denied", "access denied", "forbidden")


def _read_error(e: Exception, where: str, problem: str) -> FastadaError:
    """The error for a failed read: :class:`UnreadableData` (skippable) when the file is at fault,
    a plain :class:`FastadaError` when access, the network or the machine is."""
    text = _first_line(e)
    transient = (isinstance(e, (PermissionError, ConnectionError, TimeoutError, InterruptedError, MemoryError))
                 or getattr(e, "errno", None) in _TRANSIENT_ERRNOS
                 or any(word in text.lower() for word in _TRANSIENT_WORDS))
    if transient:
        return TransientReadError(f"{where}: cannot be read now ({text}): access, the network or the machine failed, "
                            f"not the data, so it is not skipped as bad data; fix that and run again")
    return UnreadableData(f"{where}: {problem} ({text})")


def _from(chunk: Chunk, start_row: int) -> Chunk:
    """``chunk`` without its rows before ``start_row`` of the unit."""
    skip = start_row - chunk.row
    if skip <= 0:
        return chunk
    return Chunk(chunk.batch.slice(skip), chunk.unit, start_row, chunk.where)


# An Arrow stream larger than this is not held in memory: it is written, batch by batch, to a
# temporary Parquet file that is read like any other and removed with its data set.
SPOOL_BYTES = 256 << 20


class _Spool:
    """A stream written to a temporary Parquet file (``path``), removed when this is collected."""

    def __init__(self, reader: pa.RecordBatchReader, read: list):
        self._folder = tempfile.TemporaryDirectory(prefix="fastada-stream-")
        self.path = os.path.join(self._folder.name, "stream.parquet")
        schema = _view_free_schema(reader.schema)
        with pq.ParquetWriter(self.path, schema) as writer:
            for batch in itertools.chain(read, reader):
                if batch.num_rows:
                    writer.write_table(pa.Table.from_batches([batch]).cast(schema), row_group_size=1 << 17)
        read.clear()


def _as_table(data, spool: bool = True):
    """In-memory data as an Arrow table: a record batch, a reader, a pandas DataFrame (its index
    left out), or anything that speaks the Arrow PyCapsule stream interface (polars, DuckDB,
    pandas >= 2.2, Arrow objects; ``__arrow_c_stream__``). Paths are returned as given. A
    stream of more than :data:`SPOOL_BYTES` comes back as a :class:`_Spool` (unless not ``spool``)."""
    if isinstance(data, (str, os.PathLike, pa.Table, _Spool)):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if type(data).__module__.split(".")[0] == "pandas" and type(data).__name__ == "DataFrame":
        try:
            return pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise FastadaError(f"the DataFrame cannot be read as Arrow ({_first_line(e)})") from None
    if hasattr(data, "__arrow_c_stream__"):
        try:
            reader = pa.RecordBatchReader.from_stream(data)
            read, size = [], 0
            for batch in reader:
                read.append(batch)
                size += batch.nbytes
                if spool and size > SPOOL_BYTES:
                    return _Spool(reader, read)
            table = pa.Table.from_batches(read, schema=reader.schema)
            schema = _view_free_schema(table.schema)
            return table if schema.equals(table.schema) else table.cast(schema)
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise FastadaError(f"{type(data).__name__}: cannot be read as an Arrow stream ({_first_line(e)})") from None
    return data


def _view_free_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with string_view / binary_view columns (polars exports them) as large_string /
    large_binary, which every Arrow kernel fastada uses takes."""
    views = {"string_view": pa.large_string(), "binary_view": pa.large_binary()}
    return pa.schema([pa.field(f.name, views.get(str(f.type), f.type), f.nullable) for f in schema],
                     metadata=schema.metadata)


def column_list(names) -> str:
    """The first dozen column names, for messages that say what a file has."""
    names = list(names)
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")


# What click logs call their label (compared in lower case): named in the message when the label
# asked for is not there, never chosen silently (a wrong label trains a model of the wrong thing)
LABEL_NAMES = ("label", "click", "clicked", "clicks", "is_click", "is_clicked", "is_attributed", "attributed",
               "conversion", "converted", "is_conversion", "target", "y", "response", "outcome")


def missing_label(where: str, label: str, names) -> str:
    """The message for a label column ``label`` that ``where`` lacks: its columns, and the one
    that looks like a label, if any."""
    names = list(names)
    like = [n for n in names if n.lower() in LABEL_NAMES and n != label]
    hint = f"; --label {like[0]}?" if len(like) == 1 else (f"; --label one of {', '.join(like)}?" if like else "")
    return f"{where}: label column {label!r} not found (columns: {column_list(names)}){hint}"


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _resolve(spec: str) -> list[tuple[pafs.FileSystem | None, str]]:
    """Parquet files named by a path, a folder, a glob, or a filesystem URI (s3://, gs://, ...)."""
    if "://" in spec and not spec.startswith("file://"):
        try:
            fs, path = pafs.FileSystem.from_uri(spec)
        except (pa.ArrowException, OSError, ValueError) as e:
            raise FastadaError(f"{spec}: cannot open ({_first_line(e)})") from None
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            return [(fs, path)]
        if info.type == pafs.FileType.Directory:
            found = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                           if i.type == pafs.FileType.File and _is_parquet_name(i.path))
            if not found:
                raise FastadaError(f"{spec}: no Parquet files ({', '.join(PARQUET_SUFFIXES)}) in this folder")
            return [(fs, p) for p in found]
        # (Arrow's S3 client answers "not found" when the store cannot be reached, too)
        raise FastadaError(f"{spec}: no such file or folder (or its store could not be reached: check the "
                           f"address, endpoint_override and credentials)")
    if spec.startswith("file://"):
        spec = spec[len("file://"):]
    if os.path.isdir(spec):
        found = sorted(os.path.join(root, f) for root, dirs, files in os.walk(spec)
                       for f in files if _is_parquet_name(f))
        if not found:
            raise FastadaError(f"{spec}: no Parquet files ({', '.join(PARQUET_SUFFIXES)}) in this folder")
        return [(None, p) for p in found]
    if os.path.isfile(spec):
        return [(None, spec)]
    if os.path.exists(spec):
        raise FastadaError(f"{spec}: a device, pipe or other special file, not a Parquet file or folder")
    if glob.has_magic(spec):
        found = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        if not found:
            raise FastadaError(f"{spec}: the pattern matches no files")
        return [(None, p) for p in found]
    raise FastadaError(f"{spec}: no such file or folder")


def _is_parquet_name(path: str) -> bool:
    base = os.path.basename(path)
    return not base.startswith((".", "_")) and base.lower().endswith(PARQUET_SUFFIXES)


def type_kind(t: pa.DataType) -> str:
    """The kind of an Arrow type as features see it: string, binary, integer, float, bool, null,
    time (timestamps, dates) or other (dictionaries by their values; large and view types like the plain ones)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if (pa.types.is_string(t) or pa.types.is_large_string(t)
            or getattr(pa.types, "is_string_view", lambda _: False)(t)):
        return "string"
    if (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
            or getattr(pa.types, "is_binary_view", lambda _: False)(t)):
        return "binary"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "time"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list of {type_kind(t.value_type)}"
    return "other"
