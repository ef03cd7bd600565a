"""Side by side, in one run: haca's local model (llama.cpp through the llama-cpp-2 crate,
through a haca node's /v1/completions stream) and llama.cpp through PyPI llama-cpp-python, on
the same GGUF, same prompts, greedy, same number of tokens, same thread count.

    python bench/llm_tokens.py --haca target/release/haca --gguf PATH [--tokens 128] [--runs 5]
                               [--threads 2] [--streams 1,4,8]

Measured for each engine:
- load: haca's own "local model ready ... in X s" line; llama-cpp-python's Llama() constructor;
- decode tokens/s: tokens after the first over the time from the first to the last streamed
  token (prompt processing excluded), `--tokens` forced;
- prompt tokens/s and time to first token: a prompt of a few hundred tokens, timed from the
  request to its first streamed token;
- peak RSS: VmHWM of the haca node process (all of its roles) and of the process that holds
  llama-cpp-python (a child of this script, so the two do not mix);
- aggregate tokens/s with 1, 4 and 8 concurrent streams (haca only: a llama-cpp-python Llama
  object decodes one sequence at a time, so its single-stream rate is the reference).
Runs are interleaved so that both see the same machine noise; medians are printed.
"""
import argparse, json, os, re, statistics, subprocess, sys, tempfile, threading, time
import urllib.request

PROMPT = "The history of the lighthouse begins"
LONG_PROMPT = " ".join([
    "Lighthouses guided ships along dangerous coasts for centuries, their keepers tending lamps",
    "through storms and long winter nights. Early towers burned wood or coal in open fires; later",
    "ones used oil lamps with reflectors, and in the nineteenth century the Fresnel lens gathered",
    "the light into a beam that could be seen many miles out to sea.",
] * 5) + " In summary,"


def rss_peak_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


# --- haca ---------------------------------------------------------------------------------

