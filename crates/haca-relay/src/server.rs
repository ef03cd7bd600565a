//! The gateway side: open an encapsulated request with the key ring, then answer through
//! the [`ResponseContext`] it yields, single-shot or chunked.
//!
//! An encapsulated request (RFC 9458 section 4.3):
//! ```text
//! key_id (1) || kem_id (2) || kdf_id (2) || aead_id (2) || enc (32) || ciphertext
//! ```
//! sealed with HPKE info `"message/bhttp request" || 0x00 || those first 7 bytes`, so a
//! header altered in transit (another key id, another suite) does not open. The plaintext is
//! whatever the client sealed: a BHTTP message from standard clients, a JSON body from
//! OpenGradient's ([`crate::bhttp::InnerFormat`] tells which).

use crate::config::{Aead, KEM_X25519_SHA256, NPK};
use crate::hpke_ops::{self, Exported};
use crate::keys::KeyRing;
use crate::response::{self, ChunkedResponseEncoder};
use crate::OhttpError;
use rand_core::{OsRng, TryRngCore};

/// Length of the request header.
pub const REQUEST_HEADER_LEN: usize = 7;
const INFO_REQUEST: &[u8] = b"message/bhttp request";

/// The request header fields, as read from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub key_id: u8,
    pub kem_id: u16,
    pub kdf_id: u16,
    pub aead_id: u16,
}

impl RequestHeader {
    pub(crate) fn encode(&self) -> [u8; REQUEST_HEADER_LEN] {
        let mut h = [0u8; REQUEST_HEADER_LEN];
        h[0] = self.key_id;
        h[1..3].copy_from_slice(&self.kem_id.to_be_bytes());
        h[3..5].copy_from_slice(&self.kdf_id.to_be_bytes());
        h[5..7].copy_from_slice(&self.aead_id.to_be_bytes());
        h
    }

    /// Reads the header at the start of a request without opening it (a relay may log the
    /// key id; it learns nothing else).
    pub fn parse(request: &[u8]) -> Result<RequestHeader, OhttpError> {
        let h = request
            .get(..REQUEST_HEADER_LEN)
            .ok_or(OhttpError::Truncated {
                part: "request header",
                needed: REQUEST_HEADER_LEN,
                got: request.len(),
            })?;
        Ok(RequestHeader {
            key_id: h[0],
            kem_id: u16::from_be_bytes([h[1], h[2]]),
            kdf_id: u16::from_be_bytes([h[3], h[4]]),
            aead_id: u16::from_be_bytes([h[5], h[6]]),
        })
    }

    pub(crate) fn info(&self) -> Vec<u8> {
        let mut info = Vec::with_capacity(INFO_REQUEST.len() + 1 + REQUEST_HEADER_LEN);
        info.extend_from_slice(INFO_REQUEST);
        info.push(0);
        info.extend_from_slice(&self.encode());
        info
    }
}

/// What the gateway keeps from a request to seal its response. One response per request:
/// each way of answering consumes it.
pub struct ResponseContext {
    header: RequestHeader,
    aead: Aead,
    enc: Vec<u8>,
    secrets: Exported,
}

