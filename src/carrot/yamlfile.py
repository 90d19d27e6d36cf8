"""YAML errors as one line, for every file the project reads (configs, suites, methods files)."""

from __future__ import annotations

import yaml

__all__ = ["yaml_error"]


def yaml_error(e: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        return f"{e.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(e).split())
