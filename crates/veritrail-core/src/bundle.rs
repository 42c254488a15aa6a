//! Export bundles: a selection of the log's events that an auditor verifies offline with nothing
//! but the log's public key (a C2SP verifier key, see [`crate::note`]).
//!
//! # Format (version 1)
//!
//! A bundle is NDJSON: UTF-8 text, one JSON object per line, lines separated by `\n`. Key order
//! inside a line does not matter; hashes are standard base64 with padding (44 characters).
//!
//! **Line 1, the header:**
//!
//! ```text
//! {"type":"veritrail-bundle","version":1,"origin":<string>,"tree_size":<u64>,"count":<u64>,
//!  "filter":{<name>:<value>,...},"checkpoint":<string>,"manifest":<string>}
//! ```
//!
//! (shown on two lines here; it is one line in a bundle)
//!
//! * `origin`, `tree_size`: the log and the tree size the bundle is proven against.
//! * `count`: the number of event lines that follow.
//! * `filter`: the selection that produced the export, as an object of name → value strings
//!   (names as in [`crate::query::Filter`], e.g. `"actor_id":"alice"`); `{}` for everything.
//! * `checkpoint`: the complete signed note (text, blank line, signature lines) of the log's
//!   C2SP checkpoint at `tree_size` (see [`crate::checkpoint`]).
//! * `manifest`: the complete signed note of the manifest (below), signed by the same key.
//!
//! **Lines 2 to `count` + 1, one per event, in strictly increasing `leaf_index` order:**
//!
//! ```text
//! {"type":"event","leaf_index":<u64>,"leaf_hash":<base64>,"leaf":<leaf document>,"proof":[<base64>,...]}
//! ```
//!
//! * `leaf`: the leaf document exactly as [`crate::event::Record::to_value`] produces it.
//! * `leaf_hash`: RFC 9162 leaf hash of the RFC 8785 canonical bytes of `leaf`
//!   ([`crate::hash::leaf_hash`] of [`crate::event::Record::canonical_bytes`]).
//! * `proof`: the RFC 9162 inclusion proof of `leaf_index` in the tree of `tree_size` leaves,
//!   bottom-up.
//!
//! No other fields are allowed in either kind of line: nothing outside the signed notes and the
//! hashed leaves may ride along looking authoritative. The verifier hashes `leaf` as it stands
//! (its canonical bytes), so what the auditor reads is exactly what the log signed.
//!
//! **The manifest** is a signed note whose text is these lines, each ending in `\n`:
//!
//! ```text
//! veritrail-export/v1
//! <origin>
//! <tree_size, decimal>
//! <root hash, base64>
//! <count, decimal>
//! <filter as one line of RFC 8785 canonical JSON>
//! <leaf_index> <leaf_hash base64>      (one line per exported event, increasing leaf_index)
//! ```
//!
//! Decimals have no sign and no leading zeros. The first line keeps a manifest from ever being
//! read as a checkpoint (whose first line is the origin and second a number) or vice versa.
//! Origin, tree size and root must equal the checkpoint's.
//!
//! # What verification proves
//!
//! The checkpoint signature fixes the tree; each inclusion proof shows its event is in that tree
//! at its index; the manifest signature fixes *which* events the log exported. Completeness
//! comes from the manifest's list: a dropped, inserted, duplicated or reordered event line is
//! found by comparing the event lines against it, and [`verify`] names the leaf concerned.
//!
//! Both notes are checked with the verifier key of the log: since checkpoints are signed under
//! the name of their origin, the key's name must also name the checkpoint's origin
//! ([`names_log`]; [`Problem::WrongLog`] otherwise). Bundles of older versions, signed under the
//! origin prefix for every tenant, verify with that older key, whose name covers every origin
//! below the prefix.

use std::collections::HashSet;
use std::fmt;

use serde_json::{Map, Value};

use crate::canonical::{self, CanonicalError};
use crate::checkpoint::Checkpoint;
use crate::hash::{from_b64, leaf_hash, to_b64, Hash};
use crate::merkle::verify_inclusion;
use crate::note::{open, NoteError, NoteVerifier};

/// The header line's `type`.
pub const BUNDLE_TYPE: &str = "veritrail-bundle";
/// The only bundle format version this module writes and reads.
pub const BUNDLE_VERSION: u64 = 1;
/// An event line's `type`.
pub const EVENT_TYPE: &str = "event";
/// First line of every manifest text.
pub const MANIFEST_MAGIC: &str = "veritrail-export/v1";

