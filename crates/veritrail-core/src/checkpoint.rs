//! C2SP transparency log checkpoints (<https://c2sp.org/tlog-checkpoint>):
//! the signed tree head of a log, as the text of a signed note.
//!
//! ```text
//! <origin>
//! <tree size, decimal>
//! <base64 root hash>
//! [extension lines...]
//! ```

use crate::hash::{from_b64, to_b64, Hash, HashError};
use crate::note::{open, NoteError, NoteSigner, NoteVerifier};

/// A log's tree head: who issued it, how many leaves, and their root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Unique identifier of the log, e.g. `veritrail.example/audit`.
    pub origin: String,
    /// Number of leaves in the tree.
    pub size: u64,
    /// RFC 9162 root hash of the first `size` leaves.
    pub root: Hash,
    /// Opaque extension lines (without newlines). The spec discourages them
    /// because monitors cannot audit them; kept for interoperability.
    pub extensions: Vec<String>,
}

/// Why a checkpoint text or note was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The text does not end with a newline or has fewer than three lines.
    #[error("checkpoint text must be at least three newline-terminated lines")]
    TooShort,
    /// The origin line is empty.
    #[error("checkpoint origin is empty")]
    EmptyOrigin,
    /// A line contains a newline or another control character, so it cannot
    /// be written as one line of a note.
    #[error("checkpoint line {0} contains a control character")]
    ControlCharacter(usize),
    /// The size line is not a canonical decimal `u64`.
    #[error("checkpoint size {0:?} is not a decimal number without leading zeros")]
    BadSize(String),
    /// The root line is not the base64 of 32 bytes.
    #[error("checkpoint root hash: {0}")]
    BadRoot(#[from] HashError),
    /// An extension line is empty (line numbers start at 1).
    #[error("checkpoint extension line {0} is empty")]
    EmptyExtension(usize),
    /// The signed note around the checkpoint did not open.
    #[error(transparent)]
    Note(#[from] NoteError),
}

/// Parses the size line ("Note text", item 2): ASCII digits only, and no
/// leading zero unless the size is exactly `0`, so each size has one text.
fn parse_size(line: &str) -> Result<u64, CheckpointError> {
    let bad = || CheckpointError::BadSize(line.to_owned());
    let digits_only = !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (line.len() > 1 && line.starts_with('0')) {
        return Err(bad());
    }
    line.parse().map_err(|_| bad())
}

/// A line may not hold a newline (it would split into two lines) nor any other
/// ASCII control character (signed notes forbid them, "Format").
fn check_line(line: &str, line_no: usize) -> Result<(), CheckpointError> {
    if line.chars().any(|c| c < ' ') {
        return Err(CheckpointError::ControlCharacter(line_no));
    }
    Ok(())
}

impl Checkpoint {
    /// The note text: origin, size and base64 root, then any extension lines,
    /// each ending in a newline. Call [`Checkpoint::validate`] first if the
    /// fields did not come from [`Checkpoint::parse`].
    pub fn to_text(&self) -> String {
        let mut text = format!("{}\n{}\n{}\n", self.origin, self.size, to_b64(&self.root));
        for ext in &self.extensions {
            text.push_str(ext);
            text.push('\n');
        }
        text
    }

    /// Checks that [`Checkpoint::to_text`] yields a text that [`Checkpoint::parse`]
    /// reads back as this same checkpoint and that a note may carry.
    pub fn validate(&self) -> Result<(), CheckpointError> {
        if self.origin.is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        check_line(&self.origin, 1)?;
        // Extension lines follow origin, size and root: they start at line 4.
        for (ext, line_no) in self.extensions.iter().zip(4..) {
            if ext.is_empty() {
                return Err(CheckpointError::EmptyExtension(line_no));
            }
            check_line(ext, line_no)?;
        }
        Ok(())
    }

    /// Parses a checkpoint note text strictly ("Note text"): a non-empty
    /// origin, a canonical decimal size, a base64 root of exactly 32 bytes,
    /// and only non-empty extension lines, every line newline-terminated.
    pub fn parse(text: &str) -> Result<Checkpoint, CheckpointError> {
        let body = text.strip_suffix('\n').ok_or(CheckpointError::TooShort)?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(CheckpointError::TooShort);
        };
        let checkpoint = Checkpoint {
            origin: origin.to_owned(),
            size: parse_size(size)?,
            root: from_b64(root)?,
            extensions: lines.map(str::to_owned).collect(),
        };
        checkpoint.validate()?;
        Ok(checkpoint)
    }
}

/// Signs a checkpoint as a C2SP signed note with `signer`. The spec
/// recommends that the key name equal the origin; that is the caller's
/// choice of key.
pub fn sign_checkpoint(
    checkpoint: &Checkpoint,
    signer: &NoteSigner,
) -> Result<String, CheckpointError> {
    checkpoint.validate()?;
    Ok(signer.sign(&checkpoint.to_text())?)
}

