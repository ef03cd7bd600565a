//! The dev enclave's attestation CA: documents in exactly AWS Nitro's format (COSE_Sign1 ES384
//! around the Nitro CBOR payload, a P-384 leaf certificate, `cabundle = [root]`), signed under a
//! local development root instead of AWS.
//!
//! [`crate::nitro::verify`] accepts them when, and only when, the caller trusts the dev root
//! ([`DevCa::trusted_root`], a [`TrustedRoot`] marked `dev`); the result then says `dev`. Under
//! the default policy (the AWS Nitro Enclaves Root G1 only) they are refused as an untrusted
//! root. Everything else (PCRs, nonce, key binding, freshness, audit mode) is checked exactly
//! as for AWS documents, by the same code.
//!
//! Deterministic and pure: the root key and certificate come from a 32-byte seed (so a devnet
//! keeps one root across restarts), each document's leaf key from the seed and the document's
//! timestamp, and every ECDSA signature uses RFC 6979 nonces. The same seed and request give
//! the same bytes. No clock: the timestamp is part of the request.
//!
//! ```
//! use haca_tee::dev::{dev_pcrs, DevCa, DocumentRequest};
//! use haca_tee::nitro::{verify, Policy};
//!
//! let ca = DevCa::from_seed(&[7; 32]);
//! let at = 1_764_000_000_000; // unix ms
//! let doc = ca
//!     .document(&DocumentRequest {
//!         timestamp_ms: at,
//!         pcrs: dev_pcrs(b"the enclave's code"),
//!         nonce: Some(b"challenge".to_vec()),
//!         ..DocumentRequest::default()
//!     })
//!     .unwrap();
//! let verified = verify(&doc, &Policy::at(at, 60_000).with_roots(vec![ca.trusted_root()])).unwrap();
//! assert!(verified.root.dev);
//! assert!(verify(&doc, &Policy::at(at, 60_000)).is_err()); // AWS only: refused
//! ```

use std::collections::BTreeMap;
use std::fmt;

use ciborium::value::Value;
use p384::ecdsa::signature::Signer as _;
use p384::ecdsa::{Signature, SigningKey};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
    RemoteKeyPair, SignatureAlgorithm, PKCS_ECDSA_P384_SHA384,
};
use sha2::{Digest as _, Sha256, Sha384};

use crate::nitro::{sig_structure, TrustedRoot, COSE_ALG_ES384};

/// The label of the dev root in reports ([`DevCa::trusted_root`]).
pub const DEV_ROOT_LABEL: &str = "haca-dev-ca";
/// The dev root's subject (and issuer) common name.
pub const DEV_ROOT_COMMON_NAME: &str = "haca dev enclave root (NOT AWS)";
/// The dev root is valid from 2020-01-01T00:00:00Z (unix seconds) ...
pub const DEV_ROOT_NOT_BEFORE_S: i64 = 1_577_836_800;
/// ... to 2120-01-01T00:00:00Z (unix seconds).
pub const DEV_ROOT_NOT_AFTER_S: i64 = 4_733_510_400;
/// How long a leaf certificate is valid after the document's timestamp: three hours, like the
/// leaf certificates of AWS Nitro documents.
pub const LEAF_VALIDITY_MS: u64 = 3 * 60 * 60 * 1000;
/// How long before the document's timestamp a leaf certificate becomes valid: five minutes,
/// more than the allowed clock skew ([`crate::nitro::DEFAULT_MAX_FUTURE_SKEW_MS`]), so that a
/// verifier whose clock trails accepts a document within the skew and refuses one beyond it
/// for its date (`FromTheFuture`), as with AWS leaves (issued before the documents they sign).
pub const LEAF_BACKDATE_MS: u64 = 5 * 60 * 1000;
/// The PCRs every dev document carries: 0..=15, like real Nitro documents.
pub const DEV_PCR_COUNT: u8 = 16;
/// Nitro PCRs are SHA-384 values.
pub const PCR_LEN: usize = 48;
/// Hashed (SHA-384) into PCR1 by [`dev_pcrs`]: a software enclave has no separately measured
/// kernel and boot ramfs.
pub const DEV_PCR1_LABEL: &str =
    "haca dev enclave PCR1: no kernel or boot ramfs (software enclave)";
/// Hashed (SHA-384) into PCR2 by [`dev_pcrs`]: the application is the image measured in PCR0.
pub const DEV_PCR2_LABEL: &str = "haca dev enclave PCR2: the application is the PCR0 image";

/// Size bounds the Nitro parser enforces (see `nitro::parse`); a request beyond them is refused
/// here rather than producing a document no verifier accepts.
const MAX_PUBLIC_KEY_LEN: usize = 1024;
const MAX_USER_DATA_LEN: usize = 512;
const MAX_NONCE_LEN: usize = 512;
const MAX_PCR_INDEX: u8 = 31;

