//! A GGUF file's header read without its weights: the metadata the node names and templates
//! a model by, and the checks that refuse a bad file with its reason before llama.cpp sees it
//! (not a GGUF, an unknown tensor type, tensors that run past the end of a truncated file).
//!
//! Pure apart from the reader it is handed. Layout (GGUF v2/v3, little-endian): magic `GGUF`,
//! version u32, tensor count u64, metadata count u64, the metadata (key string, value type
//! u32, value), the tensor infos (name, dimension count u32, dimensions u64 each, type u32,
//! offset u64), then the tensor data at the next multiple of `general.alignment` (32 unless
//! set).

use std::collections::BTreeMap;
use std::io::Read;

/// A metadata value. Arrays keep strings and numbers; other element types are counted only.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Strings(Vec<String>),
    /// An array of numbers or nested arrays, by length: their values are not needed.
    Array(u64),
}

/// The header of a GGUF file.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensor_count: u64,
    /// Bytes from the start of the file that the tensors need: the data section's start plus
    /// the end of its furthest tensor.
    pub needs_bytes: u64,
}

/// Why a file is not a GGUF that can be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file (it starts with {0:?}, not \"GGUF\")")]
    NotGguf(String),
    #[error("GGUF version {0} is not supported (2 or 3)")]
    Version(u32),
    #[error("truncated: the file ends inside its header ({0})")]
    HeaderCut(String),
    #[error("{field}: {reason}")]
    Malformed { field: String, reason: String },
    #[error("tensor {tensor}: unknown tensor type (quantization) {kind}")]
    UnknownType { tensor: String, kind: u32 },
    #[error("truncated: the tensors need {needs} bytes, the file has {has}")]
    Truncated { needs: u64, has: u64 },
}

/// Bound on one string or array length, so a corrupt length cannot ask for gigabytes.
const MAX_LEN: u64 = 1 << 28;

/// Elements per block and bytes per block of each ggml tensor type llama.cpp reads.
fn type_layout(kind: u32) -> Option<(u64, u64)> {
    Some(match kind {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        16 => (256, 66),  // IQ2_XXS
        17 => (256, 74),  // IQ2_XS
        18 => (256, 98),  // IQ3_XXS
        19 => (256, 50),  // IQ1_S
        20 => (32, 18),   // IQ4_NL
        21 => (256, 110), // IQ3_S
        22 => (256, 82),  // IQ2_S
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        29 => (256, 56),  // IQ1_M
        30 => (1, 2),     // BF16
        34 => (256, 54),  // TQ1_0
        35 => (256, 66),  // TQ2_0
        39 => (32, 17),   // MXFP4
        _ => return None,
    })
}

struct Cursor<R> {
    inner: R,
    at: u64,
}

impl<R: Read> Cursor<R> {
    fn bytes(&mut self, n: usize, what: &str) -> Result<Vec<u8>, GgufError> {
        let mut buf = vec![0u8; n];
        self.inner
            .read_exact(&mut buf)
            .map_err(|_| GgufError::HeaderCut(format!("at byte {}, reading {what}", self.at)))?;
        self.at += n as u64;
        Ok(buf)
    }
    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        let b = self.bytes(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn len(&mut self, what: &str) -> Result<u64, GgufError> {
        let n = self.u64(what)?;
        if n > MAX_LEN {
            return Err(GgufError::Malformed {
                field: what.into(),
                reason: format!("length {n} is implausible"),
            });
        }
        Ok(n)
    }
    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let n = self.len(what)?;
        let b = self.bytes(n as usize, what)?;
        String::from_utf8(b).map_err(|_| GgufError::Malformed {
            field: what.into(),
            reason: "not UTF-8".into(),
        })
    }
    /// One value of type `kind`; arrays of strings are kept, other arrays counted.
    fn value(&mut self, kind: u32, key: &str, depth: u32) -> Result<MetaValue, GgufError> {
        let scalar = |b: Vec<u8>| -> [u8; 8] {
            let mut out = [0u8; 8];
            out[..b.len()].copy_from_slice(&b);
            out
        };
        Ok(match kind {
            0 => MetaValue::Int(self.bytes(1, key)?[0] as i8 as i64),
            1 => MetaValue::Int(self.bytes(1, key)?[0] as i64),
            2 => MetaValue::Int(i16::from_le_bytes(self.bytes(2, key)?.try_into().unwrap()) as i64),
            3 => MetaValue::Int(u16::from_le_bytes(self.bytes(2, key)?.try_into().unwrap()) as i64),
            4 => MetaValue::Int(i32::from_le_bytes(self.bytes(4, key)?.try_into().unwrap()) as i64),
            5 => MetaValue::Int(self.u32(key)? as i64),
            6 => {
                MetaValue::Float(f32::from_le_bytes(self.bytes(4, key)?.try_into().unwrap()) as f64)
            }
            7 => MetaValue::Bool(self.bytes(1, key)?[0] != 0),
            8 => MetaValue::Str(self.string(key)?),
            9 => {
                if depth > 2 {
                    return Err(GgufError::Malformed {
                        field: key.into(),
                        reason: "arrays nested too deep".into(),
                    });
                }
                let elem = self.u32(key)?;
                let n = self.len(key)?;
                if elem == 8 {
                    let mut items = Vec::with_capacity(n.min(1 << 20) as usize);
                    for _ in 0..n {
                        items.push(self.string(key)?);
                    }
                    MetaValue::Strings(items)
                } else {
                    match scalar_size(elem) {
                        Some(size) => {
                            self.skip(n * size, key)?;
                        }
                        None => {
                            for _ in 0..n {
                                self.value(elem, key, depth + 1)?;
                            }
                        }
                    }
                    MetaValue::Array(n)
                }
            }
            10 => MetaValue::Int(u64::from_le_bytes(scalar(self.bytes(8, key)?)) as i64),
            11 => MetaValue::Int(i64::from_le_bytes(scalar(self.bytes(8, key)?))),
            12 => MetaValue::Float(f64::from_le_bytes(scalar(self.bytes(8, key)?))),
            other => {
                return Err(GgufError::Malformed {
                    field: key.into(),
                    reason: format!("unknown value type {other}"),
                })
            }
        })
    }
    fn skip(&mut self, n: u64, what: &str) -> Result<(), GgufError> {
        let copied = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())
            .map_err(|e| GgufError::HeaderCut(format!("{what}: {e}")))?;
        if copied < n {
            return Err(GgufError::HeaderCut(format!(
                "at byte {}, reading {what}",
                self.at + copied
            )));
        }
        self.at += n;
        Ok(())
    }
}

