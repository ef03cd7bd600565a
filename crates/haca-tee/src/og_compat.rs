//! OpenGradient-compatible response signatures, so that a client written for OpenGradient's
//! TEE answers can check haca's (DESIGN.md, "OpenGradient compatibility targets").
//!
//! An answer produced inside an enclave carries five fields:
//! - `tee_request_hash`, `tee_output_hash`: keccak256, lowercase hex without `0x`;
//! - `tee_timestamp`: unix seconds;
//! - `tee_signature`: standard base64 of an RSA-PSS-2048 signature (SHA-256, MGF1-SHA-256,
//!   salt 32) over the 32-byte [`signed_message`];
//! - `tee_id`: `0x` + keccak256 of the signing key's DER SubjectPublicKeyInfo.
//!
//! Chat requests hash as OpenGradient's Python does: `json.dumps(canonical, sort_keys=True)`
//! with the default separators and ASCII escapes ([`python_json_dumps`]), over a canonical
//! request that keeps only the fields [`chat_request_hash`] lists. Pure: no I/O, no clock.

use base64::Engine as _;
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::pss::{BlindedSigningKey, Signature, VerifyingKey};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;
use sha3::{Digest as _, Keccak256};

/// RSA modulus size of a signing key.
pub const RSA_BITS: usize = 2048;

/// keccak256 of `bytes`.
pub fn keccak256(bytes: &[u8]) -> [u8; 32] {
    Keccak256::digest(bytes).into()
}

/// The 32 bytes RSA-PSS signs: keccak256(request_hash || output_hash || uint256_be(timestamp)).
pub fn signed_message(request_hash: &[u8; 32], output_hash: &[u8; 32], timestamp: u64) -> [u8; 32] {
    let mut m = [0u8; 96];
    m[..32].copy_from_slice(request_hash);
    m[32..64].copy_from_slice(output_hash);
    m[88..].copy_from_slice(&timestamp.to_be_bytes());
    keccak256(&m)
}

/// `0x` + keccak256 of a DER SubjectPublicKeyInfo: OpenGradient's enclave id.
pub fn tee_id_of_spki(spki_der: &[u8]) -> String {
    format!("0x{}", hex::encode(keccak256(spki_der)))
}

/// The five fields an enclave's answer carries.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct TeeFields {
    pub tee_signature: String,
    pub tee_request_hash: String,
    pub tee_output_hash: String,
    pub tee_timestamp: u64,
    pub tee_id: String,
}

/// An enclave's RSA signing key. It never leaves the enclave process; its public half is
/// bound by the attestation document (nitriding `user_data`) and published as PEM.
pub struct OgSigner {
    key: BlindedSigningKey<Sha256>,
    spki_der: Vec<u8>,
}

impl OgSigner {
    /// A fresh 2048-bit key.
    pub fn generate() -> Result<Self, String> {
        let private = RsaPrivateKey::new(&mut rand::thread_rng(), RSA_BITS)
            .map_err(|e| format!("RSA key generation: {e}"))?;
        let spki_der = RsaPublicKey::from(&private)
            .to_public_key_der()
            .map_err(|e| format!("RSA public key encoding: {e}"))?
            .as_bytes()
            .to_vec();
        Ok(OgSigner {
            key: BlindedSigningKey::new(private),
            spki_der,
        })
    }

    /// DER SubjectPublicKeyInfo of the public key.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// PEM of the public key (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_pem(&self) -> String {
        spki_pem(&self.spki_der)
    }

    /// `0x` + keccak256 of [`OgSigner::spki_der`].
    pub fn tee_id(&self) -> String {
        tee_id_of_spki(&self.spki_der)
    }

    /// Signs one answer.
    pub fn sign(&self, request_hash: [u8; 32], output_hash: [u8; 32], timestamp: u64) -> TeeFields {
        let msg = signed_message(&request_hash, &output_hash, timestamp);
        let sig = self.key.sign_with_rng(&mut rand::thread_rng(), &msg);
        TeeFields {
            tee_signature: base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
            tee_request_hash: hex::encode(request_hash),
            tee_output_hash: hex::encode(output_hash),
            tee_timestamp: timestamp,
            tee_id: self.tee_id(),
        }
    }
}

