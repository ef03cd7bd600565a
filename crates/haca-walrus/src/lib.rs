//! Walrus blob ids, computed exactly as Walrus computes them, for any bytes.
//!
//! A Walrus blob id commits to the whole RedStuff (RS2) encoding of a blob over the storage
//! committee's `n` shards, so it depends on `n` as well as on the bytes:
//!
//! 1. With `f = (n - 1) / 3` faulty shards tolerated, the blob is laid out row by row in a
//!    message matrix of `n - 2f` rows (the primary source symbols) by `n - f` columns (the
//!    secondary source symbols), each cell one symbol. The symbol size is the blob length over
//!    the number of cells, rounded up to a multiple of 2 (at least 2 bytes; at most 65,534),
//!    and the tail of the matrix is zero padding.
//! 2. Each row is extended to `n` symbols by Reed-Solomon over GF(2^16) (the secondary
//!    encoding, `reed-solomon-simd`'s systematic code), then each of the `n` columns to `n`
//!    symbols (the primary encoding): an `n x n` matrix of symbols.
//! 3. Every symbol is hashed as a Merkle leaf (Blake2b-256 over `0x00 || symbol`). Primary sliver
//!    `i`'s hash is the Merkle root over row `i`; secondary sliver `i`'s is the root over column
//!    `n - 1 - i`. Inner nodes are Blake2b-256 over `0x01 || left || right`, and a level with an
//!    odd number of nodes gets an all-zero sibling for its last node.
//! 4. The metadata root is the Merkle root over the `n` sliver pairs, leaf `i` being
//!    `primary_hash_i || secondary_hash_i`.
//! 5. The blob id is Blake2b-256 over the encoding type (RS2 is 1), the unencoded length
//!    (u64 little-endian) and the metadata root: the BCS encoding of the three.
//!
//! The golden tests compare with Mysten's own encoder (`@mysten/walrus-wasm`, which is
//! walrus-core compiled to WebAssembly); tools/walrus_golden.mjs generates them.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use hash::{hash_chunks, hash_one, Hash};
use reed_solomon_simd::ReedSolomonEncoder;

mod hash;

/// Walrus mainnet's number of shards.
pub const MAINNET_SHARDS: u16 = 1000;

/// The fewest shards RS2 encodes with: below 4 the BFT bound tolerates no faulty shard, so an
/// axis would have no recovery symbols (Walrus's own encoder fails there too).
pub const MIN_SHARDS: u16 = 4;

/// The most shards this crate encodes with. Walrus's bound is the Reed-Solomon engine's
/// (about 43,000 shards); this one is haca's: the `n x n` symbol hashes are held in memory,
/// 512 MiB at 4,096 shards.
pub const MAX_SHARDS: u16 = 4096;

/// RS2's largest symbol: symbols are 2-byte aligned and their size must fit a u16.
pub const MAX_SYMBOL_SIZE: u16 = u16::MAX - 1;

/// The encoding type byte that the blob id hashes: RedStuff over Reed-Solomon.
pub const ENCODING_TYPE_RS2: u8 = 1;

const DIGEST_LEN: usize = 32;
type Blake2b256 = Blake2b<U32>;

const LEAF_PREFIX: u8 = 0;
const INNER_PREFIX: u8 = 1;
/// The Merkle tree's padding node (Walrus's `Node::Empty`).
const EMPTY_NODE: Hash = [0; DIGEST_LEN];

/// Why a blob id could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalrusError {
    #[error("{n_shards} shards are too few: RS2 needs at least {MIN_SHARDS}")]
    TooFewShards { n_shards: u16 },
    #[error("{n_shards} shards are too many: at most {MAX_SHARDS} here")]
    TooManyShards { n_shards: u16 },
    #[error("a blob of {len} bytes is too large for {n_shards} shards: at most {max} bytes")]
    BlobTooLarge { len: u64, n_shards: u16, max: u64 },
}

/// A Walrus blob id: 32 bytes, shown as URL-safe base64 without padding (43 characters).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobId(pub [u8; 32]);

