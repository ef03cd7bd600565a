//! Parsing a Nitro attestation document: COSE_Sign1 (RFC 9052) around a CBOR payload, as
//! specified in the AWS Nitro Enclaves user guide ("Verifying the root of trust").
//!
//! ```text
//! COSE_Sign1 = #6.18([ protected: bstr .cbor {1: -35}, unprotected: {}, payload: bstr, signature: bstr .size 96 ])
//! payload    = { module_id: text, digest: "SHA384", timestamp: uint (unix ms),
//!                pcrs: { 0..31 => bstr .size (32/48/64) }, certificate: bstr (DER),
//!                cabundle: [+ bstr (DER), root first], ? public_key: bstr / null,
//!                ? user_data: bstr / null, ? nonce: bstr / null }
//! ```
//!
//! Parsing checks structure only (types, sizes, the algorithm); nothing cryptographic. It never
//! panics and never allocates more than a small multiple of the input: every failure is a
//! [`NitroError`] naming the field.

use std::collections::BTreeMap;

use ciborium::value::Value;

use crate::NitroError;

/// No attestation document comes near this (they are about 4.5 KB); anything larger is
/// rejected before decoding.
pub const MAX_DOCUMENT_LEN: usize = 32 * 1024;
/// COSE algorithm identifier of ES384 (ECDSA P-384 with SHA-384), RFC 9053.
pub const COSE_ALG_ES384: i64 = -35;
/// CBOR tag of COSE_Sign1.
pub const COSE_SIGN1_TAG: u64 = 18;
/// ES384 signatures are r || s, 48 bytes each.
pub const ES384_SIGNATURE_LEN: usize = 96;

/// Nesting a document needs is 3; anything deeper is rejected, which also bounds the stack.
const MAX_CBOR_DEPTH: usize = 16;
/// Size bounds from the AWS attestation document specification.
const MAX_CERT_LEN: usize = 1024;
const MAX_PUBLIC_KEY_LEN: usize = 1024;
const MAX_USER_DATA_LEN: usize = 512;
const MAX_NONCE_LEN: usize = 512;
const MAX_PCRS: usize = 32;

/// A parsed, not yet verified attestation document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestationDocument {
    /// The protected header exactly as signed (the contents of its bstr).
    pub protected: Vec<u8>,
    /// The payload exactly as signed (the contents of its bstr).
    pub payload: Vec<u8>,
    /// r || s, 96 bytes.
    pub signature: Vec<u8>,
    pub module_id: String,
    /// Unix milliseconds, as stated by the Nitro hypervisor.
    pub timestamp_ms: u64,
    /// Always `SHA384` for Nitro.
    pub digest: String,
    /// PCR index -> measurement.
    pub pcrs: BTreeMap<u8, Vec<u8>>,
    /// The leaf certificate (DER) whose key signed the document.
    pub certificate: Vec<u8>,
    /// CA certificates (DER), root first.
    pub cabundle: Vec<Vec<u8>>,
    pub public_key: Option<Vec<u8>>,
    pub user_data: Option<Vec<u8>>,
    pub nonce: Option<Vec<u8>>,
}

impl AttestationDocument {
    /// PCRs as lowercase hex, by index.
    pub fn pcrs_hex(&self) -> BTreeMap<u8, String> {
        self.pcrs
            .iter()
            .map(|(i, v)| (*i, hex::encode(v)))
            .collect()
    }

    /// The bytes the signature covers: `Sig_structure = ["Signature1", protected, h'', payload]`
    /// (RFC 9052 section 4.4), in deterministic CBOR.
    pub fn signed_bytes(&self) -> Vec<u8> {
        sig_structure(&self.protected, &self.payload)
    }
}

