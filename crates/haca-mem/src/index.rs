//! An approximate nearest-neighbour index for MemSync's retrieval: HNSW (Malkov and Yashunin,
//! "Efficient and robust approximate nearest neighbor search using Hierarchical Navigable Small
//! World graphs", 2016) over L2-normalised `f32` vectors, scored by cosine similarity (the dot
//! product of the normalised vectors).
//!
//! Keys are `u32` slot ids that the caller maps to its row ids. [`AnnIndex::insert`] adds one
//! vector at a time (incremental; no rebuild); [`AnnIndex::remove`] takes a key out of every
//! later search at once (its node stays in the graph as a bridge, as hnswlib's tombstones do, so
//! the graph stays connected); [`AnnIndex::search`] returns up to `k` live keys, best first.
//! When tombstones crowd out live results the search falls back to an exact scan, so it never
//! returns fewer than `min(k, len())` keys.
//!
//! Deterministic: node levels come from a SplitMix64 stream seeded by [`HnswParams::seed`], and
//! every comparison breaks ties by node order, so the same inserts and removes give the same
//! graph and the same answers.
//!
//! Chosen by measurement (`cargo bench -p haca-mem --bench index`, BENCHMARKS.md "MemSync
//! retrieval"): at 100,000 rows an exact scan costs milliseconds per query and grows with the
//! rows; HNSW's search stays well under one.
//!
//! Pure: no I/O. The store keeps the vectors; the index is rebuilt from them when a user's rows
//! load (build time at 100,000 rows is in BENCHMARKS.md).

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

/// Why a vector was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IndexError {
    #[error("vector for key {key} has {found} dimensions; this index holds {expected}-dimensional vectors")]
    Dimension {
        key: u32,
        expected: usize,
        found: usize,
    },
    #[error(
        "vector for key {key} has a non-finite component or zero length; it cannot be normalised"
    )]
    NotNormalisable { key: u32 },
    #[error("key {key} is already in the index (remove it first)")]
    DuplicateKey { key: u32 },
    #[error("query has {found} dimensions; this index holds {expected}-dimensional vectors")]
    QueryDimension { expected: usize, found: usize },
}

/// HNSW's knobs. The defaults give recall@5 0.96 against the exact answer on 100,000 MiniLM-like
/// rows at about 0.4 ms a search (BENCHMARKS.md, "MemSync retrieval").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per node on the upper layers; layer 0 keeps twice as many.
    pub m: usize,
    /// Candidate list size while inserting.
    pub ef_construction: usize,
    /// Candidate list size while searching (at least `k` is used).
    pub ef_search: usize,
    /// Seed of the level stream.
    pub seed: u64,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 128,
            ef_search: 200,
            seed: 0x6d65_6d73_796e_6321, // "memsync!"
        }
    }
}

/// A node's id: its insertion order.
type Node = u32;

/// A candidate: distance (1 - cosine) then node, so ties break by insertion order.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Cand {
    dist: f32,
    node: Node,
}

impl Eq for Cand {}
impl Ord for Cand {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist
            .total_cmp(&other.dist)
            .then(self.node.cmp(&other.node))
    }
}
impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// HNSW over unit vectors; see the module docs.
#[derive(Debug, Clone)]
pub struct AnnIndex {
    dim: usize,
    params: HnswParams,
    /// Node-major vectors, `dim` floats each, normalised.
    vectors: Vec<f32>,
    keys: Vec<u32>,
    live: Vec<bool>,
    /// Layer-0 links: `m0` slots per node, the first `links0_len[node]` in use.
    links0: Vec<Node>,
    links0_len: Vec<u8>,
    /// Links on layers 1..=level, for nodes above layer 0 (empty otherwise).
    upper: Vec<Vec<Vec<Node>>>,
    levels: Vec<u8>,
    slot: HashMap<u32, Node>,
    entry: Option<Node>,
    max_level: usize,
    rng: u64,
}

thread_local! {
    /// Visited marks for searches on this thread: a stamp per node, bumped per search.
    static VISITED: RefCell<(Vec<u32>, u32)> = const { RefCell::new((Vec::new(), 0)) };
}

