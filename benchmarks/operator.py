"""Forward+backward time of ``carrot_operator`` against a straightforward implementation of the
guide's formulas (unique + index_add_ + cdist, autograd through the statistics), B in
{64, 256, 1024}, D in {128, 512, 2048}, K = 4, one thread. Ratio = carrot / guide, same run.

Run: python benchmarks/operator.py [--repeats 20] [--threads 1] [--device cpu]
"""

import sys

# Scripts in this folder must not shadow the standard library's `operator` (this very file).
sys.path.pop(0)

import argparse

import torch

from carrot.bench.speed import operator_timings


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {args.device}, K=4, median of {args.repeats}"
    )
    print(f"{'B':>5} {'D':>5} {'detach':>6} {'guide ms':>9} {'carrot ms':>9} {'ratio':>6}")
    for t in operator_timings(repeats=args.repeats, device=args.device):
        print(
            f"{t.batch:>5} {t.dim:>5} {t.detach_stats!s:>6} {1e3 * t.guide_s:>9.3f} {1e3 * t.carrot_s:>9.3f} {t.ratio:>6.2f}"
        )


if __name__ == "__main__":
    main()
