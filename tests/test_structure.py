"""The public surface and the one-way import rule (cli -> api/train -> reader, features, kernels, model, metrics -> hashing)."""

import ast
import pathlib

import fastada

PACKAGE = pathlib.Path(fastada.__file__).parent

# module -> fastada modules it may import
ALLOWED = {
    "hashing": set(),
    "kernels": set(),
    "ftrl": {"kernels"},
    "ffm": {"kernels"},
    "config": set(),
    "metrics": set(),
    "reader": {"config"},
    "features": {"config", "hashing"},
    "model": {"config", "score"},  # Model.predict/evaluate delegate to scoring, lazily
    "stream": {"config", "features", "reader"},
    "score": {"config", "features", "ffm", "hashing", "kernels", "metrics", "reader", "stream"},
    "synth": {"config", "metrics", "model"},
    "checkpoint": {"config", "model"},
    "learners": {"config", "ffm", "ftrl", "kernels"},  # each learner's kernels behind the driver's interface
    "train": {"checkpoint", "config", "features", "kernels", "learners", "model", "reader", "roles", "score", "stream"},
    "roles": {"config", "features", "reader"},
    "distributed": {"config", "kernels", "model", "reader", "score", "stream", "train"},  # the driver, on workers
    "api": {"config", "distributed", "model", "reader", "roles", "train"},
    "cli": {"api", "config", "distributed", "model", "score", "synth", "train"},
    "sklearn": {"api", "reader"},  # the estimator is train() on the data it was given
}


def fastada_imports(path):
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(a.name for a in node.names if a.name != "__version__")
    return found


def test_imports_flow_one_way():
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem == "__init__":
            continue
        assert path.stem in ALLOWED, f"new module {path.stem}: add it to the import rule"
        extra = fastada_imports(path) - ALLOWED[path.stem]
        assert not extra, f"{path.stem} imports {extra}"


def test_kernels_know_nothing_of_arrow_or_files():
    for name in ("kernels", "hashing", "ftrl"):
        source = (PACKAGE / f"{name}.py").read_text()
        assert "pyarrow" not in source and "open(" not in source


def test_public_api():
    assert fastada.__all__ == sorted(fastada.__all__)
    assert set(fastada.__all__) == {"FastadaError", "FeatureSpec", "LearnConfig", "Model", "__version__", "load", "train"}


def test_every_breakage_of_the_mutation_run_finds_its_text_once():
    import mutations
    for name, (path, text, _, _) in mutations.BREAKAGES.items():
        assert (PACKAGE.parent / path).read_text().count(text) == 1, f"tests/mutations.py {name}: update its text"


def test_no_tracked_file_is_large():
    """A submission over its size limit does not land at all: data, caches and builds stay out of
    the repository (benchmarks write to bench-out/, which is ignored)."""
    import subprocess
    root = PACKAGE.parent
    try:
        files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        import pytest
        pytest.skip("not a git checkout")
    large = [f for f in files if (root / f).is_file() and (root / f).stat().st_size > 1 << 20]
    assert not large, f"tracked files over 1 MiB: {large}"