/// `["Signature1", protected, external_aad = h'', payload]` as CBOR.
pub fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    const CONTEXT: &[u8] = b"Signature1";
    let mut out = Vec::with_capacity(protected.len() + payload.len() + 32);
    out.push(0x84); // array(4)
    cbor_head(&mut out, 3, CONTEXT.len() as u64);
    out.extend_from_slice(CONTEXT);
    cbor_head(&mut out, 2, protected.len() as u64);
    out.extend_from_slice(protected);
    cbor_head(&mut out, 2, 0);
    cbor_head(&mut out, 2, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

/// A CBOR item head (major type + length) in its shortest form.
fn cbor_head(out: &mut Vec<u8>, major: u8, len: u64) {
    let m = major << 5;
    match len {
        0..=23 => out.push(m | len as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, len as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

/// Parses an attestation document (tagged or untagged COSE_Sign1). Checks structure only.
pub fn parse(bytes: &[u8]) -> Result<AttestationDocument, NitroError> {
    if bytes.is_empty() {
        return Err(NitroError::malformed("document", "empty input"));
    }
    if bytes.len() > MAX_DOCUMENT_LEN {
        return Err(NitroError::TooLarge {
            len: bytes.len(),
            max: MAX_DOCUMENT_LEN,
        });
    }
    let value = decode("document", bytes)?;
    let value = match value {
        Value::Tag(COSE_SIGN1_TAG, inner) => *inner,
        Value::Tag(tag, _) => {
            return Err(NitroError::field(
                "document",
                format!("CBOR tag {tag}; a COSE_Sign1 is untagged or tagged {COSE_SIGN1_TAG}"),
            ))
        }
        other => other,
    };
    let items = match value {
        Value::Array(items) => items,
        other => {
            return Err(NitroError::field(
                "document",
                format!("expected a COSE_Sign1 array, found {}", kind(&other)),
            ))
        }
    };
    let [protected, unprotected, payload, signature]: [Value; 4] =
        items.try_into().map_err(|items: Vec<Value>| {
            NitroError::field(
                "document",
                format!(
                    "a COSE_Sign1 array has 4 items, this one has {}",
                    items.len()
                ),
            )
        })?;

    let protected = bytes_of("protected", protected)?;
    check_protected_header(&protected)?;
    if !matches!(unprotected, Value::Map(_)) {
        return Err(NitroError::field(
            "unprotected",
            format!("expected a map, found {}", kind(&unprotected)),
        ));
    }
    let payload = match payload {
        Value::Null => {
            return Err(NitroError::field(
                "payload",
                "detached payloads are not supported",
            ))
        }
        other => bytes_of("payload", other)?,
    };
    let signature = bytes_of("signature", signature)?;
    if signature.len() != ES384_SIGNATURE_LEN {
        return Err(NitroError::field(
            "signature",
            format!(
                "an ES384 signature is {ES384_SIGNATURE_LEN} bytes (r || s), found {}",
                signature.len()
            ),
        ));
    }

    let fields = Payload::parse(&payload)?;
    Ok(AttestationDocument {
        protected,
        payload,
        signature,
        module_id: fields.module_id,
        timestamp_ms: fields.timestamp_ms,
        digest: fields.digest,
        pcrs: fields.pcrs,
        certificate: fields.certificate,
        cabundle: fields.cabundle,
        public_key: fields.public_key,
        user_data: fields.user_data,
        nonce: fields.nonce,
    })
}

/// The protected header must be a map whose `alg` (label 1) is ES384, with no `crit` (label 2):
/// this verifier understands no critical header parameters.
fn check_protected_header(protected: &[u8]) -> Result<(), NitroError> {
    if protected.is_empty() {
        return Err(NitroError::field(
            "protected",
            "empty; the algorithm must be a protected header parameter",
        ));
    }
    let entries = match decode("protected", protected)? {
        Value::Map(entries) => entries,
        other => {
            return Err(NitroError::field(
                "protected",
                format!("expected a header map, found {}", kind(&other)),
            ))
        }
    };
    let mut alg = None;
    for (label, value) in &entries {
        let label = match label {
            Value::Integer(i) => i128::from(*i),
            Value::Text(_) => continue,
            other => {
                return Err(NitroError::field(
                    "protected",
                    format!("header labels are integers or text, found {}", kind(other)),
                ))
            }
        };
        match label {
            1 => {
                if alg.is_some() {
                    return Err(NitroError::field("protected.alg", "appears twice"));
                }
                alg = Some(value);
            }
            2 => {
                return Err(NitroError::field(
                    "protected.crit",
                    "critical header parameters are not supported",
                ))
            }
            _ => {}
        }
    }
    match alg {
        None => Err(NitroError::field("protected.alg", "missing")),
        Some(Value::Integer(i)) if i128::from(*i) == i128::from(COSE_ALG_ES384) => Ok(()),
        Some(Value::Integer(i)) => Err(NitroError::field(
            "protected.alg",
            format!(
                "algorithm {} is not supported; Nitro documents use ES384 ({COSE_ALG_ES384})",
                i128::from(*i)
            ),
        )),
        Some(other) => Err(NitroError::field(
            "protected.alg",
            format!("expected an integer algorithm id, found {}", kind(other)),
        )),
    }
}

struct Payload {
    module_id: String,
    timestamp_ms: u64,
    digest: String,
    pcrs: BTreeMap<u8, Vec<u8>>,
    certificate: Vec<u8>,
    cabundle: Vec<Vec<u8>>,
    public_key: Option<Vec<u8>>,
    user_data: Option<Vec<u8>>,
    nonce: Option<Vec<u8>>,
}

impl Payload {
    fn parse(payload: &[u8]) -> Result<Self, NitroError> {
        if payload.is_empty() {
            return Err(NitroError::field("payload", "empty"));
        }
        let entries = match decode("payload", payload)? {
            Value::Map(entries) => entries,
            other => {
                return Err(NitroError::field(
                    "payload",
                    format!("expected a map, found {}", kind(&other)),
                ))
            }
        };
        let mut fields: BTreeMap<String, Value> = BTreeMap::new();
        for (key, value) in entries {
            let key = match key {
                Value::Text(k) => k,
                other => {
                    return Err(NitroError::field(
                        "payload",
                        format!("keys are text, found {}", kind(&other)),
                    ))
                }
            };
            if fields.contains_key(&key) {
                return Err(NitroError::field(key, "appears twice in the payload"));
            }
            fields.insert(key, value);
        }
        let mut take = |name: &str| fields.remove(name);

        let module_id = match take("module_id") {
            None => return Err(NitroError::field("module_id", "missing")),
            Some(Value::Text(t)) if !t.is_empty() => t,
            Some(Value::Text(_)) => return Err(NitroError::field("module_id", "empty")),
            Some(other) => return Err(wrong_type("module_id", "text", &other)),
        };
        let digest = match take("digest") {
            None => return Err(NitroError::field("digest", "missing")),
            Some(Value::Text(t)) if t == "SHA384" => t,
            Some(Value::Text(t)) => {
                return Err(NitroError::field(
                    "digest",
                    format!("{t:?} is not supported; Nitro documents use \"SHA384\""),
                ))
            }
            Some(other) => return Err(wrong_type("digest", "text", &other)),
        };
        let timestamp_ms = match take("timestamp") {
            None => return Err(NitroError::field("timestamp", "missing")),
            Some(Value::Integer(i)) => match u64::try_from(i) {
                Ok(0) => return Err(NitroError::field("timestamp", "zero")),
                Ok(t) => t,
                Err(_) => {
                    return Err(NitroError::field(
                        "timestamp",
                        "must be an unsigned 64-bit count of milliseconds",
                    ))
                }
            },
            Some(other) => return Err(wrong_type("timestamp", "unsigned integer", &other)),
        };
        let pcrs = match take("pcrs") {
            None => return Err(NitroError::field("pcrs", "missing")),
            Some(Value::Map(entries)) => parse_pcrs(entries)?,
            Some(other) => return Err(wrong_type("pcrs", "map", &other)),
        };
        let certificate = match take("certificate") {
            None => return Err(NitroError::field("certificate", "missing")),
            Some(v) => sized_bytes("certificate", v, 1, MAX_CERT_LEN)?,
        };
        let cabundle = match take("cabundle") {
            None => return Err(NitroError::field("cabundle", "missing")),
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    return Err(NitroError::field(
                        "cabundle",
                        "empty; it must hold at least the root certificate",
                    ));
                }
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| sized_bytes(&format!("cabundle[{i}]"), v, 1, MAX_CERT_LEN))
                    .collect::<Result<Vec<_>, _>>()?
            }
            Some(other) => return Err(wrong_type("cabundle", "array", &other)),
        };
        let public_key = optional_bytes("public_key", take("public_key"), 1, MAX_PUBLIC_KEY_LEN)?;
        let user_data = optional_bytes("user_data", take("user_data"), 0, MAX_USER_DATA_LEN)?;
        let nonce = optional_bytes("nonce", take("nonce"), 0, MAX_NONCE_LEN)?;

        Ok(Payload {
            module_id,
            timestamp_ms,
            digest,
            pcrs,
            certificate,
            cabundle,
            public_key,
            user_data,
            nonce,
        })
    }
}

fn parse_pcrs(entries: Vec<(Value, Value)>) -> Result<BTreeMap<u8, Vec<u8>>, NitroError> {
    if entries.is_empty() || entries.len() > MAX_PCRS {
        return Err(NitroError::field(
            "pcrs",
            format!("holds 1 to {MAX_PCRS} entries, found {}", entries.len()),
        ));
    }
    let mut pcrs = BTreeMap::new();
    for (index, value) in entries {
        let index = match index {
            Value::Integer(i) => match u8::try_from(i) {
                Ok(i) if usize::from(i) < MAX_PCRS => i,
                _ => {
                    return Err(NitroError::field(
                        "pcrs",
                        format!(
                            "index {} is out of range 0..{}",
                            i128::from(i),
                            MAX_PCRS - 1
                        ),
                    ))
                }
            },
            other => {
                return Err(NitroError::field(
                    "pcrs",
                    format!("indexes are integers, found {}", kind(&other)),
                ))
            }
        };
        let name = format!("pcrs[{index}]");
        let value = bytes_of(&name, value)?;
        if ![32, 48, 64].contains(&value.len()) {
            return Err(NitroError::field(
                name,
                format!("a PCR is 32, 48 or 64 bytes, found {}", value.len()),
            ));
        }
        if pcrs.insert(index, value).is_some() {
            return Err(NitroError::field(name, "appears twice"));
        }
    }
    Ok(pcrs)
}

fn optional_bytes(
    field: &str,
    value: Option<Value>,
    min: usize,
    max: usize,
) -> Result<Option<Vec<u8>>, NitroError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => sized_bytes(field, v, min, max).map(Some),
    }
}

