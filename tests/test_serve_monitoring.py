"""The monitoring that ships with customml serve (issue #17): deploy/prometheus/alerts.yml
is valid (promtool check rules) and fires where it should (promtool test rules), and
every metric the rules and the Grafana dashboard name is in a real /metrics scrape
(promtool checks syntax only: a renamed metric would leave a rule that never fires), and the
memory gauge counts what each version holds."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import customml as cm
from serve_support import Server, classifier, rows, sample, save, scrape

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "customml-serve.json"
METRIC = re.compile(r"\b((?:nv|customml|process)_[a-z_]+)\b")

promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    promtool is None, reason="promtool is not installed (Debian: apt-get install prometheus)"
)


@needs_promtool
@pytest.mark.parametrize("command", [["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]])
def test_promtool_accepts_and_unit_tests_the_rules(command):
    run = subprocess.run([promtool, *command], cwd=ALERTS.parent, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def _named() -> set:
    exprs = [ALERTS.read_text()]
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        exprs += [t["expr"] for t in panel["targets"]]
    exprs += [v["query"] for v in json.loads(DASHBOARD.read_text())["templating"]["list"] if v["type"] == "query"]
    return {m for e in exprs for m in METRIC.findall(e)}


def test_every_metric_in_the_rules_and_dashboard_is_scraped(tmp_path):
    named = _named()
    assert {"nv_inference_request_duration_seconds_bucket", "process_resident_memory_bytes"} <= named
    save(classifier(), tmp_path / "m.cml")
    with Server(tmp_path / "m.cml", max_batch_size=4) as server:
        assert server.infer("m", rows(2)).status_code == 200
        assert server.post("/v2/models/m/infer", data=b"{").status_code == 400  # a failure series
        scraped = {name for name, _ in scrape(server)}
    assert named <= scraped, f"named in deploy/ but not scraped: {sorted(named - scraped)}"


def test_the_deployment_files_use_real_flags_and_routes():
    """Not a cluster (none here): the KServe manifest's and the Dockerfile's command lines
    parse with customml serve's own flags, and the probes point at the health routes."""
    import argparse

    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    from customml.serve.config import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    manifest = yaml.safe_load((ROOT / "deploy" / "kserve" / "inferenceservice.yaml").read_text())
    container = manifest["spec"]["predictor"]["containers"][0]
    config = config_from_args(parser.parse_args(container["args"]))
    assert config.max_batch_size > 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert (
        manifest["spec"]["predictor"]["terminationGracePeriodSeconds"] > config.drain_timeout_s + config.drain_delay_s
    )
    docker = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (.*)$", docker, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (.*)$", docker, re.M).group(1))
    assert entry[:2] == ["customml", "serve"]
    config = config_from_args(parser.parse_args(entry[2:] + cmd))
    assert config.port == container["ports"][0]["containerPort"]


def test_the_memory_gauge_counts_the_plan_each_version_runs(tmp_path):
    """The gauge is the parameters plus the inference plan's buffers: an int8 version's plan
    (codes, not a packed float copy) holds less than its float twin's."""
    x = rows(64)
    model = classifier()
    save(model, tmp_path / "repo" / "m" / "1" / "model.cml")
    save(cm.quantize.int8(model, calibration=x), tmp_path / "repo" / "m" / "2" / "model.cml")
    (tmp_path / "repo" / "m" / "config.json").write_text(json.dumps({"split": {"1": 0.5, "2": 0.5}}))
    with Server(tmp_path / "repo") as server:
        m = scrape(server)
    gauge = {v: sample(m, "customml_model_memory_bytes", model="m", version=v) for v in ("1", "2")}
    for v in ("1", "2"):
        served = cm.load(tmp_path / "repo" / "m" / v / "model.cml")
        served.predict(x[:1])
        assert gauge[v] == 4 * served.count_params() + served._net.inference_bytes > 4 * served.count_params()
    assert gauge["2"] < gauge["1"], gauge
