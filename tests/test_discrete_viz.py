"""Pictures and clustering for discrete latents: category panels, cluster means, prior samples, clustering
accuracy (Hungarian and many-to-one), and the report and ``vaekit sample`` of categorical, binary and
Gaussian-mixture runs."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from cli_run import run_cli
from synthetic import prototype_dataset
from vaekit.analysis.clustering import (
    cluster_assignments,
    cluster_count,
    clustering_accuracy,
    clustering_report,
    contingency_table,
)
from vaekit.config import from_dict
from vaekit.data.base import subset_indices
from vaekit.errors import VaekitError
from vaekit.models import VAE
from vaekit.pages import viz
from vaekit.pages.report import write_report
from vaekit.train import train

pytestmark = pytest.mark.usefixtures("single_thread")

SHAPE = (1, 8, 8)


def _categorical(groups: int, classes: int) -> VAE:
    torch.manual_seed(0)
    return VAE(latent=groups, shape=SHAPE, posterior={"name": "categorical", "classes": classes}, hidden=[16])


class _Fixed(nn.Module):
    """An encoder that hands the flat input, times ``scale``, plus ``extra`` constant columns to the posterior."""

    def __init__(self, scale: float = 1.0, extra: list[float] | None = None):
        super().__init__()
        self.scale, self.extra = scale, extra or []
        self.dummy = nn.Parameter(torch.zeros(()))  # the model needs a parameter to find its device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1) * self.scale
        cols = [flat] + [torch.full_like(flat, v) for v in self.extra]
        return torch.cat(cols, 1) + 0 * self.dummy


# -- clustering accuracy ---------------------------------------------------------------------------


def test_a_relabelling_of_the_labels_is_a_perfect_clustering():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(5, (200,), generator=g)
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert clustering_accuracy(perm[labels], labels) == 1.0
    assert clustering_accuracy(perm[labels], labels, "many-to-one") == 1.0
    # labels need not be 0..J-1
    assert clustering_accuracy(perm[labels], labels * 10 + 7) == 1.0


def _from_table(table: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Assignments and labels whose contingency table (clusters x labels) is ``table``."""
    a, y = [], []
    for c, row in enumerate(table):
        for j, count in enumerate(row):
            a += [c] * count
            y += [j] * count
    return np.array(a), np.array(y)


def test_known_confusion_tables():
    # Hungarian: c0 -> 1, c1 -> 0 gives 3 + 4 = 7 of 11; many-to-one sends both clusters to label 0: 8 of 11
    a, y = _from_table([[4, 3], [4, 0]])
    table, classes = contingency_table(a, y)
    assert table.tolist() == [[4, 3], [4, 0]] and classes.tolist() == [0, 1]
    assert clustering_accuracy(a, y) == pytest.approx(7 / 11)
    assert clustering_accuracy(a, y, "many-to-one") == pytest.approx(8 / 11)
    # three clusters, two labels: one cluster stays unmatched in the Hungarian matching
    a, y = _from_table([[10, 0], [0, 6], [3, 1]])
    assert clustering_accuracy(a, y) == pytest.approx(16 / 20)
    assert clustering_accuracy(a, y, "many-to-one") == pytest.approx(19 / 20)
    # a 3 x 3 table where the greedy row-by-row choice (c0 -> 0) is not the best matching
    a, y = _from_table([[5, 4, 0], [5, 0, 0], [0, 0, 6]])
    assert clustering_accuracy(a, y) == pytest.approx((4 + 5 + 6) / 20)  # greedy: (5 + 0 + 6) / 20
    with pytest.raises(VaekitError, match="unknown matching"):
        clustering_accuracy(a, y, "greedy")
    with pytest.raises(VaekitError, match="labels"):
        clustering_accuracy(a[:-1], y)


# -- cluster assignments ---------------------------------------------------------------------------


def test_the_categorical_cluster_is_the_argmax_of_q():
    model = VAE(_Fixed(10.0), latent=1, shape=(1, 1, 3), posterior={"name": "categorical", "classes": 3},
                hidden=[4])
    x = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 0.7], [0.1, 0.8, 0.3], [0.6, 0.0, 0.5]]).reshape(4, 1, 1, 3)
    assert cluster_count(model) == 3
    assert cluster_assignments(model, x).tolist() == [0, 2, 1, 0]
    rep = clustering_report(model, x, torch.tensor([5, 7, 6, 5]))
    assert rep["accuracy"] == 1.0 and rep["matching"] == "hungarian" and rep["cluster_sizes"] == [2, 1, 1]
    assert rep["mapping"] == {0: 5, 1: 6, 2: 7} and rep["clusters_used"] == 3


