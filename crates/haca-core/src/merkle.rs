//! Merkle trees of RFC 6962 / RFC 9162 (the transparency log and settlement rounds): tree
//! heads, inclusion and consistency proofs, and their verification.
//!
//! Leaf hash = SHA-256(0x00 || data); interior node = SHA-256(0x01 || left || right); the tree
//! over `n` leaves splits at the largest power of two below `n`. The empty tree's hash is
//! SHA-256 of nothing.

use crate::hash::{sha256, sha256_parts, Digest};

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not inside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("proof has {got} hashes; a proof for these sizes has {want}")]
    WrongLength { got: usize, want: usize },
    #[error("first size {first} is larger than second size {second}")]
    SizesOutOfOrder { first: u64, second: u64 },
    #[error("the proof leads to root {computed}, not to the expected {expected}")]
    RootMismatch { computed: Digest, expected: Digest },
    #[error("{0}")]
    Shape(String),
    #[error("equal sizes need equal roots and an empty proof")]
    EqualSizes,
}

pub fn leaf_hash(data: &[u8]) -> Digest {
    sha256_parts(&[&[0x00], data])
}

pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    sha256_parts(&[&[0x01], left.as_bytes(), right.as_bytes()])
}

pub fn empty_root() -> Digest {
    sha256(b"")
}

/// Largest power of two strictly below `n` (n >= 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The tree head over these leaf hashes.
pub fn root(leaves: &[Digest]) -> Digest {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The audit path of leaf `index` (RFC 6962 §2.1.1 PATH), leaf-side first.
pub fn inclusion_proof(leaves: &[Digest], index: u64) -> Result<Vec<Digest>, ProofError> {
    let size = leaves.len() as u64;
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut out = Vec::new();
    path(leaves, index as usize, &mut out);
    Ok(out)
}

fn path(leaves: &[Digest], m: usize, out: &mut Vec<Digest>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n as u64) as usize;
    if m < k {
        path(&leaves[..k], m, out);
        out.push(root(&leaves[k..]));
    } else {
        path(&leaves[k..], m - k, out);
        out.push(root(&leaves[..k]));
    }
}

/// Proof that the tree of the first `first` leaves is a prefix of the tree of all `leaves`
/// (RFC 6962 §2.1.2 PROOF).
pub fn consistency_proof(leaves: &[Digest], first: u64) -> Result<Vec<Digest>, ProofError> {
    let second = leaves.len() as u64;
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second });
    }
    let mut out = Vec::new();
    if first > 0 && first < second {
        subproof(first as usize, leaves, true, &mut out);
    }
    Ok(out)
}

fn subproof(m: usize, leaves: &[Digest], complete: bool, out: &mut Vec<Digest>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(root(leaves));
        }
        return;
    }
    let k = split(n as u64) as usize;
    if m <= k {
        subproof(m, &leaves[..k], complete, out);
        out.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, out);
        out.push(root(&leaves[..k]));
    }
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Digest,
    index: u64,
    size: u64,
    proof: &[Digest],
    expected: &Digest,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let want = inclusion_len(index, size);
    if proof.len() != want {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want,
        });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if r != *expected {
        return Err(ProofError::RootMismatch {
            computed: r,
            expected: *expected,
        });
    }
    Ok(())
}

/// Length of the audit path of leaf `index` in a tree of `size` leaves.
fn inclusion_len(index: u64, size: u64) -> usize {
    let (mut n, mut m, mut len) = (size, index, 0);
    while n > 1 {
        let k = split(n);
        if m < k {
            n = k;
        } else {
            m -= k;
            n -= k;
        }
        len += 1;
    }
    len
}

