//! A data item: one fetch of an outside source by a data node, signed by that node.
//!
//! Signed bytes: `"haca.data.v1:"` followed by the RFC 8785 canonical JSON of the item without
//! `id`, `signature` and `age_ms` (absent optional fields are left out, not written as
//! `null`). The item's `id` is the SHA-256 of those signed bytes (64 hex characters), so an
//! id names one fetch exactly: a changed field is another id. The signature is Ed25519 by
//! `signer` over the signed bytes, 128 hex characters. `age_ms` is the item's age when a run
//! used it: the gateway writes it into the receipt's data box, where the gateway's own
//! signature covers it; the data node never signs it.
//!
//! The type lives here, not in `haca-data`, because the claims checker (`data.attested`)
//! verifies it offline and the store keeps it; fetching, the allowlist and the freshness
//! policy are `haca-data`'s.

use crate::canonical;
use crate::hash::{sha256, Digest};
use crate::ids::NodeId;
use crate::keys::{self, KeyError, NodeKey};
use serde::{Deserialize, Serialize};

/// Domain separation for a data node's signature.
pub const DATA_DOMAIN: &[u8] = b"haca.data.v1:";

/// One admitted external data item, as its data node signed it (plus its age at use, in a
/// receipt). Fields added after the first receipts are optional, so those still parse.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct DataItem {
    /// SHA-256 of the signed bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Digest>,
    /// The URL fetched.
    pub source: String,
    /// When the response arrived, unix milliseconds.
    pub fetched_at: u64,
    /// Until when the data node vouches for it (its policy's maximum age, or the source's
    /// cache headers when shorter), unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// SHA-256 of the response body.
    #[serde(rename = "sha256", alias = "content_hash")]
    pub sha256: Digest,
    /// SHA-256 of the server's leaf TLS certificate (DER); none over plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_sha256: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The body's length in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The data node's key.
    pub signer: NodeId,
    /// Ed25519 over [`DataItem::signed_bytes`], hex.
    pub signature: String,
    /// The item's age when the run used it (receipts only; not signed by the data node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<u64>,
}

/// Why a data item does not check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataItemError {
    #[error(
        "id {named} is not the hash of the item's signed fields ({computed}): a field was changed"
    )]
    IdMismatch { named: Digest, computed: Digest },
    #[error("data node signature: {0}")]
    Signature(#[from] KeyError),
}

impl DataItem {
    /// `"haca.data.v1:"` + canonical JSON of the item without `id`, `signature`, `age_ms`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_value(self).expect("a data item is JSON");
        let o = v.as_object_mut().expect("a data item is an object");
        for k in ["id", "signature", "age_ms"] {
            o.remove(k);
        }
        let mut out = DATA_DOMAIN.to_vec();
        out.extend(canonical::to_vec(&v).expect("a data item canonicalizes"));
        out
    }

    /// The id its signed fields give.
    pub fn computed_id(&self) -> Digest {
        sha256(&self.signed_bytes())
    }

    /// Sets `signer`, `id` and `signature` with `key`.
    pub fn sign(mut self, key: &NodeKey) -> Self {
        self.signer = key.node_id();
        self.age_ms = None;
        let bytes = self.signed_bytes();
        self.id = Some(sha256(&bytes));
        self.signature = hex::encode(key.sign(&bytes));
        self
    }

    /// The id it names matches its fields, and its signer signed them.
    pub fn verify(&self) -> Result<(), DataItemError> {
        let bytes = self.signed_bytes();
        let computed = sha256(&bytes);
        if let Some(named) = self.id {
            if named != computed {
                return Err(DataItemError::IdMismatch { named, computed });
            }
        }
        keys::verify(&self.signer, &bytes, &self.signature)?;
        Ok(())
    }

    /// A name for messages: its id, else its source.
    pub fn label(&self) -> String {
        match self.id {
            Some(id) => format!("data item {id} ({})", self.source),
            None => format!("data item from {}", self.source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DataItem {
        DataItem {
            id: None,
            source: "https://example.com/price".into(),
            fetched_at: 1_700_000_000_000,
            valid_until: Some(1_700_000_060_000),
            http_status: Some(200),
            sha256: sha256(b"42"),
            tls_cert_sha256: None,
            content_type: Some("text/plain".into()),
            size: Some(2),
            signer: NodeId([0; 32]),
            signature: String::new(),
            age_ms: None,
        }
        .sign(&NodeKey::from_seed([7; 32]))
    }

    /// Test vector: the signed bytes and id of a fixed item under a fixed key.
    #[test]
    fn signed_bytes_and_id_match_the_test_vector() {
        let item = sample();
        let text = String::from_utf8(item.signed_bytes()).unwrap();
        assert_eq!(
            text,
            format!(
                "haca.data.v1:{{\"content_type\":\"text/plain\",\"fetched_at\":1700000000000,\"http_status\":200,\"sha256\":\"{}\",\"signer\":\"{}\",\"size\":2,\"source\":\"https://example.com/price\",\"valid_until\":1700000060000}}",
                sha256(b"42"),
                NodeKey::from_seed([7; 32]).node_id()
            )
        );
        assert_eq!(item.id, Some(sha256(text.as_bytes())));
        assert_eq!(
            item.id.unwrap().to_hex(),
            "dc45f7bf5fdd48f01c11f94521f2f46abfa40bf86bc23c30e44399e96fe24c7a"
        );
        item.verify().unwrap();
    }

    #[test]
    fn a_changed_field_breaks_the_id_and_a_forged_signature_fails() {
        let item = sample();
        let mut changed = item.clone();
        changed.sha256 = sha256(b"43");
        assert!(matches!(
            changed.verify(),
            Err(DataItemError::IdMismatch { .. })
        ));
        changed.id = None;
        assert!(matches!(changed.verify(), Err(DataItemError::Signature(_))));
        let forged = item.clone().sign(&NodeKey::from_seed([8; 32]));
        let mut claimed = forged.clone();
        claimed.signer = item.signer;
        // Without an id to mismatch, the check that fails is the signature's.
        claimed.id = None;
        assert!(matches!(claimed.verify(), Err(DataItemError::Signature(_))));
    }

    #[test]
    fn age_at_use_is_not_signed_and_old_items_parse() {
        let mut item = sample();
        item.age_ms = Some(1234);
        item.verify().unwrap();
        let old = serde_json::json!({
            "source": "s", "fetched_at": 1, "content_hash": sha256(b"x"),
            "signer": NodeId([1; 32]), "signature": "00"
        });
        let parsed: DataItem = serde_json::from_value(old).unwrap();
        assert_eq!(parsed.sha256, sha256(b"x"));
        assert_eq!(parsed.valid_until, None);
    }
}
