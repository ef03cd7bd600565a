//! Blob ids against Mysten's own encoder, @mysten/walrus-wasm 0.3.0 (walrus-core as WebAssembly):
//! the values in golden/values.rs come from tools/walrus_golden.mjs.

use haca_walrus::{blob_id, metadata, BlobId, WalrusError, MAINNET_SHARDS};

// As tools/walrus_golden.mjs prints them, one case a line.
#[rustfmt::skip]
#[path = "golden/values.rs"]
mod values;

/// The generator's input: byte i is (i*31 + 7) mod 251; every case is a prefix.
fn input(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + 7) % 251) as u8).collect()
}

#[test]
fn blob_ids_match_walrus() {
    let max = values::GOLDEN.iter().map(|c| c.0).max().unwrap();
    let data = input(max);
    let mut shard_counts = std::collections::BTreeSet::new();
    for &(len, n_shards, id, root) in values::GOLDEN {
        let m = metadata(&data[..len], n_shards).unwrap();
        assert_eq!(
            hex::encode(m.root),
            root,
            "metadata root of {len} bytes at {n_shards} shards"
        );
        assert_eq!(
            m.blob_id.to_string(),
            id,
            "blob id of {len} bytes at {n_shards} shards"
        );
        assert_eq!(m.unencoded_length, len as u64);
        shard_counts.insert(n_shards);
    }
    // The cases the issue names are there: mainnet's 1000 shards and 10, empty, one byte and
    // multi-megabyte inputs.
    for n in [MAINNET_SHARDS, 10] {
        assert!(shard_counts.contains(&n));
        for len in [0, 1] {
            assert!(values::GOLDEN.iter().any(|c| c.0 == len && c.1 == n));
        }
        assert!(values::GOLDEN.iter().any(|c| c.0 > 1_000_000 && c.1 == n));
    }
}

#[test]
fn blobs_walrus_refuses_are_refused() {
    for &(len, n_shards) in values::TOO_LARGE {
        let data = input(len);
        assert_eq!(
            blob_id(&data, n_shards),
            Err(WalrusError::BlobTooLarge {
                len: len as u64,
                n_shards,
                max: len as u64 - 1
            })
        );
        // One byte less is the largest blob: it encodes.
        assert!(blob_id(&data[..len - 1], n_shards).is_ok());
    }
}

#[test]
fn shard_counts_out_of_range_are_refused() {
    for n in 0..4 {
        assert_eq!(
            blob_id(b"x", n),
            Err(WalrusError::TooFewShards { n_shards: n })
        );
    }
    assert_eq!(
        blob_id(b"x", haca_walrus::MAX_SHARDS + 1),
        Err(WalrusError::TooManyShards {
            n_shards: haca_walrus::MAX_SHARDS + 1
        })
    );
    let e = blob_id(b"x", 2).unwrap_err().to_string();
    assert!(e.contains("too few"), "{e}");
}

#[test]
fn blob_ids_print_and_parse_back() {
    let id = blob_id(b"hello walrus", 10).unwrap();
    let s = id.to_string();
    assert_eq!(s.len(), 43);
    assert!(
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{s}"
    );
    assert_eq!(s.parse::<BlobId>().unwrap(), id);
    for &(_, _, golden, _) in values::GOLDEN {
        assert_eq!(golden.parse::<BlobId>().unwrap().to_string(), golden);
    }
    // Padding, the standard alphabet and the wrong length are refused.
    assert!(format!("{s}=").parse::<BlobId>().is_err());
    assert!("3GPQL3HZNnFhN/F7l5Aa+X1VOtAKwIsg9zuWk8R81v4"
        .parse::<BlobId>()
        .is_err());
    assert!(s[..42].parse::<BlobId>().is_err());
    assert!("AAAA".parse::<BlobId>().is_err());
}
