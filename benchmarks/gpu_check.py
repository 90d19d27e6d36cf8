"""GPU check, for a machine with CUDA (one short run, a few minutes): correctness against float64,
host syncs, operator speed, the CARROT step's overhead over CE, the trainer against a minimal loop.
The code lives in :mod:`carrot.bench.gpu`; ``--dry-run`` runs every part on the CPU at toy sizes.

Run: PYTHONPATH=src python benchmarks/gpu_check.py [--out FILE.json] [--only PART ...] [--dry-run]
"""

from carrot.bench.gpu import main

if __name__ == "__main__":
    main()
