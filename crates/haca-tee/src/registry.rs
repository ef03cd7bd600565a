//! TEE registry rules: which PCR sets are approved, which enclaves are registered with them,
//! and which of those are active (approved PCRs, enabled, a fresh heartbeat), after
//! OpenGradient's TEE registry.
//!
//! Pure: no I/O and no clock. Every time is an argument (unix milliseconds), so the same
//! calls in the same order give the same registry, whether a validator applies them to chain
//! state or a gateway keeps a local mirror. Maps are `BTreeMap`s, so the serialized registry
//! (and anything hashed over it) is deterministic.
//!
//! Registration takes the facts a Nitro verifier produced ([`EnclaveFacts`], from a
//! [`VerifiedDocument`]); this module does not verify documents itself.
//!
//! Rules, each refusal a [`RegistryError`] with a plain reason:
//! - PCR sets (PCR0, PCR1, PCR2) are approved and revoked by governance
//!   ([`TeeRegistry::approve_pcrs`], [`TeeRegistry::revoke_pcrs`]).
//! - Revoking a set disables every enclave registered with it. A disabled enclave stays
//!   disabled even if the same set is approved again: re-approval says "new enclaves with these
//!   PCRs may register", not "old registrations are trusted again". The enclave comes back only
//!   by registering again with a fresh attestation document.
//! - An enclave registers with a document whose PCRs are approved, which binds its Ed25519
//!   signing key, which is fresh at the registration time, and which chains to a production
//!   root unless the registry's params allow dev roots.
//! - Heartbeats are Ed25519 signatures by the enclave key over [`heartbeat_message`], with
//!   strictly increasing timestamps.
//! - [`TeeRegistry::active`]: approved PCR set, enabled, and a heartbeat no older than a
//!   maximum age at the query time. Registration counts as the first heartbeat, dated at the
//!   attestation document's timestamp (the last instant the enclave proved it was alive).

use std::collections::BTreeMap;

use haca_core::{sha256, Digest, NodeId, NodeKey};
use serde::{Deserialize, Serialize};

use crate::nitro::{VerifiedDocument, DEFAULT_MAX_FUTURE_SKEW_MS};
use crate::NitridingUserData;

/// An enclave's id in the registry: SHA-256 of its 32-byte Ed25519 signing key
/// ([`tee_id_of`]), hex when serialized.
///
/// OpenGradient's `tee_id` is `0x` + keccak256 of the enclave's RSA key's DER
/// SubjectPublicKeyInfo; haca will add that id once enclaves carry an RSA key (the
/// [`Enclave::rsa_spki`] field is kept for it).
pub type TeeId = Digest;

/// A PCR set's id: [`PcrSet::id`].
pub type PcrSetId = Digest;

