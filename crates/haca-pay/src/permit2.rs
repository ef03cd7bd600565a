//! x402 `upto` payloads signed over Permit2, as the official x402 clients write them (and
//! OpenGradient's SDK pays with): an EIP-712 `PermitWitnessTransferFrom` in the Permit2
//! domain, allowing the x402 upto proxy to move up to `permitted.amount` of `permitted.token`
//! to `witness.to`, settled by `witness.facilitator`, from `witness.validAfter` until
//! `deadline`. haca verifies the signature and settles the actual amount on its own ledger;
//! no Permit2 contract is involved.

use alloy_primitives::{address, Address, Bytes, Signature, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{Eip712Domain, SolStruct};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

alloy_sol_types::sol! {
    struct TokenPermissions {
        address token;
        uint256 amount;
    }
    struct Witness {
        address to;
        address facilitator;
        uint256 validAfter;
    }
    struct PermitWitnessTransferFrom {
        TokenPermissions permitted;
        address spender;
        uint256 nonce;
        uint256 deadline;
        Witness witness;
    }
}

/// Uniswap's Permit2 contract, the same address on every chain: the signature's domain.
pub const PERMIT2_ADDRESS: Address = address!("000000000022D473030F116dDEE9F6B43aC78BA3");
/// x402's upto Permit2 proxy: the spender an upto payload authorizes.
pub const UPTO_PROXY_ADDRESS: Address = address!("4020A4f3b7b90ccA423B9fabCc0CE57C6C240002");

/// `permitted` of a Permit2 authorization.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Permitted {
    pub token: String,
    /// Decimal base units: the most the payer allows.
    pub amount: String,
}

/// The upto witness.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UptoWitness {
    pub to: String,
    pub facilitator: String,
    /// Decimal unix seconds.
    pub valid_after: String,
}

/// `payload.permit2Authorization` of an upto payment, as the x402 clients send it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Permit2Authorization {
    pub from: String,
    pub permitted: Permitted,
    pub spender: String,
    /// Decimal uint256.
    pub nonce: String,
    /// Decimal unix seconds.
    pub deadline: String,
    pub witness: UptoWitness,
}

/// An upto payment's `payload`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UptoPermit2Payload {
    pub permit2_authorization: Permit2Authorization,
    /// 65 bytes, 0x hex.
    pub signature: String,
}

/// The fields of a Permit2 authorization, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permit2Terms {
    pub from: Address,
    pub token: Address,
    pub amount: U256,
    pub spender: Address,
    pub nonce: U256,
    pub deadline: U256,
    pub to: Address,
    pub facilitator: Address,
    pub valid_after: U256,
}

fn addr(v: &str, field: &str) -> Result<Address, String> {
    v.parse()
        .map_err(|_| format!("permit2Authorization.{field}: {v:?} is not an address"))
}

fn num(v: &str, field: &str) -> Result<U256, String> {
    U256::from_str_radix(v, 10)
        .map_err(|_| format!("permit2Authorization.{field}: {v:?} is not a decimal number"))
}

impl Permit2Authorization {
    pub fn terms(&self) -> Result<Permit2Terms, String> {
        Ok(Permit2Terms {
            from: addr(&self.from, "from")?,
            token: addr(&self.permitted.token, "permitted.token")?,
            amount: num(&self.permitted.amount, "permitted.amount")?,
            spender: addr(&self.spender, "spender")?,
            nonce: num(&self.nonce, "nonce")?,
            deadline: num(&self.deadline, "deadline")?,
            to: addr(&self.witness.to, "witness.to")?,
            facilitator: addr(&self.witness.facilitator, "witness.facilitator")?,
            valid_after: num(&self.witness.valid_after, "witness.validAfter")?,
        })
    }
}

impl Permit2Terms {
    /// The EIP-712 digest the payer signed, in Permit2's domain on `chain_id`.
    pub fn signing_hash(&self, chain_id: u64) -> B256 {
        let domain = Eip712Domain::new(
            Some(Cow::Borrowed("Permit2")),
            None,
            Some(U256::from(chain_id)),
            Some(PERMIT2_ADDRESS),
            None,
        );
        PermitWitnessTransferFrom {
            permitted: TokenPermissions {
                token: self.token,
                amount: self.amount,
            },
            spender: self.spender,
            nonce: self.nonce,
            deadline: self.deadline,
            witness: Witness {
                to: self.to,
                facilitator: self.facilitator,
                validAfter: self.valid_after,
            },
        }
        .eip712_signing_hash(&domain)
    }

    /// Who signed `signature` (65 bytes) over these terms.
    pub fn recover(&self, chain_id: u64, signature: &[u8]) -> Result<Address, String> {
        if signature.len() != 65 {
            return Err(format!(
                "the signature is {} bytes, not 65",
                signature.len()
            ));
        }
        let sig = Signature::try_from(signature).map_err(|e| e.to_string())?;
        sig.recover_address_from_prehash(&self.signing_hash(chain_id))
            .map_err(|e| e.to_string())
    }

    /// Signs these terms (tests and clients): 65 bytes `r || s || v`.
    pub fn sign(&self, chain_id: u64, signer: &PrivateKeySigner) -> Bytes {
        let sig = signer
            .sign_hash_sync(&self.signing_hash(chain_id))
            .expect("a local key signs");
        Bytes::from(sig.as_bytes().to_vec())
    }

    /// The nonce as the ledger keys it: 32 bytes, 0x hex.
    pub fn nonce_hex(&self) -> String {
        format!("0x{}", hex::encode(self.nonce.to_be_bytes::<32>()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_recovers_its_signer_and_any_changed_term_does_not() {
        let signer = PrivateKeySigner::random();
        let t = Permit2Terms {
            from: signer.address(),
            token: address!("5FbDB2315678afecb367f032d93F642f64180aa3"),
            amount: U256::from(10_000u64),
            spender: UPTO_PROXY_ADDRESS,
            nonce: U256::from(7u64),
            deadline: U256::from(2_000_000_000u64),
            to: address!("70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            facilitator: address!("70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            valid_after: U256::ZERO,
        };
        let sig = t.sign(31337, &signer);
        assert_eq!(t.recover(31337, &sig).unwrap(), signer.address());
        let mut other = t.clone();
        other.amount = U256::from(10_001u64);
        assert_ne!(other.recover(31337, &sig).unwrap(), signer.address());
        assert_ne!(t.recover(8453, &sig).unwrap(), signer.address());
    }
}
