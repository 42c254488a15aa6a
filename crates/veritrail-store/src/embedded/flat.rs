//! Fixed-width derived files addressed by number: the Merkle tree's perfect nodes
//! (`level-LL.dat`, 32 bytes per node of level LL).
//!
//! They answer the lookups every proof makes with one positioned read each. Nodes are written with
//! `pwrite` at their own offset as the writer completes them; writing the same node again
//! (recovery replay) writes the same bytes. How far they are durable is recorded beside them
//! (see [`crate::embedded::index`]).
//!
//! Levels 1 to 3 have no file: a node there is computed from the leaves below it (at most 8, one
//! read of 256 bytes and 7 hashes), which saves 28 of the 64 bytes the tree would take per event.
//! Level 0 (the leaf hashes) stays stored: recovery and `fsck` hold the log against it. Stopping
//! at level 3 bounds what one damaged leaf hash takes with it: the proofs of its group of 16
//! leaves, not of 64 or more.

use crate::engine::NodeError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Bytes of one tree node.
pub const NODE_WIDTH: u64 = 32;
/// Tree levels a 64-bit tree size can have.
const MAX_LEVELS: usize = 64;
/// The lowest level above the leaves whose nodes are stored.
pub const STORED_FROM: u32 = 4;

/// True when nodes of `level` are computed from the leaves, not stored.
pub fn computed(level: u32) -> bool {
    (1..STORED_FROM).contains(&level)
}

/// The perfect node above `leaves` (a power of two of them, in order).
pub fn fold(leaves: &[[u8; 32]]) -> [u8; 32] {
    debug_assert!(leaves.len().is_power_of_two());
    let mut tree = veritrail_core::merkle::Frontier::new();
    for leaf in leaves {
        tree.append(*leaf, |_, _, _| {});
    }
    tree.root()
}

/// The leaves `[from, to)` below node `index` of `level`.
pub fn leaves_below(level: u32, index: u64) -> (u64, u64) {
    (index << level, (index + 1) << level)
}

/// The open files, by level (none for the [`computed`] levels); shared by the writer (`pwrite`)
/// and readers (`pread`).
#[derive(Clone)]
pub struct FlatFiles {
    dir: PathBuf,
    levels: Arc<RwLock<Vec<Option<Arc<File>>>>>,
}

fn open_rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

fn level_path(dir: &Path, level: usize) -> PathBuf {
    dir.join(format!("level-{level:02}.dat"))
}

impl FlatFiles {
    /// The directory of the node files.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens the files in `dir`, which must hold at least the nodes of a tree of `size` leaves;
    /// what they hold beyond is kept (recovery reads it as a witness, then [`FlatFiles::cut`]s
    /// it). Returns `None` when a file is shorter than that (a machine crash lost writes the
    /// caller counted on): the caller then recomputes the nodes from the log.
    pub fn open(dir: &Path, size: u64) -> std::io::Result<Option<FlatFiles>> {
        let mut levels = Vec::new();
        for level in 0..MAX_LEVELS {
            let count = size >> level;
            let path = level_path(dir, level);
            if computed(level as u32) {
                // An older version stored these levels too.
                if path.exists() {
                    std::fs::remove_file(&path)?;
                }
                levels.push(None);
                continue;
            }
            if count == 0 && !path.exists() {
                break;
            }
            let f = open_rw(&path)?;
            if f.metadata()?.len() < count * NODE_WIDTH {
                return Ok(None);
            }
            levels.push(Some(Arc::new(f)));
        }
        trim(&mut levels);
        Ok(Some(FlatFiles {
            dir: dir.to_path_buf(),
            levels: Arc::new(RwLock::new(levels)),
        }))
    }

    /// Cuts the files to what a tree of `size` leaves holds.
    pub fn cut(&self, size: u64) -> std::io::Result<()> {
        let mut levels = self
            .levels
            .write()
            .map_err(|_| std::io::Error::other("lock poisoned"))?;
        for (level, f) in levels.iter().enumerate() {
            let Some(f) = f else { continue };
            let len = (size >> level) * NODE_WIDTH;
            if f.metadata()?.len() > len {
                f.set_len(len)?;
            }
        }
        while levels.len() > 1 && (size >> (levels.len() - 1)) == 0 {
            if levels.pop().flatten().is_some() {
                std::fs::remove_file(level_path(&self.dir, levels.len()))?;
            }
        }
        trim(&mut levels);
        Ok(())
    }

