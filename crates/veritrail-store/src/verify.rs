//! Verify-before-serve, over any engine: a record's leaf hash is checked against a trusted
//! root (the latest signed checkpoint's, or the head the server itself computed for leaves past
//! it), never only against a stored node, so that a record forged together with its entry in the
//! node files is refused at read time.
//!
//! A full inclusion check reads and hashes about log2(n) nodes. Perfect subtrees never change
//! once complete, so every perfect node a check proved is kept: a later check of a nearby leaf
//! walks up from its leaf with stored siblings and stops at the first proven node it meets, which
//! is a few levels up once the cache is warm.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use veritrail_core::hash::{node_hash, Hash};
use veritrail_core::merkle;

use uuid::Uuid;

use crate::engine::{NodeError, Snapshot, StoredEvent};
use crate::error::StoreError;

/// Proven perfect nodes kept at most; the cache starts over when full.
const MAX_PROVEN: usize = 1 << 18;

/// The trusted roots and the perfect nodes proven against them.
#[derive(Default)]
pub struct RootVerifier {
    /// The latest signed checkpoint: size and root.
    signed: RwLock<Option<(u64, Hash)>>,
    proven: Mutex<HashMap<(u32, u64), Hash>>,
}

impl RootVerifier {
    /// Trusts the root of a checkpoint whose signature was checked (or that this server signed).
    pub fn trust(&self, size: u64, root: Hash) {
        if let Ok(mut s) = self.signed.write() {
            if s.is_none_or(|(old, _)| old <= size) {
                *s = Some((size, root));
            }
        }
    }

    /// Checks that `leaf` is the leaf hash of `seq`: against the latest signed checkpoint when it
    /// covers `seq` within the reader's snapshot, else against the snapshot's own head (which
    /// this process computed, extending a signed checkpoint it checked).
    pub fn verify(&self, view: &dyn Snapshot, seq: u64, leaf: &Hash) -> Result<(), StoreError> {
        let signed = self.signed.read().ok().and_then(|s| *s);
        let head = view.head();
        let (size, root) = match signed {
            Some((size, root)) if seq < size && size <= head.size => (size, root),
            _ => (head.size, head.root),
        };
        let refused = || {
            StoreError::Damaged(format!(
                "seq {seq}: stored bytes do not match the tree of {size} events whose root is trusted: the event was altered"
            ))
        };
        let mut nodes = |level: u32, index: u64| view.node(level, index);
        // Walk up through perfect nodes, with stored siblings, to the first proven one.
        let (mut level, mut index, mut hash) = (0u32, seq, *leaf);
        // The leaf itself is remembered too, so that reading it again reads no node.
        let mut climbed = vec![(0, seq, *leaf)];
        loop {
            if let Some(p) = self
                .proven
                .lock()
                .ok()
                .and_then(|p| p.get(&(level, index)).copied())
            {
                if p == hash {
                    self.remember(&climbed);
                    return Ok(());
                }
                return Err(refused());
            }
            let parent_end = ((index >> 1) + 1).checked_shl(level + 1);
            if level >= 63 || parent_end.is_none_or(|end| end > size) {
                break;
            }
            let sibling = nodes(level, index ^ 1).map_err(StoreError::from)?;
            hash = if index & 1 == 0 {
                node_hash(&hash, &sibling)
            } else {
                node_hash(&sibling, &hash)
            };
            level += 1;
            index >>= 1;
            climbed.push((level, index, hash));
        }
        // No proven node on the way: prove the leaf against the root.
        let proof = merkle::inclusion_proof(seq, size, &mut nodes).map_err(|e| match e {
            merkle::ProofGenError::Store(NodeError::Io(io)) => {
                StoreError::io("reading a tree node")(io)
            }
            other => StoreError::Damaged(format!("seq {seq}: {other}")),
        })?;
        merkle::verify_inclusion(seq, size, leaf, &proof, &root).map_err(|_| refused())?;
        self.remember(&climbed);
        Ok(())
    }

    fn remember(&self, nodes: &[(u32, u64, Hash)]) {
        if let Ok(mut p) = self.proven.lock() {
            if p.len() + nodes.len() > MAX_PROVEN {
                p.clear();
            }
            p.extend(nodes.iter().map(|&(l, i, h)| ((l, i), h)));
        }
    }
}

/// Reads the event at `seq` and proves it: its leaf hash must be the one the engine computed
/// itself ([`Snapshot::computed_leaf`]) or be proven against a trusted root by `verifier`.
pub fn read_verified(
    view: &dyn Snapshot,
    verifier: &RootVerifier,
    seq: u64,
) -> Result<StoredEvent, StoreError> {
    let bytes = view.record(seq)?;
    let leaf_hash = veritrail_core::hash::leaf_hash(&bytes);
    match view.computed_leaf(seq) {
        Some(computed) if computed == leaf_hash => {}
        Some(_) => {
            return Err(StoreError::Damaged(format!(
                "seq {seq}: stored bytes do not match the leaf hash in the tree"
            )))
        }
        None => verifier.verify(view, seq, &leaf_hash)?,
    }
    Ok(StoredEvent {
        seq,
        leaf_hash,
        bytes,
    })
}

/// The event with this id, proven: the engine gives candidates, the record decides.
pub fn find_verified(
    view: &dyn Snapshot,
    verifier: &RootVerifier,
    id: &Uuid,
) -> Result<Option<StoredEvent>, StoreError> {
    for seq in view.id_candidates(id)? {
        let stored = read_verified(view, verifier, seq)?;
        if stored.leaf()?.event_id() == Some(*id) {
            return Ok(Some(stored));
        }
    }
    Ok(None)
}
