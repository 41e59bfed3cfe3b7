"""Exact EM for the mixture of Bernoullis (:class:`~vaekit.models.mixture.BernoulliMixture`) on binary data.

With pi (K,) the mixture weights and mu (K, D) the pixel probabilities, one iteration is, for x (N, D):

    E step   log r_nk = log pi_k + x_n . log mu_k + (1 - x_n) . log(1 - mu_k) - log p(x_n)
             log p(x_n) = logsumexp_k [...]     (one matrix product: x @ (log mu - log(1 - mu))^T)
    M step   pi_k  = mean_n r_nk
             mu_kd = (sum_n r_nk x_nd + a) / (sum_n r_nk + a + b)     (two more matrix products)

This is MAP EM: mu_kd has a Beta(1 + a, 1 + b) prior with a small pseudo-count a = b = :data:`PSEUDO_COUNT`
(1e-3), which keeps every mu strictly inside (0, 1), so that log p(x) stays finite for a pixel that is 0 (or
1) in all the training images of a component. Each iteration never decreases the MAP objective
sum_n log p(x_n) + sum_kd [a log mu_kd + b log(1 - mu_kd)]; with a = b = 0 (plain maximum likelihood) it never
decreases the log-likelihood itself. The prior's term is at most about (a + b) K D * 18 nats over the whole
training set (log mu >= about -18 on 50,000 images): 0.1 nats per example for K = 200 on MNIST, 0.006 for K = 10.
EM starts from k-means++ seeding (K images drawn with probability proportional to
their squared distance to the nearest image drawn before, every image assigned to its nearest seed) or from
random responsibilities, both from a seeded generator, and stops after ``iterations`` or when the relative
change of the mean training log-likelihood falls below ``tol``. All log-likelihoods are exact, in nats per
example: for the exact posterior the ELBO IS log p(x).

:func:`train_em` writes a normal run folder (``vaekit evaluate``, ``sample``, ``bound``, ``report`` read it):
``config.json``, ``metrics.jsonl`` (one row per iteration, ``train_elbo`` / ``valid_elbo`` = the exact mean
log p(x), flagged ``"exact": true``, as a row holds numbers and flags only), ``model.safetensors`` +
``model.json`` (the iteration with the best validation log-likelihood) and ``checkpoint.safetensors`` (the last
iteration's pi and mu in float64), from which ``resume=True`` continues EM exactly where it stopped (EM is
deterministic given pi and mu); a run that converged already is left as it is.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from vaekit.config import TrainConfig, from_dict
from vaekit.errors import CheckpointError, ConfigError, DataError
from vaekit.io import checkpoint as ckpt
from vaekit.io.runfolder import RunFolder
from vaekit.models.mixture import BernoulliMixture
from vaekit.runtime import resolve_device
from vaekit.training.data import load_data
from vaekit.training.trainer import TrainResult

__all__ = ["EMFit", "EStep", "PSEUDO_COUNT", "TOLERANCE", "e_step", "fit_em", "initial_responsibilities",
           "log_prior", "m_step", "train_em"]

#: a = b of the Beta(1 + a, 1 + b) prior on every pixel probability (MAP EM).
PSEUDO_COUNT = 1e-3
#: EM stops when |l_t - l_{t-1}| <= TOLERANCE * |l_{t-1}|, l_t the mean training log-likelihood.
TOLERANCE = 1e-6
#: Mixture components when the config does not say.
DEFAULT_COMPONENTS = 10
#: ``format`` of the EM state in ``checkpoint.safetensors``.
STATE_FORMAT = "vaekit-em-1"
INITS = ("kmeans++", "random")


class EStep(NamedTuple):
    """The E step for x (N, D): log responsibilities (N, K), and per example (N,) the exact log p(x), the
    reconstruction E_r[log p(x|z)] and KL(r || pi) (log p(x) = reconstruction - KL), nats."""

    log_resp: torch.Tensor
    log_px: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


def e_step(x: torch.Tensor, weights: torch.Tensor, probs: torch.Tensor) -> EStep:
    """log r_nk = log pi_k + x_n . log mu_k + (1 - x_n) . log(1 - mu_k) - log p(x_n); see the module docstring."""
    log_pi = torch.log(weights)
    log_mu, log_1m = torch.log(probs), torch.log1p(-probs)
    log_lik = x @ (log_mu - log_1m).T + log_1m.sum(-1)  # log p(x_n | z = k), (N, K)
    log_joint = log_pi + log_lik
    log_px = torch.logsumexp(log_joint, -1)
    log_resp = log_joint - log_px[:, None]
    r = log_resp.exp()
    kept = r > 0  # an emptied component (pi_k = 0) has r = 0 and log r = -inf: it adds nothing
    zero = torch.zeros((), dtype=r.dtype, device=r.device)
    reconstruction = torch.where(kept, r * log_lik, zero).sum(-1)
    kl = torch.where(kept, r * (log_resp - log_pi), zero).sum(-1)
    return EStep(log_resp, log_px, reconstruction, kl)


def m_step(x: torch.Tensor, resp: torch.Tensor, a: float = PSEUDO_COUNT,
           b: float = PSEUDO_COUNT) -> tuple[torch.Tensor, torch.Tensor]:
    """(pi, mu): pi_k = mean_n r_nk, mu_kd = (sum_n r_nk x_nd + a) / (sum_n r_nk + a + b)."""
    counts = resp.sum(0)  # (K,)
    weights = counts / resp.shape[0]
    probs = (resp.T @ x + a) / (counts[:, None] + a + b)
    return weights, probs


def log_prior(probs: torch.Tensor, a: float = PSEUDO_COUNT, b: float = PSEUDO_COUNT) -> torch.Tensor:
    """log of the Beta(1 + a, 1 + b) prior on mu up to its constant: sum_kd [a log mu_kd + b log(1 - mu_kd)]."""
    return a * torch.log(probs).sum() + b * torch.log1p(-probs).sum()


def initial_responsibilities(x: torch.Tensor, components: int, generator: torch.Generator,
                             init: str = "kmeans++") -> torch.Tensor:
    """Starting responsibilities (N, K): one-hot nearest k-means++ seeds, or random rows (``init="random"``).

    k-means++: the first seed is a uniformly drawn image, each next one is drawn with probability proportional
    to the squared distance (for binary images, the Hamming distance) to the nearest seed so far. ``generator``
    is a CPU generator; the draws do not depend on the device of x.
    """
    n = x.shape[0]
    if init == "random":
        r = torch.rand(n, components, generator=generator, dtype=torch.float64).to(device=x.device, dtype=x.dtype)
        return r / r.sum(-1, keepdim=True)
    if init != "kmeans++":
        raise ConfigError(f"init must be one of {', '.join(INITS)}; got {init!r}")
    sq = (x * x).sum(-1)

    def distance(i: int) -> torch.Tensor:
        return (sq + sq[i] - 2 * (x @ x[i])).clamp(min=0)

    first = int(torch.randint(n, (1,), generator=generator))
    best = distance(first)
    nearest = torch.zeros(n, dtype=torch.long, device=x.device)
    for j in range(1, components):
        weights = best.double().cpu()
        total = float(weights.sum())
        if total > 0:
            i = int(torch.multinomial(weights / total, 1, generator=generator))
        else:  # every image is a seed already (fewer distinct images than components)
            i = int(torch.randint(n, (1,), generator=generator))
        d = distance(i)
        closer = d < best
        nearest[closer] = j
        best = torch.minimum(best, d)
    return torch.nn.functional.one_hot(nearest, components).to(x.dtype)


@dataclass
class EMFit:
    """The result of :func:`fit_em`: the last pi (K,) and mu (K, D), one history row per iteration
    (``iteration``, ``train_log_px``, ``objective`` (MAP, per example), ``valid_log_px``, ...), and
    whether EM stopped by the tolerance."""

    weights: torch.Tensor
    probs: torch.Tensor
    history: list[dict[str, Any]] = field(default_factory=list)
    converged: bool = False

    @property
    def iterations(self) -> int:
        return self.history[-1]["iteration"] if self.history else 0

    def model(self, shape: tuple[int, ...]) -> BernoulliMixture:
        """The fitted :class:`BernoulliMixture` (float32) for data of ``shape``."""
        return BernoulliMixture.from_probabilities(self.weights, self.probs, shape)


def _flat_binary(x: torch.Tensor, what: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = x.reshape(x.shape[0], -1)
    if x.numel() and not bool(((x == 0) | (x == 1)).all()):
        raise DataError(f"the {what} images are not binary (0/1): the mixture of Bernoullis fits binary pixels")
    return x.to(device=device, dtype=dtype)


def _check_em_args(x: torch.Tensor, components: int, a: float, b: float) -> None:
    """Refuse a number of components that is not an integer >= 1, pseudo-counts that are not finite and >= 0, and
    an empty training set."""
    if isinstance(components, bool) or not isinstance(components, int) or components < 1:
        raise ConfigError(f"components must be an integer >= 1; got {components!r}")
    if not (a >= 0 and b >= 0 and math.isfinite(a) and math.isfinite(b)):
        raise ConfigError(f"the pseudo-counts a and b must be finite numbers >= 0; got {a!r} and {b!r}")
    if x.shape[0] == 0:
        raise DataError("no training images: EM needs at least one")


def _em_row(t: int, e: EStep, ll: float, n: int, weights: torch.Tensor, probs: torch.Tensor, a: float, b: float,
            valid: torch.Tensor | None) -> dict[str, Any]:
    """The history row of iteration ``t`` from its E step ``e`` on the n training images (mean log p(x) ``ll``):
    mean log p(x), MAP objective per example, reconstruction and KL (nats), and the same on ``valid`` if given."""
    row: dict[str, Any] = {
        "iteration": t, "train_log_px": ll,
        "objective": (float(e.log_px.sum()) + float(log_prior(probs, a, b))) / n,
        "train_reconstruction": float(e.reconstruction.mean()), "train_kl": float(e.kl.mean())}
    if valid is not None:
        v = e_step(valid, weights, probs)
        row.update(valid_log_px=float(v.log_px.mean()), valid_reconstruction=float(v.reconstruction.mean()),
                   valid_kl=float(v.kl.mean()))
    return row


def fit_em(x: torch.Tensor, components: int, iterations: int = 100, *, tol: float = TOLERANCE,
           a: float = PSEUDO_COUNT, b: float = PSEUDO_COUNT, seed: int = 0, init: str = "kmeans++",
           valid: torch.Tensor | None = None, start: tuple[torch.Tensor, torch.Tensor, int] | None = None,
           callback: Callable[[dict[str, Any], torch.Tensor, torch.Tensor], None] | None = None,
           dtype: torch.dtype = torch.float64) -> EMFit:
    """MAP EM on binary images x (N, ...) for ``components`` K, on x's device in ``dtype``.

    Each iteration t is an M step then an E step, so its row describes the parameters theta_t after t M steps:
    ``train_log_px`` (mean exact log p(x), nats), ``objective`` (the MAP objective per example, which never
    decreases), ``train_reconstruction``, ``train_kl``, and the same for ``valid`` when given. ``start`` =
    (pi, mu, t) continues from theta_t (what :func:`train_em` resumes from). ``callback(row, pi, mu)`` is
    called after every iteration.
    """
    _check_em_args(x, components, a, b)
    x = _flat_binary(x, "training", dtype, x.device)
    valid = None if valid is None or valid.shape[0] == 0 else _flat_binary(valid, "validation", dtype, x.device)
    n = x.shape[0]
    if start is None:
        generator = torch.Generator().manual_seed(int(seed))
        resp = initial_responsibilities(x, components, generator, init)
        done, previous = 0, None
    else:
        weights, probs, done = start
        weights, probs = weights.to(x.device, dtype), probs.to(x.device, dtype)
        first = e_step(x, weights, probs)
        resp, previous = first.log_resp.exp(), float(first.log_px.mean())
    fit = EMFit(torch.empty(0), torch.empty(0))
    if start is not None:
        fit.weights, fit.probs = weights, probs
    for t in range(done + 1, iterations + 1):
        t0 = time.perf_counter()
        weights, probs = m_step(x, resp, a, b)
        e = e_step(x, weights, probs)
        ll = float(e.log_px.mean())
        row = _em_row(t, e, ll, n, weights, probs, a, b, valid)
        row["seconds"] = time.perf_counter() - t0
        fit.weights, fit.probs = weights, probs
        fit.history.append(row)
        if callback is not None:
            callback(row, weights, probs)
        if not math.isfinite(ll):
            raise DataError(f"the training log-likelihood became {ll} at EM iteration {t}; with pseudo-counts "
                            "a = b = 0 a pixel constant in a component's images has probability 0 or 1: give a > 0")
        converged = previous is not None and abs(ll - previous) <= tol * abs(previous)
        previous = ll
        resp = e.log_resp.exp()
        if converged:
            fit.converged = True
            break
    return fit


# -- the run folder ----------------------------------------------------------------------------------


def _components(cfg: TrainConfig) -> int:
    if cfg.components is not None:
        return int(cfg.components)
    return int(cfg.posterior_settings.get("classes", DEFAULT_COMPONENTS))


def _check_config(cfg: TrainConfig) -> None:
    if cfg.family != "bernoulli-mixture" or cfg.fit != "em":
        raise ConfigError(f"train_em fits family bernoulli-mixture with fit em; this config has family {cfg.family} "
                          f"and fit {cfg.fit} (build it with from_dict({{'family': 'bernoulli-mixture', 'fit': 'em', "
                          "...}}) or --family bernoulli-mixture --fit em)")


def _binary_splits(ds: Any, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The training and validation images as binary tensors; grey data are refused in one line."""
    if not bool(getattr(ds, "binary", False)):
        raise DataError(f"{cfg.dataset} is grey-level but the mixture of Bernoullis fits binary pixels; add "
                        "--binarize threshold (or dynamic: the training images are then binarized once, "
                        "with the seed)")
    train_x, valid_x = ds.train, ds.valid
    if bool(getattr(ds, "dynamic", False)):  # one fixed draw x ~ Bernoulli(grey levels), as the evaluator does
        train_x = torch.bernoulli(train_x.double(), generator=torch.Generator().manual_seed(int(cfg.seed)))
    if train_x.shape[0] == 0:
        raise DataError(f"the training split of {cfg.dataset} is empty")
    return train_x, valid_x