impl std::fmt::Debug for ResponseContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseContext")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// Opens an encapsulated request with the ring's key of the id it names.
///
/// Refusals, in the order checked: [`OhttpError::Truncated`] (a header under 7 bytes),
/// [`OhttpError::UnknownKeyId`], [`OhttpError::UnsupportedSuite`] (a KEM, KDF or AEAD this
/// key is not offered with), [`OhttpError::Truncated`] again (`enc`, or a ciphertext shorter
/// than a tag), [`OhttpError::RequestDecrypt`]. The two key problems are answered with RFC
/// 9458's `ohttp-key` problem ([`OhttpError::is_key_problem`]). Never panics, whatever the
/// bytes.
///
/// OHTTP itself does not stop a replayed request: the same bytes open again (with a fresh
/// response). A gateway refuses replays with a [`crate::ReplayGuard`] after this succeeds.
pub fn decapsulate(
    ring: &KeyRing,
    request: &[u8],
) -> Result<(Vec<u8>, ResponseContext), OhttpError> {
    let header = RequestHeader::parse(request)?;
    let pair = ring
        .get(header.key_id)
        .ok_or(OhttpError::UnknownKeyId(header.key_id))?;
    let unsupported = OhttpError::UnsupportedSuite {
        key_id: header.key_id,
        kem: header.kem_id,
        kdf: header.kdf_id,
        aead: header.aead_id,
    };
    if header.kem_id != KEM_X25519_SHA256 {
        return Err(unsupported);
    }
    let aead = pair
        .config()
        .suites
        .iter()
        .find(|s| s.kdf_id == header.kdf_id && s.aead_id == header.aead_id)
        .and_then(|s| s.implemented())
        .ok_or(unsupported)?;
    let rest = &request[REQUEST_HEADER_LEN..];
    if rest.len() < NPK + aead.tag_len() {
        let (part, needed) = if rest.len() < NPK {
            ("enc", NPK)
        } else {
            ("request ciphertext", aead.tag_len())
        };
        return Err(OhttpError::Truncated {
            part,
            needed,
            got: if rest.len() < NPK {
                rest.len()
            } else {
                rest.len() - NPK
            },
        });
    }
    let (enc, ct) = rest.split_at(NPK);
    let (plaintext, secrets) = hpke_ops::open(aead, pair.secret(), enc, &header.info(), ct)?;
    Ok((
        plaintext,
        ResponseContext {
            header,
            aead,
            enc: enc.to_vec(),
            secrets,
        },
    ))
}

fn random_nonce(len: usize) -> Result<Vec<u8>, OhttpError> {
    let mut nonce = vec![0u8; len];
    OsRng
        .try_fill_bytes(&mut nonce)
        .map_err(|_| OhttpError::Seal("OS randomness unavailable"))?;
    Ok(nonce)
}

impl ResponseContext {
    /// The request's header: which key id and suite it used.
    pub fn header(&self) -> RequestHeader {
        self.header
    }

    /// The request's `enc` (the client's ephemeral public key): unique per request, so a
    /// gateway that refuses replays keys on it.
    pub fn enc(&self) -> &[u8] {
        &self.enc
    }

    /// Seals a single-shot response (`message/ohttp-res`) with a fresh response nonce.
    pub fn encapsulate(self, body: &[u8]) -> Result<Vec<u8>, OhttpError> {
        let nonce = random_nonce(self.aead.response_nonce_len())?;
        self.encapsulate_with_nonce(body, &nonce)
    }

    /// [`encapsulate`](Self::encapsulate) with a given response nonce of max(Nn, Nk) bytes,
    /// for test vectors. The keys stay unique to this request whatever the nonce.
    pub fn encapsulate_with_nonce(self, body: &[u8], nonce: &[u8]) -> Result<Vec<u8>, OhttpError> {
        self.check_nonce(nonce)?;
        response::seal_single(self.aead, &self.secrets.response, &self.enc, nonce, body)
    }

    /// Starts a chunked response (`message/ohttp-chunked-res`) with a fresh response nonce.
    pub fn chunked(self) -> Result<ChunkedResponseEncoder, OhttpError> {
        let nonce = random_nonce(self.aead.response_nonce_len())?;
        self.chunked_with_nonce(nonce)
    }

    /// [`chunked`](Self::chunked) with a given response nonce, for tests.
    pub fn chunked_with_nonce(self, nonce: Vec<u8>) -> Result<ChunkedResponseEncoder, OhttpError> {
        self.check_nonce(&nonce)?;
        Ok(ChunkedResponseEncoder::new(
            self.aead,
            &self.secrets.chunked,
            &self.enc,
            nonce,
        ))
    }

    fn check_nonce(&self, nonce: &[u8]) -> Result<(), OhttpError> {
        if nonce.len() == self.aead.response_nonce_len() {
            Ok(())
        } else {
            Err(OhttpError::InvalidKey(format!(
                "response nonce of {} bytes; {} needed",
                nonce.len(),
                self.aead.response_nonce_len()
            )))
        }
    }
}