/// Why the dev CA could not issue a document. Messages name the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DevError {
    /// A request field is outside what a Nitro document may hold.
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
    /// The leaf certificate could not be built (for example a timestamp that no certificate
    /// date can express).
    #[error("dev leaf certificate: {0}")]
    Certificate(String),
}

fn field_err(field: impl Into<String>, reason: impl Into<String>) -> DevError {
    DevError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

/// What a dev document states. PCRs not named here are 48 zero bytes (0..=15 are always
/// present, like in real documents); those named replace them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DocumentRequest {
    /// The document's timestamp, unix milliseconds (the "now" of the dev enclave).
    pub timestamp_ms: u64,
    /// PCR index (0..=31) -> 48-byte value; see [`dev_pcrs`].
    pub pcrs: BTreeMap<u8, Vec<u8>>,
    pub public_key: Option<Vec<u8>>,
    pub user_data: Option<Vec<u8>>,
    pub nonce: Option<Vec<u8>>,
}

/// The dev enclave's measurements:
///
/// - PCR0 = SHA-384(`image`), the enclave's code (what an enclave image file is to Nitro);
/// - PCR1 = SHA-384([`DEV_PCR1_LABEL`]), fixed: no separately measured kernel;
/// - PCR2 = SHA-384([`DEV_PCR2_LABEL`]), fixed: the application is the image itself.
///
/// A verifier pins a dev enclave's code by expecting PCR0.
pub fn dev_pcrs(image: &[u8]) -> BTreeMap<u8, Vec<u8>> {
    BTreeMap::from([
        (0, Sha384::digest(image).to_vec()),
        (1, Sha384::digest(DEV_PCR1_LABEL.as_bytes()).to_vec()),
        (2, Sha384::digest(DEV_PCR2_LABEL.as_bytes()).to_vec()),
    ])
}

/// A development attestation CA: a self-signed ECDSA P-384 root from a seed, issuing Nitro-format
/// documents with a fresh leaf certificate each.
pub struct DevCa {
    seed: [u8; 32],
    root: Certificate,
    root_key: KeyPair,
    root_der: Vec<u8>,
    module_id: String,
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCa")
            .field("root_fingerprint", &self.root_fingerprint())
            .field("module_id", &self.module_id)
            .finish_non_exhaustive()
    }
}

impl DevCa {
    /// The CA whose root key (and so root certificate, byte for byte) is derived from `seed`.
    /// Keep the seed secret to the dev enclave: it signs everything the root vouches for.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let root_key = derive_key(b"haca dev CA root key v1", seed, &[]);
        let root_key =
            KeyPair::from_remote(Box::new(root_key)).expect("rcgen accepts a P-384 remote key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, DEV_ROOT_COMMON_NAME);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "haca development CA");
        params.not_before = unix_seconds(DEV_ROOT_NOT_BEFORE_S).expect("a fixed valid date");
        params.not_after = unix_seconds(DEV_ROOT_NOT_AFTER_S).expect("a fixed valid date");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let root = params
            .self_signed(&root_key)
            .expect("fixed, well-formed root parameters");
        let root_der = root.der().to_vec();
        let module_id = format!(
            "i-haca-dev-enc{}",
            &hex::encode(Sha256::digest(&root_der))[..16]
        );
        DevCa {
            seed: *seed,
            root,
            root_key,
            root_der,
            module_id,
        }
    }

    /// The root certificate (DER): `cabundle[0]` of every document.
    pub fn root_der(&self) -> Vec<u8> {
        self.root_der.clone()
    }

    /// SHA-256 of [`Self::root_der`], lowercase hex: what a verifier pins.
    pub fn root_fingerprint(&self) -> String {
        hex::encode(Sha256::digest(&self.root_der))
    }

    /// The root as a verifier trusts it: labelled [`DEV_ROOT_LABEL`] and marked `dev`.
    pub fn trusted_root(&self) -> TrustedRoot {
        TrustedRoot::dev(DEV_ROOT_LABEL, &self.root_der)
    }

    /// The documents' `module_id` (by default `i-haca-dev-enc` and 16 hex digits of the root
    /// fingerprint; the leaf certificate's common name too).
    pub fn module_id(&self) -> &str {
        &self.module_id
    }

    /// The same CA, naming its documents' module differently.
    pub fn with_module_id(mut self, module_id: impl Into<String>) -> Self {
        self.module_id = module_id.into();
        self
    }