/// Fields a header line may carry.
const HEADER_FIELDS: [&str; 8] = [
    "type",
    "version",
    "origin",
    "tree_size",
    "count",
    "filter",
    "checkpoint",
    "manifest",
];
/// Fields an event line may carry.
const EVENT_FIELDS: [&str; 5] = ["type", "leaf_index", "leaf_hash", "leaf", "proof"];

/// One exported event as the manifest lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Position of the event's leaf in the log.
    pub leaf_index: u64,
    /// RFC 9162 leaf hash of the event's leaf document.
    pub leaf_hash: Hash,
}

/// Why a bundle could not be written.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The origin is empty or holds a control character, so it cannot be one manifest line.
    #[error("origin {0:?} is empty or contains a control character")]
    BadOrigin(String),
    /// A filter name appears twice; a JSON object would silently keep only one of them.
    #[error("filter name {0:?} is given more than once")]
    DuplicateFilterName(String),
    /// Manifest entries must be in strictly increasing leaf order.
    #[error("manifest entry for leaf {0} is not after the previous entry")]
    EntriesOutOfOrder(u64),
    /// A manifest entry names a leaf the tree does not have.
    #[error("manifest entry for leaf {leaf_index} is outside the tree of size {tree_size}")]
    EntryOutOfRange {
        /// The entry's leaf index.
        leaf_index: u64,
        /// The manifest's tree size.
        tree_size: u64,
    },
    /// The filter has no canonical JSON form (cannot happen for string values; reported rather
    /// than assumed).
    #[error("filter: {0}")]
    Canonical(#[from] CanonicalError),
}

