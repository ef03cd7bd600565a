//! Shared test material: the real AWS-signed documents, and helpers that re-encode a
//! document or build one under a dev CA.
#![allow(dead_code)]

use ciborium::value::Value;

pub struct Fixture {
    pub name: &'static str,
    pub bytes: &'static [u8],
    /// The payload timestamp (unix ms).
    pub at: u64,
    pub pcr0: Vec<u8>,
}

macro_rules! fixture {
    ($name:literal) => {
        Fixture {
            name: $name,
            bytes: include_bytes!(concat!("../../fixtures/nitro/", $name, ".cbor")),
            at: include_str!(concat!("../../fixtures/nitro/", $name, ".at"))
                .trim()
                .parse()
                .unwrap(),
            pcr0: hex::decode(
                include_str!(concat!("../../fixtures/nitro/", $name, ".pcr0")).trim(),
            )
            .unwrap(),
        }
    };
}

pub fn fixtures() -> Vec<Fixture> {
    vec![
        fixture!("nitroprover_sample"),
        fixture!("base_nitro_validator"),
        fixture!("cape_js"),
        fixture!("uid2_core_debug"),
    ]
}

pub fn fixture(name: &str) -> Fixture {
    fixtures().into_iter().find(|f| f.name == name).unwrap()
}

pub const MINUTE: u64 = 60_000;
pub const DAY: u64 = 24 * 60 * MINUTE;

/// The COSE_Sign1 items of a document: protected, unprotected, payload, signature.
pub fn cose_items(doc: &[u8]) -> Vec<Value> {
    match ciborium::de::from_reader::<Value, _>(doc).unwrap() {
        Value::Array(items) => items,
        other => panic!("not an array: {other:?}"),
    }
}

pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).unwrap();
    out
}

/// The payload map's entries.
pub fn payload_entries(doc: &[u8]) -> Vec<(Value, Value)> {
    let items = cose_items(doc);
    let Value::Bytes(payload) = &items[2] else {
        panic!("payload is not bytes")
    };
    match ciborium::de::from_reader::<Value, _>(payload.as_slice()).unwrap() {
        Value::Map(entries) => entries,
        other => panic!("payload is not a map: {other:?}"),
    }
}

/// A payload field's value.
pub fn payload_field(doc: &[u8], name: &str) -> Value {
    payload_entries(doc)
        .into_iter()
        .find(|(k, _)| k.as_text() == Some(name))
        .map(|(_, v)| v)
        .unwrap()
}

/// Re-encodes a document after `edit` changed its payload entries; the signature is kept
/// (so it no longer matches unless the checks before it fail first).
pub fn with_payload(doc: &[u8], edit: impl FnOnce(&mut Vec<(Value, Value)>)) -> Vec<u8> {
    let mut entries = payload_entries(doc);
    edit(&mut entries);
    let mut items = cose_items(doc);
    items[2] = Value::Bytes(encode(&Value::Map(entries)));
    encode(&Value::Array(items))
}

/// Sets (or adds) a payload field.
pub fn set_field(entries: &mut Vec<(Value, Value)>, name: &str, value: Value) {
    match entries.iter_mut().find(|(k, _)| k.as_text() == Some(name)) {
        Some(entry) => entry.1 = value,
        None => entries.push((Value::Text(name.into()), value)),
    }
}

pub fn remove_field(entries: &mut Vec<(Value, Value)>, name: &str) {
    entries.retain(|(k, _)| k.as_text() != Some(name));
}

pub fn cabundle(doc: &[u8]) -> Vec<Vec<u8>> {
    match payload_field(doc, "cabundle") {
        Value::Array(items) => items.into_iter().map(|v| v.into_bytes().unwrap()).collect(),
        other => panic!("cabundle: {other:?}"),
    }
}

/// Index of the first occurrence of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

