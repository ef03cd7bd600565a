#!/usr/bin/env python3
"""What live case views cost the node: runs/s and p99 of `haca loadgen` on a devnet, with no
watchers and with N watchers of one case's live view (`GET /v1/cases/{id}/events`), each run
measured in the same session, and the node's RSS after the watchers left.

    python3 bench/case_watchers.py --haca target/release/haca --watchers 200 --runs 3

Only the standard library: every watcher is a raw HTTP/1.1 connection that reads the SSE
stream until it is told to stop. Watchers use several review tokens (the node caps live views
per token), as a panel shared by a team would.
"""

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request


def http(method, url, body=None, token=None):
    req = urllib.request.Request(url, method=method)
    if body is not None:
        req.data = json.dumps(body).encode()
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {url}: HTTP {e.code}: {e.read().decode(errors='replace')}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Watcher(threading.Thread):
    def __init__(self, host, port, case, token):
        super().__init__(daemon=True)
        self.host, self.port, self.case, self.token = host, port, case, token
        self.events = 0
        self.stop = threading.Event()
        self.sock = None

    def run(self):
        s = socket.create_connection((self.host, self.port))
        self.sock = s
        s.sendall(
            f"GET /v1/cases/{self.case}/events HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: Bearer {self.token}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        s.settimeout(1.0)
        while not self.stop.is_set():
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            self.events += chunk.count(b"event: case")
        s.close()


def loadgen(haca, url, requests, concurrency):
    out = subprocess.run(
        [haca, "loadgen", "--node", url, "--requests", str(requests),
         "--concurrency", str(concurrency), "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--haca", default="target/release/haca")
    ap.add_argument("--watchers", type=int, default=200)
    ap.add_argument("--case-runs", type=int, default=20)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()

    data = tempfile.mkdtemp(prefix="haca-watchers-")
    node = subprocess.Popen(
        [a.haca, "devnet", "--listen", "127.0.0.1:0", "--data-dir", data, "--no-llm",
         "--no-enclave", "--price-per-request", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "HACA_LOG": "warn"},
    )
    url = None
    for line in node.stdout:
        m = re.match(r"\s*url:\s*(\S+)", line)
        if m:
            url = m.group(1)
            break
    threading.Thread(target=lambda: [None for _ in node.stdout], daemon=True).start()
    host, port = url.split("//")[1].split(":")
    port = int(port)
    try:
        for _ in range(100):
            try:
                if http("GET", f"{url}/readyz")["ready"]:
                    break
            except Exception:
                pass
            time.sleep(0.2)
        op = open(os.path.join(data, "operator.token")).read().strip()
        tokens = [http("POST", f"{url}/v1/review/tokens", {"role": "viewer"}, op)["token"]
                  for _ in range((a.watchers + 15) // 16)]
        example = json.load(open(os.path.join(data, "example-input.json")))
        runs = [http("POST", f"{url}/v1/infer", {"model": "example/mnist-mlp", "input": example})["run_id"]
                for _ in range(a.case_runs)]
        case = http("POST", f"{url}/v1/cases", {"runs": runs}, op)["id"]
        rows = []
        for i in range(a.runs):
            base = loadgen(a.haca, url, a.requests, a.concurrency)
            ws = [Watcher(host, port, case, tokens[j // 16]) for j in range(a.watchers)]
            for w in ws:
                w.start()
            time.sleep(3)
            watched = loadgen(a.haca, url, a.requests, a.concurrency)
            events = sum(w.events for w in ws)
            for w in ws:
                w.stop.set()
            for w in ws:
                w.join(timeout=5)
            time.sleep(15)  # the case's reader stops once its last watcher left
            rows.append((base, watched, events, rss_kib(node.pid)))
            print(f"run {i + 1}: {base['runs_per_s']:.0f} runs/s p99 {base['p99_ms']:.1f} ms without; "
                  f"{watched['runs_per_s']:.0f} runs/s p99 {watched['p99_ms']:.1f} ms with "
                  f"{a.watchers} watchers ({events} events); RSS after {rows[-1][3] // 1024} MiB",
                  flush=True)
        med = lambda xs: statistics.median(xs)
        b = med([r[0]["runs_per_s"] for r in rows])
        w = med([r[1]["runs_per_s"] for r in rows])
        print(json.dumps({
            "watchers": a.watchers,
            "runs_per_s_without": round(b, 1),
            "runs_per_s_with": round(w, 1),
            "ratio": round(w / b, 3),
            "p99_ms_without": round(med([r[0]["p99_ms"] for r in rows]), 1),
            "p99_ms_with": round(med([r[1]["p99_ms"] for r in rows]), 1),
            "rss_mib_after": rows[-1][3] // 1024,
        }))
    finally:
        node.kill()


if __name__ == "__main__":
    sys.exit(main())
