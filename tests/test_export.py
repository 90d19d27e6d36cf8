"""carrot.export: ``carrot export`` and ``carrot.load_model`` on a real run (subprocesses): a broken
config.json is one line, a failed export leaves nothing behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cli_run import carrot_cli, one_line_error

pytestmark = pytest.mark.slow


def test_export_config_is_validated(probe_run: Path, tmp_path: Path) -> None:
    import carrot
    from carrot.export import ExportError

    good = tmp_path / "good"
    done = carrot_cli(
        "export", "--checkpoint", probe_run / "run" / "checkpoints" / "last.pt", "--out", good
    )
    assert done.returncode == 0, done.stderr
    config = json.loads((good / "config.json").read_text())
    cases = {
        "missing head": ({k: v for k, v in config.items() if k != "head"}, "no 'head'"),
        "architecture 5": ({**config, "architecture": 5}, "architecture must be"),
        "negative scale": ({**config, "head": {**config["head"], "scale": -1.0}}, "head.scale"),
        "head type": ({**config, "head": {**config["head"], "type": "mlp"}}, "head must be"),
        "label names": ({**config, "label_names": ["a"]}, "label_names must be"),
        "input_size str": ({**config, "input_size": "32"}, "input_size must be"),
        "input_size zero": ({**config, "input_size": [3, 0, 0]}, "input_size must be"),
        "std zero": ({**config, "std": [0.0, 0.2, 0.2]}, "std must be"),
        "std short": ({**config, "std": [0.2]}, "std must be"),
        "mean nan": ({**config, "mean": [float("nan")] * 3}, "mean must be"),
        "classes 0": ({**config, "num_classes": 0}, "num_classes must be"),
        "classes bool": ({**config, "num_classes": True}, "num_classes must be"),
        "interpolation": ({**config, "interpolation": "lanczos9"}, "interpolation must be"),
        "crop_pct": ({**config, "crop_pct": 2}, "crop_pct must be"),
        "embedding_dim": ({**config, "embedding_dim": -3}, "embedding_dim must be"),
        "not a mapping": ([1, 2], "must be a JSON object"),
    }
    for name, (broken, message) in cases.items():
        folder = tmp_path / name.replace(" ", "_")
        folder.mkdir()
        (folder / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes())
        (folder / "config.json").write_text(json.dumps(broken))
        with pytest.raises(ExportError, match=message) as e:
            carrot.load_model(folder)
        assert "\n" not in str(e.value), name
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "model.safetensors").write_bytes(b"")
    (tmp_path / "json" / "config.json").write_text("{not json")
    with pytest.raises(ExportError, match="not valid JSON"):
        carrot.load_model(tmp_path / "json")


def test_a_failed_export_leaves_nothing_and_the_retry_needs_no_force(
    probe_run: Path, tmp_path: Path
) -> None:
    shim = tmp_path / "shim"
    (shim / "onnxruntime").mkdir(parents=True)
    (shim / "onnxruntime" / "__init__.py").write_text("raise ImportError('no onnxruntime')\n")
    ckpt = probe_run / "run" / "checkpoints" / "last.pt"
    out = tmp_path / "export"
    env = {"PYTHONPATH": f"{shim}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = carrot_cli("export", "--checkpoint", ckpt, "--out", out, "--format", "onnx", env=env)
    one_line_error(done, "carrot-fgvc[export]")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["shim"]
    done = carrot_cli("export", "--checkpoint", ckpt, "--out", out)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "backbone.safetensors", "config.json", "model.safetensors",
    ]  # fmt: skip
