"""``vaekit info``: the table, the JSON and one-line errors with exit status 2."""

from __future__ import annotations

import json
import math

import pytest

from vaekit.cli import main


def test_table(capsys):
    assert main(["info", "--p", "0.5,0.5", "--q", "0.1,0.9"]) == 0
    out = capsys.readouterr().out
    assert "0.5108" in out and "0.3681" in out and "H(p,q) - H(p)" in out and "not symmetric" in out


def test_json(capsys):
    assert main(["info", "--p", "0.5,0.5", "--q", "0.1,0.9", "--json"]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(data) == {"entropy_p", "entropy_q", "cross_entropy_pq", "cross_entropy_qp", "kl_pq", "kl_qp", "base"}
    assert data["kl_pq"] == pytest.approx(0.5108, abs=5e-5)
    assert data["kl_qp"] == pytest.approx(0.3681, abs=5e-5)
    assert data["base"] == pytest.approx(math.e)


def test_json_bits(capsys):
    assert main(["info", "--p", "0.5,0.5", "--q", "0.1,0.9", "--json", "--base", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["entropy_p"] == pytest.approx(1.0) and data["base"] == 2.0
    assert data["kl_pq"] == pytest.approx(0.5108 / math.log(2), abs=1e-4)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--p", "0.5,-0.5", "--q", "0.5,0.5"], "negative"),
        (["--p=-0.5,1.5", "--q", "0.5,0.5"], "negative"),
        (["--p", "a,b", "--q", "0.5,0.5"], "not a number"),
        (["--p", "0.5,0.5", "--q", "0.2,0.3,0.5"], "same outcomes"),
        (["--p", "0.5,0.5", "--q", "0.5,0.5", "--base", "1"], "base"),
        (["--p", "0.5,0.5", "--q", "0.5,0.5", "--base", "x"], "base"),
        (["--p", "0.3,0.3", "--q", "0.5,0.5"], "--normalize"),
        (["--p", "0.5,nan", "--q", "0.5,0.5"], "finite"),
        (["--p", "0.5,,0.5", "--q", "0.5,0.5"], "comma-separated"),
        (["--q", "0.5,0.5"], "--p"),
    ],
)
def test_bad_input_is_one_line_and_status_2(capsys, argv, needle):
    with pytest.raises(SystemExit) as exc:
        code = main(["info", *argv])
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err and "Traceback" not in err


def test_normalize_flag(capsys):
    assert main(["info", "--p", "1,1", "--q", "1,9", "--normalize", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kl_pq"] == pytest.approx(0.5108, abs=5e-5)
