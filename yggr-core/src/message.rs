//! The RPCs servers exchange (§5, Figure 2; §7; thesis §9.6 and §3.10).
//!
//! A [`Message`] names its sender and the sender's term, so the `message` of an
//! [`Action::Send`](crate::Action::Send) is exactly what the receiving engine takes as
//! [`Event::Incoming`](crate::Event::Incoming): hosts route it untouched.

use bytes::Bytes;

use crate::entry::LogEntry;
use crate::membership::Membership;
use crate::types::{LogIndex, NodeId, Term};

/// One RPC from one server to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<C> {
    /// The sending server.
    pub from: NodeId,
    /// The sender's term. For a pre-vote request this is the term the sender *would* campaign
    /// in (its current term plus one); for a granted pre-vote response it echoes that term.
    pub term: Term,
    /// The request or response itself.
    pub rpc: Rpc<C>,
}

/// The body of a [`Message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rpc<C> {
    /// RequestVote (§5.2).
    RequestVote(VoteRequest),
    /// The answer to a [`Rpc::RequestVote`].
    RequestVoteResponse(VoteResponse),
    /// A pre-vote probe (thesis §9.6): would you vote for me in the next term?
    RequestPreVote(VoteRequest),
    /// The answer to a [`Rpc::RequestPreVote`].
    RequestPreVoteResponse(VoteResponse),
    /// AppendEntries (§5.3), also the leader's heartbeat.
    AppendEntries(AppendEntries<C>),
    /// The answer to an [`Rpc::AppendEntries`].
    AppendEntriesResponse(AppendEntriesResponse),
    /// One chunk of a snapshot (§7).
    InstallSnapshot(InstallSnapshot),
    /// The answer to an [`Rpc::InstallSnapshot`] chunk.
    InstallSnapshotResponse(InstallSnapshotResponse),
    /// Leadership transfer (thesis §3.10): campaign now, without waiting for a timeout.
    TimeoutNow,
}

impl<C> Rpc<C> {
    /// A short, stable name for logs and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Rpc::RequestVote(_) => "request_vote",
            Rpc::RequestVoteResponse(_) => "request_vote_response",
            Rpc::RequestPreVote(_) => "request_pre_vote",
            Rpc::RequestPreVoteResponse(_) => "request_pre_vote_response",
            Rpc::AppendEntries(_) => "append_entries",
            Rpc::AppendEntriesResponse(_) => "append_entries_response",
            Rpc::InstallSnapshot(_) => "install_snapshot",
            Rpc::InstallSnapshotResponse(_) => "install_snapshot_response",
            Rpc::TimeoutNow => "timeout_now",
        }
    }
}

/// The body of a vote or pre-vote request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteRequest {
    /// Index of the candidate's last log entry (§5.4.1).
    pub last_log_index: LogIndex,
    /// Term of the candidate's last log entry (§5.4.1).
    pub last_log_term: Term,
    /// Set when the campaign was started by [`Rpc::TimeoutNow`]: voters then waive the rule
    /// that refuses votes while a live leader is known, because that leader asked for it.
    pub leadership_transfer: bool,
}

/// The body of a vote or pre-vote response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteResponse {
    /// Whether the vote (or pre-vote) was granted.
    pub granted: bool,
}

/// The body of an AppendEntries request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendEntries<C> {
    /// Index of the entry immediately preceding `entries`.
    pub prev_log_index: LogIndex,
    /// Term of the entry at `prev_log_index`.
    pub prev_log_term: Term,
    /// Entries to store, contiguous from `prev_log_index + 1`; empty for a heartbeat.
    pub entries: Vec<LogEntry<C>>,
    /// The leader's commit index.
    pub leader_commit: LogIndex,
    /// The leader's heartbeat round when this was sent, echoed in the response. A read index is
    /// confirmed only by acknowledgements of rounds that began after the read arrived.
    pub round: u64,
}

/// The body of an AppendEntries response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendEntriesResponse {
    /// The round of the request this answers.
    pub round: u64,
    /// What the follower did with it.
    pub outcome: AppendOutcome,
}

/// Whether a follower accepted an AppendEntries, and what the leader needs to know either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The follower's log now matches the leader's through `match_index`.
    Accepted {
        /// The last index the follower verified against this request.
        match_index: LogIndex,
    },
    /// The consistency check at `prev_log_index` failed.
    Rejected {
        /// The `prev_log_index` of the rejected request, so stale rejections can be recognised.
        prev_log_index: LogIndex,
        /// The term of the follower's entry at `prev_log_index`, when it has one.
        conflict_term: Option<Term>,
        /// With a `conflict_term`: the first index the follower holds in that term. Without: the
        /// follower's last index plus one. Lets the leader skip a whole term per round trip.
        conflict_index: LogIndex,
    },
    /// The request came from a term older than the responder's. The answer exists only to
    /// carry the responder's newer term back (§5.1); it says nothing about the responder's
    /// log, and acknowledges no round. (Its sender may by now lead that newer term itself:
    /// echoing the old request's round would then confirm a round of the new reign that the
    /// responder never saw.)
    StaleTerm,
}

/// One chunk of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallSnapshot {
    /// The last log index the snapshot covers.
    pub last_included_index: LogIndex,
    /// The term of that entry.
    pub last_included_term: Term,
    /// The configuration as of `last_included_index`.
    pub membership: Membership,
    /// Byte offset of `data` within the whole snapshot.
    pub offset: u64,
    /// The chunk's bytes.
    pub data: Bytes,
    /// Whether this is the last chunk.
    pub done: bool,
    /// The leader's heartbeat round when this chunk was sent, echoed in the response: a
    /// follower busy receiving a snapshot acknowledges rounds like any other, so check-quorum
    /// and reads count it as heard from.
    pub round: u64,
}

/// The answer to one snapshot chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstallSnapshotResponse {
    /// The snapshot this answers for.
    pub last_included_index: LogIndex,
    /// The offset the follower expects next; equal to the total size once installed.
    pub next_offset: u64,
    /// Whether the follower now holds the whole snapshot (installed, or already covered).
    pub done: bool,
    /// The round of the chunk this answers.
    pub round: u64,
}
