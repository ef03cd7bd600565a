//! Gateway keys: [`KeyPair`] (one key id, its X25519 secret and the suites it is offered with)
//! and [`KeyRing`] (every key id the gateway still answers, one of them current).
//!
//! Rotation: [`KeyRing::rotate`] adds the next key as current and gives the previous current
//! key an expiry; until then requests sealed to either key decapsulate, so requests in flight
//! (and clients holding the previous configuration) keep working. [`KeyRing::prune`] drops
//! expired keys; their ids are then unknown, and the gateway answers RFC 9458's key problem.
//! Time is the caller's: this module reads no clock.
//!
//! The private ring persists as JSON ([`KeyRing::to_private_json`]):
//! ```text
//! {"format":"haca-ohttp-keyring/1","current":2,
//!  "keys":[{"key_id":1,"kem_id":32,"secret_key":"<64 hex>","suites":[[1,3],[1,1]],
//!           "not_after":1767225600}, ...]}
//! ```
//! `not_after` (unix seconds) is absent for keys without an expiry. The file holds secrets:
//! the node writes it readable by its own user only.

use crate::config::{KeyConfig, SymmetricSuite, KEM_X25519_SHA256, NPK};
use crate::OhttpError;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, Serializable};
use rand_core::{OsRng, TryRngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub(crate) type SecretKey = <X25519HkdfSha256 as hpke::Kem>::PrivateKey;
pub(crate) type PublicKey = <X25519HkdfSha256 as hpke::Kem>::PublicKey;

/// One gateway key: its configuration and its X25519 secret. `Debug` prints no secret.
#[derive(Clone)]
pub struct KeyPair {
    config: KeyConfig,
    secret: SecretKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("config", &self.config)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl KeyPair {
    /// A fresh key from OS randomness, offered with [`SymmetricSuite::DEFAULT`].
    pub fn generate(key_id: u8) -> Result<KeyPair, OhttpError> {
        let mut ikm = Zeroizing::new([0u8; 32]);
        OsRng
            .try_fill_bytes(ikm.as_mut())
            .map_err(|e| OhttpError::InvalidKey(format!("OS randomness unavailable: {e}")))?;
        KeyPair::from_seed(key_id, ikm.as_ref())
    }

    /// A key derived from `seed` (RFC 9180 DeriveKeyPair): the same seed gives the same key.
    /// For tests and fixtures; the seed must hold at least 32 bytes.
    pub fn from_seed(key_id: u8, seed: &[u8]) -> Result<KeyPair, OhttpError> {
        if seed.len() < 32 {
            return Err(OhttpError::InvalidKey(format!(
                "seed of {} bytes; at least 32 needed",
                seed.len()
            )));
        }
        let (secret, public) = X25519HkdfSha256::derive_keypair(seed);
        Ok(KeyPair::assemble(
            key_id,
            secret,
            &public,
            SymmetricSuite::DEFAULT.to_vec(),
        ))
    }

    /// A key from its raw 32-byte X25519 secret (as RFC 9458 Appendix A prints one).
    pub fn from_secret(
        key_id: u8,
        secret: &[u8],
        suites: Vec<SymmetricSuite>,
    ) -> Result<KeyPair, OhttpError> {
        if suites.is_empty() {
            return Err(OhttpError::InvalidKey(
                "a key needs at least one suite".into(),
            ));
        }
        let secret = SecretKey::from_bytes(secret)
            .map_err(|e| OhttpError::InvalidKey(format!("X25519 secret key: {e}")))?;
        let public = X25519HkdfSha256::sk_to_pk(&secret);
        Ok(KeyPair::assemble(key_id, secret, &public, suites))
    }

    fn assemble(
        key_id: u8,
        secret: SecretKey,
        public: &PublicKey,
        suites: Vec<SymmetricSuite>,
    ) -> KeyPair {
        let mut public_key = [0u8; NPK];
        public_key.copy_from_slice(&public.to_bytes());
        KeyPair {
            config: KeyConfig {
                key_id,
                kem_id: KEM_X25519_SHA256,
                public_key,
                suites,
            },
            secret,
        }
    }

    /// The same key offered with other suites (in order of preference).
    pub fn with_suites(mut self, suites: Vec<SymmetricSuite>) -> Result<KeyPair, OhttpError> {
        if suites.is_empty() {
            return Err(OhttpError::InvalidKey(
                "a key needs at least one suite".into(),
            ));
        }
        self.config.suites = suites;
        Ok(self)
    }

    pub fn key_id(&self) -> u8 {
        self.config.key_id
    }

    /// What clients are given.
    pub fn config(&self) -> &KeyConfig {
        &self.config
    }

    pub(crate) fn secret(&self) -> &SecretKey {
        &self.secret
    }

    fn secret_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.secret.to_bytes()))
    }
}

