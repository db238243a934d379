"""What a new user meets in the first minutes: pipes, memory that cannot fit, the demo, the help."""

import importlib
import re
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

import conftest
import fastada
from conftest import small_table
from fastada.cli import main

training = importlib.import_module("fastada.train")  # the module (fastada.train is also the function)

CLI = [sys.executable, "-c", "import sys; from fastada.cli import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("first")
    table = small_table(np.random.default_rng(1), n=3000)
    path = folder / "m.fastada"
    fastada.train(table, label="label", bits=16, threads=1, model=str(path))
    return path


def test_output_into_a_pipe_closed_early_ends_without_a_traceback(model_file):
    # far more lines than a pipe holds, so the writer meets the closed pipe
    command = " ".join(f"'{part}'" for part in CLI) + f" inspect '{model_file}' --top 20000 | head -n 2"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert len(done.stdout.splitlines()) == 2
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr


def test_bits_that_cannot_fit_in_memory_are_refused_before_training(tmp_path, monkeypatch, capsys):
    table = small_table(np.random.default_rng(2), n=500)
    data = tmp_path / "d.parquet"
    pq.write_table(table, data)
    monkeypatch.setattr(training, "memory_available", lambda: 1 << 30)  # a machine with 1 GiB free
    model = tmp_path / "m.fastada"
    assert main(["train", str(data), "--model", str(model), "--bits", "26"]) == 2
    err = capsys.readouterr().err.strip()
    # the need counts the chunks in flight, one set a reader thread: it depends on the cores
    assert re.match(r"fastada: error: --bits 26 needs about \d\.\d GiB of memory \(.*\) but 1\.0 GiB is "
                    r"available; use --bits 2[345] or less$", err), err
    assert not model.exists()


def test_an_address_space_limit_counts_as_the_memory_available():
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30)); "
            "from fastada.train import memory_available; print(memory_available())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 0 < int(done.stdout) < 6 << 30


def test_a_model_far_larger_than_its_data_is_said(monkeypatch):
    monkeypatch.setattr(training, "LARGE_MODEL_SLOTS", 1 << 14)
    notes = []
    fastada.train(small_table(np.random.default_rng(3), n=200), label="label", bits=18,
                  threads=1, on_note=notes.append)
    # 200 rows of 4 or 5 features (by the roles the columns take)
    assert any(re.search(r"2\^18 slots for at most (800|1,000) distinct features", n) and "--bits 13" in n
               for n in notes), notes


def test_demo_reports_compiling_apart_from_the_training_rate(tmp_path, capsys):
    assert main(["demo", "--rows", "30000", "--test-rows", "3000", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    compiled = next(line for line in out.splitlines() if "compiled code" in line)
    trained = next(line for line in out.splitlines() if "trained in" in line)
    assert out.index(compiled) < out.index(trained)


def test_train_help_groups_the_options_and_ends_with_examples(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for group in ("data and column roles", "learning:", "validation and early stopping:", "checkpoints:",
                  "performance:"):
        assert group in text
    assert text.rstrip().splitlines()[-1].strip().endswith("--model ctr.fastada")
    examples = text[text.index("examples:"):]
    assert examples.count("fastada train ") == 2


def test_real_samples_missing_skip_with_the_reason_or_fail_in_ci(tmp_path, monkeypatch):
    monkeypatch.setattr(conftest, "SHARED", str(tmp_path))
    monkeypatch.delenv("FASTADA_REQUIRE_SAMPLES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="cannot be passed on with the project"):
        conftest.real_sample("criteo_dac_sample")
    monkeypatch.setenv("FASTADA_REQUIRE_SAMPLES", "1")
    with pytest.raises(pytest.fail.Exception, match="FASTADA_SAMPLES"):
        conftest.real_sample("criteo_dac_sample")


def test_training_loads_neither_pandas_nor_scipy_stats(tmp_path):
    """pyarrow's to_numpy imports pandas (0.16 s), scipy.stats cost 0.5 s: a short run's start.
    (Numba itself loads scipy.linalg where scipy is installed.)"""
    data = tmp_path / "d.parquet"
    pq.write_table(small_table(np.random.default_rng(2), n=2000), data)
    code = ("import sys, fastada; fastada.train(sys.argv[1], label='label', bits=16, model=sys.argv[2]); "
            "print(sorted(m for m in ('pandas', 'scipy.stats') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, str(data), str(tmp_path / "m.fastada")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_an_update_to_one_source_file_reaches_the_cached_kernels_of_the_others(tmp_path):
    """Numba reuses a cached kernel while its own file is unchanged, even where a function it
    inlines from another file has changed; fastada drops its cached kernels when any of its
    source files changes, so that an update to kernels.py reaches FFM's kernels, which inline it."""
    import os
    import shutil
    shutil.copytree(os.path.dirname(fastada.__file__), tmp_path / "fastada",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import numpy as np\n"
            "from fastada import ffm, kernels\n"
            "lookup = kernels.hot_slots(1 << 10, [5]).lookup  # slot 5 hot, at position 1\n"
            "hot, ahead = np.zeros(1, np.int64), np.zeros(1, np.int64)\n"
            "ffm._row_blocks(np.zeros((8, 8), np.float32), np.array([[5]], np.uint32), 0, 1023, 1, lookup, ahead, hot, 1024)\n"
            "print(int(hot[0]))")

    def position() -> int:
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(tmp_path)})
        assert done.returncode == 0, done.stderr
        return int(done.stdout.split()[-1])

    assert position() == 1
    assert position() == 1  # (from the cache)
    kernels_py = tmp_path / "fastada" / "kernels.py"
    source = kernels_py.read_text()
    assert source.count("return entry & 0xFFFF") == 1
    kernels_py.write_text(source.replace("return entry & 0xFFFF", "return (entry & 0xFFFF) + 1"))
    assert position() == 2  # ffm.py unchanged, its cached kernel compiled again with the new lookup
