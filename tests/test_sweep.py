"""vaekit sweep over a grid of settings and seeds; the comparison's groups across seeds and disentanglement scores."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import shutil
import statistics
from pathlib import Path

import pytest

from cli_run import run_cli
from vaekit.cli import main
from vaekit.pages.disentanglement import FILE, SCORES, read_scores
from vaekit.pages.grid import encode, points, run_name
from vaekit.pages.seeds import grouped, mean_sd, seed_groups

pytestmark = pytest.mark.usefixtures("single_thread")

TRAIN_FLAGS = ["--dataset", "digits", "--latent", "2", "--hidden", "8", "--epochs", "1", "--threads", "1",
               "--device", "cpu"]
GRID = ["--grid", "activation=relu,tanh", "--seeds", "0,1"]
RUNS = ["activation-relu_seed-0", "activation-relu_seed-1", "activation-tanh_seed-0", "activation-tanh_seed-1"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A grid of 2 activations x 2 seeds, swept twice: (the folder, the first JSON, the second JSON)."""
    out = tmp_path_factory.mktemp("sweep") / "grid"
    results = []
    for _ in range(2):  # capsys is per test: the output is caught here
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(["sweep", *GRID, "--out", str(out), "--k", "5", "--n-samples", "4", "--json", "--",
                         *TRAIN_FLAGS])
        assert code == 0, stderr.getvalue()
        results.append(json.loads(stdout.getvalue().strip().splitlines()[-1]))
    return out, results[0], results[1]


def test_the_grid_trains_every_setting_and_seed_once(swept):
    out, first, second = swept
    assert sorted(os.listdir(out)) == sorted([*RUNS, "compare.html"])
    for name in RUNS:
        cfg = json.loads((out / name / "config.json").read_text())
        activation, seed = name.split("_")
        assert cfg["model"]["activation"] == activation.split("-")[1] and cfg["seed"] == int(seed.split("-")[1])
        assert cfg["model"]["latent"] == 2 and cfg["epochs"] == 1
    assert [r["name"] for r in first["runs"]] == RUNS
    assert [r["action"] for r in first["runs"]] == ["trained"] * 4
    assert first["runs"][3]["settings"] == {"activation": "tanh", "seed": 1}
    # the second call trains nothing: every run is skipped, its weights untouched
    assert [r["action"] for r in second["runs"]] == ["skipped"] * 4
    assert [r["elbo"] for r in second["runs"]] == [r["elbo"] for r in first["runs"]]


def test_the_groups_give_mean_and_sd_across_seeds(swept):
    out, result, _ = swept
    runs = {r["name"]: r for r in result["runs"]}
    groups = result["groups"]
    assert [g["runs"] for g in groups] == [RUNS[:2], RUNS[2:]]
    assert [g["label"] for g in groups] == ["model.activation=relu", "model.activation=tanh"]
    page = (out / "compare.html").read_text()
    section = page[page.index("<h2>Across seeds"):]
    for group in groups:
        assert group["n"] == 2 and group["seeds"] == [0, 1]
        for key in ("elbo", "nll", "rate", "distortion", "train_seconds"):
            values = [runs[name][key] for name in group["runs"]]
            got = group["metrics"][key]
            # the sample SD (n - 1), of the runs' own numbers
            assert got["n"] == 2 and got["mean"] == pytest.approx(statistics.mean(values), rel=1e-12)
            assert got["sd"] == pytest.approx(statistics.stdev(values), rel=1e-9)
        elbo = group["metrics"]["elbo"]
        assert f"{elbo['mean']:.3f} &plusmn; {elbo['sd']:.3f}" in section
    assert section.count("0, 1 (n = 2)") == 2


