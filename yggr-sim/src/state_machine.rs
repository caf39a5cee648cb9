//! The state machine the simulator replicates: a running digest of everything applied, so two
//! nodes' states compare in O(1), with a snapshot that can be made as large as a test needs.

use bytes::Bytes;
use yggr_core::LogIndex;

use crate::harness::Command;

/// A state machine that records what it applied as a running digest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackedStateMachine {
    /// The last index applied (or restored from a snapshot).
    pub last_applied: LogIndex,
    /// A digest of every entry applied so far, in order.
    pub digest: u64,
}

/// The smallest snapshot: the applied index and the digest.
pub const SNAPSHOT_HEADER_BYTES: usize = 16;

impl TrackedStateMachine {
    /// The state after applying the entry at `index` carrying `command` (`None` for entries
    /// without one).
    pub fn applied(self, index: LogIndex, command: Option<Command>) -> TrackedStateMachine {
        let mut digest = self.digest ^ index.get().rotate_left(17);
        digest = mix(digest ^ command.map_or(0x9e37_79b9, |c| c.wrapping_mul(0x2545_f491)));
        TrackedStateMachine {
            last_applied: index,
            digest,
        }
    }

    /// The snapshot encoding, `size` bytes long (at least [`SNAPSHOT_HEADER_BYTES`]): the
    /// applied index and the digest, little-endian, then padding derived from both. The
    /// padding lets a test make snapshots that take many chunks, and lets [`from_bytes`]
    /// notice chunks of two different snapshots spliced together.
    ///
    /// [`from_bytes`]: TrackedStateMachine::from_bytes
    pub fn to_bytes(self, size: usize) -> Bytes {
        let size = size.max(SNAPSHOT_HEADER_BYTES);
        let mut bytes = Vec::with_capacity(size);
        bytes.extend_from_slice(&self.last_applied.get().to_le_bytes());
        bytes.extend_from_slice(&self.digest.to_le_bytes());
        let mut word = self.seed_word();
        while bytes.len() < size {
            word = mix(word);
            let take = (size - bytes.len()).min(8);
            bytes.extend_from_slice(&word.to_le_bytes()[..take]);
        }
        Bytes::from(bytes)
    }

    /// Decodes a snapshot; `None` unless it is exactly what [`to_bytes`] wrote.
    ///
    /// [`to_bytes`]: TrackedStateMachine::to_bytes
    pub fn from_bytes(bytes: &[u8]) -> Option<TrackedStateMachine> {
        let index: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        let digest: [u8; 8] = bytes.get(8..16)?.try_into().ok()?;
        let state = TrackedStateMachine {
            last_applied: LogIndex::new(u64::from_le_bytes(index)),
            digest: u64::from_le_bytes(digest),
        };
        (state.to_bytes(bytes.len()) == bytes).then_some(state)
    }

    fn seed_word(self) -> u64 {
        self.digest ^ self.last_applied.get().rotate_left(29)
    }
}

/// SplitMix64's finaliser: a cheap, well-mixed 64-bit hash step.
fn mix(mut value: u64) -> u64 {
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_at_any_size() {
        let state = TrackedStateMachine::default()
            .applied(LogIndex::new(1), Some(5))
            .applied(LogIndex::new(2), None);
        for size in [0, 16, 17, 64, 2049] {
            let bytes = state.to_bytes(size);
            assert_eq!(bytes.len(), size.max(16));
            assert_eq!(TrackedStateMachine::from_bytes(&bytes), Some(state));
        }
    }

    #[test]
    fn spliced_or_truncated_snapshots_are_refused() {
        let first = TrackedStateMachine::default().applied(LogIndex::new(1), Some(5));
        let second = first.applied(LogIndex::new(2), Some(6));
        let mut spliced = first.to_bytes(64).to_vec();
        spliced[40..].copy_from_slice(&second.to_bytes(64)[40..]);
        assert_eq!(TrackedStateMachine::from_bytes(&spliced), None);
        assert_eq!(
            TrackedStateMachine::from_bytes(&first.to_bytes(64)[..15]),
            None
        );
    }
}
