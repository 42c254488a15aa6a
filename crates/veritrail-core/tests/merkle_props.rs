//! Property tests of the Merkle module against a naive RFC 9162 §2.1.1 MTH:
//! random trees, every perfect node stored through `Frontier::append`, then
//! roots, inclusion proofs and consistency proofs generated from the store
//! must verify, and any single-bit or off-by-one change must not.

use std::collections::HashMap;

use proptest::prelude::*;
use veritrail_core::hash::{empty_root, leaf_hash, node_hash, Hash};
use veritrail_core::merkle::{
    consistency_proof, inclusion_proof, root, verify_consistency, verify_inclusion, Frontier,
};

type Store = HashMap<(u32, u64), Hash>;

/// MTH(D[n]) exactly as RFC 9162 §2.1.1 writes it: split at the largest
/// power of two smaller than n, recurse.
fn naive_mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&naive_mth(&leaves[..k]), &naive_mth(&leaves[k..]))
        }
    }
}

/// The largest power of two strictly below `n` (n >= 2).
fn split(n: usize) -> usize {
    1usize << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// RFC 9162 §2.1.3.1 PATH(m, D[n]), written as the RFC writes it.
fn naive_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    if leaves.len() <= 1 {
        return Vec::new();
    }
    let k = split(leaves.len());
    let (mut p, sibling) = if m < k {
        (naive_path(m, &leaves[..k]), &leaves[k..])
    } else {
        (naive_path(m - k, &leaves[k..]), &leaves[..k])
    };
    p.push(naive_mth(sibling));
    p
}

/// RFC 9162 §2.1.4.1 SUBPROOF(m, D[n], b), written as the RFC writes it.
fn naive_subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if b {
            Vec::new()
        } else {
            vec![naive_mth(leaves)]
        };
    }
    let k = split(n);
    let (mut p, sibling) = if m <= k {
        (naive_subproof(m, &leaves[..k], b), &leaves[k..])
    } else {
        (naive_subproof(m - k, &leaves[k..], false), &leaves[..k])
    };
    p.push(naive_mth(sibling));
    p
}

struct Tree {
    leaves: Vec<Hash>,
    store: Store,
    /// `frontier_roots[s]` = `Frontier::root()` after `s` appends.
    frontier_roots: Vec<Hash>,
}

/// Leaf data is prefixed with its index so that no two leaves are equal:
/// equal neighbours would make some index changes legitimately undetectable.
fn build(extra: &[Vec<u8>]) -> Tree {
    let mut frontier = Frontier::new();
    let mut store = Store::new();
    let mut leaves = Vec::new();
    let mut frontier_roots = vec![frontier.root()];
    for (i, bytes) in extra.iter().enumerate() {
        let leaf = leaf_hash(&[&(i as u64).to_be_bytes()[..], bytes].concat());
        frontier.append(leaf, |level, index, h| {
            assert!(
                store.insert((level, index), *h).is_none(),
                "node ({level}, {index}) reported twice"
            );
        });
        leaves.push(leaf);
        frontier_roots.push(frontier.root());
    }
    Tree {
        leaves,
        store,
        frontier_roots,
    }
}

impl Tree {
    fn get(&self) -> impl FnMut(u32, u64) -> Result<Hash, String> + '_ {
        |level, index| {
            self.store
                .get(&(level, index))
                .copied()
                .ok_or(format!("no node ({level}, {index})"))
        }
    }

    fn root(&self, size: u64) -> Hash {
        root(size, &mut self.get()).expect("every needed node is stored")
    }
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut out = *h;
    out[bit / 8 % 32] ^= 1 << (bit % 8);
    out
}

fn leaves_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 1..=300)
}

/// Checks one inclusion proof and that each single change breaks it.
/// `exhaustive` flips every bit of every hash; otherwise only bit `bit`.
fn check_inclusion(t: &Tree, index: u64, size: u64, bit: usize, exhaustive: bool) {
    let leaf = t.leaves[index as usize];
    let root = t.root(size);
    let proof = inclusion_proof(index, size, &mut t.get()).expect("index < size");
    assert_eq!(
        proof,
        naive_path(index as usize, &t.leaves[..size as usize])
    );
    assert_eq!(
        verify_inclusion(index, size, &leaf, &proof, &root),
        Ok(()),
        "({index}, {size})"
    );
    let bits: Vec<usize> = if exhaustive {
        (0..256).collect()
    } else {
        vec![bit]
    };
    for &b in &bits {
        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i] = flip(&bad[i], b);
            assert!(verify_inclusion(index, size, &leaf, &bad, &root).is_err());
        }
        assert!(verify_inclusion(index, size, &flip(&leaf, b), &proof, &root).is_err());
        assert!(verify_inclusion(index, size, &leaf, &proof, &flip(&root, b)).is_err());
    }
    for other in [index.wrapping_sub(1), index + 1] {
        assert!(
            verify_inclusion(other, size, &leaf, &proof, &root).is_err(),
            "index {other}"
        );
    }
    // A changed size is checked against *that* size's root: see
    // `a_changed_size_is_caught_by_the_root_not_the_proof` below.
    for other in [size - 1, size + 1] {
        if (other as usize) < t.frontier_roots.len() && other > 0 {
            let other_root = t.frontier_roots[other as usize];
            assert!(
                verify_inclusion(index, other, &leaf, &proof, &other_root).is_err(),
                "size {other}"
            );
        }
    }
}