/// Verifies a consistency proof between tree heads (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Digest,
    second_root: &Digest,
    proof: &[Digest],
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second });
    }
    if first == second {
        return if first_root == second_root && proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::EqualSizes)
        };
    }
    if first == 0 {
        // Every tree extends the empty tree; there is nothing to prove.
        return if proof.is_empty() && *first_root == empty_root() {
            Ok(())
        } else {
            Err(ProofError::Shape(
                "a proof from the empty tree is empty and starts at the empty root".into(),
            ))
        };
    }
    // When `first` is a power of two its root is a node of the second tree, and RFC 9162
    // leaves it out of the proof.
    let path: Vec<Digest> = if first.is_power_of_two() {
        std::iter::once(*first_root)
            .chain(proof.iter().copied())
            .collect()
    } else {
        proof.to_vec()
    };
    if path.is_empty() {
        return Err(ProofError::Shape("the proof is empty".into()));
    }
    let (mut fn_, mut sn) = (first - 1, second - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if sn == 0 {
            return Err(ProofError::Shape(
                "the proof has more hashes than the tree sizes allow".into(),
            ));
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::Shape(
            "the proof has fewer hashes than the tree sizes need".into(),
        ));
    }
    if fr != *first_root {
        return Err(ProofError::RootMismatch {
            computed: fr,
            expected: *first_root,
        });
    }
    if sr != *second_root {
        return Err(ProofError::RootMismatch {
            computed: sr,
            expected: *second_root,
        });
    }
    Ok(())
}

/// Every level of the tree over a fixed list of leaves, for many proofs at once: O(n) to
/// build, O(log n) per proof. An odd node at the end of a level moves up unchanged, which
/// gives exactly RFC 6962's tree.
pub struct Levels(Vec<Vec<Digest>>);

impl Levels {
    pub fn build(leaves: Vec<Digest>) -> Self {
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let below = levels.last().expect("checked");
            let up = below
                .chunks(2)
                .map(|p| {
                    if p.len() == 2 {
                        node_hash(&p[0], &p[1])
                    } else {
                        p[0]
                    }
                })
                .collect();
            levels.push(up);
        }
        Levels(levels)
    }

    pub fn size(&self) -> u64 {
        self.0[0].len() as u64
    }

    pub fn root(&self) -> Digest {
        match self.0.last() {
            Some(top) if top.len() == 1 => top[0],
            _ => empty_root(),
        }
    }

    /// The audit path of leaf `index`, as [`inclusion_proof`] gives it.
    pub fn proof(&self, index: u64) -> Result<Vec<Digest>, ProofError> {
        if index >= self.size() {
            return Err(ProofError::IndexOutOfRange {
                index,
                size: self.size(),
            });
        }
        let mut i = index as usize;
        let mut out = Vec::new();
        for level in &self.0[..self.0.len() - 1] {
            let sibling = i ^ 1;
            if sibling < level.len() {
                out.push(level[sibling]);
            }
            i /= 2;
        }
        Ok(out)
    }
}

/// Why a [`LogTree`] cannot answer for a size or index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("size {size} is beyond the tree's {tree_size} leaves")]
    SizeBeyondTree { size: u64, tree_size: u64 },
    #[error("leaf index {index} is not inside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("first size {first} is larger than second size {second}")]
    SizesOutOfOrder { first: u64, second: u64 },
}

/// An append-only RFC 6962 tree that answers for every size it has ever had.
///
/// It keeps the hash of every complete, aligned subtree (level `h` holds the hashes of the
/// subtrees over leaves `[i·2^h, (i+1)·2^h)`): about 2n hashes. Appending is amortized O(1)
/// hashes. Every node of the tree at any past size is either such a subtree or a right spine of
/// at most log n of them, so `root_at` is O(log n) and both proofs are O(log² n); none of them
/// depends on the current size.
#[derive(Clone, Debug, Default)]
pub struct LogTree {
    /// `levels[h].len() == size >> h` always holds.
    levels: Vec<Vec<Digest>>,
}

