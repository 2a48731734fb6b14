"""The ``customml`` command: ``train`` (exit 0, 1 below --min-accuracy, 2 on bad
input with "error:" on stderr) and ``info`` (JSON build information)."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys

import numpy as np
import pytest

import customml as cm
from customml import cli

# Small and fast: the defaults (two 256-wide layers, 30 epochs) take several seconds.
FAST = ["--epochs", "2", "--hidden", "64", "--quiet"]


def _accuracy(out: str) -> float:
    match = re.search(r"test accuracy (\d\.\d{4})", out)
    assert match, out
    return float(match.group(1))


def test_train_quiet_returns_0_and_prints_test_accuracy(capsys):
    rc = cli.main(["train", "--dataset", "digits", "--epochs", "2", "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "digits: 1437 train / 360 test, 64 features, 10 classes" in out
    assert "Total params:" in out  # the summary
    assert "Epoch" not in out  # --quiet
    # two epochs of the default network on digits: ~0.95; chance is 0.1
    assert 0.8 <= _accuracy(out) <= 1.0
    assert re.search(r"predict batch-1 p50 \d+\.\d us, p99 \d+\.\d us", out), out


def test_train_verbose_prints_epochs_and_json(capsys):
    rc = cli.main(["train", "--dataset", "iris", "--epochs", "3", "--hidden", "16", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert len(re.findall(r"^Epoch \d/3 ", out, re.M)) == 3, out
    record = json.loads(out.strip().splitlines()[-1])
    assert set(record) >= {"dataset", "test_loss", "test_accuracy", "train_seconds", "predict_p50_us", "predict_p99_us"}
    assert record["dataset"] == "iris"
    assert abs(record["test_accuracy"] - _accuracy(out)) <= 5e-5  # printed with 4 decimals


def test_train_below_min_accuracy_returns_1(capsys):
    rc = cli.main(["train", "--dataset", "digits", *FAST, "--min-accuracy", "1.01"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert re.search(r"error: test accuracy \d\.\d{4} is below --min-accuracy 1.01", err), err
    _accuracy(out)  # the result is still reported


def test_train_reaching_min_accuracy_returns_0(capsys):
    rc = cli.main(
        ["train", "--dataset", "breast_cancer", "--epochs", "5", "--hidden", "16", "--quiet", "--min-accuracy", "0.5"]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert _accuracy(out) >= 0.5


@pytest.mark.parametrize(
    "argv, words",
    [
        (["train", "--dataset", "mnist_typo"], "mnist_typo"),
        (["train", "--dataset", "digits", "--device", "tpu", *FAST], "tpu"),
        (["train", "--dataset", "digits", "--activation", "swish", *FAST], "activation"),
    ],
)
def test_train_bad_input_returns_2(capsys, argv, words):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert rc == 2
    assert err.startswith("error: ") and words in err, err
    assert "Traceback" not in err


def test_train_cuda_without_gpu_returns_2(capsys):
    if cm.cuda.is_available():
        pytest.skip("a GPU is available")
    rc = cli.main(["train", "--dataset", "digits", "--device", "cuda", *FAST])
    _, err = capsys.readouterr()
    assert rc == 2 and err.startswith("error: ") and cm.cuda.unavailable_reason() in err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--epochs", "two"])
    assert info.value.code == 2
    assert "--epochs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2


def test_info_prints_json(capsys):
    assert cli.main(["info"]) == 0
    out, _ = capsys.readouterr()
    info = json.loads(out)
    assert info["version"] == cm.__version__
    assert "gemm" in info["kernels"] and info["kernels"]["gemm"].startswith("f32_gemm__")
    assert info == cm.build_info()


def test_module_entry_point_in_a_subprocess():
    proc = subprocess.run([sys.executable, "-m", "customml", "info"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert "kernels" in info and info["version"] == cm.__version__
    proc = subprocess.run(
        [sys.executable, "-m", "customml", "train", "--dataset", "nope"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stderr


@pytest.mark.parametrize(
    "argv, flag, typed",
    [
        (["train", "--batch-size", "0"], "--batch-size", "0"),
        (["train", "--epochs", "-1"], "--epochs", "-1"),
        (["train", "--epochs", "2.5"], "--epochs", "2.5"),
        (["train", "--hidden", "64", "0"], "--hidden", "0"),
        (["train", "--dropout", "1.0"], "--dropout", "1.0"),
        (["train", "--lr", "-1"], "--lr", "-1"),
        (["train", "--lr", "nan"], "--lr", "nan"),
        (["train", "--label-smoothing", "2"], "--label-smoothing", "2"),
        (["train", "--weight-decay", "inf"], "--weight-decay", "inf"),
        (["train", "--validation-split", "1"], "--validation-split", "1"),
        (["train", "--seed", "-3"], "--seed", "-3"),
        (["train", "--prune-sparsity", "1"], "--prune-sparsity", "1"),
        (["train", "--prune-epochs", "0"], "--prune-epochs", "0"),
        (["train", "--min-accuracy", "-0.5"], "--min-accuracy", "-0.5"),
        (["export", "m.cml", "--onnx", "m.onnx", "--opset", "0"], "--opset", "0"),
        (["quantize", "m.cml", "-o", "q.cml", "--calibration-rows", "0"], "--calibration-rows", "0"),
        (["quantize", "m.cml", "-o", "q.cml", "--max-accuracy-drop", "-0.1"], "--max-accuracy-drop", "-0.1"),
        (["prune", "m.cml", "-o", "p.cml", "--sparsity", "1.5"], "--sparsity", "1.5"),
        (["prune", "m.cml", "-o", "p.cml", "--structured", "-1"], "--structured", "-1"),
        (["prune", "m.cml", "-o", "p.cml", "--fine-tune-epochs", "-1"], "--fine-tune-epochs", "-1"),
        (["prune", "m.cml", "-o", "p.cml", "--batch-size", "0"], "--batch-size", "0"),
        (["prune", "m.cml", "-o", "p.cml", "--lr", "0"], "--lr", "0"),
    ],
)
def test_every_number_is_checked_naming_the_flag_and_what_was_typed(capsys, argv, flag, typed):
    # Before: --batch-size 0 ended in a ZeroDivisionError traceback and --epochs -1 was
    # reported as --prune-epochs; now argparse's usage error, exit status 2.
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert f"argument {flag}" in err and repr(typed) in err and "Traceback" not in err, err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1, err


def test_predict_writes_to_the_name_given(saved_model, tmp_path, capsys):
    # np.save appended .npy: -o preds.txt wrote preds.txt.npy and said preds.txt.
    _, (x_test, _) = cm.datasets.load("digits")
    np.save(tmp_path / "x.npy", x_test[:3])
    out = tmp_path / "preds.txt"
    assert cli.main(["predict", str(saved_model), str(tmp_path / "x.npy"), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"3 predictions written to {out}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.txt", "x.npy"]
    assert np.load(out).tolist() == cm.load(saved_model).predict(x_test[:3]).argmax(axis=1).tolist()


@pytest.mark.parametrize("where", ["a directory", "a missing directory"])
def test_predict_output_errors_name_the_path_given(saved_model, tmp_path, capsys, where):
    np.save(tmp_path / "x.npy", np.zeros((2, 64), np.float32))
    (tmp_path / "outdir").mkdir()
    target = tmp_path / "outdir" if where == "a directory" else tmp_path / "missing" / "p.npy"
    rc = cli.main(["predict", str(saved_model), str(tmp_path / "x.npy"), "-o", str(target)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and str(target) in err and ".tmp" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outdir", "x.npy"]
    assert list((tmp_path / "outdir").iterdir()) == []


def test_predict_refuses_nonfinite_input_unless_allowed(saved_model, tmp_path, capsys):
    x = np.zeros((3, 64), np.float32)
    x[1, 2] = np.nan
    np.save(tmp_path / "x.npy", x)
    rc = cli.main(["predict", str(saved_model), str(tmp_path / "x.npy")])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and str(tmp_path / "x.npy") in err and "row 1, column 2" in err, err
    assert "--allow-nonfinite" in err
    assert cli.main(["predict", str(saved_model), str(tmp_path / "x.npy"), "--allow-nonfinite"]) == 0
    labels = [int(v) for v in capsys.readouterr().out.split()]
    assert labels[1] == -1 and labels[0] >= 0 and labels[2] >= 0


def test_console_script_is_registered():
    scripts = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "customml"]
    assert [e.value for e in scripts] == ["customml.cli:main"]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A small digits model trained and saved by the CLI itself."""
    path = tmp_path_factory.mktemp("cli") / "digits.cml"
    rc = cli.main(["train", "--dataset", "digits", *FAST, "--output", str(path)])
    assert rc == 0 and path.exists()
    return path


