"""Side by side: decode speed of haca's local model (candle, through a haca node's
/v1/completions stream) and llama.cpp (PyPI llama-cpp-python) on the same Gemma 3 270M GGUF,
same prompt, greedy, same number of tokens, same thread count, in one run.

    python bench/llm_tokens.py --haca target/release/haca --gguf PATH [--tokens 128] [--runs 5]

Decode speed is tokens after the first one divided by the time between the first and the last
streamed token (prompt processing excluded). Prints medians and the ratio.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time, urllib.request

PROMPT = "The history of the lighthouse begins"


def haca_node(haca, gguf, threads):
    data = tempfile.mkdtemp(prefix="haca-bench-")
    env = dict(os.environ, HACA_LOG="warn", RAYON_NUM_THREADS=str(threads))
    p = subprocess.Popen([haca, "devnet", "--listen", "127.0.0.1:0", "--data-dir", data,
                          "--price-per-request", "0", "--llm-model", gguf],
                         stdout=subprocess.PIPE, text=True, env=env)
    url = None
    for line in p.stdout:
        if line.strip().startswith("url:"):
            url = line.split("url:", 1)[1].strip()
            break
    deadline = time.time() + 120
    while time.time() < deadline:
        models = json.load(urllib.request.urlopen(url + "/v1/models"))
        if any(m["haca"].get("state") == "ready" for m in models["data"]):
            return p, url
        time.sleep(0.2)
    raise SystemExit("the haca node's model did not load")


def haca_run(url, tokens):
    body = json.dumps({"model": "local/gemma-3-270m", "prompt": PROMPT, "max_tokens": tokens,
                       "min_tokens": tokens, "temperature": 0, "stream": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", body, {"content-type": "application/json"})
    stamps = []
    with urllib.request.urlopen(req) as r:
        for line in r:
            line = line.decode().strip()
            if line.startswith("data: {"):
                v = json.loads(line[6:])
                if v["choices"] and v["choices"][0]["text"]:
                    stamps.append(time.perf_counter())
    return stamps


def llama_run(llm, tokens):
    stamps = []
    for chunk in llm.create_completion(PROMPT, max_tokens=tokens, temperature=0, stream=True):
        if chunk["choices"][0]["text"]:
            stamps.append(time.perf_counter())
    return stamps


def rate(stamps, tokens):
    # Streams release text, not tokens: count tokens, time the span of the stream.
    return (tokens - 1) / (stamps[-1] - stamps[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--haca", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    from llama_cpp import Llama
    llm = Llama(model_path=a.gguf, n_ctx=2048, n_threads=a.threads, verbose=False)
    node, url = haca_node(a.haca, a.gguf, a.threads)
    try:
        haca_run(url, 8), llama_run(llm, 8)  # warm both
        h, l = [], []
        for _ in range(a.runs):  # interleaved: both see the same machine noise
            h.append(rate(haca_run(url, a.tokens), a.tokens))
            l.append(rate(llama_run(llm, a.tokens), a.tokens))
        hm, lm = statistics.median(h), statistics.median(l)
        print(json.dumps({"tokens": a.tokens, "runs": a.runs, "threads": a.threads,
                          "haca_candle_tok_s": round(hm, 1), "llama_cpp_tok_s": round(lm, 1),
                          "haca_over_llama": round(hm / lm, 3),
                          "haca_all": [round(x, 1) for x in h], "llama_all": [round(x, 1) for x in l]}, indent=1))
    finally:
        node.terminate()


if __name__ == "__main__":
    main()
