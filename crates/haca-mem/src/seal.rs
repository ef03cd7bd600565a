//! Rows at rest: each sealed with XChaCha20-Poly1305 under a key derived from the user's own key
//! and the row's id; the associated data binds the id, owner and non-secret metadata.

use crate::row::{Category, MemoryRow, MemoryType, RowState};
use crate::MemError;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// HKDF-SHA256 info prefix of a row key; the row's id follows it.
pub const ROW_KEY_INFO: &str = "haca.mem.row.v1";
/// HKDF-SHA256 info prefix of a blob key (a row's embedding, the user's bio); its label follows.
pub const BLOB_KEY_INFO: &str = "haca.mem.blob.v1";
/// HKDF-SHA256 salt of a user key derived from a credential the user holds.
pub const USER_KEY_SALT: &str = "haca.mem.user.v1";

/// A user's 32-byte memory secret. Only per-row keys derived from it touch data.
#[derive(Clone, PartialEq, Eq)]
pub struct UserKey([u8; 32]);

impl UserKey {
    pub fn from_bytes(secret: [u8; 32]) -> Self {
        UserKey(secret)
    }

    pub fn generate() -> Self {
        let mut s = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut s);
        UserKey(s)
    }

    /// From 64 hex characters.
    pub fn from_hex(text: &str) -> Result<Self, MemError> {
        let mut s = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut s).map_err(|e| MemError::Field {
            id: String::new(),
            field: "user_key",
            reason: format!("must be 64 hex characters (32 bytes): {e}"),
        })?;
        Ok(UserKey(s))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The key of a user who holds `credential` (an API key, or a deterministic signature of an
    /// x402 payer): HKDF-SHA256(salt = "haca.mem.user.v1", ikm = credential). The node stores
    /// neither, so what it holds at rest opens only while the user presents the credential.
    pub fn derive(credential: &[u8]) -> Self {
        let mut okm = [0u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::new(Some(USER_KEY_SALT.as_bytes()), credential)
            .expand(b"user", &mut okm)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        UserKey(okm)
    }

    /// Seals `plain` under the key of blob `label` (which is also its associated data, so a
    /// sealed blob moved to another label does not open): a 24-byte nonce, then the ciphertext.
    pub fn seal_blob(&self, label: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new(&self.derived(BLOB_KEY_INFO, label).into());
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: label.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any message under 256 GiB");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    /// Opens what [`UserKey::seal_blob`] sealed under `label`.
    pub fn open_blob(&self, label: &str, sealed: &[u8]) -> Result<Vec<u8>, MemError> {
        let refused = |reason: &str| MemError::Field {
            id: label.to_owned(),
            field: "sealed",
            reason: reason.to_owned(),
        };
        if sealed.len() < 24 + 16 {
            return Err(refused("shorter than a nonce and a tag"));
        }
        let (nonce, ct) = sealed.split_at(24);
        XChaCha20Poly1305::new(&self.derived(BLOB_KEY_INFO, label).into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: label.as_bytes(),
                },
            )
            // As a row that does not open: the caller's credential is the likely cause.
            .map_err(|_| MemError::Open {
                id: label.to_owned(),
            })
    }

    /// The key of row `id`: HKDF-SHA256(ikm = secret, info = "haca.mem.row.v1" || id).
    fn row_key(&self, id: &str) -> [u8; 32] {
        self.derived(ROW_KEY_INFO, id)
    }

    fn derived(&self, prefix: &str, label: &str) -> [u8; 32] {
        let mut info = Vec::with_capacity(prefix.len() + label.len());
        info.extend_from_slice(prefix.as_bytes());
        info.extend_from_slice(label.as_bytes());
        let mut okm = [0u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::new(None, &self.0)
            .expand(&info, &mut okm)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        okm
    }
}

impl std::fmt::Debug for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserKey(..)") // never the secret
    }
}

/// A row as the store holds it: the non-secret metadata needed to list rows and follow links
/// without decrypting, a 24-byte nonce (hex) and the ciphertext (base64). A deleted row is a
/// tombstone: no nonce, no ciphertext.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct SealedRow {
    pub id: String,
    pub owner: String,
    pub created_at: u64,
    pub last_validated_at: u64,
    /// Live, superseded (with the superseding row's id) or deleted.
    pub state: RowState,
    pub supersedes: Option<String>,
    pub nonce: String,
    pub ciphertext: Option<String>,
}

