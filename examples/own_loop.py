"""CARROT in your own training loop: the README's snippet, complete and runnable.

sklearn's bundled digits (real data, no download), a small MLP backbone and a linear head, a P×K
sampler and CARROT's CE + KL loss; a few seconds on a CPU:

    python examples/own_loop.py [--epochs 3]
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from carrot import OperatorOptions, PKSampler, carrot_ce_kl_loss


def main(epochs: int = 3) -> float:
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    train_labels = torch.tensor(digits.target)
    train_set = TensorDataset(x, train_labels)
    backbone = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32))  # (B, 64) -> (B, D)
    head = nn.Linear(32, 10)
    optimizer = torch.optim.AdamW([*backbone.parameters(), *head.parameters()], lr=3e-3)
    options = OperatorOptions(max_gamma=1.5)  # the recommended cap (docs/stability.md)

    # P = batch_size / k classes per batch: 32 / 4 = 8 of the 10 digits, 4 images each.
    sampler = PKSampler(train_labels, batch_size=32, k=4)
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=0)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss, stats = carrot_ce_kl_loss(backbone(x), y, head, lam=1.0, options=options)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    with torch.no_grad():
        logits = head(nn.functional.normalize(backbone(train_set.tensors[0]), dim=1))
    accuracy = 100.0 * float((logits.argmax(1) == train_labels).float().mean())
    gamma = stats["gamma"][stats["valid"]]
    print(f"train accuracy {accuracy:.1f}% · last batch: mean γ {float(gamma.mean()):.3f}")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="CARROT in a plain PyTorch loop.")
    parser.add_argument("--epochs", type=int, default=3)
    main(parser.parse_args().epochs)
