//! RFC 9162 (RFC 6962) Merkle tree math: tree roots, inclusion and
//! consistency proofs (generation and verification), the right-edge
//! [`Frontier`] used while appending, and the subtree proofs of the Merkle
//! Tree Certificates draft (draft-ietf-plants-merkle-tree-certs).
//!
//! Nothing here knows about storage or transport. Proof *generation* reads
//! stored hashes through a caller-supplied closure; proof *verification* is
//! pure.
//!
//! # Node addressing
//!
//! A *perfect node* `(level, index)` is the root of the perfect subtree that
//! covers leaves `[index << level, (index + 1) << level)`. Level 0 holds the
//! leaf hashes. Perfect nodes never change once they exist, which is why the
//! store persists exactly those (see [`Frontier::append`]) and nothing else:
//! every other hash a proof needs is the root of a *right-edge range*
//! `[start, size)` and is folded from at most 64 perfect nodes on demand.
//!
//! Proof elements are ordered bottom-up, as in RFC 9162 §2.1.3 and §2.1.4.
//!
//! # Policies on edge cases
//!
//! Two inputs are not settled by the RFC's algorithms and are fixed here:
//!
//! * **An empty leaf hash is malformed.** Leaf hashes are typed [`Hash`], so
//!   an empty (or any non-32-byte) leaf hash cannot even reach
//!   [`verify_inclusion`]: decoding it with [`crate::hash::from_b64`] fails.
//!   This is not the same as an empty leaf *input*: `leaf_hash(b"")` is the
//!   perfectly valid `SHA-256(0x00)`. More generally, every hash a caller
//!   hands in must be exactly 32 bytes; we never compare raw byte strings of
//!   other lengths.
//! * **A consistency proof from size 0 is the empty proof.** Every tree
//!   extends the empty tree, so there is nothing to prove:
//!   [`consistency_proof`]`(0, n)` returns `[]`, and
//!   [`verify_consistency`]`(0, n, old_root, new_root, proof)` succeeds iff
//!   `proof` is empty and `old_root` is [`empty_root`] (any `new_root` is
//!   accepted). transparency-dev/merkle rejects `size1 == 0` outright; we
//!   follow its treatment of the empty *subtree* instead (see
//!   [`verify_subtree_consistency`]), so that a monitor whose last checkpoint
//!   was the empty tree needs no special case, and proof generation and
//!   verification agree on every `old <= new`.
//!
//! Likewise `old == new` yields the empty proof, which verifies iff both
//! roots are equal.

use crate::hash::{empty_root, node_hash, Hash};

/// Why a proof could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum ProofGenError<E> {
    /// An inclusion proof was asked for a leaf the tree does not have.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// The requested leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A consistency proof was asked from a larger tree to a smaller one.
    #[error("old size {old} is larger than new size {new}")]
    SizeOrder {
        /// The requested old size.
        old: u64,
        /// The requested new size.
        new: u64,
    },
    /// The node reader failed (typically an I/O error in the store).
    #[error("reading a stored tree node failed")]
    Store(#[source] E),
}

/// Why a proof did not verify. Each variant names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// The claimed leaf index.
        index: u64,
        /// The claimed tree size.
        size: u64,
    },
    /// The leaf index lies outside the subtree `[start, end)`.
    #[error("leaf index {index} is outside subtree [{start}, {end})")]
    IndexOutsideSubtree {
        /// The claimed leaf index.
        index: u64,
        /// First leaf of the subtree.
        start: u64,
        /// One past the last leaf of the subtree.
        end: u64,
    },
    /// The old tree (or subtree) is larger than the new tree.
    #[error("old size {old} is larger than new size {new}")]
    SizeOrder {
        /// The claimed old size (or subtree end).
        old: u64,
        /// The claimed new size.
        new: u64,
    },
    /// `[start, end)` is not a subtree: `start` must be a multiple of the
    /// smallest power of two that is at least `end - start`.
    #[error("[{start}, {end}) is not a valid subtree")]
    InvalidSubtree {
        /// First leaf of the claimed subtree.
        start: u64,
        /// One past the last leaf of the claimed subtree.
        end: u64,
    },
    /// The proof has the wrong number of hashes for these sizes.
    #[error("proof has {got} hashes, want {want}")]
    WrongProofLength {
        /// Number of hashes supplied.
        got: usize,
        /// Number of hashes these sizes require.
        want: usize,
    },
    /// The proof does not reproduce the old tree's (or the subtree's) root.
    #[error("proof does not match the old tree or subtree root")]
    OldRootMismatch,
    /// The proof does not reproduce the expected (new) tree root.
    #[error("proof does not match the expected root")]
    RootMismatch,
}

