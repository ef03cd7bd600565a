# Latency added to POST /v1/infer by admitting one data item: 50 runs each (interleaved), medians.
# Usage: python3 bench/data_admit.py PATH/TO/haca   (starts its own devnet and a loopback source)
import json, subprocess, sys, threading, time, statistics, urllib.request, http.server, tempfile, os, re
BIN = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = b'{"eur_usd":1.0842}'
        self.send_response(200); self.send_header("content-type","application/json")
        self.send_header("cache-control","max-age=600"); self.send_header("content-length",str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self,*a): pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1",0),H); threading.Thread(target=srv.serve_forever,daemon=True).start()
src = f"http://127.0.0.1:{srv.server_address[1]}"
d = tempfile.mkdtemp()
p = subprocess.Popen([BIN,"devnet","--listen","127.0.0.1:0","--data-dir",d,"--price-per-request","0","--no-llm","--no-enclave","--data-allow",src+"/"],stdout=subprocess.PIPE,text=True,env={**os.environ,"HACA_LOG":"warn"})
url=None
for line in p.stdout:
    m=re.match(r"\s*url:\s*(\S+)",line)
    if m: url=m.group(1); break
def post(path, body):
    r=urllib.request.Request(url+path,data=json.dumps(body).encode(),headers={"content-type":"application/json"})
    return json.load(urllib.request.urlopen(r))
time.sleep(2)
inp=json.load(open(os.path.join(d,"example-input.json")))
item=post("/v1/data/fetch",{"url":src+"/rates"})
def run(data, n=50):
    ts=[]
    for _ in range(n):
        body={"model":"example/mnist-mlp","input":inp}
        if data: body["data"]=[item["id"]]
        t=time.perf_counter(); a=post("/v1/infer",body); ts.append((time.perf_counter()-t)*1000)
        if data: assert a["receipt"]["boxes"]["data"]["evidence"]["items"][0]["id"]==item["id"]
    return ts
run(False,10); run(True,10)
a=[];b=[]
for _ in range(5):
    a+=run(False,10); b+=run(True,10)
print(f"without data: median {statistics.median(a):.2f} ms; with one item: median {statistics.median(b):.2f} ms; added {statistics.median(b)-statistics.median(a):.2f} ms (n={len(a)} each, interleaved)")
p.terminate(); p.wait()
