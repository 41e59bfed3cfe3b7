"""A density on z fitted after training: what turns a deterministic autoencoder into a generative model.

An autoencoder (q(z|x) = delta(z - f(x))) defines no p(z) and so no p(x). Fitting a Gaussian mixture g(z) to
the codes f(x_n) of the training set (scikit-learn's ``GaussianMixture``, diagonal covariances; pythae's GMM
sampler and the RAE paper of Ghosh et al., 2020, do the same) gives the model p(x) = int p(x|z) g(z) dz:
samples z ~ g, x ~ p(x|z), and a log p(x) by importance sampling. Its proposal is N(f(x), diag (c w)^2), w_j
the mixture's typical component width in dimension j (the weighted mean of the component standard deviations)
and c the factor of a grid (1, 1/3, 1/10, ..., 1/1000) whose ELBO E[log p(x|z) + log g(z) - log q(z|x)] is
highest on training examples (variational inference over one number); any proposal gives a lower bound in
expectation, and IWAE_K approaches log p(x) as K grows.
That log p(x) belongs to "decoder + fitted density", a density chosen after training, and is labelled so.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaekit.errors import VaekitError

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: Components of the fitted mixture (the RAE paper's choice).
DEFAULT_COMPONENTS = 10


def is_autoencoder(model: LatentVariableModel) -> bool:
    return bool(getattr(getattr(model, "posterior_family", None), "autoencoder", False))


@torch.no_grad()
def training_codes(model: LatentVariableModel, data: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """f(x_n) for every training example, (N, L)."""
    model.eval()
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    parts = [model.code(data[i : i + batch_size].to(device=device, dtype=dtype)).cpu()
             for i in range(0, data.shape[0], batch_size)]
    return torch.cat(parts).double()


@torch.no_grad()
def training_draws(model: LatentVariableModel, data: torch.Tensor, seed: int = 0,
                   batch_size: int = 1000) -> torch.Tensor:
    """One draw z_n ~ q(z|x_n) for every training example, (N, L), from a generator seeded with ``seed``: samples
    of the aggregate posterior q(z) = (1/N) sum_n q(z|x_n) of a model whose q(z|x) is a density."""
    from vaekit.distributions import rsample

    model.eval()
    p = next(model.parameters())
    gen = torch.Generator(device=p.device).manual_seed(seed)
    parts = [rsample(model.posterior(data[i : i + batch_size].to(device=p.device, dtype=p.dtype)), (), gen).cpu()
             for i in range(0, data.shape[0], batch_size)]
    return torch.cat(parts).double()


def fit_code_density(model: LatentVariableModel, data: torch.Tensor, components: int = DEFAULT_COMPONENTS,
                     seed: int = 0) -> Any:
    """Fit the Gaussian mixture to the training codes and make it the model's prior (the ``fitted-gmm``
    component); returns the fitted scikit-learn mixture. An autoencoder's codes are f(x_n), and the width of its
    importance-sampling proposal is set here; a model with a continuous density q(z|x) (trained by an objective with
    no bound of its own, e.g. InfoVAE-MMD) gives one draw z ~ q(z|x_n) per example (samples of its aggregate
    posterior), and q(z|x) itself stays the proposal."""
    from sklearn.mixture import GaussianMixture

    from vaekit.components.priors import FittedMixturePrior

    autoencoder = is_autoencoder(model)
    if not autoencoder and (model.is_discrete or getattr(model, "posterior_family", None) is None):
        raise VaekitError("a density is fitted to the codes of a one-level model with continuous codes only (an "
                          "autoencoder, --posterior delta, or a continuous q(z|x))")
    codes = (training_codes(model, data) if autoencoder else training_draws(model, data, seed)).numpy()
    if codes.shape[0] < 2:
        raise VaekitError("fitting a density to the codes needs at least 2 training examples")
    components = max(1, min(int(components), codes.shape[0] // 2))
    gmm = GaussianMixture(n_components=components, covariance_type="diag", reg_covar=1e-6, random_state=seed,
                          max_iter=200)
    gmm.fit(codes)
    p = next(model.parameters())
    prior = FittedMixturePrior(model.latent_size, components).to(device=p.device, dtype=p.dtype)
    as_tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=p.dtype, device=p.device)  # noqa: E731
    prior.set_mixture(as_tensor(gmm.means_), torch.log(as_tensor(gmm.covariances_)), as_tensor(gmm.weights_))
    model.prior = prior  # model.json describes it from the component itself (VAE.describe)
    if autoencoder:
        width = torch.log(as_tensor((gmm.weights_[:, None] * np.sqrt(gmm.covariances_)).sum(0)))  # (L,)
        _fit_proposal(model, data, width, seed)
    return gmm


def _fit_proposal(model: LatentVariableModel, data: torch.Tensor, width: torch.Tensor, seed: int) -> None:
    """Set an autoencoder's proposal N(f(x), diag (c w)^2) to the factor c of :data:`PROPOSAL_FACTORS` whose ELBO is
    highest on 256 training examples; ``width``: log w, (L,)."""
    p = next(model.parameters())
    family = model.posterior_family
    family.proposal_fitted.fill_(1.0)
    probe = data[torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed))[:256]]
    best = (-math.inf, 0.0)
    for factor in PROPOSAL_FACTORS:
        family.proposal_log_scale.copy_(width + math.log(factor))
        value = _proposal_elbo(model, probe.to(device=p.device, dtype=p.dtype), seed)
        if value > best[0]:
            best = (value, factor)
    family.proposal_log_scale.copy_(width + math.log(best[1]))


#: The proposal widths tried, as fractions of the fitted mixture's component width.
PROPOSAL_FACTORS = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)


@torch.no_grad()
def _proposal_elbo(model: LatentVariableModel, x: torch.Tensor, seed: int, k: int = 16) -> float:
    """The mean ELBO of the proposal on ``x`` (k draws each): E[log p(x|z) + log g(z) - log q(z|x)], nats."""
    from vaekit.distributions import rsample_and_log_prob

    gen = torch.Generator(device=x.device).manual_seed(seed)
    q = model.posterior(x).proposal()
    z, log_q = rsample_and_log_prob(q, (k,), gen)
    value = model.log_likelihood(x, z) + model.log_prior(z) - log_q
    return float(value.mean())


def fit_run_density(run: str | Path, data: torch.Tensor, components: int = DEFAULT_COMPONENTS,
                    seed: int = 0) -> Any:
    """Load a finished autoencoder run's kept weights, fit the density to its training codes and save the
    model again (``model.json`` then names the ``fitted-gmm`` prior); returns the model."""
    from vaekit.models import load_model

    run = Path(run)
    model = load_model(run)
    fit_code_density(model, data, components, seed)
    model.save(run)
    return model


def proposal_note(model: LatentVariableModel) -> str:
    """What an autoencoder's evaluated log p(x) is the likelihood of, in one line."""
    s = model.posterior_family.proposal_log_scale.exp()
    if getattr(model.prior, "name", "") == "fitted-gmm":
        head = "decoder + fitted density (a deterministic encoder z = f(x))"
        density = (f"a Gaussian mixture of {model.prior.components} components fitted to the training codes after "
                   "training (a density chosen afterwards, not trained)")
    else:
        head = "a deterministic encoder z = f(x)"
        density = f"the {getattr(model.prior, 'name', 'given')} prior p(z), which it was not trained with"
    return (f"{head}: log p(x) is that of the decoder with {density}, importance-sampled with the proposal "
            f"N(f(x), diag s^2), s = {float(s.mean()):.3g} on average; its ELBO and KL are those of that proposal")


