//! Linearizable reads (§8, thesis §6.4): ReadIndex confirmed by a heartbeat round, and the
//! optional leader lease (§9).
//!
//! A read is served once three things hold: the leader knows a read index no lower than
//! anything committed before the read arrived (its commit index once an entry of its own term
//! has committed); a majority acknowledged a round that started after the read arrived, or the
//! lease vouches for the leader; and the state machine has applied the read index.
//!
//! Rounds are shared. At most one round started for reads is unacknowledged at a time; reads
//! that arrive meanwhile wait for the next round to start (when that one is acknowledged, or
//! with the next heartbeat), and one round then confirms all of them. A burst of reads costs a
//! round trip per batch, not a message per read per follower.

use crate::action::{Action, ReadFailure};
use crate::engine::Engine;
use crate::progress::{Progress, ReplicationState};
use crate::quorum::majority_value;
use crate::types::{LogIndex, NodeId, Role};

/// A read waiting for its read index, its leadership confirmation and the state machine.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingRead {
    pub(crate) id: u64,
    /// The read must observe everything up to this index. `None` while the leader has not yet
    /// committed an entry of its own term: its commit index may lag what an earlier leader
    /// committed, so the read waits and takes the commit index at that moment.
    pub(crate) read_index: Option<LogIndex>,
    pub(crate) confirmation: Confirmation,
}

/// How far a read's leadership confirmation has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Confirmation {
    /// Confirmed, by a majority's acknowledgement or by the lease.
    Confirmed,
    /// Waiting for a majority to acknowledge this round (or a later one).
    AwaitingAck(u64),
    /// Waiting for a round to start: one started for earlier reads is still unacknowledged.
    AwaitingRound,
}

impl<C: Clone> Engine<C> {
    /// Reads arriving together: all queued, then confirmed by one round.
    pub(crate) fn on_propose_reads(&mut self, ids: &[u64]) {
        if self.role != Role::Leader {
            for id in ids {
                self.fail_read(
                    *id,
                    ReadFailure::NotLeader {
                        leader_hint: self.leader_id,
                    },
                );
            }
            return;
        }
        // §6.4 / pitfall: until an entry of our own term commits, our commit index may lag
        // behind what an earlier leader committed; the read then waits for that commit.
        let read_index = self.leader_is_ready().then_some(self.commit_index);
        for id in ids {
            self.metrics.read_index_started += 1;
            self.pending_reads.push_back(PendingRead {
                id: *id,
                read_index,
                confirmation: Confirmation::AwaitingRound,
            });
        }
        self.confirm_reads();
    }

    /// Whether an entry of the current term has committed, so the commit index is at least
    /// everything any earlier leader committed (§5.4.2, §6.4).
    pub(crate) fn leader_is_ready(&self) -> bool {
        self.log.term_at(self.commit_index) == Some(self.current_term)
    }

    /// Starts a heartbeat round. Every read waiting for a round arrived before it, so this
    /// round can confirm them all.
    pub(crate) fn start_round(&mut self) {
        self.heartbeat_round += 1;
        let round = self.heartbeat_round;
        self.round_clock.record(round, self.leader_ticks);
        let mut assigned = false;
        // Reads awaiting a round are the tail of the queue (see `confirm_reads`).
        for read in self.pending_reads.iter_mut().rev() {
            if read.confirmation != Confirmation::AwaitingRound {
                break;
            }
            read.confirmation = Confirmation::AwaitingAck(round);
            assigned = true;
        }
        if assigned {
            self.last_read_round = round;
        }
    }

    /// Sends the current round to every voter that is not receiving a snapshot (a snapshot
    /// chunk carries the round of its own send, and its answer acknowledges it).
    fn send_round_heartbeats(&mut self) {
        let voters: Vec<NodeId> = self
            .progress
            .iter()
            .filter(|(peer, progress)| {
                progress.state != ReplicationState::Snapshot && self.membership().is_voter(**peer)
            })
            .map(|(peer, _)| *peer)
            .collect();
        for peer in voters {
            self.send_round_to(peer);
        }
    }

    /// The highest round acknowledged by a majority of voters. This leader counts for the
    /// latest round only while it is a voter itself: a leader that removed itself needs a
    /// majority of the others.
    pub(crate) fn majority_acked_round(&self) -> u64 {
        self.majority_round(|progress| progress.acked_round)
    }