    /// Opens the files in `dir` as they are, for checking: nothing is cut or created.
    pub fn open_existing(dir: &Path) -> std::io::Result<FlatFiles> {
        let mut levels = Vec::new();
        loop {
            if computed(levels.len() as u32) {
                levels.push(None);
                continue;
            }
            let Ok(f) = File::open(level_path(dir, levels.len())) else {
                break;
            };
            levels.push(Some(Arc::new(f)));
        }
        trim(&mut levels);
        Ok(FlatFiles {
            dir: dir.to_path_buf(),
            levels: Arc::new(RwLock::new(levels)),
        })
    }

    /// Leaf hashes the files hold.
    pub fn leaves(&self) -> std::io::Result<u64> {
        match self.level(0, false)? {
            Some(f) => Ok(f.metadata()?.len() / NODE_WIDTH),
            None => Ok(0),
        }
    }

    /// Writes perfect node `index` of `level`.
    #[cfg(test)]
    pub fn put_node(&self, level: u32, index: u64, hash: &[u8; 32]) -> std::io::Result<()> {
        self.put_nodes(level, index, hash)
    }

    /// Writes consecutive perfect nodes of `level` from `index` on, in one write (an error for a
    /// [`computed`] level, which has no file).
    pub fn put_nodes(&self, level: u32, index: u64, hashes: &[u8]) -> std::io::Result<()> {
        debug_assert_eq!(hashes.len() as u64 % NODE_WIDTH, 0);
        self.level(level as usize, true)?
            .ok_or_else(|| std::io::Error::other("tree level out of range"))?
            .write_all_at(hashes, index * NODE_WIDTH)
    }

    /// Perfect node `index` of `level`, for [`veritrail_core::merkle`]: missing when its file
    /// does not hold it.
    pub fn stored_node(&self, level: u32, index: u64) -> Result<[u8; 32], NodeError> {
        match self.node(level, index) {
            Ok(Some(h)) => Ok(h),
            Ok(None) => Err(NodeError::Missing { level, index }),
            Err(e) => Err(NodeError::Io(e)),
        }
    }

    /// Reads perfect node `index` of `level`, or computes it from its leaves for a [`computed`]
    /// level (the caller checks it is complete in its snapshot).
    pub fn node(&self, level: u32, index: u64) -> std::io::Result<Option<[u8; 32]>> {
        if computed(level) {
            let (from, to) = leaves_below(level, index);
            let leaves = self.leaf_range(from, to)?;
            return Ok((leaves.len() as u64 == to - from).then(|| fold(&leaves)));
        }
        let Some(f) = self.level(level as usize, false)? else {
            return Ok(None);
        };
        let mut h = [0u8; 32];
        f.read_exact_at(&mut h, index * NODE_WIDTH)?;
        Ok(Some(h))
    }

    /// Reads leaf hashes (level-0 nodes) `[from, to)` in one read (the caller checks the range
    /// is covered).
    pub fn leaf_range(&self, from: u64, to: u64) -> std::io::Result<Vec<[u8; 32]>> {
        self.node_range(0, from, to)
    }

    /// Reads the stored perfect nodes `[from, to)` of `level` in one read (none when the level
    /// has no file, as the [`computed`] ones; the caller checks the range is covered).
    pub fn node_range(&self, level: u32, from: u64, to: u64) -> std::io::Result<Vec<[u8; 32]>> {
        let Some(f) = self.level(level as usize, false)? else {
            return Ok(Vec::new());
        };
        let mut b = vec![0u8; (to.saturating_sub(from) * NODE_WIDTH) as usize];
        f.read_exact_at(&mut b, from * NODE_WIDTH)?;
        Ok(b.chunks_exact(NODE_WIDTH as usize)
            .map(|c| c.try_into().unwrap_or_default())
            .collect())
    }

    /// Makes every write so far durable.
    pub fn sync(&self) -> std::io::Result<()> {
        let levels = self
            .levels
            .read()
            .map_err(|_| std::io::Error::other("lock poisoned"))?;
        for f in levels.iter().flatten() {
            f.sync_data()?;
        }
        File::open(&self.dir)?.sync_all()
    }

