//! Signed checkpoint history of one log: an append-only file of C2SP signed notes.
//!
//! Framing per entry: `len u32 | crc32c(note) u32 | note[len]`. Each entry is fsync'd before it
//! is served, so a checkpoint a client has seen is never forgotten by a restart.
//!
//! Each log signs under the name of its origin ([`crate::keys::log_signer`]). Older versions
//! signed every log under the name stored in the key file (the key's own name); a history they
//! wrote still opens, and the first checkpoint asked of it is signed again under the origin's
//! name, at the same size if the log has not grown (see [`crate::ledger::Ledger`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::Utc;
use veritrail_core::checkpoint::Checkpoint;
use veritrail_core::note::NoteVerifier;

use crate::engine::SignedCheckpoint;
use crate::error::StoreError;

/// The history file and its latest entry.
pub struct Checkpoints {
    path: PathBuf,
    state: Mutex<(File, Option<SignedCheckpoint>)>,
}

impl Checkpoints {
    /// Opens the history at `path`, cutting a torn tail. The latest entry must be signed by
    /// `key`'s public key, under the name of the checkpoint's own origin or (written by an older
    /// version) under `key`'s own name: a checkpoint the log's key did not sign is never trusted.
    pub fn open(path: &Path, key: &NoteVerifier) -> Result<Checkpoints, StoreError> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(StoreError::io(format!("opening {}", path.display())))?;
        if !existed {
            crate::embedded::segment::sync_parent(path)?;
        }
        let notes = read_all(&file, path)?;
        let latest = match notes.last() {
            None => None,
            Some(note) => Some(
                parse(note, key)
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

    /// Makes `signed` durable and the latest. The history only grows: a checkpoint of fewer
    /// leaves than the latest is refused (the layer above issues them one at a time).
    pub fn record(&self, signed: &SignedCheckpoint) -> Result<(), StoreError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| StoreError::Failed("checkpoint lock poisoned".into()))?;
        if let Some(latest) = &state.1 {
            if latest.checkpoint.size == signed.checkpoint.size
                && latest.checkpoint.root != signed.checkpoint.root
            {
                return Err(StoreError::Damaged(format!(
                    "{}: a checkpoint of {} events with another root than the one already signed",
                    self.path.display(),
                    signed.checkpoint.size
                )));
            }
            if latest.checkpoint.size > signed.checkpoint.size {
                return Err(StoreError::Checkpoint(format!(
                    "{}: a checkpoint of {} events cannot follow one of {}",
                    self.path.display(),
                    signed.checkpoint.size,
                    latest.checkpoint.size
                )));
            }
        }
        let note = &signed.note;
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
        state.1 = Some(signed.clone());
        Ok(())
    }
}

/// Opens the latest checkpoint with `key` under the names it may be signed under: the origin the
/// note states (unverified until the signature checks; a key name is not signed, so this only
/// picks the key ID to look for) and the key's own name.
fn parse(note: &str, key: &NoteVerifier) -> Result<SignedCheckpoint, String> {
    let mut names = vec![key.clone()];
    let origin = note.split('\n').next().unwrap_or_default();
    if let Ok(by_origin) = key.with_name(origin) {
        if by_origin.name() != key.name() {
            names.insert(0, by_origin);
        }
    }
    let fail = |e: &dyn std::fmt::Display| {
        let tried: Vec<String> = names.iter().map(NoteVerifier::vkey).collect();
        format!(
            "the latest checkpoint does not verify with {}: {e}",
            tried.join(" or ")
        )
    };
    let opened = veritrail_core::note::open(note, &names).map_err(|e| fail(&e))?;
    let checkpoint = Checkpoint::parse(&opened.text).map_err(|e| fail(&e))?;
    let key_name = opened
        .verified_by
        .first()
        .map(|k| k.name.clone())
        .unwrap_or_default();
    Ok(SignedCheckpoint {
        checkpoint,
        note: note.to_string(),
        key_name,
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
        return Ok(if crate::embedded::segment::rest_is_zero(file, at, len)? {
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