/// The filter as one line of RFC 8785 canonical JSON, refusing duplicate names.
fn filter_json(filter: &[(String, String)]) -> Result<String, BundleError> {
    let mut map = Map::new();
    for (name, value) in filter {
        if map
            .insert(name.clone(), Value::String(value.clone()))
            .is_some()
        {
            return Err(BundleError::DuplicateFilterName(name.clone()));
        }
    }
    let bytes = canonical::to_vec(&Value::Object(map))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Checks that entries are strictly increasing and inside the tree, as the verifier demands.
fn check_entries(tree_size: u64, entries: &[ManifestEntry]) -> Result<(), BundleError> {
    let mut previous: Option<u64> = None;
    for e in entries {
        if e.leaf_index >= tree_size {
            return Err(BundleError::EntryOutOfRange {
                leaf_index: e.leaf_index,
                tree_size,
            });
        }
        if previous.is_some_and(|p| p >= e.leaf_index) {
            return Err(BundleError::EntriesOutOfOrder(e.leaf_index));
        }
        previous = Some(e.leaf_index);
    }
    Ok(())
}

/// The manifest's note text (see the module docs), ready for [`crate::note::NoteSigner::sign`].
///
/// Fails rather than write a manifest the verifier would reject: a bad origin, a repeated
/// filter name, or entries out of order or outside the tree.
pub fn manifest_text(
    origin: &str,
    tree_size: u64,
    root: &Hash,
    filter: &[(String, String)],
    entries: &[ManifestEntry],
) -> Result<String, BundleError> {
    // The same rule as a checkpoint origin: one non-empty line a note may carry.
    if origin.is_empty() || origin.chars().any(|c| c < ' ') {
        return Err(BundleError::BadOrigin(origin.to_owned()));
    }
    check_entries(tree_size, entries)?;
    let filter = filter_json(filter)?;
    let mut text = format!(
        "{MANIFEST_MAGIC}\n{origin}\n{tree_size}\n{}\n{}\n{filter}\n",
        to_b64(root),
        entries.len()
    );
    for e in entries {
        text.push_str(&format!("{} {}\n", e.leaf_index, to_b64(&e.leaf_hash)));
    }
    Ok(text)
}

/// The header line (no trailing newline). `checkpoint_note` and `manifest_note` are whole
/// signed notes; `count` is the number of event lines that will follow.
///
/// Fails only on a repeated filter name.
pub fn header_line(
    origin: &str,
    tree_size: u64,
    count: u64,
    filter: &[(String, String)],
    checkpoint_note: &str,
    manifest_note: &str,
) -> Result<String, BundleError> {
    Ok(format!(
        "{{\"type\":\"{BUNDLE_TYPE}\",\"version\":{BUNDLE_VERSION},\"origin\":{},\"tree_size\":{tree_size},\
         \"count\":{count},\"filter\":{},\"checkpoint\":{},\"manifest\":{}}}",
        Value::from(origin),
        filter_json(filter)?,
        Value::from(checkpoint_note),
        Value::from(manifest_note),
    ))
}

/// One event line (no trailing newline). `leaf` must be the [`crate::event::Record::to_value`]
/// form whose leaf hash is `leaf_hash`; `proof` its inclusion proof at the bundle's tree size.
pub fn event_line(leaf_index: u64, leaf_hash: &Hash, leaf: &Value, proof: &[Hash]) -> String {
    let proof: Vec<Value> = proof.iter().map(|h| Value::from(to_b64(h))).collect();
    format!(
        "{{\"type\":\"{EVENT_TYPE}\",\"leaf_index\":{leaf_index},\"leaf_hash\":\"{}\",\"leaf\":{leaf},\"proof\":{}}}",
        to_b64(leaf_hash),
        Value::Array(proof),
    )
}

/// One thing wrong with a bundle. `Display` gives a one-line message for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A line (1-based) is not what the format requires; `why` says what is wrong.
    #[error("line {line}: {why}")]
    Malformed {
        /// 1-based line number in the bundle.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
    /// The note carries a signature by the given key (name and key ID match) that does not
    /// verify: the note's text was changed after signing.
    #[error(
        "the {what}'s signature by this key does not verify: its text was changed after signing"
    )]
    BadSignature {
        /// `"checkpoint"` or `"manifest"`.
        what: &'static str,
    },
    /// The note carries no signature by the given key at all.
    #[error(
        "the {what} is not signed by this key: wrong public key, or a bundle from another log"
    )]
    UnknownKey {
        /// `"checkpoint"` or `"manifest"`.
        what: &'static str,
    },
    /// The checkpoint's origin is not the log the key is named after. A log's key is named after
    /// its origin (C2SP tlog-checkpoint), and a key named after an origin prefix (the one name
    /// of every tenant's key in older versions) covers the origins below it. One secret signs
    /// every tenant's log, and a key name is not signed, so without this check a signature line
    /// renamed to another tenant's key would pass for that tenant's.
    #[error("the checkpoint is of the log {}, which this key ({}) does not name: a bundle of another log", one_line(.origin), one_line(.key_name))]
    WrongLog {
        /// The checkpoint's origin.
        origin: String,
        /// The verifier key's name.
        key_name: String,
    },
    /// The manifest disagrees with the checkpoint (origin, size, root) or the header (count,
    /// filter).
    #[error("the manifest does not match: {why}")]
    ManifestMismatch {
        /// Which values differ.
        why: String,
    },
    /// The header's origin or tree size disagrees with the checkpoint.
    #[error("the header does not match the checkpoint: {why}")]
    HeaderMismatch {
        /// Which values differ.
        why: String,
    },
    /// The event's leaf does not hash to the manifest's hash for its index, or to its line's
    /// `leaf_hash`: its content was changed.
    #[error("leaf {leaf_index}{}: event was altered; its content does not hash to the value the log signed", id_note(.event_id))]
    Altered {
        /// The line's leaf index.
        leaf_index: u64,
        /// The event ID the (altered) leaf claims, if it has one.
        event_id: Option<String>,
    },
    /// The inclusion proof does not lead from the leaf to the checkpoint's root.
    #[error("leaf {leaf_index}: inclusion proof does not verify against the checkpoint's root")]
    BadProof {
        /// The line's leaf index.
        leaf_index: u64,
    },
    /// The manifest lists this leaf but no event line carries it.
    #[error("leaf {leaf_index}: listed in the signed manifest but missing from the bundle")]
    Missing {
        /// The missing leaf index.
        leaf_index: u64,
    },
    /// An event line carries a leaf the manifest does not list.
    #[error("leaf {leaf_index}: present in the bundle but not in the signed manifest (inserted)")]
    Inserted {
        /// The inserted line's leaf index.
        leaf_index: u64,
    },
    /// The event line is out of manifest order. Of a set of misplaced lines, the fewest whose
    /// moving restores order are named (for two swapped lines, one of them).
    #[error("leaf {leaf_index}: event line is out of order (events must follow the manifest's increasing leaf order)")]
    Reordered {
        /// The misplaced line's leaf index.
        leaf_index: u64,
    },
    /// A second event line for a leaf already seen.
    #[error("leaf {leaf_index}: event appears more than once")]
    Duplicate {
        /// The repeated leaf index.
        leaf_index: u64,
    },
}

