"""Side by side: the same ONNX file in onnxruntime (in process) and through haca over HTTP
(parse, resolve, tract, hash, sign, commit, answer). Checks that outputs agree within a
tolerance and reports median latencies and what haca adds.

Needs a running node that serves for free (`haca devnet --price-per-request 0`) and
`pip install onnxruntime numpy`.

python3 bench/onnx_compare.py --node http://127.0.0.1:7070 --model fixtures/models/mnist-mlp.onnx \
    --label bench/mnist-mlp --shape 1,784 --runs 2000
"""
import argparse
import http.client
import json
import statistics
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import onnxruntime as ort


def post(url, body, content_type="application/json"):
    req = urllib.request.Request(url, data=body, headers={"content-type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        sys.exit(f"{url}: HTTP {e.code}: {e.read().decode()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--node", default="http://127.0.0.1:7070")
    ap.add_argument("--model", required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--shape", required=True, help="input shape, such as 1,784")
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--tolerance", type=float, default=1e-5)
    a = ap.parse_args()

    model_bytes = open(a.model, "rb").read()
    entry = post(f"{a.node}/v1/hub/models/{a.label}", model_bytes, "application/octet-stream")
    print(f"uploaded {a.model} as {a.label} revision {entry['revision']} ({entry['blob_id']})")

    sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    sess_opts = sess.get_session_options()
    name = sess.get_inputs()[0].name
    shape = [int(d) for d in a.shape.split(",")]
    rng = np.random.default_rng(7)
    x = rng.random(shape, dtype=np.float32)
    body = json.dumps({"model": a.label, "input": {name: {"shape": shape, "data": x.ravel().tolist()}}}).encode()

    # Agreement first.
    ref = sess.run(None, {name: x})
    ans = post(f"{a.node}/v1/infer", body)
    worst = 0.0
    for o, want in zip(sess.get_outputs(), ref):
        got = np.array(ans["output"][o.name]["data"], dtype=np.float64).reshape(want.shape)
        worst = max(worst, float(np.max(np.abs(got - want))))
    agree = worst <= a.tolerance
    print(f"max |haca - onnxruntime| = {worst:.3e} ({'within' if agree else 'OVER'} {a.tolerance:g})")

    def timed(fn, n):
        out = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1e3)
        return out

    for _ in range(50):  # warm both
        sess.run(None, {name: x})
        post(f"{a.node}/v1/infer", body)
    # One kept-alive connection, as a real client would hold.
    u = urllib.parse.urlparse(a.node)
    conn = http.client.HTTPConnection(u.hostname, u.port)
    headers = {"content-type": "application/json"}

    def haca_once():
        conn.request("POST", "/v1/infer", body, headers)
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            sys.exit(f"HTTP {r.status}: {data[:300]!r}")

    ort_ms = timed(lambda: sess.run(None, {name: x}), a.runs)
    haca_ms = timed(haca_once, a.runs)
    p50 = statistics.median
    result = {
        "model": a.model,
        "runs": a.runs,
        "onnxruntime": ort.__version__,
        "ort_intra_op_threads": sess_opts.intra_op_num_threads,
        "ort_p50_ms": round(p50(ort_ms), 4),
        "haca_http_p50_ms": round(p50(haca_ms), 4),
        "haca_added_p50_ms": round(p50(haca_ms) - p50(ort_ms), 4),
        "max_abs_diff": worst,
        "agree": agree,
    }
    print(json.dumps(result, indent=2))
    if not agree:
        sys.exit(1)


if __name__ == "__main__":
    main()
