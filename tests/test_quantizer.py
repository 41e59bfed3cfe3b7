"""The VQ-VAE's quantizer and code priors (vaekit.components.quantizer): the straight-through gradient and the
codebook and commitment losses against a hand computation, the moving-average codebook against its closed form, and
the priors over the code grid summing to one over every grid of a tiny code space."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from vaekit.components.quantizer import (
    OneHotPointMass,
    PixelCNNCodePrior,
    UniformCodePrior,
    VectorQuantizer,
    grid_indices,
    one_hot_grid,
)


def _quantizer(ema: bool = False, decay: float = 0.99) -> VectorQuantizer:
    vq = VectorQuantizer(codes=3, code_dim=2, commitment=0.25, ema=ema, decay=decay, epsilon=1e-5).double()
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64))
        if ema:
            vq.embedding_sum.copy_(vq.codebook)
    return vq


def test_nearest_codes_losses_and_straight_through_gradients_by_hand():
    vq = _quantizer()
    # one example, a 1 x 2 grid of 2-D vectors: (0.9, 0.2) is nearest e_1 = (1, 0), (0.1, 1.5) nearest e_2 = (0, 2)
    z_e = torch.tensor([[[[0.9, 0.1]], [[0.2, 1.5]]]], dtype=torch.float64, requires_grad=True)  # (1, D, 1, 2)
    out = vq(z_e)
    assert out.indices.tolist() == [[[1, 2]]]
    expected_q = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]], dtype=torch.float64)
    assert torch.equal(out.z_q.detach(), expected_q)
    # squared distances by hand: (0.9-1)^2 + (0.2-0)^2 = 0.05 and (0.1-0)^2 + (1.5-2)^2 = 0.26
    assert out.codebook_loss.item() == pytest.approx(0.05 + 0.26, abs=1e-12)
    assert out.commitment_loss.item() == pytest.approx(0.25 * 0.31, abs=1e-12)

    # straight-through: d/dz_e of sum(w * z_q) is w, as if z_q were z_e
    w = torch.tensor([[[[3.0, -1.0]], [[0.5, 2.0]]]], dtype=torch.float64)
    (grad,) = torch.autograd.grad((w * out.z_q).sum(), z_e, retain_graph=True)
    assert torch.equal(grad, w)
    # the codebook loss moves the chosen codebook vectors only, by 2 (e - z_e), and not the encoder
    g_e, g_z = torch.autograd.grad(out.codebook_loss.sum(), [vq.codebook, z_e], retain_graph=True,
                                   allow_unused=True)
    want = torch.zeros(3, 2, dtype=torch.float64)
    want[1] = 2 * (torch.tensor([1.0, 0.0]) - torch.tensor([0.9, 0.2]))
    want[2] = 2 * (torch.tensor([0.0, 2.0]) - torch.tensor([0.1, 1.5]))
    assert torch.allclose(g_e, want, atol=1e-12)
    assert g_z is None or torch.count_nonzero(g_z) == 0
    # the commitment loss moves the encoder's vectors only, by 2 beta (z_e - e)
    g_e, g_z = torch.autograd.grad(out.commitment_loss.sum(), [vq.codebook, z_e], allow_unused=True)
    assert g_e is None or torch.count_nonzero(g_e) == 0
    assert torch.allclose(g_z, 2 * 0.25 * (z_e.detach() - expected_q), atol=1e-12)


def test_ema_codebook_follows_its_closed_form():
    gamma, eps, k = 0.8, 1e-5, 3
    vq = _quantizer(ema=True, decay=gamma)
    assert "codebook" not in dict(vq.named_parameters()) and "codebook" in dict(vq.named_buffers())
    e0 = vq.codebook.clone()
    gen = torch.Generator().manual_seed(0)
    counts, sums = [], []
    steps = 5
    for _ in range(steps):
        z_e = torch.randn(4, 2, 1, 3, generator=gen, dtype=torch.float64)  # 12 vectors a step
        idx = torch.randint(0, 2, (4, 1, 3), generator=gen)  # codes 0 and 1 only: code 2 is never chosen
        vq.ema_update(z_e, idx)
        flat, onehot = z_e.movedim(1, -1).reshape(-1, 2), torch.nn.functional.one_hot(idx.reshape(-1), k).double()
        counts.append(onehot.sum(0))
        sums.append(onehot.T @ flat)
    # N_T = gamma^T * 1 + (1 - gamma) sum_t gamma^(T - t) n_t, m_T likewise from m_0 = e_0
    n_t = gamma**steps * torch.ones(k, dtype=torch.float64) + sum(
        (1 - gamma) * gamma ** (steps - 1 - t) * counts[t] for t in range(steps))
    m_t = gamma**steps * e0 + sum((1 - gamma) * gamma ** (steps - 1 - t) * sums[t] for t in range(steps))
    smoothed = (n_t + eps) / (n_t.sum() + k * eps) * n_t.sum()
    assert torch.allclose(vq.cluster_size, n_t, atol=1e-12)
    assert torch.allclose(vq.embedding_sum, m_t, atol=1e-12)
    assert torch.allclose(vq.codebook, m_t / smoothed[:, None], atol=1e-10)
    # the unchosen code stays where it started, up to the Laplace smoothing of its count
    assert torch.allclose(vq.codebook[2], e0[2], rtol=1e-3)
    out = vq(torch.randn(2, 2, 1, 1, dtype=torch.float64))
    assert torch.count_nonzero(out.codebook_loss) == 0  # no codebook loss with the moving averages


def _all_grids(classes: int, grid: tuple[int, int]) -> torch.Tensor:
    cells = math.prod(grid)
    return torch.tensor(list(itertools.product(range(classes), repeat=cells))).reshape(-1, *grid)


@pytest.mark.parametrize("prior", ["uniform", "pixelcnn"])
def test_code_priors_sum_to_one_over_every_grid(prior):
    torch.manual_seed(0)
    classes, grid = 3, (2, 2)  # 3^4 = 81 grids
    p = UniformCodePrior(classes, grid) if prior == "uniform" else \
        PixelCNNCodePrior(classes, grid, channels=8, layers=3, kernel=3).double()
    if prior == "pixelcnn":
        with torch.no_grad():  # weights large enough that p(z) is far from uniform
            for param in p.parameters():
                param.mul_(4.0)
    log_p = p.log_prob(_all_grids(classes, grid)).double()
    assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-9)
    if prior == "pixelcnn":
        assert (log_p.max() - log_p.min()).item() > 1.0  # not uniform: the test would pass trivially


def test_pixelcnn_prior_samples_follow_its_log_prob():
    torch.manual_seed(1)
    classes, grid = 3, (1, 2)  # 9 grids
    p = PixelCNNCodePrior(classes, grid, channels=8, layers=2).double()
    with torch.no_grad():
        for param in p.parameters():
            param.mul_(3.0)
    grids = _all_grids(classes, grid)
    probs = p.log_prob(grids).exp()
    n = 20000
    draws = p.sample(n, torch.Generator().manual_seed(2))
    freq = torch.stack([(draws == g).flatten(1).all(1).double().mean() for g in grids])
    se = (probs * (1 - probs) / n).sqrt()  # binomial standard error of each frequency
    assert ((freq - probs).abs() < 4 * se + 1e-3).all(), (freq, probs)


def test_one_hot_codes_round_trip_and_point_mass():
    idx = torch.tensor([[[2, 0], [1, 1]]])
    z = one_hot_grid(idx, 3)
    assert z.shape == (1, 12) and torch.equal(grid_indices(z, (2, 2), 3), idx)
    q = OneHotPointMass(z)
    assert q.log_prob(z).item() == 0.0 and q.log_prob(torch.zeros_like(z)).item() == -math.inf
    assert torch.equal(q.rsample((4,)), z.expand(4, 1, 12)) and q.entropy().item() == 0.0


@pytest.mark.parametrize("bad", [{"codes": 1}, {"code_dim": 0}, {"commitment": -1.0}, {"decay": 1.0},
                                 {"epsilon": 0.0}])
def test_quantizer_refuses_bad_settings(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        VectorQuantizer(**{"codes": 4, "code_dim": 2, **bad})