def _check_memory(n: int, n_valid: int, d: int, k: int) -> None:
    """Refuse (one line) a fit whose float64 arrays would not fit the memory budget."""
    from vaekit.resources import gib, memory_budget

    need = 8 * ((n + n_valid) * (d + 4 * k) + 4 * k * d)
    if need > memory_budget():
        raise ConfigError(f"out of memory: EM with {k} components on {n} + {n_valid} images of {d} pixels needs about "
                          f"{gib(need)}, over the memory budget of {gib(memory_budget())} ($VAEKIT_MEMORY_BUDGET); "
                          "lower --components")


def _read_state(run: Path) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    path = run / ckpt.STATE_FILE
    tensors, meta = ckpt.read_safetensors(path)
    if meta.get("format") != STATE_FORMAT or meta.get("kind") != "em-state":
        raise CheckpointError(f"{path} is not the state of an EM fit (format {meta.get('format')!r}); a run trained "
                              "by gradient steps resumes with vaekit train --resume, or start afresh with --overwrite")
    try:
        progress = json.loads(meta["progress"])
        weights, probs = tensors["weights"], tensors["probs"]
        ok = (isinstance(progress, dict) and all(isinstance(progress.get(k), int) and progress[k] >= 0
                                                 for k in ("iteration", "best_epoch"))
              and all(isinstance(progress.get(k), (int, float)) for k in ("best_valid", "seconds"))
              and weights.dim() == 1 and probs.dim() == 2 and probs.shape[0] == weights.shape[0])
    except (KeyError, ValueError, RecursionError):
        ok = False
    if not ok:
        raise CheckpointError(f"{path} is corrupt: it does not hold pi, mu and the progress of an EM fit")
    if not (bool(((probs > 0) & (probs < 1)).all()) and bool((weights >= 0).all())):
        raise CheckpointError(f"{path} is corrupt: its probabilities are not all inside (0, 1)")
    return weights, probs, progress


