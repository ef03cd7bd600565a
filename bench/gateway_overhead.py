"""Side by side: latency a gateway adds per chat request, haca against LiteLLM's proxy, on the
same upstream, in one run.

    python bench/gateway_overhead.py --haca target/release/haca [--requests 200]

The upstream is a minimal OpenAI-compatible server in this script (a fixed answer, streamed or
not), so what is measured is each gateway's own work: parse, route, call upstream, answer; and
for haca also the receipt (signed, stored in SQLite with its settlement record) that every
answer carries. Requests are sequential, non-streaming; the script prints the median latency
direct to the upstream, through haca and through LiteLLM, and each gateway's added median.
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, threading, time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = "The quick brown fox jumps over the lazy dog."
LITE_KEY = "sk-haca-bench-0123456789abcdef0123456789abcdef"


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def setup(self):
        super().setup()
        # Headers and body go out as two writes: without NODELAY, Nagle holds the body back
        # until a pooled client's delayed ACK (40 ms), and every pooling gateway pays it.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        base = {"id": "chatcmpl-1", "created": 0, "model": body["model"]}
        usage = {"prompt_tokens": 5, "completion_tokens": 10, "total_tokens": 15}
        if body.get("stream"):
            events = [
                dict(base, object="chat.completion.chunk", choices=[{"index": 0, "delta": {"role": "assistant", "content": ANSWER}, "finish_reason": None}]),
                dict(base, object="chat.completion.chunk", choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]),
                dict(base, object="chat.completion.chunk", choices=[], usage=usage),
            ]
            out = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            ctype = "text/event-stream"
        else:
            out = json.dumps(dict(base, object="chat.completion", usage=usage, choices=[
                {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}]))
            ctype = "application/json"
        data = out.encode()
        self.send_response(200)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_http(url, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception as e:
            if getattr(e, "code", None):
                return
            time.sleep(0.3)
    raise SystemExit(f"{url} did not come up")


def timed(url, model, n, key=None):
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Say something."}],
                       "max_tokens": 16}).encode()
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    out = []
    opener = urllib.request.build_opener()
    for _ in range(n):
        t = time.perf_counter()
        with opener.open(urllib.request.Request(url, body, headers)) as r:
            v = json.load(r)
        out.append((time.perf_counter() - t) * 1000)
        assert v["choices"][0]["message"]["content"] == ANSWER, v
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--haca", required=True)
    ap.add_argument("--requests", type=int, default=200)
    a = ap.parse_args()
    up_port = free_port()
    srv = ThreadingHTTPServer(("127.0.0.1", up_port), Upstream)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    up = f"http://127.0.0.1:{up_port}/v1"

    data = tempfile.mkdtemp(prefix="haca-bench-")
    haca = subprocess.Popen([a.haca, "devnet", "--listen", "127.0.0.1:0", "--data-dir", data,
                             "--price-per-request", "0", "--no-llm",
                             "--provider", f"name=up,url={up},models=fast"],
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, HACA_LOG="warn"))
    haca_url = None
    for line in haca.stdout:
        if line.strip().startswith("url:"):
            haca_url = line.split("url:", 1)[1].strip()
            break
    lite_port = free_port()
    lite_bin = shutil.which("litellm") or os.path.join(os.path.dirname(sys.executable), "litellm")
    lite = subprocess.Popen([lite_bin, "--model", "openai/fast", "--api_base", up, "--port", str(lite_port),
                             "--host", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, OPENAI_API_KEY="unused", LITELLM_LOG="ERROR",
                                     LITELLM_MASTER_KEY=LITE_KEY))
    try:
        wait_http(f"http://127.0.0.1:{lite_port}/health/liveliness")
        targets = {
            "direct": (f"{up}/chat/completions", "fast", None),
            "haca": (f"{haca_url}/v1/chat/completions", "up/fast", None),
            "litellm": (f"http://127.0.0.1:{lite_port}/chat/completions", "openai/fast", LITE_KEY),
        }
        for name, (url, model, key) in targets.items():
            timed(url, model, 20, key)  # warm
        runs = {k: [] for k in targets}
        # Interleaved batches: all three see the same machine noise.
        for _ in range(10):
            for name, (url, model, key) in targets.items():
                runs[name] += timed(url, model, a.requests // 10, key)
        med = {k: statistics.median(v) for k, v in runs.items()}
        added = {k: med[k] - med["direct"] for k in ("haca", "litellm")}
        print(json.dumps({"requests": a.requests,
                          "median_ms": {k: round(v, 3) for k, v in med.items()},
                          "added_ms": {k: round(v, 3) for k, v in added.items()},
                          "haca_added_over_litellm_added": round(added["haca"] / added["litellm"], 3)},
                         indent=1))
    finally:
        haca.terminate()
        lite.terminate()
        srv.shutdown()


if __name__ == "__main__":
    main()
