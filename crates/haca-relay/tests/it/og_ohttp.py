"""Drives OpenGradient's own OHTTP client code (PyPI opengradient 1.1.4,
opengradient/client/tee_ohttp.py) for haca-relay's interop test (og_python.rs).

The module is loaded by path from the installed package, so the package's own __init__
(which needs web3, numpy, ...) is never imported: install it with --no-deps, plus pyhpke
and cryptography.

  og_ohttp.py seal STATE KEY_ID PUBLIC_KEY_HEX KEM KDF AEAD PLAINTEXT_FILE
      encapsulate_request(...): writes the wire bytes to STATE.req and the secrets to STATE
  og_ohttp.py open STATE SINGLE_FILE CHUNKED_FILE PIECE
      decrypt_response on SINGLE_FILE; ChunkedResponseDecrypter on CHUNKED_FILE fed in
      PIECE-byte pieces; prints JSON {"single": hex, "chunks": [hex, ...]}
  og_ohttp.py check
      exits 0 when the module loads (used to decide whether to skip)
"""

import importlib.util
import json
import os
import sys


def load_tee_ohttp():
    spec = importlib.util.find_spec("opengradient")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("opengradient is not installed")
    path = os.path.join(spec.submodule_search_locations[0], "client", "tee_ohttp.py")
    mod_spec = importlib.util.spec_from_file_location("og_tee_ohttp", path)
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules["og_tee_ohttp"] = module
    mod_spec.loader.exec_module(module)
    return module


def main():
    og = load_tee_ohttp()
    cmd = sys.argv[1]
    if cmd == "check":
        return
    if cmd == "seal":
        state, key_id, pk_hex, kem, kdf, aead, plaintext_file = sys.argv[2:9]
        with open(plaintext_file, "rb") as f:
            plaintext = f.read()
        enc = og.encapsulate_request(
            bytes.fromhex(pk_hex),
            plaintext,
            key_id=int(key_id),
            kem_id=int(kem),
            kdf_id=int(kdf),
            aead_id=int(aead),
        )
        with open(state + ".req", "wb") as f:
            f.write(enc.wire)
        with open(state, "w") as f:
            json.dump(
                {
                    "enc": enc.enc.hex(),
                    "response_secret": enc.response_secret.hex(),
                    "chunked_response_secret": enc.chunked_response_secret.hex(),
                },
                f,
            )
        return
    if cmd == "open":
        state_file, single_file, chunked_file, piece = sys.argv[2:6]
        with open(state_file) as f:
            state = json.load(f)
        enc = bytes.fromhex(state["enc"])
        with open(single_file, "rb") as f:
            single = og.decrypt_response(bytes.fromhex(state["response_secret"]), enc, f.read())
        with open(chunked_file, "rb") as f:
            body = f.read()
        decrypter = og.ChunkedResponseDecrypter(bytes.fromhex(state["chunked_response_secret"]), enc)
        piece = int(piece)
        pieces = [body[i : i + piece] for i in range(0, len(body), piece)] or [b""]
        chunks = []
        for i, p in enumerate(pieces):
            chunks.extend(decrypter.push(p, done=(i == len(pieces) - 1)))
        print(json.dumps({"single": single.hex(), "chunks": [c.hex() for c in chunks]}))
        return
    raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