/// True when a key named `key_name` may sign the log `origin`: the key is named after the origin,
/// or (a key of an older version, named after the origin prefix) the origin is `<key_name>/…`.
pub fn names_log(key_name: &str, origin: &str) -> bool {
    origin == key_name
        || origin
            .strip_prefix(key_name)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// ` (event_id …)` for messages.
fn id_note(event_id: &Option<String>) -> String {
    event_id
        .as_ref()
        .map_or_else(String::new, |id| format!(" (event_id {})", one_line(id)))
}

/// Escapes control characters, so that a hostile value cannot break a one-line message.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The log origin, from the checkpoint text (else the header). Trust it only if [`Report::ok`].
    pub origin: Option<String>,
    /// The tree size, from the checkpoint text (else the header). Trust it only if [`Report::ok`].
    pub tree_size: Option<u64>,
    /// Event lines that could be read and were checked.
    pub events_checked: u64,
    /// Everything found wrong; signature problems come first.
    pub problems: Vec<Problem>,
}

impl Report {
    /// True iff no problem was found: the bundle is authentic and complete.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ok() {
            return write!(f, "OK: {} events verified", self.events_checked);
        }
        let n = self.problems.len();
        write!(f, "FAILED: {n} problem{}", if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "\n- {p}")?;
        }
        Ok(())
    }
}

/// Verifies a whole bundle against the log's verifier key. Never panics; reports every problem.
pub fn verify(bundle: &str, vkey: &NoteVerifier) -> Report {
    verify_lines(bundle.lines(), vkey)
}

/// Like [`verify`], for a bundle read line by line (lines without their terminators). Memory
/// grows with the number of events (a few words each), not with their size.
pub fn verify_lines<'a>(lines: impl Iterator<Item = &'a str>, vkey: &NoteVerifier) -> Report {
    let mut v = Verifier::new(vkey);
    let mut empty = true;
    for (i, text) in lines.enumerate() {
        empty = false;
        v.line(i + 1, text);
    }
    if empty {
        v.malformed(1, "the bundle is empty: no header line");
    }
    v.finish()
}

/// A parsed manifest text.
#[derive(Debug)]
struct Manifest {
    origin: String,
    tree_size: u64,
    root: Hash,
    count: u64,
    /// The canonical filter line, compared as text.
    filter: String,
    entries: Vec<ManifestEntry>,
}

/// A decimal with no sign and no leading zeros, so that each number has exactly one text.
fn parse_decimal(s: &str) -> Option<u64> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

/// Canonical JSON of a filter object whose values are all strings, or `None`.
fn filter_canonical(v: &Value) -> Option<String> {
    let obj = v.as_object()?;
    if !obj.values().all(Value::is_string) {
        return None;
    }
    let bytes = canonical::to_vec(v).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Reads one `<leaf_index> <leaf_hash>` line.
fn parse_entry(line: &str) -> Result<ManifestEntry, String> {
    let bad = || format!("entry {:?} is not `<leaf index> <base64 leaf hash>`", line);
    let (index, hash) = line.split_once(' ').ok_or_else(bad)?;
    let leaf_index = parse_decimal(index).ok_or_else(bad)?;
    let leaf_hash = from_b64(hash).map_err(|_| bad())?;
    Ok(ManifestEntry {
        leaf_index,
        leaf_hash,
    })
}

impl Manifest {
    /// Parses a manifest text strictly; the error says what is wrong.
    fn parse(text: &str) -> Result<Manifest, String> {
        let body = text
            .strip_suffix('\n')
            .ok_or("text does not end with a newline")?;
        let mut lines = body.split('\n');
        let mut next = |what: &str| {
            lines
                .next()
                .ok_or_else(|| format!("ends before its {what} line"))
        };
        let magic = next("first")?;
        if magic != MANIFEST_MAGIC {
            return Err(format!("first line is {magic:?}, not {MANIFEST_MAGIC:?}"));
        }
        let origin = next("origin")?.to_owned();
        let tree_size = next("tree size")?;
        let tree_size = parse_decimal(tree_size)
            .ok_or_else(|| format!("tree size {tree_size:?} is not a decimal"))?;
        let root = from_b64(next("root")?).map_err(|e| format!("root: {e}"))?;
        let count = next("count")?;
        let count =
            parse_decimal(count).ok_or_else(|| format!("count {count:?} is not a decimal"))?;
        let filter = next("filter")?.to_owned();
        let entries = lines.map(parse_entry).collect::<Result<Vec<_>, _>>()?;
        let m = Manifest {
            origin,
            tree_size,
            root,
            count,
            filter,
            entries,
        };
        m.check()?;
        Ok(m)
    }

    /// The rules beyond line syntax: canonical filter, entry order and range, count.
    fn check(&self) -> Result<(), String> {
        if self.origin.is_empty() {
            return Err("origin is empty".into());
        }
        let canonical = serde_json::from_str(&self.filter)
            .ok()
            .and_then(|v| filter_canonical(&v));
        if canonical.as_deref() != Some(self.filter.as_str()) {
            return Err(format!(
                "filter {:?} is not canonical JSON of name/value strings",
                self.filter
            ));
        }
        check_entries(self.tree_size, &self.entries).map_err(|e| e.to_string())?;
        if u64::try_from(self.entries.len()).ok() != Some(self.count) {
            return Err(format!(
                "count is {} but {} entries are listed",
                self.count,
                self.entries.len()
            ));
        }
        Ok(())
    }

    /// The listed hash of `leaf_index`, if the manifest lists it.
    fn hash_of(&self, leaf_index: u64) -> Option<Hash> {
        let at = self
            .entries
            .binary_search_by_key(&leaf_index, |e| e.leaf_index)
            .ok()?;
        self.entries.get(at).map(|e| e.leaf_hash)
    }
}

/// Reads field `name` of `obj` with `read`, recording why it is absent or unusable.
fn field<'a, T>(
    obj: &'a Map<String, Value>,
    name: &str,
    want: &str,
    whys: &mut Vec<String>,
    read: impl FnOnce(&'a Value) -> Option<T>,
) -> Option<T> {
    let Some(value) = obj.get(name) else {
        whys.push(format!("field `{name}` is missing"));
        return None;
    };
    let got = read(value);
    if got.is_none() {
        whys.push(format!("field `{name}` must be {want}"));
    }
    got
}

/// Records every field not in `known`: unsigned extras could pass for part of the evidence.
fn check_fields(obj: &Map<String, Value>, known: &[&str], whys: &mut Vec<String>) {
    for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
        whys.push(format!(
            "unexpected field {key:?}, which no signature covers"
        ));
    }
}

