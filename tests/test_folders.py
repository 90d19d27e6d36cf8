"""Output folders written whole or not at all (carrot.folders): a replaced folder keeps no old
file, a failure or Ctrl-C leaves the old folder as it was, concurrent writers never mix files,
links and files are refused, and files get the usual modes."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from carrot.folders import check_target, replace_folder, staged_folder
from carrot.paths import default_dir_mode, default_file_mode


def _files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_a_replaced_folder_keeps_none_of_the_old_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("model A's card")
    (out / "config.json").write_text("A")
    with staged_folder(out) as tmp:
        (tmp / "config.json").write_text("B")
    assert _files(out) == {"config.json": "B"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporaries left


@pytest.mark.parametrize("failure", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_failure_leaves_the_old_folder_as_it_was(tmp_path: Path, failure: BaseException) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.csv").write_text("old")
    with pytest.raises(type(failure)), staged_folder(out) as tmp:
        (tmp / "a.csv").write_text("new")
        (tmp / "b.csv").write_text("new")
        raise failure
    assert _files(out) == {"a.csv": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(RuntimeError), staged_folder(tmp_path / "fresh") as tmp:
        raise RuntimeError
    assert not (tmp_path / "fresh").exists()


def test_files_get_the_modes_open_gives(tmp_path: Path) -> None:
    with staged_folder(tmp_path / "out") as tmp:
        private = tmp / "model.safetensors"
        private.write_text("x")
        os.chmod(private, 0o600)  # as safetensors writes them
        (tmp / "sub").mkdir(mode=0o700)
        (tmp / "sub" / "f").write_text("y")
    for f in (tmp_path / "out" / "model.safetensors", tmp_path / "out" / "sub" / "f"):
        assert stat.S_IMODE(f.stat().st_mode) == default_file_mode()
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == default_dir_mode()
    assert stat.S_IMODE((tmp_path / "out" / "sub").stat().st_mode) == default_dir_mode()


def test_concurrent_writers_never_mix_files(tmp_path: Path) -> None:
    """Eight writers replace one folder at once, each with files of its own names: the folder
    ends as exactly one writer's set."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale").write_text("old")
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for round_ in range(20):
                with staged_folder(out) as tmp:
                    for j in range(5):
                        (tmp / f"w{i}-{j}").write_text(str(i))
                    if round_ == 0:
                        start.wait()  # the first swaps all at the same moment
        except BaseException as e:  # collected for the main thread
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    owners = set(_files(out).values())
    assert len(owners) == 1 and len(_files(out)) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replace_folder_puts_a_new_folder_in_place(tmp_path: Path) -> None:
    new = tmp_path / "new"
    new.mkdir()
    (new / "f").write_text("1")
    replace_folder(new, tmp_path / "out")
    assert _files(tmp_path / "out") == {"f": "1"} and not new.exists()


def test_check_target_refuses_links_files_and_full_folders(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ValueError, match=r"--out .*link is a symbolic link \(to .*real\)"):
        check_target(link, force=True)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="is a symbolic link"):
        check_target(dangling, force=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="--report .*file is a file"):
        check_target(tmp_path / "file", force=True, flag="--report")
    (real / "x").write_text("x")
    with pytest.raises(ValueError, match="exists and is not empty; .* add --force"):
        check_target(real, force=False)
    check_target(real, force=True)
    check_target(tmp_path / "new", force=False)
