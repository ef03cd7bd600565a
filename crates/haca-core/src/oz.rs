//! OpenZeppelin `StandardMerkleTree` for leaves encoded as `["bytes32","bytes32"]`, so that a
//! settlement round can be checked with OpenZeppelin's JavaScript library or `MerkleProof.sol`.
//!
//! Leaf hash = keccak256(keccak256(abi.encode(a, b))); `abi.encode` of two `bytes32` is their
//! 64-byte concatenation. Interior nodes hash the sorted pair. Leaves are sorted by hash and laid
//! out in OpenZeppelin's array form (leaf `i` of the sorted list at `len - 1 - i`), which fixes
//! the root for a given set of leaves.

use crate::hash::{keccak256, Digest};
use serde::{Deserialize, Serialize};

/// The leaf encoding every haca round uses: (run id, receipt digest).
pub const LEAF_ENCODING: [&str; 2] = ["bytes32", "bytes32"];

pub fn leaf_hash(a: &Digest, b: &Digest) -> Digest {
    let mut enc = [0u8; 64];
    enc[..32].copy_from_slice(a.as_bytes());
    enc[32..].copy_from_slice(b.as_bytes());
    keccak256(keccak256(&enc).as_bytes())
}

fn hash_pair(a: &Digest, b: &Digest) -> Digest {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(lo.as_bytes());
    buf[32..].copy_from_slice(hi.as_bytes());
    keccak256(&buf)
}

/// A built tree over (run id, receipt digest) pairs.
pub struct StandardTree {
    /// OpenZeppelin's array layout: root at 0, children of `i` at `2i+1`, `2i+2`.
    nodes: Vec<Digest>,
    /// For each input value, in input order: its position in `nodes`.
    positions: Vec<usize>,
}

impl StandardTree {
    /// Builds the tree; `None` for no values (OpenZeppelin refuses an empty tree too).
    pub fn build(values: &[(Digest, Digest)]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let mut hashed: Vec<(Digest, usize)> = values
            .iter()
            .enumerate()
            .map(|(i, (a, b))| (leaf_hash(a, b), i))
            .collect();
        hashed.sort();
        let len = 2 * hashed.len() - 1;
        let mut nodes = vec![Digest::default(); len];
        let mut positions = vec![0; values.len()];
        for (i, (h, value_index)) in hashed.iter().enumerate() {
            nodes[len - 1 - i] = *h;
            positions[*value_index] = len - 1 - i;
        }
        for i in (0..len - hashed.len()).rev() {
            nodes[i] = hash_pair(&nodes[2 * i + 1], &nodes[2 * i + 2]);
        }
        Some(StandardTree { nodes, positions })
    }

    pub fn root(&self) -> Digest {
        self.nodes[0]
    }

    /// OpenZeppelin's `StandardMerkleTree.dump()` of this tree over `values` (the values it
    /// was built from, in input order): `{format: "standard-v1", leafEncoding, tree,
    /// values: [{value, treeIndex}]}`, which `StandardMerkleTree.load` reads back.
    pub fn dump(&self, values: &[(Digest, Digest)]) -> serde_json::Value {
        serde_json::json!({
            "format": "standard-v1",
            "leafEncoding": ["bytes32", "bytes32"],
            "tree": self.nodes.iter().map(hex0x).collect::<Vec<_>>(),
            "values": values.iter().zip(&self.positions).map(|((a, b), p)| serde_json::json!({
                "value": [hex0x(a), hex0x(b)],
                "treeIndex": p,
            })).collect::<Vec<_>>(),
        })
    }

    /// The proof for the value at `value_index` of the input.
    pub fn proof(&self, value_index: usize) -> Vec<Digest> {
        let mut i = self.positions[value_index];
        let mut out = Vec::new();
        while i > 0 {
            let sibling = if i % 2 == 1 { i + 1 } else { i - 1 };
            out.push(self.nodes[sibling]);
            i = (i - 1) / 2;
        }
        out
    }
}

/// What `StandardMerkleTree.verify` needs, as OpenZeppelin's JavaScript writes it
/// (`0x`-prefixed hex).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "camelCase")]
pub struct OzProof {
    pub root: String,
    pub leaf_encoding: Vec<String>,
    pub leaf: Vec<String>,
    pub proof: Vec<String>,
}

fn hex0x(d: &Digest) -> String {
    format!("0x{}", d.to_hex())
}

impl OzProof {
    pub fn new(root: &Digest, leaf: (&Digest, &Digest), proof: &[Digest]) -> Self {
        OzProof {
            root: hex0x(root),
            leaf_encoding: LEAF_ENCODING.iter().map(|s| s.to_string()).collect(),
            leaf: vec![hex0x(leaf.0), hex0x(leaf.1)],
            proof: proof.iter().map(hex0x).collect(),
        }
    }

    /// OpenZeppelin's `StandardMerkleTree.verify(root, leafEncoding, leaf, proof)`.
    pub fn verify(&self) -> Result<(), String> {
        if self.leaf_encoding != LEAF_ENCODING {
            return Err(format!(
                "leafEncoding is {:?}; haca rounds use {:?}",
                self.leaf_encoding, LEAF_ENCODING
            ));
        }
        let parse = |field: &str, s: &str| -> Result<Digest, String> {
            s.parse().map_err(|e| format!("{field}: {s}: {e}"))
        };
        if self.leaf.len() != 2 {
            return Err(format!(
                "leaf has {} values, the encoding needs 2",
                self.leaf.len()
            ));
        }
        let a = parse("leaf[0]", &self.leaf[0])?;
        let b = parse("leaf[1]", &self.leaf[1])?;
        let root = parse("root", &self.root)?;
        let mut h = leaf_hash(&a, &b);
        for (i, p) in self.proof.iter().enumerate() {
            h = hash_pair(&h, &parse(&format!("proof[{i}]"), p)?);
        }
        if h != root {
            return Err(format!(
                "the proof leads to 0x{h}, not to the root {}",
                self.root
            ));
        }
        Ok(())
    }

    /// The leaf as (run id, receipt digest).
    pub fn values(&self) -> Result<(Digest, Digest), String> {
        match self.leaf.as_slice() {
            [a, b] => Ok((
                a.parse().map_err(|e| format!("leaf[0]: {e}"))?,
                b.parse().map_err(|e| format!("leaf[1]: {e}"))?,
            )),
            _ => Err(format!(
                "leaf has {} values, the encoding needs 2",
                self.leaf.len()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: u8) -> Vec<(Digest, Digest)> {
        (0..n)
            .map(|i| (Digest([i; 32]), Digest([i.wrapping_mul(7); 32])))
            .collect()
    }

    #[test]
    fn every_leaf_verifies_and_a_changed_leaf_does_not() {
        for n in 1..=17u8 {
            let v = values(n);
            let t = StandardTree::build(&v).unwrap();
            for (i, (a, b)) in v.iter().enumerate() {
                let p = OzProof::new(&t.root(), (a, b), &t.proof(i));
                p.verify().unwrap();
                let mut bad = p.clone();
                bad.leaf[1] = format!("0x{}", Digest([0xee; 32]));
                assert!(bad.verify().is_err());
            }
        }
    }

    #[test]
    fn single_leaf_root_is_its_leaf_hash() {
        let v = values(1);
        let t = StandardTree::build(&v).unwrap();
        assert_eq!(t.root(), leaf_hash(&v[0].0, &v[0].1));
        assert!(t.proof(0).is_empty());
        assert!(StandardTree::build(&[]).is_none());
    }
}