/// Domain prefix of a heartbeat message.
pub const HEARTBEAT_DOMAIN: &[u8] = b"haca.tee.heartbeat.v1:";
/// Domain prefix of a PCR set's id encoding.
pub const PCR_SET_DOMAIN: &[u8] = b"haca.tee.pcrs.v1:";
pub use haca_core::settlement::{
    RegistryParams, DEFAULT_MAX_DOCUMENT_AGE_MS, DEFAULT_MAX_HEARTBEAT_AGE_MS,
};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why the registry refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// A PCR value is not what a PCR set holds.
    #[error("{field}: {reason}")]
    InvalidPcr { field: String, reason: String },
    /// The document does not carry a PCR the registry needs.
    #[error("the attestation document carries no PCR{index}")]
    MissingPcr { index: u8 },
    #[error("PCR set {id} is already approved")]
    PcrsAlreadyApproved { id: PcrSetId },
    /// Revoking, or registering with, a set that is not approved.
    #[error("PCR set {id} is not approved")]
    PcrsNotApproved { id: PcrSetId },
    /// A dev-root document while the params do not allow dev roots.
    #[error(
        "the attestation document chains to a dev root, and this registry does not allow dev roots"
    )]
    DevRootNotAllowed,
    #[error("signing key {key} is not a valid Ed25519 public key")]
    BadSigningKey { key: NodeId },
    /// The document does not bind the signing key (neither `public_key` nor nitriding
    /// `user_data`).
    #[error("the attestation document does not bind signing key {key}: {reason}")]
    NotBound { key: NodeId, reason: String },
    #[error("the attestation document is {age_ms} ms old at {at_ms}; the maximum age is {max_age_ms} ms")]
    StaleDocument {
        age_ms: u64,
        max_age_ms: u64,
        at_ms: u64,
    },
    #[error("the attestation document is dated {ahead_ms} ms after {at_ms}; at most {max_skew_ms} ms is allowed")]
    DocumentFromTheFuture {
        ahead_ms: u64,
        max_skew_ms: u64,
        at_ms: u64,
    },
    #[error("enclave {tee_id} is already registered and enabled")]
    AlreadyRegistered { tee_id: TeeId },
    #[error("enclave {tee_id} is not registered")]
    UnknownEnclave { tee_id: TeeId },
    #[error("enclave {tee_id} is disabled ({reason}); it must register again")]
    EnclaveDisabled { tee_id: TeeId, reason: String },
    #[error("heartbeat of enclave {tee_id}: {reason}")]
    BadSignature { tee_id: TeeId, reason: String },
    #[error(
        "heartbeat of enclave {tee_id} at {at_ms} is not after its last heartbeat at {last_ms}"
    )]
    HeartbeatNotIncreasing {
        tee_id: TeeId,
        at_ms: u64,
        last_ms: u64,
    },
    #[error("heartbeat of enclave {tee_id} is dated {at_ms}, after the current time {now_ms}")]
    HeartbeatFromTheFuture {
        tee_id: TeeId,
        at_ms: u64,
        now_ms: u64,
    },
    #[error("heartbeat of enclave {tee_id} is {age_ms} ms old at {now_ms}; the maximum age is {max_age_ms} ms")]
    StaleHeartbeat {
        tee_id: TeeId,
        age_ms: u64,
        max_age_ms: u64,
        now_ms: u64,
    },
}

/// An approved measurement: PCR0 (enclave image), PCR1 (kernel and bootstrap), PCR2
/// (application), each lowercase hex of 32, 48 (Nitro's SHA-384) or 64 bytes.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
#[serde(deny_unknown_fields)]
pub struct PcrSet {
    pub pcr0: String,
    pub pcr1: String,
    pub pcr2: String,
}

impl PcrSet {
    /// A set from hex values (either case; stored lowercase), checked.
    pub fn new(pcr0: &str, pcr1: &str, pcr2: &str) -> Result<PcrSet, RegistryError> {
        let set = PcrSet {
            pcr0: pcr0.to_ascii_lowercase(),
            pcr1: pcr1.to_ascii_lowercase(),
            pcr2: pcr2.to_ascii_lowercase(),
        };
        set.validate()?;
        Ok(set)
    }

    /// PCR0..2 of a verified document's PCR map (index -> lowercase hex).
    pub fn from_pcrs(pcrs: &BTreeMap<u8, String>) -> Result<PcrSet, RegistryError> {
        let get = |index: u8| {
            pcrs.get(&index)
                .map(String::as_str)
                .ok_or(RegistryError::MissingPcr { index })
        };
        PcrSet::new(get(0)?, get(1)?, get(2)?)
    }

    /// Lowercase hex of 32, 48 or 64 bytes, each.
    pub fn validate(&self) -> Result<(), RegistryError> {
        for (field, value) in self.fields() {
            pcr_bytes(field, value)?;
        }
        Ok(())
    }