    /// A signed attestation document in AWS Nitro's format: a COSE_Sign1 (untagged, protected
    /// header `{1: -35}` (ES384), empty unprotected header) whose payload is the Nitro map
    /// (`module_id`, `digest` "SHA384", `timestamp`, `pcrs` 0..=15, `certificate`,
    /// `cabundle` `[root]`, `public_key`, `user_data`, `nonce`, the last three null when absent),
    /// signed (r || s, 96 bytes) by a leaf certificate issued for it by the root, valid from
    /// [`LEAF_BACKDATE_MS`] before the timestamp to [`LEAF_VALIDITY_MS`] after it.
    pub fn document(&self, req: &DocumentRequest) -> Result<Vec<u8>, DevError> {
        let pcrs = self.check_request(req)?;

        let leaf_key = derive_key(
            b"haca dev CA leaf key v1",
            &self.seed,
            &req.timestamp_ms.to_be_bytes(),
        );
        let leaf_signer = leaf_key.key.clone();
        let leaf_key =
            KeyPair::from_remote(Box::new(leaf_key)).map_err(|e| cert_err(&e.to_string()))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, self.module_id.as_str());
        params
            .distinguished_name
            .push(DnType::OrganizationName, "haca dev enclave");
        let ts_s = i64::try_from(req.timestamp_ms / 1000)
            .map_err(|_| field_err("timestamp", "too large"))?;
        let backdate_s = (LEAF_BACKDATE_MS / 1000) as i64;
        let validity_s = (LEAF_VALIDITY_MS / 1000) as i64;
        params.not_before = unix_seconds(ts_s - backdate_s)?;
        params.not_after = unix_seconds(ts_s + validity_s)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let leaf = params
            .signed_by(&leaf_key, &self.root, &self.root_key)
            .map_err(|e| cert_err(&e.to_string()))?;

        let text = |s: &str| Value::Text(s.to_string());
        let opt = |v: &Option<Vec<u8>>| v.clone().map(Value::Bytes).unwrap_or(Value::Null);
        let payload = Value::Map(vec![
            (text("module_id"), text(&self.module_id)),
            (text("digest"), text("SHA384")),
            (text("timestamp"), Value::Integer(req.timestamp_ms.into())),
            (
                text("pcrs"),
                Value::Map(
                    pcrs.into_iter()
                        .map(|(i, v)| (Value::Integer(i.into()), Value::Bytes(v)))
                        .collect(),
                ),
            ),
            (text("certificate"), Value::Bytes(leaf.der().to_vec())),
            (
                text("cabundle"),
                Value::Array(vec![Value::Bytes(self.root_der.clone())]),
            ),
            (text("public_key"), opt(&req.public_key)),
            (text("user_data"), opt(&req.user_data)),
            (text("nonce"), opt(&req.nonce)),
        ]);
        let payload = encode(&payload);
        let protected = encode(&Value::Map(vec![(
            Value::Integer(1.into()),
            Value::Integer(COSE_ALG_ES384.into()),
        )]));
        let signature: Signature = leaf_signer.sign(&sig_structure(&protected, &payload));
        Ok(encode(&Value::Array(vec![
            Value::Bytes(protected),
            Value::Map(Vec::new()),
            Value::Bytes(payload),
            Value::Bytes(signature.to_bytes().to_vec()),
        ])))
    }

    /// Checks the request against what the Nitro parser accepts, and returns the PCRs to state.
    fn check_request(&self, req: &DocumentRequest) -> Result<BTreeMap<u8, Vec<u8>>, DevError> {
        if self.module_id.is_empty() {
            return Err(field_err("module_id", "empty"));
        }
        if req.timestamp_ms == 0 {
            return Err(field_err("timestamp", "zero"));
        }
        let root_from_ms = DEV_ROOT_NOT_BEFORE_S as u64 * 1000 + LEAF_BACKDATE_MS;
        let root_to_ms = DEV_ROOT_NOT_AFTER_S as u64 * 1000 - LEAF_VALIDITY_MS;
        if req.timestamp_ms < root_from_ms || req.timestamp_ms > root_to_ms {
            return Err(field_err(
                "timestamp",
                format!(
                    "{} ms lies outside the dev root's validity (2020-01-01 .. 2120-01-01, less the leaf's)",
                    req.timestamp_ms
                ),
            ));
        }
        let mut pcrs: BTreeMap<u8, Vec<u8>> = (0..DEV_PCR_COUNT)
            .map(|i| (i, vec![0u8; PCR_LEN]))
            .collect();
        for (index, value) in &req.pcrs {
            if *index > MAX_PCR_INDEX {
                return Err(field_err(
                    "pcrs",
                    format!("index {index} is out of range 0..{MAX_PCR_INDEX}"),
                ));
            }
            if value.len() != PCR_LEN {
                return Err(field_err(
                    format!("pcrs[{index}]"),
                    format!("a SHA-384 PCR is {PCR_LEN} bytes, found {}", value.len()),
                ));
            }
            pcrs.insert(*index, value.clone());
        }
        for (name, value, min, max) in [
            ("public_key", &req.public_key, 1, MAX_PUBLIC_KEY_LEN),
            ("user_data", &req.user_data, 0, MAX_USER_DATA_LEN),
            ("nonce", &req.nonce, 0, MAX_NONCE_LEN),
        ] {
            if let Some(v) = value {
                if v.len() < min || v.len() > max {
                    return Err(field_err(
                        name,
                        format!("must be {min} to {max} bytes, found {}", v.len()),
                    ));
                }
            }
        }
        Ok(pcrs)
    }
}

