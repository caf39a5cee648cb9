//! Who a node is beyond its id: the cluster it belongs to and the incarnation of its data.
//!
//! A node's id names a seat in the cluster; it does not say whether the process sitting in
//! it still holds what the seat's earlier occupant stored. A node whose data directory was
//! lost and that starts again as a founder has forgotten its log, its term and its vote:
//! letting it talk to its peers as if nothing happened could make it vote twice in one term,
//! and leaves the leader's record of its log (its match index) pointing at entries it no
//! longer has. Two identities let its peers tell:
//!
//! - The **incarnation** ([`Storage::incarnation`](crate::Storage::incarnation)): a random,
//!   non-zero number drawn when storage is first bootstrapped and stored with it. A restart
//!   over the same storage keeps it; wiped or replaced storage gets a new one.
//! - The **cluster id** ([`cluster_id`]): a stable hash of the founding voters' ids, which
//!   every founder computes alike without talking to the others. A node that joined a
//!   running cluster founded nothing and has none (0) until a peer tells it one.
//!
//! [`TcpTransport`](crate::TcpTransport) carries both in its handshake and refuses a peer of
//! another cluster, a peer that came back with another incarnation than the one it knew,
//! and a peer that knows this node by another incarnation than its own. The book's
//! operations chapter says how to bring such a node back: remove it, give it a fresh
//! directory, start it with [`Bootstrap::Join`](crate::Bootstrap::Join) and add it again.

use yggr_core::Membership;

/// What a node tells its peers about itself when it connects: see the
/// [module documentation](self). Zero in either field means "unknown" and is never checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    /// The cluster this node belongs to ([`cluster_id`] of its founding configuration), or
    /// 0 for a node that joined a running cluster.
    pub cluster_id: u64,
    /// The incarnation of this node's storage ([`Storage::incarnation`](crate::Storage::incarnation)),
    /// or 0 when its storage does not record one.
    pub incarnation: u64,
}

/// The cluster id of a cluster founded by `founding`'s voters: a 64-bit FNV-1a hash of their
/// ids in ascending order, never 0; 0 for a configuration with no voters (a node that joins
/// a running cluster). The same on every founder, every platform and every build.
pub fn cluster_id(founding: &Membership) -> u64 {
    if founding.voters.is_empty() {
        return 0;
    }
    let mut bytes = Vec::with_capacity(8 * founding.voters.len() + 8);
    bytes.extend_from_slice(b"yggr-cid");
    // `voters` is a BTreeSet: ascending order, whatever order the members were given in.
    for voter in &founding.voters {
        bytes.extend_from_slice(&voter.get().to_le_bytes());
    }
    non_zero(fnv1a_64(&bytes))
}

/// A fresh incarnation: random, from the operating system's entropy, never 0.
pub(crate) fn new_incarnation() -> u64 {
    non_zero(crate::sys::random::u64())
}

/// The 64-bit FNV-1a hash of `bytes`: simple, and fixed by its definition, so stored or sent
/// values stay the same across builds (unlike `std`'s `DefaultHasher`).
pub(crate) fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

/// `value`, or 1 in place of 0 (which means "unknown").
pub(crate) fn non_zero(value: u64) -> u64 {
    value.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use yggr_core::NodeId;

    fn voters(ids: &[u64]) -> Membership {
        Membership::from_voters(ids.iter().map(|raw| NodeId::new(*raw).unwrap()))
    }

    #[test]
    fn the_cluster_id_depends_on_the_founding_voters_only_and_not_their_order() {
        assert_eq!(
            cluster_id(&voters(&[1, 2, 3])),
            cluster_id(&voters(&[3, 1, 2]))
        );
        assert_ne!(
            cluster_id(&voters(&[1, 2, 3])),
            cluster_id(&voters(&[1, 2, 4]))
        );
        assert_ne!(cluster_id(&voters(&[1, 2, 3])), 0);
        assert_eq!(cluster_id(&Membership::empty()), 0);
    }

    /// Stored and sent values must not change between builds: pin the hash.
    #[test]
    fn the_hash_is_fnv1a_64() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn a_new_incarnation_is_never_zero() {
        assert!((0..64).all(|_| new_incarnation() != 0));
        assert_eq!(non_zero(0), 1);
    }
}
