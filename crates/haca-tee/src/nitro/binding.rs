//! Binding the enclave's keys to its attestation document.
//!
//! Two ways are in use:
//!
//! - `public_key`: the enclave puts its key in the document's `public_key` field (what AWS KMS
//!   expects); the verifier compares bytes.
//! - nitriding `user_data` (how OpenGradient's enclaves bind their keys): 68 bytes, two
//!   multihash-style fields, each a 2-byte header followed by a SHA-256 digest:
//!
//!   ```text
//!   0x12 0x20 || SHA-256(TLS certificate, DER)          bytes  0..34
//!   0x12 0x20 || SHA-256(signing key SubjectPublicKeyInfo, DER)  bytes 34..68
//!   ```
//!
//!   The header is the multihash prefix for sha2-256 (code `0x12`) with digest length 32
//!   (`0x20`). Sources, read 2026-11-25:
//!   - brave/nitriding-daemon, `attestation.go` (HEAD 2b7dfef, introduced in f04c24d "Prefer
//!     byte arrays to sprintf for serializing hashes", 2023-06-20): `hashPrefix =
//!     []byte{0x12, sha256.Size}` with the comment "Multihash prefix marks the hash type and
//!     digest size"; `AttestationHashes.Serialize()` writes `hashPrefix || tlsKeyHash ||
//!     hashPrefix || appKeyHash`. `tlsKeyHash = sha256.Sum256(cert.Raw)` (`enclave.go`,
//!     the whole TLS certificate DER); `appKeyHash` is the digest the application registers
//!     (all zero when none was registered).
//!   - OpenGradient/og-evm, `precompiles/tee/nitro_attestation.go` (HEAD 113ae07):
//!     `NitridingUserDataLength = 68`, `MultihashSHA256Prefix = 0x12`, `MultihashLength32 =
//!     0x20`, the comment "0x1220 + hash(32) + 0x1220 + hash(32) = 68 bytes";
//!     `VerifyTLSCertificateBinding` compares `SHA256(TLS certificate DER)` with bytes 2..34
//!     and `VerifySigningKeyBinding` `SHA256(signing public key DER)` with bytes 36..68. Its
//!     tests build user_data with `{0x12, 0x20}` at 0..2 and 34..36. og-evm does not check the
//!     header bytes themselves ("we don't validate their values"); this verifier does, since
//!     nitriding always writes them.

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::NitroError;

/// Length of nitriding's `user_data`.
pub const NITRIDING_USER_DATA_LEN: usize = 68;
/// Multihash header of each field: sha2-256 (`0x12`), 32-byte digest (`0x20`).
pub const MULTIHASH_SHA2_256: [u8; 2] = [0x12, 0x20];

/// The two digests of nitriding-style `user_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NitridingUserData {
    /// SHA-256 of the enclave's TLS certificate (DER).
    #[serde(with = "hex_array")]
    pub tls_cert_sha256: [u8; 32],
    /// SHA-256 of the enclave's signing key SubjectPublicKeyInfo (DER); all zero when the
    /// application registered no key.
    #[serde(with = "hex_array")]
    pub signing_key_sha256: [u8; 32],
}

impl NitridingUserData {
    /// Reads 68-byte nitriding `user_data`, checking both headers.
    pub fn parse(user_data: &[u8]) -> Result<Self, NitroError> {
        if user_data.len() != NITRIDING_USER_DATA_LEN {
            return Err(NitroError::field(
                "user_data",
                format!(
                    "nitriding key binding is {NITRIDING_USER_DATA_LEN} bytes, found {}",
                    user_data.len()
                ),
            ));
        }
        let (tls, key) = user_data.split_at(34);
        for (name, part) in [("user_data[0..2]", tls), ("user_data[34..36]", key)] {
            if part[..2] != MULTIHASH_SHA2_256 {
                return Err(NitroError::field(
                    name,
                    format!(
                        "header {} is not the multihash sha2-256 header 1220",
                        hex::encode(&part[..2])
                    ),
                ));
            }
        }
        let mut out = NitridingUserData {
            tls_cert_sha256: [0; 32],
            signing_key_sha256: [0; 32],
        };
        out.tls_cert_sha256.copy_from_slice(&tls[2..]);
        out.signing_key_sha256.copy_from_slice(&key[2..]);
        Ok(out)
    }

    /// The digests for a TLS certificate and a signing key (both DER).
    pub fn for_keys(tls_cert_der: &[u8], signing_key_spki_der: &[u8]) -> Self {
        NitridingUserData {
            tls_cert_sha256: Sha256::digest(tls_cert_der).into(),
            signing_key_sha256: Sha256::digest(signing_key_spki_der).into(),
        }
    }

    /// The 68 bytes nitriding puts in `user_data`.
    pub fn to_bytes(&self) -> [u8; NITRIDING_USER_DATA_LEN] {
        let mut out = [0u8; NITRIDING_USER_DATA_LEN];
        out[..2].copy_from_slice(&MULTIHASH_SHA2_256);
        out[2..34].copy_from_slice(&self.tls_cert_sha256);
        out[34..36].copy_from_slice(&MULTIHASH_SHA2_256);
        out[36..].copy_from_slice(&self.signing_key_sha256);
        out
    }
}

