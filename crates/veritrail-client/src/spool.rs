//! The on-disk spool: batches wait here, in order, while the server cannot take them.
//!
//! # Assumptions about the medium
//!
//! A write that returned and was followed by a successful `fsync` (`sync_data`) survives a
//! crash; a write in progress during a crash may leave any prefix of its bytes, or bytes that
//! read back wrong, at the end of the file. Nothing else rewrites the files.
//!
//! # Format
//!
//! The spool directory holds:
//!
//! - `NNNNNNNNNNNNNNNN.spool`: sixteen decimal digits, strictly increasing in the order the files
//!   were started. Batches are replayed in file order and, within a file, in entry order.
//! - `producer.json`: the producer id and the next free `producer_seq` (see `state`).
//! - `lock`: held with an exclusive advisory lock while a client uses the directory.
//!
//! A spool file is a sequence of entries and nothing else (no header):
//!
//! ```text
//! offset 0        4                  8
//!        | len u32 LE | crc u32 LE | payload: len bytes |
//! ```
//!
//! `crc` is CRC-32C (Castagnoli) of the payload. The payload is one batch exactly as it is sent:
//! a JSON array of one or more event objects, UTF-8.
//!
//! # Rules
//!
//! - Files are only appended to, and a process appends only to files it created: after a
//!   restart the next batch goes to a new file. Each entry is written with one `write_all` and
//!   made durable with `sync_data` before the batch leaves memory; a new file's directory entry
//!   is synced too.
//! - A file is deleted whole once every entry in it is acknowledged by the server (or given up
//!   by the overflow policy). No file is ever rewritten, so the read position is kept in memory
//!   only: after a restart, entries acknowledged in a file that was not yet deleted are sent
//!   again. The server answers a repeated `event_id` with identical content with the original
//!   receipt, so the log still holds each event once.
//! - On opening, each file is scanned and every entry checked (length, checksum, a non-empty
//!   JSON array). At the end of the newest file, an entry that runs past the end of the file, or
//!   the last entry failing its check, is an interrupted write: it is cut off (the file is
//!   truncated to the last good entry) and counted. Any other damage in a file ("corrupt
//!   middle") makes the rest of that file unreadable: it is skipped, counted and logged at error
//!   level, and the entries before it are still replayed.
//! - The total size of the files is capped; an entry that would pass the cap is refused and
//!   the client's overflow policy decides.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::SpoolError;

/// Bytes before each payload: length and checksum.
pub(crate) const ENTRY_HEADER: u64 = 8;
/// The file name's suffix.
const SUFFIX: &str = ".spool";

/// The name of spool file `number`.
pub(crate) fn file_name(number: u64) -> String {
    format!("{number:016}{SUFFIX}")
}

/// The number of a spool file from its name, if it is one.
fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encodes one entry: header and payload.
pub(crate) fn encode_entry(payload: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(payload.len()).ok()?;
    let mut out = Vec::with_capacity(payload.len() + ENTRY_HEADER as usize);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Some(out)
}

/// Splits a payload into its events, each re-serialized on its own; `None` unless the payload
/// is a non-empty JSON array of objects.
pub(crate) fn split_payload(payload: &[u8]) -> Option<Vec<Vec<u8>>> {
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(payload) else {
        return None;
    };
    if items.is_empty() || !items.iter().all(Value::is_object) {
        return None;
    }
    items.iter().map(|v| serde_json::to_vec(v).ok()).collect()
}

/// One spool file as the spool tracks it.
#[derive(Debug)]
struct SpoolFile {
    number: u64,
    path: PathBuf,
    /// End of the readable entries; below `size` when damage cut the rest off.
    end: u64,
    /// Bytes on disk, which count toward the cap.
    size: u64,
    /// Events in the readable entries.
    events: u64,
}

/// A batch read from the spool, with its place so that it can be acknowledged.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The batch's events, each serialized on its own.
    pub events: Vec<Vec<u8>>,
    /// Where it is: the file number and its offset.
    pub pos: EntryPos,
}

/// The place of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryPos {
    file: u64,
    offset: u64,
    next: u64,
    events: u64,
}

/// A checked entry's events and the offset after it.
type ReadEntry = (Vec<Vec<u8>>, u64);

/// What opening the spool found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct OpenReport {
    /// Events waiting to be replayed.
    pub events: u64,
    /// Interrupted writes cut off the end of the newest file.
    pub torn_tails: u64,
    /// Files whose rest was skipped because of damage.
    pub corrupt: u64,
}