/// Opens a signed checkpoint note: at least one of `verifiers` must have
/// signed it (see [`crate::note::open`]), and its text must parse strictly.
pub fn open_checkpoint(
    note: &str,
    verifiers: &[NoteVerifier],
) -> Result<Checkpoint, CheckpointError> {
    let opened = open(note, verifiers)?;
    Checkpoint::parse(&opened.text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{empty_root, leaf_hash};

    fn sample() -> Checkpoint {
        Checkpoint {
            origin: "veritrail.example/audit".to_owned(),
            size: 20852163,
            root: leaf_hash(b"root"),
            extensions: vec![],
        }
    }

    fn signer() -> NoteSigner {
        NoteSigner::new("veritrail.example/audit", &[9; 32]).expect("valid name")
    }

    #[test]
    fn text_round_trip() {
        let mut cp = sample();
        assert_eq!(Checkpoint::parse(&cp.to_text()), Ok(cp.clone()));
        cp.extensions = vec!["ext one".to_owned(), "ext+two".to_owned()];
        assert_eq!(Checkpoint::parse(&cp.to_text()), Ok(cp.clone()));
        let empty = Checkpoint {
            size: 0,
            root: empty_root(),
            ..sample()
        };
        assert_eq!(
            empty.to_text(),
            "veritrail.example/audit\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
        );
        assert_eq!(Checkpoint::parse(&empty.to_text()), Ok(empty));
    }

    #[test]
    fn strict_parsing() {
        let root = to_b64(&leaf_hash(b"root"));
        let cases: Vec<(String, CheckpointError)> = vec![
            (String::new(), CheckpointError::TooShort),
            (format!("o\n1\n{root}"), CheckpointError::TooShort),
            ("o\n1\n".to_owned(), CheckpointError::TooShort),
            (
                "o\n1\n\n".to_owned(),
                CheckpointError::BadRoot(HashError::Length(0)),
            ),
            (format!("\n1\n{root}\n"), CheckpointError::EmptyOrigin),
            (
                format!("o\n01\n{root}\n"),
                CheckpointError::BadSize("01".to_owned()),
            ),
            (
                format!("o\n+1\n{root}\n"),
                CheckpointError::BadSize("+1".to_owned()),
            ),
            (
                format!("o\n\n{root}\n"),
                CheckpointError::BadSize(String::new()),
            ),
            (
                format!("o\n 1\n{root}\n"),
                CheckpointError::BadSize(" 1".to_owned()),
            ),
            (
                format!("o\n18446744073709551616\n{root}\n"),
                CheckpointError::BadSize("18446744073709551616".to_owned()),
            ),
            (
                format!("o\n1\n{root}\n\n"),
                CheckpointError::EmptyExtension(4),
            ),
            (
                format!("o\n1\n{root}\nx\n\ny\n"),
                CheckpointError::EmptyExtension(5),
            ),
            (
                format!("o\r\n1\n{root}\n"),
                CheckpointError::ControlCharacter(1),
            ),
            (
                "o\n1\nZG9uJ3QgY2FyZSAx\n".to_owned(),
                CheckpointError::BadRoot(HashError::Length(12)),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Checkpoint::parse(&text), Err(want), "{text:?}");
        }
        assert!(matches!(
            Checkpoint::parse("o\n1\n!!!\n"),
            Err(CheckpointError::BadRoot(_))
        ));
        assert_eq!(
            Checkpoint::parse(&format!("o\n18446744073709551615\n{root}\n")).map(|c| c.size),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn sign_and_open() {
        let s = signer();
        let note = sign_checkpoint(&sample(), &s).expect("valid checkpoint");
        assert!(note.starts_with(&sample().to_text()));
        assert_eq!(open_checkpoint(&note, &[s.verifier()]), Ok(sample()));
    }

    #[test]
    fn tampered_or_foreign_checkpoints_fail() {
        let s = signer();
        let note = sign_checkpoint(&sample(), &s).expect("valid checkpoint");
        let tampered = note.replacen("20852163", "20852164", 1);
        assert!(matches!(
            open_checkpoint(&tampered, &[s.verifier()]),
            Err(CheckpointError::Note(NoteError::BadSignature { .. }))
        ));
        let other = NoteSigner::new("veritrail.example/audit", &[8; 32]).expect("valid name");
        assert_eq!(
            open_checkpoint(&note, &[other.verifier()]),
            Err(CheckpointError::Note(NoteError::UnknownKey))
        );
    }

    #[test]
    fn signed_note_with_bad_body_is_rejected() {
        let s = signer();
        let note = s.sign("just one line\n").expect("valid text");
        assert_eq!(
            open_checkpoint(&note, &[s.verifier()]),
            Err(CheckpointError::TooShort)
        );
    }

    #[test]
    fn invalid_checkpoints_are_not_signed() {
        let s = signer();
        let bad_origin = Checkpoint {
            origin: "a\nb".to_owned(),
            ..sample()
        };
        assert_eq!(
            sign_checkpoint(&bad_origin, &s),
            Err(CheckpointError::ControlCharacter(1))
        );
        let empty_ext = Checkpoint {
            extensions: vec![String::new()],
            ..sample()
        };
        assert_eq!(
            sign_checkpoint(&empty_ext, &s),
            Err(CheckpointError::EmptyExtension(4))
        );
        let empty_origin = Checkpoint {
            origin: String::new(),
            ..sample()
        };
        assert_eq!(
            sign_checkpoint(&empty_origin, &s),
            Err(CheckpointError::EmptyOrigin)
        );
    }
}
