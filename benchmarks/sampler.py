"""PKSampler against pytorch-metric-learning's MPerClassSampler: one epoch's build time and the
fraction of images it covers, at NABirds size (48k images, 555 classes) and iNaturalist size
(2.7M images, 10k classes), long-tailed class sizes, one thread.

Run: python benchmarks/sampler.py [--skip-inat]
"""

import sys

# Scripts in this folder must not shadow the standard library's `operator` (operator.py here).
sys.path.pop(0)

import argparse

import torch

from carrot.bench.speed import sampler_timings


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--skip-inat", action="store_true", help="only the NABirds-size case")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = (("NABirds-size", 48_562, 555),) + (
        () if args.skip_inat else (("iNat-size", 2_700_000, 10_000),)
    )
    print(f"batch_size={args.batch_size}, k={args.k}; seconds for one epoch (N samples)")
    print(f"{'case':<14} {'sampler':<17} {'init':>7} {'epoch':>7} {'coverage':>9}")
    rows = list(sampler_timings(cases, batch_size=args.batch_size, k=args.k))
    for r in rows:
        print(f"{r.name:<14} {r.sampler:<17} {r.init_s:>7.3f} {r.epoch_s:>7.3f} {r.coverage:>9.1%}")
    for name, *_ in cases:
        pk = next(r for r in rows if r.name == name and r.sampler == "PKSampler")
        mp = next((r for r in rows if r.name == name and r.sampler == "MPerClassSampler"), None)
        if mp is not None:
            print(
                f"{name}: epoch build {mp.epoch_s / pk.epoch_s:.1f}x faster, "
                f"init + epoch {(mp.init_s + mp.epoch_s) / (pk.init_s + pk.epoch_s):.1f}x faster"
            )


if __name__ == "__main__":
    main()
