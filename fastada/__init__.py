"""fastada: Hogwild per-feature Adagrad for sparse CTR models, streamed from Parquet."""

__version__ = "0.1.0"

import os as _os  # noqa: E402
import sys as _sys  # noqa: E402

# Numba refuses to import with a NUMBA_NUM_THREADS that is not a positive integer, in a traceback
# before any of fastada runs. The value is set aside here, Numba imports with its default, and
# every entry point (the CLI, train) refuses to run with one line naming the variable.
BAD_NUMBA_THREADS = _os.environ.get("NUMBA_NUM_THREADS")
if BAD_NUMBA_THREADS is not None and not (BAD_NUMBA_THREADS.strip().isdigit() and int(BAD_NUMBA_THREADS) > 0):
    del _os.environ["NUMBA_NUM_THREADS"]
else:
    BAD_NUMBA_THREADS = None

# Arrow's allocator: the C library's (see reader.system_allocator), chosen here where it can be,
# before pyarrow is first imported (its C++ code reads this once, at import); a value already set
# is kept, and where pyarrow came first, training and reading switch only Python's default pool
if "pyarrow" not in _sys.modules:
    _os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

from .api import load, train  # noqa: E402
from .config import FastadaError, FeatureSpec, LearnConfig  # noqa: E402
from .model import Model  # noqa: E402


def _forget_stale_kernels() -> None:
    """Drop fastada's compiled kernels from Numba's cache when any of its source files changed.

    Numba reuses a cached kernel while the file that defines it is unchanged, even where a
    function it inlines from another file has changed since: after an update that changed
    kernels.py but not ffm.py, FFM would run its cached kernel with the old kernels' code
    (measured 2026-12-06, a hot-slot lookup of another layout: FFM's per-thread views were
    silently lost and two threads ran 15x slower). The cache is therefore keyed by every source
    file's content; a change costs one compilation (seconds), once. Runs before any kernel is
    loaded (importing fastada compiles and loads none)."""
    import hashlib

    from . import kernels
    try:  # (the folder Numba chose: in-tree, user-wide or NUMBA_CACHE_DIR)
        folder = kernels.logistic_loss._cache._cache_path
    except AttributeError:  # (a Numba without this attribute: nothing to do here)
        return
    here = _os.path.dirname(_os.path.abspath(__file__))
    digest = hashlib.sha1()
    try:
        sources = sorted(name for name in _os.listdir(here) if name.endswith(".py"))
        for name in sources:
            with open(_os.path.join(here, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    except OSError:  # (sources Numba could not have cached from either)
        return
    key = digest.hexdigest()
    marker = _os.path.join(folder, "fastada-sources.sha1")
    try:
        with open(marker) as f:
            if f.read().strip() == key:
                return
    except OSError:
        pass
    modules = tuple(name[:-3] + "." for name in sources)
    try:
        _os.makedirs(folder, exist_ok=True)  # (a first run: the key is written before Numba's first kernel)
        for name in _os.listdir(folder):
            if name.startswith(modules) and name.endswith((".nbi", ".nbc")):
                _os.remove(_os.path.join(folder, name))
        with open(marker + ".tmp", "w") as f:
            f.write(key + "\n")
        _os.replace(marker + ".tmp", marker)
    except OSError:
        pass  # (a folder Numba cannot write to either: it compiles every time, nothing stale to drop)


_forget_stale_kernels()

__all__ = ["FastadaError", "FeatureSpec", "LearnConfig", "Model", "__version__", "load", "train"]