    fn fields(&self) -> [(&'static str, &str); 3] {
        [
            ("pcr0", &self.pcr0),
            ("pcr1", &self.pcr1),
            ("pcr2", &self.pcr2),
        ]
    }

    /// The set's id: SHA-256 of the fixed layout
    /// `"haca.tee.pcrs.v1:" || len(PCR0) || PCR0 || len(PCR1) || PCR1 || len(PCR2) || PCR2`,
    /// each length one byte, each PCR its raw bytes (not hex). The set must be valid
    /// ([`PcrSet::validate`]); an invalid value contributes no bytes.
    pub fn id(&self) -> PcrSetId {
        let mut m = PCR_SET_DOMAIN.to_vec();
        for (field, value) in self.fields() {
            let bytes = pcr_bytes(field, value).unwrap_or_default();
            m.push(bytes.len() as u8);
            m.extend(bytes);
        }
        sha256(&m)
    }
}

fn pcr_bytes(field: &str, value: &str) -> Result<Vec<u8>, RegistryError> {
    let bad = |reason: String| RegistryError::InvalidPcr {
        field: field.into(),
        reason,
    };
    if value.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad("must be lowercase hex".into()));
    }
    let bytes = hex::decode(value).map_err(|e| bad(format!("not hex: {e}")))?;
    if ![32, 48, 64].contains(&bytes.len()) {
        return Err(bad(format!(
            "is {} bytes; a PCR is 32, 48 or 64 bytes (Nitro: 48)",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// What a verified attestation document says about an enclave: the facts registration needs.
/// Build it with `EnclaveFacts::from(&verified)` from a document that [`crate::nitro::verify`]
/// accepted (genuine, chained to a trusted root).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct EnclaveFacts {
    /// PCR index -> lowercase hex.
    pub pcrs: BTreeMap<u8, String>,
    /// The document's `public_key` field.
    #[serde(with = "hex_opt", default)]
    pub public_key: Option<Vec<u8>>,
    /// The document's `user_data` field.
    #[serde(with = "hex_opt", default)]
    pub user_data: Option<Vec<u8>>,
    /// The document's timestamp (unix ms).
    pub timestamp_ms: u64,
    /// The document chained to a dev root.
    pub dev: bool,
    /// SHA-256 of the document bytes.
    pub document_digest: Digest,
}

impl From<&VerifiedDocument> for EnclaveFacts {
    fn from(v: &VerifiedDocument) -> Self {
        EnclaveFacts {
            pcrs: v.pcrs.clone(),
            public_key: v.public_key.clone(),
            user_data: v.user_data.clone(),
            timestamp_ms: v.timestamp_ms,
            dev: v.root.dev,
            document_digest: v.document_digest,
        }
    }
}

/// A registered enclave.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(deny_unknown_fields)]
pub struct Enclave {
    /// SHA-256 of `signing_key` ([`tee_id_of`]).
    pub tee_id: TeeId,
    /// The Ed25519 key the attestation document binds; it signs heartbeats (and results).
    pub signing_key: NodeId,
    /// Hex DER SubjectPublicKeyInfo of the enclave's RSA key, for OpenGradient-compatible
    /// signatures and its `tee_id`; not set yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsa_spki: Option<String>,
    /// The id of the approved PCR set the enclave registered with.
    pub pcr_set: PcrSetId,
    /// Attested under a dev root (haca's dev enclave), never AWS.
    pub dev: bool,
    /// SHA-256 of the attestation document it registered with.
    pub document_digest: Digest,
    /// The document's timestamp.
    pub attested_at_ms: u64,
    pub registered_at_ms: u64,
    /// The last heartbeat; at registration, the document's timestamp.
    pub last_heartbeat_ms: u64,
    pub enabled: bool,
    /// Why a disabled enclave was disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

/// The TEE registry: approved PCR sets and registered enclaves.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct TeeRegistry {
    #[serde(default)]
    pub params: RegistryParams,
    /// Approved PCR sets by id. A revoked set leaves this map.
    #[serde(default)]
    pub pcr_sets: BTreeMap<PcrSetId, PcrSet>,
    /// Registered enclaves by tee id, enabled or not.
    #[serde(default)]
    pub enclaves: BTreeMap<TeeId, Enclave>,
}

/// An enclave's tee id: SHA-256 of its 32-byte Ed25519 public key.
pub fn tee_id_of(signing_key: &NodeId) -> TeeId {
    sha256(&signing_key.0)
}

/// The DER SubjectPublicKeyInfo of an Ed25519 key (RFC 8410): 12 header bytes
/// `302a300506032b6570032100` and the 32 key bytes.
pub fn ed25519_spki_der(key: &NodeId) -> Vec<u8> {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(&key.0);
    der
}

/// The bytes an enclave signs for a heartbeat (a fixed binary layout, 62 bytes):
///
/// ```text
/// "haca.tee.heartbeat.v1:"   22 bytes, ASCII
/// tee_id                     32 bytes, raw (not hex)
/// at_ms                       8 bytes, unsigned big-endian unix milliseconds
/// ```
pub fn heartbeat_message(tee_id: &TeeId, at_ms: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEARTBEAT_DOMAIN.len() + 40);
    m.extend_from_slice(HEARTBEAT_DOMAIN);
    m.extend_from_slice(tee_id.as_bytes());
    m.extend_from_slice(&at_ms.to_be_bytes());
    m
}

/// An enclave key's heartbeat signature at `at_ms`, hex (what [`TeeRegistry::heartbeat`]
/// takes).
pub fn sign_heartbeat(key: &NodeKey, at_ms: u64) -> String {
    hex::encode(key.sign(&heartbeat_message(&tee_id_of(&key.node_id()), at_ms)))
}

/// Whether the document's facts bind `signing_key`, one of three ways:
/// - `public_key` holds the 32 raw key bytes;
/// - `public_key` holds the key's DER SubjectPublicKeyInfo ([`ed25519_spki_der`]);
/// - `user_data` is nitriding's 68 bytes whose signing-key digest is SHA-256 of that DER.
///
/// `Ok` names the way that held.
pub fn check_binding(facts: &EnclaveFacts, signing_key: &NodeId) -> Result<&'static str, String> {
    let spki = ed25519_spki_der(signing_key);
    if let Some(pk) = &facts.public_key {
        if pk.as_slice() == signing_key.0.as_slice() {
            return Ok("public_key holds the Ed25519 key");
        }
        if *pk == spki {
            return Ok("public_key holds the Ed25519 key's SubjectPublicKeyInfo");
        }
    }
    let nitriding = facts
        .user_data
        .as_deref()
        .and_then(|u| NitridingUserData::parse(u).ok());
    if let Some(n) = nitriding {
        if n.signing_key_sha256 == sha256(&spki).0 {
            return Ok("nitriding user_data holds SHA-256 of the key's SubjectPublicKeyInfo");
        }
    }
    let public_key = match &facts.public_key {
        None => "no public_key".to_string(),
        Some(pk) => format!("a {}-byte public_key that differs", pk.len()),
    };
    let user_data = match (&facts.user_data, nitriding) {
        (None, _) => "no user_data".to_string(),
        (Some(_), Some(_)) => "nitriding user_data for another signing key".to_string(),
        (Some(u), None) => format!("{}-byte user_data that is not nitriding's", u.len()),
    };
    Err(format!("the document carries {public_key} and {user_data}"))
}

impl TeeRegistry {
    pub fn new(params: RegistryParams) -> Self {
        TeeRegistry {
            params,
            pcr_sets: BTreeMap::new(),
            enclaves: BTreeMap::new(),
        }
    }

    /// True when nothing is approved or registered and the params are the defaults.
    pub fn is_default(&self) -> bool {
        *self == TeeRegistry::default()
    }

    pub fn is_approved(&self, id: &PcrSetId) -> bool {
        self.pcr_sets.contains_key(id)
    }

    pub fn enclave(&self, tee_id: &TeeId) -> Option<&Enclave> {
        self.enclaves.get(tee_id)
    }

    /// Approves a PCR set; returns its id. Refused when invalid or already approved.
    pub fn approve_pcrs(&mut self, pcrs: PcrSet) -> Result<PcrSetId, RegistryError> {
        pcrs.validate()?;
        let id = pcrs.id();
        if self.pcr_sets.contains_key(&id) {
            return Err(RegistryError::PcrsAlreadyApproved { id });
        }
        self.pcr_sets.insert(id, pcrs);
        Ok(id)
    }

    /// Revokes an approved PCR set and disables every enclave registered with it; returns the
    /// tee ids it disabled (in id order). They stay disabled if the set is approved again,
    /// until each registers again.
    pub fn revoke_pcrs(&mut self, id: &PcrSetId) -> Result<Vec<TeeId>, RegistryError> {
        if self.pcr_sets.remove(id).is_none() {
            return Err(RegistryError::PcrsNotApproved { id: *id });
        }
        let mut disabled = Vec::new();
        for e in self.enclaves.values_mut() {
            if e.pcr_set == *id && e.enabled {
                e.enabled = false;
                e.disabled_reason = Some(format!("PCR set {id} was revoked"));
                disabled.push(e.tee_id);
            }
        }
        Ok(disabled)
    }

    /// Registers the enclave whose attestation `facts` bind `signing_key`, at `at_ms`; returns
    /// its tee id. Refused when: PCR0..2 are absent or not an approved set; the document chains
    /// to a dev root and the params do not allow dev roots; the key is not a valid Ed25519 key
    /// or not bound by the document ([`check_binding`]); the document is older than
    /// `params.max_document_age_ms` at `at_ms`, or dated more than the Nitro skew (60 s) after
    /// it; the enclave is already registered and enabled. A disabled enclave registers again
    /// (its entry is replaced).
    pub fn register(
        &mut self,
        facts: &EnclaveFacts,
        signing_key: NodeId,
        at_ms: u64,
    ) -> Result<TeeId, RegistryError> {
        if facts.dev && !self.params.allow_dev_roots {
            return Err(RegistryError::DevRootNotAllowed);
        }
        let pcr_set = PcrSet::from_pcrs(&facts.pcrs)?.id();
        if !self.is_approved(&pcr_set) {
            return Err(RegistryError::PcrsNotApproved { id: pcr_set });
        }
        if let Err(haca_core::keys::KeyError::BadPublicKey(_)) =
            haca_core::keys::verify(&signing_key, b"", &"00".repeat(64))
        {
            return Err(RegistryError::BadSigningKey { key: signing_key });
        }
        check_binding(facts, &signing_key).map_err(|reason| RegistryError::NotBound {
            key: signing_key,
            reason,
        })?;
        if facts.timestamp_ms > at_ms {
            let ahead_ms = facts.timestamp_ms - at_ms;
            if ahead_ms > DEFAULT_MAX_FUTURE_SKEW_MS {
                return Err(RegistryError::DocumentFromTheFuture {
                    ahead_ms,
                    max_skew_ms: DEFAULT_MAX_FUTURE_SKEW_MS,
                    at_ms,
                });
            }
        } else if at_ms - facts.timestamp_ms > self.params.max_document_age_ms {
            return Err(RegistryError::StaleDocument {
                age_ms: at_ms - facts.timestamp_ms,
                max_age_ms: self.params.max_document_age_ms,
                at_ms,
            });
        }
        let tee_id = tee_id_of(&signing_key);
        if self.enclaves.get(&tee_id).is_some_and(|e| e.enabled) {
            return Err(RegistryError::AlreadyRegistered { tee_id });
        }
        self.enclaves.insert(
            tee_id,
            Enclave {
                tee_id,
                signing_key,
                rsa_spki: None,
                pcr_set,
                dev: facts.dev,
                document_digest: facts.document_digest,
                attested_at_ms: facts.timestamp_ms,
                registered_at_ms: at_ms,
                last_heartbeat_ms: facts.timestamp_ms,
                enabled: true,
                disabled_reason: None,
            },
        );
        Ok(tee_id)
    }

    /// Records a heartbeat: `signature` (hex) is the enclave key's Ed25519 signature over
    /// [`heartbeat_message`]`(tee_id, at_ms)`. Refused for an unknown or disabled enclave, a
    /// signature that does not verify, and an `at_ms` not after the last heartbeat.
    pub fn heartbeat(
        &mut self,
        tee_id: &TeeId,
        at_ms: u64,
        signature: &str,
    ) -> Result<(), RegistryError> {
        let e = self
            .enclaves
            .get_mut(tee_id)
            .ok_or(RegistryError::UnknownEnclave { tee_id: *tee_id })?;
        if !e.enabled {
            return Err(RegistryError::EnclaveDisabled {
                tee_id: *tee_id,
                reason: e
                    .disabled_reason
                    .clone()
                    .unwrap_or_else(|| "disabled".into()),
            });
        }
        haca_core::keys::verify(&e.signing_key, &heartbeat_message(tee_id, at_ms), signature)
            .map_err(|err| RegistryError::BadSignature {
                tee_id: *tee_id,
                reason: err.to_string(),
            })?;
        if at_ms <= e.last_heartbeat_ms {
            return Err(RegistryError::HeartbeatNotIncreasing {
                tee_id: *tee_id,
                at_ms,
                last_ms: e.last_heartbeat_ms,
            });
        }
        e.last_heartbeat_ms = at_ms;
        Ok(())
    }

    /// [`TeeRegistry::heartbeat`] received at `now_ms`: also refused when dated after `now_ms`
    /// or older than `params.max_heartbeat_age_ms` at `now_ms`.
    pub fn heartbeat_at(
        &mut self,
        tee_id: &TeeId,
        at_ms: u64,
        signature: &str,
        now_ms: u64,
    ) -> Result<(), RegistryError> {
        if at_ms > now_ms {
            return Err(RegistryError::HeartbeatFromTheFuture {
                tee_id: *tee_id,
                at_ms,
                now_ms,
            });
        }
        if now_ms - at_ms > self.params.max_heartbeat_age_ms {
            return Err(RegistryError::StaleHeartbeat {
                tee_id: *tee_id,
                age_ms: now_ms - at_ms,
                max_age_ms: self.params.max_heartbeat_age_ms,
                now_ms,
            });
        }
        self.heartbeat(tee_id, at_ms, signature)
    }

    /// Whether `e` is active at `now_ms`: its PCR set is approved, it is enabled, and its last
    /// heartbeat is at most `max_heartbeat_age_ms` old (a heartbeat dated after `now_ms`
    /// counts as fresh).
    fn active_enclave(&self, e: &Enclave, now_ms: u64, max_heartbeat_age_ms: u64) -> bool {
        e.enabled
            && self.is_approved(&e.pcr_set)
            && now_ms.saturating_sub(e.last_heartbeat_ms) <= max_heartbeat_age_ms
    }

    /// The active enclaves at `now_ms`, in tee id order.
    pub fn active(&self, now_ms: u64, max_heartbeat_age_ms: u64) -> Vec<&Enclave> {
        self.enclaves
            .values()
            .filter(|e| self.active_enclave(e, now_ms, max_heartbeat_age_ms))
            .collect()
    }

    /// Whether enclave `tee_id` is registered and active at `now_ms`.
    pub fn is_active(&self, tee_id: &TeeId, now_ms: u64, max_heartbeat_age_ms: u64) -> bool {
        self.enclaves
            .get(tee_id)
            .is_some_and(|e| self.active_enclave(e, now_ms, max_heartbeat_age_ms))
    }
}

mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|h| hex::decode(h).map_err(serde::de::Error::custom))
            .transpose()
    }
}