impl BlobId {
    /// The blob id of a blob with this metadata root, encoding type RS2.
    pub fn from_metadata_root(root: &[u8; 32], unencoded_length: u64) -> BlobId {
        let mut h = Blake2b256::new();
        h.update([ENCODING_TYPE_RS2]);
        h.update(unencoded_length.to_le_bytes());
        h.update(root);
        BlobId(h.finalize().into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({self})")
    }
}

/// Why a string is not a blob id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobIdParseError {
    #[error("a blob id is URL-safe base64 without padding: {0}")]
    Base64(String),
    #[error("a blob id is 32 bytes, this one is {0}")]
    Length(usize),
}

impl FromStr for BlobId {
    type Err = BlobIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|e| BlobIdParseError::Base64(e.to_string()))?;
        let id: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| BlobIdParseError::Length(bytes.len()))?;
        Ok(BlobId(id))
    }
}

/// A blob's Walrus metadata, less the per-sliver hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMetadata {
    pub blob_id: BlobId,
    /// The Merkle root over the sliver pairs' hashes.
    pub root: [u8; 32],
    pub unencoded_length: u64,
    pub n_shards: u16,
    pub symbol_size: u16,
}

/// The RS2 shape for a number of shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub n_shards: u16,
    /// Rows of the message matrix: the primary encoding's source symbols, `n - 2f`.
    pub primary_symbols: u16,
    /// Columns of the message matrix: the secondary encoding's source symbols, `n - f`.
    pub secondary_symbols: u16,
}

impl Encoding {
    pub fn new(n_shards: u16) -> Result<Encoding, WalrusError> {
        if n_shards < MIN_SHARDS {
            return Err(WalrusError::TooFewShards { n_shards });
        }
        if n_shards > MAX_SHARDS {
            return Err(WalrusError::TooManyShards { n_shards });
        }
        let f = (n_shards - 1) / 3;
        Ok(Encoding {
            n_shards,
            primary_symbols: n_shards - 2 * f,
            secondary_symbols: n_shards - f,
        })
    }

    /// The symbols in the message matrix.
    pub fn source_symbols(&self) -> u64 {
        u64::from(self.primary_symbols) * u64::from(self.secondary_symbols)
    }

    /// The largest blob these shards encode.
    pub fn max_blob_size(&self) -> u64 {
        self.source_symbols() * u64::from(MAX_SYMBOL_SIZE)
    }

    /// The symbol size for a blob of `len` bytes (the empty blob gets the smallest).
    pub fn symbol_size(&self, len: u64) -> Result<u16, WalrusError> {
        let size = len
            .max(1)
            .div_ceil(self.source_symbols())
            .next_multiple_of(2);
        u16::try_from(size).map_err(|_| WalrusError::BlobTooLarge {
            len,
            n_shards: self.n_shards,
            max: self.max_blob_size(),
        })
    }
}

/// The Walrus blob id of `bytes` stored over `n_shards` shards ([`MAINNET_SHARDS`] on mainnet).
pub fn blob_id(bytes: &[u8], n_shards: u16) -> Result<BlobId, WalrusError> {
    Ok(metadata(bytes, n_shards)?.blob_id)
}

/// The blob id of `bytes` at Walrus mainnet's (and testnet's) shard count, as Walrus writes it
/// (URL-safe base64, no padding): the id haca names artifacts and tree dumps by.
pub fn mainnet_blob_id(bytes: &[u8]) -> Result<String, WalrusError> {
    blob_id(bytes, MAINNET_SHARDS).map(|id| id.to_string())
}

