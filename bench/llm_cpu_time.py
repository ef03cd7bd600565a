"""haca's local engine against llama.cpp (llama-cpp-python) by CPU time, not wall time: on a
shared machine where other jobs take the cores, wall-clock rates measure the neighbours, while
the CPU seconds a process spends per token measure the engine. One thread each (a second thread
would spin-wait while a neighbour holds its core and count that as work).

    python bench/llm_cpu_time.py --haca target/debug/haca --gguf PATH [--runs 5]

Prints, for each side, prompt tokens per CPU-second (a prompt of a few hundred tokens, from the
request to its first token) and decoded tokens per CPU-second (64 tokens forced, prompt
included), medians of interleaved runs, and their ratios; then haca's decoded tokens per
CPU-second with 1 and with 4 concurrent streams (what batching saves). haca's figure is the whole node
process's CPU time (HTTP, receipts, settlement included), so it is charged for more than its
engine.
"""
import argparse, json, os, statistics, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llm_tokens as lt  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--haca", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    llama = lt.Llama(a.gguf, 1)
    node, url, load = lt.haca_node(a.haca, a.gguf, 1)
    model = load["name"]
    sides = {
        "haca": (node.pid, lambda p, n: lt.haca_stream(url, model, p, n)),
        "llama_cpp_python": (llama.p.pid, llama.stream),
    }
    rates = {s: {"prompt": [], "decode": []} for s in sides}
    try:
        for _, run in sides.values():
            run(lt.PROMPT, 8)  # warm
        for _ in range(a.runs):
            for side, (pid, run) in sides.items():
                c0 = cpu_s(pid)
                _, _, usage = run(lt.LONG_PROMPT, 1)
                rates[side]["prompt"].append(usage["prompt_tokens"] / (cpu_s(pid) - c0))
                c0 = cpu_s(pid)
                run(lt.PROMPT, 64)
                rates[side]["decode"].append(64 / (cpu_s(pid) - c0))
        # Batching: haca's tokens per CPU-second with 1 and 4 concurrent streams (64 tokens each).
        batch = {}
        for n in (1, 4):
            runs = []
            for _ in range(3):
                c0 = cpu_s(node.pid)
                lt.aggregate(url, model, n, 64)
                runs.append(n * 64 / (cpu_s(node.pid) - c0))
            batch[str(n)] = round(statistics.median(runs), 1)
        med = {s: {k: round(statistics.median(v), 1) for k, v in r.items()} for s, r in rates.items()}
        out = {"gguf": os.path.basename(a.gguf), "threads": 1, "runs": a.runs,
               "per_cpu_second": med,
               "haca_over_llama": {k: round(med["haca"][k] / med["llama_cpp_python"][k], 3)
                                   for k in ("prompt", "decode")},
               "haca_streams_per_cpu_second": batch,
               "haca_4_over_1": round(batch["4"] / batch["1"], 2),
               "all": rates}
        print(json.dumps(out, indent=1))
    finally:
        node.terminate()
        llama.p.terminate()


if __name__ == "__main__":
    main()