def test_the_mixture_cluster_is_the_argmax_of_p_c_given_z():
    # q(z|x) = N(x, e^-12): the posterior mean is the input itself
    model = VAE(_Fixed(1.0, [-12.0]), latent=2, shape=(1, 1, 2), prior={"name": "mixture", "clusters": 3},
                hidden=[4])
    with torch.no_grad():
        model.prior.loc.copy_(torch.tensor([[-4.0, 0.0], [4.0, 0.0], [0.0, 4.0]]))
        model.prior.logvar.zero_()
        model.prior.logits.copy_(torch.tensor([0.0, 3.0, 0.0]))  # pi_1 = e^3 pi_0
    x = torch.tensor([[-4.0, 0.5], [3.5, -0.2], [0.3, 4.2], [-0.2, 0.0]]).reshape(4, 1, 1, 2)
    # the last point is nearer m_0 than m_1, but log p(c=1, z) - log p(c=0, z) = 3 - (4.2^2 - 3.8^2) / 2 = 1.4
    # > 0: the weight pi_1 wins (nearest-mean assignment would say c = 0)
    assert cluster_count(model) == 3
    assert cluster_assignments(model, x).tolist() == [0, 1, 2, 1]
    # with e^-12 posterior variance, averaging p(c|z) over draws z ~ q gives the same clusters
    g = torch.Generator().manual_seed(0)
    assert cluster_assignments(model, x, samples=8, generator=g).tolist() == [0, 1, 2, 1]


def test_models_without_a_cluster_variable():
    for model in (_categorical(2, 3), VAE(latent=2, shape=SHAPE, hidden=[8]),
                  VAE(latent=2, shape=SHAPE, hidden=[8], posterior="bernoulli"),
                  VAE(latent=2, shape=SHAPE, hidden=[8], prior={"name": "vamp", "components": 5})):
        assert cluster_count(model) is None
        with pytest.raises(VaekitError, match="no cluster variable"):
            cluster_assignments(model, torch.zeros(3, *SHAPE))


def test_the_mixture_of_bernoullis_clusters_by_its_exact_posterior():
    mixture = pytest.importorskip("vaekit.models.mixture")
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 64, generator=g).mul(0.9).add(0.05)
    model = mixture.BernoulliMixture.from_probabilities(torch.tensor([0.2, 0.3, 0.5]), probs, SHAPE)
    assert cluster_count(model) == 3
    z = torch.randint(3, (300,), generator=g)
    x = torch.bernoulli(probs[z], generator=g).reshape(300, *SHAPE)
    # the assignment is the Bayes classifier argmax_k [log pi_k + sum_d log Bern(x_d; mu_kd)], written out here
    flat = x.reshape(300, 1, 64)
    log_joint = torch.log(torch.tensor([0.2, 0.3, 0.5])) + (flat * probs.log() + (1 - flat) * (-probs).log1p()).sum(-1)
    bayes = log_joint.argmax(-1)
    assign = cluster_assignments(model, x)
    assert torch.equal(assign, bayes)
    right = (bayes == z).float().mean().item()
    assert right > 0.9  # so the identity is the best matching, and the accuracy is the Bayes classifier's
    assert clustering_accuracy(assign, z) == pytest.approx(right)
    # its category panel is the components' pixel probabilities
    images = viz.category_images(model)
    assert images.shape == (1, 3, *SHAPE)
    torch.testing.assert_close(images[0].reshape(3, -1), probs)


# -- pictures --------------------------------------------------------------------------------------


def test_category_panels_have_k_images_per_group():
    model = _categorical(3, 4)
    images = viz.category_images(model)
    assert images.shape == (3, 4, *SHAPE)
    assert viz.category_images(model, groups=[2]).shape == (1, 4, *SHAPE)
    # the panel decodes the base code with one group replaced: group 1 at class 2 is the base with that class
    base = torch.zeros(12)
    base[[0, 5, 8]] = 1.0  # classes (0, 1, 0)
    images = viz.category_images(model, base=base)
    z = base.clone()
    z[4:8] = torch.tensor([0.0, 0.0, 1.0, 0.0])
    torch.testing.assert_close(images[1, 2], viz.decode_means(model, z[None])[0])
    torch.testing.assert_close(images[0, 0], images[2, 0])  # both are the base code itself
    torch.manual_seed(0)
    binary = VAE(latent=5, shape=SHAPE, posterior="bernoulli", hidden=[16])
    assert viz.category_images(binary).shape == (5, 2, *SHAPE)
    wide = _categorical(12, 3)
    assert viz.category_images(wide).shape == (viz.MAX_GROUPS, 3, *SHAPE)
    with pytest.raises(ValueError, match="groups"):
        viz.category_images(model, groups=[3])
    with pytest.raises(ValueError, match="discrete"):
        viz.category_images(VAE(latent=2, shape=SHAPE, hidden=[8]))
    for m in (model, binary, _categorical(1, 20)):
        assert viz.figure_png(viz.category_figure(m))[:4] == b"\x89PNG"


