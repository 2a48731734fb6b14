"""customml.optimize on digits: the chosen model is within the accuracy budget, the report
lists every candidate, the run is deterministic for a seed and respects time_budget_s."""

from __future__ import annotations

import time

import numpy as np
import pytest

import customml as cm
from customml import _optimize


@pytest.fixture(scope="module")
def data():
    (x, y), _ = cm.datasets.load("digits")
    return (x[:-300], y[:-300]), (x[-300:], y[-300:])


@pytest.fixture(scope="module")
def model(data):
    (x, y), _ = data
    m = cm.Sequential(
        [cm.layers.Dense(128, activation="relu"), cm.layers.Dense(128, activation="relu"), cm.layers.Dense(10)],
        input_dim=64,
        seed=0,
    )
    m.compile(optimizer=cm.optimizers.Adam(2e-3), metrics=["accuracy"])
    m.fit(x, y, epochs=20, batch_size=64, verbose=0)
    return m


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x), axis=1) == y))


@pytest.fixture(scope="module")
def run(model, data):
    train, val = data
    before = [w.copy() for w in model.get_weights()]
    best, report = cm.optimize(
        model, validation=val, max_accuracy_drop=0.01, batch_size=[1, 32], train=train, seed=3, verbose=0
    )
    for w, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(w, b)  # the original is left as it was
    return best, report


def test_optimize_chooses_the_fastest_candidate_within_the_budget(model, data, run):
    _, (xv, yv) = data
    best, report = run
    rows = {r["name"]: r for r in report.as_dict()["candidates"]}
    assert list(rows) == ["float32"] + [name for name, _ in _optimize.CANDIDATES]
    base = rows["float32"]["accuracy"]
    assert base == accuracy(model, xv, yv)
    chosen = rows[report.chosen]
    # The returned model is the chosen candidate: its accuracy is the row's, within budget.
    assert accuracy(best, xv, yv) == chosen["accuracy"]
    assert base - chosen["accuracy"] <= 0.01
    kept = [r for r in rows.values() if r["why"] == "chosen" or r["why"].startswith("kept")]
    assert all(base - r["accuracy"] <= 0.01 for r in kept)
    for r in rows.values():
        if r["accuracy"] is not None and base - r["accuracy"] > 0.01:
            assert r["why"] == "over the accuracy budget"
    # The fastest, or within 5% of it (a timing tie) the most accurate of those.
    fastest = min(r["latency_us"][1][0] for r in kept)
    assert chosen["latency_us"][1][0] <= 1.05 * fastest
    ties = [r for r in kept if r["latency_us"][1][0] <= 1.05 * fastest]
    assert chosen["accuracy"] == max(r["accuracy"] for r in ties)
    # Something beats float32 on this model (int8 alone is about 2x at batch 1).
    assert report.chosen != "float32"
    assert set(chosen["latency_us"]) == {1, 32} and chosen["file_bytes"] > 0
    assert report.chosen in str(report) and report.chosen in report.pareto()
    assert best.optimize_report is report


def test_optimize_report_plot(run, tmp_path):
    pytest.importorskip("matplotlib")
    _, report = run
    path = tmp_path / "pareto.png"
    report.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_optimize_is_deterministic_for_a_seed(model, data, run):
    # Candidates and accuracies repeat (file sizes may differ by the few bytes of a
    # pruned layer's timed format choice); by size the choice repeats too.
    train, val = data
    _, first = run
    _, again = cm.optimize(
        model, validation=val, max_accuracy_drop=0.01, batch_size=[1, 32], train=train, seed=3, verbose=0
    )
    assert [(r["name"], r["accuracy"]) for r in first.rows] == [(r["name"], r["accuracy"]) for r in again.rows]
    sizes = [
        cm.optimize(model, validation=val, objective="size", train=None, seed=1, verbose=0)[1].chosen for _ in range(2)
    ]
    assert sizes[0] == sizes[1]


