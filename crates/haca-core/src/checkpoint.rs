//! Signed checkpoints of the transparency log: a C2SP `tlog-checkpoint` body in a C2SP
//! `signed-note`, signed with Ed25519 as Go's `sumdb/note` signs (so Go tooling can check it).
//!
//! ```text
//! haca.example/log          <- origin (also the signer's key name)
//! 42                        <- tree size, ASCII decimal
//! 2bN0...=                  <- tree head, standard base64 of 32 bytes
//! timestamp 1700000000000   <- extension line: signing time, unix milliseconds
//!                           <- blank line
//! — haca.example/log AbCd...  <- base64(key id[4] || Ed25519 signature[64])
//! ```
//!
//! The timestamp is an extension line inside the body (C2SP lets a log add lines after the
//! root) rather than beside the note, so that the signature covers it: an unsigned time could
//! be moved by anyone relaying the checkpoint. Verifiers that do not know the line skip it, as
//! C2SP says. This parser requires it and knows no other extension line, so a parsed note is
//! rebuilt byte for byte from its fields.
//!
//! Key id = the first 4 bytes of SHA-256(name || "\n" || 0x01 || public key), where 0x01 is
//! the note algorithm byte for Ed25519.

use crate::hash::{sha256_parts, Digest};
use crate::ids::NodeId;
use crate::keys::NodeKey;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};

/// The note algorithm byte of Ed25519 signatures.
const ALG_ED25519: u8 = 0x01;
const SIG_PREFIX: &str = "\u{2014} ";
const TIMESTAMP_PREFIX: &str = "timestamp ";
/// Go's note package refuses notes with more signatures; so does this one, to bound work.
const MAX_SIGNATURES: usize = 100;

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("line {line}: {reason}")]
    Malformed { line: usize, reason: String },
    #[error("origin {origin:?}: {reason}")]
    BadOrigin {
        origin: String,
        reason: &'static str,
    },
    #[error("no signature by {origin} with key id {key_id} (key {key})")]
    NoSignature {
        origin: String,
        key_id: String,
        key: NodeId,
    },
    #[error("line {line}: the signature by {origin} does not verify under key {key}")]
    BadSignature {
        line: usize,
        origin: String,
        key: NodeId,
    },
    #[error("public key {0} is not a valid Ed25519 point")]
    BadPublicKey(NodeId),
}

/// What a log commits to at one moment: its origin, size, tree head and signing time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Digest,
    pub timestamp_ms: u64,
}

/// One signature line of a note. Signatures of other algorithms are kept as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: [u8; 4],
    pub signature: Vec<u8>,
}

/// A checkpoint with its note signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    pub signatures: Vec<NoteSignature>,
}

/// The note key id of `key` under `name`.
pub fn key_id(name: &str, key: &NodeId) -> [u8; 4] {
    let h = sha256_parts(&[name.as_bytes(), b"\n", &[ALG_ED25519], &key.0]);
    let mut id = [0u8; 4];
    id.copy_from_slice(&h.0[..4]);
    id
}

/// Checks that `origin` can name a note key: non-empty, without spaces, `+` or control
/// characters (the note format splits signature lines on spaces and Go reserves `+`).
pub fn check_origin(origin: &str) -> Result<(), CheckpointError> {
    let reason = if origin.is_empty() {
        Some("is empty")
    } else if origin.chars().any(char::is_whitespace) {
        Some("contains a space")
    } else if origin.contains('+') {
        Some("contains '+'")
    } else if origin.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CheckpointError::BadOrigin {
            origin: origin.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

impl Checkpoint {
    /// The signed text: origin, size, root and the timestamp extension line.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n{TIMESTAMP_PREFIX}{}\n",
            self.origin,
            self.size,
            B64.encode(self.root.0),
            self.timestamp_ms
        )
    }

    /// Signs the body with `key` under the origin as key name.
    pub fn sign(&self, key: &NodeKey) -> Result<SignedCheckpoint, CheckpointError> {
        check_origin(&self.origin)?;
        let signature = key.sign(self.body().as_bytes()).to_vec();
        Ok(SignedCheckpoint {
            signatures: vec![NoteSignature {
                name: self.origin.clone(),
                key_id: key_id(&self.origin, &key.node_id()),
                signature,
            }],
            checkpoint: self.clone(),
        })
    }
}

