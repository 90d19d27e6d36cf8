import pytest

TINY = [
    "data.name=synthetic",
    "data.options.num_superclasses=3",
    "data.options.classes_per_superclass=3",
    "data.options.train_per_class=12",
    "data.options.test_per_class=4",
    "data.options.image_size=16",
    "data.options.difficulty=0.0",  # separable enough that CARROT expands classes (γ > 1) within 6 steps
    "data.image_size=16",
    "train.batch_size=12",
    "train.k=4",
    "train.max_steps_per_epoch=5",
    "train.epochs=2",
    "train.progress=false",
    "train.lr=0.01",
    "train.device=cpu",
]


@pytest.fixture
def tiny(tmp_path):
    """Overrides for a run of a few seconds, writing into tmp_path/run."""
    return [*TINY, f"output_dir={tmp_path / 'run'}"]
