"""Progress: ``vaekit evaluate`` and ``vaekit report`` draw a bar with the ETA on stderr when it is a terminal
(or with --progress; none with --quiet; stdout untouched), and ``fit()`` in a notebook shows a bar (text without
ipywidgets, no TqdmWarning) and its epochs."""

from __future__ import annotations

import io
import json
import sys
import types
import warnings

import pytest
import torch

import vaekit.progress as P
from cli_run import run_cli
from vaekit.config import TrainConfig
from vaekit.train import train

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("progress") / "run"
    train(TrainConfig(dataset="digits", hidden=[16], latent=2, epochs=1, batch_size=200, device="cpu"), path,
          progress=False)
    return path


def test_evaluate_draws_a_bar_with_an_eta_on_stderr_and_leaves_the_json_alone(run, capsys):
    code, out, err = run_cli(["evaluate", str(run), "--k", "20", "--json"], capsys)
    assert code == 0 and err == "", err  # stderr is no terminal here: no bar unless asked for
    code, out, err = run_cli(["evaluate", str(run), "--k", "20", "--json", "--progress"], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["k"] == 20  # stdout: the one JSON object, nothing else
    n = json.loads(lines[0])["n"]
    assert "ETA" in err and f"{n}/{n} examples" in err and "log p(x), K = 20" in err


def test_evaluate_quiet_draws_nothing(run, capsys):
    code, out, err = run_cli(["evaluate", str(run), "--k", "20", "--json", "--quiet"], capsys)
    assert code == 0 and err == "", err
    assert json.loads(out)["k"] == 20
    code, out, err = run_cli(["evaluate", str(run), "--k", "5", "--quiet"], capsys)
    assert code == 0 and err == "" and "log p(x)" in out  # the table


def test_report_draws_a_bar_and_quiet_draws_nothing(run, capsys, tmp_path):
    page = tmp_path / "r.html"
    code, out, err = run_cli(["report", str(run), "--k", "5", "--out", str(page)], capsys)
    assert code == 0 and "ETA" not in err, err  # stderr is no terminal here: the steps, no bar
    code, out, err = run_cli(["report", str(run), "--k", "6", "--out", str(page), "--progress"], capsys)
    assert code == 0, err  # K = 6: not the evaluation the first report kept (that one is reused, with no bar)
    assert "ETA" in err and out.strip() == str(page)
    code, out, err = run_cli(["report", str(run), "--k", "5", "--out", str(page), "--quiet"], capsys)
    assert code == 0 and err == "" and out.strip() == str(page)


def test_the_bar_callback_shows_the_eta_and_finishes_itself():
    buf = io.StringIO()
    bar = P.Bar("work", "examples", file=buf)
    for done in (0, 4, 10):
        bar(done, 10)
    text = buf.getvalue()
    assert "ETA" in text and "10/10 examples" in text and "100%" in text and bar.bar is None
    quiet = io.StringIO()
    off = P.Bar("work", enabled=False, file=quiet)
    off(0, 10)
    off(10, 10)
    assert quiet.getvalue() == ""


@pytest.fixture
def notebook(monkeypatch):
    """A Jupyter kernel as vaekit sees one (IPython's ZMQ shell), without ipywidgets."""
    class ZMQInteractiveShell:
        pass

    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: ZMQInteractiveShell()
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setattr(P, "widgets_available", lambda: False)


def _model():
    from vaekit import VAE

    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
    decoder = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 16),
                                  torch.nn.Unflatten(-1, (1, 4, 4)))
    return VAE(encoder, decoder, latent=2)


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.bernoulli(torch.rand(4, 1, 4, 4, generator=g)[torch.randint(4, (120,), generator=g)], generator=g)


def test_fit_in_a_notebook_shows_a_text_bar_and_its_epochs_without_a_warning(notebook, tmp_path, capsys):
    from tqdm.std import TqdmWarning
    from tqdm.std import tqdm as text_bar

    import vaekit

    assert P.in_notebook() and P.bar_class() is text_bar
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vaekit.fit(_model(), _data(), out=tmp_path / "run", epochs=2, batch_size=40)  # the defaults
    assert not [w for w in caught if issubclass(w.category, TqdmWarning)]
    out, err = capsys.readouterr()
    assert "epoch    1" in out and "epoch    2" in out  # a line per epoch, printed
    assert "epoch 1/2" in err  # the bar (stderr is no terminal here: shown because this is a notebook)


