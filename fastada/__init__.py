"""fastada: Hogwild per-feature Adagrad for sparse CTR models, streamed from Parquet."""

__version__ = "0.1.0"

from .api import load, train  # noqa: E402
from .config import FastadaError, FeatureSpec, LearnConfig  # noqa: E402
from .model import Model  # noqa: E402

__all__ = ["FastadaError", "FeatureSpec", "LearnConfig", "Model", "__version__", "load", "train"]