    /// The highest round a majority of voters is vouched for by `round_of` (this leader, while
    /// a voter, by its latest round).
    pub(crate) fn majority_round(&self, round_of: impl Fn(&Progress) -> u64) -> u64 {
        let own = self.id;
        let mut rounds: Vec<u64> = self
            .membership()
            .voters
            .iter()
            .map(|voter| {
                if *voter == own {
                    self.heartbeat_round
                } else {
                    self.progress.get(voter).map_or(0, &round_of)
                }
            })
            .collect();
        majority_value(&mut rounds)
    }

    /// §9: a majority acknowledged a round sent less than `lease_duration_ticks` ago, so no
    /// other leader can have been elected since: each of them refuses to vote for a minimum
    /// election timeout after hearing from us, and config validation keeps the lease shorter
    /// than that by a heartbeat interval.
    pub(crate) fn lease_is_valid(&self) -> bool {
        let lease = self.config.lease_duration_ticks;
        if lease == 0 || self.role != Role::Leader || self.lease_revoked {
            return false;
        }
        self.round_clock
            .sent_within(self.majority_acked_round(), self.leader_ticks, lease)
    }

    /// Confirms reads whose round a majority acknowledged (or all of them, while the lease
    /// holds), starts a round for reads waiting for one when none is outstanding, and serves
    /// what is ready. Cheap when nothing waits.
    ///
    /// Invariant: `pending_reads` is, in order, confirmed reads, then reads awaiting the
    /// acknowledgement of non-decreasing rounds, then reads awaiting a round.
    pub(crate) fn confirm_reads(&mut self) {
        if self.pending_reads.is_empty() || self.role != Role::Leader {
            return;
        }
        loop {
            let lease = self.lease_is_valid();
            let acked = self.majority_acked_round();
            for read in self.pending_reads.iter_mut() {
                match read.confirmation {
                    Confirmation::Confirmed => {}
                    // The lease vouches for our leadership now, after every pending read
                    // arrived.
                    _ if lease => read.confirmation = Confirmation::Confirmed,
                    Confirmation::AwaitingAck(round) if round <= acked => {
                        read.confirmation = Confirmation::Confirmed;
                    }
                    Confirmation::AwaitingAck(_) | Confirmation::AwaitingRound => break,
                }
            }
            let waiting = self
                .pending_reads
                .back()
                .is_some_and(|read| read.confirmation == Confirmation::AwaitingRound);
            if !waiting || self.last_read_round > acked {
                break;
            }
            // No read round is outstanding: start one for every read waiting. A leader that is
            // a majority on its own acknowledges it at once, hence the loop.
            self.start_round();
            self.send_round_heartbeats();
        }
        self.release_ready_reads();
    }

    /// Gives reads that arrived before this leader was ready their read index: the commit
    /// index now that an entry of its term has committed.
    pub(crate) fn assign_read_indexes(&mut self) {
        if !self.leader_is_ready() {
            return;
        }
        let commit_index = self.commit_index;
        // Reads without an index arrived before the leader was ready: a prefix of the queue.
        for read in self.pending_reads.iter_mut() {
            if read.read_index.is_some() {
                break;
            }
            read.read_index = Some(commit_index);
        }
    }

    /// Serves, in arrival order, every confirmed read whose index has been applied.
    pub(crate) fn release_ready_reads(&mut self) {
        while let Some(read) = self.pending_reads.front() {
            let applied = read
                .read_index
                .is_some_and(|index| index <= self.last_applied);
            if read.confirmation != Confirmation::Confirmed || !applied {
                break;
            }
            let id = read.id;
            self.pending_reads.pop_front();
            self.metrics.reads_completed += 1;
            self.out.push(Action::ReadReady { id });
        }
    }

    pub(crate) fn fail_pending_reads(&mut self, reason: ReadFailure) {
        while let Some(read) = self.pending_reads.pop_front() {
            self.fail_read(read.id, reason);
        }
    }

    fn fail_read(&mut self, id: u64, reason: ReadFailure) {
        self.metrics.reads_failed += 1;
        self.out.push(Action::ReadFailed { id, reason });
    }

    /// Called after entries were handed to the host: reads waiting on them may go, and a
    /// snapshot may be due.
    pub(crate) fn after_apply(&mut self) {
        self.release_ready_reads();
        self.maybe_hint_snapshot();
    }
}
