"""customml serve speaks the Open Inference Protocol (V2) REST API (issue #17): a standard
client (tritonclient, in JSON and in binary mode) gets exactly what model.predict returns,
for float, int8 and pruned models; errors come as {"error": ...} with the protocol's
status codes. A real uvicorn server on a loopback port, bounded requests."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import customml as cm
from serve_support import FEATURES, Server, classifier, rows, save

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed")


def _models(tmp_path):
    """name -> saved model: softmax classifier, its int8 and pruned copies, a binary
    classifier (one logit) and a regression model (no probabilities or class)."""
    base = classifier()
    x = rows(64, seed=5)
    pruned = classifier(seed=3)
    cm.prune.magnitude(pruned, 0.75)
    regression = cm.Sequential([cm.layers.Dense(8, activation="tanh"), cm.layers.Dense(3)], input_dim=FEATURES, seed=4)
    regression.compile(optimizer="sgd", loss="mse")
    models = {
        "float": base,
        "int8": cm.quantize.int8(base, x),
        "pruned": pruned,
        "binary": classifier(seed=2, classes=1, loss="binary_cross_entropy"),
        "regression": regression,
    }
    for name, model in models.items():
        save(model, tmp_path / "repo" / name / "1" / "model.cml")
    return {name: cm.load(tmp_path / "repo" / name / "1" / "model.cml") for name in models}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve_protocol")
    models = _models(tmp)
    with Server(tmp / "repo", max_body_bytes=1 << 16) as server:
        yield server, models


def _expected(model, x):
    logits = model.predict(x)
    out = {"logits": logits}
    if model._loss.classification:
        out["probabilities"] = model.predict_proba(x)
        out["class"] = (logits[:, 0] > 0).astype(np.int64) if logits.shape[1] == 1 else logits.argmax(axis=1)
    return out


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("name", ["float", "int8", "pruned", "binary", "regression"])
def test_tritonclient_bit_for_bit(served, name, binary):
    server, models = served
    client = httpclient.InferenceServerClient(server.url, connection_timeout=20, network_timeout=20)
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
        meta = client.get_model_metadata(name)
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, FEATURES]}]
        for n in (1, 3, 17):
            x = rows(n, seed=n)
            expected = _expected(models[name], x)
            inp = httpclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            outs = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in expected]
            result = client.infer(name, [inp], outputs=outs, request_id=f"r{n}")
            assert result.get_response()["model_version"] == "1" and result.get_response()["id"] == f"r{n}"
            for o, want in expected.items():
                got = result.as_numpy(o)
                assert got.dtype == want.dtype and got.shape == want.shape, o
                assert np.array_equal(got.view(np.uint8), np.ascontiguousarray(want).view(np.uint8)), (name, o, n)
            # No outputs named: the logits alone, in binary (tritonclient asks for binary then).
            plain = client.infer(name, [inp])
            assert [o["name"] for o in plain.get_response()["outputs"]] == ["logits"]
            assert np.array_equal(plain.as_numpy("logits"), expected["logits"])
    finally:
        client.close()


def test_versioned_routes_and_metadata(served):
    server, models = served
    x = rows(2)
    r = server.infer("float", x, version="1")
    assert r.status_code == 200 and r.headers["x-model-version"] == "1"
    assert np.array_equal(
        np.array(r.json()["outputs"][0]["data"], np.float32).reshape(2, -1), models["float"].predict(x)
    )
    assert server.get("/v2/models/float/versions/1").json()["versions"] == ["1"]
    assert server.get("/v2/models/float/versions/1/ready").status_code == 200
    meta = server.get("/v2").json()
    assert meta["name"] == "customml" and "binary_tensor_data" in meta["extensions"]
    assert server.get("/v2/health/live").status_code == 200 and server.get("/v2/health/ready").status_code == 200


def _binary_body(x: np.ndarray, name: str = "input", size=None) -> tuple:
    raw = x.astype("<f4").tobytes()
    head = (
        f'{{"inputs":[{{"name":"{name}","shape":{list(x.shape)},"datatype":"FP32",'
        f'"parameters":{{"binary_data_size":{len(raw) if size is None else size}}}}}]}}'
    ).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head))}


def _input(data, shape=(1, FEATURES), datatype="FP32", name="input") -> dict:
    return {"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": data}]}


ONE_ROW = [0.5] * FEATURES


@pytest.mark.parametrize(
    "body, status, words",
    [
        (b'{"inputs": [', 400, "malformed JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (_input(ONE_ROW, shape=(1, FEATURES + 1)), 400, "input 'input' must have shape"),
        (_input(ONE_ROW, shape=(FEATURES,)), 400, "input 'input' must have shape"),
        (_input(ONE_ROW, datatype="FP64"), 400, "input 'input' must have datatype FP32"),
        (_input(ONE_ROW, name="x"), 400, "unexpected input 'x'"),
        (_input(ONE_ROW[:-1]), 400, f"must hold {FEATURES} numbers"),
        (_input(["a"] * FEATURES), 400, "must hold"),
        (_input([[0.5, 1.0]] * 6 + [[0.5]]), 400, "'data'"),
        ({"inputs": []}, 400, "'inputs' must be a list of one input"),
        ({**_input(ONE_ROW), "outputs": [{"name": "nope"}]}, 400, "unknown output 'nope'"),
    ],
)
def test_malformed_requests_are_400_naming_the_problem(served, body, status, words):
    server, _ = served
    kw = {"data": body} if isinstance(body, bytes) else {"json": body}
    r = server.post("/v2/models/float/infer", **kw)
    assert r.status_code == status and words in r.json()["error"], r.text


def test_non_finite_input_is_400_naming_row_and_column(served):
    server, _ = served
    x = rows(4)
    x[2, 7] = np.inf
    body, headers = _binary_body(x)
    r = server.post("/v2/models/float/infer", data=body, headers=headers)
    assert r.status_code == 400 and "row 2, column 7" in r.json()["error"], r.text
    # JSON cannot spell NaN, but Python's json (and clients built on it) writes it: named too.
    data = [0.0] * (2 * FEATURES)
    data[FEATURES + 3] = float("nan")
    import json

    r = server.post("/v2/models/float/infer", data=json.dumps(_input(data, shape=(2, FEATURES))))
    assert r.status_code == 400 and "row 1, column 3" in r.json()["error"], r.text


def test_binary_data_size_mismatch_is_400(served):
    server, _ = served
    body, headers = _binary_body(rows(2), size=8)
    r = server.post("/v2/models/float/infer", data=body, headers=headers)
    assert r.status_code == 400 and "binary_data_size" in r.json()["error"]
    body, headers = _binary_body(rows(2))
    r = server.post("/v2/models/float/infer", data=body + struct.pack("<f", 1.0), headers=headers)
    assert r.status_code == 400 and "no input claims" in r.json()["error"]
    r = server.post("/v2/models/float/infer", data=body, headers={"Inference-Header-Content-Length": "99999"})
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]


def test_unknown_model_or_version_is_404(served):
    server, _ = served
    assert server.infer("nope", rows(1)).status_code == 404
    r = server.infer("float", rows(1), version="7")
    assert r.status_code == 404 and "version" in r.json()["error"]
    assert server.get("/v2/models/nope").status_code == 404
    assert server.get("/v2/models/nope/ready").status_code == 404
    r = server.get("/v2/nothing/here")
    assert r.status_code == 404 and "error" in r.json()


@pytest.mark.parametrize("name", ["..", ".hidden", "a%2F..%2F..", "%2E%2E", "a\\b"])
def test_names_cannot_leave_the_repository(served, name):
    server, _ = served
    r = server.post(f"/v2/repository/models/{name}/load")
    assert r.status_code in (400, 404), r.text
    assert "error" in r.json()
    assert server.infer(name, rows(1)).status_code == 404


def test_body_over_the_limit_is_413(served):
    server, _ = served
    x = rows(2000)  # 96 kB of binary data against a 64 kB limit
    body, headers = _binary_body(x)
    r = server.post("/v2/models/float/infer", data=body, headers=headers)
    assert r.status_code == 413 and "limit" in r.json()["error"]

    def chunks():  # no Content-Length: the limit holds while the body streams in
        yield body[:40000]
        yield body[40000:]

    r = server.post("/v2/models/float/infer", data=chunks(), headers=headers)
    assert r.status_code == 413


def test_failures_are_counted_by_model_version_and_status(served):
    from serve_support import sample, scrape

    server, _ = served
    before = scrape(server)
    server.post("/v2/models/regression/infer", data=b"{")
    after = scrape(server)
    key = dict(model="regression", version="1", reason="400")
    assert (
        sample(after, "nv_inference_request_failure_total", **key)
        == sample(before, "nv_inference_request_failure_total", **key) + 1
    )


def test_api_key_guards_every_route_but_health(tmp_path):
    save(classifier(), tmp_path / "m.cml")
    with Server(tmp_path / "m.cml", api_key="s3cret") as server:
        assert server.get("/v2/health/live").status_code == 200
        assert server.get("/v2/health/ready").status_code == 200
        for path in ("/v2", "/v2/models/m", "/metrics"):
            r = server.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
            assert server.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert server.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert server.infer("m", rows(1)).status_code == 401
        assert server.infer("m", rows(1), headers={"Authorization": "Bearer s3cret"}).status_code == 200
