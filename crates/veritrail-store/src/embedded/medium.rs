//! The medium under the log: the file operations whose failure, or lie, decides what an
//! acknowledgement is worth. The writer appends, syncs and cuts back through [`LogFile`], starts
//! segments and probes the disk through [`Medium`]; [`Os`] is the real file system, and
//! [`sim::SimMedium`] injects faults for the simulation test (`tests/simulation.rs`).
//!
//! What the trait covers is the log's append path: the only place an acknowledged event lives
//! until it is sealed. Readers, the sealer and the derived state (index and tree files) use the
//! file system directly.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use super::segment;

/// The segment file the writer appends to.
pub trait LogFile: Send {
    /// Appends `buf` at the end of the file (not yet durable).
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes, durably.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// Where the log's segments are written.
pub trait Medium: Send + Sync + Debug + 'static {
    /// The writer's handle on the segment at `path`, already open (`file`) and recovered: every
    /// byte in it is durable (recovery synced it).
    fn log_file(&self, path: &Path, file: File) -> Box<dyn LogFile>;
    /// Creates segment `ordinal` in `dir`, durable with its header and its directory entry.
    fn create_segment(
        &self,
        dir: &Path,
        ordinal: u32,
        first_seq: u64,
    ) -> io::Result<Box<dyn LogFile>> {
        let (path, file) = create(dir, ordinal, first_seq)?;
        Ok(self.log_file(&path, file))
    }
    /// Writes, syncs and removes a small file in `dir`: can the disk take appends again?
    fn probe(&self, dir: &Path) -> io::Result<()>;
}

/// The medium of a log, shared by its writer and its readiness check.
pub type SharedMedium = Arc<dyn Medium>;

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct Os;

/// A segment file on the real file system.
struct OsFile(File);

impl LogFile for OsFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)?;
        self.0.sync_all()
    }
}

impl Medium for Os {
    fn log_file(&self, _path: &Path, file: File) -> Box<dyn LogFile> {
        Box::new(OsFile(file))
    }

    fn probe(&self, dir: &Path) -> io::Result<()> {
        let path = dir.join(".probe");
        let result = File::create(&path).and_then(|mut f| {
            f.write_all(&[0u8; 4096])?;
            f.sync_data()
        });
        let _ = std::fs::remove_file(&path);
        result
    }
}

/// Creates segment `ordinal` in `dir` on the file system ([`segment::create`]).
fn create(dir: &Path, ordinal: u32, first_seq: u64) -> io::Result<(std::path::PathBuf, File)> {
    let file = segment::create(dir, ordinal, first_seq).map_err(io::Error::other)?;
    Ok((dir.join(segment::file_name(ordinal)), file))
}

/// Opens a segment for appending at its end.
pub(crate) fn open_for_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).append(true).open(path)
}

pub mod sim {
    //! A seeded, fault-injecting medium. Appends go to real files (so that recovery, reads and
    //! sealing see them), but the medium remembers how much of each file a sync made durable;
    //! [`SimMedium::crash`] then does to the files what a power cut does: whatever was not
    //! synced is lost, or half kept, or left as zeros. Between crashes it fails appends (EIO,
    //! ENOSPC, a torn write: a prefix written, then an error), fails syncs, and fills the disk
    //! until [`SimMedium::set_full`] frees it. With [`Faults::broken_fsync`] a sync reports
    //! success and makes nothing durable: the simulation must then find lost events.

    use std::collections::BTreeMap;
    use std::fs::File;
    use std::io::{self, Write};
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    use super::{LogFile, Medium, Os};