/// Dot product, eight independent lanes so the compiler vectorises it.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let ca = a.chunks_exact(16);
    let cb = b.chunks_exact(16);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    acc.iter().sum::<f32>() + tail
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl AnnIndex {
    /// An empty index of `dim`-dimensional vectors with the default parameters.
    pub fn new(dim: usize) -> AnnIndex {
        AnnIndex::with_params(dim, HnswParams::default())
    }

    pub fn with_params(dim: usize, params: HnswParams) -> AnnIndex {
        let params = HnswParams {
            m: params.m.clamp(2, 127),
            ef_construction: params.ef_construction.max(1),
            ef_search: params.ef_search.max(1),
            seed: params.seed,
        };
        AnnIndex {
            dim,
            params,
            vectors: Vec::new(),
            keys: Vec::new(),
            live: Vec::new(),
            links0: Vec::new(),
            links0_len: Vec::new(),
            upper: Vec::new(),
            levels: Vec::new(),
            slot: HashMap::new(),
            entry: None,
            max_level: 0,
            rng: params.seed,
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Change the search candidate list size (recall against speed) without rebuilding.
    pub fn set_ef_search(&mut self, ef: usize) {
        self.params.ef_search = ef.max(1);
    }

    /// Live keys.
    pub fn len(&self) -> usize {
        self.slot.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slot.is_empty()
    }

    /// Whether `key` is live.
    pub fn contains(&self, key: u32) -> bool {
        self.slot.contains_key(&key)
    }

    /// Nodes in the graph, removed ones included.
    pub fn nodes(&self) -> usize {
        self.keys.len()
    }

    fn m0(&self) -> usize {
        self.params.m * 2
    }

    fn vec(&self, n: Node) -> &[f32] {
        let i = n as usize * self.dim;
        &self.vectors[i..i + self.dim]
    }

    fn dist(&self, q: &[f32], n: Node) -> f32 {
        1.0 - dot(q, self.vec(n))
    }

    fn links(&self, n: Node, layer: usize) -> &[Node] {
        if layer == 0 {
            let i = n as usize * self.m0();
            &self.links0[i..i + self.links0_len[n as usize] as usize]
        } else {
            &self.upper[n as usize][layer - 1]
        }
    }

    fn set_links(&mut self, n: Node, layer: usize, links: &[Node]) {
        if layer == 0 {
            let m0 = self.m0();
            let i = n as usize * m0;
            self.links0[i..i + links.len()].copy_from_slice(links);
            self.links0_len[n as usize] = links.len() as u8;
        } else {
            let v = &mut self.upper[n as usize][layer - 1];
            v.clear();
            v.extend_from_slice(links);
        }
    }

    /// `v` normalised, or why not.
    fn normalised(&self, key: u32, v: &[f32]) -> Result<Vec<f32>, IndexError> {
        if v.len() != self.dim {
            return Err(IndexError::Dimension {
                key,
                expected: self.dim,
                found: v.len(),
            });
        }
        let norm = dot(v, v).sqrt();
        if !norm.is_finite() || norm == 0.0 || v.iter().any(|x| !x.is_finite()) {
            return Err(IndexError::NotNormalisable { key });
        }
        Ok(v.iter().map(|x| x / norm).collect())
    }

    fn random_level(&mut self) -> usize {
        let ml = 1.0 / (self.params.m as f64).ln();
        // 53 random bits into (0, 1].
        let u = ((splitmix(&mut self.rng) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        ((-u.ln() * ml).floor() as usize).min(16)
    }

    /// Add `key` with vector `v` (normalised here). Errors: wrong dimension, a vector that
    /// cannot be normalised, or a key already live.
    pub fn insert(&mut self, key: u32, v: &[f32]) -> Result<(), IndexError> {
        if self.slot.contains_key(&key) {
            return Err(IndexError::DuplicateKey { key });
        }
        let q = self.normalised(key, v)?;
        let node = self.keys.len() as Node;
        let level = self.random_level();
        self.vectors.extend_from_slice(&q);
        self.keys.push(key);
        self.live.push(true);
        self.levels.push(level as u8);
        self.links0.extend(std::iter::repeat_n(0, self.m0()));
        self.links0_len.push(0);
        self.upper.push(vec![Vec::new(); level]);
        self.slot.insert(key, node);

        let Some(mut ep) = self.entry else {
            self.entry = Some(node);
            self.max_level = level;
            return Ok(());
        };
        let mut ep_dist = self.dist(&q, ep);
        for layer in (level + 1..=self.max_level).rev() {
            (ep, ep_dist) = self.greedy(&q, ep, ep_dist, layer);
        }
        let mut eps = vec![Cand {
            dist: ep_dist,
            node: ep,
        }];
        for layer in (0..=level.min(self.max_level)).rev() {
            let found = self.search_layer(&q, &eps, self.params.ef_construction, layer);
            let max = if layer == 0 { self.m0() } else { self.params.m };
            let chosen = self.select(&found, self.params.m);
            self.set_links(
                node,
                layer,
                &chosen.iter().map(|c| c.node).collect::<Vec<_>>(),
            );
            for c in &chosen {
                self.link_back(c.node, node, c.dist, layer, max);
            }
            eps = found;
        }
        if level > self.max_level {
            self.max_level = level;
            self.entry = Some(node);
        }
        Ok(())
    }

    /// Add `new` to `n`'s links on `layer`, pruning with the heuristic when full.
    fn link_back(&mut self, n: Node, new: Node, dist: f32, layer: usize, max: usize) {
        let current = self.links(n, layer);
        if current.len() < max {
            let mut l = current.to_vec();
            l.push(new);
            self.set_links(n, layer, &l);
            return;
        }
        let base = self.vec(n).to_vec();
        let mut cands: Vec<Cand> = current
            .iter()
            .map(|&o| Cand {
                dist: self.dist(&base, o),
                node: o,
            })
            .collect();
        cands.push(Cand { dist, node: new });
        cands.sort();
        let chosen = self.select(&cands, max);
        self.set_links(n, layer, &chosen.iter().map(|c| c.node).collect::<Vec<_>>());
    }

    /// The neighbour-selection heuristic (the paper's algorithm 4, with pruned candidates
    /// filled back): keep a candidate if it is nearer the base than to every kept one, then
    /// fill up to `m` with the pruned ones, nearest first. Without the fill, groups of near
    /// duplicates (the same fact stated many ways) left nodes with too few in-links to reach:
    /// recall@5 on MiniLM rows at 100,000 plateaued at 0.79 whatever `ef_search`.
    /// `cands` sorted nearest first.
    fn select(&self, cands: &[Cand], m: usize) -> Vec<Cand> {
        let mut kept: Vec<Cand> = Vec::with_capacity(m);
        let mut pruned: Vec<Cand> = Vec::new();
        for c in cands {
            if kept.len() >= m {
                break;
            }
            let v = self.vec(c.node);
            if kept.iter().all(|k| 1.0 - dot(v, self.vec(k.node)) > c.dist) {
                kept.push(*c);
            } else {
                pruned.push(*c);
            }
        }
        for c in pruned {
            if kept.len() >= m {
                break;
            }
            kept.push(c);
        }
        kept
    }

    /// Greedy descent on one upper layer.
    fn greedy(&self, q: &[f32], mut ep: Node, mut d: f32, layer: usize) -> (Node, f32) {
        loop {
            let mut moved = false;
            for &n in self.links(ep, layer) {
                let dn = self.dist(q, n);
                if (Cand { dist: dn, node: n }) < (Cand { dist: d, node: ep }) {
                    ep = n;
                    d = dn;
                    moved = true;
                }
            }
            if !moved {
                return (ep, d);
            }
        }
    }

    /// Beam search on one layer: up to `ef` nearest nodes found from `eps`, nearest first.
    /// Removed nodes are walked through and returned too (the caller filters them).
    fn search_layer(&self, q: &[f32], eps: &[Cand], ef: usize, layer: usize) -> Vec<Cand> {
        VISITED.with(|cell| {
            let mut guard = cell.borrow_mut();
            let (marks, stamp) = &mut *guard;
            if marks.len() < self.keys.len() {
                marks.resize(self.keys.len(), 0);
            }
            *stamp = stamp.wrapping_add(1);
            if *stamp == 0 {
                marks.fill(0);
                *stamp = 1;
            }
            let stamp = *stamp;
            let mut candidates: BinaryHeap<Reverse<Cand>> = BinaryHeap::new();
            let mut results: BinaryHeap<Cand> = BinaryHeap::new();
            for &c in eps {
                if marks[c.node as usize] != stamp {
                    marks[c.node as usize] = stamp;
                    candidates.push(Reverse(c));
                    results.push(c);
                }
            }
            while results.len() > ef {
                results.pop();
            }
            while let Some(Reverse(c)) = candidates.pop() {
                if let Some(worst) = results.peek() {
                    if results.len() >= ef && c > *worst {
                        break;
                    }
                }
                for &n in self.links(c.node, layer) {
                    if marks[n as usize] == stamp {
                        continue;
                    }
                    marks[n as usize] = stamp;
                    let cand = Cand {
                        dist: self.dist(q, n),
                        node: n,
                    };
                    if results.len() < ef || cand < *results.peek().unwrap() {
                        candidates.push(Reverse(cand));
                        results.push(cand);
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                }
            }
            results.into_sorted_vec()
        })
    }

    /// Take `key` out of every later search. Returns whether it was live.
    pub fn remove(&mut self, key: u32) -> bool {
        match self.slot.remove(&key) {
            Some(n) => {
                self.live[n as usize] = false;
                true
            }
            None => false,
        }
    }

    /// Up to `k` live keys nearest `query`, best first, with their cosine similarity.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<(u32, f32)>, IndexError> {
        if query.len() != self.dim {
            return Err(IndexError::QueryDimension {
                expected: self.dim,
                found: query.len(),
            });
        }
        let (Some(entry), false) = (self.entry, k == 0 || self.is_empty()) else {
            return Ok(Vec::new());
        };
        let norm = dot(query, query).sqrt();
        if !norm.is_finite() || norm == 0.0 {
            return Ok(Vec::new());
        }
        let q: Vec<f32> = query.iter().map(|x| x / norm).collect();
        let want = k.min(self.len());
        let mut ep = entry;
        let mut d = self.dist(&q, ep);
        for layer in (1..=self.max_level).rev() {
            (ep, d) = self.greedy(&q, ep, d, layer);
        }
        let ef = self.params.ef_search.max(k);
        let found = self.search_layer(&q, &[Cand { dist: d, node: ep }], ef, 0);
        let hits: Vec<(u32, f32)> = found
            .iter()
            .filter(|c| self.live[c.node as usize])
            .take(want)
            .map(|c| (self.keys[c.node as usize], 1.0 - c.dist))
            .collect();
        if hits.len() >= want {
            return Ok(hits);
        }
        // Tombstones crowded the beam: answer exactly.
        Ok(self.exact(&q, k))
    }

    /// The exact answer by scanning every live vector (for checks and as the fallback).
    pub fn exact(&self, query: &[f32], k: usize) -> Vec<(u32, f32)> {
        let mut heap: BinaryHeap<Cand> = BinaryHeap::new();
        for n in 0..self.keys.len() {
            if !self.live[n] {
                continue;
            }
            let c = Cand {
                dist: self.dist(query, n as Node),
                node: n as Node,
            };
            if heap.len() < k {
                heap.push(c);
            } else if k > 0 && c < *heap.peek().unwrap() {
                heap.pop();
                heap.push(c);
            }
        }
        heap.into_sorted_vec()
            .into_iter()
            .map(|c| (self.keys[c.node as usize], 1.0 - c.dist))
            .collect()
    }
}

/// Exact top-`k` by cosine over `(key, vector)` rows, best first, ties by row order: the
/// reference that recall is measured against.
pub fn brute_force(rows: &[(u32, Vec<f32>)], query: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut scored: Vec<(usize, f32)> = rows
        .iter()
        .enumerate()
        .map(|(i, (_, v))| (i, dot(query, v)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored
        .into_iter()
        .take(k)
        .map(|(i, s)| (rows[i].0, s))
        .collect()
}

/// Recall@k: the share of `relevant` found in the first `k` of `found` (1.0 when nothing is
/// relevant).
pub fn recall_at_k<T: PartialEq>(found: &[T], relevant: &[T], k: usize) -> f64 {
    if relevant.is_empty() {
        return 1.0;
    }
    let top = &found[..found.len().min(k)];
    let hit = relevant.iter().filter(|r| top.contains(r)).count();
    hit as f64 / relevant.len() as f64
}

/// Synthetic test data for tests and benches: `n` unit vectors around `clusters` random Gaussian
/// centres (point `i` belongs to centre `i % clusters`), each component scattered by `spread`
/// times a standard normal before normalising. The centres depend only on `dim` and `clusters`,
/// so points drawn with another `seed` (queries) fall in the same clusters. Seeded (SplitMix64 and Box-Muller): the same
/// arguments give the same vectors on every machine.
pub fn clustered(n: usize, dim: usize, clusters: usize, spread: f32, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed;
    let mut centre_s = 0xc3a5_c85c_97cb_3127u64 ^ clusters as u64;
    let gauss = |s: &mut u64| {
        let u1 = ((splitmix(s) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (splitmix(s) >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    };
    let centres: Vec<Vec<f32>> = (0..clusters.max(1))
        .map(|_| (0..dim).map(|_| gauss(&mut centre_s)).collect())
        .collect();
    (0..n)
        .map(|i| {
            let c = &centres[i % centres.len()];
            let v: Vec<f32> = c.iter().map(|x| x + spread * gauss(&mut s)).collect();
            let norm = dot(&v, &v).sqrt();
            v.iter().map(|x| x / norm).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<Vec<f32>> {
        super::clustered(n, dim, clusters, 0.6, seed)
    }

    fn build(vs: &[Vec<f32>]) -> AnnIndex {
        let mut idx = AnnIndex::new(vs[0].len());
        for (i, v) in vs.iter().enumerate() {
            idx.insert(i as u32, v).unwrap();
        }
        idx
    }

    fn mean_recall(
        idx: &AnnIndex,
        rows: &[(u32, Vec<f32>)],
        queries: &[Vec<f32>],
        k: usize,
    ) -> f64 {
        let total: f64 = queries
            .iter()
            .map(|q| {
                let want: Vec<u32> = brute_force(rows, q, k).iter().map(|h| h.0).collect();
                let got: Vec<u32> = idx.search(q, k).unwrap().iter().map(|h| h.0).collect();
                recall_at_k(&got, &want, k)
            })
            .sum();
        total / queries.len() as f64
    }

    #[test]
    fn recall_at_10_against_brute_force_is_at_least_0_95() {
        let vs = clustered(4000, 64, 40, 1);
        let idx = build(&vs);
        let rows: Vec<(u32, Vec<f32>)> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u32, v.clone()))
            .collect();
        let queries = clustered(200, 64, 40, 99);
        let r = mean_recall(&idx, &rows, &queries, 10);
        eprintln!("recall@10 on 4000 clustered 64-d vectors: {r:.4}");
        assert!(r >= 0.95, "recall@10 {r}");
    }

    #[test]
    fn removed_keys_never_come_back_and_recall_holds() {
        let vs = clustered(3000, 32, 30, 2);
        let mut idx = build(&vs);
        // Remove every third key.
        for i in (0..3000u32).step_by(3) {
            assert!(idx.remove(i));
            assert!(!idx.remove(i), "a second remove reports nothing removed");
        }
        assert_eq!(idx.len(), 2000);
        let rows: Vec<(u32, Vec<f32>)> = vs
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(i, v)| (i as u32, v.clone()))
            .collect();
        let queries = clustered(150, 32, 30, 77);
        for q in &queries {
            let got = idx.search(q, 10).unwrap();
            assert_eq!(got.len(), 10);
            assert!(got.iter().all(|(k, _)| k % 3 != 0), "{got:?}");
            assert!(
                got.windows(2).all(|w| w[0].1 >= w[1].1),
                "best first: {got:?}"
            );
        }
        // A removed row's own vector no longer finds it.
        let hits = idx.search(&vs[0], 1).unwrap();
        assert_ne!(hits[0].0, 0);
        let r = mean_recall(&idx, &rows, &queries, 10);
        eprintln!("recall@10 after removing a third: {r:.4}");
        assert!(r >= 0.95, "recall@10 {r}");
    }

    #[test]
    fn removing_almost_everything_still_answers_exactly() {
        let vs = clustered(500, 16, 5, 3);
        let mut idx = build(&vs);
        for i in 0..497u32 {
            idx.remove(i);
        }
        let got = idx.search(&vs[0], 10).unwrap();
        let mut keys: Vec<u32> = got.iter().map(|h| h.0).collect();
        keys.sort();
        assert_eq!(keys, vec![497, 498, 499]);
    }

    #[test]
    fn a_key_can_come_back_after_removal_but_not_twice_live() {
        let vs = clustered(50, 8, 2, 4);
        let mut idx = build(&vs);
        assert_eq!(
            idx.insert(7, &vs[7]),
            Err(IndexError::DuplicateKey { key: 7 })
        );
        idx.remove(7);
        idx.insert(7, &vs[30]).unwrap();
        assert_eq!(idx.len(), 50);
        assert_eq!(
            idx.search(&vs[30], 2)
                .unwrap()
                .iter()
                .filter(|h| h.0 == 7)
                .count(),
            1
        );
    }

    #[test]
    fn wrong_dimensions_and_bad_vectors_are_typed_errors() {
        let mut idx = AnnIndex::new(384);
        let err = idx.insert(3, &[1.0; 383]).unwrap_err();
        assert_eq!(
            err,
            IndexError::Dimension {
                key: 3,
                expected: 384,
                found: 383
            }
        );
        assert!(err.to_string().contains("384") && err.to_string().contains("383"));
        assert_eq!(
            idx.search(&[1.0; 12], 5),
            Err(IndexError::QueryDimension {
                expected: 384,
                found: 12
            })
        );
        assert_eq!(
            idx.insert(4, &[0.0; 384]),
            Err(IndexError::NotNormalisable { key: 4 })
        );
        let mut nan = vec![1.0; 384];
        nan[9] = f32::NAN;
        assert_eq!(
            idx.insert(5, &nan),
            Err(IndexError::NotNormalisable { key: 5 })
        );
        assert!(idx.is_empty());
        assert_eq!(idx.search(&[1.0; 384], 5), Ok(vec![]));
    }

    #[test]
    fn the_same_inserts_give_the_same_answers() {
        let vs = clustered(1500, 24, 10, 5);
        let a = build(&vs);
        let b = build(&vs);
        for q in clustered(20, 24, 10, 6) {
            assert_eq!(a.search(&q, 7).unwrap(), b.search(&q, 7).unwrap());
        }
    }

    #[test]
    fn scores_are_cosines_and_inputs_are_normalised() {
        let mut idx = AnnIndex::new(3);
        idx.insert(1, &[2.0, 0.0, 0.0]).unwrap();
        idx.insert(2, &[0.0, 5.0, 0.0]).unwrap();
        idx.insert(3, &[1.0, 1.0, 0.0]).unwrap();
        let got = idx.search(&[10.0, 0.0, 0.0], 3).unwrap();
        assert_eq!(got.iter().map(|h| h.0).collect::<Vec<_>>(), vec![1, 3, 2]);
        assert!((got[0].1 - 1.0).abs() < 1e-6);
        assert!((got[1].1 - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!(got[2].1.abs() < 1e-6);
        assert_eq!(idx.search(&[1.0, 0.0, 0.0], 0), Ok(vec![]));
    }

    #[test]
    fn recall_at_k_counts_relevant_in_the_top_k() {
        assert_eq!(recall_at_k(&[1, 2, 3], &[3, 9], 3), 0.5);
        assert_eq!(recall_at_k(&[1, 2, 3], &[3], 2), 0.0);
        assert_eq!(recall_at_k::<u32>(&[], &[], 5), 1.0);
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(24))]
            /// Whatever is inserted and removed, search returns only live keys, no key twice,
            /// best first, and exactly min(k, len) of them.
            #[test]
            fn search_returns_live_keys_only(
                vs in prop::collection::vec(prop::collection::vec(-1.0f32..1.0, 6), 1..120),
                removes in prop::collection::vec(any::<prop::sample::Index>(), 0..80),
                q in prop::collection::vec(-1.0f32..1.0, 6),
                k in 1usize..20,
            ) {
                let mut idx = AnnIndex::with_params(6, HnswParams { m: 4, ef_construction: 16, ef_search: 8, seed: 9 });
                let mut live = std::collections::BTreeSet::new();
                for (i, v) in vs.iter().enumerate() {
                    if idx.insert(i as u32, v).is_ok() {
                        live.insert(i as u32);
                    }
                }
                for r in &removes {
                    let key = r.index(vs.len()) as u32;
                    prop_assert_eq!(idx.remove(key), live.remove(&key));
                }
                prop_assert_eq!(idx.len(), live.len());
                if dot(&q, &q) > 1e-6 {
                    let got = idx.search(&q, k).unwrap();
                    prop_assert_eq!(got.len(), k.min(live.len()));
                    let mut seen = std::collections::BTreeSet::new();
                    for (key, _) in &got {
                        prop_assert!(live.contains(key));
                        prop_assert!(seen.insert(*key));
                    }
                    prop_assert!(got.windows(2).all(|w| w[0].1 >= w[1].1));
                }
            }
        }
    }
}
