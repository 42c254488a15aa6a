//! Fixed-width derived files addressed by number: the Merkle tree's perfect nodes
//! (`level-LL.dat`, 32 bytes per node of level LL).
//!
//! They answer the lookups every proof makes with one positioned read each. Nodes are written with
//! `pwrite` at their own offset as the writer completes them; writing the same node again
//! (recovery replay) writes the same bytes. How far they are durable is recorded beside them
//! (see [`crate::embedded::index`]).

use crate::engine::NodeError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Bytes of one tree node.
pub const NODE_WIDTH: u64 = 32;
/// Tree levels a 64-bit tree size can have.
const MAX_LEVELS: usize = 64;

/// The open files; shared by the writer (`pwrite`) and readers (`pread`).
#[derive(Clone)]
pub struct FlatFiles {
    dir: PathBuf,
    levels: Arc<RwLock<Vec<Arc<File>>>>,
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
    /// Opens the files in `dir`, which must hold at least the nodes of a tree of `size` leaves;
    /// what they hold beyond is kept (recovery reads it as a witness, then [`FlatFiles::cut`]s
    /// it). Returns `None` when a file is shorter than that (a machine crash lost writes the
    /// caller counted on): the caller then recomputes the nodes from the log.
    pub fn open(dir: &Path, size: u64) -> std::io::Result<Option<FlatFiles>> {
        let mut levels = Vec::new();
        for level in 0..MAX_LEVELS {
            let count = size >> level;
            let path = level_path(dir, level);
            if count == 0 && !path.exists() {
                break;
            }
            let f = open_rw(&path)?;
            if f.metadata()?.len() < count * NODE_WIDTH {
                return Ok(None);
            }
            levels.push(Arc::new(f));
        }
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
            let len = (size >> level) * NODE_WIDTH;
            if f.metadata()?.len() > len {
                f.set_len(len)?;
            }
        }
        while levels.len() > 1 && (size >> (levels.len() - 1)) == 0 {
            levels.pop();
            std::fs::remove_file(level_path(&self.dir, levels.len()))?;
        }
        Ok(())
    }

    /// Opens the files in `dir` as they are, for checking: nothing is cut or created.
    pub fn open_existing(dir: &Path) -> std::io::Result<FlatFiles> {
        let mut levels = Vec::new();
        while let Ok(f) = File::open(level_path(dir, levels.len())) {
            levels.push(Arc::new(f));
        }
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

    /// Writes consecutive perfect nodes of `level` from `index` on, in one write.
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

    /// Reads perfect node `index` of `level` (the caller checks it is complete in its snapshot).
    pub fn node(&self, level: u32, index: u64) -> std::io::Result<Option<[u8; 32]>> {
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

    /// Reads the perfect nodes `[from, to)` of `level` in one read (none when the level has no
    /// file; the caller checks the range is covered).
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
        for f in levels.iter() {
            f.sync_data()?;
        }
        File::open(&self.dir)?.sync_all()
    }

    fn level(&self, level: usize, create: bool) -> std::io::Result<Option<Arc<File>>> {
        if level >= MAX_LEVELS {
            return Ok(None);
        }
        if let Some(f) = self
            .levels
            .read()
            .map_err(|_| std::io::Error::other("lock poisoned"))?
            .get(level)
        {
            return Ok(Some(f.clone()));
        }
        if !create {
            return Ok(None);
        }
        let mut levels = self
            .levels
            .write()
            .map_err(|_| std::io::Error::other("lock poisoned"))?;
        while levels.len() <= level {
            let f = open_rw(&level_path(&self.dir, levels.len()))?;
            levels.push(Arc::new(f));
        }
        Ok(levels.get(level).cloned())
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
        for seq in 0..5u64 {
            f.put_node(0, seq, &[seq as u8 + 1; 32]).expect("leaf");
        }
        // The perfect nodes of a 4-leaf tree above its leaves.
        f.put_node(1, 0, &[8; 32]).expect("node");
        f.put_node(1, 1, &[9; 32]).expect("node");
        f.put_node(2, 0, &[7; 32]).expect("node");
        assert_eq!(f.node(1, 1).expect("read"), Some([9; 32]));
        assert_eq!(f.node(5, 0).expect("read"), None);
        drop(f);
        // Reopened for 4 leaves: the fifth leaf is kept until cut.
        let f = FlatFiles::open(dir.path(), 4)
            .expect("open")
            .expect("consistent");
        assert_eq!(f.leaves().expect("len"), 5);
        f.cut(4).expect("cut");
        assert_eq!(f.leaves().expect("len"), 4);
        assert_eq!(f.node(2, 0).expect("read"), Some([7; 32]));
        drop(f);
        // For 9 leaves the files are short: the caller must rebuild.
        assert!(FlatFiles::open(dir.path(), 9).expect("open").is_none());
    }
}
