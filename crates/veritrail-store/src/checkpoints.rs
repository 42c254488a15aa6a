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
use veritrail_core::note::{NoteSigner, NoteVerifier};

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
    /// Opens the history at `path`, cutting a torn tail. The latest entry must verify with
    /// `verifier`: a checkpoint the log's key did not sign is never trusted.
    pub fn open(path: &Path, verifier: &NoteVerifier) -> Result<Checkpoints, StoreError> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(StoreError::io(format!("opening {}", path.display())))?;
        if !existed {
            crate::segment::sync_parent(path)?;
        }
        let notes = read_all(&file, path)?;
        let latest = match notes.last() {
            None => None,
            Some(note) => Some(
                parse(note, verifier)
                    .map_err(|e| StoreError::Damaged(format!("{}: {e}", path.display())))?,
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
}

fn parse(note: &str, verifier: &NoteVerifier) -> Result<SignedCheckpoint, String> {
    let checkpoint =
        veritrail_core::checkpoint::open_checkpoint(note, std::slice::from_ref(verifier)).map_err(
            |e| {
                format!(
                    "the latest checkpoint does not verify with {}: {e}",
                    verifier.vkey()
                )
            },
        )?;
    Ok(SignedCheckpoint {
        checkpoint,
        note: note.to_string(),
        seen_at: Utc::now(),
    })
}

/// Reads every intact entry. An entry cut short, or zeros, at the very end is what an
/// interrupted append leaves and is cut off; any other bad entry is damage and an error.
fn read_all(file: &File, path: &Path) -> Result<Vec<String>, StoreError> {
    let io = |what: &str| StoreError::io(format!("{what} {}", path.display()));
    let len = file.metadata().map_err(io("reading"))?.len();
    let mut notes = Vec::new();
    let mut at = 0u64;
    while at < len {
        match read_entry(file, at, len).map_err(io("reading"))? {
            Entry::Note(note) => {
                at += 8 + note.len() as u64;
                notes.push(note);
            }
            Entry::Torn => {
                tracing::warn!(path = %path.display(), offset = at, "cutting a torn checkpoint entry");
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io("opening"))?;
                f.set_len(at)
                    .and_then(|()| f.sync_all())
                    .map_err(io("truncating"))?;
                break;
            }
            Entry::Damaged(why) => {
                return Err(StoreError::Damaged(format!(
                    "{} offset {at}: {why}",
                    path.display()
                )));
            }
        }
    }
    Ok(notes)
}

/// One entry of the history file.
enum Entry {
    Note(String),
    Torn,
    Damaged(&'static str),
}

/// Longest note an entry may hold (a checkpoint note is a few hundred bytes).
const MAX_NOTE: u64 = 1 << 16;

fn read_entry(file: &File, at: u64, len: u64) -> std::io::Result<Entry> {
    if at + 8 > len {
        return Ok(Entry::Torn);
    }
    let mut h = [0u8; 8];
    file.read_exact_at(&mut h, at)?;
    let n = u64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if n == 0 {
        // An empty note is never written: zeros here are an extension the write never filled.
        return Ok(if crate::segment::rest_is_zero(file, at, len)? {
            Entry::Torn
        } else {
            Entry::Damaged("empty entry")
        });
    }
    if n > MAX_NOTE {
        return Ok(Entry::Damaged("impossible entry length"));
    }
    if at + 8 + n > len {
        return Ok(Entry::Torn);
    }
    let mut body = vec![0u8; n as usize];
    file.read_exact_at(&mut body, at + 8)?;
    if crc32c::crc32c(&body) != crc {
        return Ok(Entry::Damaged("checksum mismatch"));
    }
    Ok(String::from_utf8(body).map_or(Entry::Damaged("not UTF-8"), Entry::Note))
}