/// The secret part of a row: everything but the metadata.
#[derive(Serialize, Deserialize)]
struct Body {
    memory: String,
    categories: Vec<Category>,
    #[serde(rename = "type")]
    memory_type: MemoryType,
    subject: Option<String>,
    source_run: Option<String>,
    valid_from: u64,
    valid_until: Option<u64>,
    last_validated_run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thread_id: Option<String>,
}

impl SealedRow {
    /// Seals `row` under `key`. A deleted row becomes a tombstone (its text is not kept).
    pub fn seal(key: &UserKey, row: &MemoryRow) -> Result<SealedRow, MemError> {
        let mut sealed = SealedRow {
            id: row.id.clone(),
            owner: row.owner.clone(),
            created_at: row.created_at,
            last_validated_at: row.last_validated_at,
            state: row.state.clone(),
            supersedes: row.supersedes.clone(),
            nonce: String::new(),
            ciphertext: None,
        };
        if matches!(row.state, RowState::Deleted { .. }) {
            return Ok(sealed);
        }
        let body = Body {
            memory: row.memory.clone(),
            categories: row.categories.clone(),
            memory_type: row.memory_type,
            subject: row.subject.clone(),
            source_run: row.source_run.clone(),
            valid_from: row.valid_from,
            valid_until: row.valid_until,
            last_validated_run: row.last_validated_run.clone(),
            agent_id: row.agent_id.clone(),
            thread_id: row.thread_id.clone(),
        };
        let plain = serde_json::to_vec(&body).map_err(|e| sealed.field("body", e))?;
        let aad = sealed.aad()?;
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new(&key.row_key(&row.id).into());
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| sealed.field("ciphertext", "encryption failed"))?;
        sealed.nonce = hex::encode(nonce);
        sealed.ciphertext = Some(B64.encode(ct));
        Ok(sealed)
    }

    /// Opens the row under `key`. Refused, never a panic, when the key is another user's, the
    /// ciphertext was moved to another id or owner, the metadata was edited, or an input is
    /// malformed.
    pub fn open(&self, key: &UserKey) -> Result<MemoryRow, MemError> {
        self.check_shape()?;
        if matches!(self.state, RowState::Deleted { .. }) {
            return Err(MemError::Deleted {
                id: self.id.clone(),
            });
        }
        let mut nonce = [0u8; 24];
        hex::decode_to_slice(&self.nonce, &mut nonce)
            .map_err(|e| self.field("nonce", format!("must be 48 hex characters: {e}")))?;
        let ct = B64
            .decode(self.ciphertext.as_deref().unwrap_or_default())
            .map_err(|e| self.field("ciphertext", format!("not base64: {e}")))?;
        let aad = self.aad()?;
        let cipher = XChaCha20Poly1305::new(&key.row_key(&self.id).into());
        let plain = cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ct,
                    aad: &aad,
                },
            )
            .map_err(|_| MemError::Open {
                id: self.id.clone(),
            })?;
        let body: Body = serde_json::from_slice(&plain).map_err(|e| self.field("body", e))?;
        Ok(MemoryRow {
            id: self.id.clone(),
            owner: self.owner.clone(),
            memory: body.memory,
            categories: body.categories,
            memory_type: body.memory_type,
            subject: body.subject,
            created_at: self.created_at,
            source_run: body.source_run,
            valid_from: body.valid_from,
            valid_until: body.valid_until,
            last_validated_at: self.last_validated_at,
            last_validated_run: body.last_validated_run,
            agent_id: body.agent_id,
            thread_id: body.thread_id,
            state: self.state.clone(),
            supersedes: self.supersedes.clone(),
        })
    }

    /// A tombstone has neither nonce nor ciphertext; any other row has both.
    pub fn check_shape(&self) -> Result<(), MemError> {
        let deleted = matches!(self.state, RowState::Deleted { .. });
        if self.id.is_empty() {
            return Err(self.field("id", "is empty"));
        }
        match (deleted, &self.ciphertext) {
            (true, Some(_)) => Err(self.field("ciphertext", "a deleted row keeps none")),
            (true, None) if !self.nonce.is_empty() => {
                Err(self.field("nonce", "a deleted row keeps none"))
            }
            (false, None) => Err(self.field("ciphertext", "missing on a row that is not deleted")),
            _ => Ok(()),
        }
    }

    /// The plaintext row of a tombstone: its metadata, no text, no categories.
    pub fn tombstone(&self) -> MemoryRow {
        MemoryRow {
            id: self.id.clone(),
            owner: self.owner.clone(),
            memory: String::new(),
            categories: Vec::new(),
            memory_type: MemoryType::Semantic,
            subject: None,
            created_at: self.created_at,
            source_run: None,
            valid_from: self.created_at,
            valid_until: None,
            last_validated_at: self.last_validated_at,
            last_validated_run: None,
            agent_id: None,
            thread_id: None,
            state: self.state.clone(),
            supersedes: self.supersedes.clone(),
        }
    }

    /// The associated data: canonical JSON of the id, owner and metadata.
    fn aad(&self) -> Result<Vec<u8>, MemError> {
        haca_core::canonical::to_vec(&serde_json::json!({
            "v": ROW_KEY_INFO,
            "id": self.id,
            "owner": self.owner,
            "created_at": self.created_at,
            "last_validated_at": self.last_validated_at,
            "state": self.state,
            "supersedes": self.supersedes,
        }))
        .map_err(|e| self.field("metadata", e))
    }

    fn field(&self, field: &'static str, reason: impl std::fmt::Display) -> MemError {
        MemError::Field {
            id: self.id.clone(),
            field,
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> MemoryRow {
        MemoryRow::new(
            "m1",
            "alice",
            "likes rye bread",
            MemoryType::Semantic,
            1_000,
        )
        .with_categories(&[Category::Interests])
        .with_subject("bread")
    }

    #[test]
    fn round_trip_and_ciphertext_hides_text() {
        let key = UserKey::from_bytes([7; 32]);
        let s = SealedRow::seal(&key, &row()).unwrap();
        assert_eq!(s.nonce.len(), 48);
        assert!(!s.ciphertext.as_ref().unwrap().contains("rye"));
        assert_eq!(s.open(&key).unwrap(), row());
    }

    #[test]
    fn row_keys_differ_per_row_and_user() {
        let a = UserKey::from_bytes([1; 32]);
        let b = UserKey::from_bytes([2; 32]);
        assert_ne!(a.row_key("x"), a.row_key("y"));
        assert_ne!(a.row_key("x"), b.row_key("x"));
        assert_eq!(format!("{a:?}"), "UserKey(..)");
        assert_eq!(UserKey::from_hex(&a.to_hex()).unwrap(), a);
        assert!(UserKey::from_hex("zz").is_err());
    }

    #[test]
    fn blobs_open_only_under_their_key_and_label() {
        let a = UserKey::derive(b"hk_alice");
        assert_eq!(a, UserKey::derive(b"hk_alice"));
        let b = UserKey::derive(b"hk_bob");
        assert_ne!(a, b);
        let sealed = a.seal_blob("vec:m1", b"0123");
        assert_eq!(a.open_blob("vec:m1", &sealed).unwrap(), b"0123");
        assert!(b.open_blob("vec:m1", &sealed).is_err());
        assert!(a.open_blob("vec:m2", &sealed).is_err());
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(a.open_blob("vec:m1", &flipped).is_err());
        assert!(a.open_blob("vec:m1", &sealed[..20]).is_err());
    }

    #[test]
    fn deleted_rows_seal_to_tombstones() {
        let key = UserKey::from_bytes([7; 32]);
        let mut r = row();
        r.state = RowState::Deleted { at: 5_000 };
        let s = SealedRow::seal(&key, &r).unwrap();
        assert_eq!((s.nonce.as_str(), s.ciphertext.as_ref()), ("", None));
        assert_eq!(s.open(&key), Err(MemError::Deleted { id: "m1".into() }));
        assert_eq!(s.tombstone().state, RowState::Deleted { at: 5_000 });
    }
}