/// The blob id with the metadata root and the encoding's symbol size.
pub fn metadata(bytes: &[u8], n_shards: u16) -> Result<BlobMetadata, WalrusError> {
    let enc = Encoding::new(n_shards)?;
    let len = bytes.len() as u64;
    let symbol_size = enc.symbol_size(len)?;
    let ss = usize::from(symbol_size);
    let n = usize::from(n_shards);
    let p = usize::from(enc.primary_symbols);
    let s = usize::from(enc.secondary_symbols);
    let rs =
        |e: reed_solomon_simd::Error| -> ! { unreachable!("RS2 parameters were checked: {e}") };

    // 1. The secondary encoding: each of the p rows (s symbols) gets n - s recovery symbols,
    //    the columns s..n of the row. They are kept column by column, as the primary encoding
    //    reads them.
    let row_len = s * ss;
    let mut recovery_columns = vec![0u8; (n - s) * p * ss];
    let mut row_buf = vec![0u8; row_len];
    let mut encoder = ReedSolomonEncoder::new(s, n - s, ss).unwrap_or_else(|e| rs(e));
    for r in 0..p {
        let start = (r * row_len).min(bytes.len());
        let end = (start + row_len).min(bytes.len());
        let row = if end - start == row_len {
            &bytes[start..end]
        } else {
            row_buf[..end - start].copy_from_slice(&bytes[start..end]);
            row_buf[end - start..].fill(0);
            &row_buf[..]
        };
        for symbol in row.chunks_exact(ss) {
            encoder.add_original_shard(symbol).unwrap_or_else(|e| rs(e));
        }
        let result = encoder.encode().unwrap_or_else(|e| rs(e));
        for (k, symbol) in result.recovery_iter().enumerate() {
            let at = (k * p + r) * ss;
            recovery_columns[at..at + ss].copy_from_slice(symbol);
        }
    }
    drop(encoder);

    // 2. The primary encoding: each of the n columns (p symbols) gets n - p recovery symbols.
    //    Every symbol of the n x n matrix is hashed; a column's hashes give a secondary sliver's
    //    hash at once, the rows' hashes wait for all columns.
    let mut row_hashes = vec![EMPTY_NODE; n * n]; // row-major
    let mut column_hashes = vec![EMPTY_NODE; n];
    let mut secondary_hashes = vec![EMPTY_NODE; n];
    let mut column_buf = vec![0u8; p * ss];
    let mut recovery_buf = vec![0u8; (n - p) * ss];
    let mut scratch = Vec::with_capacity(n / 2);
    let mut encoder = ReedSolomonEncoder::new(p, n - p, ss).unwrap_or_else(|e| rs(e));
    for c in 0..n {
        let column: &[u8] = if c < s {
            for r in 0..p {
                let start = (ss * (s * r + c)).min(bytes.len());
                let end = (start + ss).min(bytes.len());
                let dest = &mut column_buf[r * ss..(r + 1) * ss];
                dest[..end - start].copy_from_slice(&bytes[start..end]);
                dest[end - start..].fill(0);
            }
            &column_buf
        } else {
            &recovery_columns[(c - s) * p * ss..(c - s + 1) * p * ss]
        };
        for symbol in column.chunks_exact(ss) {
            encoder.add_original_shard(symbol).unwrap_or_else(|e| rs(e));
        }
        let result = encoder.encode().unwrap_or_else(|e| rs(e));
        for (dest, symbol) in recovery_buf
            .chunks_exact_mut(ss)
            .zip(result.recovery_iter())
        {
            dest.copy_from_slice(symbol);
        }
        drop(result);
        hash_chunks(LEAF_PREFIX, column, ss, &mut column_hashes[..p]);
        hash_chunks(LEAF_PREFIX, &recovery_buf, ss, &mut column_hashes[p..]);
        for (r, h) in column_hashes.iter().enumerate() {
            row_hashes[r * n + c] = *h;
        }
        secondary_hashes[n - 1 - c] = merkle_root_in_place(&mut column_hashes, &mut scratch);
    }
    drop(encoder);

    // 3. Sliver pair i: the primary hash over row i, the secondary over column n - 1 - i.
    let mut pairs = vec![[0u8; 2 * DIGEST_LEN]; n];
    for (i, row) in row_hashes.chunks_exact_mut(n).enumerate() {
        pairs[i][..DIGEST_LEN].copy_from_slice(&merkle_root_in_place(row, &mut scratch));
        pairs[i][DIGEST_LEN..].copy_from_slice(&secondary_hashes[i]);
    }
    let mut pair_leaves = vec![EMPTY_NODE; n];
    hash_chunks(
        LEAF_PREFIX,
        pairs.as_flattened(),
        2 * DIGEST_LEN,
        &mut pair_leaves,
    );
    let root = merkle_root_in_place(&mut pair_leaves, &mut scratch);

    Ok(BlobMetadata {
        blob_id: BlobId::from_metadata_root(&root, len),
        root,
        unencoded_length: len,
        n_shards,
        symbol_size,
    })
}

