"""A small synthetic data set for tests: binary 8x8 images made from 4 random prototypes with
5% of the pixels flipped; the label is the prototype. Structure a VAE learns in seconds."""

from __future__ import annotations

import types

import torch


def prototype_dataset(n_train: int, n_valid: int, n_test: int, seed: int = 0, *, labels: bool = True,
                      classes: tuple[str, ...] | None = ("a", "b", "c", "d")) -> types.SimpleNamespace:
    """A data-set object with the attributes vaekit reads (see vaekit.data.Dataset)."""
    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(4, 1, 8, 8, generator=g) < 0.4).float()

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(4, (n,), generator=g)
        flip = (torch.rand(n, 1, 8, 8, generator=g) < 0.05).float()
        return (protos[y] - flip).abs(), y

    (tr, ytr), (va, yva), (te, yte) = make(n_train), make(n_valid), make(n_test)
    if not labels:
        ytr = yva = yte = None
    return types.SimpleNamespace(name="synthetic", shape=(1, 8, 8), binary=True, dynamic=False, train=tr, valid=va,
                                 test=te, train_labels=ytr, valid_labels=yva, test_labels=yte, classes=classes)
