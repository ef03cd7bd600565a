//! Image generation: the OpenAI-shaped request (`POST /v1/images/generations`), the check an
//! image provider's answer must pass (PNG, JPEG or WebP by its magic bytes, with a header
//! that decodes to a width and a height, under a size limit), and what a run's output hash
//! covers: each image's SHA-256, size and media type, in the order served.
//!
//! Pure: no I/O (the gateway calls the providers). `haca verify --image FILE` rebuilds [`output_json`] from the files and
//! compares its hash with the receipt's, so the receipt proves which bytes came back.

use crate::llm::Privacy;
use crate::ExecError;
use haca_core::hash::sha256;
use haca_core::Digest;
use serde_json::{json, Value};

/// The HTTP response an image provider's answer arrives in (the gateway reads it).
pub type HttpResponse = reqwest::Response;

/// The most images one request may ask for.
pub const MAX_IMAGES: u32 = 4;
/// The default largest image accepted from a provider, in bytes.
pub const DEFAULT_MAX_IMAGE_BYTES: usize = 16 << 20;
/// The largest width or height a size may name.
pub const MAX_SIDE: u32 = 4096;

/// How the client wants its images: a URL on this node, or the bytes in base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Url,
    B64Json,
}

/// A checked `POST /v1/images/generations` body.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub model: String,
    pub prompt: String,
    pub n: u32,
    /// `WIDTHxHEIGHT`, or `auto`.
    pub size: String,
    pub response_format: ImageFormat,
    pub privacy: Privacy,
    /// The body as the client sent it: what the request hash covers.
    pub raw: Value,
}

use crate::llm::chat::{bad, boolean, non_empty_string, object, opt, privacy};

impl ImageRequest {
    pub fn parse(body: Value) -> Result<ImageRequest, ExecError> {
        let o = object(&body)?;
        let get = |k: &str| opt(o, k);
        let model = non_empty_string(o, "model")?;
        let prompt = non_empty_string(o, "prompt")?;
        if prompt.len() > 32_000 {
            return Err(bad("prompt", "is over 32000 bytes"));
        }
        let n = match get("n") {
            None => 1,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=MAX_IMAGES as u64).contains(&n) => n as u32,
                _ => {
                    return Err(bad(
                        "n",
                        format!("must be a whole number from 1 to {MAX_IMAGES}"),
                    ))
                }
            },
        };
        let size = match get("size") {
            None => "auto".to_owned(),
            Some(Value::String(s)) if s == "auto" || parse_size(s).is_some() => s.clone(),
            Some(_) => {
                return Err(bad(
                    "size",
                    format!("must be \"auto\" or WIDTHxHEIGHT, each side 1 to {MAX_SIDE} (such as \"1024x1024\")"),
                ))
            }
        };
        let response_format = match get("response_format").map(|v| v.as_str()) {
            None | Some(Some("url")) => ImageFormat::Url,
            Some(Some("b64_json")) => ImageFormat::B64Json,
            Some(_) => return Err(bad("response_format", "must be \"url\" or \"b64_json\"")),
        };
        let privacy = privacy(o)?;
        if boolean(o, "stream")? {
            return Err(bad(
                "stream",
                "image generation answers whole; stream is not served",
            ));
        }
        Ok(ImageRequest {
            model,
            prompt,
            n,
            size,
            response_format,
            privacy,
            raw: body,
        })
    }

    /// The body an upstream provider gets: the client's fields without haca's, the model as
    /// the provider knows it, and the images asked for as base64 (haca hashes the bytes).
    pub fn upstream_body(&self, upstream_model: &str) -> Value {
        let mut body = self.raw.clone();
        if let Some(o) = body.as_object_mut() {
            o.remove("privacy");
            o.insert("model".into(), upstream_model.into());
            o.insert("response_format".into(), "b64_json".into());
            o.insert("n".into(), self.n.into());
        }
        body
    }

    /// The request hash (of the body as sent, canonical JSON) and the input hash (of the
    /// prompt).
    pub fn hashes(&self) -> Result<(Digest, Digest), ExecError> {
        let h = |v: &Value| {
            haca_core::canonical::to_vec(v)
                .map(|b| sha256(&b))
                .map_err(|e| bad("body", e.to_string()))
        };
        Ok((h(&self.raw)?, h(&Value::String(self.prompt.clone()))?))
    }
}

/// `WIDTHxHEIGHT` with each side from 1 to [`MAX_SIDE`].
pub fn parse_size(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once('x')?;
    let (w, h): (u32, u32) = (w.parse().ok()?, h.parse().ok()?);
    ((1..=MAX_SIDE).contains(&w) && (1..=MAX_SIDE).contains(&h)).then_some((w, h))
}

/// An image's media type, by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Png,
    Jpeg,
    Webp,
}

