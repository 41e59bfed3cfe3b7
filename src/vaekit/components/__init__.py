"""Components of latent-variable models, each registered by name: posteriors q(z|x), priors p(z) and
likelihoods p(x|z) (:mod:`vaekit.components.base` states their contracts)."""

from vaekit.components import discrete as discrete
from vaekit.components import flows as flows
from vaekit.components import likelihoods as likelihoods
from vaekit.components import pixelcnn as pixelcnn
from vaekit.components import posteriors as posteriors
from vaekit.components import priors as priors
from vaekit.components.base import LIKELIHOODS, POSTERIORS, PRIORS, Likelihood, Posterior, Prior, kinds
from vaekit.components.discrete import (
    BernoulliPosterior,
    BernoulliPrior,
    CategoricalPosterior,
    CategoricalPrior,
    GaussianMixturePrior,
)
from vaekit.components.flows import IAFPosterior, PlanarPosterior
from vaekit.components.likelihoods import (
    BernoulliLikelihood,
    CategoricalPixelLikelihood,
    ContinuousBernoulliLikelihood,
    DiscretizedLogisticLikelihood,
    GaussianLikelihood,
    MixtureLogisticsLikelihood,
)
from vaekit.components.pixelcnn import PixelCNNLikelihood
from vaekit.components.posteriors import GaussianPosterior
from vaekit.components.priors import StandardNormalPrior, VampPrior

__all__ = ["LIKELIHOODS", "POSTERIORS", "PRIORS", "BernoulliLikelihood", "BernoulliPosterior", "BernoulliPrior",
           "CategoricalPixelLikelihood", "CategoricalPosterior", "CategoricalPrior", "ContinuousBernoulliLikelihood",
           "DiscretizedLogisticLikelihood", "GaussianMixturePrior", "GaussianLikelihood", "GaussianPosterior",
           "IAFPosterior", "Likelihood", "MixtureLogisticsLikelihood", "PixelCNNLikelihood",
           "PlanarPosterior", "Posterior", "Prior", "StandardNormalPrior", "VampPrior", "kinds"]
