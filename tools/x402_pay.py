#!/usr/bin/env python3
"""Pay a haca node's x402 paywall with the official Python `x402` client.

Usage:
    python tools/x402_pay.py [--upto] URL PRIVATE_KEY BODY_FILE [MAX_AMOUNT]

Posts BODY_FILE (JSON) to URL (e.g. http://127.0.0.1:7070/v1/infer) without payment,
expects a 402 whose `PAYMENT-REQUIRED` header the x402 package decodes, lets the package's
client (x402ClientSync over an eth_account LocalAccount) sign a payment for it, posts again
with `PAYMENT-SIGNATURE`, and prints one JSON line: `{"status", "payment_response", "body"}`.
Exits 1 when the paid request did not succeed.

The scheme registered is `exact` (EIP-3009), or with `--upto` only `upto`: a Permit2
PermitWitnessTransferFrom of the maximum, as OpenGradient's SDK pays an LLM call (BODY_FILE a
chat completion with max_tokens; the 402 must offer upto).

Needs: pip install 'x402[evm]' (eth_account, web3). Used by crates/haca/tests/it/x402_e2e.rs,
evm_e2e.rs and upto_e2e.rs.
"""

import json
import sys
import urllib.error
import urllib.request

from eth_account import Account
from x402 import x402ClientSync
from x402.http.utils import (
    decode_payment_required_header,
    decode_payment_response_header,
    encode_payment_signature_header,
)
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.mechanisms.evm.upto import UptoEvmScheme


def post(url, body, headers):
    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("content-type", "application/json")
    for k, v in headers.items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def header(headers, name):
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return None


def main():
    args = sys.argv[1:]
    upto = "--upto" in args
    args = [a for a in args if a != "--upto"]
    url, key, body_file = args[:3]
    max_amount = args[3] if len(args) > 3 else "1000000"
    with open(body_file, "rb") as f:
        body = f.read()

    status, headers, _ = post(url, body, {})
    if status != 402:
        print(f"expected 402 without payment, got {status}", file=sys.stderr)
        return 1
    required = decode_payment_required_header(header(headers, "PAYMENT-REQUIRED"))

    client = x402ClientSync()
    if upto:
        if not any(r.scheme == "upto" for r in required.accepts):
            print(f"the 402 offers no upto: {[r.scheme for r in required.accepts]}", file=sys.stderr)
            return 1
        client.register("eip155:*", UptoEvmScheme(Account.from_key(key)))
    else:
        register_exact_evm_client(client, Account.from_key(key))
    # The package's spend controls allow only well-known tokens by default; a devnet's token
    # is opted in here, capped at MAX_AMOUNT base units per payment.
    client.set_spend_controls(
        {
            "allowed_assets": [
                {"network": r.network, "asset": r.asset, "max_amount_per_payment": max_amount}
                for r in required.accepts
            ]
        }
    )
    payload = client.create_payment_payload(required)

    status, headers, raw = post(
        url, body, {"PAYMENT-SIGNATURE": encode_payment_signature_header(payload)}
    )
    response = header(headers, "PAYMENT-RESPONSE")
    settled = (
        decode_payment_response_header(response).model_dump(by_alias=True, exclude_none=True)
        if response
        else None
    )
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw.decode("utf-8", "replace")
    print(json.dumps({"status": status, "payment_response": settled, "body": parsed}))
    return 0 if status == 200 and settled and settled.get("success") else 1


if __name__ == "__main__":
    sys.exit(main())