def test_a_notebook_with_widgets_gets_the_widget_bar(notebook, monkeypatch):
    monkeypatch.setattr(P, "widgets_available", lambda: True)
    from tqdm.notebook import tqdm as widget_bar

    assert P.bar_class() is widget_bar


def test_fit_outside_a_notebook_says_nothing_by_default(tmp_path, capsys):
    import vaekit

    assert not P.in_notebook()
    vaekit.fit(_model(), _data(), out=tmp_path / "run", epochs=2, batch_size=40)
    out, err = capsys.readouterr()
    assert out == "" and err == ""  # stderr is no terminal under pytest: no bar either


def test_a_long_piece_of_work_is_projected_said_and_refused_past_the_limit(monkeypatch):
    """The first call after PILOT_SECONDS of work projects the whole: said when over ANNOUNCE_SECONDS, refused
    (one ConfigError naming the settings to lower) when over $VAEKIT_MAX_HOURS."""
    from vaekit.errors import ConfigError

    clock = iter([0.0, 2.0])
    monkeypatch.setattr(P.time, "perf_counter", lambda: next(clock))
    said: list[str] = []
    bar = P.Bar("log p(x), K = 5000", "examples", enabled=False, flags="--k or --limit", say=said.append)
    bar(0, 100)
    bar(1, 100)  # 1 of 100 in 2 s: 200 s in all
    assert said == ["log p(x), K = 5000: about 3.3 min in all (1 of 100 examples done in 2.0 s)"]
    clock = iter([0.0, 2.0])
    monkeypatch.setenv("VAEKIT_MAX_HOURS", "0.01")  # 36 s
    bar = P.Bar("log p(x), K = 5000", "examples", enabled=False, flags="--k or --limit")
    bar(0, 100)
    with pytest.raises(ConfigError, match=r"would take about 3\.3 min .* lower --k or --limit"):
        bar(1, 100)
    assert P.duration(3 * 86400) == "3.0 days" and P.duration(59) == "59 s"


def test_evaluate_refuses_work_projected_past_the_limit_in_one_line(run, capsys, monkeypatch):
    monkeypatch.setattr(P, "PILOT_SECONDS", 0.0)
    monkeypatch.setenv("VAEKIT_MAX_HOURS", "1e-9")
    code, out, err = run_cli(["evaluate", str(run), "--k", "50", "--batch-size", "20", "--quiet"], capsys)
    assert code == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "would take about" in lines[0] and "lower --k or --limit" in lines[0], err


def test_the_exact_sum_follows_its_codes_and_is_refused_past_the_limit(monkeypatch):
    from vaekit.bounds.enumeration import enumerated_bound
    from vaekit.errors import ConfigError
    from vaekit.models import VAE

    torch.manual_seed(0)
    model = VAE(latent=6, shape=(1, 4, 4), hidden=(8,), posterior="bernoulli", prior="bernoulli")
    x = (torch.rand(5, 1, 4, 4) > 0.5).float()
    seen: list[tuple[int, int]] = []
    enumerated_bound(model, x, chunk=16, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(d, 64) for d in (0, 16, 32, 48, 64)]
    monkeypatch.setattr(P, "PILOT_SECONDS", 0.0)
    monkeypatch.setenv("VAEKIT_MAX_HOURS", "1e-9")
    with pytest.raises(ConfigError, match="lower --exact-limit"):
        enumerated_bound(model, x, chunk=16, progress=P.Bar("the exact sum", "codes", enabled=False,
                                                             flags="--exact-limit"))


def test_report_refuses_an_evaluation_projected_past_the_limit_in_one_line(run, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(P, "PILOT_SECONDS", 0.0)
    monkeypatch.setenv("VAEKIT_MAX_HOURS", "1e-9")
    page = tmp_path / "r.html"
    code, out, err = run_cli(["report", str(run), "--k", "41", "--out", str(page), "--quiet"], capsys)
    assert code == 2 and out == "" and not page.exists(), err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "would take about" in lines[0] and "lower --k or --limit" in lines[0], err
