"""The cluster variable of a mixture model, and how well its clusters match the data's labels.

A model has a cluster variable c when its latent space is one K-way choice:

* a categorical VAE with one group (G = 1), and the mixture of Bernoullis: c = argmax_k q(z = k | x)
  (for the mixture of Bernoullis q(z|x) is the exact p(z|x));
* the Gaussian-mixture VAE (prior ``mixture``): c = argmax_c p(c | z) at z = the posterior mean mu(x)
  (``samples=0``, the default), or argmax_c E_q[p(c | z)] estimated with ``samples`` draws z ~ q(z|x);
  p(c | z) = pi_c N(z; m_c, v_c) / sum_c' pi_c' N(z; m_c', v_c').

Clustering accuracy compares the assignments with the labels through the contingency table
T[c, y] = #{i : c_i = c, y_i = y}:

* ``hungarian``: the best one-to-one matching of clusters to labels, max_pi sum_c T[c, pi(c)] / N, found by
  ``scipy.optimize.linear_sum_assignment``; with more clusters than labels the unmatched clusters count as wrong;
* ``many-to-one``: every cluster takes its majority label, sum_c max_y T[c, y] / N (the usual rule when there
  are more clusters than classes; it can only be higher than the Hungarian figure).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaekit.errors import DataError, VaekitError

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: The matching rules of :func:`clustering_accuracy`.
MATCHINGS = ("hungarian", "many-to-one")

_CHUNK = 1000  # examples per forward pass


def is_gaussian_mixture(model: LatentVariableModel) -> bool:
    """Whether the model has the Gaussian-mixture prior (the Gaussian-mixture VAE)."""
    from vaekit.components.discrete import GaussianMixturePrior

    return isinstance(getattr(model, "prior", None), GaussianMixturePrior)


def cluster_count(model: LatentVariableModel) -> int | None:
    """The number of values of the model's cluster variable, or None when it has none."""
    if is_gaussian_mixture(model):
        return int(model.prior.clusters)
    from vaekit.distributions import FactorizedCategorical

    try:
        prior = model.prior_distribution()
    except (NotImplementedError, VaekitError, AttributeError):
        return None
    if isinstance(prior, FactorizedCategorical) and prior.groups == 1:
        return int(prior.classes)
    return None


def _no_clusters(model: LatentVariableModel) -> VaekitError:
    return VaekitError(f"this model ({type(model).__name__}) has no cluster variable: clusters come from a "
                       "categorical latent with one group (--latent 1), a mixture of Bernoullis, or the "
                       "Gaussian-mixture prior (--prior mixture)")


@torch.inference_mode()
def cluster_probabilities(model: LatentVariableModel, x: torch.Tensor, y: Any = None, samples: int = 0,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, C) probabilities of the cluster variable for each example (see the module docstring); CPU float."""
    from vaekit import distributions as vd
    from vaekit.distributions import FactorizedCategorical

    count = cluster_count(model)
    if count is None:
        raise _no_clusters(model)
    mixture = is_gaussian_mixture(model)
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    out = []
    for start in range(0, len(x), _CHUNK):
        xb = x[start:start + _CHUNK].to(device=device, dtype=dtype)
        yb = None if y is None else torch.as_tensor(y)[start:start + _CHUNK].to(device)
        q = model.posterior(xb, yb) if yb is not None else model.posterior(xb)
        if not mixture:
            if not isinstance(q, FactorizedCategorical) or q.groups != 1:
                raise _no_clusters(model)
            out.append(q.probs[..., 0, :].float().cpu())
            continue
        p = model.prior_distribution()
        if samples > 0:
            shape = (int(samples),)
            z = vd.rsample(q, shape, generator) if q.has_rsample else vd.sample(q, shape, generator)
            out.append(p.cluster_posterior(z).mean(0).float().cpu())
        else:
            out.append(p.cluster_posterior(vd.point(q)).float().cpu())
    if not out:
        return torch.zeros(0, count)
    return torch.cat(out)


def cluster_assignments(model: LatentVariableModel, x: torch.Tensor, y: Any = None, samples: int = 0,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """(N,) int64: the most probable value of the cluster variable for each example (module docstring).

    Raises :class:`~vaekit.errors.VaekitError` for a model with no cluster variable (:func:`cluster_count`
    is None)."""
    return cluster_probabilities(model, x, y, samples, generator).argmax(-1)


def _as_int_array(values: Any, what: str) -> np.ndarray:
    arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    arr = arr.reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError(f"the {what} must be whole numbers")
        arr = arr.astype(np.int64)
    return arr.astype(np.int64)


def contingency_table(assignments: Any, labels: Any, clusters: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(T, classes): T[c, j] counts the examples in cluster c whose label is classes[j]; T is (C, J) with
    C = max(``clusters``, 1 + the largest assignment) and classes the sorted distinct labels."""
    a = _as_int_array(assignments, "cluster assignments")
    y = _as_int_array(labels, "labels")
    if a.shape != y.shape:
        raise DataError(f"{a.size} cluster assignments but {y.size} labels")
    if a.size and a.min() < 0:
        raise DataError("cluster assignments must be >= 0")
    classes, yi = np.unique(y, return_inverse=True)
    c = max(int(clusters or 0), int(a.max()) + 1 if a.size else 0)
    table = np.zeros((c, len(classes)), dtype=np.int64)
    np.add.at(table, (a, yi.reshape(-1)), 1)
    return table, classes


