# Time to first token added by the OHTTP private path (client seals, devnet's relay forwards, the
# gateway opens and seals each SSE event) over the plain path: 50 streamed chats each, interleaved,
# medians. A loopback fake upstream answers at once, so the figure is haca's overhead alone.
# Usage: ~/.cache/haca-og-venv/bin/python bench/ohttp_ttft.py PATH/TO/haca
#   (needs pyhpke and cryptography, as haca-relay's interop venv has; seals with OpenGradient's
#    own tee_ohttp, loaded by path as tests/it/og_ohttp.py does)
import importlib.util, json, os, re, statistics, subprocess, sys, tempfile, threading, time
import http.server, urllib.request

BIN = sys.argv[1]
spec = importlib.util.find_spec("opengradient")
path = os.path.join(spec.submodule_search_locations[0], "client", "tee_ohttp.py")
ms = importlib.util.spec_from_file_location("og_tee_ohttp", path)
og = importlib.util.module_from_spec(ms); sys.modules["og_tee_ohttp"] = og; ms.loader.exec_module(og)

class Up(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        ev = lambda d, f: "data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m1",
            "choices": [{"index": 0, "delta": d, "finish_reason": f}]}) + "\n\n"
        b = (ev({"role": "assistant", "content": "hello"}, None) + ev({}, "stop") + "data: [DONE]\n\n").encode()
        # One write: a head and body sent apart would wait out a delayed ACK (~40 ms) on loopback.
        self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: "
                         + str(len(b)).encode() + b"\r\n\r\n" + b); self.wfile.flush()
    def log_message(self, *a): pass
up = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Up); threading.Thread(target=up.serve_forever, daemon=True).start()
d = tempfile.mkdtemp()
p = subprocess.Popen([BIN, "devnet", "--listen", "127.0.0.1:0", "--data-dir", d, "--price-per-request", "0", "--no-llm",
                      "--no-enclave", "--provider", f"name=fake,url=http://127.0.0.1:{up.server_address[1]}/v1,models=m1"],
                     stdout=subprocess.PIPE, text=True, env={**os.environ, "HACA_LOG": "warn"})
url = relay = None
for line in p.stdout:
    m = re.match(r"\s*(url|relay):\s*(\S+)", line)
    if m and m.group(1) == "url": url = m.group(2)
    if m and m.group(1) == "relay": relay = m.group(2)
    if url and relay: break
time.sleep(2)
body = json.dumps({"model": "fake/m1", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()

def plain():
    t = time.perf_counter()
    r = urllib.request.urlopen(urllib.request.Request(url + "/v1/chat/completions", data=body, headers={"content-type": "application/json"}))
    buf = b""
    while b'"hello"' not in buf:
        buf += r.read1(65536)
    ttft = time.perf_counter() - t; r.read(); return ttft * 1000

def sealed():
    keys = urllib.request.urlopen(url + "/v1/ohttp/config").read()
    kid, pk = keys[2], keys[5:37]  # the first config: 2-byte length, key id, kem id, 32-byte key
    t = time.perf_counter()
    enc = og.encapsulate_request(pk, body, key_id=kid, kem_id=0x20, kdf_id=1, aead_id=3)
    r = urllib.request.urlopen(urllib.request.Request(relay + "/v1/ohttp", data=enc.wire, headers={
        "content-type": "message/ohttp-req", "accept": "message/ohttp-chunked-res", "x-ohttp-stream": "true"}))
    dec = og.ChunkedResponseDecrypter(enc.chunked_response_secret, enc.enc)
    while True:
        if any(b'"hello"' in c for c in dec.push(r.read1(65536), done=False)): break
    ttft = time.perf_counter() - t; r.read(); return ttft * 1000

for _ in range(10): plain(); sealed()
a, b = [], []
for _ in range(5):
    a += [plain() for _ in range(10)]; b += [sealed() for _ in range(10)]
print(f"plain: median TTFT {statistics.median(a):.2f} ms; OHTTP via relay: median {statistics.median(b):.2f} ms; "
      f"added {statistics.median(b) - statistics.median(a):.2f} ms (n={len(a)} each, interleaved)")
p.terminate(); p.wait()
