#!/usr/bin/env python3
"""Interop vectors for haca-pay, produced by the official Python `x402` package.

Setup (once):
    python3 -m venv /tmp/x402venv && /tmp/x402venv/bin/pip install x402 eth_account

Usage:
    /tmp/x402venv/bin/python crates/haca-pay/tests/x402_vectors.py
        prints the vectors that tests/it/interop.rs embeds (x402 2.25.0, eth-account 0.14.0).
    /tmp/x402venv/bin/python crates/haca-pay/tests/x402_vectors.py check <header>
        decodes a PAYMENT-SIGNATURE / X-PAYMENT header built by haca-pay with the x402
        package and recovers its EIP-712 signer with eth_account; exits 1 when it does not
        recover to `authorization.from`.

Everything here is deterministic: a fixed key (anvil's well-known account 0, a test key
only), a fixed nonce and a fixed clock. ECDSA signing is deterministic (RFC 6979) in both
eth_account and alloy/k256, so haca-pay must reproduce the same signatures and, because
both sides write compact JSON in the same field order, the same header strings.
"""

import json
import sys

from eth_account import Account
from eth_account.messages import encode_typed_data

import x402
import x402.mechanisms.evm.exact.client as exact_client
import x402.mechanisms.evm.exact.v1.client as exact_client_v1
from x402 import x402ClientSync
from x402.http.utils import (
    decode_payment_signature_header,
    encode_payment_required_header,
    encode_payment_response_header,
    encode_payment_signature_header,
)
from x402.mechanisms.evm.eip712 import hash_eip3009_authorization
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.mechanisms.evm.types import (
    AUTHORIZATION_TYPES,
    DOMAIN_TYPES,
    ExactEIP3009Authorization,
)
from x402.mechanisms.evm.utils import get_evm_chain_id
from x402.mechanisms.evm.v1.utils import get_evm_chain_id as get_evm_chain_id_v1
from x402.schemas import PaymentRequired, PaymentRequirements, ResourceInfo, SettleResponse
from x402.schemas.v1 import PaymentRequiredV1, PaymentRequirementsV1

KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
USDC_BASE_SEPOLIA = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
NONCE = "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480"
NOW = 1740672089


class FixedClock:
    @staticmethod
    def time():
        return float(NOW)


def direct_signature():
    """Sign one TransferWithAuthorization with eth_account directly."""
    account = Account.from_key(KEY)
    domain = {
        "name": "USDC",
        "version": "2",
        "chainId": 84532,
        "verifyingContract": USDC_BASE_SEPOLIA,
    }
    message = {
        "from": account.address,
        "to": PAY_TO,
        "value": 10000,
        "validAfter": 1740672089,
        "validBefore": 1740672154,
        "nonce": bytes.fromhex(NONCE[2:]),
    }
    types = {**DOMAIN_TYPES, **AUTHORIZATION_TYPES}
    signed = account.sign_typed_data(
        domain_data=domain, message_types=AUTHORIZATION_TYPES, message_data=message
    )
    digest = hash_eip3009_authorization(
        ExactEIP3009Authorization(
            from_address=account.address,
            to=PAY_TO,
            value="10000",
            valid_after="1740672089",
            valid_before="1740672154",
            nonce=NONCE,
        ),
        84532,
        USDC_BASE_SEPOLIA,
        "USDC",
        "2",
    )
    full = {"types": types, "primaryType": "TransferWithAuthorization", "domain": domain,
            "message": message}
    assert Account.recover_message(encode_typed_data(full_message=full),
                                   signature=signed.signature) == account.address
    return {
        "address": account.address,
        "digest": "0x" + digest.hex(),
        "signature": "0x" + bytes(signed.signature).hex(),
    }


def client_headers():
    """Build v1 and v2 payment headers with the x402 client itself (fixed nonce and clock)."""
    exact_client.create_nonce = lambda: NONCE
    exact_client.time = FixedClock
    exact_client_v1.create_nonce = lambda: NONCE
    exact_client_v1.time = FixedClock

    account = Account.from_key(KEY)
    client = x402ClientSync()
    register_exact_evm_client(client, account)

    required_v2 = PaymentRequired(
        error="PAYMENT-SIGNATURE header is required",
        resource=ResourceInfo(
            url="https://api.example.com/premium-data",
            description="Access to premium market data",
            mime_type="application/json",
        ),
        accepts=[
            PaymentRequirements(
                scheme="exact",
                network="eip155:84532",
                asset=USDC_BASE_SEPOLIA,
                amount="10000",
                pay_to=PAY_TO,
                max_timeout_seconds=60,
                extra={"name": "USDC", "version": "2"},
            )
        ],
    )
    payload_v2 = client.create_payment_payload(required_v2)

    required_v1 = PaymentRequiredV1(
        error="X-PAYMENT header is required",
        accepts=[
            PaymentRequirementsV1(
                scheme="exact",
                network="base-sepolia",
                max_amount_required="10000",
                resource="https://api.example.com/premium-data",
                description="Access to premium market data",
                mime_type="application/json",
                pay_to=PAY_TO,
                max_timeout_seconds=60,
                asset=USDC_BASE_SEPOLIA,
                extra={"name": "USDC", "version": "2"},
            )
        ],
    )
    payload_v1 = client.create_payment_payload(required_v1)

    settle = SettleResponse(
        success=True,
        payer=account.address,
        transaction="0x" + "ab" * 32,
        network="eip155:84532",
    )
    return {
        "payment_required_v2": encode_payment_required_header(required_v2),
        "payment_signature_v2": encode_payment_signature_header(payload_v2),
        "payment_required_v1": required_v1.model_dump_json(by_alias=True, exclude_none=True),
        "x_payment_v1": encode_payment_signature_header(payload_v1),
        "payment_response": encode_payment_response_header(settle),
    }


def check(header):
    """Recover the signer of a haca-built header with eth_account."""
    payload = decode_payment_signature_header(header)
    inner = payload.payload
    auth = inner["authorization"]
    if payload.x402_version == 1:
        chain_id = get_evm_chain_id_v1(payload.network)
        print("v1", payload.scheme, payload.network)
        # A v1 payload carries no asset or domain: use the vector's.
        asset, name, version = USDC_BASE_SEPOLIA, "USDC", "2"
    else:
        accepted = payload.accepted
        chain_id = get_evm_chain_id(accepted.network)
        asset, name, version = accepted.asset, accepted.extra["name"], accepted.extra["version"]
        print("v2", accepted.scheme, accepted.network, asset)
    full = {
        "types": {**DOMAIN_TYPES, **AUTHORIZATION_TYPES},
        "primaryType": "TransferWithAuthorization",
        "domain": {"name": name, "version": version, "chainId": chain_id,
                   "verifyingContract": asset},
        "message": {
            "from": auth["from"],
            "to": auth["to"],
            "value": int(auth["value"]),
            "validAfter": int(auth["validAfter"]),
            "validBefore": int(auth["validBefore"]),
            "nonce": bytes.fromhex(auth["nonce"][2:]),
        },
    }
    signer = Account.recover_message(encode_typed_data(full_message=full),
                                     signature=inner["signature"])
    print("recovered", signer, "from", auth["from"])
    sys.exit(0 if signer.lower() == auth["from"].lower() else 1)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        check(sys.argv[2])
    out = {"x402": getattr(x402, "__version__", "?"), **direct_signature(), **client_headers()}
    print(json.dumps(out, indent=2))
