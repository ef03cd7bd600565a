//! Ed25519 node keys: generate, encode to and decode from their key-file text, sign, verify.
//! Reading and writing the file itself is the store's job (this crate does no I/O).

use crate::ids::NodeId;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::rngs::OsRng;

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key file: {0}")]
    KeyFile(String),
    #[error("public key {0} is not a valid Ed25519 point")]
    BadPublicKey(NodeId),
    #[error("signature must be 128 hex characters (64 bytes): {0}")]
    BadSignatureEncoding(String),
    #[error("signature does not verify under key {0}")]
    BadSignature(NodeId),
}

/// An Ed25519 signing key of a node, validator or data node.
#[derive(Clone)]
pub struct NodeKey(SigningKey);

const KEY_FILE_PREFIX: &str = "haca-ed25519-seed:";

impl NodeKey {
    pub fn generate() -> Self {
        NodeKey(SigningKey::generate(&mut OsRng))
    }

    pub fn from_seed(seed: [u8; 32]) -> Self {
        NodeKey(SigningKey::from_bytes(&seed))
    }

    pub fn node_id(&self) -> NodeId {
        NodeId(self.0.verifying_key().to_bytes())
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }

    /// The key file's text: `haca-ed25519-seed:<64 hex>` and a newline.
    pub fn to_file_string(&self) -> String {
        format!("{KEY_FILE_PREFIX}{}\n", hex::encode(self.0.to_bytes()))
    }

    pub fn from_file_string(text: &str) -> Result<Self, KeyError> {
        let hex = text
            .trim()
            .strip_prefix(KEY_FILE_PREFIX)
            .ok_or_else(|| KeyError::KeyFile(format!("does not start with {KEY_FILE_PREFIX}")))?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(hex, &mut seed)
            .map_err(|e| KeyError::KeyFile(format!("seed is not 64 hex characters: {e}")))?;
        Ok(Self::from_seed(seed))
    }
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({})", self.node_id()) // never the secret
    }
}

/// Checks a hex-encoded Ed25519 signature by `signer` over `msg`.
/// Most decoded public keys kept; the cache starts over when full.
const KEY_CACHE_CAP: usize = 4096;

/// The decoded (decompressed) public key of `signer`. Decoding costs about a quarter of a
/// verification and validators verify thousands of signatures from a few gateway keys, so
/// decoded keys are remembered; the result is the same either way.
fn verifying_key(signer: &NodeId) -> Result<VerifyingKey, KeyError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], VerifyingKey>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let bytes: [u8; 32] = signer.0;
    if let Some(k) = cache.lock().expect("key cache lock").get(&bytes) {
        return Ok(*k);
    }
    let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::BadPublicKey(*signer))?;
    let mut c = cache.lock().expect("key cache lock");
    if c.len() >= KEY_CACHE_CAP {
        c.clear();
    }
    c.insert(bytes, key);
    Ok(key)
}

pub fn verify(signer: &NodeId, msg: &[u8], signature_hex: &str) -> Result<(), KeyError> {
    let mut sig = [0u8; 64];
    hex::decode_to_slice(signature_hex, &mut sig)
        .map_err(|_| KeyError::BadSignatureEncoding(signature_hex.chars().take(16).collect()))?;
    let key = verifying_key(signer)?;
    key.verify(msg, &Signature::from_bytes(&sig))
        .map_err(|_| KeyError::BadSignature(*signer))
}

/// `bytes` random bytes from the OS, hex: the body of every random id haca hands out (case,
/// conversation, tool-call, token and webhook ids).
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips() {
        let k = NodeKey::generate();
        let back = NodeKey::from_file_string(&k.to_file_string()).unwrap();
        assert_eq!(back.node_id(), k.node_id());
        assert!(NodeKey::from_file_string("nope").is_err());
        assert!(NodeKey::from_file_string("haca-ed25519-seed:12").is_err());
    }

    /// RFC 8032 section 7.1, test 1: the empty message.
    #[test]
    fn rfc8032_test_vector_1() {
        let mut seed = [0u8; 32];
        hex::decode_to_slice(
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            &mut seed,
        )
        .unwrap();
        let k = NodeKey::from_seed(seed);
        assert_eq!(
            k.node_id().to_string(),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let sig = hex::encode(k.sign(b""));
        assert_eq!(sig, "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b");
        verify(&k.node_id(), b"", &sig).unwrap();
        assert_eq!(
            verify(&k.node_id(), b"x", &sig),
            Err(KeyError::BadSignature(k.node_id()))
        );
    }
}