#[derive(Debug, Clone)]
struct Entry {
    pair: KeyPair,
    not_after: Option<u64>,
}

/// The keys a gateway answers: up to 256 ids, one current. See the module docs for rotation.
#[derive(Debug, Clone)]
pub struct KeyRing {
    entries: Vec<Entry>,
    current: u8,
}

const RING_FORMAT: &str = "haca-ohttp-keyring/1";

#[derive(Serialize, Deserialize)]
struct RingFile {
    format: String,
    current: u8,
    keys: Vec<RingKey>,
}

#[derive(Serialize, Deserialize)]
struct RingKey {
    key_id: u8,
    kem_id: u16,
    secret_key: Zeroizing<String>,
    suites: Vec<(u16, u16)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_after: Option<u64>,
}

impl KeyRing {
    /// A ring holding one key, current, without expiry.
    pub fn new(first: KeyPair) -> KeyRing {
        KeyRing {
            current: first.key_id(),
            entries: vec![Entry {
                pair: first,
                not_after: None,
            }],
        }
    }

    /// A ring with one fresh key (OS randomness).
    pub fn generate(key_id: u8) -> Result<KeyRing, OhttpError> {
        Ok(KeyRing::new(KeyPair::generate(key_id)?))
    }

    /// The key new clients should use.
    pub fn current(&self) -> &KeyPair {
        self.entries
            .iter()
            .map(|e| &e.pair)
            .find(|p| p.key_id() == self.current)
            .unwrap_or(&self.entries[0].pair)
    }

    /// The key with this id, if the ring holds it.
    pub fn get(&self, key_id: u8) -> Option<&KeyPair> {
        self.entries
            .iter()
            .map(|e| &e.pair)
            .find(|p| p.key_id() == key_id)
    }