def _write_state(run: Path, weights: torch.Tensor, probs: torch.Tensor, progress: dict[str, Any]) -> None:
    tensors = {"weights": weights.detach().cpu().contiguous(), "probs": probs.detach().cpu().contiguous()}
    data = ckpt.safetensors_bytes(tensors, {"format": STATE_FORMAT, "kind": "em-state",
                                            "progress": json.dumps(progress)})
    try:
        ckpt.atomic_write_bytes(run / ckpt.STATE_FILE, data)
    except OSError as exc:
        raise ckpt.write_failed(run / ckpt.STATE_FILE, exc) from None


def _saved_config(folder: RunFolder, cfg: TrainConfig) -> TrainConfig:
    """The run's config.json, with the caller's iteration count and hardware settings."""
    saved_cfg = from_dict(folder.read_config(), source=str(folder / "config.json"))
    _check_config(saved_cfg)
    for name in ("em_iterations", "device", "threads"):
        setattr(saved_cfg, name, getattr(cfg, name))
    return saved_cfg


def train_em(cfg: TrainConfig, out: str | Path, dataset: Any = None, log: Callable[[str], None] | None = print,
             progress: bool | None = None, resume: bool = False, overwrite: bool = False,
             notice: Callable[[str], None] | None = None) -> TrainResult:
    """Fit the mixture of Bernoullis ``cfg`` describes (``components`` K, ``em_iterations``, ``seed``, the data
    settings) by exact MAP EM, writing the run folder ``out``; see the module docstring.

    ``out`` follows the run-folder contract of ``vaekit train`` (:mod:`vaekit.io.contract`, the lifecycle of
    :class:`~vaekit.io.runfolder.RunFolder`): a new or empty folder, ``resume`` to continue the run's EM from its
    last iteration (with the run's own settings, up to this ``em_iterations``), ``overwrite`` to start afresh.
    ``dataset`` replaces loading ``cfg.dataset``. Returns a :class:`~vaekit.train.TrainResult` whose ELBOs are exact
    mean log-likelihoods (nats per example), ``epochs`` the EM iterations done and ``stopped_early`` whether EM
    converged by the tolerance. ``notice`` (default ``log``) gets what must be said even to a quiet caller: that a
    resumed run is started again (its first checkpoint's write was killed).
    """
    _check_config(cfg)
    folder = RunFolder(out)
    say = log or (lambda _msg: None)
    folder.claim(resume, overwrite)
    try:
        return _train_locked(cfg, folder, dataset, say, progress, resume, overwrite, notice or say)
    finally:
        folder.release()