/// Bytes of one scalar of value type `kind`, `None` for strings and arrays.
fn scalar_size(kind: u32) -> Option<u64> {
    match kind {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// Reads the header from `reader` (the start of the file).
pub fn read_header(reader: impl Read) -> Result<GgufHeader, GgufError> {
    let mut c = Cursor {
        inner: reader,
        at: 0,
    };
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match c.inner.read(&mut magic[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    if &magic[..got] != b"GGUF" {
        return Err(GgufError::NotGguf(
            String::from_utf8_lossy(&magic[..got]).into_owned(),
        ));
    }
    c.at = 4;
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::Version(version));
    }
    let tensor_count = c.len("tensor count")?;
    let kv_count = c.len("metadata count")?;
    let mut metadata = BTreeMap::new();
    for _ in 0..kv_count {
        let key = c.string("metadata key")?;
        let kind = c.u32(&key)?;
        let value = c.value(kind, &key, 0)?;
        metadata.insert(key, value);
    }
    let mut data_end = 0u64;
    for _ in 0..tensor_count {
        let name = c.string("tensor name")?;
        let dims = c.u32(&name)?;
        if dims > 8 {
            return Err(GgufError::Malformed {
                field: format!("tensor {name}"),
                reason: format!("{dims} dimensions"),
            });
        }
        let mut elements = 1u64;
        for _ in 0..dims {
            elements = elements.saturating_mul(c.u64(&name)?);
        }
        let kind = c.u32(&name)?;
        let offset = c.u64(&name)?;
        let (block, size) = type_layout(kind).ok_or(GgufError::UnknownType {
            tensor: name.clone(),
            kind,
        })?;
        let bytes = elements.div_ceil(block).saturating_mul(size);
        data_end = data_end.max(offset.saturating_add(bytes));
    }
    let alignment = match metadata.get("general.alignment") {
        Some(MetaValue::Int(a)) if *a > 0 => *a as u64,
        _ => 32,
    };
    let data_start = c.at.div_ceil(alignment) * alignment;
    Ok(GgufHeader {
        version,
        metadata,
        tensor_count,
        needs_bytes: data_start.saturating_add(data_end),
    })
}

impl GgufHeader {
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.metadata.get(key) {
            Some(MetaValue::Str(s)) => Some(s),
            _ => None,
        }
    }
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.metadata.get(key) {
            Some(MetaValue::Int(i)) => Some(*i),
            _ => None,
        }
    }
    pub fn architecture(&self) -> Option<&str> {
        self.str("general.architecture")
    }
    /// The training context length (`<arch>.context_length`).
    pub fn context_length(&self) -> Option<u64> {
        let arch = self.architecture()?;
        self.int(&format!("{arch}.context_length"))
            .and_then(|n| u64::try_from(n).ok())
    }
    /// Refuses a file shorter than its tensors need.
    pub fn check_size(&self, file_size: u64) -> Result<(), GgufError> {
        if self.needs_bytes > file_size {
            return Err(GgufError::Truncated {
                needs: self.needs_bytes,
                has: file_size,
            });
        }
        Ok(())
    }
}