def haca_node(haca, gguf, threads):
    data = tempfile.mkdtemp(prefix="haca-bench-")
    env = dict(os.environ, HACA_LOG="info", HACA_LLM_THREADS=str(threads))
    p = subprocess.Popen([haca, "devnet", "--listen", "127.0.0.1:0", "--data-dir", data,
                          "--price-per-request", "0", "--llm-model", gguf],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = None
    for line in p.stdout:
        if line.strip().startswith("url:"):
            url = line.split("url:", 1)[1].strip()
            break
    load = {}

    def watch_log():
        for line in p.stderr:
            m = re.search(r"local model ready: (\S+) .* in ([0-9.]+) s", line)
            if m:
                load["name"], load["s"] = m.group(1), float(m.group(2))
    threading.Thread(target=watch_log, daemon=True).start()
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    deadline = time.time() + 180
    while time.time() < deadline:
        if "s" in load:
            return p, url, load
        time.sleep(0.1)
    raise SystemExit("the haca node's model did not load")


def haca_stream(url, model, prompt, tokens):
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": tokens,
                       "min_tokens": tokens, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(url + "/v1/completions", body, {"content-type": "application/json"})
    sent = time.perf_counter()
    stamps, usage = [], None
    with urllib.request.urlopen(req) as r:
        for line in r:
            line = line.decode().strip()
            if line.startswith("data: {"):
                v = json.loads(line[6:])
                if v.get("usage"):
                    usage = v["usage"]
                if v["choices"] and v["choices"][0]["text"]:
                    stamps.append(time.perf_counter())
    return sent, stamps, usage


# --- llama-cpp-python, in a child process -------------------------------------------------

def llama_worker(gguf, threads):
    """Serves commands on stdin, one JSON line each; answers one JSON line each."""
    t0 = time.perf_counter()
    from llama_cpp import Llama
    llm = Llama(model_path=gguf, n_ctx=4096, n_threads=threads, n_threads_batch=threads,
                verbose=False)
    print(json.dumps({"load_s": time.perf_counter() - t0}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "stream":
            llm.reset()  # no prompt cache reuse between runs: haca has none either
            sent, stamps = time.perf_counter(), []
            for chunk in llm.create_completion(cmd["prompt"], max_tokens=cmd["tokens"],
                                               temperature=0, stream=True):
                if chunk["choices"][0]["text"]:
                    stamps.append(time.perf_counter())
            n_prompt = len(llm.tokenize(cmd["prompt"].encode()))
            print(json.dumps({"sent": sent, "stamps": stamps, "prompt_tokens": n_prompt}), flush=True)
        elif cmd["op"] == "rss":
            print(json.dumps({"rss_mb": rss_peak_mb(os.getpid())}), flush=True)


class Llama:
    def __init__(self, gguf, threads):
        self.p = subprocess.Popen([sys.executable, __file__, "--llama-worker", "--gguf", gguf,
                                   "--threads", str(threads)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.load_s = json.loads(self.p.stdout.readline())["load_s"]

    def ask(self, **cmd):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def stream(self, prompt, tokens):
        r = self.ask(op="stream", prompt=prompt, tokens=tokens)
        return r["sent"], r["stamps"], {"prompt_tokens": r["prompt_tokens"]}


# --- measures -----------------------------------------------------------------------------

def decode_rate(stamps, tokens):
    # Streams release text, not tokens: count tokens, time the span of the stream.
    return (tokens - 1) / (stamps[-1] - stamps[0])


def aggregate(url, model, streams, tokens):
    """Tokens/s over `streams` concurrent forced-length streams, first send to last token."""
    results = [None] * streams

    def one(i):
        results[i] = haca_stream(url, model, PROMPT, tokens)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = max(r[1][-1] for r in results)
    return streams * tokens / (end - start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--haca")
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--streams", default="1,4,8")
    ap.add_argument("--llama-worker", action="store_true")
    a = ap.parse_args()
    if a.llama_worker:
        return llama_worker(a.gguf, a.threads)
    llama = Llama(a.gguf, a.threads)
    node, url, load = haca_node(a.haca, a.gguf, a.threads)
    model = load["name"]
    try:
        haca_stream(url, model, PROMPT, 8), llama.stream(PROMPT, 8)  # warm both
        m = {k: ([], []) for k in ("decode", "prompt", "ttft")}
        for _ in range(a.runs):  # interleaved: both see the same machine noise
            for side, run in ((0, lambda p, n: haca_stream(url, model, p, n)),
                              (1, llama.stream)):
                _, stamps, _ = run(PROMPT, a.tokens)
                m["decode"][side].append(decode_rate(stamps, a.tokens))
                sent, stamps, usage = run(LONG_PROMPT, 4)
                ttft = stamps[0] - sent
                m["ttft"][side].append(ttft)
                m["prompt"][side].append(usage["prompt_tokens"] / ttft)
        agg = {n: aggregate(url, model, n, 64) for n in map(int, a.streams.split(","))}
        med = {k: (statistics.median(h), statistics.median(l)) for k, (h, l) in m.items()}
        out = {
            "gguf": os.path.basename(a.gguf), "threads": a.threads, "tokens": a.tokens,
            "runs": a.runs, "prompt_tokens_long": usage["prompt_tokens"],
            "haca": {"load_s": load["s"], "decode_tok_s": round(med["decode"][0], 1),
                     "prompt_tok_s": round(med["prompt"][0], 1),
                     "ttft_ms": round(med["ttft"][0] * 1000), "peak_rss_mb": round(rss_peak_mb(node.pid)),
                     "aggregate_tok_s": {str(n): round(v, 1) for n, v in agg.items()}},
            "llama_cpp_python": {"load_s": round(llama.load_s, 2),
                                 "decode_tok_s": round(med["decode"][1], 1),
                                 "prompt_tok_s": round(med["prompt"][1], 1),
                                 "ttft_ms": round(med["ttft"][1] * 1000),
                                 "peak_rss_mb": round(llama.ask(op="rss")["rss_mb"])},
            "haca_over_llama": {k: round(h / l, 3) for k, (h, l) in med.items()},
            "all": {k: {"haca": [round(x, 3) for x in h], "llama": [round(x, 3) for x in l]}
                    for k, (h, l) in m.items()},
        }
        if "1" in out["haca"]["aggregate_tok_s"]:
            one = out["haca"]["aggregate_tok_s"]["1"]
            out["haca"]["aggregate_over_one"] = {n: round(v / one, 2)
                                                 for n, v in out["haca"]["aggregate_tok_s"].items()}
        print(json.dumps(out, indent=1))
    finally:
        node.terminate()
        llama.p.terminate()


if __name__ == "__main__":
    main()