#[cfg(test)]
fn leaf_hash(data: &[u8]) -> Hash {
    hash_one(LEAF_PREFIX, data)
}

fn inner_hash(left: &Hash, right: &Hash) -> Hash {
    let mut both = [0u8; 2 * DIGEST_LEN];
    both[..DIGEST_LEN].copy_from_slice(left);
    both[DIGEST_LEN..].copy_from_slice(right);
    hash_one(INNER_PREFIX, &both)
}

/// The Merkle root over leaf hashes (Walrus's `MerkleTree::build_from_leaf_hashes(..).root()`),
/// using the slice as the working space. A level's nodes are hashed pairwise, many at once.
fn merkle_root_in_place(level: &mut [Hash], scratch: &mut Vec<Hash>) -> Hash {
    if level.is_empty() {
        return EMPTY_NODE;
    }
    let mut len = level.len();
    while len > 1 {
        let pairs = len / 2;
        // An odd level's last node pairs with the empty node.
        let odd = (len % 2 == 1).then(|| inner_hash(&level[len - 1], &EMPTY_NODE));
        scratch.resize(pairs, EMPTY_NODE);
        hash_chunks(
            INNER_PREFIX,
            level[..2 * pairs].as_flattened(),
            2 * DIGEST_LEN,
            scratch,
        );
        level[..pairs].copy_from_slice(scratch);
        if let Some(h) = odd {
            level[pairs] = h;
        }
        len = len.div_ceil(2);
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_symbols_follow_the_bft_bound() {
        // Walrus's own table (encoding/config.rs).
        for (n, primary, secondary) in [
            (4, 2, 3),
            (7, 3, 5),
            (9, 5, 7),
            (10, 4, 7),
            (31, 11, 21),
            (100, 34, 67),
            (1000, 334, 667),
        ] {
            let e = Encoding::new(n).unwrap();
            assert_eq!(
                (e.primary_symbols, e.secondary_symbols),
                (primary, secondary),
                "n = {n}"
            );
        }
    }

    #[test]
    fn symbol_sizes_are_even_and_at_least_two() {
        let e = Encoding::new(10).unwrap(); // 4 x 7 = 28 symbols
        assert_eq!(e.symbol_size(0).unwrap(), 2);
        assert_eq!(e.symbol_size(1).unwrap(), 2);
        assert_eq!(e.symbol_size(56).unwrap(), 2);
        assert_eq!(e.symbol_size(57).unwrap(), 4);
        assert_eq!(e.symbol_size(28 * 65534).unwrap(), 65534);
        assert!(e.symbol_size(28 * 65534 + 1).is_err());
    }

    #[test]
    fn merkle_root_pads_odd_levels_with_zeros() {
        let leaves: Vec<Hash> = (0u8..3).map(|i| leaf_hash(&[i])).collect();
        let expected = inner_hash(
            &inner_hash(&leaves[0], &leaves[1]),
            &inner_hash(&leaves[2], &EMPTY_NODE),
        );
        let mut scratch = Vec::new();
        assert_eq!(
            merkle_root_in_place(&mut leaves.clone(), &mut scratch),
            expected
        );
        assert_eq!(
            merkle_root_in_place(&mut leaves[..1].to_vec(), &mut scratch),
            leaves[0]
        );
        // 19 leaves: levels of 19, 10, 5, 3, 2 nodes, as Walrus builds them one by one.
        let leaves: Vec<Hash> = (0u8..19).map(|i| leaf_hash(&[i])).collect();
        let mut level = leaves.clone();
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|p| inner_hash(&p[0], p.get(1).unwrap_or(&EMPTY_NODE)))
                .collect();
        }
        assert_eq!(
            merkle_root_in_place(&mut leaves.clone(), &mut scratch),
            level[0]
        );
    }
}