impl LogTree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_leaves(leaves: impl IntoIterator<Item = Digest>) -> Self {
        let mut t = Self::new();
        t.extend(leaves);
        t
    }

    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends one leaf hash and returns its index.
    pub fn push(&mut self, leaf: Digest) -> u64 {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let index = self.levels[0].len() as u64 - 1;
        let mut h = 0;
        // A level that reaches an even length has completed a subtree one level up.
        while self.levels[h].len() & 1 == 0 {
            let n = self.levels[h].len();
            let up = node_hash(&self.levels[h][n - 2], &self.levels[h][n - 1]);
            if self.levels.len() == h + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[h + 1].push(up);
            h += 1;
        }
        index
    }

    pub fn extend(&mut self, leaves: impl IntoIterator<Item = Digest>) {
        for leaf in leaves {
            self.push(leaf);
        }
    }

    pub fn leaf(&self, index: u64) -> Option<Digest> {
        self.levels
            .first()?
            .get(usize::try_from(index).ok()?)
            .copied()
    }

    /// Forgets every leaf from `size` on (a no-op when the tree is not larger), so that a
    /// writer whose append did not become durable can return to the durable state.
    pub fn truncate(&mut self, size: u64) {
        if size >= self.size() {
            return;
        }
        for (h, level) in self.levels.iter_mut().enumerate() {
            level.truncate((size >> h) as usize);
        }
        while self.levels.last().is_some_and(|l| l.is_empty()) {
            self.levels.pop();
        }
    }

    /// The current tree head.
    pub fn root(&self) -> Digest {
        self.root_at(self.size())
            .expect("the current size is inside the tree")
    }

    /// The tree head the log had at `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Digest, TreeError> {
        self.check_size(size)?;
        Ok(if size == 0 {
            empty_root()
        } else {
            self.subtree(0, size)
        })
    }

    /// The audit path of leaf `index` in the tree of the first `size` leaves, as
    /// [`inclusion_proof`] gives it over those leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Digest>, TreeError> {
        self.check_size(size)?;
        if index >= size {
            return Err(TreeError::IndexOutOfRange { index, size });
        }
        let mut out = Vec::new();
        self.path(0, size, index, &mut out);
        Ok(out)
    }

    /// The proof that the tree at `first` leaves is a prefix of the tree at `second`, as
    /// [`consistency_proof`] gives it.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Digest>, TreeError> {
        self.check_size(second)?;
        if first > second {
            return Err(TreeError::SizesOutOfOrder { first, second });
        }
        let mut out = Vec::new();
        if first > 0 && first < second {
            self.subproof(first, 0, second, true, &mut out);
        }
        Ok(out)
    }

    fn check_size(&self, size: u64) -> Result<(), TreeError> {
        let tree_size = self.size();
        if size > tree_size {
            return Err(TreeError::SizeBeyondTree { size, tree_size });
        }
        Ok(())
    }

    /// Hash of the RFC 6962 node over leaves `[start, start + n)`, n >= 1. Such a node's
    /// `start` is a multiple of the power of two at or above `n`, so its left child is always a
    /// stored complete subtree and only the right spine needs hashing.
    fn subtree(&self, start: u64, n: u64) -> Digest {
        if n.is_power_of_two() {
            let h = n.trailing_zeros() as usize;
            return self.levels[h][(start >> h) as usize];
        }
        let k = split(n);
        node_hash(&self.subtree(start, k), &self.subtree(start + k, n - k))
    }

    fn path(&self, start: u64, n: u64, m: u64, out: &mut Vec<Digest>) {
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(start, k, m, out);
            out.push(self.subtree(start + k, n - k));
        } else {
            self.path(start + k, n - k, m - k, out);
            out.push(self.subtree(start, k));
        }
    }

    fn subproof(&self, m: u64, start: u64, n: u64, complete: bool, out: &mut Vec<Digest>) {
        if m == n {
            if !complete {
                out.push(self.subtree(start, n));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, k, complete, out);
            out.push(self.subtree(start + k, n - k));
        } else {
            self.subproof(m - k, start + k, n - k, false, out);
            out.push(self.subtree(start, k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Certificate Transparency reference inputs (certificate-transparency's merkle tree
    /// tests, reused by transparency-dev/merkle).
    const CT_INPUTS: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    /// Their tree heads for sizes 1..=8.
    const CT_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn d(s: &str) -> Digest {
        s.parse().unwrap()
    }
    fn ds(v: &[&str]) -> Vec<Digest> {
        v.iter().map(|s| d(s)).collect()
    }
    fn ct_leaves() -> Vec<Digest> {
        CT_INPUTS
            .iter()
            .map(|h| leaf_hash(&hex::decode(h).unwrap()))
            .collect()
    }

    #[test]
    fn tree_heads_match_certificate_transparency() {
        let leaves = ct_leaves();
        assert_eq!(
            root(&[]).to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for n in 1..=8 {
            assert_eq!(root(&leaves[..n]).to_hex(), CT_ROOTS[n - 1], "size {n}");
        }
    }

    #[test]
    fn inclusion_proofs_match_certificate_transparency() {
        let leaves = ct_leaves();
        let cases: [(u64, usize, Vec<Digest>); 5] = [
            (0, 1, vec![]),
            (
                0,
                8,
                ds(&[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ]),
            ),
            (
                5,
                8,
                ds(&[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ]),
            ),
            (
                2,
                3,
                ds(&["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
            ),
            (
                1,
                5,
                ds(&[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ]),
            ),
        ];
        for (index, size, want) in cases {
            let got = inclusion_proof(&leaves[..size], index).unwrap();
            assert_eq!(got, want, "leaf {index} of {size}");
            verify_inclusion(
                &leaves[index as usize],
                index,
                size as u64,
                &got,
                &d(CT_ROOTS[size - 1]),
            )
            .unwrap();
        }
    }

    #[test]
    fn consistency_proofs_match_certificate_transparency() {
        let leaves = ct_leaves();
        let cases: [(u64, usize, Vec<Digest>); 3] = [
            (1, 1, vec![]),
            (
                2,
                8,
                ds(&[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ]),
            ),
            (
                6,
                8,
                ds(&[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ]),
            ),
        ];
        for (first, second, want) in cases {
            let got = consistency_proof(&leaves[..second], first).unwrap();
            assert_eq!(got, want, "{first} -> {second}");
            verify_consistency(
                first,
                second as u64,
                &d(CT_ROOTS[first as usize - 1]),
                &d(CT_ROOTS[second - 1]),
                &got,
            )
            .unwrap();
        }
    }

    fn many(n: usize) -> Vec<Digest> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn every_proof_round_trips_and_every_mangling_fails() {
        let leaves = many(40);
        let roots: Vec<Digest> = (0..=40).map(|n| root(&leaves[..n])).collect();
        for n in 1..=40u64 {
            for i in 0..n {
                let p = inclusion_proof(&leaves[..n as usize], i).unwrap();
                let (leaf, r) = (&leaves[i as usize], &roots[n as usize]);
                verify_inclusion(leaf, i, n, &p, r).unwrap();
                assert!(
                    verify_inclusion(&leaves[(i as usize + 1) % 40], i, n, &p, r).is_err()
                        || n == 1
                );
                if !p.is_empty() {
                    let mut flipped = p.clone();
                    flipped[0].0[0] ^= 1;
                    assert!(verify_inclusion(leaf, i, n, &flipped, r).is_err());
                    assert!(verify_inclusion(leaf, i, n, &p[1..], r).is_err());
                }
                let mut longer = p.clone();
                longer.push(Digest([7; 32]));
                assert!(verify_inclusion(leaf, i, n, &longer, r).is_err());
            }
            for m in 0..=n {
                let p = consistency_proof(&leaves[..n as usize], m).unwrap();
                let (r1, r2) = (&roots[m as usize], &roots[n as usize]);
                verify_consistency(m, n, r1, r2, &p).unwrap_or_else(|e| panic!("{m}->{n}: {e}"));
                if m > 0 && m < n {
                    let mut flipped = p.clone();
                    let last = flipped.len() - 1;
                    flipped[last].0[5] ^= 1;
                    assert!(verify_consistency(m, n, r1, r2, &flipped).is_err());
                    assert!(verify_consistency(m, n, r1, r2, &p[..p.len() - 1]).is_err());
                    let mut longer = p.clone();
                    longer.push(Digest([9; 32]));
                    assert!(
                        verify_consistency(m, n, r1, r2, &longer).is_err(),
                        "{m}->{n} longer"
                    );
                    assert!(verify_consistency(m, n, r2, r1, &p).is_err());
                }
            }
        }
    }

    #[test]
    fn levels_give_the_same_roots_and_proofs_as_the_recursive_definition() {
        let leaves = many(70);
        for n in 0..=70 {
            let lv = Levels::build(leaves[..n].to_vec());
            assert_eq!(lv.root(), root(&leaves[..n]), "size {n}");
            for i in 0..n as u64 {
                assert_eq!(
                    lv.proof(i).unwrap(),
                    inclusion_proof(&leaves[..n], i).unwrap()
                );
            }
            assert!(lv.proof(n as u64).is_err());
        }
    }

    #[test]
    fn degenerate_cases_are_refused_with_reasons() {
        let leaves = many(4);
        assert_eq!(
            inclusion_proof(&leaves, 4),
            Err(ProofError::IndexOutOfRange { index: 4, size: 4 })
        );
        assert!(matches!(
            verify_consistency(5, 4, &Digest::default(), &Digest::default(), &[]),
            Err(ProofError::SizesOutOfOrder { .. })
        ));
        let r = root(&leaves);
        assert_eq!(verify_consistency(4, 4, &r, &r, &[]), Ok(()));
        assert_eq!(
            verify_consistency(4, 4, &r, &r, &[r]),
            Err(ProofError::EqualSizes)
        );
        assert_eq!(verify_consistency(0, 4, &empty_root(), &r, &[]), Ok(()));
    }

    /// Every root and proof of a [`LogTree`], at every past size, equals the recursive
    /// definition's over the same prefix.
    fn assert_log_tree_matches(leaves: &[Digest]) {
        let tree = LogTree::from_leaves(leaves.iter().copied());
        let n = leaves.len() as u64;
        assert_eq!(tree.size(), n);
        assert_eq!(tree.root(), root(leaves));
        for second in 0..=n {
            let prefix = &leaves[..second as usize];
            assert_eq!(
                tree.root_at(second).unwrap(),
                root(prefix),
                "root at {second}"
            );
            for i in 0..second {
                assert_eq!(
                    tree.inclusion_proof(i, second).unwrap(),
                    inclusion_proof(prefix, i).unwrap(),
                    "leaf {i} at {second}"
                );
            }
            for first in 0..=second {
                assert_eq!(
                    tree.consistency_proof(first, second).unwrap(),
                    consistency_proof(prefix, first).unwrap(),
                    "{first} -> {second}"
                );
            }
        }
    }

    #[test]
    fn log_tree_matches_the_recursive_definition_at_every_past_size() {
        assert_log_tree_matches(&many(70));
    }

    #[test]
    fn log_tree_refuses_sizes_it_never_had() {
        let tree = LogTree::from_leaves(many(5));
        assert_eq!(
            tree.root_at(6),
            Err(TreeError::SizeBeyondTree {
                size: 6,
                tree_size: 5
            })
        );
        assert_eq!(
            tree.inclusion_proof(3, 3),
            Err(TreeError::IndexOutOfRange { index: 3, size: 3 })
        );
        assert_eq!(
            tree.inclusion_proof(0, 6),
            Err(TreeError::SizeBeyondTree {
                size: 6,
                tree_size: 5
            })
        );
        assert_eq!(
            tree.consistency_proof(4, 3),
            Err(TreeError::SizesOutOfOrder {
                first: 4,
                second: 3
            })
        );
        assert!(tree.consistency_proof(1, 6).is_err());
        assert_eq!(LogTree::new().root(), empty_root());
        assert_eq!(LogTree::new().leaf(0), None);
    }

    proptest::proptest! {
        // Each case checks every proof at every size up to 70, so fewer cases suffice.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        #[test]
        fn log_tree_matches_for_random_leaves(seeds in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..70)) {
            let leaves: Vec<Digest> = seeds.iter().map(|s| leaf_hash(&s.to_le_bytes())).collect();
            assert_log_tree_matches(&leaves);
        }

        #[test]
        fn truncating_returns_to_the_earlier_tree(n in 0usize..70, keep in 0usize..70, more in 0usize..20) {
            let leaves = many(n + more);
            let mut tree = LogTree::from_leaves(leaves[..n].iter().copied());
            tree.truncate(keep as u64);
            let kept = keep.min(n);
            proptest::prop_assert_eq!(tree.size(), kept as u64);
            proptest::prop_assert_eq!(tree.root(), root(&leaves[..kept]));
            tree.extend(leaves[kept..].iter().copied());
            proptest::prop_assert_eq!(tree.root(), root(&leaves));
            proptest::prop_assert_eq!(tree.leaf(kept as u64), leaves.get(kept).copied());
        }
    }
}
