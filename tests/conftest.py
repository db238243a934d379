import os
import sys

import numpy as np
import pyarrow as pa
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # for `import naive`

# The real Criteo and Avazu samples are Kaggle competition data that came to us without a licence
# to pass them on, so they are not part of the project: the tests look for them in
# FASTADA_SAMPLES, else in ../shared/data beside the checkout (where CI has them).
SHARED = os.environ.get("FASTADA_SAMPLES") or os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def real_sample(name: str) -> str:
    """The folder of real sample ``name`` (criteo_dac_sample, avazu_sample); skips the test, saying
    why, when it is not here, or fails it where FASTADA_REQUIRE_SAMPLES=1 (CI)."""
    folder = os.path.join(SHARED, name)
    if not os.path.isdir(folder):
        why = (f"the real sample {name} is not in {os.path.abspath(SHARED)}: it is Kaggle data that cannot be "
               f"passed on with the project; set FASTADA_SAMPLES to a folder holding it")
        if os.environ.get("FASTADA_REQUIRE_SAMPLES") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return folder


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def small_table(rng, n=400, with_nulls=True):
    """A small mixed table: strings with nulls, ints, floats with NaN/inf/negatives, a label."""
    words = np.array(["a", "bb", "ccc", "dddd", "", "ünïcode", "x" * 37])
    cat = [None if with_nulls and rng.random() < 0.1 else str(words[rng.integers(len(words))]) for _ in range(n)]
    code = rng.integers(-5, 50, n)
    count = rng.exponential(20, n)
    count[rng.random(n) < 0.05] = np.nan
    count[rng.random(n) < 0.02] = np.inf
    count[rng.random(n) < 0.1] *= -1
    logit = (np.array([len(c or "") for c in cat]) - 3) * 0.3 + 0.02 * np.nan_to_num(code)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    return pa.table({
        "label": pa.array(y),
        "word": pa.array(cat, type=pa.string()),
        "code": pa.array(code, mask=rng.random(n) < 0.05 if with_nulls else None),
        "count": pa.array(count),
    })


def error_of(stderr: str) -> str:
    """The error a failed command printed: its last line. Lines before it may only be notes
    (the columns' roles, the learning rate chosen), never a traceback or another error."""
    lines = stderr.strip().splitlines()
    assert lines, "nothing on stderr"
    for line in lines[:-1]:
        assert "Traceback" not in line and "error" not in line.lower(), stderr
    return lines[-1]