/// How the scan of one file ended.
#[derive(Debug, PartialEq, Eq)]
enum ScanEnd {
    Clean,
    /// An entry that runs past the end of the file, or fails its check at the very end.
    Torn,
    /// An entry that fails its check with more bytes after it.
    Corrupt,
}

/// The spool of one directory; see the module documentation for the format.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    file_limit: u64,
    cap: u64,
    files: VecDeque<SpoolFile>,
    /// Offset of the first unacknowledged entry in `files[0]`.
    head: u64,
    /// Events of `files[0]` before `head`.
    head_acked: u64,
    /// The file being appended to, always `files.back()`, and created by this process.
    writer: Option<File>,
    /// A read handle on `files[0]`.
    reader: Option<(u64, File)>,
    next_number: u64,
    /// Bytes of all files.
    bytes: u64,
    /// Events not yet acknowledged.
    events: u64,
    /// Events lost to damage found while reading, not yet reported to the caller.
    lost: u64,
    /// Held for the spool's lifetime so that no other client uses the directory.
    _lock: File,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, locks it and checks every file.
    pub(crate) fn open(
        dir: &Path,
        file_limit: u64,
        cap: u64,
    ) -> Result<(Spool, OpenReport), SpoolError> {
        std::fs::create_dir_all(dir).map_err(|e| SpoolError::io(dir, e))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| SpoolError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked(dir.to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(SpoolError::io(&lock_path, e)),
        }
        let mut numbers = Vec::new();
        for item in std::fs::read_dir(dir).map_err(|e| SpoolError::io(dir, e))? {
            let item = item.map_err(|e| SpoolError::io(dir, e))?;
            if let Some(n) = item.file_name().to_str().and_then(parse_name) {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        let mut report = OpenReport::default();
        let mut files = VecDeque::new();
        let last = numbers.last().copied();
        for &number in &numbers {
            let path = dir.join(file_name(number));
            let (mut f, end) = scan(&path, number)?;
            match end {
                ScanEnd::Clean => {}
                ScanEnd::Torn if Some(number) == last => {
                    // An interrupted append: cut it so that the file ends on an entry boundary.
                    tracing::warn!(file = %path.display(), offset = f.end, bytes = f.size - f.end,
                        "spool: cutting an interrupted write at the end of the newest file");
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| SpoolError::io(&path, e))?;
                    file.set_len(f.end).map_err(|e| SpoolError::io(&path, e))?;
                    file.sync_all().map_err(|e| SpoolError::io(&path, e))?;
                    f.size = f.end;
                    report.torn_tails += 1;
                }
                ScanEnd::Torn | ScanEnd::Corrupt => {
                    tracing::error!(file = %path.display(), offset = f.end, skipped_bytes = f.size - f.end,
                        "spool: damaged entry; the rest of this file is skipped and its batches are lost");
                    report.corrupt += 1;
                }
            }
            if f.events == 0 {
                // Nothing readable is left in it: it only takes room.
                std::fs::remove_file(&path).map_err(|e| SpoolError::io(&path, e))?;
                continue;
            }
            report.events += f.events;
            files.push_back(f);
        }
        let bytes = files.iter().map(|f| f.size).sum();
        let spool = Spool {
            dir: dir.to_path_buf(),
            file_limit,
            cap,
            files,
            head: 0,
            head_acked: 0,
            writer: None,
            reader: None,
            next_number: last.map_or(0, |n| n + 1),
            bytes,
            events: report.events,
            lost: 0,
            _lock: lock,
        };
        Ok((spool, report))
    }

    /// Events waiting to be sent.
    pub(crate) fn events(&self) -> u64 {
        self.events
    }

    /// Bytes of all spool files.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// True while any event waits in the spool.
    pub(crate) fn has_pending(&self) -> bool {
        self.events > 0
    }

    /// Events lost to damage found while reading since the last call.
    pub(crate) fn take_lost(&mut self) -> u64 {
        std::mem::take(&mut self.lost)
    }

    /// Appends one batch (a JSON array of `events` events) and syncs it.
    pub(crate) fn append(&mut self, payload: &[u8], events: u64) -> Result<(), SpoolError> {
        let entry = encode_entry(payload).ok_or_else(|| {
            SpoolError::io(
                &self.dir,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "entry over 4 GiB"),
            )
        })?;
        let needed = entry.len() as u64;
        if self.bytes + needed > self.cap {
            return Err(SpoolError::Full {
                used: self.bytes,
                cap: self.cap,
                needed,
            });
        }
        let rotate = match (&self.writer, self.files.back()) {
            (Some(_), Some(f)) => f.size > 0 && f.size + needed > self.file_limit,
            _ => true,
        };
        if rotate {
            self.start_file()?;
        }
        let (Some(file), Some(meta)) = (self.writer.as_mut(), self.files.back_mut()) else {
            return Err(SpoolError::io(
                &self.dir,
                std::io::Error::other("no spool file open for appending"),
            ));
        };
        let written = file.write_all(&entry).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Leave no partial entry behind for the next append to follow.
            let _ = file.set_len(meta.size);
            return Err(SpoolError::io(&meta.path, e));
        }
        meta.size += needed;
        meta.end += needed;
        meta.events += events;
        self.bytes += needed;
        self.events += events;
        Ok(())
    }

    /// Creates the next file and makes its directory entry durable.
    fn start_file(&mut self) -> Result<(), SpoolError> {
        let number = self.next_number;
        let path = self.dir.join(file_name(number));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| SpoolError::io(&path, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| SpoolError::io(&self.dir, e))?;
        self.next_number += 1;
        self.writer = Some(file);
        self.files.push_back(SpoolFile {
            number,
            path,
            end: 0,
            size: 0,
            events: 0,
        });
        Ok(())
    }

    /// Reads the oldest unacknowledged batch, or `None` when the spool is empty.
    ///
    /// Damage found here (the disk changed since the spool was opened) skips the rest of the
    /// file, as on opening; the events lost are reported by [`Spool::take_lost`].
    pub(crate) fn peek(&mut self) -> Result<Option<Entry>, SpoolError> {
        loop {
            let Some(front) = self.files.front() else {
                self.nothing_left();
                return Ok(None);
            };
            if self.head >= front.end {
                if self.writer.is_some() && self.files.len() == 1 {
                    // The file still being appended to, read to its end.
                    self.nothing_left();
                    return Ok(None);
                }
                self.remove_front()?;
                continue;
            }
            let (number, path, end) = (front.number, front.path.clone(), front.end);
            let offset = self.head;
            match self.read_entry(number, &path, offset, end)? {
                Some((events, next)) => {
                    let pos = EntryPos {
                        file: number,
                        offset,
                        next,
                        events: events.len() as u64,
                    };
                    return Ok(Some(Entry { events, pos }));
                }
                None => {
                    tracing::error!(file = %path.display(), offset,
                        "spool: entry failed its check while being read; the rest of this file is skipped");
                    if let Some(front) = self.files.front_mut() {
                        let lost = front.events.saturating_sub(self.head_acked);
                        self.lost += lost;
                        self.events = self.events.saturating_sub(lost);
                        front.events = self.head_acked;
                        front.end = offset;
                    }
                }
            }
        }
    }

    /// Called when no entry is left to read: the count of waiting events must be zero, or
    /// the caller would keep asking for entries that are not there.
    fn nothing_left(&mut self) {
        if self.events != 0 {
            tracing::error!(
                events = self.events,
                "spool: count of waiting events was off; reset"
            );
            self.events = 0;
        }
    }

    /// Reads and checks the entry at `offset`; `None` if it is damaged.
    fn read_entry(
        &mut self,
        number: u64,
        path: &Path,
        offset: u64,
        end: u64,
    ) -> Result<Option<ReadEntry>, SpoolError> {
        if self.reader.as_ref().map(|(n, _)| *n) != Some(number) {
            let f = File::open(path).map_err(|e| SpoolError::io(path, e))?;
            self.reader = Some((number, f));
        }
        let Some((_, file)) = self.reader.as_ref() else {
            return Ok(None);
        };
        if offset + ENTRY_HEADER > end {
            return Ok(None);
        }
        let mut header = [0u8; ENTRY_HEADER as usize];
        file.read_exact_at(&mut header, offset)
            .map_err(|e| SpoolError::io(path, e))?;
        let (len, crc) = split_header(header);
        let next = offset + ENTRY_HEADER + len;
        if next > end {
            return Ok(None);
        }
        // Bounded by the file's size, checked just above.
        let mut payload = vec![0u8; len as usize];
        file.read_exact_at(&mut payload, offset + ENTRY_HEADER)
            .map_err(|e| SpoolError::io(path, e))?;
        if crc32c::crc32c(&payload) != crc {
            return Ok(None);
        }
        Ok(split_payload(&payload).map(|events| (events, next)))
    }

    /// Marks the entry at `pos` as done, deleting its file once all of the file is done.
    pub(crate) fn ack(&mut self, pos: EntryPos) -> Result<(), SpoolError> {
        let Some(front) = self.files.front() else {
            return Ok(());
        };
        if front.number != pos.file || self.head != pos.offset {
            // Its file was evicted (overflow policy) or damaged while it was being sent.
            return Ok(());
        }
        let end = front.end;
        self.head = pos.next;
        self.head_acked += pos.events;
        self.events -= pos.events.min(self.events);
        if self.head >= end {
            // Every readable entry of the file is done; if it was the file being appended to,
            // the next append starts a new one.
            self.remove_front()?;
        }
        Ok(())
    }

    /// Deletes `files[0]`, whose entries are all done (or lost).
    fn remove_front(&mut self) -> Result<(), SpoolError> {
        let Some(f) = self.files.pop_front() else {
            return Ok(());
        };
        let lost = f.events.saturating_sub(self.head_acked);
        self.events -= lost.min(self.events);
        self.lost += lost;
        self.head = 0;
        self.head_acked = 0;
        self.reader = None;
        if self.files.is_empty() {
            self.writer = None;
        }
        self.bytes -= f.size.min(self.bytes);
        std::fs::remove_file(&f.path).map_err(|e| SpoolError::io(&f.path, e))
    }

    /// Deletes the oldest file that is not `files[0]` when `protect_front` (the file whose entry
    /// is being sent), returning the events given up, or `None` if no file can go.
    pub(crate) fn evict_oldest(&mut self, protect_front: bool) -> Result<Option<u64>, SpoolError> {
        let index = usize::from(protect_front);
        if index >= self.files.len() {
            return Ok(None);
        }
        if index == 0 {
            let before = self.lost;
            self.remove_front()?;
            let lost = self.lost - before;
            // Evictions are counted by the caller, not as damage.
            self.lost = before;
            return Ok(Some(lost));
        }
        let Some(f) = self.files.remove(index) else {
            return Ok(None);
        };
        if self.files.len() == index {
            // It was the file being appended to.
            self.writer = None;
        }
        self.events -= f.events.min(self.events);
        self.bytes -= f.size.min(self.bytes);
        std::fs::remove_file(&f.path).map_err(|e| SpoolError::io(&f.path, e))?;
        Ok(Some(f.events))
    }
}