def _open(cfg: TrainConfig, folder: RunFolder, resume: bool, overwrite: bool, say: Callable[[str], None],
          notice: Callable[[str], None]
          ) -> tuple[TrainConfig, tuple[torch.Tensor, torch.Tensor, int] | None, dict[str, Any]]:
    """(the settings, the EM state to continue from or None, the progress record): the run's own on resume."""
    record = {"iteration": 0, "best_valid": -math.inf, "best_epoch": 0, "seconds": 0.0, "converged": False,
              "last": None}
    if folder.open(resume, overwrite):
        cfg = _saved_config(folder, cfg)
        weights, probs, record = _read_state(folder.path)
        return cfg, (weights, probs, record["iteration"]), record
    if folder.restarted:
        notice(folder.restarted)
    elif resume:
        say(f"no checkpoint in {folder.path}: starting a new run")
    return cfg, None, record


def _train_locked(cfg: TrainConfig, folder: RunFolder, dataset: Any, say: Callable[[str], None],
                  progress: bool | None, resume: bool, overwrite: bool, notice: Callable[[str], None]) -> TrainResult:
    cfg, start, record = _open(cfg, folder, resume, overwrite, say, notice)
    run = folder.path
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    ds = dataset if dataset is not None else load_data(cfg)
    train_x, valid_x = _binary_splits(ds, cfg)
    shape = tuple(int(s) for s in ds.shape)
    k, d = _components(cfg), math.prod(shape)
    _check_memory(train_x.shape[0], valid_x.shape[0], d, k)
    if start is not None:
        if tuple(start[1].shape) != (k, d):
            raise CheckpointError(f"{run / ckpt.STATE_FILE} holds {tuple(start[1].shape)} pixel probabilities, but "
                                  f"the run's config has {k} components for {d} pixels")
        folder.resume_at(record["iteration"])
        say(f"resuming {run} after EM iteration {record['iteration']}")
    else:
        folder.start(cfg.to_dict(), overwrite, say)
    has_valid = valid_x.shape[0] > 0
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.em_iterations, initial=min(record["iteration"], cfg.em_iterations), desc="EM",
               disable=None if progress is None else not progress, leave=False, dynamic_ncols=True)
    on_iteration = _IterationLog(folder, record, shape, has_valid, cfg.em_iterations, bar, say)
    fit = None
    try:
        if record.get("converged"):
            say(f"{run}: EM converged at iteration {record['iteration']} already; nothing to do")
        else:
            fit = fit_em(train_x.to(device), k, cfg.em_iterations, seed=cfg.seed, start=start,
                         valid=valid_x.to(device) if has_valid else None, callback=on_iteration, dtype=dtype)
    finally:
        bar.close()
    return _result(folder, fit, record, shape, say)