/// The header's fields, each `None` when absent or unusable (and then a reason is recorded).
struct Header {
    origin: Option<String>,
    tree_size: Option<u64>,
    count: Option<u64>,
    filter: Option<String>,
    checkpoint: Option<String>,
    manifest: Option<String>,
}

/// Reads the header's fields, recording every problem in `whys`.
fn read_header(obj: &Map<String, Value>, whys: &mut Vec<String>) -> Header {
    check_fields(obj, &HEADER_FIELDS, whys);
    let version = obj.get("version").and_then(Value::as_u64);
    if version != Some(BUNDLE_VERSION) {
        whys.push(format!(
            "field `version` must be {BUNDLE_VERSION}, the only version this verifier reads"
        ));
    }
    let string = |v: &Value| v.as_str().map(str::to_owned);
    Header {
        origin: field(obj, "origin", "a string", whys, string),
        tree_size: field(
            obj,
            "tree_size",
            "an unsigned 64-bit integer",
            whys,
            Value::as_u64,
        ),
        count: field(
            obj,
            "count",
            "an unsigned 64-bit integer",
            whys,
            Value::as_u64,
        ),
        filter: field(
            obj,
            "filter",
            "an object of strings",
            whys,
            filter_canonical,
        ),
        checkpoint: field(obj, "checkpoint", "a string (a signed note)", whys, string),
        manifest: field(obj, "manifest", "a string (a signed note)", whys, string),
    }
}

/// An event line's fields.
struct EventLine<'a> {
    leaf_index: u64,
    leaf_hash: Hash,
    leaf: &'a Value,
    proof: Vec<Hash>,
}

/// A base64 SHA-256 hash in a JSON string.
fn read_hash(v: &Value) -> Option<Hash> {
    v.as_str().and_then(|s| from_b64(s).ok())
}

/// Reads an event line's fields; the error lists everything missing or unusable.
fn read_event(obj: &Map<String, Value>) -> Result<EventLine<'_>, String> {
    let mut whys = Vec::new();
    let hashes = |v: &Value| {
        v.as_array()?
            .iter()
            .map(read_hash)
            .collect::<Option<Vec<Hash>>>()
    };
    let leaf_index = field(
        obj,
        "leaf_index",
        "an unsigned 64-bit integer",
        &mut whys,
        Value::as_u64,
    );
    let leaf_hash = field(
        obj,
        "leaf_hash",
        "a base64 SHA-256 hash",
        &mut whys,
        read_hash,
    );
    let leaf = field(obj, "leaf", "an object", &mut whys, |v| {
        v.is_object().then_some(v)
    });
    let proof = field(
        obj,
        "proof",
        "an array of base64 SHA-256 hashes",
        &mut whys,
        hashes,
    );
    match (leaf_index, leaf_hash, leaf, proof) {
        (Some(leaf_index), Some(leaf_hash), Some(leaf), Some(proof)) => Ok(EventLine {
            leaf_index,
            leaf_hash,
            leaf,
            proof,
        }),
        _ => Err(whys.join("; ")),
    }
}

