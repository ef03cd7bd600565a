//! Serialization: proofs travel as CBOR (compact, binary) and keys as JSON. Field elements are
//! checked to be canonical as they are read, so a malformed proof is refused before any check.

use crate::field::{E, F, P};
use crate::ligero::Hash;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

impl Serialize for F {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.value())
    }
}

impl<'de> Deserialize<'de> for F {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<F, D::Error> {
        let v = u64::deserialize(d)?;
        if v >= P {
            return Err(D::Error::custom(format!(
                "{v} is not a canonical field element (≥ p)"
            )));
        }
        Ok(F::new(v))
    }
}

impl Serialize for E {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.0, self.1).serialize(s)
    }
}

impl<'de> Deserialize<'de> for E {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<E, D::Error> {
        let (a, b) = <(F, F)>::deserialize(d)?;
        Ok(E(a, b))
    }
}

/// A 32-byte digest as hex.
pub mod hex32 {
    use super::*;

    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(&s).map_err(D::Error::custom)?;
        v.try_into()
            .map_err(|_| D::Error::custom("a digest is 32 bytes"))
    }
}

/// A Merkle path as one byte string of 32-byte hashes.
pub mod path {
    use super::*;

    pub fn serialize<S: Serializer>(p: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&p.concat())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string of 32-byte hashes")
            }
            fn visit_bytes<Er: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, Er> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<Er: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, Er> {
                Ok(v)
            }
        }
        // byte_buf, not bytes: ciborium reads a borrowed byte string into a 4 KiB scratch buffer.
        let bytes = d.deserialize_byte_buf(V)?;
        if bytes.len() % 32 != 0 {
            return Err(D::Error::custom(format!(
                "a Merkle path of {} bytes is not whole hashes",
                bytes.len()
            )));
        }
        Ok(bytes
            .chunks(32)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect())
    }
}