/// Checks one consistency proof and that each single change breaks it.
fn check_consistency(t: &Tree, old: u64, new: u64, bit: usize, exhaustive: bool) {
    let (r1, r2) = (t.root(old), t.root(new));
    let proof = consistency_proof(old, new, &mut t.get()).expect("old <= new");
    if old > 0 {
        assert_eq!(
            proof,
            naive_subproof(old as usize, &t.leaves[..new as usize], true)
        );
    }
    assert_eq!(
        verify_consistency(old, new, &r1, &r2, &proof),
        Ok(()),
        "({old}, {new})"
    );
    let bits: Vec<usize> = if exhaustive {
        (0..256).collect()
    } else {
        vec![bit]
    };
    for &b in &bits {
        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i] = flip(&bad[i], b);
            assert!(verify_consistency(old, new, &r1, &r2, &bad).is_err());
        }
        assert!(verify_consistency(old, new, &flip(&r1, b), &r2, &proof).is_err());
        // Policy: from the empty tree any new root is consistent.
        if old > 0 {
            assert!(verify_consistency(old, new, &r1, &flip(&r2, b), &proof).is_err());
        }
    }
    let max = t.leaves.len() as u64;
    let changed = [
        (old.wrapping_sub(1), new),
        (old + 1, new),
        (old, new.wrapping_sub(1)),
        (old, new + 1),
    ];
    for (o, n) in changed {
        // Skip sizes outside the tree, and the pairs for which an empty proof
        // is legitimately valid: (0, n) by the empty-tree policy, (n, n).
        if o > n || n > max || (proof.is_empty() && (o == 0 || o == n)) {
            continue;
        }
        let (o_root, n_root) = (t.root(o), t.root(n));
        assert!(
            verify_consistency(o, n, &o_root, &n_root, &proof).is_err(),
            "({o}, {n}) for ({old}, {new})"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn roots_agree_with_naive_mth(extra in leaves_strategy()) {
        let t = build(&extra);
        for size in 0..=t.leaves.len() {
            let want = naive_mth(&t.leaves[..size]);
            prop_assert_eq!(t.root(size as u64), want, "root from nodes, size {}", size);
            prop_assert_eq!(t.frontier_roots[size], want, "frontier root, size {}", size);
            let rebuilt = Frontier::from_nodes(size as u64, &mut t.get()).expect("nodes stored");
            prop_assert_eq!(rebuilt.root(), want);
            prop_assert_eq!(rebuilt.size(), size as u64);
        }
    }

    #[test]
    fn inclusion_proofs_verify_and_detect_changes(
        extra in leaves_strategy(),
        picks in prop::collection::vec((any::<u64>(), any::<u64>()), 3),
        bit in 0usize..256,
    ) {
        let t = build(&extra);
        let n = t.leaves.len() as u64;
        for (k, &(s, i)) in picks.iter().enumerate() {
            let size = s % n + 1;
            for index in 0..size {
                check_inclusion(&t, index, size, bit, false);
            }
            if k == 0 {
                check_inclusion(&t, i % size, size, bit, true);
            }
        }
    }

    #[test]
    fn consistency_proofs_verify_and_detect_changes(
        extra in leaves_strategy(),
        pairs in prop::collection::vec((any::<u64>(), any::<u64>()), 20),
        bit in 0usize..256,
    ) {
        let t = build(&extra);
        let n = t.leaves.len() as u64;
        for (k, &(a, b)) in pairs.iter().enumerate() {
            let (x, y) = (a % (n + 1), b % (n + 1));
            let (old, new) = (x.min(y), x.max(y));
            check_consistency(&t, old, new, bit, k == 0);
        }
        // Every old size into the full tree, too.
        for old in 0..=n {
            check_consistency(&t, old, n, bit, false);
        }
    }
}

#[test]
fn naive_mth_splits_like_rfc_9162() {
    let l: Vec<Hash> = (0u8..5).map(|i| leaf_hash(&[i])).collect();
    let left = node_hash(&node_hash(&l[0], &l[1]), &node_hash(&l[2], &l[3]));
    assert_eq!(naive_mth(&l), node_hash(&left, &l[4]));
    assert_eq!(
        naive_mth(&l[..3]),
        node_hash(&node_hash(&l[0], &l[1]), &l[2])
    );
}

/// RFC 9162 proofs bind the leaf and the root, not the tree size on its own:
/// the size is authenticated by the signed checkpoint next to the root. The
/// proof of leaf 0 in a 3-leaf tree has the same shape as in a 4-leaf tree,
/// so with the 3-leaf root it "verifies" for size 4 as well. Checked here so
/// that nobody mistakes `verify_inclusion` for a check of the size.
#[test]
fn a_changed_size_is_caught_by_the_root_not_the_proof() {
    let t = build(&[vec![], vec![], vec![], vec![]]);
    let proof = inclusion_proof(0, 3, &mut t.get()).expect("index < size");
    let leaf = t.leaves[0];
    assert_eq!(verify_inclusion(0, 4, &leaf, &proof, &t.root(3)), Ok(()));
    assert!(verify_inclusion(0, 4, &leaf, &proof, &t.root(4)).is_err());
}

#[test]
fn store_read_counts_stay_logarithmic() {
    let t = build(&vec![vec![]; 300]);
    let mut reads = 0;
    let mut counting = |level: u32, index: u64| {
        reads += 1;
        t.store.get(&(level, index)).copied().ok_or(())
    };
    let _ = inclusion_proof(5, 299, &mut counting).expect("index < size");
    let _ = consistency_proof(37, 299, &mut counting).expect("old <= new");
    // log2(300) < 9; each proof reads one node per element plus at most one
    // right-edge range of at most 9 perfect nodes.
    assert!(reads <= 2 * (9 + 9 + 1), "{reads} reads");
}
