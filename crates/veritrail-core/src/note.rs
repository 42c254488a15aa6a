//! C2SP signed notes (<https://c2sp.org/signed-note>), Ed25519 only.
//!
//! A signed note is a UTF-8 text ending in a newline, a blank line, and one or
//! more signature lines `— <key name> base64(key ID || signature)`. Checkpoints
//! (see [`crate::checkpoint`]) are signed notes; this module knows nothing of
//! what the text means.
//!
//! Keys travel as text, in the format of Go's `golang.org/x/mod/sumdb/note`:
//! a verifier key is `name+hex8(keyid)+base64(0x01 || public key)`, a signer
//! key is `PRIVATE+KEY+name+hex8(keyid)+base64(0x01 || seed)`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Signature type byte for Ed25519 ("Signature types" in the spec).
const ALG_ED25519: u8 = 0x01;
/// Every signature line starts with an em dash (U+2014) and a space.
const SIG_PREFIX: &str = "\u{2014} ";
/// Most signatures accepted in one note. The spec requires verifiers to bound
/// this ("MUST accept at least up to 16"); 100 leaves room for many witnesses
/// while keeping the work of opening a hostile note small.
pub const MAX_SIGNATURES: usize = 100;
/// Prefix of a signer key's text form.
const PRIVATE_KEY_PREFIX: &str = "PRIVATE+KEY+";

/// Why a key, a text or a note was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The note (or the text to sign) breaks the format rules.
    #[error("malformed note: {0}")]
    Malformed(String),
    /// No signature line names a key among the verifiers (by name *and* ID).
    #[error("note has no signature from a known key")]
    UnknownKey,
    /// A signature line names a known key, but the signature does not verify.
    #[error("signature from known key {name}+{key_id:08x} does not verify")]
    BadSignature {
        /// Name of the known key.
        name: String,
        /// Key ID of the known key.
        key_id: u32,
    },
    /// A key name breaks the spec's rules (empty, a Unicode space or a '+').
    #[error("invalid key name {0:?}")]
    InvalidName(String),
    /// A signer or verifier key text could not be parsed.
    #[error("invalid key: {0}")]
    InvalidKey(String),
}

/// A key as named in a signature line: the (name, key ID) pair that the spec
/// uses to tell keys apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyRef {
    /// The key name.
    pub name: String,
    /// The 32-bit key ID.
    pub key_id: u32,
}

/// A note whose signatures have been checked by [`open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedNote {
    /// The signed text, including its final newline.
    pub text: String,
    /// The known keys whose signatures verified, in note order.
    pub verified_by: Vec<KeyRef>,
}

/// The spec's name rule: non-empty, no Unicode space, no '+'. The '+' ban is
/// what lets key texts use '+' as a separator; the space ban keeps the
/// signature line unambiguous. Anything else is allowed, '/' included: the
/// spec recommends names that are schema-less URLs, such as a log's origin
/// `example.com/log`.
fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(NoteError::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// Key ID = first four bytes, big-endian, of
/// SHA-256(name || 0x0A || 0x01 || public key) ("Ed25519 signatures").
fn key_id(name: &str, public: &VerifyingKey) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public.as_bytes());
    let digest = h.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// `base64(0x01 || key)`: the algorithm-tagged key encoding of key texts.
fn encode_key(key: &[u8; 32]) -> String {
    let mut tagged = Vec::with_capacity(33);
    tagged.push(ALG_ED25519);
    tagged.extend_from_slice(key);
    STANDARD.encode(tagged)
}

/// Splits `name+hex8+base64(0x01 || key)` into its checked parts.
fn parse_key_text(text: &str) -> Result<(String, u32, [u8; 32]), NoteError> {
    let bad = |why: &str| NoteError::InvalidKey(why.to_owned());
    // Names cannot contain '+', but base64 can: only the first two split.
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("want name+keyid+key"));
    };
    check_name(name)?;
    if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("key ID is not 8 hex digits"));
    }
    let id = u32::from_str_radix(id_hex, 16).map_err(|_| bad("key ID is not hex"))?;
    let raw = STANDARD
        .decode(key_b64)
        .map_err(|_| bad("key is not base64"))?;
    let Some((&ALG_ED25519, key)) = raw.split_first() else {
        return Err(bad("key is not an Ed25519 key"));
    };
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| bad("Ed25519 key is not 32 bytes"))?;
    Ok((name.to_owned(), id, key))
}