// ---------------------------------------------------------------------------
// Bit helpers. Shifts by 64 are legal inputs here (a tree can be 2^63 leaves
// tall in principle), so they saturate to 0 instead of panicking.
// ---------------------------------------------------------------------------

/// `x >> n`, or 0 when `n >= 64`.
fn shr(x: u64, n: u32) -> u64 {
    x.checked_shr(n).unwrap_or(0)
}

/// Number of significant bits of `x` (0 for 0).
fn bit_len(x: u64) -> u32 {
    u64::BITS - x.leading_zeros()
}

/// Decomposes the aligned range `[start, end)` into perfect nodes, left to
/// right, largest first. The caller guarantees `start <= end` and that
/// `start` is a multiple of the first (largest) piece.
fn perfect_pieces(start: u64, end: u64) -> impl Iterator<Item = (u32, u64)> {
    let len = end - start;
    let mut pos = start;
    (0..u64::BITS)
        .rev()
        .filter(move |k| shr(len, *k) & 1 == 1)
        .map(move |k| {
            let node = (k, pos >> k);
            pos += 1u64 << k;
            node
        })
}

/// Root of the aligned range `[start, end)`, folded right to left from its
/// perfect nodes: this is MTH (RFC 9162 §2.1.1) of those leaves, because MTH
/// always splits at the largest power of two, which is exactly the first
/// perfect piece. At most 64 node reads.
fn range_root<E>(
    start: u64,
    end: u64,
    get: &mut impl FnMut(u32, u64) -> Result<Hash, E>,
) -> Result<Hash, E> {
    let pieces: Vec<(u32, u64)> = perfect_pieces(start, end).collect();
    debug_assert!(pieces
        .first()
        .is_none_or(|&(k, _)| start & ((1u64 << k) - 1) == 0));
    let mut rev = pieces.iter().rev();
    let Some(&(level, index)) = rev.next() else {
        return Ok(empty_root());
    };
    let mut acc = get(level, index)?;
    for &(level, index) in rev {
        acc = node_hash(&get(level, index)?, &acc);
    }
    Ok(acc)
}

/// MTH of the first `size` leaves (RFC 9162 §2.1.1), read from stored perfect
/// nodes. The empty tree's root is [`empty_root`].
pub fn root<E>(size: u64, get: &mut impl FnMut(u32, u64) -> Result<Hash, E>) -> Result<Hash, E> {
    range_root(0, size, get)
}

// ---------------------------------------------------------------------------
// Proof generation.
// ---------------------------------------------------------------------------