/// Parses one line as a JSON object.
fn parse_object(text: &str) -> Result<Map<String, Value>, String> {
    if text.trim().is_empty() {
        return Err("empty line".into());
    }
    match serde_json::from_str(text) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) if e.is_eof() => Err("line ends in the middle of its JSON: truncated".into()),
        Err(e) => Err(json_error(&e)),
    }
}

/// serde_json's message without its "at line 1 column N" suffix, which would be confusing next
/// to the bundle's own line number.
fn json_error(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let reason = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(m, _)| m);
    format!("not valid JSON at column {} ({reason})", e.column())
}

/// The note's text without checking signatures, so that a badly signed note can still be
/// compared against (its signature problem is reported separately).
fn unverified_text(note: &str) -> Option<String> {
    let at = note.rfind("\n\n")?;
    note.get(..=at).map(str::to_owned)
}

/// `Some(why)` when two known values differ; each side is (who claims it, the value).
fn differ<T: PartialEq + fmt::Display>(
    what: &str,
    a: (&str, Option<T>),
    b: (&str, Option<T>),
) -> Option<String> {
    match (a.1, b.1) {
        (Some(x), Some(y)) if x != y => {
            let (x, y) = (one_line(&x.to_string()), one_line(&y.to_string()));
            Some(format!("{} {what} is {x} but {} {what} is {y}", a.0, b.0))
        }
        _ => None,
    }
}

/// Positions of `seq` outside one longest strictly increasing subsequence, as values: the
/// fewest lines whose moving restores order, so one misplaced line is named alone.
fn out_of_order(seq: &[u64]) -> Vec<u64> {
    // tails[k]: position of the smallest last value of an increasing run of length k + 1.
    let mut tails: Vec<usize> = Vec::new();
    let mut prev: Vec<Option<usize>> = Vec::with_capacity(seq.len());
    for (i, &x) in seq.iter().enumerate() {
        let k = tails.partition_point(|&t| seq[t] < x);
        prev.push(k.checked_sub(1).and_then(|j| tails.get(j).copied()));
        if k == tails.len() {
            tails.push(i);
        } else {
            tails[k] = i;
        }
    }
    let mut keep = vec![false; seq.len()];
    let mut at = tails.last().copied();
    while let Some(i) = at {
        keep[i] = true;
        at = prev[i];
    }
    seq.iter()
        .zip(keep)
        .filter(|(_, k)| !k)
        .map(|(x, _)| *x)
        .collect()
}

/// State carried through one verification.
struct Verifier<'k> {
    vkey: &'k NoteVerifier,
    report: Report,
    checkpoint: Option<Checkpoint>,
    manifest: Option<Manifest>,
    /// Leaf indices of all readable event lines.
    seen: HashSet<u64>,
    /// First-seen leaf indices of lines the manifest lists, in line order.
    order: Vec<u64>,
}

impl<'k> Verifier<'k> {
    fn new(vkey: &'k NoteVerifier) -> Self {
        Verifier {
            vkey,
            report: Report::default(),
            checkpoint: None,
            manifest: None,
            seen: HashSet::new(),
            order: Vec::new(),
        }
    }

    fn problem(&mut self, p: Problem) {
        self.report.problems.push(p);
    }

    fn malformed(&mut self, line: usize, why: impl Into<String>) {
        self.problem(Problem::Malformed {
            line,
            why: why.into(),
        });
    }

    /// Dispatches one line by its `type`.
    fn line(&mut self, no: usize, text: &str) {
        let obj = match parse_object(text) {
            Ok(obj) => obj,
            Err(why) => return self.malformed(no, why),
        };
        match (no, obj.get("type").and_then(Value::as_str)) {
            (1, Some(BUNDLE_TYPE)) => self.header(&obj),
            (_, Some(BUNDLE_TYPE)) => self.malformed(no, "a second header line"),
            (_, Some(EVENT_TYPE)) => {
                if no == 1 {
                    self.malformed(
                        1,
                        "the bundle header is missing: the first line is an event",
                    );
                }
                self.event(no, &obj);
            }
            (_, other) => self.malformed(no, format!("unknown line type {other:?}")),
        }
    }

    /// Opens a note with the verifier key. On a signature failure the problem is recorded and
    /// the unverified text is still returned, so later checks can name what else is wrong.
    fn open_note(&mut self, what: &'static str, note: &str) -> Option<String> {
        match open(note, std::slice::from_ref(self.vkey)) {
            Ok(opened) => Some(opened.text),
            Err(NoteError::BadSignature { .. }) => {
                self.problem(Problem::BadSignature { what });
                unverified_text(note)
            }
            Err(NoteError::UnknownKey) => {
                self.problem(Problem::UnknownKey { what });
                unverified_text(note)
            }
            Err(e) => {
                self.malformed(1, format!("{what}: {e}"));
                None
            }
        }
    }

