"""Post-hoc samplers for a trained run: a density q(z) fitted to the codes after training, used in place of p(z)
to sample (z ~ q, x ~ p(x|z)) and to evaluate the decoder with it (``vaekit sample`` / ``vaekit evaluate RUN
--sampler NAME``).

The codes are the aggregate posterior q(z) = (1/N) sum_n q(z|x_n) of the run's training split: one draw
z_n ~ q(z|x_n) per training example, from a generator seeded with the fit's seed (an autoencoder: its codes
f(x_n)). Samplers (:data:`SAMPLERS`):

* ``prior``: the run's own p(z) (nothing fitted);
* ``gmm``: scikit-learn's ``GaussianMixture`` with full covariances (``components``, k-means start, seeded),
  log q(z) by ``torch.distributions.MixtureSameFamily``;
* ``flow``: a masked autoregressive flow (:class:`~vaekit.analysis.code_densities.MaskedAutoregressiveFlow`) fitted
  by maximum likelihood, Adam for ``epochs`` passes over the codes;
* ``two-stage``: the second VAE of Dai & Wipf (2019) on the codes, fitted by its ELBO for ``epochs`` passes; its
  log-density is itself estimated (``inner_k`` importance draws, :class:`~vaekit.analysis.code_densities.
  TwoStageDensity`).

Each is fitted once and kept in ``RUN/samplers/NAME.safetensors`` (its tensors, with a checksum) and
``RUN/samplers/NAME.json`` (its settings, what it was fitted to, the mean log q(z) of the codes and the digest
of the weights it was fitted to), each written atomically; nothing is pickled. A kept sampler whose run's
weights have changed since is fitted again.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributions import Distribution

from vaekit.analysis import code_densities as cd
from vaekit.analysis.posthoc import is_autoencoder, training_codes, training_draws
from vaekit.components.base import Prior
from vaekit.errors import CheckpointError, VaekitError
from vaekit.io.checkpoint import (
    MODEL_FILE,
    atomic_write_bytes,
    read_safetensors,
    safetensors_bytes,
    write_failed,
)

#: The samplers, ``prior`` first (the run's own p(z)).
SAMPLERS = ("prior", "gmm", "flow", "two-stage")
#: The samplers fitted after training.
FITTED = SAMPLERS[1:]
FOLDER = "samplers"
FORMAT = "vaekit-sampler-1"


@dataclass
class SamplerSettings:
    """How the samplers are fitted: the mixture's components; the flow's steps, hidden units and layers (per
    MADE); the second stage's hidden units and layers; Adam's epochs, batch size and starting learning rate (the
    flow and the second stage); the seed of the code draws, the mixture's start and the fits."""

    components: int = 50
    flow_steps: int = 5
    flow_hidden: int = 256
    flow_layers: int = 2
    stage_hidden: int = 256
    stage_layers: int = 2
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "lr":
                if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                    raise VaekitError(f"lr must be a positive number, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int) or value < (0 if f.name == "seed" else 1):
                raise VaekitError(f"{f.name} must be a whole number >= {0 if f.name == 'seed' else 1}, got {value!r}")


@dataclass
class FittedSampler:
    """A fitted density: its ``name`` (one of :data:`FITTED`), its tensors and what was recorded of its fit."""

    name: str
    tensors: dict[str, torch.Tensor]
    info: dict[str, Any]

    @property
    def settings(self) -> SamplerSettings:
        return SamplerSettings(**self.info["settings"])


def check_model(model: Any, run: str | Path | None = None) -> None:
    """Refuse, in one line, a model whose codes are not one continuous vector z that p(x|z) decodes alone."""
    where = f"{run} " if run is not None else "this model "
    family = getattr(model, "posterior_family", None)
    if getattr(model, "one_hot_codes", False) or getattr(model, "is_discrete", False):
        raise VaekitError(f"{where}has discrete codes (a {type(model).__name__} with a {getattr(family, 'name', '?')} "
                          "q(z|x)); the samplers are densities fitted to continuous codes; use --sampler prior")
    if family is None or not hasattr(model, "prior"):
        raise VaekitError(f"{where}is a {type(model).__name__}, not a one-level model with a continuous code z; the "
                          "samplers fit a density to such codes; use --sampler prior")
    if getattr(model, "condition", 0):
        raise VaekitError(f"{where}is conditional (trained with --conditional): its codes depend on the class, and "
                          "the samplers fit one unconditional density; use --sampler prior")


def aggregate_codes(model: Any, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The codes the samplers are fitted to, (N, L) float64: one draw z_n ~ q(z|x_n) per image (seeded), or an
    autoencoder's f(x_n)."""
    check_model(model)
    flat = images.reshape(images.shape[0], -1)
    return training_codes(model, flat) if is_autoencoder(model) else training_draws(model, flat, seed)


def fit_sampler(name: str, codes: torch.Tensor, settings: SamplerSettings | None = None) -> FittedSampler:
    """Fit the density ``name`` (``gmm``, ``flow`` or ``two-stage``) to ``codes`` (N, L); the fit is repeatable
    for a given seed (``settings.seed``)."""
    settings = settings or SamplerSettings()
    if name not in FITTED:
        raise VaekitError(f"name must be one of {', '.join(FITTED)}, got {name!r}")
    if codes.dim() != 2 or codes.shape[0] < 2 or not torch.isfinite(codes).all():
        raise VaekitError(f"codes must be finite (N, L) with N >= 2, got shape {tuple(codes.shape)}")
    t0 = time.perf_counter()
    info: dict[str, Any] = {"format": FORMAT, "sampler": name, "settings": dataclasses.asdict(settings),
                            "codes": int(codes.shape[0]), "latent": int(codes.shape[1])}
    if name == "gmm":
        tensors = _fit_gmm(codes, settings, info)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)  # the initial weights
            module = _module(name, int(codes.shape[1]), settings)
        losses = cd.fit_flow_or_stage(module, codes.float(), settings.epochs, settings.batch_size, settings.lr,
                                      settings.seed)
        info["epoch_losses"] = losses
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    fitted = FittedSampler(name, tensors, info)
    info["seconds"] = time.perf_counter() - t0
    with torch.no_grad():
        info["mean_log_q"] = float(density(fitted, seed=settings.seed).log_prob(codes.to(_dtype(fitted))).mean())
    return fitted


def _fit_gmm(codes: torch.Tensor, settings: SamplerSettings, info: dict[str, Any]) -> dict[str, torch.Tensor]:
    from sklearn.mixture import GaussianMixture

    components = max(1, min(settings.components, codes.shape[0] // 2))
    gmm = GaussianMixture(n_components=components, covariance_type="full", reg_covar=1e-6, max_iter=200,
                          random_state=settings.seed)
    gmm.fit(codes.numpy())
    info.update(components=components, converged=bool(gmm.converged_), iterations=int(gmm.n_iter_))
    return cd.gmm_from_sklearn(gmm)


def _module(name: str, latent: int, s: SamplerSettings) -> torch.nn.Module:
    if name == "flow":
        return cd.MaskedAutoregressiveFlow(latent, s.flow_steps, s.flow_hidden, s.flow_layers)
    return cd.TwoStageVAE(latent, s.stage_hidden, s.stage_layers)


def _dtype(fitted: FittedSampler) -> torch.dtype:
    return next(iter(fitted.tensors.values())).dtype


def density(fitted: FittedSampler, *, inner_k: int = 16, seed: int = 0, device: torch.device | str | None = None,
            dtype: torch.dtype | None = None) -> Distribution:
    """The fitted density as a distribution over z (event (L,)) on ``device`` in ``dtype``; ``inner_k`` and
    ``seed``: the importance draws of the two-stage estimate of log q(z) and their generator's seed."""
    device = torch.device(device or "cpu")
    to = {"device": device, "dtype": dtype or _dtype(fitted)}
    if fitted.name == "gmm":
        t = {k: v.to(**to) for k, v in fitted.tensors.items()}
        return cd.FittedGaussianMixture(t["weights"], t["means"], t["scale_tril"])
    module = _module(fitted.name, int(fitted.info["latent"]), fitted.settings)
    module.load_state_dict(fitted.tensors)
    module = module.to(**to).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    if fitted.name == "flow":
        return cd.ModuleDensity(module)
    return cd.TwoStageDensity(module, inner_k, seed)


def paths(run: str | Path, name: str) -> tuple[Path, Path]:
    """(RUN/samplers/NAME.safetensors, RUN/samplers/NAME.json)."""
    folder = Path(run) / FOLDER
    return folder / f"{name}.safetensors", folder / f"{name}.json"


def weights_digest(run: str | Path) -> str:
    """SHA-256 of the run's kept weights (RUN/model.safetensors): what a kept sampler was fitted to."""
    h = hashlib.sha256()
    with open(Path(run) / MODEL_FILE, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_sampler(run: str | Path, fitted: FittedSampler) -> Path:
    """Write the sampler's tensors and record into RUN/samplers/ (each file atomically); returns the tensors' path.
    The record holds the tensors' checksum, so a record without its tensors (or the reverse) is never used."""
    tensors_path, record_path = paths(run, fitted.name)
    fitted.tensors = {k: v.contiguous() for k, v in fitted.tensors.items()}
    data = safetensors_bytes(fitted.tensors, {"format": FORMAT, "kind": "sampler", "sampler": fitted.name})
    record = {**fitted.info, "tensors_sha256": hashlib.sha256(data).hexdigest()}
    try:
        tensors_path.parent.mkdir(exist_ok=True)
        atomic_write_bytes(tensors_path, data)
        atomic_write_bytes(record_path, (json.dumps(record, indent=2) + "\n").encode("utf-8"))
    except OSError as exc:
        raise write_failed(tensors_path, exc) from None
    fitted.info = record
    return tensors_path


def load_sampler(run: str | Path, name: str) -> FittedSampler | None:
    """The kept sampler ``name`` of a run, or None when there is none (or only half of one: a record whose
    tensors do not match its checksum). A damaged tensors file is refused (:class:`CheckpointError`)."""
    tensors_path, record_path = paths(run, name)
    if not (tensors_path.is_file() and record_path.is_file()):
        return None
    data = tensors_path.read_bytes()
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or record.get("tensors_sha256") != hashlib.sha256(data).hexdigest():
        return None
    tensors, meta = read_safetensors(tensors_path)
    if meta.get("sampler") != name or record.get("sampler") != name or record.get("format") != FORMAT:
        raise CheckpointError(f"{tensors_path} is not vaekit's {name} sampler")
    return FittedSampler(name, tensors, record)


def run_sampler(run: str | Path, name: str, model: Any, images: Callable[[], torch.Tensor], *, refit: bool = False,
                settings: SamplerSettings | None = None) -> tuple[FittedSampler, str]:
    """The sampler ``name`` of a run: the kept one, or fitted now (``refit``, none kept, or kept for other weights)
    to the codes of ``images()`` (the run's training images, loaded only then) and saved. Returns it and one line
    saying which."""
    check_model(model, run)
    digest = weights_digest(run)
    kept = None if refit else load_sampler(run, name)
    if kept is not None and kept.info.get("weights_sha256") == digest:
        return kept, f"{name}: kept in {paths(run, name)[0]}"
    why = "--refit" if refit else ("fitted to other weights" if kept is not None else "none kept")
    settings = settings or (kept.settings if kept is not None else SamplerSettings())
    codes = aggregate_codes(model, images(), settings.seed)
    fitted = fit_sampler(name, codes, settings)
    fitted.info["weights_sha256"] = digest
    fitted.info["code_kind"] = "autoencoder codes f(x)" if is_autoencoder(model) else "one draw of q(z|x) per image"
    where = save_sampler(run, fitted)
    return fitted, f"{name}: fitted ({why}) to {codes.shape[0]} training codes in {fitted.info['seconds']:.1f} s, " \
                   f"saved to {where}"


class SamplerPrior(Prior):
    """A fitted density q(z) standing in for a model's p(z) (not registered, never saved with the model)."""

    def __init__(self, name: str, dist: Distribution):
        super().__init__(int(dist.event_shape[0]))
        self.name, self.dist = name, dist

    def distribution(self) -> Distribution:
        return self.dist


def with_density(model: Any, name: str, dist: Distribution) -> Any:
    """A copy of ``model`` whose p(z) is ``dist`` (the sampler ``name``): its samples are z ~ dist, x ~ p(x|z),
    and its evaluation importance-samples the decoder with that density (q(z|x) the proposal)."""
    twin = copy.deepcopy(model)
    twin.prior = SamplerPrior(name, dist)
    return twin


def sampler_note(fitted: FittedSampler, inner_k: int) -> str:
    """What an evaluation with the sampler is the figure of, in one line."""
    info, what = fitted.info, fitted.info.get("code_kind", "codes")
    source = f"fitted after training to {info['codes']} training codes ({what}, seed {info['settings']['seed']})"
    if fitted.name == "gmm":
        return f"--sampler gmm: log p(x) of the decoder with a {info['components']}-component full-covariance " \
               f"Gaussian mixture {source}, importance-sampled with the run's q(z|x) as proposal"
    if fitted.name == "flow":
        s = fitted.settings
        return f"--sampler flow: log p(x) of the decoder with a masked autoregressive flow ({s.flow_steps} steps, " \
               f"{s.epochs} epochs) {source}, importance-sampled with the run's q(z|x) as proposal"
    return ("--sampler two-stage: a nested importance-sampling estimate, not log p(x) itself: the decoder with the "
            f"second-stage VAE's density of z (Dai & Wipf 2019) {source}, that density estimated with {inner_k} draws "
            "of its q(u|z) inside each of the K outer draws; its exponential is unbiased, so the figure is a "
            "stochastic lower bound on log p(x) under decoder + second stage")