impl ImageKind {
    pub fn media_type(self) -> &'static str {
        match self {
            ImageKind::Png => "image/png",
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Webp => "image/webp",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ImageKind::Png => "png",
            ImageKind::Jpeg => "jpg",
            ImageKind::Webp => "webp",
        }
    }
}

/// What the receipt covers of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub kind: ImageKind,
    pub width: u32,
    pub height: u32,
    pub size: u64,
    pub sha256: Digest,
}

/// Why bytes are not an image this node accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("is not a PNG, JPEG or WebP image (its first bytes are {0})")]
    NotAnImage(String),
    #[error("is a {kind} whose header does not decode: {reason}")]
    BadHeader { kind: &'static str, reason: String },
}

/// Checks that `bytes` are a PNG, JPEG or WebP image whose header decodes, at most `limit`
/// bytes long, and returns what the receipt covers of it.
pub fn check_image(bytes: &[u8], limit: usize) -> Result<ImageFacts, ImageError> {
    if bytes.len() > limit {
        return Err(ImageError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    let (kind, (width, height)) = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        (ImageKind::Png, png_size(bytes).map_err(bad_header("PNG"))?)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        (
            ImageKind::Jpeg,
            jpeg_size(bytes).map_err(bad_header("JPEG"))?,
        )
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        (
            ImageKind::Webp,
            webp_size(bytes).map_err(bad_header("WebP"))?,
        )
    } else {
        let head: String = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        return Err(ImageError::NotAnImage(if head.is_empty() {
            "absent: it is empty".into()
        } else {
            head
        }));
    };
    if width == 0 || height == 0 {
        return Err(ImageError::BadHeader {
            kind: kind.media_type(),
            reason: format!("its size is {width}x{height}"),
        });
    }
    Ok(ImageFacts {
        kind,
        width,
        height,
        size: bytes.len() as u64,
        sha256: sha256(bytes),
    })
}

fn bad_header(kind: &'static str) -> impl Fn(String) -> ImageError {
    move |reason| ImageError::BadHeader { kind, reason }
}

fn be32(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| "it ends inside its header".to_owned())
}

/// PNG: the IHDR chunk first, 13 bytes long, its CRC-32 right.
fn png_size(b: &[u8]) -> Result<(u32, u32), String> {
    if b.get(12..16) != Some(b"IHDR") || be32(b, 8)? != 13 {
        return Err("its first chunk is not a 13-byte IHDR".into());
    }
    let crc = be32(b, 29)?;
    if crc32(&b[12..29]) != crc {
        return Err("its IHDR's CRC-32 does not match".into());
    }
    let (depth, color) = (b[24], b[25]);
    let ok = match color {
        0 => [1, 2, 4, 8, 16].contains(&depth),
        3 => [1, 2, 4, 8].contains(&depth),
        2 | 4 | 6 => [8, 16].contains(&depth),
        _ => false,
    };
    if !ok {
        return Err(format!(
            "bit depth {depth} with colour type {color} is not PNG"
        ));
    }
    Ok((be32(b, 16)?, be32(b, 20)?))
}

/// JPEG: the segments after SOI up to the first SOFn frame header.
fn jpeg_size(b: &[u8]) -> Result<(u32, u32), String> {
    let mut i = 2;
    loop {
        while b.get(i) == Some(&0xFF) && b.get(i + 1) == Some(&0xFF) {
            i += 1; // fill bytes
        }
        let (Some(&0xFF), Some(&marker)) = (b.get(i), b.get(i + 1)) else {
            return Err("no frame header (SOF) before its data ends".into());
        };
        let len = b
            .get(i + 2..i + 4)
            .map(|s| u16::from_be_bytes([s[0], s[1]]) as usize)
            .ok_or("it ends inside a segment header")?;
        if len < 2 {
            return Err(format!("segment {marker:#04x} has length {len}"));
        }
        let sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if sof {
            let s = b
                .get(i + 4..i + 9)
                .ok_or("it ends inside its frame header")?;
            let h = u16::from_be_bytes([s[1], s[2]]) as u32;
            let w = u16::from_be_bytes([s[3], s[4]]) as u32;
            return Ok((w, h));
        }
        if marker == 0xDA || marker == 0xD9 {
            return Err("its scan starts before any frame header".into());
        }
        i += 2 + len;
    }
}

