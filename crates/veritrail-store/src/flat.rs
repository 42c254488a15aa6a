//! Fixed-width derived files addressed by number: record positions (`pos.dat`, 8 bytes per seq)
//! and the Merkle tree's perfect nodes (`level-LL.dat`, 32 bytes per node of level LL).
//!
//! They answer the two lookups every read and proof makes with one positioned read each, instead
//! of a search through an LSM tree. Entries are written with `pwrite` at their own offset before
//! the index batch that counts them commits, so every entry below the committed `indexed_size`
//! is in place; writing the same entry again (recovery replay) writes the same bytes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Bytes of one position entry.
pub const POS_WIDTH: u64 = 8;
/// Bytes of one tree node.
pub const NODE_WIDTH: u64 = 32;
/// Tree levels a 64-bit tree size can have.
const MAX_LEVELS: usize = 64;

/// The open files; shared by the writer (`pwrite`) and readers (`pread`).
#[derive(Clone)]
pub struct FlatFiles {
    dir: PathBuf,
    pos: Arc<File>,
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
    /// Opens the files in `dir` and cuts them to what a tree of `size` leaves holds. Returns
    /// `None` when a file is shorter than that (a machine crash lost writes the index kept):
    /// the caller then rebuilds the derived state from the log.
    pub fn open(dir: &Path, size: u64) -> std::io::Result<Option<FlatFiles>> {
        let pos = open_rw(&dir.join("pos.dat"))?;
        if !fit(&pos, size * POS_WIDTH)? {
            return Ok(None);
        }
        let mut levels = Vec::new();
        for level in 0..MAX_LEVELS {
            let count = size >> level;
            let path = level_path(dir, level);
            if count == 0 {
                if path.exists() {
                    std::fs::remove_file(&path)?;
                }
                continue;
            }
            let f = open_rw(&path)?;
            if !fit(&f, count * NODE_WIDTH)? {
                return Ok(None);
            }
            levels.push(Arc::new(f));
        }
        Ok(Some(FlatFiles {
            dir: dir.to_path_buf(),
            pos: Arc::new(pos),
            levels: Arc::new(RwLock::new(levels)),
        }))
    }

    /// Writes the position of `seq`.
    pub fn put_pos(&self, seq: u64, packed: u64) -> std::io::Result<()> {
        self.pos
            .write_all_at(&packed.to_be_bytes(), seq * POS_WIDTH)
    }

    /// Writes perfect node `index` of `level`.
    pub fn put_node(&self, level: u32, index: u64, hash: &[u8; 32]) -> std::io::Result<()> {
        self.level(level as usize, true)?
            .ok_or_else(|| std::io::Error::other("tree level out of range"))?
            .write_all_at(hash, index * NODE_WIDTH)
    }

    /// Reads the position of `seq` (the caller checks `seq` is below its snapshot's size).
    pub fn pos(&self, seq: u64) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        self.pos.read_exact_at(&mut b, seq * POS_WIDTH)?;
        Ok(u64::from_be_bytes(b))
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

    /// Reads the positions of `[from, to)` in one read (the caller checks the range is covered).
    pub fn pos_range(&self, from: u64, to: u64) -> std::io::Result<Vec<u64>> {
        let mut b = vec![0u8; (to.saturating_sub(from) * POS_WIDTH) as usize];
        self.pos.read_exact_at(&mut b, from * POS_WIDTH)?;
        Ok(b.chunks_exact(POS_WIDTH as usize)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
            .collect())
    }

    /// Reads leaf hashes (level-0 nodes) `[from, to)` in one read (the caller checks the range
    /// is covered).
    pub fn leaf_range(&self, from: u64, to: u64) -> std::io::Result<Vec<[u8; 32]>> {
        let Some(f) = self.level(0, false)? else {
            return Ok(Vec::new());
        };
        let mut b = vec![0u8; (to.saturating_sub(from) * NODE_WIDTH) as usize];
        f.read_exact_at(&mut b, from * NODE_WIDTH)?;
        Ok(b.chunks_exact(NODE_WIDTH as usize)
            .map(|c| c.try_into().unwrap_or_default())
            .collect())
    }

    /// True when every entry of leaves `[from, to)` (positions, and the nodes those leaves
    /// complete) holds data: a file the file system extended but never filled reads as zeros,
    /// and no position (ordinals start at 1) or SHA-256 node is zero.
    pub fn written(&self, from: u64, to: u64) -> std::io::Result<bool> {
        for seq in from..to {
            if self.pos(seq)? == 0 {
                return Ok(false);
            }
        }
        for level in 0..MAX_LEVELS as u32 {
            let (a, b) = (from >> level, to >> level);
            if b == 0 {
                break;
            }
            for index in a..b {
                if self.node(level, index)?.is_none_or(|h| h == [0u8; 32]) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Number of position entries the file holds.
    pub fn pos_entries(&self) -> std::io::Result<u64> {
        Ok(self.pos.metadata()?.len() / POS_WIDTH)
    }

    /// Makes every write so far durable.
    pub fn sync(&self) -> std::io::Result<()> {
        self.pos.sync_data()?;
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

/// Cuts `f` to `len` bytes if longer; false if it is shorter.
fn fit(f: &File, len: u64) -> std::io::Result<bool> {
    let have = f.metadata()?.len();
    if have < len {
        return Ok(false);
    }
    if have > len {
        f.set_len(len)?;
    }
    Ok(true)
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
            f.put_pos(seq, seq * 100 + 1).expect("pos");
            f.put_node(0, seq, &[seq as u8 + 1; 32]).expect("leaf");
        }
        // The perfect nodes of a 4-leaf tree above its leaves.
        f.put_node(1, 0, &[8; 32]).expect("node");
        f.put_node(1, 1, &[9; 32]).expect("node");
        f.put_node(2, 0, &[7; 32]).expect("node");
        assert_eq!(f.pos(3).expect("read"), 301);
        assert_eq!(f.node(1, 1).expect("read"), Some([9; 32]));
        assert_eq!(f.node(5, 0).expect("read"), None);
        drop(f);
        // Reopened for 4 leaves: the fifth position and leaf are cut.
        let f = FlatFiles::open(dir.path(), 4)
            .expect("open")
            .expect("consistent");
        assert_eq!(f.pos_entries().expect("len"), 4);
        assert_eq!(f.node(2, 0).expect("read"), Some([7; 32]));
        drop(f);
        // Entries the file system extended but never wrote read as zeros and are noticed.
        let f = FlatFiles::open(dir.path(), 4)
            .expect("open")
            .expect("consistent");
        assert!(f.written(0, 4).expect("check"));
        f.put_node(0, 3, &[0; 32]).expect("zero a leaf");
        assert!(
            !f.written(2, 4).expect("check"),
            "a zero leaf hash is an unwritten entry"
        );
        f.put_pos(1, 0).expect("zero a position");
        assert!(
            !f.written(0, 2).expect("check"),
            "a zero position is an unwritten entry"
        );
        drop(f);
        // For 9 leaves the files are short: the caller must rebuild.
        assert!(FlatFiles::open(dir.path(), 9).expect("open").is_none());
    }
}