    /// When the key with this id stops being answered (`None`: no expiry set, or no such key).
    pub fn not_after(&self, key_id: u8) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| e.pair.key_id() == key_id)
            .and_then(|e| e.not_after)
    }

    /// Every key id held, current first.
    pub fn key_ids(&self) -> Vec<u8> {
        self.configs().iter().map(|c| c.key_id).collect()
    }

    /// Adds a key that is not current (for example the next one, published ahead of use).
    pub fn insert(&mut self, pair: KeyPair, not_after: Option<u64>) -> Result<(), OhttpError> {
        if self.get(pair.key_id()).is_some() {
            return Err(OhttpError::KeyRing(format!(
                "key id {} is already in the ring",
                pair.key_id()
            )));
        }
        self.entries.push(Entry { pair, not_after });
        Ok(())
    }

    /// Makes `next` current; the previous current key is kept, answered until
    /// `previous_not_after` (unix seconds), so requests already sealed to it still open.
    pub fn rotate(&mut self, next: KeyPair, previous_not_after: u64) -> Result<(), OhttpError> {
        let id = next.key_id();
        self.insert(next, None)?;
        let previous = self.current;
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.pair.key_id() == previous)
        {
            e.not_after = Some(previous_not_after);
        }
        self.current = id;
        Ok(())
    }

    /// [`KeyRing::rotate`] to a fresh key (OS randomness) under [`KeyRing::next_key_id`];
    /// returns the new id.
    pub fn rotate_generated(&mut self, previous_not_after: u64) -> Result<u8, OhttpError> {
        let id = self
            .next_key_id()
            .ok_or_else(|| OhttpError::KeyRing("all 256 key ids are in use".into()))?;
        self.rotate(KeyPair::generate(id)?, previous_not_after)?;
        Ok(id)
    }

    /// The id after the current one (wrapping) that the ring does not hold.
    pub fn next_key_id(&self) -> Option<u8> {
        (1..=256u16)
            .map(|step| self.current.wrapping_add(step as u8))
            .find(|id| self.get(*id).is_none())
    }

    /// Drops every key whose expiry is at or before `now` (never the current key); returns
    /// their ids.
    pub fn prune(&mut self, now: u64) -> Vec<u8> {
        let current = self.current;
        let mut dropped = Vec::new();
        self.entries.retain(|e| {
            let expired = e.pair.key_id() != current && e.not_after.is_some_and(|t| t <= now);
            if expired {
                dropped.push(e.pair.key_id());
            }
            !expired
        });
        dropped
    }

    /// Every configuration held, current first: what `GET /v1/ohttp/config` serves.
    pub fn configs(&self) -> Vec<KeyConfig> {
        let mut out = vec![self.current().config().clone()];
        out.extend(
            self.entries
                .iter()
                .filter(|e| e.pair.key_id() != self.current)
                .map(|e| e.pair.config().clone()),
        );
        out
    }

    /// [`KeyRing::configs`] as an `application/ohttp-keys` body.
    pub fn encoded_configs(&self) -> Vec<u8> {
        KeyConfig::encode_list(&self.configs())
    }

    /// The private ring as JSON, for the node to persist (module docs: the format).
    pub fn to_private_json(&self) -> Zeroizing<String> {
        let file = RingFile {
            format: RING_FORMAT.into(),
            current: self.current,
            keys: self
                .entries
                .iter()
                .map(|e| RingKey {
                    key_id: e.pair.key_id(),
                    kem_id: e.pair.config.kem_id,
                    secret_key: e.pair.secret_hex(),
                    suites: e
                        .pair
                        .config
                        .suites
                        .iter()
                        .map(|s| (s.kdf_id, s.aead_id))
                        .collect(),
                    not_after: e.not_after,
                })
                .collect(),
        };
        // Serializing plain strings and integers cannot fail.
        Zeroizing::new(serde_json::to_string(&file).unwrap_or_default())
    }

    /// Reads what [`KeyRing::to_private_json`] wrote; refuses duplicates, a missing current
    /// key, other KEMs and malformed secrets.
    pub fn from_private_json(json: &str) -> Result<KeyRing, OhttpError> {
        let bad = |m: String| OhttpError::KeyRing(m);
        let file: RingFile =
            serde_json::from_str(json).map_err(|e| bad(format!("private ring JSON: {e}")))?;
        if file.format != RING_FORMAT {
            return Err(bad(format!(
                "format {:?}, expected {RING_FORMAT}",
                file.format
            )));
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(file.keys.len());
        for k in file.keys {
            if k.kem_id != KEM_X25519_SHA256 {
                return Err(bad(format!("key {}: KEM {:#06x}", k.key_id, k.kem_id)));
            }
            let secret = Zeroizing::new(
                hex::decode(k.secret_key.as_str())
                    .map_err(|e| bad(format!("key {}: secret_key hex: {e}", k.key_id)))?,
            );
            let suites = k
                .suites
                .iter()
                .map(|&(kdf_id, aead_id)| SymmetricSuite { kdf_id, aead_id })
                .collect();
            let pair = KeyPair::from_secret(k.key_id, &secret, suites)?;
            if entries.iter().any(|e| e.pair.key_id() == k.key_id) {
                return Err(bad(format!("key id {} appears twice", k.key_id)));
            }
            entries.push(Entry {
                pair,
                not_after: k.not_after,
            });
        }
        if !entries.iter().any(|e| e.pair.key_id() == file.current) {
            return Err(bad(format!(
                "current key id {} is not in the ring",
                file.current
            )));
        }
        Ok(KeyRing {
            entries,
            current: file.current,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_gives_the_same_key_and_a_short_seed_is_refused() {
        let a = KeyPair::from_seed(1, &[5; 32]).unwrap();
        let b = KeyPair::from_seed(1, &[5; 32]).unwrap();
        assert_eq!(a.config(), b.config());
        assert_ne!(
            a.config().public_key,
            KeyPair::from_seed(1, &[6; 32]).unwrap().config().public_key
        );
        assert_eq!(
            KeyPair::from_seed(1, &[5; 31]).unwrap_err().code(),
            "invalid_key"
        );
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let pair = KeyPair::from_seed(1, &[5; 32]).unwrap();
        let secret = hex::encode(pair.secret().to_bytes());
        let shown = format!("{:?}", KeyRing::new(pair));
        assert!(!shown.contains(&secret));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn next_key_id_wraps_and_skips_held_ids() {
        let mut ring = KeyRing::new(KeyPair::from_seed(255, &[1; 32]).unwrap());
        ring.insert(KeyPair::from_seed(0, &[2; 32]).unwrap(), None)
            .unwrap();
        assert_eq!(ring.next_key_id(), Some(1));
    }
}
