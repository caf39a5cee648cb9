//! Counters and gauges the engine keeps about itself.

use crate::types::{LogIndex, Term};

/// A snapshot of the engine's counters and gauges. Counters only grow; gauges reflect the
/// moment [`Engine::metrics`](crate::Engine::metrics) was called.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineMetrics {
    /// Real elections this node started (term bumps to campaign).
    pub elections_started: u64,
    /// Pre-votes this node granted to others.
    pub pre_votes_granted: u64,
    /// Pre-votes this node refused.
    pub pre_votes_denied: u64,
    /// Votes this node granted to others.
    pub votes_granted: u64,
    /// Votes this node refused.
    pub votes_denied: u64,
    /// Elections this node won.
    pub leader_elections_won: u64,
    /// Times a higher term in a message made this node adopt it and become a follower.
    pub higher_term_stepdowns: u64,
    /// AppendEntries messages sent (heartbeats included).
    pub append_entries_sent: u64,
    /// AppendEntries messages received.
    pub append_entries_received: u64,
    /// AppendEntries messages this node rejected.
    pub append_entries_rejected: u64,
    /// Times, as leader, a follower refused an AppendEntries anchored at the point it had
    /// acknowledged: its disk lost entries it had confirmed holding (damage its recovery
    /// could not tell from a torn write). Each time the entries are sent to it again. On a
    /// network that reorders messages in both directions (not TCP) a refusal sent before an
    /// acknowledgement can arrive after it and be counted here too; that costs one re-probe.
    pub followers_lost_acknowledged: u64,
    /// Entries appended to the local log (proposals as leader, replication as follower).
    pub entries_appended: u64,
    /// Entries that became committed on this node, whether it learned so from a leader's
    /// commit index or by installing a snapshot that covers them.
    pub entries_committed: u64,
    /// Entries handed to the host to apply.
    pub entries_applied: u64,
    /// InstallSnapshot chunks sent.
    pub snapshots_sent: u64,
    /// Snapshots fully received and installed.
    pub snapshots_installed: u64,
    /// Linearizable reads started on this node as leader.
    pub read_index_started: u64,
    /// Reads answered with `ReadReady`.
    pub reads_completed: u64,
    /// Reads answered with `ReadFailed`.
    pub reads_failed: u64,
    /// Gauge: the current term.
    pub current_term: Term,
    /// Gauge: the commit index.
    pub commit_index: LogIndex,
    /// Gauge: the highest index handed to the host to apply.
    pub last_applied: LogIndex,
    /// Gauge: entries in the live log, above the snapshot floor.
    pub log_len: u64,
    /// Gauge: 0 follower, 1 pre-candidate, 2 candidate, 3 leader.
    pub role_code: u8,
}
