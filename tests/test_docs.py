"""Documentation that cannot drift: every Python block of README.md and docs/*.md runs (or is
checked as marked), every `carrot ...` command shown parses, and the tables that mirror the code
(public API, settings, resumable keys, message sizes) match it.

Markers, on the line before a block:

- ``<!-- skip: REASON; given: name, name -->``: not run (it needs a GPU, a dataset or several
  processes); it must compile, and every name it uses must be imported or assigned in it, or given.
- ``<!-- excerpt: FILE -->``: each of its lines (imports aside) stands in FILE, which a test runs.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import inspect
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_BLOCK = re.compile(
    r"^(?:<!-- (?P<marker>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)^```$", re.M | re.S
)


@dataclasses.dataclass
class Block:
    page: Path
    line: int
    lang: str
    code: str
    marker: str

    @property
    def id(self) -> str:
        return f"{self.page.name}:{self.line}"


def _blocks() -> list[Block]:
    out = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for m in _BLOCK.finditer(text):
            line = text.count("\n", 0, m.start("code"))
            out.append(Block(page, line, m.group("lang"), m.group("code"), m.group("marker") or ""))
    return out


BLOCKS = _blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python"]


def _unbound_names(code: str) -> set[str]:
    """Names a snippet loads but never binds (imports, assignments, defs, loop targets, args)."""
    tree = ast.parse(code)
    bound, loaded = set(dir(builtins)), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return loaded - bound


def test_every_python_block_is_found() -> None:
    assert len(PYTHON) >= 6
    integrations = [b for b in PYTHON if b.page.name == "integrations.md"]
    assert len(integrations) == 3  # pytorch-metric-learning, Lightning, a plain timm-style loop


@pytest.mark.parametrize(
    "block", [b for b in PYTHON if b.marker.startswith("skip:")], ids=lambda b: b.id
)
def test_skipped_blocks_compile_and_name_what_they_need(block: Block) -> None:
    compile(block.code, block.id, "exec")
    reason, _, given = block.marker.removeprefix("skip:").partition("given:")
    assert reason.strip(" ;"), f"{block.id}: a skip marker must say why"
    allowed = {n.strip() for n in given.split(",") if n.strip()}
    missing = _unbound_names(block.code) - allowed
    assert not missing, f"{block.id} uses names it neither defines nor lists as given: {missing}"


@pytest.mark.parametrize(
    "block", [b for b in PYTHON if b.marker.startswith("excerpt:")], ids=lambda b: b.id
)
def test_excerpts_stand_in_their_file(block: Block) -> None:
    source = REPO / block.marker.removeprefix("excerpt:").strip()
    lines = {line.strip() for line in source.read_text().splitlines()}
    for line in block.code.splitlines():
        text = line.strip()
        if text and not text.startswith(("import ", "from ")):
            assert text in lines, f"{block.id}: {text!r} is not in {source.name}"


@pytest.mark.slow
def test_examples_run() -> None:
    import runpy
    import sys

    sys.argv = ["own_loop.py", "--epochs", "2"]
    result = runpy.run_path(str(REPO / "examples" / "own_loop.py"), run_name="not_main")
    assert result["main"](epochs=2) > 80.0


@pytest.mark.slow
@pytest.mark.parametrize("block", [b for b in PYTHON if not b.marker], ids=lambda b: b.id)
def test_python_blocks_run(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(block.code, str(block.page), "exec"), {"__name__": "__doc_snippet__"})


# --- commands ------------------------------------------------------------------------------------


def _commands() -> list[tuple[str, str]]:
    """``(where, argument string)`` of every carrot command shown in a shell block or inline."""
    found = []
    for block in BLOCKS:
        if block.lang not in ("bash", "sh", "shell", ""):
            continue
        text = block.code.replace("\\\n", " ")
        for n, line in enumerate(text.splitlines()):
            line = line.split(" #")[0].strip()
            for pattern in (
                r"(?:^|\s)carrot\s+(.*)",
                r"-m carrot\.cli\s+(.*)",
                r"scripts/train\.sh(.*)",
            ):
                m = re.search(pattern, line)
                if m:
                    args = m.group(1).strip()
                    if pattern.startswith("scripts"):
                        args = f"train {args}"
                    found.append((f"{block.id}+{n}", args))
                    break
    for page in PAGES:
        for m in re.finditer(r"`carrot ([a-z][^`]*)`", page.read_text(encoding="utf-8")):
            if not m.group(1).split()[-1].startswith("-"):  # `carrot train --resume`: a flag named
                found.append((f"{page.name} inline", m.group(1)))
    return found


def _is_usage(args: str) -> bool:
    """A usage line (placeholders in brackets or ellipses) or a bare subcommand name."""
    return "[" in args or "..." in args or "|" in args or len(args.split()) < 2


COMMANDS = [(w, a) for w, a in _commands() if not _is_usage(a)]


def test_commands_are_found() -> None:
    assert len(COMMANDS) >= 15
    assert any(a.startswith("bench accuracy") for _, a in COMMANDS)
    assert any(a.startswith("predict") for _, a in COMMANDS)


@pytest.mark.parametrize(("where", "args"), COMMANDS, ids=[f"{w}: {a[:40]}" for w, a in COMMANDS])
def test_every_command_shown_parses(where: str, args: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from carrot.cli import build_parser
    from carrot.train.config import load_config

    monkeypatch.chdir(REPO)
    argv = shlex.split(args)
    try:
        parsed = build_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{where}: `carrot {args}` does not parse (exit {e.code})")
    if parsed.command == "train" and parsed.resume is None and "$" not in args:
        load_config(parsed.config, parsed.overrides)  # unknown keys and bad values fail here


# --- tables that mirror the code -----------------------------------------------------------------


def _api_rows() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text[text.index("## Public API") : text.index("## Documentation")]
    return [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]


def _documented_signatures() -> dict[str, list[str] | None]:
    out: dict[str, list[str] | None] = {}
    for cell in _api_rows():
        for m in re.finditer(r"`([\w.]+)(?:\(([^)]*)\))?`", cell):
            name, args = m.group(1), m.group(2)
            params = (
                None
                if args is None
                else [a.strip() for a in args.split(",") if a.strip() not in ("", "*")]
            )
            out[name] = params
    return out


def _resolve(name: str):
    import importlib

    import carrot

    if "." not in name:
        return getattr(carrot, name)
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError:
        return importlib.import_module(name)


def test_every_public_name_is_in_the_readme_api_table() -> None:
    import carrot

    documented = _documented_signatures()
    missing = [n for n in carrot.__all__ if n not in documented and n != "__version__"]
    assert not missing, f"public names missing from README's API table: {missing}"


@pytest.mark.parametrize("name", sorted(_documented_signatures()))
def test_documented_signatures_match_the_code(name: str) -> None:
    params = _documented_signatures()[name]
    obj = _resolve(name)
    if params is None or inspect.ismodule(obj):
        return
    target = obj.__init__ if inspect.isclass(obj) else obj
    actual = [
        f"**{p.name}" if p.kind is p.VAR_KEYWORD else p.name
        for p in inspect.signature(target).parameters.values()
        if p.name != "self"
    ]
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        actual = [f.name for f in dataclasses.fields(obj)]
    assert params == actual, (
        f"README documents {name}({', '.join(params)}), the code has ({', '.join(actual)})"
    )


def _settings_keys() -> set[str]:
    text = (REPO / "docs" / "training.md").read_text(encoding="utf-8")
    keys = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            keys |= set(
                re.findall(
                    r"`([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)(?:\.\*)?`",
                    line.split("|")[1],
                )
            )
    return keys


def test_the_settings_table_lists_every_setting() -> None:
    """Every setting but the methods' sections, which ``carrot methods`` documents from their
    fields (so that a new method needs no edit here); a method key the table shows must exist."""
    from carrot.methods import sections
    from carrot.train.config import Config, config_to_dict, flatten

    everything = set(flatten(config_to_dict(Config())))
    keys = {k for k in everything if k.split(".")[0] not in sections()}
    shown = {k for k in _settings_keys() if k.split(".")[0] in sections() and "." in k}
    assert shown <= everything, (
        f"docs/training.md shows settings that do not exist: {shown - everything}"
    )
    missing = sorted(k for k in keys if k not in _settings_keys())
    assert not missing, f"settings missing from docs/training.md's table: {missing}"


def test_the_resume_section_lists_the_resumable_keys() -> None:
    from carrot.train.startup import RESUMABLE_KEYS

    text = (REPO / "docs" / "training.md").read_text(encoding="utf-8")
    section = text[text.index("## Resume, stops and failures") :]
    paragraph = section[section.index("- Only") : section.index("may change on resume")]
    listed = set(re.findall(r"`([a-z_.]+)`", paragraph))
    assert listed == set(RESUMABLE_KEYS)


def test_the_message_sizes_in_distributed_md_follow_its_formula() -> None:
    text = (REPO / "docs" / "distributed.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| [^|]+\| (\d+) × (\d+) \| (\d+) \| (\d+) \| ([\d.]+) MiB \|", text, re.M)
    assert len(rows) == 3
    for w, n, c, d, mib in rows:
        w, n, c, d = int(w), int(n), int(c), int(d)
        total = 16 * w + 8 * w * n + 4 * c * d + 4 * c
        assert f"{total / 2**20:.2f}" == mib, (w, n, c, d, total / 2**20, mib)