def test_cluster_means_are_the_decoded_component_means():
    torch.manual_seed(0)
    model = VAE(latent=2, shape=SHAPE, prior={"name": "mixture", "clusters": 5}, hidden=[16])
    images = viz.cluster_mean_images(model)
    assert images.shape == (5, 1, *SHAPE)
    torch.testing.assert_close(images[:, 0], viz.decode_means(model, model.prior.loc.detach()))
    assert viz.cluster_mean_images(model, draws=3).shape == (5, 4, *SHAPE)
    for fig in (viz.cluster_means_figure(model), viz.cluster_means_figure(model, 3),
                viz.contingency_figure([[3, 0], [1, 4]], ["a", "b"])):
        assert viz.figure_png(fig)[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="mixture"):
        viz.cluster_mean_images(_categorical(1, 3))


def test_prior_samples_of_discrete_and_mixture_priors():
    gen = torch.Generator().manual_seed(0)
    z = _categorical(3, 4).sample(50, generator=gen).z
    assert z.shape == (50, 12) and set(z.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(z.reshape(50, 3, 4).sum(-1), torch.ones(50, 3))  # one class per group
    torch.manual_seed(0)
    s = VAE(latent=6, shape=SHAPE, posterior="bernoulli", hidden=[8]).sample(50, generator=gen)
    assert s.z.shape == (50, 6) and set(s.z.unique().tolist()) == {0.0, 1.0}
    assert s.means.shape == (50, *SHAPE)
    s = VAE(latent=2, shape=SHAPE, prior={"name": "mixture", "clusters": 3}, hidden=[8]).sample(50, generator=gen)
    assert s.z.shape == (50, 2) and torch.isfinite(s.z).all()


def test_continuous_pictures_refuse_discrete_codes():
    model = _categorical(2, 3)
    x = torch.rand(4, *SHAPE)
    for make in (lambda: viz.traversals_figure(model, [0]), lambda: viz.interpolations_figure(model, x, 2, 3),
                 lambda: viz.manifold_figure(_categorical(1, 2))):
        with pytest.raises(ValueError, match="continuous latent space"):
            make()
    # reconstructions decode the most probable code: one class per group, not the class probabilities
    code = viz.mode_code(model, x)
    assert torch.equal(code.reshape(4, 2, 3).sum(-1), torch.ones(4, 2))
    assert viz.figure_png(viz.reconstructions_figure(model, x, 4))[:4] == b"\x89PNG"


# -- runs: the report and vaekit sample ------------------------------------------------------------


@pytest.fixture(scope="module")
def ds():
    return prototype_dataset(120, 40, 40)


def _train(tmp_path_factory, ds, name: str, **settings) -> object:
    run = tmp_path_factory.mktemp(name) / "run"
    cfg = from_dict({"dataset": "synthetic", "hidden": [16], "epochs": 2, "batch_size": 40, "device": "cpu",
                     **settings})
    train(cfg, run, dataset=ds, progress=False)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ds):
    return {"categorical": _train(tmp_path_factory, ds, "cat", posterior="categorical", latent=1, classes=4),
            "bernoulli": _train(tmp_path_factory, ds, "bern", posterior="bernoulli", latent=2),
            "gmvae": _train(tmp_path_factory, ds, "gm", latent=2, prior="mixture", clusters=4)}


def _sections(page: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", page)


def test_reports_of_discrete_runs(runs, ds):
    pages = {name: write_report(run, k=5, dataset=ds, limit=20).read_text() for name, run in runs.items()}
    for name, page in pages.items():
        heads = _sections(page)
        assert "Samples from the prior" in heads and "Training curves" in heads, name
        assert "Latent traversals" not in heads or name == "gmvae", name
    cat, bern, gm = pages["categorical"], pages["bernoulli"], pages["gmvae"]
    assert "Categories" in _sections(cat) and "Clusters" in _sections(cat) and "1 x 4-way categorical" in cat
    assert "Categories" in _sections(bern) and "Clusters" not in _sections(bern)
    assert "The 2-D latent space" not in _sections(bern)  # 2 binary units: no manifold over Gaussian quantiles
    assert "left out for discrete codes" in bern and "Left out: straight lines" in bern
    assert "Clusters" in _sections(gm) and "The 2-D latent space" in _sections(gm) and "cluster means" in gm
    # the accuracy on the page is the one clustering_report computes for the evaluated test subset (--limit 20:
    # the class-balanced subset drawn with the seed)
    model = VAE.load(runs["gmvae"]).eval()
    idx = subset_indices(ds.test_labels, 20, seed=0)
    rep = clustering_report(model, ds.test[idx], ds.test_labels[idx])
    assert f"{rep['hungarian_accuracy']:.4f}" in gm and f"{rep['clusters_used']} of 4" in gm


def test_vaekit_sample_on_discrete_runs(runs, tmp_path, capsys):
    for name, run in runs.items():
        out = tmp_path / f"{name}.png"
        code, printed, err = run_cli(["sample", str(run), "-n", "9", "--out", str(out)], capsys)
        assert code == 0, err
        assert printed.strip() == str(out) and out.read_bytes()[:4] == b"\x89PNG"
