"""Whether data given in Python lie where the model's likelihood p(x|z) puts its probability: the check that
:func:`vaekit.fit` and :func:`vaekit.evaluate` make on their data, as ``vaekit train`` makes it on a data set
(:func:`vaekit.training.build.check_likelihood_data`), the fix said in Python terms.

By the likelihood's ``levels`` (2: binary pixels; L: grey levels x = k / (L - 1); None: a density):

* the likelihoods of values in [0, 1] (:func:`unit_interval`: of pixel values, the continuous Bernoulli, the Gaussian
  with its mean squashed into (0, 1)) need them there: 0..255 pixel values, negative values or values above 1 are
  refused; densities on the real line (the Gaussian with ``mean = "identity"``, the Student-t) take any value;
* L = 2 (Bernoulli, PixelCNN): training needs binary values, 0 or 1 (on grey targets the Bernoulli's log p(x|z) is a
  cross-entropy, not a log-likelihood); an evaluation of grey values reports that cross-entropy, named as such;
* L > 2 (discretized logistic, its mixture, the L-way categorical): every value on the grid k / (L - 1).
"""

from __future__ import annotations

from typing import Any

import torch

from vaekit.errors import DataError
from vaekit.objectives.figures import _is_binary, on_grid

#: What a refused message offers instead: likelihoods of grey values in [0, 1], and densities on the real line.
GREY = "likelihood='gaussian', 'continuous-bernoulli', or {'name': 'discretized-logistic', 'levels': 256}"
_BINARIZE = "torch.bernoulli({what}) draws each pixel, ({what} > 0.5).float() thresholds"
REAL = "likelihood={'name': 'gaussian', 'mean': 'identity'} or 'student-t'"


def unit_interval(likelihood: Any) -> bool:
    """Whether ``likelihood`` is for values in [0, 1]: a probability of pixel values (``levels`` set), the continuous
    Bernoulli, or the Gaussian with its mean squashed into (0, 1) (``mean = "sigmoid"``). Other densities (the
    Gaussian with ``mean = "identity"``, the Student-t, a likelihood of your own) take any real value."""
    return getattr(likelihood, "levels", None) is not None or getattr(likelihood, "name", "") == \
        "continuous-bernoulli" or getattr(likelihood, "mean_map", None) == "sigmoid"


def check_support(model: Any, x: torch.Tensor, what: str, *, training: bool = True, binary: bool | None = None,
                  levels: int | None = None, binarize: str | None = None) -> None:
    """Refuse, in one :class:`~vaekit.errors.DataError` naming the argument ``what``, data ``x`` outside the support
    of ``model``'s likelihood (the module docstring has the rules). ``binary``, ``levels``: what a data set says
    of its values (a dynamically binarized set is binary though its stored values are grey), else read from x;
    ``binarize``: how to binarize it, said when grey values are refused. A model without a ``likelihood`` is
    not checked."""
    lik = getattr(model, "likelihood", None)
    if lik is None or x.numel() == 0:
        return
    name = getattr(lik, "name", "") or type(lik).__name__
    want = getattr(lik, "levels", None)
    if unit_interval(lik):
        low, high = float(x.min()), float(x.max())
        if low < 0 or high > 1:
            lives = ("models binary pixels, 0 or 1" if want == 2 else
                     f"models grey levels k / {want - 1} in [0, 1]" if want else
                     "has its mean in (0, 1) (mean 'sigmoid')" if getattr(lik, "mean_map", None) == "sigmoid" else
                     "is a density on [0, 1]")
            then = f", then torch.bernoulli({what}) for binary pixels" if want == 2 else ""
            raise DataError(f"{what} holds values from {low:.4g} to {high:.4g}, outside [0, 1], where the model's "
                            f"{name} likelihood {lives}; scale them into [0, 1] ({what} / 255 for 8-bit pixel "
                            f"values{then}), or build the model with a density on the real line: {REAL}")
    if want == 2:
        if training and not (binary if binary is not None else _is_binary(x)):
            how = binarize or _BINARIZE.format(what=what)
            raise DataError(f"{what} has grey values (between 0 and 1) but the model's {name} likelihood models "
                            f"binary pixels, 0 or 1; binarize them ({how}), or build the model with a likelihood of "
                            f"grey values: {GREY}")
    elif want is not None and ((levels is not None and levels != want) or not on_grid(x, int(want))):
        have = f"{levels} grey levels" if levels is not None else "values off that grid"
        raise DataError(f"the model's {name} likelihood is a probability of {want} grey levels (x = k / {want - 1}) "
                        f"but {what} has {have}; give values k / {want - 1}, or build the likelihood for the data's "
                        f"levels ({{'name': {name!r}, 'levels': L}}) or a density ({GREY.split(',')[0]})")