def test_optimize_respects_time_budget(model, data):
    train, val = data
    start = time.perf_counter()
    best, report = cm.optimize(model, validation=val, train=train, time_budget_s=0.5, verbose=0)
    elapsed = time.perf_counter() - start
    skipped = [r for r in report.rows if r["why"] == "not tried: time budget spent"]
    assert skipped, "a 0.5 s budget cannot try every candidate"
    # It stops after the candidate that was running when the budget ran out (the
    # slowest, a distilled student, takes a few seconds here): far less than a full run.
    assert elapsed < 30
    assert report.chosen in [r["name"] for r in report.rows if r["accuracy"] is not None]
    assert accuracy(best, *val) >= report.rows[0]["accuracy"] - 0.005


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_accuracy_drop=1.5), "max_accuracy_drop"),
        (dict(objective="speed"), "objective"),
        (dict(batch_size=0), "batch_size"),
        (dict(time_budget_s=-1), "time_budget_s"),
        (dict(validation=(np.zeros((3, 64), np.float32),)), "validation"),
        (dict(train=(np.zeros((3, 64), np.float32),)), "train"),
    ],
)
def test_optimize_rejects_bad_input(model, data, kwargs, match):
    args = dict(validation=data[1], verbose=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=rf"\[optimize\] {match}"):
        cm.optimize(model, **args)


def test_cli_optimize_saves_the_chosen_model(model, tmp_path, capsys):
    from customml import cli

    src, out, png = str(tmp_path / "m.cml"), str(tmp_path / "small.cml"), str(tmp_path / "p.png")
    model.save(src)
    args = ["optimize", src, "--dataset", "digits", "--max-accuracy-drop", "1", "--no-train", "-o", out]
    assert cli.main(args + ["--batch-size", "1", "8", "--plot", png]) == 0
    text = capsys.readouterr().out
    assert "candidate | val acc" in text and "chosen: " in text and "b8 p50 / p99 us" in text
    chosen = text.split("chosen: ")[1].split(" |")[0]
    loaded = cm.load(out)
    assert loaded.predict(np.zeros((1, 64), np.float32)).shape == (1, 10)
    assert chosen in [name for name, _ in _optimize.CANDIDATES] + ["float32"]
    assert cli.main(args + ["--max-accuracy-drop", "-1"]) == 2
    assert "error: --max-accuracy-drop must be in [0, 100)" in capsys.readouterr().err


def test_bf16_candidates_are_bf16_models_of_their_bases(model, data, run):
    _, (xv, yv) = data
    _, report = run
    rows = {r["name"]: r for r in report.rows}
    bf16 = cm.quantize.bf16(model)
    # The bf16 row measures quantize.bf16 of the model: its accuracy, and half the kernel bytes.
    assert rows["bf16"]["accuracy"] == accuracy(bf16, xv, yv)
    assert rows["bf16"]["file_bytes"] == len(cm.io.dumps(bf16))
    assert rows["bf16"]["file_bytes"] < 0.6 * rows["float32"]["file_bytes"]
    # A combination is built from its base when that was kept, and is smaller still.
    if rows["structured 25%"]["why"] != "over the accuracy budget":
        assert rows["structured 25% + bf16"]["file_bytes"] < 0.6 * rows["structured 25%"]["file_bytes"]


def test_fine_tuning_anneals_and_keeps_the_masks(model, data):
    train, val = data
    ctx = _optimize._Context(val[0], val[1], train, 0, 2, 0.01, [1])
    pruned = _optimize._pruned(0.75)(model, ctx)
    kernels = [layer.get_weights()[0] for layer in pruned.layers]
    # Global magnitude pruning: 75% of all kernel weights, held through fine-tuning.
    assert sum(int((k == 0).sum()) for k in kernels) >= 0.75 * sum(k.size for k in kernels)
    # Adam from FINE_TUNE_LEARNING_RATE, annealed to 0 by the last fine-tuning step.
    schedule = pruned._optimizer.learning_rate
    assert schedule(0) == pytest.approx(_optimize.FINE_TUNE_LEARNING_RATE)
    assert schedule.decay_steps == pruned._net.step  # reaches 0 at the last fine-tuning step
