//! Signed notes, checkpoints and key texts (`veritrail_core::note`, `veritrail_core::checkpoint`).
//! Every input is tried as each of them; nothing may panic, and what parses must round-trip:
//!
//! * `note::open` and `checkpoint::open_checkpoint` with two known keys (the fixed key and the
//!   C2SP known-answer key `PeterNeumann`); an opened checkpoint's text parses on its own;
//! * `Checkpoint::parse`: a text that parses is exactly `to_text()` of what it parsed to
//!   (one text per checkpoint), and signing it then opening the note gives it back;
//! * `NoteVerifier::from_vkey` / `NoteSigner::from_signer_key`: a key text that parses is
//!   exactly the text the key prints;
//! * signing the input with the fixed key: when `sign` accepts a text, `open` gives it back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use veritrail_core::checkpoint::{open_checkpoint, sign_checkpoint, Checkpoint};
use veritrail_core::note::{open, KeyRef, NoteSigner, NoteVerifier};

/// The C2SP signed-note known-answer key (`../shared/corpus/README.md`).
const PETER: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";

fn verifiers() -> &'static [NoteVerifier] {
    static V: OnceLock<Vec<NoteVerifier>> = OnceLock::new();
    V.get_or_init(|| {
        vec![
            veritrail_fuzz::verifier().clone(),
            NoteVerifier::from_vkey(PETER).expect("the known-answer key parses"),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    if let Ok(opened) = open(text, verifiers()) {
        assert!(
            !opened.verified_by.is_empty(),
            "opened with no verified key"
        );
        assert!(
            opened.text.ends_with('\n'),
            "opened text without final newline"
        );
        assert!(
            text.starts_with(&opened.text),
            "opened text is not the note's start"
        );
    }
    if let Ok(cp) = open_checkpoint(text, verifiers()) {
        let opened = open(text, verifiers()).expect("open_checkpoint opened it");
        assert_eq!(
            Checkpoint::parse(&opened.text).ok(),
            Some(cp),
            "checkpoint text"
        );
    }

    if let Ok(cp) = Checkpoint::parse(text) {
        assert_eq!(
            cp.to_text(),
            text,
            "Checkpoint::parse accepts a non-canonical text"
        );
        cp.validate().expect("a parsed checkpoint validates");
        let note =
            sign_checkpoint(&cp, veritrail_fuzz::signer()).expect("a parsed checkpoint signs");
        let back = open_checkpoint(&note, verifiers()).expect("a signed checkpoint opens");
        assert_eq!(back, cp, "checkpoint round trip");
    }

    let key_text = text.strip_suffix('\n').unwrap_or(text);
    if let Ok(v) = NoteVerifier::from_vkey(key_text) {
        assert_eq!(
            v.vkey(),
            key_text,
            "from_vkey accepts a non-canonical key text"
        );
    }
    if let Ok(s) = NoteSigner::from_signer_key(key_text) {
        assert_eq!(
            s.to_signer_key(),
            key_text,
            "from_signer_key accepts a non-canonical key text"
        );
        let v = NoteVerifier::from_vkey(&s.vkey()).expect("a signer's verifier key parses");
        assert_eq!(v, s.verifier(), "signer and its verifier key");
    }

    let signer: &NoteSigner = veritrail_fuzz::signer();
    if let Ok(note) = signer.sign(text) {
        let opened = open(&note, verifiers())
            .unwrap_or_else(|e| panic!("a note we signed does not open: {e}\n{note:?}"));
        assert_eq!(opened.text, text, "signed text round trip");
        let me = KeyRef {
            name: signer.name().to_string(),
            key_id: signer.key_id(),
        };
        assert_eq!(opened.verified_by, vec![me], "verified by");
    }
});
