"""Methods from other installed packages (the ``carrot.methods`` entry-point group): listed by
``carrot methods`` in-process and as a fresh process, trained, and a broken one named in one line.
The example package of docs/methods.md (examples/my_method) is installed the same way and trained.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import carrot.methods.base as base
import carrot.methods.lookup as lookup
from carrot.cli import main
from carrot.methods import ENTRY_POINT_GROUP, MethodError, get_method, method_names, registered
from carrot.train import Trainer, load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "my_method"

PLUGIN = """
from carrot.methods import LossResult, Method
import torch.nn.functional as F


class Doubled(Method):
    name = "{name}"
    description = "2·CE, a method from another package"
    reference = "nobody, a test, 2026"

    def loss(self, z, logits, target, head, *, step):
        ce = F.cross_entropy(logits.float(), target)
        return LossResult(2 * ce, {{"ce": ce.detach()}}, {{}})
"""


def install(site: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
    """What ``pip install`` leaves of a package: its modules and a ``.dist-info`` folder declaring
    its entry points, in ``site`` (a folder to put on sys.path)."""
    site.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source, encoding="utf-8")
    info = site / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    lines = [f"[{ENTRY_POINT_GROUP}]", *(f"{k} = {v}" for k, v in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return site


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch):
    """The registry as carrot's own package leaves it, plug-ins not yet loaded; restored after,
    so that the methods installed here do not leak into other tests."""
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    monkeypatch.setattr(base, "_PLUGINS_LOADED", False)
    monkeypatch.setattr(lookup, "_COMPOSED", {})
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("plugin_", "carrot_center_sgd")):
            del sys.modules[name]


def test_an_installed_packages_method_is_listed_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, fresh_registry
) -> None:
    site = install(
        tmp_path / "site",
        "carrot-doubled",
        {"doubled": "plugin_doubled:Doubled"},  # the class form: registered on load
        {"plugin_doubled": PLUGIN.format(name="doubled")},
    )
    builtin = method_names()  # before the package is on the path: carrot's own only
    assert "doubled" not in builtin
    monkeypatch.setattr(base, "_PLUGINS_LOADED", False)
    monkeypatch.syspath_prepend(str(site))
    assert method_names() == [*builtin, "doubled"]
    assert get_method("ce+carrot") and get_method("doubled").baseline == "ce"
    assert load_config(None, ["method=doubled"]).method == "doubled"
    assert main(["methods", "--json"]) == 0
    assert "doubled" in [r["name"] for r in json.loads(capsys.readouterr().out)]
    from carrot.bench.suites import trainer_methods

    bench = trainer_methods()  # what the bench and the study run, by name
    assert bench["doubled"].baseline == "ce" and bench["doubled"].overrides == ("method=doubled",)


@pytest.mark.slow
def test_a_fresh_carrot_methods_process_lists_it(tmp_path: Path) -> None:
    """As a user runs it: a fresh process finds the package through PYTHONPATH as through its site."""
    site = install(
        tmp_path / "site",
        "carrot-doubled",
        {"doubled": "plugin_doubled:Doubled"},
        {"plugin_doubled": PLUGIN.format(name="doubled")},
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO / "src")])}
    out = subprocess.run(
        [sys.executable, "-m", "carrot.cli", "methods"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "doubled: 2·CE, a method from another package" in out.stdout


@pytest.mark.parametrize(
    ("entry", "modules", "reason"),
    [
        ("plugin_missing", {}, "ModuleNotFoundError: No module named 'plugin_missing'"),
        ("plugin_broken", {"plugin_broken": "1 / 0\n"}, "ZeroDivisionError: division by zero"),
        (  # a name carrot already has
            "plugin_clash:Doubled",
            {"plugin_clash": PLUGIN.format(name="ce")},
            "ValueError: method 'ce' is already registered by carrot.methods.ce.",
        ),
    ],
)
def test_a_broken_entry_point_is_one_line_naming_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, fresh_registry, entry, modules, reason
) -> None:
    site = install(tmp_path / "site", "carrot-broken", {"bad": entry}, modules)
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(MethodError, match="of the package 'carrot-broken'") as caught:
        registered()
    assert reason in str(caught.value) and "\n" not in str(caught.value)
    assert main(["methods"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "uninstall carrot-broken" in err[0] and reason in err[0]
    assert base._REGISTRY["ce"].__module__ == "carrot.methods.ce"  # carrot's own stays
    with pytest.raises(MethodError, match="carrot-broken"):  # and it says so again next time
        method_names()


def _install_example(site: Path) -> Path:
    """examples/my_method as pip would install it, its entry points read from its pyproject."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    modules = {p.stem: p.read_text(encoding="utf-8") for p in EXAMPLE.glob("*.py")}
    return install(site, project["name"], project["entry-points"][ENTRY_POINT_GROUP], modules)


def test_the_docs_example_method_installs_and_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_registry
) -> None:
    monkeypatch.syspath_prepend(str(_install_example(tmp_path / "site")))
    cls = get_method("center_loss_sgd")
    assert cls.logs == ("ce", "center") and cls.section_name() == "center_loss_sgd"
    overrides = [
        "data.name=synthetic", "data.options.num_superclasses=2",
        "data.options.classes_per_superclass=2", "data.options.train_per_class=8",
        "data.options.test_per_class=2", "data.options.image_size=8", "data.image_size=8",
        "train.batch_size=8", "train.k=2", "train.epochs=1", "train.max_steps_per_epoch=3",
        "train.progress=false", "train.retrieval=false", "train.plots=false",
        "train.tensorboard=false", "train.device=cpu", "method=center_loss_sgd",
        "center_loss_sgd.weight=1.0", f"output_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    trainer = Trainer(load_config(None, overrides))
    assert trainer.optimizer.param_groups[-1]["params"][0] is trainer.method.centres
    trainer.fit()
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert torch.isfinite(torch.tensor(record["train_center"])) and record["train_center"] > 0
    centres = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert centres["method"]["centres"].abs().sum() > 0  # learned: they start at 0
