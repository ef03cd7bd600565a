#!/usr/bin/env python3
"""ZKML side by side: EZKL (halo2/KZG) against haca's `zk` prover on the digit models.

    python3 bench/zk_compare.py [--haca target/release/haca] [--models digits-mlp-56,digits-cnn]
                                [--proofs 5] [--json] [--skip-ezkl]

For each model (fixtures/models/NAME.onnx) and each system it measures: median prove time and
median verify time over --proofs held-out digits, proof size, peak RSS of the proving process,
setup time, and accuracy over the whole held-out set (fixtures/digits/, 360 digits): float
accuracy (onnxruntime), accuracy of the quantized (proved) outputs, and argmax agreement
between quantized and float outputs. Prints a markdown table (or JSON with --json).

EZKL: PyPI `ezkl` in its own venv (its pins conflict with other tools), by default
$HOME/.cache/haca-ezkl-venv; made here if missing (`python3 -m venv V && V/bin/pip install
ezkl==23.0.5 onnxruntime numpy`). Steps: gen_settings (defaults: input and output public,
params fixed), calibrate_settings (target --target, on --calibration held-out digits),
compile_circuit, gen_srs (a local test SRS for the calibrated logrows; `get_srs` downloads),
setup; then per digit gen_witness, prove, verify. Each prove and each verify runs in its own
child process; times are measured inside it around ezkl.prove / ezkl.verify (no interpreter
start-up), peak RSS is the child's ru_maxrss (os.wait4), so it includes the Python interpreter
and loading the proving key. Proof size is the raw proof bytes (`proof` in the proof JSON),
without the public instances (input 784 + output 10 field elements).

haca (with --haca BIN), per its CLI contract:
    BIN zk prove MODEL --input IN.json --out PROOF.json -> {"prove_ms", "setup_ms", "proof_bytes", "output"}
    BIN zk verify PROOF.json                            -> {"ok": true, "verify_ms"}
    BIN zk eval MODEL --images U8 --labels U8           -> {"n", "float_accuracy", "quantized_accuracy", "argmax_agreement"}
Peak RSS is the prove child's ru_maxrss, as for EZKL.

This driver needs only the Python standard library; the EZKL work runs in the EZKL venv's
Python (this file re-run with --ezkl-worker).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
IMAGES = os.path.join(ROOT, "fixtures/digits/heldout-images.u8")
LABELS = os.path.join(ROOT, "fixtures/digits/heldout-labels.u8")
EZKL_VERSION = "23.0.5"
SHAPES = {"digits-mlp-56": [1, 784], "mnist-mlp": [1, 784], "digits-cnn": [1, 1, 28, 28]}


def load_digits():
    with open(IMAGES, "rb") as f:
        raw = f.read()
    with open(LABELS, "rb") as f:
        labels = list(f.read())
    assert len(raw) == 784 * len(labels), "images and labels disagree"
    images = [[b / 255.0 for b in raw[i * 784 : (i + 1) * 784]] for i in range(len(labels))]
    return images, labels


def spread(n_total, k):
    """k indices spread evenly over range(n_total) (deterministic)."""
    k = min(k, n_total)
    return [(i * n_total) // k for i in range(k)]


def run_child(cmd, timeout=None):
    """Runs cmd; returns (stdout, stderr, rc, peak RSS in bytes) of that one child."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err)
        t0 = time.time()
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if timeout and time.time() - t0 > timeout:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.01)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return out.read().decode(), err.read().decode(), p.returncode, ru.ru_maxrss * 1024


def last_json_line(text, what):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{what}: no JSON line in output:\n{text[-2000:]}")


# --- EZKL worker (runs inside the EZKL venv) ----------------------------------------------