class _IterationLog:
    """After each EM iteration: the kept model (by the validation log p(x)), the metrics row, the EM state."""

    def __init__(self, folder: RunFolder, record: dict[str, Any], shape: tuple[int, ...], has_valid: bool,
                 iterations: int, bar: Any, say: Callable[[str], None]):
        self.folder, self.record, self.shape, self.has_valid = folder, record, shape, has_valid
        self.iterations, self.bar, self.say = iterations, bar, say

    def __call__(self, row: dict[str, Any], weights: torch.Tensor, probs: torch.Tensor) -> None:
        record, t = self.record, row["iteration"]
        valid_ll = row.get("valid_log_px", math.nan)
        improved = not self.has_valid or valid_ll > record["best_valid"]
        if improved:
            record.update(best_valid=valid_ll if self.has_valid else row["train_log_px"], best_epoch=t)
            BernoulliMixture.from_probabilities(weights, probs, self.shape).save(self.folder.path)
        record["seconds"] += row["seconds"]
        metrics = {"epoch": t, "train_elbo": row["train_log_px"], "train_reconstruction": row["train_reconstruction"],
                   "train_kl": row["train_kl"], "valid_elbo": valid_ll,
                   "valid_reconstruction": row.get("valid_reconstruction", math.nan),
                   "valid_kl": row.get("valid_kl", math.nan), "train_objective": row["objective"], "exact": True,
                   "seconds": row["seconds"], "best": improved}
        record.update(iteration=t, last=metrics)
        self.folder.append(metrics)
        _write_state(self.folder.path, weights, probs, record)
        self.bar.update(1)
        if t == 1 or t == self.iterations or t % max(1, self.iterations // 20) == 0:
            self.say(f"iteration {t:>4}  train log p(x) {row['train_log_px']:9.3f}  valid log p(x) {valid_ll:9.3f}  "
                     f"{row['seconds']:6.2f} s" + ("  *" if improved else ""))


def _result(folder: RunFolder, fit: Any, record: dict[str, Any], shape: tuple[int, ...],
            say: Callable[[str], None]) -> TrainResult:
    """The fit's end: its convergence recorded, and the result with the model of the last iteration."""
    run = folder.path
    if fit is not None and fit.converged:
        record["converged"] = True
        _write_state(run, fit.weights, fit.probs, record)
        say(f"EM converged at iteration {fit.iterations} (relative change of the mean log p(x) <= {TOLERANCE:g})")
    if fit is not None and fit.history:
        model = fit.model(shape)
    else:
        weights, probs, _ = _read_state(run) if folder.has_checkpoint else (None, None, None)
        model = BernoulliMixture.from_probabilities(weights, probs, shape) if weights is not None else None
    last = record.get("last") or {}
    return TrainResult(run=run, epochs=record["iteration"], train_elbo=last.get("train_elbo", math.nan),
                       valid_elbo=last.get("valid_elbo", math.nan), best_valid_elbo=record["best_valid"],
                       best_epoch=record["best_epoch"], seconds=record["seconds"],
                       stopped_early=bool(record.get("converged")), best_score=record["best_valid"],
                       model=model)  # the kept iteration is chosen by its valid log p(x) (selected_by's default)