fn sized_bytes(field: &str, value: Value, min: usize, max: usize) -> Result<Vec<u8>, NitroError> {
    let b = bytes_of(field, value)?;
    if b.len() < min || b.len() > max {
        return Err(NitroError::field(
            field,
            format!("must be {min} to {max} bytes, found {}", b.len()),
        ));
    }
    Ok(b)
}

fn bytes_of(field: &str, value: Value) -> Result<Vec<u8>, NitroError> {
    match value {
        Value::Bytes(b) => Ok(b),
        other => Err(wrong_type(field, "byte string", &other)),
    }
}

fn wrong_type(field: &str, expected: &str, found: &Value) -> NitroError {
    NitroError::field(field, format!("expected {expected}, found {}", kind(found)))
}

/// Decodes exactly one CBOR item spanning all of `bytes`.
fn decode(field: &str, bytes: &[u8]) -> Result<Value, NitroError> {
    use ciborium::de::Error;
    let mut rest = bytes;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_CBOR_DEPTH)
        .map_err(|e| {
            let reason = match e {
                Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => format!(
                    "truncated: the input ends ({} bytes) before the item is complete",
                    bytes.len()
                ),
                Error::Io(e) => format!("read error: {e}"),
                Error::Syntax(offset) => format!("invalid encoding at byte {offset}"),
                Error::Semantic(Some(offset), msg) => format!("{msg} at byte {offset}"),
                Error::Semantic(None, msg) => msg,
                Error::RecursionLimitExceeded => {
                    format!("nested deeper than {MAX_CBOR_DEPTH} levels")
                }
            };
            NitroError::malformed(field, reason)
        })?;
    if !rest.is_empty() {
        return Err(NitroError::malformed(
            field,
            format!(
                "{} trailing bytes after the item ends at byte {}",
                rest.len(),
                bytes.len() - rest.len()
            ),
        ));
    }
    Ok(value)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Integer(_) => "an integer",
        Value::Bytes(_) => "a byte string",
        Value::Float(_) => "a float",
        Value::Text(_) => "text",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
        Value::Tag(..) => "a tagged item",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        _ => "an unsupported CBOR item",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sig_structure_heads_are_shortest_form() {
        let s = sig_structure(&[0xa1, 0x01, 0x38, 0x22], &[0u8; 300]);
        assert_eq!(&s[..12], b"\x84\x6aSignature1");
        assert_eq!(&s[12..17], &[0x44, 0xa1, 0x01, 0x38, 0x22]);
        assert_eq!(s[17], 0x40);
        assert_eq!(&s[18..21], &[0x59, 0x01, 0x2c]);
        assert_eq!(s.len(), 21 + 300);
    }

    #[test]
    fn protected_header_must_name_es384() {
        // {1: -7} is ES256.
        let err = check_protected_header(&[0xa1, 0x01, 0x26]).unwrap_err();
        assert!(matches!(err, NitroError::Field { ref field, .. } if field == "protected.alg"));
        assert!(check_protected_header(&[0xa1, 0x01, 0x38, 0x22]).is_ok());
        assert!(check_protected_header(&[0xa0]).is_err());
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let err = decode("x", &[0x01, 0x02]).unwrap_err();
        assert!(
            matches!(err, NitroError::Malformed { ref reason, .. } if reason.contains("trailing"))
        );
    }

    #[test]
    fn huge_declared_lengths_end_in_truncation_not_allocation() {
        let max = [0xff; 8];
        for head in [0x5b, 0x7b, 0x9b, 0xbb] {
            // A byte string, text, array or map claiming 2^64 - 1 bytes or items.
            let mut bytes = vec![head];
            bytes.extend_from_slice(&max);
            bytes.extend_from_slice(&[0x00; 16]);
            let err = parse(&bytes).unwrap_err();
            assert!(
                matches!(err, NitroError::Malformed { ref reason, .. } if reason.contains("truncated")),
                "{head:#x}: {err}"
            );
        }
        // The payload can claim huge lengths too: it is decoded the same way.
        // payload = h'a1 69 "module_id" 7b ffffffffffffffff' ({"module_id": text of 2^64 - 1}).
        let mut doc = vec![0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0, 0x54, 0xa1, 0x69];
        doc.extend_from_slice(b"module_id");
        doc.push(0x7b);
        doc.extend_from_slice(&max);
        doc.extend_from_slice(&[0x58, 0x60]);
        doc.extend_from_slice(&[0u8; 96]);
        let err = parse(&doc).unwrap_err();
        assert!(
            matches!(err, NitroError::Malformed { ref field, .. } if field == "payload"),
            "{err}"
        );
    }

    #[test]
    fn deep_nesting_is_rejected_without_overflowing_the_stack() {
        let deep = vec![0x81u8; 100_000];
        let err = decode("x", &deep).unwrap_err();
        assert!(matches!(err, NitroError::Malformed { .. }));
    }
}