def worker(args):
    import ezkl

    a = json.loads(args)
    step, d = a["step"], a["dir"]
    p = lambda n: os.path.join(d, n)  # noqa: E731
    out = {}
    if step == "setup":
        t = time.time()
        assert ezkl.gen_settings(a["model"], p("settings.json"))
        assert ezkl.calibrate_settings(
            p("calibration.json"), a["model"], p("settings.json"), a["target"]
        )
        out["calibrate_ms"] = (time.time() - t) * 1e3
        assert ezkl.compile_circuit(a["model"], p("circuit.ezkl"), p("settings.json"))
        s = json.load(open(p("settings.json")))
        logrows = s["run_args"]["logrows"]
        srs = os.path.join(a["srs_dir"], f"kzg{logrows}.srs")
        if not os.path.exists(srs):
            t = time.time()
            ezkl.gen_srs(srs + ".tmp", logrows)
            os.replace(srs + ".tmp", srs)
            out["gen_srs_ms"] = (time.time() - t) * 1e3
        t = time.time()
        assert ezkl.setup(p("circuit.ezkl"), p("vk.key"), p("pk.key"), srs)
        out["setup_ms"] = (time.time() - t) * 1e3
        out.update(
            srs=srs,
            logrows=logrows,
            input_scale=s["run_args"]["input_scale"],
            param_scale=s["run_args"]["param_scale"],
            scale_rebase_multiplier=s["run_args"]["scale_rebase_multiplier"],
            num_rows=s["num_rows"],
            total_assignments=s["total_assignments"],
            check_mode=s.get("check_mode"),
            visibility=[str(s["run_args"][k]) for k in ("input_visibility", "output_visibility", "param_visibility")],
            pk_bytes=os.path.getsize(p("pk.key")),
            vk_bytes=os.path.getsize(p("vk.key")),
        )
    elif step == "eval":
        import numpy as np
        import onnxruntime as ort

        s = json.load(open(p("settings.json")))
        oscale = s["model_output_scales"][0]
        sess = ort.InferenceSession(a["model"], providers=["CPUExecutionProvider"])
        raw = np.fromfile(IMAGES, np.uint8).reshape(-1, 784)
        labels = np.fromfile(LABELS, np.uint8)
        xs = (raw.astype(np.float32) / 255.0).astype(np.float32)
        fl, q, agree = 0, 0, 0
        max_err = 0.0
        t = time.time()
        for x, y in zip(xs, labels):
            f = sess.run(None, {sess.get_inputs()[0].name: x.reshape(a["shape"])})[0].reshape(-1)
            with open(p("eval-in.json"), "w") as fh:
                json.dump({"input_data": [[float(v) for v in x]]}, fh)
            w = ezkl.gen_witness(p("eval-in.json"), p("circuit.ezkl"), p("eval-w.json"))
            qo = np.array([ezkl.felt_to_float(v, oscale) for v in w["outputs"][0]])
            fa, qa = int(np.argmax(f)), int(np.argmax(qo))
            fl += fa == y
            q += qa == y
            agree += fa == qa
            max_err = max(max_err, float(np.abs(qo - f).max()))
        n = len(labels)
        out = dict(
            n=n,
            float_accuracy=fl / n,
            quantized_accuracy=q / n,
            argmax_agreement=agree / n,
            max_abs_logit_error=max_err,
            witness_ms_mean=(time.time() - t) * 1e3 / n,
        )
    elif step == "prove":
        with open(p("in.json"), "w") as fh:
            json.dump({"input_data": [a["input"]]}, fh)
        ezkl.gen_witness(p("in.json"), p("circuit.ezkl"), p("w.json"))
        t = time.time()
        assert ezkl.prove(p("w.json"), p("circuit.ezkl"), p("pk.key"), p("proof.json"), a["srs"])
        out["prove_ms"] = (time.time() - t) * 1e3
        pr = json.load(open(p("proof.json")))
        out["proof_bytes"] = len(pr["proof"])
        out["proof_json_bytes"] = os.path.getsize(p("proof.json"))
        out["output"] = [float(v) for v in pr["pretty_public_inputs"]["rescaled_outputs"][0]]
    elif step == "verify":
        t = time.time()
        ok = ezkl.verify(p("proof.json"), p("settings.json"), p("vk.key"), a["srs"])
        out = {"ok": bool(ok), "verify_ms": (time.time() - t) * 1e3}
    print(json.dumps(out))


# --- drivers ---------------------------------------------------------------------------------


def ensure_ezkl_venv(venv):
    py = os.path.join(venv, "bin", "python")
    if os.path.exists(py) and subprocess.run([py, "-c", "import ezkl, onnxruntime, numpy"], capture_output=True).returncode == 0:
        return py
    print(f"making the EZKL venv at {venv} (ezkl=={EZKL_VERSION})", file=sys.stderr)
    subprocess.check_call([sys.executable, "-m", "venv", venv])
    subprocess.check_call([py, "-m", "pip", "install", "-q", f"ezkl=={EZKL_VERSION}", "onnxruntime", "numpy"])
    return py