/// Checks the text-level rules shared by signing and opening: valid UTF-8
/// (guaranteed by `&str`), no ASCII control characters but newline ("Format").
fn check_chars(s: &str) -> Result<(), NoteError> {
    match s.chars().find(|&c| c < ' ' && c != '\n') {
        Some(c) => Err(NoteError::Malformed(format!(
            "control character U+{:04X}",
            c as u32
        ))),
        None => Ok(()),
    }
}

/// A key that signs notes.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    // Hand-written so that the secret seed never lands in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer for key `name` from a 32-byte Ed25519 seed (RFC 8032 private
    /// key).
    pub fn new(name: &str, seed: &[u8; 32]) -> Result<NoteSigner, NoteError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(name, &key.verifying_key());
        Ok(NoteSigner {
            name: name.to_owned(),
            key_id,
            key,
        })
    }

    /// Parses a signer key text `PRIVATE+KEY+name+hex8+base64(0x01 || seed)`.
    /// The key ID in the text must match the one derived from the key.
    pub fn from_signer_key(text: &str) -> Result<NoteSigner, NoteError> {
        let rest = text
            .strip_prefix(PRIVATE_KEY_PREFIX)
            .ok_or_else(|| NoteError::InvalidKey("missing PRIVATE+KEY+ prefix".to_owned()))?;
        let (name, id, seed) = parse_key_text(rest)?;
        let signer = NoteSigner::new(&name, &seed)?;
        if signer.key_id != id {
            return Err(NoteError::InvalidKey(
                "key ID does not match the key".to_owned(),
            ));
        }
        Ok(signer)
    }

    /// The same Ed25519 key under another name. The key ID, which hashes the
    /// name, changes with it, so verifiers tell the two apart although one
    /// secret signs for both.
    pub fn with_name(&self, name: &str) -> Result<NoteSigner, NoteError> {
        check_name(name)?;
        Ok(NoteSigner {
            name: name.to_owned(),
            key_id: key_id(name, &self.key.verifying_key()),
            key: self.key.clone(),
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier key text `name+hex8+base64(0x01 || public key)`.
    pub fn vkey(&self) -> String {
        let public = self.key.verifying_key();
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            encode_key(public.as_bytes())
        )
    }

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The signer key text. This is the secret: store it like a password.
    pub fn to_signer_key(&self) -> String {
        format!(
            "{PRIVATE_KEY_PREFIX}{}+{:08x}+{}",
            self.name,
            self.key_id,
            encode_key(self.key.as_bytes())
        )
    }

    /// Signs `text` and returns the whole note: the text, a blank line and
    /// one signature line.
    ///
    /// The text must end with a newline and contain no control character
    /// other than newline ("Format"). Ed25519 is deterministic, so the same
    /// key and text always give the same note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') {
            return Err(NoteError::Malformed(
                "text does not end with a newline".to_owned(),
            ));
        }
        check_chars(text)?;
        let signature = self.key.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(4 + 64);
        blob.extend_from_slice(&self.key_id.to_be_bytes());
        blob.extend_from_slice(&signature.to_bytes());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(blob)
        ))
    }
}