    fn header(&mut self, obj: &Map<String, Value>) {
        let mut whys = Vec::new();
        let h = read_header(obj, &mut whys);
        // Signature problems are opened first so that they lead the report.
        let cp_text = h
            .checkpoint
            .as_deref()
            .and_then(|n| self.open_note("checkpoint", n));
        let mf_text = h
            .manifest
            .as_deref()
            .and_then(|n| self.open_note("manifest", n));
        for why in whys {
            self.malformed(1, why);
        }
        match cp_text.map(|t| Checkpoint::parse(&t)) {
            Some(Ok(cp)) => self.checkpoint = Some(cp),
            Some(Err(e)) => self.malformed(1, format!("checkpoint: {e}")),
            None => {}
        }
        match mf_text.map(|t| Manifest::parse(&t)) {
            Some(Ok(m)) => self.manifest = Some(m),
            Some(Err(why)) => self.malformed(1, format!("manifest: {why}")),
            None => {}
        }
        let cp = self.checkpoint.as_ref();
        if let Some(origin) = cp.map(|c| &c.origin) {
            if !names_log(self.vkey.name(), origin) {
                let key_name = self.vkey.name().to_owned();
                let origin = origin.clone();
                self.problem(Problem::WrongLog { origin, key_name });
            }
        }
        let cp = self.checkpoint.as_ref();
        self.report.origin = cp.map(|c| c.origin.clone()).or(h.origin.clone());
        self.report.tree_size = cp.map(|c| c.size).or(h.tree_size);
        self.cross_check(&h);
    }

    /// Compares what the checkpoint, the manifest and the header each claim.
    fn cross_check(&mut self, h: &Header) {
        let cp = self.checkpoint.as_ref();
        let mf = self.manifest.as_ref();
        let b64 = |r: &Hash| to_b64(r);
        let manifest = [
            differ(
                "origin",
                ("manifest", mf.map(|m| &m.origin)),
                ("checkpoint", cp.map(|c| &c.origin)),
            ),
            differ(
                "tree size",
                ("manifest", mf.map(|m| m.tree_size)),
                ("checkpoint", cp.map(|c| c.size)),
            ),
            differ(
                "root",
                ("manifest", mf.map(|m| b64(&m.root))),
                ("checkpoint", cp.map(|c| b64(&c.root))),
            ),
            differ(
                "count",
                ("manifest", mf.map(|m| m.count)),
                ("header", h.count),
            ),
            differ(
                "filter",
                ("manifest", mf.map(|m| &m.filter)),
                ("header", h.filter.as_ref()),
            ),
        ];
        let header = [
            differ(
                "origin",
                ("header", h.origin.as_ref()),
                ("checkpoint", cp.map(|c| &c.origin)),
            ),
            differ(
                "tree size",
                ("header", h.tree_size),
                ("checkpoint", cp.map(|c| c.size)),
            ),
        ];
        for why in manifest.into_iter().flatten() {
            self.problem(Problem::ManifestMismatch { why });
        }
        for why in header.into_iter().flatten() {
            self.problem(Problem::HeaderMismatch { why });
        }
    }

    fn event(&mut self, no: usize, obj: &Map<String, Value>) {
        // An extra field is reported, but the event itself can still be checked.
        let mut extra = Vec::new();
        check_fields(obj, &EVENT_FIELDS, &mut extra);
        for why in extra {
            self.malformed(no, why);
        }
        let ev = match read_event(obj) {
            Ok(ev) => ev,
            Err(why) => return self.malformed(no, why),
        };
        self.report.events_checked += 1;
        let index = ev.leaf_index;
        let first = self.seen.insert(index);
        if !first {
            self.problem(Problem::Duplicate { leaf_index: index });
        }
        let listed = self.manifest.as_ref().map(|m| m.hash_of(index));
        if listed == Some(None) {
            self.problem(Problem::Inserted { leaf_index: index });
        } else if first {
            self.order.push(index);
        }
        // A leaf without canonical bytes was never hashed by the log, so it counts as altered.
        let computed = canonical::to_vec(ev.leaf).ok().map(|b| leaf_hash(&b));
        let manifest_differs = listed.flatten().is_some_and(|h| Some(h) != computed);
        if computed != Some(ev.leaf_hash) || manifest_differs {
            let event_id = ev.leaf.get("event").and_then(|e| e.get("event_id"));
            let event_id = event_id.and_then(Value::as_str).map(str::to_owned);
            return self.problem(Problem::Altered {
                leaf_index: index,
                event_id,
            });
        }
        if let Some(cp) = &self.checkpoint {
            if verify_inclusion(index, cp.size, &ev.leaf_hash, &ev.proof, &cp.root).is_err() {
                self.problem(Problem::BadProof { leaf_index: index });
            }
        }
    }