    /// How often each fault strikes, in parts per thousand of the operations it applies to.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Faults {
        /// An append fails with EIO, writing nothing.
        pub append_eio: u32,
        /// An append writes a prefix of its bytes, then fails with EIO.
        pub torn_append: u32,
        /// A sync fails with EIO (the appended bytes are not durable).
        pub sync_eio: u32,
        /// Cutting a file back fails with EIO.
        pub truncate_eio: u32,
        /// Every sync reports success and makes nothing durable: a medium that lies.
        pub broken_fsync: bool,
    }

    /// The simulated medium. Clone it to keep a handle while the log owns another.
    #[derive(Debug, Clone)]
    pub struct SimMedium {
        inner: Arc<Mutex<State>>,
    }

    #[derive(Debug)]
    struct State {
        rng: u64,
        faults: Faults,
        full: bool,
        /// Durable length of every file the medium handed out (ordered: a crash draws from the
        /// seed file by file, in the same order every run).
        durable: BTreeMap<PathBuf, u64>,
        injected: u64,
    }

    impl State {
        /// splitmix64: deterministic for a seed, and enough for choosing faults.
        fn next(&mut self) -> u64 {
            self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn strikes(&mut self, per_mille: u32) -> bool {
            let hit = per_mille > 0 && self.next() % 1000 < u64::from(per_mille);
            self.injected += u64::from(hit);
            hit
        }

        fn below(&mut self, n: u64) -> u64 {
            if n == 0 {
                0
            } else {
                self.next() % n
            }
        }
    }

    fn eio() -> io::Error {
        io::Error::other("injected I/O error (EIO)")
    }

    fn enospc() -> io::Error {
        io::Error::from_raw_os_error(28)
    }

    impl SimMedium {
        /// A medium whose faults are drawn from `seed`.
        pub fn new(seed: u64, faults: Faults) -> SimMedium {
            SimMedium {
                inner: Arc::new(Mutex::new(State {
                    rng: seed,
                    faults,
                    full: false,
                    durable: BTreeMap::new(),
                    injected: 0,
                })),
            }
        }

        fn state(&self) -> std::sync::MutexGuard<'_, State> {
            // A panic while holding it can only come from a test's own assertion.
            self.inner.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// Fills the disk (every append, new segment and probe fails with ENOSPC) or frees it.
        pub fn set_full(&self, full: bool) {
            self.state().full = full;
        }

        /// Faults injected so far.
        pub fn injected(&self) -> u64 {
            self.state().injected
        }

        /// Does to every file what a power cut does to the bytes not synced: each file keeps
        /// its durable length, plus (by the seed) nothing, a prefix of what followed, or that
        /// many zeros. Call it with the log closed, then reopen the log.
        pub fn crash(&self) -> io::Result<()> {
            let mut s = self.state();
            let files: Vec<(PathBuf, u64)> = std::mem::take(&mut s.durable).into_iter().collect();
            for (path, durable) in files {
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue; // sealed and removed since
                };
                let len = meta.len();
                if len <= durable {
                    continue;
                }
                let kept = s.below(len - durable + 1);
                let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                match s.below(3) {
                    0 => f.set_len(durable)?,
                    1 => f.set_len(durable + kept)?,
                    _ => {
                        f.set_len(durable + kept)?;
                        f.write_all_at(&vec![0u8; kept as usize], durable)?;
                    }
                }
                f.sync_all()?;
            }
            Ok(())
        }
    }

    /// A segment file whose durability the medium tracks.
    struct SimFile {
        path: PathBuf,
        file: File,
        len: u64,
        medium: SimMedium,
    }

    impl LogFile for SimFile {
        fn append(&mut self, buf: &[u8]) -> io::Result<()> {
            let mut s = self.medium.state();
            let (full, faults) = (s.full, s.faults);
            let torn = s.strikes(faults.torn_append);
            if full || torn {
                // What reaches the file before the error: any prefix.
                let n = s.below(buf.len() as u64) as usize;
                drop(s);
                self.file.write_all(&buf[..n])?;
                self.len += n as u64;
                return Err(if full { enospc() } else { eio() });
            }
            if s.strikes(faults.append_eio) {
                return Err(eio());
            }
            drop(s);
            self.file.write_all(buf)?;
            self.len += buf.len() as u64;
            Ok(())
        }

        fn sync_data(&mut self) -> io::Result<()> {
            let mut s = self.medium.state();
            let faults = s.faults;
            if s.strikes(faults.sync_eio) {
                return Err(eio());
            }
            if !faults.broken_fsync {
                self.file.sync_data()?;
                s.durable.insert(self.path.clone(), self.len);
            }
            Ok(())
        }

        fn truncate(&mut self, len: u64) -> io::Result<()> {
            let mut s = self.medium.state();
            let faults = s.faults;
            if s.strikes(faults.truncate_eio) {
                return Err(eio());
            }
            self.file.set_len(len)?;
            self.file.sync_all()?;
            self.len = len;
            s.durable.insert(self.path.clone(), len);
            Ok(())
        }
    }

    impl Medium for SimMedium {
        fn log_file(&self, path: &Path, file: File) -> Box<dyn LogFile> {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            self.state().durable.insert(path.to_path_buf(), len);
            Box::new(SimFile {
                path: path.to_path_buf(),
                file,
                len,
                medium: self.clone(),
            })
        }

        fn create_segment(
            &self,
            dir: &Path,
            ordinal: u32,
            first_seq: u64,
        ) -> io::Result<Box<dyn LogFile>> {
            if self.state().full {
                return Err(enospc());
            }
            let (path, file) = super::create(dir, ordinal, first_seq)?;
            Ok(self.log_file(&path, file))
        }

        fn probe(&self, dir: &Path) -> io::Result<()> {
            if self.state().full {
                return Err(enospc());
            }
            Os.probe(dir)
        }
    }
}