/// A trusted public key that checks note signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses a verifier key text `name+hex8+base64(0x01 || public key)`.
    /// The key ID in the text must match the one derived from the key.
    pub fn from_vkey(text: &str) -> Result<NoteVerifier, NoteError> {
        let (name, id, raw) = parse_key_text(text)?;
        let key = VerifyingKey::from_bytes(&raw)
            .map_err(|_| NoteError::InvalidKey("not an Ed25519 public key".to_owned()))?;
        if key_id(&name, &key) != id {
            return Err(NoteError::InvalidKey(
                "key ID does not match the key".to_owned(),
            ));
        }
        Ok(NoteVerifier {
            name,
            key_id: id,
            key,
        })
    }

    /// The same public key under another name (and so another key ID).
    pub fn with_name(&self, name: &str) -> Result<NoteVerifier, NoteError> {
        check_name(name)?;
        Ok(NoteVerifier {
            name: name.to_owned(),
            key_id: key_id(name, &self.key),
            key: self.key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The verifier key text.
    pub fn vkey(&self) -> String {
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            encode_key(self.key.as_bytes())
        )
    }

    /// Checks one raw signature over `text`. Strict verification rejects
    /// malleable (non-canonical) signatures and weak keys.
    fn verifies(&self, text: &str, sig: &[u8]) -> bool {
        let Ok(bytes) = <[u8; 64]>::try_from(sig) else {
            return false;
        };
        self.key
            .verify_strict(text.as_bytes(), &Signature::from_bytes(&bytes))
            .is_ok()
    }
}

/// One parsed signature line.
struct SigLine {
    name: String,
    key_id: u32,
    sig: Vec<u8>,
}

/// Parses `— name base64(keyid || sig)` (without its newline).
fn parse_sig_line(line: &str) -> Result<SigLine, NoteError> {
    let bad = |why: &str| NoteError::Malformed(why.to_owned());
    let body = line
        .strip_prefix(SIG_PREFIX)
        .ok_or_else(|| bad("signature line lacks em dash"))?;
    let (name, b64) = body
        .split_once(' ')
        .ok_or_else(|| bad("signature line lacks a space"))?;
    check_name(name).map_err(|_| bad("signature line has an invalid key name"))?;
    let blob = STANDARD
        .decode(b64)
        .map_err(|_| bad("signature is not base64"))?;
    // Four bytes of key ID plus at least one byte of signature ("Format").
    if blob.len() < 5 {
        return Err(bad("signature is too short"));
    }
    let key_id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
    Ok(SigLine {
        name: name.to_owned(),
        key_id,
        sig: blob[4..].to_vec(),
    })
}

/// Splits a note into its text and its signature lines. The text ends at the
/// *last* blank line, since the text itself may contain blank lines.
fn split_note(note: &str) -> Result<(&str, Vec<&str>), NoteError> {
    let bad = |why: &str| NoteError::Malformed(why.to_owned());
    check_chars(note)?;
    let at = note
        .rfind("\n\n")
        .ok_or_else(|| bad("no blank line before signatures"))?;
    let (text, sigs) = (&note[..=at], &note[at + 2..]);
    let sigs = sigs
        .strip_suffix('\n')
        .ok_or_else(|| bad("note does not end with a newline"))?;
    if sigs.is_empty() {
        return Err(bad("no signature lines"));
    }
    let lines: Vec<&str> = sigs.split('\n').collect();
    if lines.len() > MAX_SIGNATURES {
        return Err(bad("too many signatures"));
    }
    Ok((text, lines))
}

/// Opens a signed note: checks its format and every signature from a key in
/// `verifiers`, and returns the text with the keys that signed it ("Signatures").
///
/// Signatures whose (name, key ID) pair is not among `verifiers` are ignored,
/// as the spec requires. A known key's signature that fails is
/// [`NoteError::BadSignature`] (the whole note is rejected), two signatures
/// from the same known key make the note malformed, and a note with no
/// verified signature is [`NoteError::UnknownKey`].
pub fn open(note: &str, verifiers: &[NoteVerifier]) -> Result<OpenedNote, NoteError> {
    let (text, lines) = split_note(note)?;
    let mut verified_by: Vec<KeyRef> = Vec::new();
    for line in lines {
        let sig = parse_sig_line(line)?;
        let known = verifiers
            .iter()
            .find(|v| v.name == sig.name && v.key_id == sig.key_id);
        let Some(verifier) = known else { continue };
        let key = KeyRef {
            name: sig.name,
            key_id: sig.key_id,
        };
        if verified_by.contains(&key) {
            return Err(NoteError::Malformed(
                "two signatures from one key".to_owned(),
            ));
        }
        if !verifier.verifies(text, &sig.sig) {
            return Err(NoteError::BadSignature {
                name: key.name,
                key_id: key.key_id,
            });
        }
        verified_by.push(key);
    }
    if verified_by.is_empty() {
        return Err(NoteError::UnknownKey);
    }
    Ok(OpenedNote {
        text: text.to_owned(),
        verified_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const SIG_LINE: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn signer() -> NoteSigner {
        NoteSigner::from_signer_key(SKEY).expect("known-answer signer key parses")
    }

    fn verifier() -> NoteVerifier {
        NoteVerifier::from_vkey(VKEY).expect("known-answer verifier key parses")
    }

    #[test]
    fn known_answer() {
        let s = signer();
        assert_eq!(s.key_id(), 0xc74f20a3);
        assert_eq!(s.vkey(), VKEY);
        assert_eq!(s.to_signer_key(), SKEY);
        assert_eq!(verifier().vkey(), VKEY);
        let note = s.sign(TEXT).expect("text is valid");
        assert_eq!(note, format!("{TEXT}\n{SIG_LINE}"));
        let opened = open(&note, &[verifier()]).expect("known-answer note opens");
        assert_eq!(opened.text, TEXT);
        assert_eq!(
            opened.verified_by,
            vec![KeyRef {
                name: "PeterNeumann".to_owned(),
                key_id: 0xc74f20a3
            }]
        );
    }

    #[test]
    fn round_trip_with_blank_lines_in_text() {
        let s = NoteSigner::new("example.com/log", &[7; 32]).expect("valid name");
        let text = "a\n\nb\n\n";
        let opened = open(&s.sign(text).expect("valid text"), &[s.verifier()]).expect("opens");
        assert_eq!(opened.text, text);
    }

    #[test]
    fn tampered_text_is_bad_signature() {
        let note = signer()
            .sign(TEXT)
            .expect("valid text")
            .replacen("problem", "pr0blem", 1);
        assert_eq!(
            open(&note, &[verifier()]),
            Err(NoteError::BadSignature {
                name: "PeterNeumann".to_owned(),
                key_id: 0xc74f20a3
            })
        );
    }

    #[test]
    fn other_key_is_unknown() {
        let note = signer().sign(TEXT).expect("valid text");
        let other = NoteSigner::new("PeterNeumann", &[1; 32])
            .expect("valid name")
            .verifier();
        assert_eq!(open(&note, &[other]), Err(NoteError::UnknownKey));
        assert_eq!(open(&note, &[]), Err(NoteError::UnknownKey));
    }

    #[test]
    fn unknown_signers_are_ignored_when_a_known_one_verifies() {
        let other = NoteSigner::new("witness.example", &[2; 32]).expect("valid name");
        let signed = signer().sign(TEXT).expect("valid text");
        let extra = other.sign(TEXT).expect("valid text");
        let note = format!("{signed}{}", &extra[TEXT.len() + 1..]);
        let opened = open(&note, &[verifier()]).expect("known signature verifies");
        assert_eq!(opened.verified_by.len(), 1);
        let both = open(&note, &[verifier(), other.verifier()]).expect("both verify");
        assert_eq!(both.verified_by.len(), 2);
    }

    #[test]
    fn duplicate_known_signature_is_malformed() {
        let note = format!("{}{SIG_LINE}", signer().sign(TEXT).expect("valid text"));
        assert!(matches!(
            open(&note, &[verifier()]),
            Err(NoteError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_notes_are_errors() {
        let good = signer().sign(TEXT).expect("valid text");
        let cases = [
            String::new(),
            "\n".to_owned(),
            TEXT.to_owned(),
            format!("{TEXT}\n"),
            good.trim_end().to_owned(),
            good.replace('\u{2014}', "-"),
            good.replace("PeterNeumann x08", "PeterNeumann  x08"),
            good.replace("x08go", "x08g!"),
            format!("{TEXT}\n\u{2014} PeterNeumann AAAA\n"),
            format!("{TEXT}\n\u{2014} PeterNeumann\n"),
            good.replace("If you", "If\u{7}you"),
            format!("{TEXT}\n{}", SIG_LINE.repeat(MAX_SIGNATURES + 1)),
        ];
        for case in cases {
            assert!(
                matches!(open(&case, &[verifier()]), Err(NoteError::Malformed(_))),
                "{case:?}"
            );
        }
    }

    #[test]
    fn text_rules_for_signing() {
        let s = signer();
        assert!(matches!(s.sign("no newline"), Err(NoteError::Malformed(_))));
        assert!(matches!(
            s.sign("tab\there\n"),
            Err(NoteError::Malformed(_))
        ));
        assert!(s.sign("ünïcödé\n").is_ok());
    }

    #[test]
    fn key_parsing_errors() {
        let bad_vkeys = [
            "",
            "PeterNeumann+c74f20a3",
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+Ahpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW+x",
        ];
        for text in bad_vkeys {
            assert!(NoteVerifier::from_vkey(text).is_err(), "{text:?}");
        }
        assert!(NoteSigner::from_signer_key(VKEY).is_err());
        assert!(NoteSigner::from_signer_key(&SKEY.replace("c74f20a3", "00000000")).is_err());
        assert!(NoteSigner::new("", &[0; 32]).is_err());
        assert!(NoteSigner::new("a+b", &[0; 32]).is_err());
        assert!(NoteSigner::new("a\u{a0}b", &[0; 32]).is_err());
    }

    #[test]
    fn one_key_under_two_names_is_two_keys() {
        let legacy = NoteSigner::new("veritrail", &[5; 32]).expect("valid name");
        let acme = legacy.with_name("veritrail/acme").expect("'/' is allowed");
        let beta = legacy.with_name("veritrail/beta").expect("'/' is allowed");
        assert_eq!(acme.name(), "veritrail/acme");
        assert!(
            acme.vkey().starts_with("veritrail/acme+"),
            "{}",
            acme.vkey()
        );
        // The public key is the same; the name, and so the key ID, is not.
        let public = |vkey: String| vkey.rsplit('+').next().map(str::to_owned);
        assert_eq!(public(acme.vkey()), public(legacy.vkey()));
        assert_ne!(acme.key_id(), legacy.key_id());
        assert_ne!(acme.key_id(), beta.key_id());
        assert_eq!(
            NoteVerifier::from_vkey(&acme.vkey()).expect("vkey parses"),
            acme.verifier()
        );
        assert_eq!(
            legacy.verifier().with_name("veritrail/acme"),
            Ok(acme.verifier())
        );
        assert_eq!(
            NoteSigner::from_signer_key(&acme.to_signer_key())
                .expect("signer key parses")
                .vkey(),
            acme.vkey()
        );
        let note = acme.sign(TEXT).expect("valid text");
        assert!(note.contains("\u{2014} veritrail/acme "), "{note}");
        let opened = open(&note, &[acme.verifier()]).expect("its own name verifies");
        assert_eq!(opened.verified_by[0].name, "veritrail/acme");
        assert_eq!(open(&note, &[beta.verifier()]), Err(NoteError::UnknownKey));
        assert_eq!(
            open(&note, &[legacy.verifier()]),
            Err(NoteError::UnknownKey)
        );
        for bad in ["", "veritrail/a+b", "veritrail/a b", "veritrail/a\u{2003}b"] {
            assert!(legacy.with_name(bad).is_err(), "{bad:?}");
            assert!(legacy.verifier().with_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_hides_the_seed() {
        let shown = format!("{:?}", signer());
        assert!(shown.contains("c74f20a3"));
        assert!(!shown.contains("AYEKFALV"));
    }
}
