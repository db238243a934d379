"""fastada: Hogwild per-feature Adagrad for sparse CTR models, streamed from Parquet."""

__version__ = "0.1.0"

import os as _os  # noqa: E402

# Numba refuses to import with a NUMBA_NUM_THREADS that is not a positive integer, in a traceback
# before any of fastada runs. The value is set aside here, Numba imports with its default, and
# every entry point (the CLI, train) refuses to run with one line naming the variable.
BAD_NUMBA_THREADS = _os.environ.get("NUMBA_NUM_THREADS")
if BAD_NUMBA_THREADS is not None and not (BAD_NUMBA_THREADS.strip().isdigit() and int(BAD_NUMBA_THREADS) > 0):
    del _os.environ["NUMBA_NUM_THREADS"]
else:
    BAD_NUMBA_THREADS = None

from .api import load, train  # noqa: E402
from .config import FastadaError, FeatureSpec, LearnConfig  # noqa: E402
from .model import Model  # noqa: E402

__all__ = ["FastadaError", "FeatureSpec", "LearnConfig", "Model", "__version__", "load", "train"]