/// PEM of a DER SubjectPublicKeyInfo.
pub fn spki_pem(spki_der: &[u8]) -> String {
    RsaPublicKey::from_public_key_der(spki_der)
        .and_then(|k| k.to_public_key_pem(LineEnding::LF))
        .unwrap_or_default()
}

/// The DER SubjectPublicKeyInfo of an RSA public key in PEM.
pub fn spki_der_of_pem(pem: &str) -> Result<Vec<u8>, String> {
    RsaPublicKey::from_public_key_pem(pem.trim())
        .and_then(|k| k.to_public_key_der())
        .map(|d| d.as_bytes().to_vec())
        .map_err(|e| format!("signing_key_pem: not an RSA public key: {e}"))
}

/// Checks an answer's tee fields against an RSA public key (PEM or DER SubjectPublicKeyInfo):
/// the id is the key's, and the signature covers the two hashes and the timestamp. Errors
/// name the field and the reason.
pub fn verify_fields(public_key: &[u8], f: &TeeFields) -> Result<(), String> {
    let key = match std::str::from_utf8(public_key) {
        Ok(pem) if pem.trim_start().starts_with("-----BEGIN") => {
            RsaPublicKey::from_public_key_pem(pem.trim())
        }
        _ => RsaPublicKey::from_public_key_der(public_key),
    }
    .map_err(|e| format!("signing key: not an RSA SubjectPublicKeyInfo: {e}"))?;
    let der = key
        .to_public_key_der()
        .map_err(|e| format!("signing key: {e}"))?;
    let want_id = tee_id_of_spki(der.as_bytes());
    if !f.tee_id.eq_ignore_ascii_case(&want_id) {
        return Err(format!(
            "tee_id: {} is not the signing key's id {want_id}",
            f.tee_id
        ));
    }
    let hash = |name: &str, h: &str| -> Result<[u8; 32], String> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(h, &mut out)
            .map_err(|e| format!("{name}: not 32 bytes of hex without 0x: {e}"))?;
        Ok(out)
    };
    let req = hash("tee_request_hash", &f.tee_request_hash)?;
    let out = hash("tee_output_hash", &f.tee_output_hash)?;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(&f.tee_signature)
        .map_err(|e| format!("tee_signature: not standard base64: {e}"))?;
    let sig = Signature::try_from(sig.as_slice())
        .map_err(|e| format!("tee_signature: not an RSA signature: {e}"))?;
    VerifyingKey::<Sha256>::new(key)
        .verify(&signed_message(&req, &out, f.tee_timestamp), &sig)
        .map_err(|_| {
            "tee_signature: does not verify over the request hash, output hash and timestamp"
                .to_string()
        })
}

/// `json.dumps(v, sort_keys=True)` as CPython writes it: separators `", "` and `": "`,
/// keys sorted by code point, non-ASCII escaped as `\uXXXX` (surrogate pairs above the BMP),
/// floats in `repr` form (`1.0`, `1e-07`, `1e+16`).
pub fn python_json_dumps(v: &Value) -> String {
    let mut out = String::new();
    dump(v, &mut out);
    out
}

fn dump(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (_, Some(u), _) => out.push_str(&u.to_string()),
            (_, _, Some(f)) => out.push_str(&python_float_repr(f)),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => dump_str(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                dump(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                dump_str(k, out);
                out.push_str(": ");
                dump(&m[k], out);
            }
            out.push('}');
        }
    }
}

fn dump_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (' '..='~').contains(&c) => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
    }
    out.push('"');
}