def test_train_saves_reloads_and_reports_the_file(tmp_path, capsys):
    path = tmp_path / "m.cml"
    rc = cli.main(["train", "--dataset", "iris", "--epochs", "3", "--hidden", "8", "--quiet", "--output", str(path)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert re.search(rf"saved\s+{re.escape(str(path))} \([\d,]+ bytes\), reloaded: same predictions", out), out
    assert cm.load(path).layers[0].units == 8


def test_evaluate_a_saved_model(saved_model, capsys):
    rc = cli.main(["evaluate", str(saved_model), "--dataset", "digits", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    record = json.loads(out.strip().splitlines()[-1])
    _, (x_test, y_test) = cm.datasets.load("digits")
    want = cm.load(saved_model).evaluate(x_test, y_test)
    assert record == pytest.approx(want)  # the same model and data: the same numbers


def test_predict_labels_probabilities_and_to_a_file(saved_model, tmp_path, capsys):
    _, (x_test, _) = cm.datasets.load("digits")
    np.save(tmp_path / "x.npy", x_test[:7])
    model = cm.load(saved_model)
    assert cli.main(["predict", str(saved_model), str(tmp_path / "x.npy")]) == 0
    labels = [int(v) for v in capsys.readouterr().out.split()]
    assert labels == model.predict(x_test[:7]).argmax(axis=1).tolist()
    assert (
        cli.main(["predict", str(saved_model), str(tmp_path / "x.npy"), "--proba", "-o", str(tmp_path / "p.npy")]) == 0
    )
    assert capsys.readouterr().out.strip() == f"7 predictions written to {tmp_path / 'p.npy'}"
    probs = np.load(tmp_path / "p.npy")
    assert probs.shape == (7, 10) and probs.dtype == np.float32
    np.testing.assert_array_equal(probs, model.predict_proba(x_test[:7]))
    np.save(tmp_path / "one.npy", x_test[0])  # a single sample as a 1-D array
    assert cli.main(["predict", str(saved_model), str(tmp_path / "one.npy")]) == 0
    assert capsys.readouterr().out.split() == [str(labels[0])]


def test_info_of_a_model_file(saved_model, capsys):
    assert cli.main(["info", str(saved_model)]) == 0
    out = capsys.readouterr().out
    assert "Total params:" in out and "loss softmax_cross_entropy" in out


def test_export_onnx(saved_model, tmp_path, capsys):
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    rc = cli.main(["export", str(saved_model), "--onnx", str(tmp_path / "m.onnx")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert (tmp_path / "m.onnx").stat().st_size > 0 and "opset 17" in out


@pytest.mark.parametrize(
    "make_argv, words",
    [
        (lambda p, d: ["evaluate", str(d / "missing.cml"), "--dataset", "digits"], "No such file"),
        (lambda p, d: ["evaluate", str(p), "--dataset", "nope"], "nope"),
        (lambda p, d: ["predict", str(p), str(d / "wrong.npy")], "features"),
        (lambda p, d: ["predict", str(p), str(d / "text.npy")], "text.npy"),
        (lambda p, d: ["evaluate", str(d / "corrupt.cml"), "--dataset", "digits"], "corrupt.cml"),
    ],
)
def test_subcommand_errors_are_one_line_and_status_2(saved_model, tmp_path, capsys, make_argv, words):
    np.save(tmp_path / "wrong.npy", np.zeros((2, 5), np.float32))
    (tmp_path / "text.npy").write_text("not numpy")
    (tmp_path / "corrupt.cml").write_bytes(saved_model.read_bytes()[:100])
    rc = cli.main(make_argv(saved_model, tmp_path))
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and words in err and len(err.strip().splitlines()) == 1, err


def _fashion_mnist_installed() -> bool:
    try:
        cm.datasets.load("fashion_mnist")
        return True
    except (ValueError, OSError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _fashion_mnist_installed(), reason="the Debian package dataset-fashion-mnist is not installed")
def test_readme_main_job_reaches_its_accuracy(tmp_path, capsys):
    """The README's first command in full: Fashion-MNIST to >= 0.88 (about 0.90 in 20
    epochs), saved, reloaded and predicted."""
    rc = cli.main(
        [
            "train",
            "--dataset",
            "fashion_mnist",
            "--quiet",
            "--output",
            str(tmp_path / "m.cml"),
            "--min-accuracy",
            "0.88",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err + out


def test_prune_fine_tunes_saves_and_compares(saved_model, tmp_path, capsys):
    out_path = tmp_path / "pruned.cml"
    rc = cli.main(
        [
            "prune",
            str(saved_model),
            "--sparsity",
            "0.8",
            "--fine-tune-epochs",
            "1",
            "--dataset",
            "digits",
            "--quiet",
            "--json",
            "-o",
            str(out_path),
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "Pruning report (magnitude)" in out and "test accuracy" in out
    assert re.search(r"file size \(no optimizer\)\s+[\d,]+ -> [\d,]+ bytes \(\d+\.\dx smaller\)", out), out
    record = json.loads(out.strip().splitlines()[-1])
    assert record["pruned"]["file_bytes"] < record["dense"]["file_bytes"]
    pruned = cm.load(out_path)
    kernel = pruned.layers[0].get_weights()[0]
    # the gradual schedule ends at exactly 80% of each kernel pruned, which fine-tuning kept
    assert (~pruned._masks[0]).sum() == round(0.8 * kernel.size) and not kernel[~pruned._masks[0]].any()


def test_prune_structured_and_n_m(saved_model, tmp_path, capsys):
    rc = cli.main(["prune", str(saved_model), "--structured", "0.5", "--n-m", "2:4", "-o", str(tmp_path / "s.cml")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "Pruning report (structured)" in out and "Pruning report (n_m)" in out
    pruned = cm.load(tmp_path / "s.cml")
    assert pruned.layers[0].units == 32 and pruned._nm[0] == (2, 4)


@pytest.mark.parametrize(
    "args, match",
    [
        ([], "prune needs --sparsity, --structured and/or --n-m"),
        (["--n-m", "2-4"], "--n-m must be N:M such as 2:4"),
        (["--n-m", "5:4"], "n must be <= m"),
        (["--sparsity", "0.5", "--n-m", "2:4"], "give --sparsity or --n-m, not both"),
        (["--sparsity", "0.5", "--fine-tune-epochs", "1"], "--fine-tune-epochs needs --dataset"),
    ],
)
def test_prune_bad_arguments(saved_model, tmp_path, capsys, args, match):
    rc = cli.main(["prune", str(saved_model), *args, "-o", str(tmp_path / "x.cml")])
    assert rc == 2
    assert re.search(match, capsys.readouterr().err)