impl SignedCheckpoint {
    /// The note text: body, blank line, one line per signature.
    pub fn to_note(&self) -> String {
        let mut out = self.checkpoint.body();
        out.push('\n');
        for s in &self.signatures {
            let mut blob = s.key_id.to_vec();
            blob.extend_from_slice(&s.signature);
            out.push_str(&format!("{SIG_PREFIX}{} {}\n", s.name, B64.encode(blob)));
        }
        out
    }

    /// Checks that the origin signed this checkpoint with `key`.
    pub fn verify(&self, key: &NodeId) -> Result<(), CheckpointError> {
        let origin = &self.checkpoint.origin;
        let id = key_id(origin, key);
        let body_lines = self.checkpoint.body().lines().count() + 1;
        let (i, sig) = self
            .signatures
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == *origin && s.key_id == id)
            .ok_or_else(|| CheckpointError::NoSignature {
                origin: origin.clone(),
                key_id: hex::encode(id),
                key: *key,
            })?;
        let bad = || CheckpointError::BadSignature {
            line: body_lines + 1 + i,
            origin: origin.clone(),
            key: *key,
        };
        let bytes: [u8; 64] = sig.signature.as_slice().try_into().map_err(|_| bad())?;
        let vk =
            VerifyingKey::from_bytes(&key.0).map_err(|_| CheckpointError::BadPublicKey(*key))?;
        vk.verify(
            self.checkpoint.body().as_bytes(),
            &Signature::from_bytes(&bytes),
        )
        .map_err(|_| bad())
    }

    /// Parses a note. Refuses anything [`SignedCheckpoint::to_note`] would not write, so a
    /// parsed note is its own canonical form; signatures are checked by `verify`, not here.
    pub fn parse(note: &str) -> Result<Self, CheckpointError> {
        let bad = |line: usize, reason: String| CheckpointError::Malformed { line, reason };
        let mut lines: Vec<&str> = note.split('\n').collect();
        // `split` leaves an empty last piece exactly when the note ends with a newline.
        if lines.last() != Some(&"") {
            return Err(bad(
                lines.len(),
                "the note does not end with a newline".into(),
            ));
        }
        lines.pop();
        for (i, line) in lines.iter().enumerate() {
            if line.chars().any(char::is_control) {
                return Err(bad(i + 1, "contains a control character".into()));
            }
        }
        let get = |i: usize, what: &str| {
            lines
                .get(i - 1)
                .copied()
                .ok_or_else(|| bad(i, format!("missing: the note ends before {what}")))
        };

        let origin = get(1, "the origin")?;
        check_origin(origin).map_err(|e| bad(1, e.to_string()))?;
        let size =
            decimal(get(2, "the tree size")?).map_err(|r| bad(2, format!("tree size {r}")))?;
        let root_line = get(3, "the root hash")?;
        let root = B64
            .decode(root_line)
            .ok()
            .filter(|b| B64.encode(b) == root_line)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(Digest)
            .ok_or_else(|| {
                bad(
                    3,
                    "root hash is not 32 bytes in standard padded base64".into(),
                )
            })?;
        let ts_line = get(4, "the timestamp line")?;
        let timestamp_ms = ts_line
            .strip_prefix(TIMESTAMP_PREFIX)
            .ok_or_else(|| {
                bad(
                    4,
                    format!("expected \"{TIMESTAMP_PREFIX}<unix ms>\" after the root"),
                )
            })
            .and_then(|t| decimal(t).map_err(|r| bad(4, format!("timestamp {r}"))))?;
        match get(5, "the blank line before the signatures")? {
            "" => {}
            _ => {
                return Err(bad(
                    5,
                    "expected the blank line before the signatures (haca knows no other \
                     extension line)"
                        .into(),
                ))
            }
        }
        let sig_lines = &lines[5..];
        if sig_lines.is_empty() {
            return Err(bad(6, "missing: the note has no signature line".into()));
        }
        if sig_lines.len() > MAX_SIGNATURES {
            return Err(bad(
                6 + MAX_SIGNATURES,
                format!("more than {MAX_SIGNATURES} signatures"),
            ));
        }
        let signatures = sig_lines
            .iter()
            .enumerate()
            .map(|(i, line)| parse_signature(line).map_err(|r| bad(6 + i, r)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SignedCheckpoint {
            checkpoint: Checkpoint {
                origin: origin.to_owned(),
                size,
                root,
                timestamp_ms,
            },
            signatures,
        })
    }
}

