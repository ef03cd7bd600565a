//! Key configurations (RFC 9458 section 3): what a gateway publishes so that clients can seal
//! requests to it, one by one or as an `application/ohttp-keys` list.
//!
//! One configuration, byte for byte:
//! ```text
//! key_id (1) || kem_id (2) || public_key (Npk = 32 for X25519)
//!            || suites_len (2) || (kdf_id (2) || aead_id (2)) * (suites_len / 4)
//! ```
//! A list (`application/ohttp-keys`, section 3.2) prefixes each configuration with its length
//! as 2 bytes, big-endian.

use crate::OhttpError;
use base64::Engine as _;
use serde::Serialize;

/// DHKEM(X25519, HKDF-SHA256): the only KEM implemented, as OpenGradient's enclaves use it.
pub const KEM_X25519_SHA256: u16 = 0x0020;
/// HKDF-SHA256: the only KDF implemented.
pub const KDF_HKDF_SHA256: u16 = 0x0001;
/// AES-128-GCM (RFC 9458's own example uses it).
pub const AEAD_AES_128_GCM: u16 = 0x0001;
/// ChaCha20-Poly1305 (OpenGradient's fixed suite).
pub const AEAD_CHACHA20_POLY1305: u16 = 0x0003;

/// Length of an X25519 public key and of `enc`.
pub(crate) const NPK: usize = 32;

/// The AEADs implemented; their ids and sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aead {
    Aes128Gcm,
    ChaCha20Poly1305,
}

impl Aead {
    /// The implemented AEAD with this id, if any.
    pub fn from_id(id: u16) -> Option<Aead> {
        match id {
            AEAD_AES_128_GCM => Some(Aead::Aes128Gcm),
            AEAD_CHACHA20_POLY1305 => Some(Aead::ChaCha20Poly1305),
            _ => None,
        }
    }
    /// The IANA HPKE AEAD id.
    pub fn id(self) -> u16 {
        match self {
            Aead::Aes128Gcm => AEAD_AES_128_GCM,
            Aead::ChaCha20Poly1305 => AEAD_CHACHA20_POLY1305,
        }
    }
    /// Nk: key length.
    pub fn key_len(self) -> usize {
        match self {
            Aead::Aes128Gcm => 16,
            Aead::ChaCha20Poly1305 => 32,
        }
    }
    /// Nn: nonce length (12 for both).
    pub fn nonce_len(self) -> usize {
        12
    }
    /// Nt: tag length (16 for both).
    pub fn tag_len(self) -> usize {
        16
    }
    /// max(Nn, Nk): the length of the exported response secret and of the response nonce.
    pub fn response_nonce_len(self) -> usize {
        self.key_len().max(self.nonce_len())
    }
}

/// One (KDF, AEAD) pair a key is offered with, as raw ids: a parsed configuration may name
/// pairs this crate does not implement, which clients skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct SymmetricSuite {
    pub kdf_id: u16,
    pub aead_id: u16,
}

impl SymmetricSuite {
    /// HKDF-SHA256 with ChaCha20-Poly1305 (OpenGradient's suite).
    pub const CHACHA20_POLY1305: SymmetricSuite = SymmetricSuite {
        kdf_id: KDF_HKDF_SHA256,
        aead_id: AEAD_CHACHA20_POLY1305,
    };
    /// HKDF-SHA256 with AES-128-GCM.
    pub const AES_128_GCM: SymmetricSuite = SymmetricSuite {
        kdf_id: KDF_HKDF_SHA256,
        aead_id: AEAD_AES_128_GCM,
    };
    /// What a generated key is offered with: ChaCha20-Poly1305 first (the suite OpenGradient's
    /// clients require), AES-128-GCM for standard clients.
    pub const DEFAULT: [SymmetricSuite; 2] = [Self::CHACHA20_POLY1305, Self::AES_128_GCM];

    /// The AEAD, when this crate implements the pair.
    pub fn implemented(self) -> Option<Aead> {
        if self.kdf_id == KDF_HKDF_SHA256 {
            Aead::from_id(self.aead_id)
        } else {
            None
        }
    }
}