def density_note(model: LatentVariableModel) -> str | None:
    """What an evaluated log p(x) is the likelihood of when the density on z was chosen after training (an
    autoencoder's, or one fitted to draws of a density q(z|x)), in one line; None for a model with its trained
    prior."""
    if is_autoencoder(model):
        return proposal_note(model)
    prior = getattr(model, "prior", None)
    if getattr(prior, "name", "") != "fitted-gmm":
        return None
    return (f"decoder + fitted density: log p(x) is that of the decoder with a Gaussian mixture of {prior.components} "
            "components fitted after training to one draw of q(z|x) per training example (a density chosen "
            "afterwards, not the N(0, I) it was trained against), importance-sampled with the trained q(z|x) as "
            "proposal; its ELBO and KL are those of that mixture")


def with_standard_normal_prior(model: LatentVariableModel) -> Any:
    """A copy of an autoencoder whose density on z is N(0, I): "the decoder applied to z ~ N(0, I)", which is
    how a VAE is sampled and where an autoencoder's codes show that nothing made them fill N(0, I)."""
    import copy

    from vaekit.components.priors import StandardNormalPrior

    twin = copy.deepcopy(model)
    p = next(model.parameters())
    twin.prior = StandardNormalPrior(model.latent_size).to(device=p.device, dtype=p.dtype)
    return twin


