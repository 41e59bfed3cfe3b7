"""Semi-supervised M2 (Kingma, Rezende, Mohamed & Welling, 2014): a class y and a Gaussian code z behind each image.

    p(x, y, z) = p(y) p(z) p(x | y, z),   p(y) = 1/C (uniform over the C classes),   p(z) = N(0, I)
    q(y, z | x) = q(y|x) q(z | x, y),    q(y|x) = Cat(pi(x)) (a classifier),   q(z|x, y) = N(mu(x, y), diag s^2(x, y))

The encoder and the decoder take the one-hot y beside x and z. For a labelled example (x, y) and an unlabelled x,
in nats (the objective is :mod:`vaekit.objectives.m2`):

    -L(x, y) = E_q(z|x,y)[log p(x|y, z)] + log p(y) - KL(q(z|x, y) || p(z))          <= log p(x, y)
    -U(x)    = sum_y q(y|x) (-L(x, y)) + H(q(y|x))                                     <= log p(x)

with the sum over y exact: every class is scored in one batched pass of C N rows (:meth:`M2.class_terms`).

As a latent-variable model of vaekit's protocol the code is [one-hot y, z] (C + d values): ``posterior(x)`` is
q(y, z | x) and ``prior_distribution()`` p(y) p(z) (:class:`ClassGaussian`), so sampling, reconstructions and the
report work as for any model. ``labels`` (``--labels N``) is how many training labels are kept: the trainer
carves them class-balanced with the run's seed (:meth:`M2.carve_labels`) and keeps their indices in the weights
(``labelled_indices``, in ``model.safetensors`` and the checkpoint), so a resumed run and its evaluation know them.

One file registers the model (``model.json`` kind ``m2``) and the family (``--family m2 --labels N``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

from vaekit.components.base import LIKELIHOODS, Likelihood
from vaekit.components.posteriors import check_min_logvar
from vaekit.distributions import DiagonalNormal
from vaekit.errors import ConfigError, DataError
from vaekit.models.base import LatentVariableModel, ShapeError, register_model
from vaekit.models.families import FAMILIES, Family
from vaekit.models.networks import build_decoder, build_encoder, network_spec
from vaekit.models.persistence import MAX_PIXELS, Persistent
from vaekit.models.vae import make_component

#: The keys of a ``model.json`` of kind ``m2``.
SPEC_KEYS = frozenset({"format", "model", "shape", "classes", "latent", "labels", "network", "likelihood",
                       "prior", "min_logvar"})
#: The prior every M2 model has (fixed, written in ``model.json`` for the reader): p(y) p(z).
PRIOR = {"name": "uniform y x standard normal z"}
#: The most classes an M2 model sums over.
MAX_CLASSES = 1024


class ClassGaussian(Distribution):
    """Cat(y; softmax(logits)) N(z; loc_y, diag exp(logvar_y)) over codes v = [one-hot y, z] (C + d values):
    q(y, z | x) with ``logits`` (..., C), ``loc`` and ``logvar`` (..., C, d), or the prior p(y) p(z) (uniform
    logits, loc 0, logvar 0). z is reparameterized given y; y is drawn by the Gumbel-max trick."""

    arg_constraints: dict[str, Any] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, logits: torch.Tensor, loc: torch.Tensor, logvar: torch.Tensor):
        self.logits = logits - torch.logsumexp(logits, -1, keepdim=True)
        self.loc, self.logvar = loc, logvar
        self.classes, self.dim = loc.shape[-2], loc.shape[-1]
        super().__init__(batch_shape=logits.shape[:-1], event_shape=torch.Size([self.classes + self.dim]),
                         validate_args=False)

    @property
    def probs(self) -> torch.Tensor:
        return self.logits.exp()

    @staticmethod
    def _pick(onehot: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """The rows of ``table`` (..., C, d) that the one-hot (..., C) selects: (..., d)."""
        return (onehot.unsqueeze(-1) * table).sum(-2)

    def rsample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        kw = {"dtype": self.loc.dtype, "device": self.loc.device, "generator": generator}
        with torch.no_grad():
            u = torch.rand(shape + (self.classes,), **kw).clamp_min(torch.finfo(self.loc.dtype).tiny)
            onehot = F.one_hot((self.logits.detach() - torch.log(-torch.log(u))).argmax(-1), self.classes)
        onehot = onehot.to(self.loc.dtype)
        eps = torch.randn(shape + (self.dim,), **kw)
        z = self._pick(onehot, self.loc) + torch.exp(0.5 * self._pick(onehot, self.logvar)) * eps
        return torch.cat([onehot, z], -1)

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape, generator)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log q(y|x) + log N(z; loc_y, diag exp(logvar_y)), nats, for codes [one-hot y, z] (..., C + d)."""
        onehot, z = value[..., : self.classes], value[..., self.classes :]
        normal = DiagonalNormal(self._pick(onehot, self.loc), self._pick(onehot, self.logvar))
        return (onehot * self.logits).sum(-1) + normal.log_prob(z)

    @property
    def mean(self) -> torch.Tensor:
        return torch.cat([self.probs, self._pick(self.probs, self.loc)], -1)

    def point(self) -> torch.Tensor:
        """The code that stands for q in pictures: [one-hot of the most probable class, that class's mean z]."""
        onehot = F.one_hot(self.logits.argmax(-1), self.classes).to(self.loc.dtype)
        return torch.cat([onehot, self._pick(onehot, self.loc)], -1)


