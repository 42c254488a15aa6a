//! Signed checkpoint history of one log: an append-only file of C2SP signed notes.
//!
//! Framing per entry: `len u32 | crc32c(note) u32 | note[len]`. Each entry is fsync'd before it
//! is served, so a checkpoint a client has seen is never forgotten by a restart.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use veritrail_core::checkpoint::Checkpoint;
use veritrail_core::note::NoteSigner;

use crate::error::StoreError;

/// A checkpoint with its signed-note text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// The full signed note, as served at `GET /v1/checkpoint`.
    pub note: String,
    /// When this process issued or loaded it (for the checkpoint-age metric).
    pub seen_at: DateTime<Utc>,
}

/// The history file and its latest entry.
pub struct Checkpoints {
    path: PathBuf,
    state: Mutex<(File, Option<SignedCheckpoint>)>,
}

impl Checkpoints {
    /// Opens the history at `path`, keeping the last intact entry and cutting a torn tail.
    pub fn open(path: &Path) -> Result<Checkpoints, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(StoreError::io(format!("opening {}", path.display())))?;
        let notes = read_all(&file, path)?;
        let latest = match notes.last() {
            None => None,
            Some(note) => Some(
                parse(note).map_err(|e| StoreError::Damaged(format!("{}: {e}", path.display())))?,
            ),
        };
        Ok(Checkpoints {
            path: path.to_path_buf(),
            state: Mutex::new((file, latest)),
        })
    }

    /// The latest checkpoint, if any was issued.
    pub fn latest(&self) -> Option<SignedCheckpoint> {
        self.state.lock().ok().and_then(|s| s.1.clone())
    }

    /// Signs `cp`, makes it durable and makes it the latest. A checkpoint no newer than the
    /// latest is not issued again.
    pub fn issue(
        &self,
        cp: Checkpoint,
        signer: &NoteSigner,
    ) -> Result<SignedCheckpoint, StoreError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| StoreError::Failed("checkpoint lock poisoned".into()))?;
        if let Some(latest) = &state.1 {
            if latest.checkpoint.size >= cp.size {
                return Ok(latest.clone());
            }
        }
        let note = signer
            .sign(&cp.to_text())
            .map_err(|e| StoreError::Checkpoint(e.to_string()))?;
        let mut entry = Vec::with_capacity(note.len() + 8);
        entry.extend_from_slice(&(note.len() as u32).to_le_bytes());
        entry.extend_from_slice(&crc32c::crc32c(note.as_bytes()).to_le_bytes());
        entry.extend_from_slice(note.as_bytes());
        let context = format!("appending to {}", self.path.display());
        state
            .0
            .write_all(&entry)
            .and_then(|()| state.0.sync_data())
            .map_err(StoreError::io(context))?;
        let signed = SignedCheckpoint {
            checkpoint: cp,
            note,
            seen_at: Utc::now(),
        };
        state.1 = Some(signed.clone());
        Ok(signed)
    }

    /// Every checkpoint in the history, oldest first.
    pub fn history(&self) -> Result<Vec<SignedCheckpoint>, StoreError> {
        let state = self
            .state
            .lock()
            .map_err(|_| StoreError::Failed("checkpoint lock poisoned".into()))?;
        read_all(&state.0, &self.path)?
            .iter()
            .map(|n| {
                parse(n).map_err(|e| StoreError::Damaged(format!("{}: {e}", self.path.display())))
            })
            .collect()
    }
}

fn parse(note: &str) -> Result<SignedCheckpoint, String> {
    let body_end = note
        .find("\n\n")
        .ok_or("checkpoint note has no signature block")?;
    let checkpoint = Checkpoint::parse(&note[..body_end + 1]).map_err(|e| e.to_string())?;
    Ok(SignedCheckpoint {
        checkpoint,
        note: note.to_string(),
        seen_at: Utc::now(),
    })
}

/// Reads every intact entry; a torn last entry is cut off, damage before it is an error.
fn read_all(file: &File, path: &Path) -> Result<Vec<String>, StoreError> {
    let len = file
        .metadata()
        .map_err(StoreError::io(format!("reading {}", path.display())))?
        .len();
    let mut notes = Vec::new();
    let mut at = 0u64;
    while at < len {
        let mut h = [0u8; 8];
        let entry = (at + 8 <= len)
            .then(|| file.read_exact_at(&mut h, at).ok())
            .flatten()
            .and_then(|()| {
                let n = u64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
                let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
                let mut body = vec![0u8; usize::try_from(n).ok()?.min(1 << 20)];
                (at + 8 + n <= len && n < 1 << 20).then_some(())?;
                file.read_exact_at(&mut body, at + 8).ok()?;
                (crc32c::crc32c(&body) == crc).then_some(())?;
                String::from_utf8(body).ok()
            });
        match entry {
            Some(note) => {
                at += 8 + note.len() as u64;
                notes.push(note);
            }
            None => {
                tracing::warn!(path = %path.display(), offset = at, "cutting a torn checkpoint entry");
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(StoreError::io("opening checkpoints"))?;
                f.set_len(at)
                    .and_then(|()| f.sync_all())
                    .map_err(StoreError::io("truncating checkpoints"))?;
                break;
            }
        }
    }
    Ok(notes)
}
