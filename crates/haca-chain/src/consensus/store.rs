//! Undecided blocks, kept on disk until their height is decided.
//!
//! Malachite's WAL holds block ids only; the bytes of our own proposals and of peers'
//! proposals that passed `Host::check` live here, so a validator that restarts mid-height
//! can re-propose the same block and commit a block decided from its WAL. One file per
//! block: `<height, 20 digits>.<round>.<own|peer>.<block id hex>.blk`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use haca_core::Digest;

use super::context::BlockId;

#[derive(Clone)]
struct Entry {
    own: bool,
    bytes: Bytes,
}

pub struct BlockStore {
    dir: PathBuf,
    /// `(height, round, id)` to the block.
    blocks: BTreeMap<(u64, u32, BlockId), Entry>,
}

fn file_name(height: u64, round: u32, id: &BlockId, own: bool) -> String {
    let who = if own { "own" } else { "peer" };
    format!("{height:020}.{round}.{who}.{}.blk", id.0.to_hex())
}

fn parse_name(name: &str) -> Option<(u64, u32, bool, BlockId)> {
    let mut it = name.strip_suffix(".blk")?.split('.');
    let height = it.next()?.parse().ok()?;
    let round = it.next()?.parse().ok()?;
    let own = match it.next()? {
        "own" => true,
        "peer" => false,
        _ => return None,
    };
    let id: Digest = it.next()?.parse().ok()?;
    it.next()
        .is_none()
        .then_some((height, round, own, BlockId(id)))
}

impl BlockStore {
    /// Opens (creating) the directory and loads the blocks it holds.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut blocks = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some((height, round, own, id)) = name.to_str().and_then(parse_name) else {
                continue; // a stray or half-written file
            };
            let bytes = Bytes::from(std::fs::read(entry.path())?);
            blocks.insert((height, round, id), Entry { own, bytes });
        }
        Ok(BlockStore {
            dir: dir.to_path_buf(),
            blocks,
        })
    }

    /// Keeps a block durably (written to a temporary file, synced, then renamed).
    pub fn put(
        &mut self,
        height: u64,
        round: u32,
        id: BlockId,
        own: bool,
        bytes: Bytes,
    ) -> std::io::Result<()> {
        if self.blocks.contains_key(&(height, round, id)) {
            return Ok(());
        }
        let name = file_name(height, round, &id, own);
        let tmp = self.dir.join(format!("{name}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, self.dir.join(&name))?;
        self.blocks
            .insert((height, round, id), Entry { own, bytes });
        Ok(())
    }

    /// A block with this id at this height, from any round.
    pub fn get(&self, height: u64, id: &BlockId) -> Option<Bytes> {
        self.blocks
            .range(
                (height, 0, BlockId(Digest([0; 32])))
                    ..=(height, u32::MAX, BlockId(Digest([0xff; 32]))),
            )
            .find(|((_, _, i), _)| i == id)
            .map(|(_, e)| e.bytes.clone())
    }

    /// The block this validator proposed at `(height, round)`, if any.
    pub fn own(&self, height: u64, round: u32) -> Option<(BlockId, Bytes)> {
        self.blocks
            .range(
                (height, round, BlockId(Digest([0; 32])))
                    ..=(height, round, BlockId(Digest([0xff; 32]))),
            )
            .find(|(_, e)| e.own)
            .map(|((_, _, id), e)| (*id, e.bytes.clone()))
    }

    /// Drops every block at or below `height`.
    pub fn prune(&mut self, height: u64) {
        let keep = self
            .blocks
            .split_off(&(height + 1, 0, BlockId(Digest([0; 32]))));
        let gone = std::mem::replace(&mut self.blocks, keep);
        for ((h, r, id), e) in gone {
            let path = self.dir.join(file_name(h, r, &id, e.own));
            if let Err(err) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %err, "could not remove a decided block file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_survive_reopen_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let a = BlockId(Digest([1; 32]));
        let b = BlockId(Digest([2; 32]));
        {
            let mut s = BlockStore::open(dir.path()).unwrap();
            s.put(3, 0, a, true, Bytes::from_static(b"aa")).unwrap();
            s.put(4, 1, b, false, Bytes::from_static(b"bb")).unwrap();
        }
        let mut s = BlockStore::open(dir.path()).unwrap();
        assert_eq!(s.get(3, &a).unwrap(), Bytes::from_static(b"aa"));
        assert_eq!(s.own(3, 0).unwrap().0, a);
        assert!(s.own(4, 1).is_none());
        assert!(s.get(3, &b).is_none());
        s.prune(3);
        assert!(s.get(3, &a).is_none());
        assert_eq!(s.get(4, &b).unwrap(), Bytes::from_static(b"bb"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
