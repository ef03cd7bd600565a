//! EIP-3009 `TransferWithAuthorization` as EIP-712 typed data: the digest a payer signs, the
//! signature, and recovering the signer.
//!
//! Typed data: primary type `TransferWithAuthorization(address from,address to,uint256 value,
//! uint256 validAfter,uint256 validBefore,bytes32 nonce)` in the domain `EIP712Domain(string
//! name,string version,uint256 chainId,address verifyingContract)`, where `verifyingContract` is
//! the token. Digest = keccak256(0x19 0x01 || domainSeparator || hashStruct(message)).
//! Signature = 65 bytes `r || s || v`, v = 27 or 28. Test vector: `tests/it/interop.rs`, signed
//! by `eth_account` through `tests/x402_vectors.py`.

use crate::types::Authorization;
use alloy_primitives::{Address, Bytes, Signature, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{Eip712Domain, SolStruct};
use std::borrow::Cow;

alloy_sol_types::sol! {
    /// EIP-3009's signed struct, field for field.
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// The half of the secp256k1 group order: a larger `s` is the malleable twin that token
/// contracts (OpenZeppelin / Circle `ECRecover`) refuse.
const HALF_ORDER: U256 = U256::from_limbs([
    0xdfe9_2f46_681b_20a0,
    0x5d57_6e73_57a4_501d,
    0xffff_ffff_ffff_ffff,
    0x7fff_ffff_ffff_ffff,
]);

/// A token's EIP-712 domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenDomain {
    /// `extra.name` of the requirements, e.g. "USDC" or "USD Coin".
    pub name: String,
    /// `extra.version` of the requirements, e.g. "2".
    pub version: String,
    pub chain_id: u64,
    /// The token contract.
    pub verifying_contract: Address,
}

impl TokenDomain {
    fn eip712(&self) -> Eip712Domain {
        Eip712Domain::new(
            Some(Cow::Owned(self.name.clone())),
            Some(Cow::Owned(self.version.clone())),
            Some(U256::from(self.chain_id)),
            Some(self.verifying_contract),
            None,
        )
    }

    /// The digest a payer signs for `auth` in this domain.
    pub fn signing_hash(&self, auth: &Authorization) -> B256 {
        let message = TransferWithAuthorization {
            from: auth.from,
            to: auth.to,
            value: auth.value,
            validAfter: auth.valid_after,
            validBefore: auth.valid_before,
            nonce: auth.nonce,
        };
        message.eip712_signing_hash(&self.eip712())
    }

    /// Sign `auth` with `signer`: 65 bytes `r || s || v` (v = 27 or 28, s low), as
    /// `eth_account` writes it.
    pub fn sign(&self, auth: &Authorization, signer: &PrivateKeySigner) -> Bytes {
        let hash = self.signing_hash(auth);
        let sig = signer
            .sign_hash_sync(&hash)
            .expect("a local secp256k1 key signs any 32-byte digest");
        Bytes::copy_from_slice(&sig.as_bytes())
    }

    /// Recover the address that signed `auth` in this domain. Refuses what the token
    /// contract would refuse: a length other than 65, `v` other than 27 or 28, a high `s`.
    pub fn recover(
        &self,
        auth: &Authorization,
        signature: &[u8],
    ) -> Result<Address, SignatureError> {
        recover_prehash(signature, &self.signing_hash(auth))
    }
}

/// The address that signed the 32-byte `hash` with the 65-byte `signature`, refusing what a
/// token contract refuses: another length, `v` other than 27 or 28, a high `s`.
pub(crate) fn recover_prehash(
    signature: &[u8],
    hash: &alloy_primitives::B256,
) -> Result<Address, SignatureError> {
    let raw: &[u8; 65] = signature
        .try_into()
        .map_err(|_| SignatureError::Length(signature.len()))?;
    let v = raw[64];
    if v != 27 && v != 28 {
        return Err(SignatureError::V(v));
    }
    let sig = Signature::from_bytes_and_parity(&raw[..64], v == 28);
    if sig.s() > HALF_ORDER {
        return Err(SignatureError::HighS);
    }
    sig.recover_address_from_prehash(hash)
        .map_err(|e| SignatureError::Unrecoverable(e.to_string()))
}

/// Why a signature could not be recovered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature must be 65 bytes (r, s, v), got {0}; contract-wallet signatures (EIP-1271, ERC-6492) are not supported")]
    Length(usize),
    #[error("signature v must be 27 or 28, got {0}")]
    V(u8),
    #[error("signature s is in the upper half of the curve order (malleable form)")]
    HighS,
    #[error("no public key recovers from this signature: {0}")]
    Unrecoverable(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain() -> TokenDomain {
        TokenDomain {
            name: "USDC".into(),
            version: "2".into(),
            chain_id: 84532,
            verifying_contract: "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
                .parse()
                .unwrap(),
        }
    }

    fn auth(from: Address) -> Authorization {
        Authorization {
            from,
            to: Address::repeat_byte(0x22),
            value: U256::from(10_000u64),
            valid_after: U256::ZERO,
            valid_before: U256::from(1_740_672_154u64),
            nonce: B256::repeat_byte(0x33),
        }
    }

    #[test]
    fn half_order_is_n_over_two() {
        let n: U256 = "0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"
            .parse()
            .unwrap();
        assert_eq!(HALF_ORDER, n >> 1);
    }

    #[test]
    fn sign_then_recover() {
        let key = PrivateKeySigner::from_bytes(&B256::repeat_byte(7)).unwrap();
        let a = auth(key.address());
        let sig = domain().sign(&a, &key);
        assert_eq!(sig.len(), 65);
        assert_eq!(domain().recover(&a, &sig).unwrap(), key.address());
        // Any change to the message or the domain moves the recovered address.
        let mut other = a.clone();
        other.value += U256::from(1u64);
        assert_ne!(domain().recover(&other, &sig).unwrap(), key.address());
        let mut d = domain();
        d.chain_id = 8453;
        assert_ne!(d.recover(&a, &sig).unwrap(), key.address());
    }

    #[test]
    fn malformed_signatures_are_refused() {
        let key = PrivateKeySigner::from_bytes(&B256::repeat_byte(7)).unwrap();
        let a = auth(key.address());
        let sig = domain().sign(&a, &key).to_vec();
        assert_eq!(
            domain().recover(&a, &sig[..64]),
            Err(SignatureError::Length(64))
        );
        let mut v0 = sig.clone();
        v0[64] -= 27;
        assert_eq!(domain().recover(&a, &v0), Err(SignatureError::V(v0[64])));
        // The malleable twin (n - s, flipped v) recovers the same key on a bare ecrecover;
        // the token refuses it, and so does this.
        let parsed = Signature::from_raw(&sig).unwrap();
        let twin = Signature::new(
            parsed.r(),
            (HALF_ORDER << 1) + U256::from(1u64) - parsed.s(),
            !parsed.v(),
        );
        assert_eq!(
            domain().recover(&a, &twin.as_bytes()),
            Err(SignatureError::HighS)
        );
    }
}