def test_compare_shows_disentanglement_scores_per_run_and_per_group(swept, tmp_path, capsys):
    out, _, _ = swept
    runs = [tmp_path / name for name in RUNS]
    for name, run in zip(RUNS, runs):
        shutil.copytree(out / name, run)
    written = {}
    for i, run in enumerate(runs[:3]):  # by hand, as 'vaekit evaluate RUN --disentanglement' writes it
        scores = {key: 0.1 * j + 0.01 * i for j, key in enumerate(SCORES)}
        scores |= {f"{key}_stderr": 0.002 for key in SCORES}
        (run / "disentanglement.json").write_text(json.dumps(scores))
        written[run.name] = scores
    (runs[3] / "disentanglement.json").write_text('{"mig": ')  # malformed: no scores, no traceback
    code, stdout, err = run_cli(["compare", *map(str, runs), "--out", str(tmp_path / "d.html"), "--k", "5",
                                 "--n-samples", "4", "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    for got in result["runs"][:3]:
        assert {key: got[key] for key in written[got["name"]]} == written[got["name"]]
    last = result["runs"][3]
    assert all(last[key] is None for key in SCORES)
    assert any("disentanglement.json could not be used" in note for note in last["notes"])
    relu, tanh = result["groups"]
    mig = [written[name]["mig"] for name in RUNS[:2]]
    assert relu["metrics"]["mig"] == pytest.approx({"mean": statistics.mean(mig), "sd": statistics.stdev(mig),
                                                    "n": 2})
    assert tanh["metrics"]["mig"] == pytest.approx({"mean": written[RUNS[2]]["mig"], "sd": None, "n": 1})
    page = (tmp_path / "d.html").read_text()
    scores = page[page.index("<h2>Disentanglement"):page.index("<h2>Across seeds")]
    assert '<td>MIG</td><td class="num">0.200 &plusmn; 0.002</td>' in scores
    assert scores.count('<td class="num">n/a</td>') == len(SCORES)  # the run of the malformed file
    groups = page[page.index("<h2>Across seeds"):]
    assert f"<td>MIG</td><td class='num'>{statistics.mean(mig):.3f} &plusmn; {statistics.stdev(mig):.3f}</td>" \
           f"<td class='num'>0.220 (n = 1)</td>" in groups


def test_bad_keys_and_values_fail_in_one_line_before_anything_trains(tmp_path, capsys):
    out = tmp_path / "s"
    cases = [
        (["--grid", "latnt=2,3"], "--grid latnt: 'vaekit train' has no setting flag --latnt (did you mean latent?)"),
        (["--grid", "out=a,b"], "--grid out"),
        (["--grid", "latent"], "KEY=V1,V2"),
        (["--grid", "hidden=8,x"], "--grid hidden: expected a positive integer, got 'x'"),
        (["--grid", "activation=relu,nope"], "nope"),
        (["--grid", "dataset=digits,nope"], "unknown data set 'nope'"),
        (["--grid", "dataset=digits,npz:/nowhere/x.npz"], "not found"),
        (["--grid", "seed=0,1"], "--seeds"),
        (["--grid", "beta=1,2", "--beta", "3,4"], "give beta once"),
        (["--grid", "lr=0.001,0.0010"], "given twice"),
        (["--seeds", "0,0"], "given twice"),
        (["--seeds", "0,x"], "--seeds"),
        (["--seeds", "0"], "at least 2 runs"),
    ]
    for argv, message in cases:
        code, stdout, err = run_cli(["sweep", *argv, "--out", str(out), "--", *TRAIN_FLAGS[2:]], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert not out.exists(), argv
    for argv, message in ((["--grid", "latent=2,3"], "--latent is swept by --grid"),
                          (["--seeds", "0,1"], "--seed is swept by --seeds")):
        code, _, err = run_cli(["sweep", *argv, "--out", str(out), "--", *TRAIN_FLAGS, "--seed", "3"], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert not out.exists()


def test_run_names_are_safe_and_distinct():
    assert run_name({"beta": 0.5}) == "beta-0.5" and run_name({"beta": 1.0}) == "beta-1"  # the folders of old sweeps
    assert run_name({"beta": 4.0, "seed": 2}) == "beta-4_seed-2"
    assert run_name({"hidden": [500, 500], "conditional": True}) == "hidden-500+500_conditional-true"
    for value in ("../x", "a/b", "..", "x_y", "a b", "é"):
        name = run_name({"dataset": value})
        assert "/" not in name and ".." not in name and "_" not in name and name.isascii(), name
    assert encode("..") == "%2E." and encode("a_b") == "a%5Fb"
    names = [p.name for p in points({"objective": ["elbo", "beta-tcvae"], "latent": [5, 10]}, [0, 1])]
    assert len(set(names)) == 8 and names[0] == "objective-elbo_latent-5_seed-0"
    assert names[-1] == "objective-beta-tcvae_latent-10_seed-1"
    assert len(points({"beta": [0.1, 1e-7]})) == 2  # values that ':g' would round alike keep their own names


def test_a_list_valued_flag_takes_semicolons():
    from vaekit.commands.sweep import parse_grid, setting_actions, train_parser

    actions = setting_actions(train_parser())
    assert parse_grid(["hidden=8;8,8", "--conditional=true,false"], actions) == {
        "hidden": [[8], [8, 8]], "conditional": [True, False]}


def test_groups_need_two_runs_of_one_setting():
    # one seed per setting: no group holds two runs, so nothing is added to the page or the JSON
    configs = [{"beta": 1.0, "seed": 0, "device": "cpu"}, {"beta": 2.0, "seed": 0, "device": "cpu"}]
    assert not grouped(seed_groups(["a", "b"], configs, [{"elbo": -1.0}, {"elbo": -2.0}], ["elbo"], ["device"]))
    # runs differing only by seed and hardware are one group; a run without settings is alone
    configs = [{"beta": 1.0, "seed": 0, "device": "cpu"}, {"beta": 1.0, "seed": 1, "device": "cuda"}, {}]
    groups = seed_groups(["a", "b", "c"], configs, [{"elbo": -1.0}, {"elbo": -3.0}, {"elbo": 5.0}], ["elbo"],
                         ["device"])
    assert [g.runs for g in groups] == [["a", "b"], ["c"]] and grouped(groups)
    assert groups[0].stats["elbo"].mean == -2.0 and groups[0].stats["elbo"].sd == pytest.approx(2 ** 0.5)
    assert mean_sd([1.0, float("nan"), None, True]) == mean_sd([1.0]) and mean_sd([]) is None


def test_disentanglement_files_are_read_defensively(tmp_path):
    cases = {"missing": None, "list": "[1, 2]", "broken": "{", "binary": b"\xff\xfe", "empty": "{}",
             "strings": json.dumps({"mig": "0.5"})}
    for name, content in cases.items():
        run = tmp_path / name
        run.mkdir()
        if isinstance(content, bytes):
            (run / "disentanglement.json").write_bytes(content)
        elif content is not None:
            (run / "disentanglement.json").write_text(content)
        scores, note = read_scores(run)
        assert scores is None and (note is None) == (name == "missing"), name
    link = tmp_path / "link"
    link.mkdir()
    (link / "disentanglement.json").symlink_to(tmp_path / "elsewhere.json")
    (tmp_path / "elsewhere.json").write_text(json.dumps({"mig": 0.5}))
    assert read_scores(link)[0] is None  # links are not followed
    (link / "disentanglement.json").unlink()
    (link / "disentanglement.json").write_text(json.dumps({"mig": 0.5, "mig_stderr": float("inf"), "sap": True}))
    scores, note = read_scores(link)
    assert note is None and scores["mig"] == 0.5 and scores["mig_stderr"] is None and scores["sap"] is None


def test_the_scores_are_those_vaekit_evaluate_writes():
    # read from the source, so that the comparison need not import the estimators (scikit-learn)
    source = (Path(__file__).resolve().parents[1] / "src/vaekit/evaluation/disentanglement.py").read_text()
    tree = ast.parse(source)
    values = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
              if isinstance(t, ast.Name)}
    assert tuple(ast.literal_eval(values["SCORES"])) == SCORES
    assert ast.literal_eval(values["SCORES_FILE"]) == FILE
