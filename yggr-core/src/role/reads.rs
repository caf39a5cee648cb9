//! Linearizable reads (§8, thesis §6.4): ReadIndex confirmed by a heartbeat round, and the
//! optional leader lease (§9).

use crate::action::{Action, ReadFailure};
use crate::engine::Engine;
use crate::progress::ReplicationState;
use crate::quorum::majority_value;
use crate::types::{LogIndex, NodeId, Role};

/// A read waiting for its leadership confirmation and for the state machine to catch up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingRead {
    pub(crate) id: u64,
    /// The commit index when the read arrived: the read must observe everything up to it.
    pub(crate) read_index: LogIndex,
    /// The heartbeat round started for this read; a majority must acknowledge this round or
    /// a later one. Zero when already confirmed (by a lease, or a cluster of one).
    pub(crate) round: u64,
}

impl<C: Clone> Engine<C> {
    pub(crate) fn on_propose_read(&mut self, id: u64) {
        if self.role != Role::Leader {
            self.fail_read(
                id,
                ReadFailure::NotLeader {
                    leader_hint: self.leader_id,
                },
            );
            return;
        }
        // §6.4 / pitfall: until an entry of our own term commits, our commit index may lag
        // behind what an earlier leader committed.
        if self.log.term_at(self.commit_index) != Some(self.current_term) {
            self.fail_read(id, ReadFailure::NotReady);
            return;
        }
        self.metrics.read_index_started += 1;
        let read_index = self.commit_index;
        if self.lease_is_valid() || self.membership().voters.len() <= 1 {
            self.pending_reads.push_back(PendingRead {
                id,
                read_index,
                round: 0,
            });
        } else {
            // The confirming round must start after the read arrived: acknowledgements of
            // earlier heartbeats prove nothing about leadership now.
            self.start_round();
            let round = self.heartbeat_round;
            self.pending_reads.push_back(PendingRead {
                id,
                read_index,
                round,
            });
            self.send_round_heartbeats();
        }
        self.confirm_reads();
    }

    /// Sends the current round to every follower not busy receiving a snapshot.
    fn send_round_heartbeats(&mut self) {
        let peers: Vec<(NodeId, LogIndex)> = self
            .progress
            .iter()
            .filter(|(_, progress)| progress.state != ReplicationState::Snapshot)
            .map(|(peer, progress)| (*peer, progress.match_index))
            .collect();
        for (peer, match_index) in peers {
            self.send_heartbeat_at(peer, match_index);
        }
    }

    /// The highest round acknowledged by a majority of voters (our own counts as the latest).
    pub(crate) fn majority_acked_round(&self) -> u64 {
        let own = self.id;
        let mut rounds: Vec<u64> = self
            .membership()
            .voters
            .iter()
            .map(|voter| {
                if *voter == own {
                    self.heartbeat_round
                } else {
                    self.progress
                        .get(voter)
                        .map_or(0, |progress| progress.acked_round)
                }
            })
            .collect();
        majority_value(&mut rounds)
    }

    /// §9: a majority acknowledged a round sent less than `lease_duration_ticks` ago, so no
    /// other leader can have been elected since (the lease is shorter than the minimum
    /// election timeout minus a heartbeat, checked by config validation).
    pub(crate) fn lease_is_valid(&self) -> bool {
        let lease = self.config.lease_duration_ticks;
        if lease == 0 || self.role != Role::Leader || self.lease_revoked {
            return false;
        }
        let round = self.majority_acked_round();
        self.round_sent_at
            .iter()
            .find(|(sent_round, _)| *sent_round == round)
            .is_some_and(|(_, sent_at)| self.leader_ticks - sent_at < lease)
    }

    /// Marks reads whose round a majority acknowledged, and serves those already applied.
    pub(crate) fn confirm_reads(&mut self) {
        if self.pending_reads.is_empty() || self.role != Role::Leader {
            return;
        }
        let acked = self.majority_acked_round();
        for read in self.pending_reads.iter_mut() {
            if read.round <= acked {
                read.round = 0;
            }
        }
        self.release_ready_reads();
    }

    /// Serves, in arrival order, every confirmed read whose index has been applied.
    pub(crate) fn release_ready_reads(&mut self) {
        while let Some(read) = self.pending_reads.front() {
            if read.round != 0 || read.read_index > self.last_applied {
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