/// Length and checksum from an entry header.
fn split_header(h: [u8; ENTRY_HEADER as usize]) -> (u64, u32) {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    (u64::from(len), crc)
}

/// Checks every entry of a file, stopping at the first bad one.
fn scan(path: &Path, number: u64) -> Result<(SpoolFile, ScanEnd), SpoolError> {
    let mut file = File::open(path).map_err(|e| SpoolError::io(path, e))?;
    let size = file.metadata().map_err(|e| SpoolError::io(path, e))?.len();
    let mut meta = SpoolFile {
        number,
        path: path.to_path_buf(),
        end: 0,
        size,
        events: 0,
    };
    loop {
        let at = meta.end;
        if at == size {
            return Ok((meta, ScanEnd::Clean));
        }
        if at + ENTRY_HEADER > size {
            return Ok((meta, ScanEnd::Torn));
        }
        let mut header = [0u8; ENTRY_HEADER as usize];
        file.read_exact(&mut header)
            .map_err(|e| SpoolError::io(path, e))?;
        let (len, crc) = split_header(header);
        let next = at + ENTRY_HEADER + len;
        if next > size {
            return Ok((meta, ScanEnd::Torn));
        }
        // Bounded by the file's size, checked just above.
        let mut payload = vec![0u8; len as usize];
        file.read_exact(&mut payload)
            .map_err(|e| SpoolError::io(path, e))?;
        let events = (crc32c::crc32c(&payload) == crc)
            .then(|| count_events(&payload))
            .flatten();
        match events {
            Some(n) => {
                meta.end = next;
                meta.events += n;
            }
            None if next == size => return Ok((meta, ScanEnd::Torn)),
            None => return Ok((meta, ScanEnd::Corrupt)),
        }
    }
}