    /// Order and completeness, which need every line to have been seen.
    fn finish(mut self) -> Report {
        for leaf_index in out_of_order(&self.order) {
            self.problem(Problem::Reordered { leaf_index });
        }
        let missing: Vec<u64> = self.manifest.as_ref().map_or_else(Vec::new, |m| {
            m.entries
                .iter()
                .map(|e| e.leaf_index)
                .filter(|i| !self.seen.contains(i))
                .collect()
        });
        for leaf_index in missing {
            self.problem(Problem::Missing { leaf_index });
        }
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_key_names_its_origin_or_the_prefix_above_it() {
        assert!(names_log("veritrail/acme", "veritrail/acme"));
        assert!(names_log("veritrail", "veritrail/acme"));
        assert!(names_log("audit.example/vt", "audit.example/vt/acme"));
        assert!(!names_log("veritrail/beta", "veritrail/acme"));
        assert!(!names_log("veritrail/acme", "veritrail/acme-2"));
        assert!(!names_log("veri", "veritrail/acme"));
        assert!(!names_log("veritrail/acme/x", "veritrail/acme"));
    }

    #[test]
    fn bundle_out_of_order_names_fewest_lines() {
        assert_eq!(out_of_order(&[0, 2, 4, 6, 8]), Vec::<u64>::new());
        assert_eq!(out_of_order(&[8, 2, 4, 6, 0]), vec![8, 0]);
        assert_eq!(out_of_order(&[18, 0, 2, 4, 6]), vec![18]);
        assert_eq!(out_of_order(&[2, 4, 6, 0]), vec![0]);
        assert_eq!(out_of_order(&[0, 4, 2, 6]).len(), 1);
        assert_eq!(out_of_order(&[]), Vec::<u64>::new());
    }

    #[test]
    fn bundle_decimals_are_strict() {
        assert_eq!(parse_decimal("0"), Some(0));
        assert_eq!(parse_decimal("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "01",
            "+1",
            "-1",
            " 1",
            "1 ",
            "18446744073709551616",
            "1e3",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bundle_manifest_text_refuses_what_verify_rejects() {
        let h = leaf_hash(b"x");
        let e = |i| ManifestEntry {
            leaf_index: i,
            leaf_hash: h,
        };
        let dup = vec![
            ("a".to_owned(), "1".to_owned()),
            ("a".to_owned(), "2".to_owned()),
        ];
        assert_eq!(
            manifest_text("o", 5, &h, &dup, &[]),
            Err(BundleError::DuplicateFilterName("a".into()))
        );
        assert_eq!(
            manifest_text("o\np", 5, &h, &[], &[]),
            Err(BundleError::BadOrigin("o\np".into()))
        );
        assert_eq!(
            manifest_text("", 5, &h, &[], &[]),
            Err(BundleError::BadOrigin(String::new()))
        );
        assert_eq!(
            manifest_text("o", 5, &h, &[], &[e(2), e(2)]),
            Err(BundleError::EntriesOutOfOrder(2))
        );
        assert_eq!(
            manifest_text("o", 5, &h, &[], &[e(5)]),
            Err(BundleError::EntryOutOfRange {
                leaf_index: 5,
                tree_size: 5
            })
        );
    }

    #[test]
    fn bundle_manifest_round_trips() {
        let h = leaf_hash(b"x");
        let filter = vec![
            ("z".to_owned(), "é\"".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ];
        let entries = [ManifestEntry {
            leaf_index: 3,
            leaf_hash: h,
        }];
        let text = manifest_text("log.example", 9, &h, &filter, &entries).expect("valid inputs");
        let m = Manifest::parse(&text).expect("parses");
        assert_eq!(
            (m.origin.as_str(), m.tree_size, m.root, m.count),
            ("log.example", 9, h, 1)
        );
        assert_eq!(m.filter, r#"{"a":"1","z":"é\""}"#);
        assert_eq!(m.entries, entries);
        assert!(Manifest::parse(&text.replace("\n9\n", "\n09\n")).is_err());
        assert!(Manifest::parse(&text.replace("\n1\n", "\n2\n")).is_err());
        assert!(Manifest::parse(&text.replace(r#"{"a":"1","#, r#"{ "a":"1","#)).is_err());
    }
}
