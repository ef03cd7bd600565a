//! Proof that a request comes from the holder of an x402 payer's key: an EIP-191
//! `personal_sign` signature over `haca read {path} at {unix seconds}`, the message a wallet
//! signs for "sign in". A node lets the payer of a run read its output with it, without
//! accounts; the time bounds replay of a captured proof.

use crate::eip3009::SignatureError;
use alloy_primitives::{eip191_hash_message, Address};

/// How far the proof's time may be from the node's clock, in seconds.
pub const PROOF_WINDOW_SECS: u64 = 300;

/// The message a payer signs to read `path` at `at` (unix seconds).
pub fn read_message(path: &str, at: u64) -> String {
    format!("haca read {path} at {at}")
}

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error(
        "the proof's time {at} is more than {PROOF_WINDOW_SECS} s from the node's clock ({now})"
    )]
    Stale { at: u64, now: u64 },
    #[error("the signature is not 0x and 130 hex digits")]
    Encoding,
    #[error("the signature: {0}")]
    Signature(#[from] SignatureError),
}

/// The address whose key signed [`read_message`] of `path` at `at` (a `0x` hex signature of
/// 65 bytes `r || s || v`, `v` 27 or 28, low `s`), checked against `now`.
pub fn recover_reader(
    path: &str,
    at: u64,
    signature: &str,
    now: u64,
) -> Result<Address, ProofError> {
    if at.abs_diff(now) > PROOF_WINDOW_SECS {
        return Err(ProofError::Stale { at, now });
    }
    let raw = signature
        .strip_prefix("0x")
        .and_then(|h| hex::decode(h).ok())
        .filter(|b| b.len() == 65)
        .ok_or(ProofError::Encoding)?;
    let hash = eip191_hash_message(read_message(path, at).as_bytes());
    Ok(crate::eip3009::recover_prehash(&raw, &hash)?)
}

/// The address whose key signed `message` (EIP-191 `personal_sign`; a `0x` hex signature of 65
/// bytes). For MemSync's memory key, whose message names the address and has no time.
pub fn recover_message_signer(message: &str, signature: &str) -> Result<Address, ProofError> {
    let raw = signature
        .strip_prefix("0x")
        .and_then(|h| hex::decode(h).ok())
        .filter(|b| b.len() == 65)
        .ok_or(ProofError::Encoding)?;
    let hash = eip191_hash_message(message.as_bytes());
    Ok(crate::eip3009::recover_prehash(&raw, &hash)?)
}

/// Signs `message` (EIP-191) with `signer`: a `0x` hex signature. Deterministic (RFC 6979).
pub fn sign_message(signer: &alloy_signer_local::PrivateKeySigner, message: &str) -> String {
    use alloy_signer::SignerSync;
    let sig = signer
        .sign_message_sync(message.as_bytes())
        .expect("a local secp256k1 key signs any message");
    format!("0x{}", hex::encode(sig.as_bytes()))
}

/// Signs [`read_message`] of `path` at `at` with `signer`: what a client sends (tests, the
/// CLI's wallet).
pub fn sign_read(signer: &alloy_signer_local::PrivateKeySigner, path: &str, at: u64) -> String {
    use alloy_signer::SignerSync;
    let sig = signer
        .sign_message_sync(read_message(path, at).as_bytes())
        .expect("a local secp256k1 key signs any message");
    format!("0x{}", hex::encode(sig.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payer_proves_its_address_and_nothing_else_passes() {
        let signer = alloy_signer_local::PrivateKeySigner::random();
        let path = "/v1/runs/ab";
        let sig = sign_read(&signer, path, 1_000);
        assert_eq!(
            recover_reader(path, 1_000, &sig, 1_100).unwrap(),
            signer.address()
        );
        // Another path, another time: another address (or none).
        assert_ne!(
            recover_reader("/v1/runs/cd", 1_000, &sig, 1_100).ok(),
            Some(signer.address())
        );
        assert_ne!(
            recover_reader(path, 1_001, &sig, 1_100).ok(),
            Some(signer.address())
        );
        assert!(matches!(
            recover_reader(path, 1_000, &sig, 2_000),
            Err(ProofError::Stale { .. })
        ));
        assert_eq!(
            recover_reader(path, 1_000, "0x12", 1_000),
            Err(ProofError::Encoding)
        );
    }
}
