"""The ``customml`` command: ``train`` (exit 0, 1 below --min-accuracy, 2 on bad
input with "error:" on stderr) and ``info`` (JSON build information)."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys

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
    assert set(record) >= {"dataset", "test_loss", "test_accuracy", "train_seconds", "predict_p50_us",
                           "predict_p99_us"}
    assert record["dataset"] == "iris"
    assert abs(record["test_accuracy"] - _accuracy(out)) <= 5e-5  # printed with 4 decimals


def test_train_below_min_accuracy_returns_1(capsys):
    rc = cli.main(["train", "--dataset", "digits", *FAST, "--min-accuracy", "1.01"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert re.search(r"error: test accuracy \d\.\d{4} is below --min-accuracy 1.01", err), err
    _accuracy(out)  # the result is still reported


def test_train_reaching_min_accuracy_returns_0(capsys):
    rc = cli.main(["train", "--dataset", "breast_cancer", "--epochs", "5", "--hidden", "16", "--quiet",
                   "--min-accuracy", "0.5"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert _accuracy(out) >= 0.5


@pytest.mark.parametrize("argv, words", [
    (["train", "--dataset", "mnist_typo"], "mnist_typo"),
    (["train", "--dataset", "digits", "--device", "tpu", *FAST], "tpu"),
    (["train", "--dataset", "digits", "--activation", "swish", *FAST], "activation"),
    (["train", "--dataset", "digits", "--dropout", "1.0", *FAST], "rate"),
    (["train", "--dataset", "digits", "--lr", "-1", *FAST], "learning_rate"),
    (["train", "--dataset", "digits", "--label-smoothing", "2", *FAST], "label_smoothing"),
])
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
    proc = subprocess.run([sys.executable, "-m", "customml", "train", "--dataset", "nope"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stderr


def test_console_script_is_registered():
    scripts = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "customml"]
    assert [e.value for e in scripts] == ["customml.cli:main"]
