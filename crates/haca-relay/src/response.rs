//! Encapsulated responses, both forms.
//!
//! Keys (RFC 9458 section 4.4): `prk = HKDF-Extract(salt = enc || response_nonce,
//! ikm = secret)`, `key = Expand(prk, "key", Nk)`, `nonce = Expand(prk, "nonce", Nn)`, where
//! `secret` is exported from the request's HPKE context and `response_nonce` is max(Nn, Nk)
//! random bytes.
//!
//! Single-shot (`message/ohttp-res`): `response_nonce || Seal(key, nonce, aad = "", body)`.
//!
//! Chunked (`message/ohttp-chunked-res`, draft-ietf-ohai-chunked-ohttp-08 as OpenGradient's
//! client reads it; its secret comes from the label "message/bhttp chunked response"):
//! ```text
//! response_nonce || (varint(len) || Seal(key, nonce ^ i, "", chunk_i))*
//!                || varint(0) || Seal(key, nonce ^ n, "final", last)
//! ```
//! where `i` counts chunks from 0 as a 12-byte big-endian integer and `varint` is QUIC's
//! (RFC 9000 section 16). The final chunk runs to the end of the body; without it a reader
//! reports [`OhttpError::MissingFinalChunk`], so a cut stream is never taken as complete.

use crate::config::Aead;
use crate::OhttpError;
use aes_gcm::Aes128Gcm;
use chacha20poly1305::aead::{Aead as _, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

const AAD_FINAL: &[u8] = b"final";

enum Cipher {
    Aes(Box<Aes128Gcm>),
    ChaCha(Box<ChaCha20Poly1305>),
}

/// The AEAD key and base nonce of one response.
pub(crate) struct ResponseKeys {
    cipher: Cipher,
    nonce: [u8; 12],
}

impl ResponseKeys {
    pub(crate) fn derive(
        aead: Aead,
        secret: &[u8],
        enc: &[u8],
        response_nonce: &[u8],
    ) -> ResponseKeys {
        let mut salt = Vec::with_capacity(enc.len() + response_nonce.len());
        salt.extend_from_slice(enc);
        salt.extend_from_slice(response_nonce);
        let hk = Hkdf::<Sha256>::new(Some(&salt), secret);
        let mut key = Zeroizing::new(vec![0u8; aead.key_len()]);
        let mut nonce = [0u8; 12];
        // 16 or 32 and 12 bytes: far below HKDF-SHA256's 8160-byte limit.
        let _ = hk.expand(b"key", &mut key);
        let _ = hk.expand(b"nonce", &mut nonce);
        // The key lengths match each AEAD by construction (Aead::key_len).
        let cipher = match aead {
            Aead::Aes128Gcm => Cipher::Aes(Box::new(Aes128Gcm::new(key.as_slice().into()))),
            Aead::ChaCha20Poly1305 => {
                Cipher::ChaCha(Box::new(ChaCha20Poly1305::new(key.as_slice().into())))
            }
        };
        ResponseKeys { cipher, nonce }
    }

    fn nonce_for(&self, counter: u64) -> [u8; 12] {
        let mut n = self.nonce;
        for (i, b) in counter.to_be_bytes().iter().enumerate() {
            n[4 + i] ^= b;
        }
        n
    }

    pub(crate) fn seal(&self, counter: u64, aad: &[u8], msg: &[u8]) -> Result<Vec<u8>, OhttpError> {
        let nonce = self.nonce_for(counter);
        let payload = Payload { msg, aad };
        match &self.cipher {
            Cipher::Aes(c) => c.encrypt((&nonce).into(), payload),
            Cipher::ChaCha(c) => c.encrypt((&nonce).into(), payload),
        }
        .map_err(|_| OhttpError::Seal("response"))
    }

    pub(crate) fn open(&self, counter: u64, aad: &[u8], msg: &[u8]) -> Result<Vec<u8>, OhttpError> {
        let nonce = self.nonce_for(counter);
        let payload = Payload { msg, aad };
        match &self.cipher {
            Cipher::Aes(c) => c.decrypt((&nonce).into(), payload),
            Cipher::ChaCha(c) => c.decrypt((&nonce).into(), payload),
        }
        .map_err(|_| OhttpError::ResponseDecrypt)
    }
}

/// QUIC variable-length integer (RFC 9000 section 16); values up to 2^62 - 1.
pub(crate) fn write_varint(v: u64, out: &mut Vec<u8>) {
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&((v & ((1 << 62) - 1)) | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

/// Reads a varint at the start of `buf`: `(value, bytes used)`, or `None` when `buf` ends
/// first.
pub(crate) fn read_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for b in &bytes[1..] {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

/// Opens a single-shot response given the request's exported secret and `enc`.
pub(crate) fn open_single(
    aead: Aead,
    secret: &[u8],
    enc: &[u8],
    response: &[u8],
) -> Result<Vec<u8>, OhttpError> {
    let n = aead.response_nonce_len();
    if response.len() < n + aead.tag_len() {
        return Err(OhttpError::Truncated {
            part: "response",
            needed: n + aead.tag_len(),
            got: response.len(),
        });
    }
    let (nonce, ct) = response.split_at(n);
    ResponseKeys::derive(aead, secret, enc, nonce).open(0, b"", ct)
}

/// Seals a single-shot response.
pub(crate) fn seal_single(
    aead: Aead,
    secret: &[u8],
    enc: &[u8],
    response_nonce: &[u8],
    body: &[u8],
) -> Result<Vec<u8>, OhttpError> {
    let keys = ResponseKeys::derive(aead, secret, enc, response_nonce);
    let mut out = response_nonce.to_vec();
    out.extend_from_slice(&keys.seal(0, b"", body)?);
    Ok(out)
}

/// Writes a chunked response as the answer is produced: each [`push`](Self::push) returns
/// the bytes to send now (the response nonce rides on the first), and
/// [`finish`](Self::finish) the final chunk. Obtained from
/// [`ResponseContext::chunked`](crate::ResponseContext::chunked).
pub struct ChunkedResponseEncoder {
    keys: ResponseKeys,
    pending_nonce: Option<Vec<u8>>,
    counter: u64,
}

impl ChunkedResponseEncoder {
    pub(crate) fn new(
        aead: Aead,
        secret: &[u8],
        enc: &[u8],
        response_nonce: Vec<u8>,
    ) -> ChunkedResponseEncoder {
        ChunkedResponseEncoder {
            keys: ResponseKeys::derive(aead, secret, enc, &response_nonce),
            pending_nonce: Some(response_nonce),
            counter: 0,
        }
    }

    /// The response nonce, if not sent yet (to start the body before the first chunk).
    pub fn start(&mut self) -> Vec<u8> {
        self.pending_nonce.take().unwrap_or_default()
    }

    /// Seals one non-final chunk; returns the bytes to send.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, OhttpError> {
        let sealed = self.keys.seal(self.counter, b"", chunk)?;
        self.counter += 1;
        let mut out = self.start();
        write_varint(sealed.len() as u64, &mut out);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Seals the final chunk (it may be empty); returns the last bytes of the body.
    pub fn finish(mut self, last: &[u8]) -> Result<Vec<u8>, OhttpError> {
        let sealed = self.keys.seal(self.counter, AAD_FINAL, last)?;
        let mut out = self.start();
        write_varint(0, &mut out);
        out.extend_from_slice(&sealed);
        Ok(out)
    }
}

/// Reads a chunked response as it arrives: [`push`](Self::push) bytes in any pieces, with
/// `done` on the last; it returns the chunks that became complete, the final one only once
/// the stream has ended. Obtained from
/// [`ClientContext::chunked`](crate::ClientContext::chunked).
pub struct ChunkedResponseDecoder {
    aead: Aead,
    secret: Zeroizing<Vec<u8>>,
    enc: Vec<u8>,
    keys: Option<ResponseKeys>,
    buffer: Vec<u8>,
    counter: u64,
    ended: bool,
}

impl ChunkedResponseDecoder {
    pub(crate) fn new(
        aead: Aead,
        secret: Zeroizing<Vec<u8>>,
        enc: Vec<u8>,
    ) -> ChunkedResponseDecoder {
        ChunkedResponseDecoder {
            aead,
            secret,
            enc,
            keys: None,
            buffer: Vec::new(),
            counter: 0,
            ended: false,
        }
    }

    /// Feeds bytes; `done` says the body has ended. Returns the chunks now complete, in order.
    /// Once `done` has been given, or an error returned, further input is refused.
    pub fn push(&mut self, bytes: &[u8], done: bool) -> Result<Vec<Vec<u8>>, OhttpError> {
        if self.ended {
            return Err(OhttpError::TrailingData);
        }
        let result = self.push_inner(bytes, done);
        if done || result.is_err() {
            self.ended = true;
        }
        result
    }

    fn push_inner(&mut self, bytes: &[u8], done: bool) -> Result<Vec<Vec<u8>>, OhttpError> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        if self.keys.is_none() {
            let n = self.aead.response_nonce_len();
            if self.buffer.len() < n {
                if done {
                    return Err(OhttpError::Truncated {
                        part: "response nonce",
                        needed: n,
                        got: self.buffer.len(),
                    });
                }
                return Ok(out);
            }
            self.keys = Some(ResponseKeys::derive(
                self.aead,
                &self.secret,
                &self.enc,
                &self.buffer[..n],
            ));
            self.buffer.drain(..n);
        }
        let Some(keys) = &self.keys else {
            return Ok(out);
        };
        let mut at = 0;
        loop {
            let Some((len, used)) = read_varint(&self.buffer[at..]) else {
                if done {
                    return Err(if self.buffer.len() > at {
                        OhttpError::Truncated {
                            part: "chunk length",
                            needed: 1usize << (self.buffer[at] >> 6),
                            got: self.buffer.len() - at,
                        }
                    } else {
                        OhttpError::MissingFinalChunk
                    });
                }
                break;
            };
            if len == 0 {
                if !done {
                    break;
                }
                let sealed = &self.buffer[at + used..];
                out.push(keys.open(self.counter, AAD_FINAL, sealed)?);
                self.counter += 1;
                self.buffer.clear();
                return Ok(out);
            }
            let have = self.buffer.len() - at - used;
            let Some(sealed) = usize::try_from(len)
                .ok()
                .and_then(|len| self.buffer.get(at + used..at + used + len))
            else {
                if done {
                    return Err(OhttpError::Truncated {
                        part: "chunk",
                        needed: usize::try_from(len).unwrap_or(usize::MAX),
                        got: have,
                    });
                }
                break;
            };
            out.push(keys.open(self.counter, b"", sealed)?);
            self.counter += 1;
            at += used + sealed.len();
        }
        self.buffer.drain(..at);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_each_width() {
        for v in [
            0u64,
            63,
            64,
            16383,
            16384,
            (1 << 30) - 1,
            1 << 30,
            (1 << 62) - 1,
        ] {
            let mut buf = Vec::new();
            write_varint(v, &mut buf);
            assert_eq!(read_varint(&buf), Some((v, buf.len())), "{v}");
            assert_eq!(read_varint(&buf[..buf.len() - 1]), None, "{v} cut");
        }
        // RFC 9000 section A.1's examples.
        assert_eq!(read_varint(&[0x25]), Some((37, 1)));
        assert_eq!(read_varint(&[0x7b, 0xbd]), Some((15293, 2)));
        assert_eq!(read_varint(&[0x9d, 0x7f, 0x3e, 0x7d]), Some((494878333, 4)));
    }

    #[test]
    fn chunk_nonces_xor_the_counter_into_the_low_bytes() {
        let keys = ResponseKeys::derive(Aead::ChaCha20Poly1305, &[1; 32], &[2; 32], &[3; 32]);
        let base = keys.nonce;
        assert_eq!(keys.nonce_for(0), base);
        let one = keys.nonce_for(0x0102);
        assert_eq!(one[..10], base[..10]);
        assert_eq!(one[10], base[10] ^ 1);
        assert_eq!(one[11], base[11] ^ 2);
    }
}
