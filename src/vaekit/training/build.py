"""What a run is made of, from its settings: the model (with the data checked against its likelihood), the
objective and its selection score, the gradient estimator (a discrete model's, or a reparameterized model's STL or
DReG), the starting weights and the trainable parameters."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from vaekit.config import TrainConfig, check_model_size
from vaekit.errors import ConfigError, VaekitError, option
from vaekit.models import LatentVariableModel, load_model
from vaekit.models.families import FAMILIES
from vaekit.objectives import Objective, Score, build_objective
from vaekit.objectives.discrete import (
    TEMPERED,
    DiscreteEstimator,
    EstimatorSettings,
    check_estimator,
    default_estimator,
)
from vaekit.objectives.reparameterized import (
    REPARAMETERIZED,
    ReparameterizedEstimator,
    build_estimator,
    check_reparameterized_estimator,
)


def selection(objective: Objective, select_by: str = "objective") -> tuple[str, Score]:
    """The validation score that chooses the kept epoch, by name: the training objective's own (the IWAE_k bound
    for an IWAE run, the beta-weighted ELBO E_q[log p(x|z)] - beta KL for beta != 1, an autoencoder's
    reconstruction, ...), or with ``select_by = "elbo"`` the ELBO whatever the objective (vaekit's behaviour
    before it followed the objective)."""
    if select_by == "elbo":
        return "valid ELBO", lambda v: v["elbo"]
    return objective.selection()


def objective_for(cfg: TrainConfig, model: LatentVariableModel, data_size: int = 0) -> Objective:
    """The registered objective ``cfg`` names, with its settings and the shared ones (k, beta, warmup), for
    ``model`` (checked against it; the default ELBO gives way to the model's own objective, e.g. an
    autoencoder's); ``data_size``: the number of training examples."""
    objective = build_objective(cfg.component("objective"), k=cfg.k, beta=cfg.beta, warmup=cfg.warmup,
                                data_size=data_size)
    return objective.for_model(model)


def likelihood_levels(spec: dict[str, Any]) -> int | None:
    """The grey levels L a likelihood ``spec`` is a probability over (2: binary pixels), or None (a density):
    its ``levels`` setting, else its class's ``levels``."""
    from vaekit.components import LIKELIHOODS

    entry = LIKELIHOODS.entry(spec["name"])
    if "levels" in entry.fields():
        return int(LIKELIHOODS.spec(spec)["levels"])
    return getattr(entry.cls, "levels", None)


def check_likelihood_data(cfg: TrainConfig, likelihood: dict[str, Any], binary: bool, levels: int | None) -> None:
    """Refuse, in one line, a likelihood that is no probability of the data: a likelihood of binary pixels
    (Bernoulli, PixelCNN) on non-binary data, or a discrete one on data of other grey levels (``levels``: the
    data's L, None for real values). Densities (Gaussian, continuous Bernoulli) take any data."""
    name, want = likelihood["name"], likelihood_levels(likelihood)
    have = 2 if binary else levels
    if want is None or want == have:
        return
    grey = f"{have} grey levels" if have is not None else "real-valued"
    if want == 2:
        discrete = (f"--likelihood discretized-logistic --pixel-levels {have}" if have is not None
                    else "--likelihood gaussian")
        raise ConfigError(f"likelihood {name} models binary pixels but {cfg.dataset} is not binary ({grey}); add "
                          f"--binarize dynamic or --binarize threshold, or use a likelihood of its values "
                          f"({discrete})")
    if have is None:
        raise ConfigError(f"likelihood {name} is a probability of {want} grey levels but {cfg.dataset} is "
                          "real-valued (not on a grid of grey levels); use a density (--likelihood gaussian)")
    raise ConfigError(f"likelihood {name} has levels {want} but {cfg.dataset} has {grey}; set its levels to "
                      f"{have} (--pixel-levels {have}, or levels = {have} under [model.likelihood])")


def table_likelihood(cfg: TrainConfig, likelihood: dict[str, Any]) -> dict[str, Any]:
    """The likelihood ``spec`` for a table of real values (any real number): a density on the real line
    (``real_support``: the Gaussian, whose mean becomes the decoder output itself unless set, and the Student-t);
    anything else is refused in one line."""
    from vaekit.components import LIKELIHOODS

    name = likelihood["name"]
    real = [n for n in LIKELIHOODS.names() if getattr(LIKELIHOODS.entry(n).cls, "real_support", False)]
    if not getattr(LIKELIHOODS.entry(name).cls, "real_support", False):
        what = "binary pixels" if likelihood_levels(likelihood) == 2 else (
            "values in [0, 1]" if likelihood_levels(likelihood) is None else "integer grey levels")
        raise ConfigError(f"likelihood {name} models {what} but {cfg.dataset} is a table of real values; use a "
                          f"density on the real line: --likelihood {' or '.join(real)}")
    if name == "gaussian" and likelihood.get("mean", "auto") not in ("auto", "identity"):
        raise ConfigError(f"the Gaussian's mean {likelihood['mean']} keeps it in (0, 1), but {cfg.dataset} is a "
                          "table of real values; leave gaussian_mean out (identity)")
    return {**likelihood, "mean": "identity"} if name == "gaussian" else likelihood


def model_for(cfg: TrainConfig, shape: tuple[int, ...], binary: bool, condition: int = 0,
              levels: int | None = None, tabular: bool = False) -> LatentVariableModel:
    """The model ``cfg`` describes for data of ``shape`` (binary or not; ``levels``: its grey levels L, None
    for real values or unknown; ``tabular``: a table of real values), conditional on ``condition`` classes; a
    likelihood that is no probability (or density) of such data is refused (:func:`check_likelihood_data`,
    :func:`table_likelihood`)."""
    likelihood = cfg.component("likelihood", "bernoulli" if binary else "gaussian")
    if tabular:
        likelihood = table_likelihood(cfg, likelihood)
    check_model_size(cfg, tuple(shape), likelihood)  # too large for memory: one line naming the settings, no work
    check_likelihood_data(cfg, likelihood, binary, levels)
    family = FAMILIES.build(cfg.component("family"))
    try:
        return family.build(cfg, tuple(shape), likelihood, condition)
    except ValueError as exc:
        raise ConfigError(f"cannot build the model for {cfg.dataset} images of shape {tuple(shape)}: {exc}") from None


def _estimator_for(model: LatentVariableModel, cfg: TrainConfig, objective: Objective,
                   device: torch.device) -> DiscreteEstimator | ReparameterizedEstimator | None:
    """The gradient estimator: for a discrete q(z|x) ``cfg.estimator``, or enumeration where the latent space is
    small and Gumbel-softmax otherwise; for a reparameterized one ``cfg.estimator`` (pathwise, stl or dreg, each
    checked against the model and the objective), None (the pathwise gradient) when none is named."""
    if not model.is_discrete:
        if cfg.estimator is None:
            return None
        if cfg.estimator not in REPARAMETERIZED:
            raise ConfigError(f"{option('estimator', cfg.estimator)} is for discrete latents "
                              f"({option('posterior', 'categorical')} or {option('posterior', 'bernoulli')}); this "
                              f"model's q(z|x) is reparameterized: use {', '.join(REPARAMETERIZED.names())}")
        check_reparameterized_estimator(model, cfg.estimator, objective)
        return build_estimator(cfg.estimator).to(device)
    if cfg.estimator in REPARAMETERIZED:
        check_reparameterized_estimator(model, cfg.estimator, objective)  # the one line saying why not
    name = cfg.estimator or default_estimator(model)
    check_estimator(model, name, objective.discrete_target, cfg.k)
    settings = EstimatorSettings(temperature=cfg.temperature, temperature_min=cfg.temperature_min,
                                 anneal_rate=cfg.anneal_rate)
    with torch.random.fork_rng(devices=[]):  # the baseline's weights do not move the model's random stream
        torch.manual_seed(cfg.seed + 1)
        estimator = DiscreteEstimator(name, math.prod(model.shape), settings)
    return estimator.to(device)


def _estimator_fields(estimator: DiscreteEstimator | ReparameterizedEstimator | None) -> dict[str, Any]:
    """What a metrics row says about the estimator: its name and, for a relaxation, that the training ELBO is
    the relaxed objective at the temperature of the epoch's last step (validation is always discrete)."""
    if estimator is None:
        return {}
    out: dict[str, Any] = {"estimator": estimator.name}
    if estimator.name in TEMPERED:
        out["temperature"] = float(estimator.temperature)
    if estimator.relaxed:
        out["train_bound"] = "relaxed"
    return out


def _init_weights(model: torch.nn.Module, run: str, device: torch.device) -> None:
    """Copy the best weights of ``run`` into ``model``; the architectures must match."""
    if not Path(run).exists():
        raise ConfigError(f"init_from: run directory {run} not found; give a directory written by 'vaekit train'")
    try:
        source = load_model(run, device)
    except VaekitError as exc:
        raise ConfigError(f"init_from: {exc}") from None
    try:
        model.load_state_dict(source.state_dict())
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()
        raise ConfigError(
            f"init_from {run} holds another architecture than this run ({detail[-1].strip() if detail else exc}); "
            f"give the same model settings, e.g. --config {Path(run) / 'config.json'}"
        ) from None


def _trainable_parameters(model: LatentVariableModel, train_only: str,
                          auxiliary: dict[str, torch.optim.Optimizer] | None = None) -> list[torch.nn.Parameter]:
    """The parameters of the model's optimizer: all those its ``auxiliary`` optimizers do not train, or
    (``encoder``) those of q(z|x) alone, the others frozen (requires_grad False)."""
    if train_only == "all":
        owned = {id(p) for opt in (auxiliary or {}).values() for group in opt.param_groups for p in group["params"]}
        return [p for p in model.parameters() if id(p) not in owned]
    trainable = model.inference_parameters()
    keep = {id(p) for p in trainable}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return trainable