/// How the caller requires the enclave's key to be bound to the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyBinding {
    /// The document's `public_key` holds exactly these bytes.
    PublicKey(Vec<u8>),
    /// The document's `user_data` is nitriding's 68 bytes whose second digest is
    /// SHA-256(`signing_key_spki_der`) and, when `tls_cert_der` is given, whose first digest is
    /// SHA-256(`tls_cert_der`).
    Nitriding {
        signing_key_spki_der: Vec<u8>,
        tls_cert_der: Option<Vec<u8>>,
    },
}

impl KeyBinding {
    /// Evaluates the binding against a document's fields: `Ok(detail)` when it holds,
    /// `Err(detail)` when it does not.
    pub(crate) fn evaluate(
        &self,
        public_key: Option<&[u8]>,
        user_data: Option<&[u8]>,
    ) -> Result<String, String> {
        match self {
            KeyBinding::PublicKey(expected) => match public_key {
                None => Err("public_key is absent from the document".into()),
                Some(pk) if pk == expected.as_slice() => Ok(format!(
                    "public_key matches the expected key ({} bytes)",
                    pk.len()
                )),
                Some(pk) => Err(format!(
                    "public_key ({} bytes, SHA-256 {}) differs from the expected key",
                    pk.len(),
                    hex::encode(Sha256::digest(pk))
                )),
            },
            KeyBinding::Nitriding {
                signing_key_spki_der,
                tls_cert_der,
            } => {
                let Some(user_data) = user_data else {
                    return Err("user_data is absent: no nitriding key binding".into());
                };
                let bound = NitridingUserData::parse(user_data).map_err(|e| e.to_string())?;
                let key_digest: [u8; 32] = Sha256::digest(signing_key_spki_der).into();
                if bound.signing_key_sha256 == [0; 32] {
                    return Err("user_data binds no signing key (its digest is all zero)".into());
                }
                if bound.signing_key_sha256 != key_digest {
                    return Err(format!(
                        "user_data binds signing key digest {}, the expected key's is {}",
                        hex::encode(bound.signing_key_sha256),
                        hex::encode(key_digest)
                    ));
                }
                match tls_cert_der {
                    None => Ok(format!(
                        "user_data binds the signing key (SHA-256 {}); TLS certificate not checked",
                        hex::encode(key_digest)
                    )),
                    Some(cert) => {
                        let cert_digest: [u8; 32] = Sha256::digest(cert).into();
                        if bound.tls_cert_sha256 == cert_digest {
                            Ok(format!(
                                "user_data binds the signing key (SHA-256 {}) and the TLS certificate (SHA-256 {})",
                                hex::encode(key_digest),
                                hex::encode(cert_digest)
                            ))
                        } else {
                            Err(format!(
                                "user_data binds TLS certificate digest {}, the given certificate's is {}",
                                hex::encode(bound.tls_cert_sha256),
                                hex::encode(cert_digest)
                            ))
                        }
                    }
                }
            }
        }
    }
}

mod hex_array {
    pub fn serialize<S: serde::Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips_with_multihash_headers() {
        let b = NitridingUserData::for_keys(b"cert", b"key");
        let bytes = b.to_bytes();
        assert_eq!(&bytes[0..2], &[0x12, 0x20]);
        assert_eq!(&bytes[34..36], &[0x12, 0x20]);
        assert_eq!(NitridingUserData::parse(&bytes).unwrap(), b);
    }

    #[test]
    fn wrong_header_or_length_is_rejected_with_the_field() {
        let mut bytes = NitridingUserData::for_keys(b"cert", b"key").to_bytes();
        bytes[34] = 0x13;
        let err = NitridingUserData::parse(&bytes).unwrap_err();
        assert!(matches!(err, NitroError::Field { ref field, .. } if field == "user_data[34..36]"));
        let err = NitridingUserData::parse(&bytes[..67]).unwrap_err();
        assert!(matches!(err, NitroError::Field { ref field, .. } if field == "user_data"));
    }

    #[test]
    fn nitriding_binding_holds_for_the_bound_key_only() {
        let ud = NitridingUserData::for_keys(b"cert", b"key").to_bytes();
        let ok = KeyBinding::Nitriding {
            signing_key_spki_der: b"key".to_vec(),
            tls_cert_der: Some(b"cert".to_vec()),
        };
        assert!(ok.evaluate(None, Some(&ud)).is_ok());
        let other_key = KeyBinding::Nitriding {
            signing_key_spki_der: b"other".to_vec(),
            tls_cert_der: None,
        };
        assert!(other_key.evaluate(None, Some(&ud)).is_err());
        let other_cert = KeyBinding::Nitriding {
            signing_key_spki_der: b"key".to_vec(),
            tls_cert_der: Some(b"other".to_vec()),
        };
        assert!(other_cert.evaluate(None, Some(&ud)).is_err());
        assert!(ok.evaluate(None, None).is_err());
    }

    #[test]
    fn an_all_zero_signing_digest_binds_nothing() {
        let mut b = NitridingUserData::for_keys(b"cert", b"key");
        b.signing_key_sha256 = [0; 32];
        let req = KeyBinding::Nitriding {
            signing_key_spki_der: b"key".to_vec(),
            tls_cert_der: None,
        };
        let detail = req.evaluate(None, Some(&b.to_bytes())).unwrap_err();
        assert!(detail.contains("all zero"), "{detail}");
    }
}
