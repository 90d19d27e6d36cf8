import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "train_conftest", Path(__file__).resolve().parents[1] / "train" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_train)


@pytest.fixture
def tiny(tmp_path):
    """The trainer tests' few-second run (tests/train/conftest.py), writing into tmp_path/run."""
    return [*_train.TINY, f"output_dir={tmp_path / 'run'}"]
