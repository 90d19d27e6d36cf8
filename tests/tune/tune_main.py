"""``carrot`` with the validation stand-in of fake_val.py, for the subprocess tests (installed at
import, so that the spawned ``--jobs`` workers, which import this file, get it too)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fake_val import install

install()

if __name__ == "__main__":
    from carrot.cli import main

    sys.exit(main(sys.argv[1:]))
