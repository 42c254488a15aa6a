//! RFC 9162 §2.1.1 hashing: the domain-separated leaf and node hashes of the
//! log's Merkle tree, plus the base64 text form used by checkpoints and proofs.
//!
//! Leaves and interior nodes are hashed with different one-byte prefixes
//! (0x00 and 0x01) so that no leaf can ever be passed off as an interior node
//! (the second-preimage attack RFC 9162 §2.1.1 guards against).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// A SHA-256 output: every leaf hash, node hash and tree root is one of these.
pub type Hash = [u8; 32];

/// Prefix of a leaf hash input (RFC 9162 §2.1.1).
const LEAF_PREFIX: u8 = 0x00;
/// Prefix of an interior node hash input (RFC 9162 §2.1.1).
const NODE_PREFIX: u8 = 0x01;

/// Why a base64 text could not be read as a [`Hash`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The text is not standard, padded base64.
    #[error("hash is not valid base64: {0}")]
    Base64(String),
    /// The text decodes, but not to exactly 32 bytes.
    #[error("hash decodes to {0} bytes, want 32")]
    Length(usize),
}

/// The leaf hash of RFC 9162 §2.1.1: `SHA-256(0x00 || data)`.
///
/// Empty `data` is a valid leaf; its hash is `SHA-256(0x00)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(data);
    h.finalize().into()
}

/// The interior node hash of RFC 9162 §2.1.1: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree, `MTH({}) = SHA-256("")` (RFC 9162 §2.1.1).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Encodes a hash as standard base64 with padding (44 characters), the form
/// used by C2SP tlog-checkpoint and by the proof vectors.
pub fn to_b64(hash: &Hash) -> String {
    STANDARD.encode(hash)
}

/// Decodes standard, padded base64 into a hash.
///
/// Anything that is not exactly 32 bytes is rejected: a truncated or padded
/// hash can never be a SHA-256 output, so accepting it would only hide bugs.
pub fn from_b64(text: &str) -> Result<Hash, HashError> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|e| HashError::Base64(e.to_string()))?;
    Hash::try_from(bytes.as_slice()).map_err(|_| HashError::Length(bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            to_b64(&empty_root()),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn empty_leaf_hash_matches_rfc6962_vector() {
        // Known node hash of the empty leaf from the RFC 6962 reference tests.
        assert_eq!(
            to_b64(&leaf_hash(b"")),
            "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0="
        );
    }

    #[test]
    fn node_hash_is_ordered() {
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
        assert_ne!(node_hash(&a, &b), leaf_hash(&[a, b].concat()));
    }

    #[test]
    fn b64_round_trip_and_errors() {
        let h = leaf_hash(b"x");
        assert_eq!(from_b64(&to_b64(&h)), Ok(h));
        assert_eq!(from_b64(""), Err(HashError::Length(0)));
        assert_eq!(from_b64("ZG9uJ3QgY2FyZSAx"), Err(HashError::Length(12)));
        assert!(matches!(from_b64("not base64!"), Err(HashError::Base64(_))));
    }
}
