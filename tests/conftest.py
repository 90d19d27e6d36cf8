import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from slurm_cluster import slurm_cluster  # noqa: F401  (the session's SLURM cluster)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """carrot's cache (the image check) lives in a temporary folder, never in the home."""
    monkeypatch.setenv("CARROT_CACHE", str(tmp_path_factory.mktemp("carrot-cache")))


@pytest.fixture(scope="session")
def probe_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained by ``carrot train`` in a subprocess on a tiny ImageFolder tree: ``pets/`` holds
    the images, ``run/`` the run folder. Shared by the end-to-end CLI tests of several modules."""
    from cli_run import QUICK, carrot_cli, tiny_images

    base = tmp_path_factory.mktemp("probe")
    data = tiny_images(base / "pets")
    done = carrot_cli("train", *QUICK, f"data.root={data}", f"output_dir={base / 'run'}")
    assert done.returncode == 0, done.stderr[-3000:]
    return base


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The SLURM tests start a cluster: they run only when selected (``-m slurm``, their own CI
    step), not with every other test."""
    if "slurm" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="SLURM tests run as their own step: pytest -m slurm")
    for item in items:
        if "slurm" in item.keywords:
            item.add_marker(skip)
