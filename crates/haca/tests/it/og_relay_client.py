"""Drives OpenGradient's own OhttpRelayClient (PyPI opengradient 1.1.4,
opengradient/client/tee_ohttp_client.py) through a haca relay, for ohttp_e2e.rs.

  og_relay_client.py check
      exits 0 when the client loads (used to decide whether to skip)
  og_relay_client.py chat RELAY_URL TEE_ENTRY_JSON BODY_JSON
      builds a TEEEndpoint from one entry of haca's GET /v1/tee (tee_id, signing_key_pem,
      ohttp), sends BODY through OhttpRelayClient.chat_completion and
      .stream_chat_completion, which both verify the enclave's signature before returning;
      prints JSON {"single": {...}, "stream": {...}}

The client's modules are loaded by path as a package of their own, so opengradient's
__init__ (web3, numpy, ...) is never imported. What the relay client needs beyond the OHTTP
venv (pyhpke, cryptography) is stood in for here, leaving OpenGradient's code unchanged:
`requests` by a urllib session (OhttpRelayClient takes a `session`), `web3` (imported by
tee_registry for its on-chain reader, unused here) by an empty module, and eth_hash's keccak
by a pure-Python Keccak-256 when eth_hash is absent.
"""

import base64
import importlib
import importlib.util
import json
import os
import sys
import types
import urllib.error
import urllib.request


# --- Keccak-256 (the original padding, as Ethereum uses), for when eth_hash is absent ---

_RC = [
    0x0000000000000001, 0x0000000000008082, 0x800000000000808A, 0x8000000080008000,
    0x000000000000808B, 0x0000000080000001, 0x8000000080008081, 0x8000000000008009,
    0x000000000000008A, 0x0000000000000088, 0x0000000080008009, 0x000000008000000A,
    0x000000008000808B, 0x800000000000008B, 0x8000000000008089, 0x8000000000008003,
    0x8000000000008002, 0x8000000000000080, 0x000000000000800A, 0x800000008000000A,
    0x8000000080008081, 0x8000000000008080, 0x0000000080000001, 0x8000000080008008,
]
_ROT = [
    [0, 36, 3, 41, 18],
    [1, 44, 10, 45, 2],
    [62, 6, 43, 15, 61],
    [28, 55, 25, 21, 56],
    [27, 20, 39, 8, 14],
]
_MASK = (1 << 64) - 1


def _rol(v, n):
    return ((v << n) | (v >> (64 - n))) & _MASK if n else v


def _keccak_f(a):
    for rc in _RC:
        c = [a[x][0] ^ a[x][1] ^ a[x][2] ^ a[x][3] ^ a[x][4] for x in range(5)]
        d = [c[(x - 1) % 5] ^ _rol(c[(x + 1) % 5], 1) for x in range(5)]
        a = [[a[x][y] ^ d[x] for y in range(5)] for x in range(5)]
        b = [[0] * 5 for _ in range(5)]
        for x in range(5):
            for y in range(5):
                b[y][(2 * x + 3 * y) % 5] = _rol(a[x][y], _ROT[x][y])
        a = [[b[x][y] ^ ((~b[(x + 1) % 5][y]) & b[(x + 2) % 5][y]) for y in range(5)] for x in range(5)]
        a[0][0] ^= rc
    return a


def keccak256(data: bytes) -> bytes:
    rate = 136
    msg = bytearray(data)
    msg.append(0x01)
    while len(msg) % rate:
        msg.append(0)
    msg[-1] |= 0x80
    a = [[0] * 5 for _ in range(5)]
    for off in range(0, len(msg), rate):
        block = msg[off : off + rate]
        for i in range(rate // 8):
            a[i % 5][i // 5] ^= int.from_bytes(block[8 * i : 8 * i + 8], "little")
        a = _keccak_f(a)
    out = b"".join(a[i % 5][i // 5].to_bytes(8, "little") for i in range(4))
    return out


def _stand_ins():
    try:
        importlib.import_module("eth_hash.auto")
    except Exception:
        eth_hash = types.ModuleType("eth_hash")
        auto = types.ModuleType("eth_hash.auto")
        auto.keccak = keccak256
        eth_hash.auto = auto
        sys.modules["eth_hash"] = eth_hash
        sys.modules["eth_hash.auto"] = auto
    try:
        importlib.import_module("web3")
    except Exception:
        web3 = types.ModuleType("web3")
        web3.Web3 = object
        sys.modules["web3"] = web3


class _Response:
    """The part of requests.Response that OhttpRelayClient reads."""

    def __init__(self, raw, status):
        self._raw = raw
        self.status_code = status
        self.ok = 200 <= status < 400
        self._content = None

    @property
    def content(self):
        if self._content is None:
            self._content = self._raw.read()
        return self._content

    def iter_content(self, chunk_size=8192):
        while True:
            piece = self._raw.read1(chunk_size) if hasattr(self._raw, "read1") else self._raw.read(chunk_size)
            if not piece:
                return
            yield piece


class _Session:
    """The part of requests.Session that OhttpRelayClient calls."""

    def post(self, url, data=None, headers=None, timeout=None, stream=False):
        req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST")
        try:
            raw = urllib.request.urlopen(req, timeout=timeout)
            return _Response(raw, raw.status)
        except urllib.error.HTTPError as e:
            return _Response(e, e.code)


def load_client():
    spec = importlib.util.find_spec("opengradient")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("opengradient is not installed")
    client_dir = os.path.join(spec.submodule_search_locations[0], "client")
    if "requests" not in sys.modules:
        try:
            importlib.import_module("requests")
        except Exception:
            sys.modules["requests"] = types.ModuleType("requests")
    _stand_ins()
    package = types.ModuleType("og_client")
    package.__path__ = [client_dir]
    sys.modules["og_client"] = package
    return (
        importlib.import_module("og_client.tee_ohttp_client"),
        importlib.import_module("og_client.tee_registry"),
        importlib.import_module("og_client.tee_verify"),
    )


def main():
    assert keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    relay_client, registry, verify = load_client()
    if sys.argv[1] == "check":
        return
    _, relay_url, tee_json, body_json = sys.argv[1:5]
    tee = json.loads(tee_json)
    body = json.loads(body_json)
    o = tee["ohttp"]
    from cryptography.hazmat.primitives import serialization

    der = serialization.load_pem_public_key(tee["signing_key_pem"].encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    endpoint = registry.TEEEndpoint(
        tee_id=tee["tee_id"],
        endpoint=relay_url,
        tls_cert_der=b"",
        payment_address="",
        signing_public_key_der=der,
        ohttp_config=registry.OhttpConfig(
            key_id=o["key_id"],
            kem_id=o["kem_id"],
            kdf_id=o["kdf_id"],
            aead_id=o["aead_id"],
            public_key=bytes.fromhex(o["public_key_hex"]),
            key_config=base64.b64decode(o["key_config_b64"]),
            registered_at=0,
        ),
    )
    client = relay_client.OhttpRelayClient(relay_url + "/v1/ohttp", endpoint, session=_Session(), timeout=300)
    single = client.chat_completion(body)
    stream = client.stream_chat_completion(body)

    def view(r):
        return {
            "content": r.content,
            "tee_id": r.proof.tee_id,
            "route": (r.body.get("haca") or {}).get("route"),
            "frames": len(r.stream_frames or []),
        }

    print(json.dumps({"single": view(single), "stream": view(stream)}))


if __name__ == "__main__":
    main()