/// The number of events in a payload, if it is a non-empty JSON array of objects.
fn count_events(payload: &[u8]) -> Option<u64> {
    let items: Vec<serde_json::Map<String, Value>> = serde_json::from_slice(payload).ok()?;
    (!items.is_empty()).then_some(items.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(from: u64, n: u64) -> Vec<u8> {
        let items: Vec<Value> = (from..from + n)
            .map(|i| serde_json::json!({"n": i}))
            .collect();
        serde_json::to_vec(&items).unwrap_or_default()
    }

    fn numbers(e: &Entry) -> Vec<u64> {
        e.events
            .iter()
            .filter_map(|b| serde_json::from_slice::<Value>(b).ok())
            .filter_map(|v| v["n"].as_u64())
            .collect()
    }

    fn drain(s: &mut Spool) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(e) = s.peek().expect("peek") {
            out.extend(numbers(&e));
            s.ack(e.pos).expect("ack");
        }
        out
    }

    fn spool_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read_dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "spool"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn entries_come_back_in_order_across_files_and_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut s, r) = Spool::open(dir.path(), 100, 1 << 20).expect("open");
            assert_eq!(r.events, 0);
            for i in 0..10 {
                s.append(&batch(i * 3, 3), 3).expect("append");
            }
            assert!(spool_files(dir.path()).len() > 1, "rotation by file size");
            assert_eq!(s.events(), 30);
        }
        let (mut s, r) = Spool::open(dir.path(), 100, 1 << 20).expect("reopen");
        assert_eq!(r.events, 30);
        s.append(&batch(30, 2), 2).expect("append after reopen");
        assert_eq!(drain(&mut s), (0..32).collect::<Vec<_>>());
        assert!(!s.has_pending());
        assert!(
            spool_files(dir.path()).is_empty(),
            "acknowledged files are deleted"
        );
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn a_second_spool_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = Spool::open(dir.path(), 1 << 20, 1 << 20).expect("open");
        assert!(matches!(
            Spool::open(dir.path(), 1 << 20, 1 << 20),
            Err(SpoolError::Locked(_))
        ));
    }

    #[test]
    fn a_torn_tail_is_cut_and_later_entries_append_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut s, _) = Spool::open(dir.path(), 1 << 20, 1 << 20).expect("open");
            s.append(&batch(0, 2), 2).expect("append");
            s.append(&batch(2, 2), 2).expect("append");
        }
        let path = spool_files(dir.path())[0].clone();
        let len = std::fs::metadata(&path).expect("meta").len();
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(len - 3).expect("tear");
        drop(f);
        let (mut s, r) = Spool::open(dir.path(), 1 << 20, 1 << 20).expect("reopen");
        assert_eq!((r.events, r.torn_tails, r.corrupt), (2, 1, 0));
        s.append(&batch(4, 1), 1).expect("append");
        assert_eq!(drain(&mut s), vec![0, 1, 4]);
    }

    #[test]
    fn corrupt_middle_skips_the_rest_of_that_file_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut s, _) = Spool::open(dir.path(), 60, 1 << 20).expect("open");
            for i in 0..6 {
                s.append(&batch(i * 2, 2), 2).expect("append");
            }
        }
        let files = spool_files(dir.path());
        assert!(files.len() >= 2, "{files:?}");
        // Flip a payload byte of the first entry of the first file, which has more after it.
        let mut bytes = std::fs::read(&files[0]).expect("read");
        let first_len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        assert!(
            bytes.len() > 8 + first_len,
            "the first file holds two entries"
        );
        bytes[9] ^= 0x40;
        std::fs::write(&files[0], &bytes).expect("write");
        let (mut s, r) = Spool::open(dir.path(), 60, 1 << 20).expect("reopen");
        assert_eq!(r.corrupt, 1);
        let got = drain(&mut s);
        assert!(!got.contains(&0) && !got.contains(&2), "{got:?}");
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(got, sorted, "order holds");
        assert_eq!(got.last(), Some(&11), "later files survive");
    }

    #[test]
    fn the_cap_refuses_entries_and_eviction_frees_room() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = Spool::open(dir.path(), 40, 120).expect("open");
        let mut appended = 0;
        while s.append(&batch(appended, 1), 1).is_ok() {
            appended += 1;
        }
        assert!(appended >= 2);
        assert!(s.bytes() <= 120);
        assert!(matches!(
            s.append(&batch(99, 1), 1),
            Err(SpoolError::Full { .. })
        ));
        let before = s.events();
        let evicted = s.evict_oldest(true).expect("evict");
        assert!(evicted.is_some_and(|n| n > 0));
        assert_eq!(s.events(), before - evicted.unwrap_or(0));
        s.append(&batch(99, 1), 1).expect("fits after eviction");
        let got = drain(&mut s);
        assert_eq!(got.first(), Some(&0), "the protected front file stays");
        assert_eq!(got.last(), Some(&99));
    }

    #[test]
    fn names_are_sixteen_digits() {
        assert_eq!(file_name(7), "0000000000000007.spool");
        assert_eq!(parse_name("0000000000000007.spool"), Some(7));
        assert_eq!(parse_name("7.spool"), None);
        assert_eq!(parse_name("000000000000000x.spool"), None);
    }
}