/// One key configuration (RFC 9458 section 3.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyConfig {
    pub key_id: u8,
    pub kem_id: u16,
    /// The raw X25519 public key (32 bytes).
    pub public_key: [u8; NPK],
    /// In the gateway's order of preference; never empty in a valid configuration.
    pub suites: Vec<SymmetricSuite>,
}

/// The per-key object that `GET /v1/tee` serves (issue 19), shaped like OpenGradient's
/// registry `OhttpConfig`: one suite (the configuration's first), the raw key in hex, and the
/// whole encoded configuration in base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OhttpDescriptor {
    pub key_id: u8,
    pub kem_id: u16,
    pub kdf_id: u16,
    pub aead_id: u16,
    pub public_key_hex: String,
    pub key_config_b64: String,
}

impl KeyConfig {
    /// The wire encoding (section 3.1).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 2 + NPK + 2 + 4 * self.suites.len());
        out.push(self.key_id);
        out.extend_from_slice(&self.kem_id.to_be_bytes());
        out.extend_from_slice(&self.public_key);
        // At most 16383 suites fit in the 2-byte length; configurations made here have two.
        let len = u16::try_from(4 * self.suites.len()).unwrap_or(0xfffc);
        out.extend_from_slice(&len.to_be_bytes());
        for s in self.suites.iter().take(usize::from(len) / 4) {
            out.extend_from_slice(&s.kdf_id.to_be_bytes());
            out.extend_from_slice(&s.aead_id.to_be_bytes());
        }
        out
    }

    /// Parses exactly one configuration; trailing bytes are refused.
    pub fn decode(bytes: &[u8]) -> Result<KeyConfig, OhttpError> {
        let (config, used) = Self::decode_prefix(bytes)?;
        if used != bytes.len() {
            return Err(OhttpError::MalformedKeyConfig(format!(
                "{} trailing bytes",
                bytes.len() - used
            )));
        }
        Ok(config)
    }

    /// Parses one configuration at the start of `bytes`; returns it and the bytes it used.
    fn decode_prefix(bytes: &[u8]) -> Result<(KeyConfig, usize), OhttpError> {
        let malformed = |what: &str| OhttpError::MalformedKeyConfig(what.to_string());
        if bytes.len() < 3 {
            return Err(malformed("shorter than key id and KEM id"));
        }
        let key_id = bytes[0];
        let kem_id = u16::from_be_bytes([bytes[1], bytes[2]]);
        if kem_id != KEM_X25519_SHA256 {
            return Err(OhttpError::MalformedKeyConfig(format!(
                "KEM {kem_id:#06x} is not implemented (its key length is unknown)"
            )));
        }
        let rest = &bytes[3..];
        if rest.len() < NPK + 2 {
            return Err(malformed("public key or suite length cut short"));
        }
        let mut public_key = [0u8; NPK];
        public_key.copy_from_slice(&rest[..NPK]);
        let len = usize::from(u16::from_be_bytes([rest[NPK], rest[NPK + 1]]));
        if len == 0 || len % 4 != 0 {
            return Err(OhttpError::MalformedKeyConfig(format!(
                "suite list length {len} is not a positive multiple of 4"
            )));
        }
        let suites_bytes = &rest[NPK + 2..];
        if suites_bytes.len() < len {
            return Err(malformed("suite list cut short"));
        }
        let suites = suites_bytes[..len]
            .chunks_exact(4)
            .map(|c| SymmetricSuite {
                kdf_id: u16::from_be_bytes([c[0], c[1]]),
                aead_id: u16::from_be_bytes([c[2], c[3]]),
            })
            .collect();
        Ok((
            KeyConfig {
                key_id,
                kem_id,
                public_key,
                suites,
            },
            3 + NPK + 2 + len,
        ))
    }

    /// Encodes configurations as an `application/ohttp-keys` list.
    pub fn encode_list(configs: &[KeyConfig]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in configs {
            let one = c.encode();
            // A configuration made here is 43 bytes per suite pair at most: far below 65535.
            let len = u16::try_from(one.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&one[..usize::from(len)]);
        }
        out
    }

    /// Parses an `application/ohttp-keys` list. Configurations whose KEM is not implemented
    /// are skipped, as section 3.2 asks of clients; framing errors are refused.
    pub fn decode_list(bytes: &[u8]) -> Result<Vec<KeyConfig>, OhttpError> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            if rest.len() < 2 {
                return Err(OhttpError::MalformedKeyConfig(
                    "list entry length cut short".into(),
                ));
            }
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let Some(entry) = rest.get(2..2 + len) else {
                return Err(OhttpError::MalformedKeyConfig(format!(
                    "list entry of {len} bytes with {} present",
                    rest.len() - 2
                )));
            };
            let kem = entry.get(1..3).map(|k| u16::from_be_bytes([k[0], k[1]]));
            if kem.is_some_and(|k| k != KEM_X25519_SHA256) {
                rest = &rest[2 + len..];
                continue;
            }
            out.push(KeyConfig::decode(entry)?);
            rest = &rest[2 + len..];
        }
        Ok(out)
    }

    /// The first suite offered that this crate implements (the gateway's preference).
    pub fn preferred_aead(&self) -> Option<Aead> {
        self.suites.iter().find_map(|s| s.implemented())
    }

    /// The object served per enclave in `GET /v1/tee`.
    pub fn descriptor(&self) -> OhttpDescriptor {
        let first = self
            .suites
            .first()
            .copied()
            .unwrap_or(SymmetricSuite::CHACHA20_POLY1305);
        OhttpDescriptor {
            key_id: self.key_id,
            kem_id: self.kem_id,
            kdf_id: first.kdf_id,
            aead_id: first.aead_id,
            public_key_hex: hex::encode(self.public_key),
            key_config_b64: base64::engine::general_purpose::STANDARD.encode(self.encode()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeyConfig {
        KeyConfig {
            key_id: 7,
            kem_id: KEM_X25519_SHA256,
            public_key: [9; 32],
            suites: SymmetricSuite::DEFAULT.to_vec(),
        }
    }

    #[test]
    fn a_configuration_round_trips_and_refuses_trailing_bytes() {
        let c = sample();
        let bytes = c.encode();
        assert_eq!(bytes.len(), 1 + 2 + 32 + 2 + 8);
        assert_eq!(KeyConfig::decode(&bytes).unwrap(), c);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            KeyConfig::decode(&longer).unwrap_err().code(),
            "malformed_key_config"
        );
        for cut in 0..bytes.len() {
            assert!(KeyConfig::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_list_skips_unknown_kems_and_keeps_the_rest_in_order() {
        let a = sample();
        let b = KeyConfig {
            key_id: 8,
            ..sample()
        };
        let mut list = KeyConfig::encode_list(std::slice::from_ref(&a));
        // A P-256 configuration (KEM 0x0010, 65-byte key) this crate cannot use.
        let mut p256 = vec![3, 0x00, 0x10];
        p256.extend_from_slice(&[4; 65]);
        p256.extend_from_slice(&[0, 4, 0, 1, 0, 1]);
        list.extend_from_slice(&(p256.len() as u16).to_be_bytes());
        list.extend_from_slice(&p256);
        list.extend_from_slice(&KeyConfig::encode_list(std::slice::from_ref(&b)));
        assert_eq!(KeyConfig::decode_list(&list).unwrap(), vec![a, b]);
        assert!(KeyConfig::decode_list(&list[..list.len() - 1]).is_err());
    }

    #[test]
    fn the_descriptor_names_the_first_suite_and_the_whole_configuration() {
        let d = sample().descriptor();
        assert_eq!((d.kdf_id, d.aead_id), (1, 3));
        assert_eq!(d.public_key_hex, "09".repeat(32));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&d.key_config_b64)
            .unwrap();
        assert_eq!(KeyConfig::decode(&raw).unwrap(), sample());
    }
}