def ezkl_call(py, step, **kw):
    cmd = [py, os.path.abspath(__file__), "--ezkl-worker", json.dumps(dict(step=step, **kw))]
    out, err, rc, rss = run_child(cmd)
    if rc != 0:
        raise RuntimeError(f"ezkl {step} failed (rc {rc}):\n{err[-3000:]}")
    return last_json_line(out, f"ezkl {step}"), rss


def bench_ezkl(py, name, model, shape, images, picks, a, log):
    d = os.path.join(a.workdir, "ezkl", name)
    os.makedirs(d, exist_ok=True)
    srs_dir = os.path.join(a.workdir, "ezkl")
    cal = [v for i in spread(len(images), a.calibration) for v in images[i]]
    with open(os.path.join(d, "calibration.json"), "w") as f:
        json.dump({"input_data": [cal]}, f)
    t = time.time()
    setup, setup_rss = ezkl_call(py, "setup", dir=d, model=model, target=a.target, srs_dir=srs_dir)
    log(f"ezkl {name}: settings/calibrate/compile/srs/setup {time.time() - t:.1f}s: {setup}")
    t = time.time()
    ev, _ = ezkl_call(py, "eval", dir=d, model=model, shape=shape)
    log(f"ezkl {name}: eval over {ev['n']} digits {time.time() - t:.1f}s: {ev}")
    proves, verifies, rss, sizes = [], [], [], []
    for i in picks:
        pr, r = ezkl_call(py, "prove", dir=d, srs=setup["srs"], input=images[i])
        ve, _ = ezkl_call(py, "verify", dir=d, srs=setup["srs"])
        if not ve["ok"]:
            raise RuntimeError(f"ezkl {name}: proof of digit {i} did not verify")
        proves.append(pr["prove_ms"])
        verifies.append(ve["verify_ms"])
        rss.append(r)
        sizes.append(pr["proof_bytes"])
        log(f"ezkl {name}: digit {i}: prove {pr['prove_ms']:.0f} ms, verify {ve['verify_ms']:.1f} ms, "
            f"proof {pr['proof_bytes']} B, peak RSS {r / 2**20:.0f} MiB")
    return dict(
        system=f"EZKL {EZKL_VERSION}",
        model=name,
        prove_ms=statistics.median(proves),
        verify_ms=statistics.median(verifies),
        proof_bytes=max(sizes),
        peak_rss_bytes=max(rss),
        setup_ms=setup["setup_ms"],
        float_accuracy=ev["float_accuracy"],
        quantized_accuracy=ev["quantized_accuracy"],
        argmax_agreement=ev["argmax_agreement"],
        detail=dict(setup, setup_peak_rss_bytes=setup_rss, eval=ev, prove_ms_all=proves, verify_ms_all=verifies),
    )


def bench_haca(bin_, name, model, shape, images, picks, a, log):
    d = os.path.join(a.workdir, "haca", name)
    os.makedirs(d, exist_ok=True)
    out, err, rc, _ = run_child([bin_, "zk", "eval", model, "--images", IMAGES, "--labels", LABELS])
    if rc != 0:
        raise RuntimeError(f"haca zk eval {name} failed (rc {rc}):\n{err[-3000:]}")
    ev = last_json_line(out, "haca zk eval")
    log(f"haca {name}: eval {ev}")
    proves, verifies, rss, sizes, setups = [], [], [], [], []
    for i in picks:
        inp, proof = os.path.join(d, f"in-{i}.json"), os.path.join(d, f"proof-{i}.json")
        with open(inp, "w") as f:
            json.dump({"input": {"shape": shape, "data": images[i]}}, f)
        out, err, rc, r = run_child([bin_, "zk", "prove", model, "--input", inp, "--out", proof])
        if rc != 0:
            raise RuntimeError(f"haca zk prove {name} failed (rc {rc}):\n{err[-3000:]}")
        pr = last_json_line(out, "haca zk prove")
        out, err, rc, _ = run_child([bin_, "zk", "verify", proof])
        ve = last_json_line(out, "haca zk verify") if rc == 0 else {"ok": False}
        if rc != 0 or not ve.get("ok"):
            raise RuntimeError(f"haca {name}: proof of digit {i} did not verify:\n{err[-3000:]}")
        proves.append(pr["prove_ms"])
        verifies.append(ve["verify_ms"])
        setups.append(pr.get("setup_ms", 0.0))
        rss.append(r)
        sizes.append(pr["proof_bytes"])
        log(f"haca {name}: digit {i}: prove {pr['prove_ms']:.0f} ms, verify {ve['verify_ms']:.1f} ms, "
            f"proof {pr['proof_bytes']} B, peak RSS {r / 2**20:.0f} MiB")
    return dict(
        system="haca",
        model=name,
        prove_ms=statistics.median(proves),
        verify_ms=statistics.median(verifies),
        proof_bytes=max(sizes),
        peak_rss_bytes=max(rss),
        setup_ms=statistics.median(setups),
        float_accuracy=ev["float_accuracy"],
        quantized_accuracy=ev["quantized_accuracy"],
        argmax_agreement=ev["argmax_agreement"],
        detail=dict(eval=ev, prove_ms_all=proves, verify_ms_all=verifies),
    )