def match_clusters(table: np.ndarray, matching: str = "hungarian") -> dict[int, int]:
    """The label column given to each cluster row of a contingency table (unmatched clusters left out)."""
    if matching == "hungarian":
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(table, maximize=True)
        return {int(r): int(c) for r, c in zip(rows, cols)}
    if matching == "many-to-one":
        return {int(r): int(np.argmax(table[r])) for r in range(table.shape[0]) if table[r].sum() > 0}
    raise VaekitError(f"unknown matching {matching!r}; choose one of {', '.join(MATCHINGS)}")


def _accuracy(table: np.ndarray, matching: str) -> tuple[float, dict[int, int]]:
    n = int(table.sum())
    if n == 0:
        raise DataError("no examples to compare")
    mapping = match_clusters(table, matching)
    return float(sum(table[r, c] for r, c in mapping.items()) / n), mapping


def clustering_accuracy(assignments: Any, labels: Any, matching: str = "hungarian") -> float:
    """The fraction of examples whose cluster is matched to their label, in [0, 1] (module docstring)."""
    table, _ = contingency_table(assignments, labels)
    return _accuracy(table, matching)[0]


def clustering_report(model: LatentVariableModel, x: torch.Tensor, labels: Any, y: Any = None, samples: int = 0,
                      generator: torch.Generator | None = None) -> dict[str, Any]:
    """The clusters of ``model`` on ``x`` against ``labels``, as a JSON-ready dict:

    ``accuracy`` and ``matching`` (Hungarian when the model has at most as many clusters as there are labels,
    else many-to-one), both ``hungarian_accuracy`` and ``many_to_one_accuracy``, ``clusters`` (the model's C),
    ``clusters_used`` (non-empty), ``classes``, ``n``, ``cluster_sizes`` (C counts), ``mapping`` (cluster ->
    label under the named matching) and ``rule`` (how clusters were assigned). ``y`` conditions a conditional
    model. Raises VaekitError when the model has no cluster variable."""
    count = cluster_count(model)
    if count is None:
        raise _no_clusters(model)
    assign = cluster_assignments(model, x, y, samples, generator)
    table, classes = contingency_table(assign, labels, count)
    hungarian, h_map = _accuracy(table, "hungarian")
    many, m_map = _accuracy(table, "many-to-one")
    matching = "hungarian" if count <= len(classes) else "many-to-one"
    mapping = h_map if matching == "hungarian" else m_map
    if is_gaussian_mixture(model):
        rule = f"argmax_c E_q[p(c|z)], {samples} draws" if samples > 0 else "argmax_c p(c | z = mean of q(z|x))"
    else:
        rule = "argmax_k q(z = k | x)"
    sizes = table.sum(1)
    return {"accuracy": hungarian if matching == "hungarian" else many, "matching": matching,
            "hungarian_accuracy": hungarian, "many_to_one_accuracy": many, "clusters": count,
            "clusters_used": int((sizes > 0).sum()), "classes": len(classes), "n": int(table.sum()),
            "cluster_sizes": [int(s) for s in sizes],
            "mapping": {int(c): _plain(classes[j]) for c, j in sorted(mapping.items())}, "rule": rule,
            "table": table.tolist(), "labels": [_plain(v) for v in classes]}


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v
