"""The Python API checks what the command line checks: each misuse of ``vaekit.fit``, ``vaekit.evaluate``, the model
constructors, ``vaekit.load`` and ``vaekit.load_dataset`` is one vaekit error (a ``VaekitError``, a ``ValueError`` or
``TypeError`` subclass of it) naming the Python argument, raised at the call, before a run folder is written; errors
raised inside a Python call name its arguments (``out=``, ``resume=True``, ``estimator=``), not command-line flags.
Also: torch Datasets and DataLoaders are taken, ``dir(vaekit)`` lists the API and ``print(result)`` reads like the
command line's output."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import vaekit
from vaekit.errors import ArgumentError, ConfigError, DataError, VaekitError, option, python_call, switch
from vaekit.evaluation import format_table

SHAPE = (1, 4, 4)


def _binary(n: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, *SHAPE), 0.5), generator=torch.Generator().manual_seed(seed))


def _model(**kw) -> vaekit.VAE:
    torch.manual_seed(0)
    return vaekit.VAE(latent=2, shape=SHAPE, hidden=[8], **kw)


def _refused(error: type[Exception], needles: tuple[str, ...], call) -> VaekitError:
    """``call()`` raises ``error`` (a vaekit error) whose one-line message holds every needle."""
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, VaekitError), type(info.value).__mro__
    message = str(info.value)
    assert "\n" not in message and all(n in message for n in needles), message
    return info.value


class _Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter(_binary())


x = _binary()
grey = torch.rand(20, *SHAPE, generator=torch.Generator().manual_seed(1))
labels = torch.arange(20) % 2

#: fit(model, train, ...) with data a Bernoulli (or the named) likelihood cannot take: (train, needles, model kw).
FIT_DATA = {
    "values above 1": (x * 3, ("train", "outside [0, 1]", "train / 255"), {}),
    "uint8 0/255": ((x * 255).to(torch.uint8), ("train", "0 to 255", "train / 255"), {}),
    "int64 0..255": (torch.randint(0, 256, (20, *SHAPE)), ("train", "train / 255"), {}),
    "negative values": (x - 0.5, ("train", "outside [0, 1]", "'mean': 'identity'"), {}),
    "grey under Bernoulli": (grey, ("train", "binary pixels", "torch.bernoulli(train)"), {}),
    "off the discrete grid": (grey, ("train", "256 grey levels", "k / 255"),
                              {"likelihood": {"name": "discretized-logistic", "levels": 256}}),
    "NaN labels": ((x, torch.full((20,), float("nan"))), ("labels of train", "NaN"), {"condition": 2}),
    "fractional labels": ((x, torch.full((20,), 0.5)), ("labels of train", "whole numbers"), {"condition": 2}),
    "labels beyond the classes": ((x, torch.full((20,), 5)), ("labels of train", "0..1", "condition=2"),
                                  {"condition": 2}),
    "string array": (np.full((20, *SHAPE), "a"), ("train", "numbers", "strings"), {}),
    "object array": (np.full((20, *SHAPE), None, dtype=object), ("train", "numbers", "objects"), {}),
    "meta tensor": (torch.empty(20, *SHAPE, device="meta"), ("train", "meta device"), {}),
    "NaN values": (torch.where(x > 0, torch.nan, x), ("train", "NaN"), {}),
    "empty": (x[:0], ("train", "N >= 1"), {}),
    "IterableDataset": (_Stream(), ("train", "IterableDataset"), {}),
}


@pytest.mark.parametrize("case", FIT_DATA, ids=list(FIT_DATA))
def test_fit_refuses_data_the_likelihood_cannot_take_naming_train(case, tmp_path):
    train, needles, kw = FIT_DATA[case]
    _refused(DataError, needles, lambda: vaekit.fit(_model(**kw), train, out=tmp_path / "run", progress=False))
    assert not (tmp_path / "run").exists()  # refused at the call, before the run folder


def test_fit_names_valid_and_a_vaekit_data_set_of_grey_levels(tmp_path):
    _refused(DataError, ("valid", "torch.bernoulli(valid)"),
             lambda: vaekit.fit(_model(), x, grey, out=tmp_path / "a", progress=False))
    digits = vaekit.load_dataset("digits")  # 17 grey levels: vaekit train refuses it under Bernoulli pixels
    model = vaekit.VAE(latent=2, shape=digits.shape, hidden=[8])
    _refused(DataError, ("train", "binarize='dynamic'"), lambda: vaekit.fit(model, digits, out=tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_density_on_the_real_line_takes_any_real_values(tmp_path):
    model = _model(likelihood={"name": "gaussian", "mean": "identity"})
    result = vaekit.fit(model, (x - 0.5) * 7, out=tmp_path / "run", epochs=1, progress=False)
    assert result.epochs == 1 and np.isfinite(result.train_elbo)


def test_the_range_rule_follows_the_likelihood_not_a_blanket_0_1_rule():
    """A Gaussian with its mean in (0, 1) is refused standardised data (naming mean 'identity'); a density of one's
    own without levels (the linear-Gaussian model's) takes any real value."""
    table = torch.randn(30, 3, generator=torch.Generator().manual_seed(2)) * 3
    squashed = vaekit.VAE(latent=2, shape=(3,), hidden=[8], likelihood="gaussian")
    _refused(DataError, ("x", "mean 'sigmoid'", "'mean': 'identity'"), lambda: vaekit.evaluate(squashed, table, k=2))
    linear = vaekit.LinearGaussian(torch.randn(3, 2, generator=torch.Generator().manual_seed(3)), torch.zeros(3), 0.5)
    result = vaekit.evaluate(linear, table, k=4, surgery_samples=0)
    assert result.n == 30 and np.isfinite(result.nll)


FIT_ARGUMENTS = {
    "epoch=2": (ArgumentError, ("epoch", "did you mean 'epochs'"), {"epoch": 2}),
    "on_epoch not callable": (ArgumentError, ("on_epoch", "function"), {"on_epoch": 3}),
    "log not callable": (ArgumentError, ("log", "function"), {"log": "yes"}),
    "iwae k=10**9": (ConfigError, ("k=1000000000", "lower k or batch_size"), {"objective": "iwae", "k": 10**9}),
    "resume and overwrite": (VaekitError, ("resume=True", "overwrite=True"), {"resume": True, "overwrite": True}),
    "gumbel on a Gaussian q": (ConfigError, ("estimator='gumbel'", "posterior='categorical'"),
                               {"estimator": "gumbel"}),
}


@pytest.mark.parametrize("case", FIT_ARGUMENTS, ids=list(FIT_ARGUMENTS))
def test_fit_refuses_bad_arguments_naming_them_in_python_terms(case, tmp_path):
    error, needles, kw = FIT_ARGUMENTS[case]
    e = _refused(error, needles, lambda: vaekit.fit(_model(), x, out=tmp_path / "run", progress=False, **kw))
    assert "--" not in str(e), e  # no command-line flag in an error of a Python call
    assert not (tmp_path / "run").exists()
    if error is ArgumentError:
        assert isinstance(e, TypeError)  # what Python raises for a bad keyword, and a vaekit error


def test_fit_refuses_what_is_not_a_model(tmp_path):
    _refused(ArgumentError, ("model", "str"), lambda: vaekit.fit("runs/x", x, out=tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_an_existing_run_is_refused_naming_the_python_arguments(tmp_path):
    vaekit.fit(_model(), x, out=tmp_path / "run", epochs=1, progress=False)
    e = _refused(VaekitError, ("resume=True", "overwrite=True", "out="),
                 lambda: vaekit.fit(_model(), x, out=tmp_path / "run", epochs=1, progress=False))
    assert "--" not in str(e)


def test_messages_name_flags_outside_a_python_call_and_arguments_inside():
    assert (option("out"), switch("resume"), option("estimator", "stl")) == ("--out", "--resume",
                                                                                   "--estimator stl")
    with python_call(labels="y"):
        assert (option("out"), switch("resume"), option("estimator", "stl"), option("labels")) == \
            ("out=", "resume=True", "estimator='stl'", "y=")
    assert option("clip_grad") == "--clip-grad"


def test_fit_takes_integer_0_1_pixels_and_detaches_a_tensor_that_requires_grad(tmp_path):
    """Integers are taken by value (0 and 1 stay binary pixels, never rescaled); the same run as float data."""
    ref = vaekit.fit(_model(), x, x[:5], out=tmp_path / "float", epochs=1, progress=False, seed=3)
    ints = vaekit.fit(_model(), x.long(), x[:5].bool(), out=tmp_path / "int", epochs=1, progress=False, seed=3)
    grad = vaekit.fit(_model(), x.clone().requires_grad_(), x[:5], out=tmp_path / "grad", epochs=1,
                      progress=False, seed=3)
    assert ints.best_valid_elbo == ref.best_valid_elbo == grad.best_valid_elbo


class _Pairs(torch.utils.data.Dataset):
    """A map-style Dataset of (image, label) pairs, as torchvision's are."""

    def __init__(self, images: torch.Tensor, classes: torch.Tensor):
        self.images, self.classes = images, classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], int(self.classes[i])


def test_fit_and_evaluate_take_torch_datasets_and_dataloaders_as_the_same_data(tmp_path):
    runs = {}
    for name, data in {"tensor": x, "tensordataset": torch.utils.data.TensorDataset(x),
                       "dataloader": torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=7)
                       }.items():
        runs[name] = vaekit.fit(_model(), data, x[:5], out=tmp_path / name, epochs=1, progress=False)
    assert runs["tensor"].best_valid_elbo == runs["tensordataset"].best_valid_elbo == \
        runs["dataloader"].best_valid_elbo
    conditional = vaekit.fit(_model(condition=2), _Pairs(x, labels), out=tmp_path / "pairs", epochs=1,
                             progress=False)
    model = conditional.model
    direct = vaekit.evaluate(model, x, k=4, y=labels, surgery_samples=0)
    loader = vaekit.evaluate(model, torch.utils.data.DataLoader(_Pairs(x, labels), batch_size=3), k=4,
                             surgery_samples=0)
    assert loader.nll == direct.nll and loader.n == 20


def test_a_dataset_too_large_for_the_memory_budget_is_refused_before_stacking(tmp_path, monkeypatch):
    model = _model(condition=2)
    monkeypatch.setenv("VAEKIT_MEMORY_BUDGET", str(1000))  # bytes: 20 examples x 16 values x 4 bytes = 1280
    _refused(DataError, ("train", "Dataset of 20 examples", "memory budget", "Subset"),
             lambda: vaekit.fit(model, _Pairs(x, labels), out=tmp_path / "run"))
    assert not (tmp_path / "run").exists()


EVALUATE = {
    "values above 1": (DataError, ("x", "outside [0, 1]"), lambda m: vaekit.evaluate(m, x * 3, k=2)),
    "uint8 0/255": (DataError, ("x / 255",), lambda m: vaekit.evaluate(m, (x * 255).to(torch.uint8), k=2)),
    "kk=10": (ArgumentError, ("kk", "did you mean 'k'"), lambda m: vaekit.evaluate(m, x, kk=10)),
    "k=10**12": (ConfigError, ("k", "10,000,000"), lambda m: vaekit.evaluate(m, x, k=10**12)),
    "empty": (DataError, ("x", "N >= 1"), lambda m: vaekit.evaluate(m, x[:0], k=2)),
    "not a model": (ArgumentError, ("model", "vaekit.load"), lambda m: vaekit.evaluate("runs/x", x, k=2)),
    "string array": (DataError, ("x", "numbers"), lambda m: vaekit.evaluate(m, np.full((20, *SHAPE), "a"), k=2)),
    "meta tensor": (DataError, ("x", "meta"), lambda m: vaekit.evaluate(m, x.to("meta"), k=2)),
    "wrong shape": (DataError, ("x has images of shape (1, 5, 5)", "(1, 4, 4)"),
                    lambda m: vaekit.evaluate(m, torch.zeros(3, 1, 5, 5))),
    "y beyond the classes": (DataError, ("y must be 0..1",),
                             lambda m: vaekit.evaluate(_model(condition=2), x, k=2, y=torch.full((20,), 5))),
    "NaN y": (DataError, ("y", "NaN"), lambda m: vaekit.evaluate(m, x, k=2, y=torch.full((20,), float("nan")))),
    "split='bogus' of a tensor": (ArgumentError, ("split=", "'train', 'valid' or 'test'", "'bogus'"),
                                  lambda m: vaekit.evaluate(m, x, k=2, split="bogus")),
    "split=1 of a data set": (ArgumentError, ("split=", "'train', 'valid' or 'test'", "split=1"),
                              lambda m: vaekit.evaluate(m, vaekit.load_dataset("digits"), k=2, split=1)),
}


@pytest.mark.parametrize("case", EVALUATE, ids=list(EVALUATE))
def test_evaluate_refuses_misuse_naming_the_argument(case):
    error, needles, call = EVALUATE[case]
    e = _refused(error, needles, lambda: call(_model()))
    assert "--" not in str(e)


def test_evaluate_names_y_for_the_labels_of_a_conditional_model():
    _refused(DataError, ("y=",), lambda: vaekit.evaluate(_model(condition=2), x, k=2))


def test_evaluate_of_grey_values_under_bernoulli_pixels_is_named_a_cross_entropy():
    """What ``vaekit evaluate`` does on grey data: a Bernoulli sum that is not a log-likelihood, named as such."""
    result = vaekit.evaluate(_model(), grey, k=2, surgery_samples=0)
    assert result.log_px_kind == "cross-entropy" and result.log_px_label == "-cross-entropy"


CONSTRUCTORS = {
    "VAE(latent=0)": (ConfigError, ("latent", ">= 1"), lambda: vaekit.VAE(latent=0, shape=SHAPE)),
    "VAE(latent='2')": (ArgumentError, ("latent", "'2'"), lambda: vaekit.VAE(latent="2", shape=SHAPE)),
    "VAE(latent=True)": (ArgumentError, ("latent",), lambda: vaekit.VAE(latent=True, shape=SHAPE)),
    "VAE(hidden=[-3])": (ConfigError, ("hidden", "-3"), lambda: vaekit.VAE(latent=2, shape=SHAPE, hidden=[-3])),
    "VAE(hidden='400')": (ArgumentError, ("hidden",), lambda: vaekit.VAE(latent=2, shape=SHAPE, hidden="400")),
    "VAE(latnt=2)": (ArgumentError, ("did you mean 'latent'",), lambda: vaekit.VAE(latnt=2, shape=SHAPE)),
    "HierarchicalVAE(latnt=2)": (ArgumentError, ("did you mean 'latent'",),
                                 lambda: vaekit.HierarchicalVAE(shape=SHAPE, latnt=2)),
    "HierarchicalVAE(hidden=[0])": (ConfigError, ("hidden",), lambda: vaekit.HierarchicalVAE(shape=SHAPE, hidden=[0])),
    "load(devic=)": (ArgumentError, ("devic", "map_location"), lambda: vaekit.load("runs/x", devic="cpu")),
    "load_dataset(binarise=)": (ArgumentError, ("did you mean 'binarize'",),
                                lambda: vaekit.load_dataset("digits", binarise="dynamic")),
}


@pytest.mark.parametrize("case", CONSTRUCTORS, ids=list(CONSTRUCTORS))
def test_constructors_and_loaders_refuse_bad_arguments_naming_them(case):
    error, needles, call = CONSTRUCTORS[case]
    e = _refused(error, needles, call)
    assert isinstance(e, TypeError if error is ArgumentError else ValueError)


def test_dir_lists_the_public_api_and_import_stays_free_of_torch():
    code = "import sys, vaekit; print(dir(vaekit)); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    listed, torch_loaded = out.stdout.strip().splitlines()
    assert torch_loaded == "False"
    for name in ("fit", "evaluate", "VAE", "HierarchicalVAE", "load", "load_dataset", "elbo", "iwae_bound"):
        assert repr(name) in listed
    assert "'Any'" not in listed and "'annotations'" not in listed
    assert set(dir(vaekit)) == set(vaekit.__all__)


def test_print_of_a_result_reads_like_the_command_line(tmp_path):
    trained = vaekit.fit(_model(), x, x[:5], out=tmp_path / "run", epochs=1, progress=False)
    text = str(trained)
    assert text.startswith("trained 1 epochs in ") and "valid ELBO" in text and f"run written to {trained.run}" in text
    assert repr(trained).startswith("TrainResult(run=")
    result = vaekit.evaluate(trained.model, x, k=3, surgery_samples=0)
    assert str(result) == format_table(result) and "NLL (IWAE K=3)" in str(result)
    assert repr(result).startswith("EvaluationResult(elbo=")


@pytest.mark.parametrize("objective, model_class", [("vqvae", "vaekit.models.vqvae.VQVAE"),
                                                     ("factorvae", "vaekit.objectives.factorvae.FactorVAE"),
                                                     ("m2", "vaekit.models.m2.M2")])
def test_an_objective_of_another_family_names_its_model_class_in_python(tmp_path, objective, model_class):
    x = (torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    with pytest.raises(vaekit.errors.ConfigError) as info:
        vaekit.fit(vaekit.VAE(latent=2, shape=(1, 4, 4), hidden=(8,)), x, out=tmp_path / "r", epochs=1,
                   objective=objective, progress=False)
    assert model_class in str(info.value) and "--family" not in str(info.value)