def _parameters(shape: Sequence[int], classes: int, latent: int, net: dict[str, Any], params: int) -> int:
    """About how many parameters an M2 model of these sizes has (checked against the memory budget first)."""
    from vaekit.resources import network_parameters

    d = math.prod(shape)
    return (network_parameters(net, "encoder", shape, latent, classes)
            + network_parameters(net, "encoder", shape, latent, 2 * latent) + classes * 2 * latent
            + network_parameters(net, "decoder", shape, latent + classes, d * params))


@register_model("m2")
class M2(Persistent, LatentVariableModel):
    """The M2 model for data of ``shape`` with ``classes`` classes, a ``latent``-dimensional Gaussian z, vaekit's
    networks (``arch`` mlp or conv, ``hidden``, ``activation``, ``conv_channels``) for the classifier q(y|x), the
    encoder q(z|x, y) and the decoder p(x|y, z), a registered ``likelihood``, and ``labels`` training labels kept
    (the trainer carves them). ``min_logvar``: the floor of q(z|x, y)'s log-variance."""

    condition = 0  # p(x) is not conditional: y is a latent class (observed only for the labelled examples)
    semi_supervised = True
    noun = "M2 model"

    def __init__(self, shape: Sequence[int] = (1, 28, 28), classes: int = 10, latent: int = 50, *, labels: int = 100,
                 arch: str = "mlp", hidden: Sequence[int] = (500,), activation: str = "softplus",
                 conv_channels: Sequence[int] = (32, 64), likelihood: Any = "bernoulli", min_logvar: float = -12.0):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if not shape or min(shape) < 1 or math.prod(shape) > MAX_PIXELS:
            raise ShapeError(f"the data shape must be positive sizes like (C, H, W), got {shape}")
        M2Config(labels=labels)  # the count's range
        if isinstance(classes, bool) or not isinstance(classes, int) or not 2 <= classes <= MAX_CLASSES:
            raise ConfigError(f"classes must be an integer from 2 to {MAX_CLASSES}, got {classes!r}")
        if isinstance(latent, bool) or not isinstance(latent, int) or latent < 1:
            raise ConfigError(f"latent must be an integer >= 1, got {latent!r}")
        try:
            self.network = network_spec(arch, hidden, activation, conv_channels)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.shape, self.classes, self.latent, self.labels = shape, classes, latent, int(labels)
        self.min_logvar = check_min_logvar(min_logvar)
        self.likelihood: Likelihood = make_component(LIKELIHOODS, likelihood, Likelihood, shape=shape, latent=latent)
        self._check_memory()
        try:
            self.classifier = build_encoder(self.network, shape, classes)
            self.encoder = build_encoder(self.network, shape, 2 * latent, condition=classes)
            self.decoder = build_decoder(self.network, latent, shape, self.likelihood.param_shape, condition=classes)
        except ValueError as exc:
            raise ShapeError(f"cannot build the networks for data of shape {shape}: {exc}") from None
        self.register_buffer("labelled_indices", torch.full((self.labels,), -1, dtype=torch.long))

    def _check_memory(self) -> None:
        from vaekit.resources import check_parameters

        count = _parameters(self.shape, self.classes, self.latent, self.network,
                            self.likelihood.params_per_pixel)
        try:
            check_parameters(count, "this M2 model", "hidden, latent, the conv channels or the classes")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    # -- facts --------------------------------------------------------------------------------------
    @property
    def latent_size(self) -> int:
        """C + d: the code is [one-hot y, z]."""
        return self.classes + self.latent

    @property
    def default_objective(self) -> str:
        return "m2"

    @property
    def supports_surgery(self) -> bool:
        return False  # the aggregate posterior of a mixed discrete-continuous code is not estimated here

    def _anchor(self) -> torch.Tensor:
        return next(self.decoder.parameters())

    # -- the classes --------------------------------------------------------------------------------
    def class_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log q(y|x) for every class, (N, C) nats."""
        return torch.log_softmax(self.classifier(self.as_data(x)), -1)

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """argmax_y q(y|x), (N,) int64: the model's class for each image."""
        return self.class_log_probs(x).argmax(-1)

    def _every_class(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x repeated C times, class-major (C N, ...), the one-hot y of each row (C N, C))."""
        n = x.shape[0]
        eye = torch.eye(self.classes, dtype=x.dtype, device=x.device)
        return x.repeat(self.classes, *([1] * (x.dim() - 1))), eye.repeat_interleave(n, 0)

    def z_posterior(self, x: torch.Tensor, onehot: torch.Tensor) -> DiagonalNormal:
        """q(z|x, y) for images x (N, ...) and one-hot classes (N, C)."""
        params = self.encoder(self.as_data(x), onehot.to(self._anchor().dtype))
        return DiagonalNormal(params[..., : self.latent], params[..., self.latent :].clamp(min=self.min_logvar))

    def class_terms(self, x: torch.Tensor, encoder_input: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """For every class y at once (one batch of C N rows), with one draw z ~ q(z|x, y): (log p(x|y, z),
        KL(q(z|x, y) || N(0, I)) in closed form), each (C, N) nats. ``encoder_input``: what q sees instead of x."""
        x = self.as_data(x)
        x_all, onehot = self._every_class(x)
        enc = x_all if encoder_input is None else self._every_class(self.as_data(encoder_input))[0]
        q = self.z_posterior(enc, onehot)
        z = q.rsample((), generator)
        rec = self.likelihood.log_prob(x_all, self.decoder(z, onehot))
        kl = 0.5 * (q.loc.pow(2) + q.logvar.exp() - 1.0 - q.logvar).sum(-1)
        return rec.reshape(self.classes, -1), kl.reshape(self.classes, -1)

    # -- the protocol -------------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor, y: Any = None) -> Distribution:
        """q(y, z | x) over codes [one-hot y, z]: batch (N,), event (C + d,)."""
        self.conditioning(y)
        x = self.as_data(x)
        n = x.shape[0]
        x_all, onehot = self._every_class(x)
        params = self.encoder(x_all, onehot).reshape(self.classes, n, -1).transpose(0, 1)  # (N, C, 2d)
        logvar = params[..., self.latent :].clamp(min=self.min_logvar)
        return ClassGaussian(self.class_log_probs(x), params[..., : self.latent], logvar)

    def prior_distribution(self) -> Distribution:
        """p(y) p(z): the uniform class and N(0, I)."""
        a = self._anchor()
        zeros = torch.zeros(self.classes, self.latent, dtype=a.dtype, device=a.device)
        return ClassGaussian(torch.zeros(self.classes, dtype=a.dtype, device=a.device), zeros, zeros)

    def decode(self, z: torch.Tensor, y: Any = None) -> torch.Tensor:
        """The likelihood's parameters for codes [one-hot y, z] (..., C + d): (..., *param_shape)."""
        self.conditioning(y)
        if z.shape[-1] != self.latent_size:
            raise ShapeError(f"codes of this M2 model are [one-hot y, z] of {self.latent_size} values "
                             f"({self.classes} classes + {self.latent}); got a batch of shape {tuple(z.shape)}")
        lead, flat = z.shape[:-1], z.reshape(-1, z.shape[-1])
        out = self.decoder(flat[:, self.classes :], flat[:, : self.classes])
        return out.reshape(*lead, *self.likelihood.param_shape)

    def inference_parameters(self) -> list[torch.nn.Parameter]:
        """The classifier's and the encoder's parameters (q(y|x) and q(z|x, y))."""
        return list(self.classifier.parameters()) + list(self.encoder.parameters())

    # -- the labels kept --------------------------------------------------------------------------
    def carve_labels(self, train_labels: torch.Tensor, seed: int) -> torch.Tensor:
        """Choose the ``labels`` training examples whose labels are kept: class-balanced, drawn with ``seed``
        (:func:`vaekit.data.base.subset_indices`); stored in ``labelled_indices``. Returns them (sorted)."""
        from vaekit.data.base import subset_indices

        y = self._check_labels(train_labels)
        if self.labels > y.shape[0]:
            raise DataError(f"labels {self.labels} is more than the {y.shape[0]} training examples; keep at most "
                            f"{y.shape[0]}")
        index = torch.from_numpy(np.asarray(subset_indices(y.cpu().numpy(), self.labels, seed), dtype=np.int64))
        self.labelled_indices.copy_(index.to(self.labelled_indices.device))
        return index

    def masked_labels(self, train_labels: torch.Tensor) -> torch.Tensor:
        """The training labels with every one not kept replaced by -1 (unlabelled), from ``labelled_indices``."""
        y = self._check_labels(train_labels)
        index = self.labelled_indices.to(y.device)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= y.shape[0]
                              or torch.unique(index).numel() != index.numel()):
            raise DataError(f"the kept label indices do not fit these {y.shape[0]} training examples; train on the "
                            "data set the run was started with")
        out = torch.full_like(y, -1)
        out[index] = y[index]
        return out

    def _check_labels(self, y: torch.Tensor) -> torch.Tensor:
        y = torch.as_tensor(y).long().reshape(-1)
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.classes):
            raise DataError(f"the labels must be classes 0..{self.classes - 1}; got values from {int(y.min())} to "
                            f"{int(y.max())}")
        return y

    # -- persistence --------------------------------------------------------------------------------
    def own_description(self) -> dict[str, Any]:
        """The settings of ``model.json`` (after its format and kind)."""
        return {"shape": list(self.shape), "classes": self.classes, "latent": self.latent, "labels": self.labels,
                "network": dict(self.network), "likelihood": self.likelihood.config(), "prior": dict(PRIOR),
                "min_logvar": self.min_logvar}

    @staticmethod
    def check_spec(spec: dict[str, Any]) -> dict[str, Any]:
        """Validate a description read from a file (the keys and values :meth:`describe` writes); ValueError."""
        from vaekit.components import kinds
        from vaekit.models.persistence import _count, _counts, _network

        unknown, missing = sorted(set(spec) - SPEC_KEYS), sorted(SPEC_KEYS - set(spec))
        if unknown or missing:
            raise ValueError(f"unknown settings {unknown[:3]}" if unknown else f"missing settings {missing[:3]}")
        shape = _counts(spec["shape"], "shape")
        if len(shape) not in (1, 3) or math.prod(shape) > MAX_PIXELS:
            raise ValueError(f"shape must be (C, H, W) (or (D,)) of at most {MAX_PIXELS} values, got {shape}")
        _count(spec["classes"], "classes", 2, MAX_CLASSES)
        _count(spec["latent"], "latent")
        M2Config(labels=_count(spec["labels"], "labels", 1, 2**31))
        _network(spec["network"], "network")
        check_min_logvar(spec["min_logvar"])
        if spec["prior"] != PRIOR:
            raise ValueError(f"the prior of an M2 model is {PRIOR}, got {spec['prior']!r}")
        if not isinstance(spec["likelihood"], dict):
            raise ValueError("the likelihood must be a table with a name")
        spec["likelihood"] = kinds()["likelihood"].spec(spec["likelihood"])
        return spec

    @staticmethod
    def spec_parameters(spec: dict[str, Any]) -> int:
        """About how many parameters a description implies (checked before anything is built)."""
        lik = spec["likelihood"]
        per_pixel = max([2, int(lik.get("levels", 0)), int(lik.get("params", 0)), 10 * int(lik.get("mixtures", 0))])
        return _parameters(spec["shape"], int(spec["classes"]), int(spec["latent"]), spec["network"], per_pixel)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> M2:
        net = spec["network"]
        hidden = net["hidden"] if net["name"] == "mlp" else [net["hidden"]]
        return cls(tuple(spec["shape"]), int(spec["classes"]), int(spec["latent"]), labels=int(spec["labels"]),
                   arch=net["name"], hidden=hidden, activation=net["activation"],
                   conv_channels=net.get("channels", (32, 64)), likelihood=spec["likelihood"],
                   min_logvar=spec["min_logvar"])

    def extra_repr(self) -> str:
        return f"shape={list(self.shape)}, classes={self.classes}, latent={self.latent}, labels={self.labels}"