/// A tiny Llama-architecture model, written here rather than shipped: 2 layers, 64 wide, a
/// SentencePiece vocabulary of the 256 byte pieces, a few words and the control pieces, F32
/// weights drawn from a fixed seed. It says nothing sensible; it exercises a second
/// architecture, its tokenizer and its chat template end to end.
pub mod fixture {
    /// Metadata value types used here.
    enum Meta<'a> {
        U32(u32),
        F32(f32),
        Str(&'a str),
        Strs(Vec<String>),
        F32s(Vec<f32>),
        I32s(Vec<i32>),
    }

    const EMBED: u64 = 64;
    const HEADS: u32 = 4;
    const FF: u64 = 128;
    const LAYERS: u32 = 2;

    /// The GGUF bytes. `architecture` is written as given (a test passes an unknown one).
    pub fn tiny_llama(name: &str, architecture: &str, chat_template: Option<&str>) -> Vec<u8> {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![2, 3, 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
        }
        for w in [
            "▁", "▁the", "▁a", "e", "t", "▁is", "▁of", "s", "▁and", "o", "n", "▁hello",
        ] {
            tokens.push(w.into());
            types.push(1);
        }
        for c in ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>"] {
            tokens.push(c.into());
            types.push(3);
        }
        let vocab = tokens.len() as u64;
        let scores: Vec<f32> = (0..vocab).map(|i| -(i as f32)).collect();
        let arch = architecture;
        let key = |k: &str| format!("{arch}.{k}");
        let mut meta: Vec<(String, Meta)> = vec![
            ("general.architecture".into(), Meta::Str(arch)),
            ("general.name".into(), Meta::Str(name)),
            (key("context_length"), Meta::U32(1536)),
            (key("embedding_length"), Meta::U32(EMBED as u32)),
            (key("block_count"), Meta::U32(LAYERS)),
            (key("feed_forward_length"), Meta::U32(FF as u32)),
            (key("attention.head_count"), Meta::U32(HEADS)),
            (key("attention.head_count_kv"), Meta::U32(HEADS)),
            (key("attention.layer_norm_rms_epsilon"), Meta::F32(1e-5)),
            (
                key("rope.dimension_count"),
                Meta::U32((EMBED as u32) / HEADS),
            ),
            ("tokenizer.ggml.model".into(), Meta::Str("llama")),
            ("tokenizer.ggml.tokens".into(), Meta::Strs(tokens)),
            ("tokenizer.ggml.scores".into(), Meta::F32s(scores)),
            ("tokenizer.ggml.token_type".into(), Meta::I32s(types)),
            ("tokenizer.ggml.bos_token_id".into(), Meta::U32(1)),
            ("tokenizer.ggml.eos_token_id".into(), Meta::U32(2)),
            ("tokenizer.ggml.unknown_token_id".into(), Meta::U32(0)),
        ];
        if let Some(t) = chat_template {
            meta.push(("tokenizer.chat_template".into(), Meta::Str(t)));
        }
        let mut tensors: Vec<(String, Vec<u64>)> = vec![
            ("token_embd.weight".into(), vec![EMBED, vocab]),
            ("output_norm.weight".into(), vec![EMBED]),
            ("output.weight".into(), vec![EMBED, vocab]),
        ];
        for l in 0..LAYERS {
            let t = |n: &str| format!("blk.{l}.{n}.weight");
            tensors.extend([
                (t("attn_norm"), vec![EMBED]),
                (t("attn_q"), vec![EMBED, EMBED]),
                (t("attn_k"), vec![EMBED, EMBED]),
                (t("attn_v"), vec![EMBED, EMBED]),
                (t("attn_output"), vec![EMBED, EMBED]),
                (t("ffn_norm"), vec![EMBED]),
                (t("ffn_gate"), vec![EMBED, FF]),
                (t("ffn_up"), vec![EMBED, FF]),
                (t("ffn_down"), vec![FF, EMBED]),
            ]);
        }
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        fn string(b: &mut Vec<u8>, s: &str) {
            b.extend_from_slice(&(s.len() as u64).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        }
        for (k, v) in &meta {
            string(&mut b, k);
            match v {
                Meta::U32(x) => {
                    b.extend_from_slice(&4u32.to_le_bytes());
                    b.extend_from_slice(&x.to_le_bytes());
                }
                Meta::F32(x) => {
                    b.extend_from_slice(&6u32.to_le_bytes());
                    b.extend_from_slice(&x.to_le_bytes());
                }
                Meta::Str(s) => {
                    b.extend_from_slice(&8u32.to_le_bytes());
                    string(&mut b, s);
                }
                Meta::Strs(items) => {
                    b.extend_from_slice(&9u32.to_le_bytes());
                    b.extend_from_slice(&8u32.to_le_bytes());
                    b.extend_from_slice(&(items.len() as u64).to_le_bytes());
                    for s in items {
                        string(&mut b, s);
                    }
                }
                Meta::F32s(items) => {
                    b.extend_from_slice(&9u32.to_le_bytes());
                    b.extend_from_slice(&6u32.to_le_bytes());
                    b.extend_from_slice(&(items.len() as u64).to_le_bytes());
                    items
                        .iter()
                        .for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
                }
                Meta::I32s(items) => {
                    b.extend_from_slice(&9u32.to_le_bytes());
                    b.extend_from_slice(&5u32.to_le_bytes());
                    b.extend_from_slice(&(items.len() as u64).to_le_bytes());
                    items
                        .iter()
                        .for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
                }
            }
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims) in &tensors {
            string(&mut b, name);
            b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            dims.iter()
                .for_each(|d| b.extend_from_slice(&d.to_le_bytes()));
            b.extend_from_slice(&0u32.to_le_bytes()); // F32
            b.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + dims.iter().product::<u64>() * 4).div_ceil(32) * 32;
        }
        while b.len() % 32 != 0 {
            b.push(0);
        }
        let start = b.len();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for ((name, dims), at) in tensors.iter().zip(offsets) {
            b.resize(start + at as usize, 0);
            let norm = name.contains("norm");
            for _ in 0..dims.iter().product::<u64>() {
                // xorshift: small weights around zero; norms at one.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let w = if norm {
                    1.0
                } else {
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
                };
                b.extend_from_slice(&w.to_le_bytes());
            }
        }
        b.resize(start + offset as usize, 0);
        b
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes a GGUF with the given string metadata and one F32 tensor of `elements`.
    pub(crate) fn tiny_gguf(meta: &[(&str, &str)], tensor_type: u32, elements: u64) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        let s = |b: &mut Vec<u8>, t: &str| {
            b.extend_from_slice(&(t.len() as u64).to_le_bytes());
            b.extend_from_slice(t.as_bytes());
        };
        for (k, v) in meta {
            s(&mut b, k);
            b.extend_from_slice(&8u32.to_le_bytes());
            s(&mut b, v);
        }
        s(&mut b, "w");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&elements.to_le_bytes());
        b.extend_from_slice(&tensor_type.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        b.extend(std::iter::repeat_n(0u8, (elements * 4) as usize));
        b
    }

    #[test]
    fn metadata_and_the_bytes_the_tensors_need_are_read() {
        let f = tiny_gguf(
            &[("general.architecture", "llama"), ("general.name", "Tiny")],
            0,
            16,
        );
        let h = read_header(&f[..]).unwrap();
        assert_eq!(h.architecture(), Some("llama"));
        assert_eq!(h.str("general.name"), Some("Tiny"));
        assert_eq!(h.needs_bytes, f.len() as u64);
        h.check_size(f.len() as u64).unwrap();
    }

    #[test]
    fn a_truncated_file_is_refused_with_what_it_lacks() {
        let f = tiny_gguf(&[("general.architecture", "llama")], 0, 16);
        let h = read_header(&f[..f.len() - 8]).unwrap();
        assert_eq!(
            h.check_size(f.len() as u64 - 8),
            Err(GgufError::Truncated {
                needs: f.len() as u64,
                has: f.len() as u64 - 8
            })
        );
        // Cut inside the header: the reader says where.
        assert!(matches!(
            read_header(&f[..40]),
            Err(GgufError::HeaderCut(_))
        ));
    }

    #[test]
    fn the_tiny_llama_fixture_reads_back_whole() {
        let f = fixture::tiny_llama("Tiny Llama", "llama", Some("{{ messages }}"));
        let h = read_header(&f[..]).unwrap();
        assert_eq!(h.architecture(), Some("llama"));
        assert_eq!(h.context_length(), Some(1536));
        assert_eq!(h.tensor_count, 3 + 2 * 9);
        assert_eq!(h.needs_bytes, f.len() as u64);
        assert!(
            matches!(h.metadata.get("tokenizer.ggml.tokens"), Some(MetaValue::Strings(t)) if t.len() == 3 + 256 + 12 + 4)
        );
    }

    #[test]
    fn not_a_gguf_and_unknown_tensor_types_are_refused() {
        assert_eq!(
            read_header(&b"PK\x03\x04rest"[..]).unwrap_err(),
            GgufError::NotGguf("PK\u{3}\u{4}".into())
        );
        let f = tiny_gguf(&[], 77, 16);
        assert_eq!(
            read_header(&f[..]).unwrap_err(),
            GgufError::UnknownType {
                tensor: "w".into(),
                kind: 77
            }
        );
    }
}