/// A u64 in plain ASCII decimal without a sign or leading zeros.
fn decimal(s: &str) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a decimal number"));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(format!("{s:?} has a leading zero"));
    }
    s.parse()
        .map_err(|_| format!("{s:?} does not fit in 64 bits"))
}

fn parse_signature(line: &str) -> Result<NoteSignature, String> {
    let rest = line
        .strip_prefix(SIG_PREFIX)
        .ok_or("a signature line starts with an em dash and a space")?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or("a signature line is \"— <name> <base64>\"")?;
    check_origin(name).map_err(|e| format!("signer name: {e}"))?;
    let blob = B64
        .decode(b64)
        .ok()
        .filter(|b| B64.encode(b) == b64)
        .ok_or("the signature is not standard padded base64")?;
    if blob.len() < 5 {
        return Err("the signature is shorter than a key id and one byte".into());
    }
    let mut key_id = [0u8; 4];
    key_id.copy_from_slice(&blob[..4]);
    Ok(NoteSignature {
        name: name.to_owned(),
        key_id,
        signature: blob[4..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> NodeKey {
        NodeKey::from_seed([7; 32])
    }

    fn sample() -> Checkpoint {
        Checkpoint {
            origin: "haca.example/log".into(),
            size: 42,
            root: crate::sha256(b"root"),
            timestamp_ms: 1_700_000_000_123,
        }
    }

    fn note() -> String {
        sample().sign(&key()).unwrap().to_note()
    }

    #[test]
    fn signs_parses_and_verifies() {
        let text = note();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "haca.example/log");
        assert_eq!(lines[1], "42");
        assert_eq!(lines[2], B64.encode(crate::sha256(b"root").0));
        assert_eq!(lines[3], "timestamp 1700000000123");
        assert_eq!(lines[4], "");
        assert!(lines[5].starts_with("\u{2014} haca.example/log "));
        assert_eq!(lines.len(), 6);
        let parsed = SignedCheckpoint::parse(&text).unwrap();
        assert_eq!(parsed.checkpoint, sample());
        assert_eq!(parsed.to_note(), text);
        parsed.verify(&key().node_id()).unwrap();
        let other = NodeKey::from_seed([8; 32]).node_id();
        assert!(matches!(
            parsed.verify(&other),
            Err(CheckpointError::NoSignature { .. })
        ));
    }

    /// Go's note package computes the Ed25519 key id the same way: SHA-256 of the name, a
    /// newline, the algorithm byte and the key, cut to 4 bytes.
    #[test]
    fn key_id_follows_the_note_convention() {
        let k = key().node_id();
        let mut pre = b"haca.example/log\n\x01".to_vec();
        pre.extend_from_slice(&k.0);
        assert_eq!(key_id("haca.example/log", &k), crate::sha256(&pre).0[..4]);
        assert_ne!(key_id("other", &k), key_id("haca.example/log", &k));
    }

    #[test]
    fn tampering_fails_verification() {
        let k = key().node_id();
        let signed = sample().sign(&key()).unwrap();
        let mut bigger = signed.clone();
        bigger.checkpoint.size += 1;
        assert!(matches!(
            bigger.verify(&k),
            Err(CheckpointError::BadSignature { line: 6, .. })
        ));
        let mut other_root = signed.clone();
        other_root.checkpoint.root.0[0] ^= 1;
        assert!(other_root.verify(&k).is_err());
        let mut later = signed.clone();
        later.checkpoint.timestamp_ms += 1;
        assert!(later.verify(&k).is_err());
        let mut flipped = signed.clone();
        flipped.signatures[0].signature[10] ^= 1;
        assert!(flipped.verify(&k).is_err());
        let mut short = signed.clone();
        short.signatures[0].signature.pop();
        assert!(short.verify(&k).is_err());
        // The same tampering through the text.
        let text = note().replacen("\n42\n", "\n43\n", 1);
        assert!(SignedCheckpoint::parse(&text).unwrap().verify(&k).is_err());
    }

    #[test]
    fn signing_refuses_an_origin_that_cannot_name_a_key() {
        for origin in ["", "a b", "a+b", "a\nb"] {
            let mut c = sample();
            c.origin = origin.into();
            assert!(
                matches!(c.sign(&key()), Err(CheckpointError::BadOrigin { .. })),
                "{origin:?}"
            );
        }
    }

    fn line_of(text: &str) -> usize {
        match SignedCheckpoint::parse(text) {
            Err(CheckpointError::Malformed { line, .. }) => line,
            other => panic!("{text:?} gave {other:?}"),
        }
    }

    #[test]
    fn malformed_notes_name_the_line() {
        let good = note();
        let sig = good.lines().nth(5).unwrap().to_owned();
        let root = good.lines().nth(2).unwrap().to_owned();
        let cases: Vec<(String, usize)> = vec![
            (good.trim_end().to_owned(), 6),
            (String::new(), 1),
            ("\n".into(), 1),
            ("a b\n".into(), 1),
            ("o\n".into(), 2),
            ("o\n-1\n".into(), 2),
            ("o\n01\n".into(), 2),
            ("o\n99999999999999999999\n".into(), 2),
            ("o\n1\nnot base64\n".into(), 3),
            (format!("o\n1\n{}\n", B64.encode([0u8; 31])), 3),
            (format!("o\n1\n{root}\n"), 4),
            (format!("o\n1\n{root}\ntime 5\n"), 4),
            (format!("o\n1\n{root}\ntimestamp x\n"), 4),
            (format!("o\n1\n{root}\ntimestamp 5\n"), 5),
            (format!("o\n1\n{root}\ntimestamp 5\nextra\n\n{sig}\n"), 5),
            (format!("o\n1\n{root}\ntimestamp 5\n\n"), 6),
            (format!("o\n1\n{root}\ntimestamp 5\n\n- o AAAA\n"), 6),
            (format!("o\n1\n{root}\ntimestamp 5\n\n\u{2014} o\n"), 6),
            (format!("o\n1\n{root}\ntimestamp 5\n\n\u{2014} o AAAA\n"), 6),
            (
                format!("o\n1\n{root}\ntimestamp 5\n\n{sig}\n\u{2014} o !!\n"),
                7,
            ),
            (format!("o\r\n1\n{root}\ntimestamp 5\n\n{sig}\n"), 1),
        ];
        for (text, line) in cases {
            assert_eq!(line_of(&text), line, "{text:?}");
        }
        let err = SignedCheckpoint::parse("o\n01\n").unwrap_err().to_string();
        assert_eq!(err, "line 2: tree size \"01\" has a leading zero");
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(s in any::<String>()) {
            if let Ok(parsed) = SignedCheckpoint::parse(&s) {
                prop_assert_eq!(parsed.to_note(), s);
            }
        }

        #[test]
        fn parsing_a_damaged_note_never_panics_and_round_trips(
            at in 0usize..400, byte in any::<u8>(), cut in any::<bool>(),
        ) {
            let mut bytes = note().into_bytes();
            let at = at % bytes.len();
            if cut { bytes.truncate(at) } else { bytes[at] = byte }
            if let Ok(text) = String::from_utf8(bytes) {
                if let Ok(parsed) = SignedCheckpoint::parse(&text) {
                    prop_assert_eq!(parsed.to_note(), text.clone());
                    if text != note() {
                        prop_assert!(parsed.verify(&key().node_id()).is_err());
                    }
                }
            }
        }
    }
}
