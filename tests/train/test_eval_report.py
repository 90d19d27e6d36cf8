"""carrot eval --tta and --report: torchmetrics figures against plain float64 loops, the class
geometry against its formulas, the confusion order, flip TTA by hand, and the CLI end to end."""

from __future__ import annotations

import csv
import json
import math
import random
import types
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from carrot.cli import main
from carrot.train.eval_report import (
    build_report,
    calibration,
    confused_pairs,
    confusion_order,
    per_class_accuracy,
    write_report,
)
from carrot.train.model import ModelOutput
from carrot.train.tta import FlipTTA, with_tta


def _outputs(seed: int = 0, n: int = 120, classes: int = 7, dim: int = 5):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes - 1, (n,), generator=g)  # the last class has no images
    logits = torch.randn(n, classes, generator=g) * 2
    logits[torch.arange(n), labels] += 1.5  # mostly right
    emb = torch.randn(n, dim, generator=g) + 3 * torch.eye(classes, dim)[labels]
    return logits, labels, emb


def test_calibration_matches_a_plain_loop() -> None:
    logits, labels, _ = _outputs()
    probs = torch.softmax(logits, 1)
    cal = calibration(probs, labels, bins=15)
    edges = [i / 15 for i in range(16)]
    count, hits, conf_sum = [0] * 16, [0] * 16, [0.0] * 16
    for p, y in zip(probs.double().tolist(), labels.tolist(), strict=True):
        conf = max(p)
        b = sum(e <= conf for e in edges) - 1
        count[b] += 1
        hits[b] += int(p.index(conf) == y)
        conf_sum[b] += conf
    ece = sum(abs(hits[b] - conf_sum[b]) for b in range(16) if count[b]) / len(labels)
    assert cal.ece == pytest.approx(100 * ece, abs=1e-4) and cal.bins == 15
    assert cal.counts.tolist() == count and sum(count) == len(labels)
    for b in range(16):
        if count[b]:
            assert float(cal.accuracy[b]) == pytest.approx(hits[b] / count[b])
            assert float(cal.confidence[b]) == pytest.approx(conf_sum[b] / count[b], abs=1e-6)
    ece_from_bins = float((cal.counts * (cal.accuracy - cal.confidence).abs()).sum()) / len(labels)
    assert 100 * ece_from_bins == pytest.approx(cal.ece, abs=1e-4)


def test_per_class_accuracy_matches_a_plain_loop() -> None:
    logits, labels, _ = _outputs(1)
    for k in (1, 5):
        got = per_class_accuracy(logits, labels, top_k=k)
        for c in range(logits.shape[1]):
            rows = [i for i in range(len(labels)) if labels[i] == c]
            if not rows:
                assert math.isnan(float(got[c]))
                continue
            hits = sum(int(c in logits[i].topk(k).indices.tolist()) for i in rows)
            assert float(got[c]) == pytest.approx(100 * hits / len(rows))


def test_report_confusion_pairs_and_geometry_match_plain_loops() -> None:
    logits, labels, emb = _outputs(2)
    classes = [f"c{i}" for i in range(7)]
    report = build_report(logits, labels, emb, classes)
    pred = logits.argmax(1).tolist()
    loop = [[0] * 7 for _ in range(7)]
    for y, p in zip(labels.tolist(), pred, strict=True):
        loop[y][p] += 1
    assert report.confusion.tolist() == loop
    pairs = {(p["class_a"], p["class_b"]): p for p in report.pairs}
    for a in range(7):
        for b in range(a + 1, 7):
            count = loop[a][b] + loop[b][a]
            if count == 0:
                assert (classes[a], classes[b]) not in pairs
                continue
            p = pairs[(classes[a], classes[b])]
            assert (p["a_as_b"], p["b_as_a"], p["count"]) == (loop[a][b], loop[b][a], count)
            assert p["rate"] == pytest.approx(count / (sum(loop[a]) + sum(loop[b])))
    assert [p["count"] for p in report.pairs] == sorted(
        (p["count"] for p in report.pairs), reverse=True
    )
    # geometry of the L2-normalized embeddings, from the formulas
    z = torch.nn.functional.normalize(emb.double(), dim=1)
    mus = {c: z[labels == c].mean(0) for c in range(6)}
    for c, row in enumerate(report.per_class):
        assert row["support"] == int((labels == c).sum())
        if c == 6:
            assert row["support"] == 0 and math.isnan(row["r"]) and row["nearest"] == ""
            continue
        r = float(((z[labels == c] - mus[c]) ** 2).sum(1).mean().sqrt())
        dists = {o: float((mus[c] - mus[o]).norm()) for o in mus if o != c}
        m = min(dists.values())
        assert row["r"] == pytest.approx(r, rel=1e-5) and row["m"] == pytest.approx(m, rel=1e-5)
        assert row["gamma"] == pytest.approx(max(1.0, m / (2 * r + 1e-12)), rel=1e-5)
        assert row["nearest"] == classes[min(dists, key=dists.__getitem__)]
    data = report.json()
    assert data["ece_bins"] == 15 and data["ece"] == report.calibration.ece
    assert data["per_class"][6]["r"] is None  # NaN becomes null in JSON
    json.dumps(data, allow_nan=False)