/// A tiny deterministic generator for "random" bytes.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// A Nitro-shaped document under a development CA: root -> intermediate -> leaf, all P-384,
/// signed with ES384 by the leaf key. Everything the AWS chain has, minus AWS.
pub mod dev {
    use super::*;
    use rcgen::{
        date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
        SignatureAlgorithm, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
    };
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};

    /// 2025-11-24T16:00:00Z, inside every dev certificate's validity.
    pub const DEV_TIMESTAMP: u64 = 1_764_000_000_000;

    pub struct DevCa {
        pub root_der: Vec<u8>,
        pub intermediate_der: Vec<u8>,
        pub leaf_der: Vec<u8>,
        leaf_key: KeyPair,
    }

    pub struct Options {
        pub leaf_alg: &'static SignatureAlgorithm,
        pub intermediate_is_ca: bool,
    }

    impl Default for Options {
        fn default() -> Self {
            Options {
                leaf_alg: &PKCS_ECDSA_P384_SHA384,
                intermediate_is_ca: true,
            }
        }
    }

    fn params(cn: &str, ca: Option<BasicConstraints>) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name
            .push(DnType::OrganizationName, "haca dev enclave");
        p.not_before = date_time_ymd(2025, 1, 1);
        p.not_after = date_time_ymd(2035, 1, 1);
        match ca {
            Some(bc) => {
                p.is_ca = IsCa::Ca(bc);
                p.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::CrlSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
            }
            None => {
                p.is_ca = IsCa::ExplicitNoCa;
                p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            }
        }
        p
    }

    impl DevCa {
        pub fn new(opts: Options) -> Self {
            let root_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
            let root = params("haca dev root", Some(BasicConstraints::Unconstrained))
                .self_signed(&root_key)
                .unwrap();
            let inter_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
            let inter = params(
                "haca dev intermediate",
                opts.intermediate_is_ca
                    .then_some(BasicConstraints::Constrained(0)),
            )
            .signed_by(&inter_key, &root, &root_key)
            .unwrap();
            let leaf_key = KeyPair::generate_for(opts.leaf_alg).unwrap();
            let leaf = params("haca dev enclave", None)
                .signed_by(&leaf_key, &inter, &inter_key)
                .unwrap();
            DevCa {
                root_der: root.der().to_vec(),
                intermediate_der: inter.der().to_vec(),
                leaf_der: leaf.der().to_vec(),
                leaf_key,
            }
        }

        /// A signed document with the given optional fields, dated `timestamp`.
        pub fn document(
            &self,
            timestamp: u64,
            public_key: Option<Vec<u8>>,
            user_data: Option<Vec<u8>>,
            nonce: Option<Vec<u8>>,
        ) -> Vec<u8> {
            let opt = |v: Option<Vec<u8>>| v.map(Value::Bytes).unwrap_or(Value::Null);
            let pcrs = (0..16u8)
                .map(|i| (Value::Integer(i.into()), Value::Bytes(vec![i; 48])))
                .collect();
            let payload = Value::Map(vec![
                (
                    Value::Text("module_id".into()),
                    Value::Text("i-dev-enc0000000000000001".into()),
                ),
                (Value::Text("digest".into()), Value::Text("SHA384".into())),
                (
                    Value::Text("timestamp".into()),
                    Value::Integer(timestamp.into()),
                ),
                (Value::Text("pcrs".into()), Value::Map(pcrs)),
                (
                    Value::Text("certificate".into()),
                    Value::Bytes(self.leaf_der.clone()),
                ),
                (
                    Value::Text("cabundle".into()),
                    Value::Array(vec![
                        Value::Bytes(self.root_der.clone()),
                        Value::Bytes(self.intermediate_der.clone()),
                    ]),
                ),
                (Value::Text("public_key".into()), opt(public_key)),
                (Value::Text("user_data".into()), opt(user_data)),
                (Value::Text("nonce".into()), opt(nonce)),
            ]);
            let payload = encode(&payload);
            let protected = encode(&Value::Map(vec![(
                Value::Integer(1.into()),
                Value::Integer((-35).into()),
            )]));
            let signature = self.sign(&haca_tee::nitro::sig_structure(&protected, &payload));
            encode(&Value::Array(vec![
                Value::Bytes(protected),
                Value::Map(vec![]),
                Value::Bytes(payload),
                Value::Bytes(signature),
            ]))
        }

        fn sign(&self, message: &[u8]) -> Vec<u8> {
            let rng = SystemRandom::new();
            match EcdsaKeyPair::from_pkcs8(
                &ECDSA_P384_SHA384_FIXED_SIGNING,
                &self.leaf_key.serialize_der(),
                &rng,
            ) {
                Ok(key) => key.sign(&rng, message).unwrap().as_ref().to_vec(),
                // A non-P-384 leaf (to test that it is refused): any 96 bytes will do.
                Err(_) => vec![1; 96],
            }
        }
    }

    pub fn p256() -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}