/// Appends, bottom-up, the siblings of the path from node `(from, index >>
/// from)` up to the level where the paths to `index` and `size - 1` join,
/// then the left siblings of the right edge above that level.
///
/// This is the tail of RFC 9162 §2.1.3.1 `PATH(index, D[size])` from level
/// `from` on; with `from == 0` it is the whole inclusion path.
fn path_from_level<E>(
    index: u64,
    size: u64,
    from: u32,
    get: &mut impl FnMut(u32, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    let last = size - 1;
    let inner = bit_len(index ^ last);
    let mut proof = Vec::new();
    for level in from..inner {
        let sibling = (index >> level) ^ 1;
        // Below the join, the sibling's parent lies wholly left of the right
        // edge, so the sibling is perfect. At the join level, the sibling is
        // the right-edge range itself and may be incomplete.
        if level + 1 == inner {
            proof.push(range_root(sibling << level, size, get)?);
        } else {
            proof.push(get(level, sibling)?);
        }
    }
    // Above the join, the path is the right edge: it has a (perfect) left
    // sibling exactly at the levels where `size - 1` has a 1 bit.
    for level in inner..u64::BITS {
        let node = last >> level;
        if node & 1 == 1 {
            proof.push(get(level, node - 1)?);
        }
    }
    Ok(proof)
}

/// Inclusion proof for leaf `index` in the tree of `size` leaves
/// (RFC 9162 §2.1.3.1, `PATH(m, D[n])`), bottom-up.
///
/// Reads O(log n) nodes: one per proof element, except the single element
/// that is a right-edge range, which takes up to 64.
pub fn inclusion_proof<E>(
    index: u64,
    size: u64,
    get: &mut impl FnMut(u32, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, ProofGenError<E>> {
    if index >= size {
        return Err(ProofGenError::IndexOutOfRange { index, size });
    }
    path_from_level(index, size, 0, get).map_err(ProofGenError::Store)
}

/// Consistency proof from the tree of `old` leaves to the tree of `new`
/// leaves (RFC 9162 §2.1.4.1, `PROOF(m, D[n])`), bottom-up.
///
/// Policy (see the module docs): `old == 0` and `old == new` both yield the
/// empty proof; `old > new` is an error.
pub fn consistency_proof<E>(
    old: u64,
    new: u64,
    get: &mut impl FnMut(u32, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, ProofGenError<E>> {
    if old > new {
        return Err(ProofGenError::SizeOrder { old, new });
    }
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    consistency_nodes(old, new, get).map_err(ProofGenError::Store)
}

/// Body of [`consistency_proof`] for `0 < old < new`.
///
/// The old tree's root is rebuilt by the verifier from the largest perfect
/// node ending at `old` (level = trailing zeros of `old`) plus the path
/// above it, which is the tail of the inclusion path of leaf `old - 1`.
/// When `old` is itself a power of two that node *is* the old root, which the
/// verifier already has, so RFC 9162 leaves it out.
fn consistency_nodes<E>(
    old: u64,
    new: u64,
    get: &mut impl FnMut(u32, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    let shift = old.trailing_zeros();
    let mut proof = Vec::new();
    if !old.is_power_of_two() {
        proof.push(get(shift, (old - 1) >> shift)?);
    }
    proof.extend(path_from_level(old - 1, new, shift, get)?);
    Ok(proof)
}

// ---------------------------------------------------------------------------
// Proof verification.
// ---------------------------------------------------------------------------

/// Hashes `seed` up a path whose siblings lie left or right according to the
/// bits of `index` (bit `i` set: sibling `i` is on the left).
fn chain_inner(seed: Hash, proof: &[Hash], index: u64) -> Hash {
    proof.iter().enumerate().fold(seed, |acc, (i, p)| {
        if shr(index, i as u32) & 1 == 0 {
            node_hash(&acc, p)
        } else {
            node_hash(p, &acc)
        }
    })
}

/// Like [`chain_inner`], but ignores right siblings: the result is the root
/// of the same path in the older, smaller tree that ended at this leaf.
fn chain_inner_right(seed: Hash, proof: &[Hash], index: u64) -> Hash {
    proof.iter().enumerate().fold(seed, |acc, (i, p)| {
        if shr(index, i as u32) & 1 == 1 {
            node_hash(p, &acc)
        } else {
            acc
        }
    })
}

/// Hashes `seed` up the right edge, where every sibling is on the left.
fn chain_border(seed: Hash, proof: &[Hash]) -> Hash {
    proof.iter().fold(seed, |acc, p| node_hash(p, &acc))
}

/// Splits an inclusion proof length for `index` in a tree of `size` leaves
/// into (inner, border): siblings below the level where the paths to `index`
/// and `size - 1` join, and left siblings on the right edge above it.
fn inclusion_shape(index: u64, size: u64) -> (usize, usize) {
    let inner = bit_len(index ^ (size - 1));
    let border = shr(index, inner).count_ones();
    (inner as usize, border as usize)
}

/// Fails with [`ProofError::WrongProofLength`] unless `proof` has `want` hashes.
fn check_len(proof: &[Hash], want: usize) -> Result<(), ProofError> {
    if proof.len() == want {
        Ok(())
    } else {
        Err(ProofError::WrongProofLength {
            got: proof.len(),
            want,
        })
    }
}

/// Fails with `err` unless the two hashes are equal.
fn check_eq(got: &Hash, want: &Hash, err: ProofError) -> Result<(), ProofError> {
    if got == want {
        Ok(())
    } else {
        Err(err)
    }
}

/// Recomputes the tree root from an inclusion proof (RFC 9162 §2.1.3.2)
/// without comparing it to anything; [`verify_inclusion`] does the compare.
pub fn root_from_inclusion_proof(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (inner, border) = inclusion_shape(index, size);
    check_len(proof, inner + border)?;
    let at_join = chain_inner(*leaf, &proof[..inner], index);
    Ok(chain_border(at_join, &proof[inner..]))
}

/// Verifies that `leaf` (a leaf *hash*) is at `index` in the tree of `size`
/// leaves whose root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let got = root_from_inclusion_proof(index, size, leaf, proof)?;
    check_eq(&got, root, ProofError::RootMismatch)
}

/// Verifies that the tree of `old` leaves with root `old_root` is a prefix of
/// the tree of `new` leaves with root `new_root` (RFC 9162 §2.1.4.2).
///
/// Policy (see the module docs): from `old == 0` only the empty proof is
/// accepted, and only with `old_root == empty_root()`; with `old == new` only
/// the empty proof, and only with equal roots.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::SizeOrder { old, new });
    }
    if old == 0 {
        check_len(proof, 0)?;
        return check_eq(old_root, &empty_root(), ProofError::OldRootMismatch);
    }
    if old == new {
        check_len(proof, 0)?;
        return check_eq(old_root, new_root, ProofError::RootMismatch);
    }
    let got = grow_subtree(0, old, new, proof, old_root)?;
    check_eq(&got, new_root, ProofError::RootMismatch)
}

// ---------------------------------------------------------------------------
// Subtree proofs (draft-ietf-plants-merkle-tree-certs, "Subtrees").
// ---------------------------------------------------------------------------

/// Checks that `[start, end)` is a subtree in the Merkle Tree Certificates
/// sense: `start` is a multiple of the smallest power of two that is at least
/// `end - start`, so the range is one node of the tree of size `end` (the
/// empty range `start == end` is also accepted). Such a range hashes to
/// `MTH(D[start:end])`, and grows into one node of every larger tree.
pub fn check_subtree(start: u64, end: u64) -> Result<(), ProofError> {
    let invalid = Err(ProofError::InvalidSubtree { start, end });
    if start > end {
        return invalid;
    }
    if start == 0 || start == end {
        return Ok(());
    }
    // A length above 2^63 has no u64 power-of-two ceiling; with start > 0 it
    // cannot be aligned anyway.
    match (end - start).checked_next_power_of_two() {
        // `ceil` is a power of two, so masking tests divisibility.
        Some(ceil) if start & (ceil - 1) == 0 => Ok(()),
        _ => invalid,
    }
}

/// Verifies that `leaf` is at `index` within the subtree `[start, end)` whose
/// root is `subtree_root` (Merkle Tree Certificates draft, subtree inclusion
/// proof). The proof is the ordinary RFC 9162 inclusion proof of leaf
/// `index - start` in the tree `D[start:end]`.
pub fn verify_subtree_inclusion(
    index: u64,
    start: u64,
    end: u64,
    leaf: &Hash,
    proof: &[Hash],
    subtree_root: &Hash,
) -> Result<(), ProofError> {
    check_subtree(start, end)?;
    if index < start || index >= end {
        return Err(ProofError::IndexOutsideSubtree { index, start, end });
    }
    let got = root_from_inclusion_proof(index - start, end - start, leaf, proof)?;
    check_eq(&got, subtree_root, ProofError::RootMismatch)
}

/// Verifies that the subtree `[start, end)` with root `subtree_root` is part
/// of the tree of `size` leaves with root `root` (Merkle Tree Certificates
/// draft, subtree consistency proof). With `start == 0` this is exactly
/// RFC 9162 §2.1.4.2 from size `end` to size `size`.
///
/// The empty subtree (`start == end`) follows the same policy as a
/// consistency proof from size 0: only the empty proof, only with
/// `subtree_root == empty_root()`, and any `root`.
pub fn verify_subtree_consistency(
    start: u64,
    end: u64,
    size: u64,
    proof: &[Hash],
    subtree_root: &Hash,
    root: &Hash,
) -> Result<(), ProofError> {
    check_subtree(start, end)?;
    if end > size {
        return Err(ProofError::SizeOrder {
            old: end,
            new: size,
        });
    }
    if start == end {
        check_len(proof, 0)?;
        return check_eq(subtree_root, &empty_root(), ProofError::OldRootMismatch);
    }
    if start == 0 && end == size {
        check_len(proof, 0)?;
        return check_eq(subtree_root, root, ProofError::RootMismatch);
    }
    let got = grow_subtree(start, end, size, proof, subtree_root)?;
    check_eq(&got, root, ProofError::RootMismatch)
}

/// Shared core of consistency verification (RFC 9162 §2.1.4.2 when
/// `start == 0`, generalised to subtrees): given a non-empty subtree
/// `[start, end)` (not the whole tree) and its root, checks the part of
/// `proof` that lies inside the subtree against `sub_root`, then returns the
/// root of the tree of `size` leaves that `proof` leads to.
fn grow_subtree(
    start: u64,
    end: u64,
    size: u64,
    proof: &[Hash],
    sub_root: &Hash,
) -> Result<Hash, ProofError> {
    if end == size {
        return grow_right_edge_subtree(start, end, proof, sub_root);
    }
    // The proof starts at the largest perfect node ending at `end`; above
    // it, it is the tail of the inclusion path of leaf `end - 1` in the new
    // tree. A perfect subtree is that node itself, and its root is not sent.
    let shift = (end - start).trailing_zeros();
    let perfect = (end - start).is_power_of_two();
    let (inner_full, border) = inclusion_shape(end - 1, size);
    let inner = inner_full.saturating_sub(shift as usize);
    check_len(proof, usize::from(!perfect) + inner + border)?;
    let (seed, path) = match (perfect, proof.split_first()) {
        (false, Some((first, rest))) => (*first, rest),
        _ => (*sub_root, proof),
    };
    let mask = (end - 1) >> shift;
    if !perfect {
        let (sub_inner, sub_border) = subtree_part(start, end, shift, inner, border);
        let old = chain_inner_right(seed, &path[..sub_inner], mask);
        let old = chain_border(old, &path[inner..inner + sub_border]);
        check_eq(&old, sub_root, ProofError::OldRootMismatch)?;
    }
    let new = chain_inner(seed, &path[..inner], mask);
    Ok(chain_border(new, &path[inner..]))
}

/// How many of the inner and border hashes of a consistency path (as split by
/// [`grow_subtree`]) lie inside the subtree `[start, end)`, i.e. below its
/// root's level. Only those rebuild the subtree's own root.
fn subtree_part(start: u64, end: u64, shift: u32, inner: usize, border: usize) -> (usize, usize) {
    let height = bit_len((end - 1) ^ start);
    let sub_inner = (height.saturating_sub(shift) as usize).min(inner);
    let above = shr(end - 1, height).count_ones() as usize;
    (sub_inner, border.saturating_sub(above))
}

/// [`grow_subtree`] when the subtree ends where the tree ends: the subtree is
/// then a node on the tree's right edge, and the proof is just its left
/// siblings, one per 1 bit of the node's index.
fn grow_right_edge_subtree(
    start: u64,
    end: u64,
    proof: &[Hash],
    sub_root: &Hash,
) -> Result<Hash, ProofError> {
    let height = bit_len((end - 1) ^ start);
    check_len(proof, shr(start, height).count_ones() as usize)?;
    Ok(chain_border(*sub_root, proof))
}

// ---------------------------------------------------------------------------
// The right edge.
// ---------------------------------------------------------------------------

/// The right edge of a growing tree: one perfect node per 1 bit of the size,
/// largest (leftmost) first. This is a "compact range" `[0, size)`: it is all
/// an appender needs to create new perfect nodes and compute the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash. Calls `on_node(level, index, hash)` for every
    /// perfect node this creates, bottom-up: first the leaf itself at level
    /// 0, then each parent it completes. Those are exactly the nodes a store
    /// must persist to serve [`root`], [`inclusion_proof`] and
    /// [`consistency_proof`] later.
    ///
    /// # Panics
    ///
    /// If the tree already holds `u64::MAX` leaves.
    pub fn append(&mut self, leaf: Hash, mut on_node: impl FnMut(u32, u64, &Hash)) {
        let mut index = self.size;
        let mut level = 0;
        let mut hash = leaf;
        on_node(level, index, &hash);
        // A 1 bit at `level` of the old size means a perfect left sibling is
        // waiting on the frontier: merge with it and carry upward.
        while index & 1 == 1 {
            let left = self
                .nodes
                .pop()
                .expect("frontier holds one node per 1 bit of its size");
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            on_node(level, index, &hash);
        }
        self.nodes.push(hash);
        self.size = self.size.checked_add(1).expect("tree size overflow");
    }

    /// MTH of the whole tree (RFC 9162 §2.1.1): the frontier nodes folded
    /// right to left; [`empty_root`] for the empty tree.
    pub fn root(&self) -> Hash {
        let mut rev = self.nodes.iter().rev();
        match rev.next() {
            None => empty_root(),
            Some(last) => rev.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }

    /// Rebuilds the frontier of a tree of `size` leaves from stored perfect
    /// nodes (e.g. after a restart). Reads one node per 1 bit of `size`.
    pub fn from_nodes<E>(
        size: u64,
        get: &mut impl FnMut(u32, u64) -> Result<Hash, E>,
    ) -> Result<Frontier, E> {
        let nodes = perfect_pieces(0, size)
            .map(|(level, index)| get(level, index))
            .collect::<Result<Vec<Hash>, E>>()?;
        Ok(Frontier { size, nodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use std::collections::HashMap;
    use std::convert::Infallible;

    fn build(n: u64) -> (Frontier, HashMap<(u32, u64), Hash>) {
        let mut f = Frontier::new();
        let mut store = HashMap::new();
        for i in 0..n {
            f.append(leaf_hash(&i.to_be_bytes()), |l, x, h| {
                store.insert((l, x), *h);
            });
        }
        (f, store)
    }

    #[test]
    fn append_reports_every_perfect_node() {
        let (_, store) = build(8);
        // 8 leaves + 4 + 2 + 1 parents.
        assert_eq!(store.len(), 15);
        assert!(store.contains_key(&(3, 0)));
    }

    #[test]
    fn from_nodes_round_trips() {
        let (f, store) = build(13);
        let mut get = |l: u32, i: u64| -> Result<Hash, Infallible> { Ok(store[&(l, i)]) };
        let g = Frontier::from_nodes(13, &mut get).unwrap_or_default();
        assert_eq!(g, f);
    }

    #[test]
    fn empty_tree_policies() {
        let e = empty_root();
        let other = leaf_hash(b"x");
        assert_eq!(verify_consistency(0, 5, &e, &other, &[]), Ok(()));
        assert_eq!(
            verify_consistency(0, 5, &other, &other, &[]),
            Err(ProofError::OldRootMismatch)
        );
        assert_eq!(
            verify_consistency(0, 0, &e, &e, &[e]),
            Err(ProofError::WrongProofLength { got: 1, want: 0 })
        );
        let mut get = |_: u32, _: u64| -> Result<Hash, Infallible> { Ok(other) };
        assert!(matches!(consistency_proof(0, 9, &mut get), Ok(p) if p.is_empty()));
        assert!(matches!(consistency_proof(9, 9, &mut get), Ok(p) if p.is_empty()));
        assert!(matches!(
            consistency_proof(10, 9, &mut get),
            Err(ProofGenError::SizeOrder { old: 10, new: 9 })
        ));
        assert!(matches!(
            inclusion_proof(9, 9, &mut get),
            Err(ProofGenError::IndexOutOfRange { index: 9, size: 9 })
        ));
    }

    #[test]
    fn store_errors_surface() {
        let mut get = |_: u32, _: u64| -> Result<Hash, &'static str> { Err("disk on fire") };
        assert!(matches!(
            inclusion_proof(1, 5, &mut get),
            Err(ProofGenError::Store("disk on fire"))
        ));
        assert_eq!(root(5, &mut get), Err("disk on fire"));
    }

    #[test]
    fn subtree_validity() {
        assert!(check_subtree(8, 14).is_ok());
        assert!(check_subtree(3, 3).is_ok());
        assert!(check_subtree(2, 5).is_err());
        assert!(check_subtree(2, 1).is_err());
        assert!(check_subtree(1, (1u64 << 63) + 2).is_err());
        assert!(check_subtree(0, u64::MAX).is_ok());
    }

    #[test]
    fn huge_sizes_do_not_panic() {
        let h = leaf_hash(b"");
        assert!(verify_inclusion(u64::MAX - 1, u64::MAX, &h, &[], &h).is_err());
        assert!(verify_inclusion(0, u64::MAX, &h, &[h; 64], &h).is_err());
        assert!(verify_consistency(1, u64::MAX, &h, &h, &[h; 3]).is_err());
        assert!(verify_consistency(u64::MAX - 1, u64::MAX, &h, &h, &[h; 3]).is_err());
        assert!(verify_subtree_consistency(1 << 62, u64::MAX, u64::MAX, &[h], &h, &h).is_err());
    }
}
