"""GPU check, for a machine with CUDA (one short run, a few minutes): correctness against float64,
host syncs, operator speed, the CARROT step's overhead over CE, the trainer against a minimal loop.
The code lives in ``benchmarks/gpu.py`` (outside the installed package); ``--dry-run`` runs every part on the CPU at toy sizes.

Run: PYTHONPATH=src python benchmarks/gpu_check.py [--out FILE.json] [--only PART ...] [--dry-run]
"""

from gpu import main  # benchmarks/gpu.py: this script's folder is first on sys.path

if __name__ == "__main__":
    main()