/// CPython's `repr(float)`: the shortest digits that round-trip, in fixed notation when the
/// decimal exponent is in -4..16, else `d.ddde[+-]XX`.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: "1.5e-7", "1e16", "-0e0".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let s = if exp < 0 {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        } else if exp + 1 >= n {
            format!("{}{}.0", digits, "0".repeat((exp + 1 - n) as usize))
        } else {
            let (a, b) = digits.split_at((exp + 1) as usize);
            format!("{a}.{b}")
        };
        format!("{sign}{s}")
    } else {
        let (first, rest) = digits.split_at(1);
        let m = if rest.is_empty() {
            first.to_string()
        } else {
            format!("{first}.{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

/// The canonical chat request OpenGradient hashes (DESIGN.md): `model`; `messages`, each
/// reduced by role; `temperature` as a float (0.0 when absent); and, when present,
/// `max_tokens`, `stop`, `tools`, `response_format`, and `web_search` when true.
/// `tool_choice`, `stream` and haca's own fields (`privacy`, ...) are not hashed.
pub fn canonical_chat_request(body: &Value) -> Result<Value, String> {
    let obj = body
        .as_object()
        .ok_or("the request body is not a JSON object")?;
    let mut c = Map::new();
    c.insert(
        "model".into(),
        obj.get("model").cloned().ok_or("model: missing")?,
    );
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: missing or not an array")?;
    let reduced = messages
        .iter()
        .enumerate()
        .map(|(i, m)| reduce_message(m).map_err(|e| format!("messages[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    c.insert("messages".into(), Value::Array(reduced));
    let temperature = match obj.get("temperature") {
        None | Some(Value::Null) => 0.0,
        Some(t) => t.as_f64().ok_or("temperature: not a number")?,
    };
    let temperature =
        serde_json::Number::from_f64(temperature).ok_or("temperature: not a finite number")?;
    c.insert("temperature".into(), Value::Number(temperature));
    for k in ["max_tokens", "stop", "tools", "response_format"] {
        if let Some(v) = obj.get(k).filter(|v| !v.is_null()) {
            c.insert(k.into(), v.clone());
        }
    }
    if obj.get("web_search") == Some(&Value::Bool(true)) {
        c.insert("web_search".into(), Value::Bool(true));
    }
    Ok(Value::Object(c))
}

fn reduce_message(m: &Value) -> Result<Value, String> {
    let role = m["role"].as_str().ok_or("role: missing or not a string")?;
    let content = m.get("content").cloned().unwrap_or(Value::Null);
    let mut r = Map::new();
    match role {
        "system" | "developer" => {
            r.insert("role".into(), "system".into());
            r.insert("content".into(), content);
        }
        "user" => {
            r.insert("role".into(), "user".into());
            r.insert("content".into(), reduce_parts(content));
        }
        "assistant" => {
            r.insert("role".into(), "assistant".into());
            r.insert(
                "content".into(),
                if content.is_null() {
                    "".into()
                } else {
                    content
                },
            );
            if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                let calls = calls
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "id": t["id"],
                            "type": t["type"],
                            "function": {
                                "name": t["function"]["name"],
                                "arguments": t["function"]["arguments"],
                            },
                        })
                    })
                    .collect();
                r.insert("tool_calls".into(), Value::Array(calls));
            }
        }
        "tool" => {
            r.insert("role".into(), "tool".into());
            r.insert("content".into(), content);
            r.insert("tool_call_id".into(), m["tool_call_id"].clone());
        }
        other => {
            return Err(format!(
                "role: {other:?} is not system, developer, user, assistant or tool"
            ))
        }
    }
    Ok(Value::Object(r))
}

/// A user message's content: text as is; in a list of parts, text parts as is and
/// attachments (images, files, audio) reduced to `{type[, filename]}`.
fn reduce_parts(content: Value) -> Value {
    match content {
        Value::Array(parts) => Value::Array(
            parts
                .into_iter()
                .map(|p| {
                    if p["type"] == "text" {
                        return p;
                    }
                    let mut r = Map::new();
                    r.insert("type".into(), p["type"].clone());
                    let filename = p
                        .get("filename")
                        .or_else(|| p.get("file").and_then(|f| f.get("filename")));
                    if let Some(f) = filename {
                        r.insert("filename".into(), f.clone());
                    }
                    Value::Object(r)
                })
                .collect(),
        ),
        other => other,
    }
}

/// `tee_request_hash` of a chat request: keccak256 of [`python_json_dumps`] of
/// [`canonical_chat_request`].
pub fn chat_request_hash(body: &Value) -> Result<[u8; 32], String> {
    Ok(keccak256(
        python_json_dumps(&canonical_chat_request(body)?).as_bytes(),
    ))
}

/// `tee_output_hash` of a chat answer: keccak256 of the assistant text, or of
/// `json.dumps(tool_calls, sort_keys=True)` when the answer is tool calls.
pub fn chat_output_hash(text: &str, tool_calls: Option<&Value>) -> [u8; 32] {
    match tool_calls {
        Some(calls) => keccak256(python_json_dumps(calls).as_bytes()),
        None => keccak256(text.as_bytes()),
    }
}

/// `tee_request_hash` and `tee_output_hash` of an ML inference (haca's own rule, as
/// OpenGradient specifies none for tensors): keccak256 of [`python_json_dumps`] of the request
/// `{model, input}` and of the output tensors.
pub fn ml_hashes(model: &str, input: &Value, output: &Value) -> ([u8; 32], [u8; 32]) {
    let req = serde_json::json!({"model": model, "input": input});
    (
        keccak256(python_json_dumps(&req).as_bytes()),
        keccak256(python_json_dumps(output).as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_print_as_python_repr() {
        for (f, want) in [
            (0.0, "0.0"),
            (1.0, "1.0"),
            (0.7, "0.7"),
            (-2.5, "-2.5"),
            (1e-7, "1e-07"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (1.2345e20, "1.2345e+20"),
            (100.0, "100.0"),
            (0.1 + 0.2, "0.30000000000000004"),
        ] {
            assert_eq!(python_float_repr(f), want, "{f}");
        }
    }

    #[test]
    fn dumps_sorts_keys_and_escapes_non_ascii() {
        let v = json!({"b": [1, 2.0, null], "a": "é\u{1F600}\"\n/", "A": true});
        assert_eq!(
            python_json_dumps(&v),
            r#"{"A": true, "a": "\u00e9\ud83d\ude00\"\n/", "b": [1, 2.0, null]}"#
        );
    }

    #[test]
    fn canonical_request_keeps_only_hashed_fields() {
        let body = json!({
            "model": "m", "stream": true, "privacy": "tee", "tool_choice": "auto",
            "messages": [
                {"role": "developer", "content": "be brief", "name": "x"},
                {"role": "user", "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "file", "file": {"filename": "a.pdf", "file_data": "..."}},
                    {"type": "image_url", "image_url": {"url": "data:..."}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}, "extra": 1}]},
                {"role": "tool", "content": "42", "tool_call_id": "c1"}
            ],
            "max_tokens": 5, "web_search": false
        });
        let c = canonical_chat_request(&body).unwrap();
        assert_eq!(
            c,
            json!({
                "model": "m", "temperature": 0.0, "max_tokens": 5,
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [
                        {"type": "text", "text": "hi"},
                        {"type": "file", "filename": "a.pdf"},
                        {"type": "image_url"}]},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                    {"role": "tool", "content": "42", "tool_call_id": "c1"}
                ]
            })
        );
        assert!(python_json_dumps(&c).contains(r#""temperature": 0.0"#));
        assert!(
            canonical_chat_request(&json!({"model": "m", "messages": [{"role": "bot"}]}))
                .unwrap_err()
                .starts_with("messages[0]: role")
        );
    }

    #[test]
    fn signatures_verify_and_fail_when_changed() {
        let s = OgSigner::generate().unwrap();
        let f = s.sign([1; 32], [2; 32], 1_700_000_000);
        assert_eq!(f.tee_id.len(), 66);
        verify_fields(s.public_pem().as_bytes(), &f).unwrap();
        verify_fields(s.spki_der(), &f).unwrap();
        let mut bad = f.clone();
        bad.tee_timestamp += 1;
        assert!(verify_fields(s.spki_der(), &bad)
            .unwrap_err()
            .starts_with("tee_signature"));
        let mut bad = f.clone();
        bad.tee_output_hash = hex::encode([3u8; 32]);
        assert!(verify_fields(s.spki_der(), &bad).is_err());
        let other = OgSigner::generate().unwrap();
        assert!(verify_fields(other.spki_der(), &f)
            .unwrap_err()
            .starts_with("tee_id"));
    }
}