/// A P-384 key whose scalar is SHA-384(`domain` || `seed` || `context` || counter), the first
/// counter that gives a valid scalar (all but a negligible fraction of digests are). Signs with
/// RFC 6979 nonces, so certificates are reproducible.
struct DerivedKey {
    key: SigningKey,
    public: Vec<u8>,
}

fn derive_key(domain: &[u8], seed: &[u8; 32], context: &[u8]) -> DerivedKey {
    for counter in 0u32.. {
        let scalar = Sha384::new()
            .chain_update(domain)
            .chain_update(seed)
            .chain_update(context)
            .chain_update(counter.to_be_bytes())
            .finalize();
        if let Ok(key) = SigningKey::from_slice(&scalar) {
            let public = key
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec();
            return DerivedKey { key, public };
        }
    }
    unreachable!("a valid P-384 scalar within 2^32 tries")
}

impl RemoteKeyPair for DerivedKey {
    fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// ecdsa-with-SHA384, DER-encoded, as X.509 certificates carry it.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let signature: Signature = self.key.sign(msg);
        Ok(signature.to_der().as_bytes().to_vec())
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P384_SHA384
    }
}

fn unix_seconds(s: i64) -> Result<time::OffsetDateTime, DevError> {
    time::OffsetDateTime::from_unix_timestamp(s)
        .map_err(|e| cert_err(&format!("unix time {s} s: {e}")))
}

fn cert_err(reason: &str) -> DevError {
    DevError::Certificate(reason.to_string())
}

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).expect("writing CBOR to a Vec cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nitro::parse;

    #[test]
    fn the_document_has_nitros_shape() {
        let ca = DevCa::from_seed(&[1; 32]);
        let doc = ca
            .document(&DocumentRequest {
                timestamp_ms: 1_764_000_000_123,
                pcrs: dev_pcrs(b"image"),
                ..DocumentRequest::default()
            })
            .unwrap();
        // Untagged COSE_Sign1, protected header {1: -35} like the AWS fixtures.
        assert_eq!(&doc[..6], &[0x84, 0x44, 0xa1, 0x01, 0x38, 0x22]);
        let parsed = parse(&doc).unwrap();
        assert_eq!(parsed.digest, "SHA384");
        assert_eq!(parsed.pcrs.len(), 16);
        assert_eq!(parsed.pcrs[&0], Sha384::digest(b"image").to_vec());
        assert_eq!(parsed.pcrs[&15], vec![0; 48]);
        assert_eq!(parsed.cabundle, vec![ca.root_der()]);
        assert_eq!(parsed.module_id, ca.module_id());
        assert_eq!(parsed.public_key, None);
    }

    #[test]
    fn requests_a_verifier_would_refuse_are_refused_here() {
        let ca = DevCa::from_seed(&[1; 32]);
        let ok = DocumentRequest {
            timestamp_ms: 1_764_000_000_000,
            ..DocumentRequest::default()
        };
        let field = |req: &DocumentRequest| match ca.document(req).unwrap_err() {
            DevError::Field { field, .. } => field,
            other => panic!("{other}"),
        };
        let mut r = ok.clone();
        r.pcrs.insert(3, vec![0; 32]);
        assert_eq!(field(&r), "pcrs[3]");
        let mut r = ok.clone();
        r.pcrs.insert(32, vec![0; 48]);
        assert_eq!(field(&r), "pcrs");
        let mut r = ok.clone();
        r.nonce = Some(vec![0; 513]);
        assert_eq!(field(&r), "nonce");
        let mut r = ok.clone();
        r.public_key = Some(Vec::new());
        assert_eq!(field(&r), "public_key");
        let mut r = ok;
        r.timestamp_ms = 0;
        assert_eq!(field(&r), "timestamp");
        r.timestamp_ms = u64::MAX;
        assert_eq!(field(&r), "timestamp");
    }

    #[test]
    fn dev_pcrs_measure_the_image_in_pcr0_only() {
        let a = dev_pcrs(b"code a");
        let b = dev_pcrs(b"code b");
        assert_ne!(a[&0], b[&0]);
        assert_eq!(a[&1], b[&1]);
        assert_eq!(a[&2], b[&2]);
        assert!(a.values().all(|v| v.len() == PCR_LEN));
    }
}