/// WebP: the first chunk, VP8 (lossy), VP8L (lossless) or VP8X (extended).
fn webp_size(b: &[u8]) -> Result<(u32, u32), String> {
    let chunk = b.get(12..16).ok_or("it ends before its first chunk")?;
    let d = |r: std::ops::Range<usize>| b.get(r).ok_or("it ends inside its first chunk");
    match chunk {
        b"VP8 " => {
            let s = d(20..30)?;
            if s[3..6] != [0x9d, 0x01, 0x2a] {
                return Err("its VP8 frame has no start code".into());
            }
            let w = u16::from_le_bytes([s[6], s[7]]) & 0x3fff;
            let h = u16::from_le_bytes([s[8], s[9]]) & 0x3fff;
            Ok((w as u32, h as u32))
        }
        b"VP8L" => {
            let s = d(20..25)?;
            if s[0] != 0x2f {
                return Err("its VP8L signature byte is not 0x2f".into());
            }
            let bits = u32::from_le_bytes([s[1], s[2], s[3], s[4]]);
            Ok(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
        }
        b"VP8X" => {
            let s = d(24..30)?;
            let w = u32::from_le_bytes([s[0], s[1], s[2], 0]) + 1;
            let h = u32::from_le_bytes([s[3], s[4], s[5], 0]) + 1;
            Ok((w, h))
        }
        other => Err(format!(
            "its first chunk {:?} is not VP8, VP8L or VP8X",
            String::from_utf8_lossy(other)
        )),
    }
}

/// CRC-32 (ISO-HDLC, as PNG uses it).
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &byte in data {
        c ^= byte as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// What an image run outputs, as its output hash covers it: each image's media type, size
/// and SHA-256, in the order served. Everything in it comes from the bytes alone.
pub fn output_json(images: &[ImageFacts]) -> Value {
    json!({
        "images": images.iter().map(|f| json!({
            "media_type": f.kind.media_type(),
            "size": f.size,
            "sha256": f.sha256.to_hex(),
        })).collect::<Vec<_>>(),
    })
}

/// The output hash of an image run that served `images`.
pub fn output_hash(images: &[ImageFacts]) -> Digest {
    sha256(&haca_core::canonical::to_vec(&output_json(images)).expect("plain JSON canonicalizes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(w.to_be_bytes());
        ihdr.extend(h.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        b.extend(13u32.to_be_bytes());
        b.extend(&ihdr);
        b.extend(crc32(&ihdr).to_be_bytes());
        b
    }

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn png_jpeg_and_webp_headers_decode() {
        let f = check_image(&png(3, 2), 1 << 20).unwrap();
        assert_eq!((f.kind, f.width, f.height), (ImageKind::Png, 3, 2));
        // SOI, an APP0 segment, SOF0 with height 5 and width 7.
        let jpeg = [
            0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, 0xC0, 0, 11, 8, 0, 5, 0, 7, 1, 1, 0x11, 0,
        ];
        let f = check_image(&jpeg, 1 << 20).unwrap();
        assert_eq!((f.kind, f.width, f.height), (ImageKind::Jpeg, 7, 5));
        let mut webp = b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0\x2f".to_vec();
        webp.extend(((9u32 - 1) | ((4 - 1) << 14)).to_le_bytes());
        let f = check_image(&webp, 1 << 20).unwrap();
        assert_eq!((f.kind, f.width, f.height), (ImageKind::Webp, 9, 4));
    }

    #[test]
    fn text_a_broken_header_and_oversized_bytes_are_refused() {
        assert!(matches!(
            check_image(b"{\"error\": \"no\"}", 1 << 20),
            Err(ImageError::NotAnImage(_))
        ));
        let mut p = png(3, 2);
        p[20] ^= 1; // the CRC no longer matches
        assert!(matches!(
            check_image(&p, 1 << 20),
            Err(ImageError::BadHeader { .. })
        ));
        assert!(matches!(
            check_image(&png(3, 2)[..20], 1 << 20),
            Err(ImageError::BadHeader { .. })
        ));
        assert!(matches!(
            check_image(&png(3, 2), 10),
            Err(ImageError::TooLarge { .. })
        ));
    }

    #[test]
    fn the_output_hash_changes_with_any_image_byte() {
        let a = check_image(&png(3, 2), 1 << 20).unwrap();
        let b = check_image(&png(3, 3), 1 << 20).unwrap();
        assert_ne!(
            output_hash(std::slice::from_ref(&a)),
            output_hash(std::slice::from_ref(&b))
        );
        assert_ne!(output_hash(&[a.clone(), b.clone()]), output_hash(&[b, a]));
    }

    #[test]
    fn requests_name_the_field_at_fault() {
        let ok = ImageRequest::parse(json!({"model": "p/m", "prompt": "a cat"})).unwrap();
        assert_eq!((ok.n, ok.response_format), (1, ImageFormat::Url));
        for (body, field) in [
            (json!({"prompt": "x"}), "model"),
            (json!({"model": "p/m"}), "prompt"),
            (json!({"model": "p/m", "prompt": "x", "n": 9}), "n"),
            (
                json!({"model": "p/m", "prompt": "x", "size": "big"}),
                "size",
            ),
            (
                json!({"model": "p/m", "prompt": "x", "response_format": "png"}),
                "response_format",
            ),
            (
                json!({"model": "p/m", "prompt": "x", "privacy": "secret"}),
                "privacy",
            ),
        ] {
            match ImageRequest::parse(body) {
                Err(ExecError::Input { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
