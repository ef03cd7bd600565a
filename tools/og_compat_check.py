"""Checks haca's OpenGradient-compatible tee fields the way a Python client would.

Reads a JSON file {"canonical": {...}, "pem": "...", "fields": {tee_*}} written by
crates/haca-tee/tests/it/og_compat_python.rs and prints one JSON line:
{"request_hash": hex of keccak256(json.dumps(canonical, sort_keys=True)),
 "tee_id_ok": bool, "signature_ok": bool}.
Needs the PyPI packages `cryptography` and `pycryptodome` (keccak256).
"""
import base64
import json
import sys

from Crypto.Hash import keccak
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding


def keccak256(b: bytes) -> bytes:
    h = keccak.new(digest_bits=256)
    h.update(b)
    return h.digest()


def main() -> None:
    with open(sys.argv[1]) as f:
        case = json.load(f)
    request_hash = keccak256(json.dumps(case["canonical"], sort_keys=True).encode())
    key = serialization.load_pem_public_key(case["pem"].encode())
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fields = case["fields"]
    msg = keccak256(
        bytes.fromhex(fields["tee_request_hash"])
        + bytes.fromhex(fields["tee_output_hash"])
        + int(fields["tee_timestamp"]).to_bytes(32, "big")
    )
    try:
        key.verify(
            base64.b64decode(fields["tee_signature"]),
            msg,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
            hashes.SHA256(),
        )
        signature_ok = True
    except InvalidSignature:
        signature_ok = False
    print(
        json.dumps(
            {
                "request_hash": request_hash.hex(),
                "tee_id_ok": fields["tee_id"] == "0x" + keccak256(spki).hex(),
                "signature_ok": signature_ok,
            }
        )
    )


main()