def fmt_ms(ms):
    return f"{ms / 1e3:.2f} s" if ms >= 1000 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def fmt_bytes(b):
    return f"{b / 2**20:.1f} MiB" if b >= 2**20 else f"{b / 1024:.1f} KiB" if b >= 1024 else f"{b} B"


def table(rows):
    ezkl_prove = {r["model"]: r["prove_ms"] for r in rows if r["system"].startswith("EZKL")}
    lines = [
        "| system | model | prove (median) | verify (median) | proof size | peak RSS (prove) | setup | float acc | quantized acc | argmax agreement | prove time / EZKL |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = ezkl_prove.get(r["model"])
        ratio = f"{r['prove_ms'] / base:.2g}x" if base else "-"
        lines.append(
            f"| {r['system']} | {r['model']} | {fmt_ms(r['prove_ms'])} | {fmt_ms(r['verify_ms'])} | "
            f"{fmt_bytes(r['proof_bytes'])} | {fmt_bytes(r['peak_rss_bytes'])} | {fmt_ms(r['setup_ms'])} | "
            f"{r['float_accuracy']:.4f} | {r['quantized_accuracy']:.4f} | {r['argmax_agreement']:.4f} | {ratio} |"
        )
    return "\n".join(lines)


def machine():
    m = {"nproc": os.cpu_count(), "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                m["cpu"] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        m["nproc"] = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)
    except (OSError, ValueError):
        pass
    return m


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--ezkl-worker":
        return worker(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--haca", metavar="BIN", help="haca binary; without it only EZKL runs")
    ap.add_argument("--models", default="digits-mlp-56,digits-cnn", help="names under fixtures/models/")
    ap.add_argument("--proofs", type=int, default=5, help="held-out digits proved per model and system")
    ap.add_argument("--calibration", type=int, default=40, help="held-out digits EZKL calibrates on")
    ap.add_argument("--target", default="resources", choices=["resources", "accuracy"])
    ap.add_argument("--ezkl-venv", default=os.path.expanduser("~/.cache/haca-ezkl-venv"))
    ap.add_argument("--skip-ezkl", action="store_true")
    ap.add_argument("--workdir", help="keeps keys, SRS and proofs here (default: a temporary dir)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    a = ap.parse_args()
    tmp = None
    if not a.workdir:
        tmp = tempfile.TemporaryDirectory(prefix="zk-compare-")
        a.workdir = tmp.name
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    images, labels = load_digits()
    picks = spread(len(images), a.proofs)
    rows = []
    py = None if a.skip_ezkl else ensure_ezkl_venv(a.ezkl_venv)
    for name in a.models.split(","):
        model = os.path.join(ROOT, "fixtures/models", f"{name}.onnx")
        shape = SHAPES.get(name, [1, 784])
        if py:
            rows.append(bench_ezkl(py, name, model, shape, images, picks, a, log))
        if a.haca:
            rows.append(bench_haca(os.path.abspath(a.haca), name, model, shape, images, picks, a, log))
    report = {"machine": machine(), "proofs_per_model": len(picks), "heldout": len(labels), "rows": rows}
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        m = report["machine"]
        print(f"{m.get('cpu', '?')}, nproc {m['nproc']}, {m['date']}; {len(picks)} proofs per row, "
              f"accuracy over {len(labels)} held-out digits\n")
        print(table(rows))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
