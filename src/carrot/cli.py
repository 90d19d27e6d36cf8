"""The ``carrot`` command."""

from __future__ import annotations

import argparse
import sys

from carrot import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="carrot", description=__doc__)
    parser.add_argument("--version", action="version", version=f"carrot {__version__}")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