@dataclass
class M2Config:
    labels: int = 100  # N: training labels kept (class-balanced, drawn with the run's seed); the rest unlabelled

    def __post_init__(self) -> None:
        if isinstance(self.labels, bool) or not isinstance(self.labels, int) or self.labels < 1:
            raise ValueError(f"labels must be a whole number >= 1 (the training labels kept), got {self.labels!r}")


@FAMILIES.register("m2", M2Config, prefix="m2", flags={"labels": "labels"},
                   help="semi-supervised M2 (Kingma et al. 2014): a latent class y, summed out where unlabelled, "
                   "and a Gaussian z; --labels N keeps N training labels")
class M2Family(Family):
    """Builds an :class:`M2` of the settings' networks, latent size and likelihood for data with labels (the
    number of classes is the data's)."""

    #: The family needs the data's labels: ``build``'s ``condition`` is then the data's number of classes.
    needs_labels = True

    def __init__(self, **settings: Any):
        self.settings = M2Config(**settings)

    def check(self, cfg: Any) -> None:
        wrong = [f"{key} {getattr(cfg, key)!r}" for key, ok in (
            ("levels", 1), ("posterior", "gaussian"), ("prior", "standard"), ("k", 1), ("beta", 1.0), ("warmup", 0),
            ("estimator", None), ("conditional", False)) if getattr(cfg, key) != ok]
        if cfg.objective not in ("elbo", "m2"):
            wrong.append(f"objective {cfg.objective}")
        if wrong:
            raise ConfigError(f"family m2 is a latent class and a Gaussian z trained by its own objective (m2); "
                              f"leave out {', '.join(wrong)}")

    def build(self, cfg: Any, shape: tuple[int, ...], likelihood: dict[str, Any],
              condition: int = 0) -> LatentVariableModel:
        if condition < 2:
            raise DataError(f"family m2 needs labels of at least 2 classes; {cfg.dataset} has {condition}")
        posterior = cfg.component("posterior")
        return M2(shape, condition, cfg.latent, labels=self.settings.labels, arch=cfg.model, hidden=cfg.hidden,
                  activation=cfg.activation, conv_channels=cfg.conv_channels, likelihood=likelihood,
                  min_logvar=float(posterior.get("min_logvar", -12.0)))