def test_confusion_order_puts_confused_classes_together() -> None:
    # classes 0..7; pairs (0, 5), (1, 6), (2, 7), (3, 4) are confused with each other
    c = torch.eye(8, dtype=torch.long) * 20
    for a, b in ((0, 5), (1, 6), (2, 7), (3, 4)):
        c[a, b] = c[b, a] = 8
    order = confusion_order(c)
    assert sorted(order) == list(range(8))
    pos = {k: i for i, k in enumerate(order)}
    for a, b in ((0, 5), (1, 6), (2, 7), (3, 4)):
        assert abs(pos[a] - pos[b]) == 1
    pairs = confused_pairs(c, [str(i) for i in range(8)])
    assert [(p["class_a"], p["class_b"]) for p in pairs] == [
        ("0", "5"),
        ("1", "6"),
        ("2", "7"),
        ("3", "4"),
    ]


def test_200_classes_in_scattered_look_alike_groups_come_out_as_blocks(tmp_path) -> None:
    from carrot.train.eval_plots import plot_confusion

    g = torch.Generator().manual_seed(0)
    groups = torch.randperm(200, generator=g).view(50, 4)  # 50 groups of 4, scattered
    c = torch.eye(200, dtype=torch.long) * 30
    for group in groups:
        for a in group:
            for b in group:
                if a != b:
                    c[a, b] = int(torch.randint(1, 5, (1,), generator=g))
    order = confusion_order(c)
    pos = torch.empty(200, dtype=torch.long)
    pos[torch.tensor(order)] = torch.arange(200)
    spans = pos[groups].max(1).values - pos[groups].min(1).values
    assert spans.tolist() == [3] * 50  # every group contiguous
    names = [f"species_{i}" for i in range(200)]
    plot_confusion(c, names, order, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0


class _LeftRight(nn.Module):
    """Logits that depend on where the image's mass is: not flip-invariant."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        w = x.shape[-1]
        z = torch.stack([x[..., : w // 2].mean((1, 2, 3)), x[..., w // 2 :].mean((1, 2, 3))], 1)
        return ModelOutput(torch.stack([z[:, 0], z[:, 1], 0.4 * (z[:, 0] + z[:, 1])], 1) * 5, z)


def test_flip_tta_averages_the_two_views_logits() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 4, 6, generator=g)
    x[:3, ..., :3] += 1  # mass on the left
    model = _LeftRight()
    out = FlipTTA(model)(x)
    by_hand = (model(x).logits + model(x.flip(-1)).logits) / 2
    torch.testing.assert_close(out.logits, by_hand)
    torch.testing.assert_close(
        out.embedding, (model(x).embedding + model(x.flip(-1)).embedding) / 2
    )
    assert (model(x).logits.argmax(1) != out.logits.argmax(1)).any()  # flip changed a prediction
    assert FlipTTA(model).head is model.head
    assert with_tta(model, "none") is model


def test_with_tta_refuses_unknown_modes_and_warns_on_digits() -> None:
    with pytest.raises(ValueError, match="--tta must be one of none, flip, got 'rotate'"):
        with_tta(nn.Identity(), "rotate")
    with pytest.warns(UserWarning, match="--tta flip on digits, whose images are never mirrored"):
        model = with_tta(
            nn.Identity(), "flip", traits=types.SimpleNamespace(flip_ok=False), dataset="digits"
        )
    assert isinstance(model, FlipTTA)


def test_write_report_files(tmp_path) -> None:
    logits, labels, emb = _outputs(3, n=60)
    names = write_report(build_report(logits, labels, emb, [f"k{i}" for i in range(7)]), tmp_path)
    for name in names:
        assert (tmp_path / name).stat().st_size > 0, name
    cells = list(csv.DictReader((tmp_path / "confusion.csv").open()))
    assert sum(int(c["count"]) for c in cells) == 60


# --- end to end on an ImageFolder run ---------------------------------------------------------

COLORS = {"ash": (200, 40, 40), "elm": (40, 200, 40), "oak": (40, 40, 200), "yew": (90, 90, 40)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from carrot.train import Trainer, load_config

    base = tmp_path_factory.mktemp("trees")
    rng = random.Random(0)
    for split, n in (("train", 6), ("test", 5)):
        for name, color in COLORS.items():
            for i in range(n):
                path = base / "trees" / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                img = Image.new("RGB", (20, 16), color)
                for _ in range(60):
                    img.putpixel((rng.randrange(10), rng.randrange(16)), (250, 250, 250))
                img.save(path)
    cfg = load_config(
        None,
        [
            "data.name=imagefolder",
            f"data.root={base / 'trees'}",
            "data.image_size=16",
            "train.batch_size=8",
            "train.k=2",
            "train.epochs=1",
            "train.device=cpu",
            "train.progress=false",
            "train.plots=false",
            "train.loggers=[]",
            "model.embedding_dim=8",
            f"output_dir={base / 'run'}",
        ],
    )
    Trainer(cfg).fit()
    return base


@pytest.mark.slow
def test_eval_tta_flip_report_and_json(trained: Path, tmp_path: Path) -> None:
    from carrot.train.data import build_test_loader, load_test_split
    from carrot.train.trained import load_trained

    ckpt = trained / "run" / "checkpoints" / "last.pt"
    report, out = tmp_path / "report", tmp_path / "m.json"
    args = ["eval", "--checkpoint", str(ckpt), "--tta", "flip", "--report", str(report)]
    assert main([*args, "--json", str(out)]) == 0
    for name in ("per_class.csv", "confusion.csv", "confused_pairs.csv", "confusion.png",
                 "calibration.png", "geometry.png", "embedding.png"):  # fmt: skip
        assert (report / name).stat().st_size > 0, name
    n_test = 5 * len(COLORS)
    rows = list(csv.DictReader((report / "per_class.csv").open()))
    assert [r["class"] for r in rows] == sorted(COLORS)
    assert sum(int(r["support"]) for r in rows) == n_test
    assert all(float(r["gamma"]) >= 1 and float(r["r"]) >= 0 for r in rows)
    cells = list(csv.DictReader((report / "confusion.csv").open()))
    assert sum(int(c["count"]) for c in cells) == n_test
    result = json.loads(out.read_text())["model"]
    assert result["tta"] == "flip" and result["ece_bins"] == 15 and 0 <= result["ece"] <= 100
    assert len(result["per_class"]) == len(COLORS)
    # flip TTA by hand: the mean of the two views' logits, on the same test images
    t = load_trained(ckpt)
    loader = build_test_loader(t.cfg, load_test_split(t.cfg), rank=0, world_size=1)
    hits = 0
    with torch.no_grad():
        for x, y in loader:
            logits = (t.model(x).logits + t.model(torch.flip(x, dims=[3])).logits) / 2
            hits += int((logits.argmax(1) == y).sum())
    assert result["top1"] == pytest.approx(100 * hits / n_test)
    per_class_hits = sum(r["top1"] * r["support"] / 100 for r in result["per_class"])
    assert per_class_hits == pytest.approx(hits)
    preds = tmp_path / "p.csv"
    test_dir = trained / "trees" / "test"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(ckpt),
                str(test_dir),
                "--out",
                str(preds),
                "--tta",
                "flip",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(preds.open()))
    assert sum(Path(r["path"]).parent.name == r["label"] for r in rows) == hits


INTERRUPTED = """
import os, signal, sys
import carrot.train.eval_report as er
real = er.write_report
def write(*args, **kwargs):
    names = real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C with the files written, before the swap
    return names
er.write_report = write
from carrot.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_eval_report_is_written_whole_or_not_at_all(trained: Path, tmp_path: Path) -> None:
    """A non-empty --report needs --force, which replaces it whole; Ctrl-C (a real SIGINT) while
    writing leaves the folder of before and no temporaries."""
    import subprocess
    import sys

    from cli_run import SRC, carrot_cli, one_line_error

    ckpt = trained / "run" / "checkpoints" / "last.pt"
    report = tmp_path / "report"
    report.mkdir()
    (report / "notes.txt").write_text("mine")
    refused = carrot_cli("eval", "--checkpoint", ckpt, "--report", report)
    one_line_error(refused, "--report", "exists and is not empty", "--force")
    (tmp_path / "file").write_text("x")
    one_line_error(
        carrot_cli("eval", "--checkpoint", ckpt, "--report", tmp_path / "file"), "is a file"
    )
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED, "eval", "--checkpoint", str(ckpt), "--report",
         str(report), "--force"],
        env={"OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 130 and done.stderr.strip() == "carrot eval: interrupted.", (
        done.stderr
    )
    assert [p.name for p in report.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "report"]
    assert main(["eval", "--checkpoint", str(ckpt), "--report", str(report), "--force"]) == 0
    assert "notes.txt" not in {p.name for p in report.rglob("*")}
    assert (report / "per_class.csv").is_file() or (report / "model" / "per_class.csv").is_file()


def test_class_names_cannot_become_spreadsheet_formulas(tmp_path) -> None:
    logits, labels, emb = _outputs(3, n=60)
    classes = ['=HYPERLINK("http://x")', "+1+cmd", "@SUM(A1)", "-2+3", "-7", "k5", "k6"]
    write_report(build_report(logits, labels, emb, classes), tmp_path)
    shown = [r["class"] for r in csv.DictReader((tmp_path / "per_class.csv").open())]
    assert shown == ['\'=HYPERLINK("http://x")', "'+1+cmd", "'@SUM(A1)", "'-2+3", "-7", "k5", "k6"]
    for name in ("confusion.csv", "confused_pairs.csv"):
        for row in csv.DictReader((tmp_path / name).open()):
            for value in row.values():
                assert not value.startswith(("=", "+", "@")), (name, row)
