//! Identifiers: artifacts by content (BlobId), runs (RunId), nodes by public key (NodeId).

use crate::canonical;
use crate::hash::{sha256, Digest};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Why an identifier did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    #[error("blob id must look like sha256:<64 hex>: {0}")]
    Blob(String),
    #[error("run id must be 64 hex characters: {0}")]
    Run(String),
    #[error("node id must be 64 hex characters (an Ed25519 public key): {0}")]
    Node(String),
}

/// A model artifact's identity: SHA-256 of its bytes, written `sha256:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct BlobId(pub Digest);

impl BlobId {
    pub const PREFIX: &'static str = "sha256:";
    pub fn of(bytes: &[u8]) -> Self {
        BlobId(sha256(bytes))
    }
    /// True when `s` looks like a blob id rather than a label.
    pub fn looks_like(s: &str) -> bool {
        s.starts_with(Self::PREFIX)
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.0)
    }
}

impl FromStr for BlobId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| IdParseError::Blob(s.into()))?;
        hex.parse()
            .map(BlobId)
            .map_err(|e| IdParseError::Blob(format!("{s}: {e}")))
    }
}

/// A run's identity: SHA-256 over the canonical request, the gateway's node id and a
/// per-run nonce, so two identical requests are two runs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RunId(pub Digest);

impl RunId {
    /// Layout (canonical JSON, RFC 8785):
    /// `{"node":"<node hex>","nonce":"<32 hex>","request":"<request hash hex>"}` hashed with SHA-256.
    pub fn derive(request_hash: &Digest, node: &NodeId, nonce: &[u8; 16]) -> Self {
        let text = canonical::to_string(&serde_json::json!({
            "node": node.to_string(),
            "nonce": hex::encode(nonce),
            "request": request_hash.to_hex(),
        }))
        .expect("strings always canonicalize");
        RunId(sha256(text.as_bytes()))
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RunId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse()
            .map(RunId)
            .map_err(|e| IdParseError::Run(format!("{s}: {e}")))
    }
}

/// A node's identity: its Ed25519 public key, written as 64 hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct NodeId(pub [u8; 32]);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for NodeId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let d: Digest = s
            .parse()
            .map_err(|e| IdParseError::Node(format!("{s}: {e}")))?;
        Ok(NodeId(d.0))
    }
}

macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
string_serde!(BlobId);
string_serde!(RunId);
string_serde!(NodeId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_id_is_sha256_of_bytes_with_prefix() {
        let id = BlobId::of(b"abc");
        assert_eq!(
            id.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(id.to_string().parse::<BlobId>().unwrap(), id);
        assert!("ba7816bf".parse::<BlobId>().is_err());
        assert!("sha256:xyz".parse::<BlobId>().is_err());
    }

    #[test]
    fn run_id_depends_on_nonce_and_node() {
        let req = sha256(b"request");
        let a = NodeId([1; 32]);
        let b = NodeId([2; 32]);
        let r1 = RunId::derive(&req, &a, &[0; 16]);
        assert_ne!(r1, RunId::derive(&req, &a, &[1; 16]));
        assert_ne!(r1, RunId::derive(&req, &b, &[0; 16]));
        assert_eq!(r1, RunId::derive(&req, &a, &[0; 16]));
    }
}