    fn level(&self, level: usize, create: bool) -> std::io::Result<Option<Arc<File>>> {
        if level >= MAX_LEVELS {
            return Ok(None);
        }
        if computed(level as u32) {
            return Ok(None);
        }
        if let Some(f) = self
            .levels
            .read()
            .map_err(|_| std::io::Error::other("lock poisoned"))?
            .get(level)
        {
            return Ok(f.clone());
        }
        if !create {
            return Ok(None);
        }
        let mut levels = self
            .levels
            .write()
            .map_err(|_| std::io::Error::other("lock poisoned"))?;
        while levels.len() <= level {
            let f = if computed(levels.len() as u32) {
                None
            } else {
                Some(Arc::new(open_rw(&level_path(&self.dir, levels.len()))?))
            };
            levels.push(f);
        }
        Ok(levels.get(level).cloned().flatten())
    }
}

/// Drops the computed levels' placeholders past the last stored level.
fn trim(levels: &mut Vec<Option<Arc<File>>>) {
    while levels.last().is_some_and(Option::is_none) {
        levels.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_open_cuts_or_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = FlatFiles::open(dir.path(), 0)
            .expect("open")
            .expect("empty is consistent");
        let group = 1u64 << STORED_FROM;
        let leaf = |seq: u64| [seq as u8 + 1; 32];
        for seq in 0..=group {
            f.put_node(0, seq, &leaf(seq)).expect("leaf");
        }
        // Levels 1 to STORED_FROM - 1 are not stored but computed from the leaves.
        assert!(
            f.put_node(1, 1, &[9; 32]).is_err(),
            "a computed level has no file"
        );
        f.put_node(STORED_FROM, 0, &[7; 32]).expect("node");
        assert!(!level_path(dir.path(), 1).exists());
        let pair = veritrail_core::hash::node_hash(&leaf(2), &leaf(3));
        assert_eq!(f.node(1, 1).expect("read"), Some(pair));
        let four: Vec<_> = (4..8).map(leaf).collect();
        assert_eq!(f.node(2, 1).expect("read"), Some(fold(&four)));
        assert_eq!(f.node(STORED_FROM, 0).expect("read"), Some([7; 32]));
        assert_eq!(f.node(STORED_FROM + 1, 0).expect("read"), None);
        drop(f);
        // Reopened for `group` leaves: the one past them is kept until cut; a level-1 file an
        // older version wrote is removed.
        std::fs::write(level_path(dir.path(), 1), [0u8; 64]).expect("old level");
        let f = FlatFiles::open(dir.path(), group)
            .expect("open")
            .expect("consistent");
        assert!(!level_path(dir.path(), 1).exists());
        assert_eq!(f.leaves().expect("len"), group + 1);
        f.cut(group).expect("cut");
        assert_eq!(f.leaves().expect("len"), group);
        assert_eq!(f.node(STORED_FROM, 0).expect("read"), Some([7; 32]));
        f.cut(group - 1).expect("cut");
        assert!(!level_path(dir.path(), STORED_FROM as usize).exists());
        drop(f);
        // For 2 × group + 1 leaves the files are short: the caller must rebuild.
        assert!(FlatFiles::open(dir.path(), 2 * group + 1)
            .expect("open")
            .is_none());
    }

    #[test]
    fn fold_is_the_perfect_node_the_tree_reports() {
        let mut tree = veritrail_core::merkle::Frontier::new();
        let mut nodes = std::collections::HashMap::new();
        let leaves: Vec<[u8; 32]> = (0..32u64)
            .map(|i| veritrail_core::hash::leaf_hash(&i.to_be_bytes()))
            .collect();
        for l in &leaves {
            tree.append(*l, |level, index, h| {
                nodes.insert((level, index), *h);
            });
        }
        for level in 1..STORED_FROM {
            for index in 0..(32u64 >> level) {
                let (from, to) = leaves_below(level, index);
                assert_eq!(
                    fold(&leaves[from as usize..to as usize]),
                    nodes[&(level, index)]
                );
            }
        }
    }
}
