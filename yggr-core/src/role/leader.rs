//! The leader: proposals, replication with pipelining (§5.3), heartbeats and the commit rule
//! (§5.4.2).

use tracing::{debug, info, warn};

use crate::action::Action;
use crate::engine::Engine;
use crate::entry::{EntryPayload, LogEntry};
use crate::message::{AppendEntries, AppendEntriesResponse, AppendOutcome, Rpc};
use crate::progress::{
    DEPARTURE_ROUNDS, Departure, Progress, Rejection, RejectionVerdict, ReplicationState,
};
use crate::quorum::majority_index;
use crate::types::{LogIndex, NodeId, Role};

impl<C: Clone> Engine<C> {
    /// Won the election: take over replication and commit a no-op of the new term (§5.4.2),
    /// which also commits every earlier entry it follows.
    pub(crate) fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "invalid transition: only a candidate becomes leader"
        );
        self.role = Role::Leader;
        self.leader_id = Some(self.id);
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.leader_ticks = 0;
        // Round 0 is what this reign's first appends carry, sent now.
        self.heartbeat_round = 0;
        self.last_read_round = 0;
        self.round_clock.clear();
        self.round_clock.record(0, 0);
        self.transfer = None;
        self.lease_revoked = false;
        self.sync_progress();
        self.metrics.leader_elections_won += 1;
        info!(
            target: "yggr::engine",
            node_id = self.id.get(),
            term = self.current_term.get(),
            role = self.role.as_str(),
            "became leader"
        );
        let noop = LogEntry {
            term: self.current_term,
            index: self.log.last_index().next(),
            payload: EntryPayload::Noop,
        };
        self.append_and_persist(vec![noop]);
        self.maybe_commit();
        self.broadcast_appends();
    }

    /// Keeps one `Progress` per member other than ourselves, creating entries as the
    /// configuration changes. A member the configuration drops keeps its entry as departing
    /// (see [`Engine::retire_departed`]), so the entry that removed it is still sent to it.
    pub(crate) fn sync_progress(&mut self) {
        let own = self.id;
        let last = self.log.last_index();
        let round = self.heartbeat_round;
        let members: Vec<NodeId> = self
            .membership()
            .members()
            .filter(|member| *member != own)
            .collect();
        let departed: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|peer| !members.contains(peer) && !self.departing.contains_key(peer))
            .collect();
        for peer in departed {
            let departure = Departure {
                removal_index: last,
                committed_round: None,
                rounds_left: DEPARTURE_ROUNDS,
            };
            self.departing.insert(peer, departure);
        }
        for member in members {
            // Added back while departing: its old progress says nothing about the node now.
            if self.departing.remove(&member).is_some() {
                self.progress.remove(&member);
            }
            self.progress
                .entry(member)
                .or_insert_with(|| Progress::new(last, round));
        }
    }

    /// Stops replicating to departing peers that know the entry that removed them is
    /// committed (they hold it and answered a round that told them), or that have had their
    /// rounds. Run once per heartbeat round, after the round started.
    fn retire_departed(&mut self) {
        let round = self.heartbeat_round;
        let commit_index = self.commit_index;
        let progress = &self.progress;
        self.departing.retain(|peer, departure| {
            if departure.committed_round.is_none() && commit_index >= departure.removal_index {
                departure.committed_round = Some(round);
            }
            let knows_removal_committed = departure.committed_round.is_some_and(|told| {
                progress.get(peer).is_some_and(|progress| {
                    progress.match_index >= departure.removal_index && progress.acked_round >= told
                })
            });
            departure.rounds_left = departure.rounds_left.saturating_sub(1);
            !knows_removal_committed && departure.rounds_left > 0
        });
        let members: Vec<NodeId> = self.membership().members().collect();
        let departing = &self.departing;
        self.progress
            .retain(|peer, _| members.contains(peer) || departing.contains_key(peer));
    }

    pub(crate) fn tick_leader(&mut self) {
        self.leader_ticks += 1;
        self.heartbeat_elapsed += 1;
        self.tick_transfer();
        if !self.quorum_is_active() {
            // CheckQuorum: a leader cut off from a majority steps down, so clients are
            // redirected instead of waiting on a leader that can no longer commit.
            info!(
                target: "yggr::engine",
                node_id = self.id.get(),
                term = self.current_term.get(),
                "stepping down: no majority heard within an election timeout"
            );
            let term = self.current_term;
            self.become_follower(term, None);
            return;
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Starts a new heartbeat round: every follower gets an AppendEntries carrying the round,
    /// which both keeps its election timer quiet and, once acknowledged by a majority, confirms
    /// our leadership for the reads waiting on that round.
    pub(crate) fn broadcast_heartbeat(&mut self) {
        self.start_round();
        self.retire_departed();
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            let Some(progress) = self.progress.get_mut(&peer) else {
                continue;
            };
            progress.on_heartbeat();
            let state = progress.state;
            let snapshot_stalled = !std::mem::take(&mut progress.snapshot_advanced);
            match state {
                ReplicationState::Probe | ReplicationState::Replicate => {
                    self.send_round_to(peer);
                    self.send_appends(peer);
                }
                // A chunk or its answer was lost: resend it. A transfer that is moving along
                // needs no help, and its chunks carry the round.
                ReplicationState::Snapshot if snapshot_stalled => self.send_snapshot_chunk(peer),
                ReplicationState::Snapshot => {}
            }
        }
    }

    /// Sends `peer`, which is not receiving a snapshot, an AppendEntries carrying the current
    /// round. While its match point is unknown that is a probe at its next index (doubling as
    /// a heartbeat); while replicating, a bare heartbeat anchored at the match point, which the
    /// follower is known to hold, so it cannot be rejected and never disturbs the pipeline.
    pub(crate) fn send_round_to(&mut self, peer: NodeId) {
        let Some(progress) = self.progress.get(&peer) else {
            return;
        };
        match progress.state {
            ReplicationState::Probe => {
                self.send_append(peer, true);
            }
            ReplicationState::Replicate => {
                let match_index = progress.match_index;
                self.send_heartbeat_at(peer, match_index);
            }
            ReplicationState::Snapshot => {}
        }
    }

    /// Sends `peer` an empty AppendEntries anchored at `anchor`, its match point. If that
    /// point has been compacted away the follower needs the snapshot, and gets it.
    pub(crate) fn send_heartbeat_at(&mut self, peer: NodeId, anchor: LogIndex) {
        let Some(anchor_term) = self.log.term_at(anchor) else {
            self.start_snapshot_transfer(peer);
            return;
        };
        let request = AppendEntries {
            prev_log_index: anchor,
            prev_log_term: anchor_term,
            entries: Vec::new(),
            leader_commit: self.commit_index,
            round: self.heartbeat_round,
        };
        self.send(peer, Rpc::AppendEntries(request));
    }

    pub(crate) fn broadcast_appends(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            self.send_appends(peer);
        }
    }

    /// Sends as many AppendEntries to `peer` as its replication state allows: one probe, or
    /// batches up to the in-flight window while pipelining.
    pub(crate) fn send_appends(&mut self, peer: NodeId) {
        let window = self.config.max_inflight_appends;
        loop {
            let Some(progress) = self.progress.get(&peer) else {
                return;
            };
            if !progress.can_send(window) || progress.next_index > self.log.last_index() {
                return;
            }
            if !self.send_append(peer, false) {
                return;
            }
        }
    }

    /// Sends one AppendEntries from `peer`'s next index. With `allow_empty`, sends even when
    /// there is nothing new (a probe doubling as a heartbeat). Returns whether anything went
    /// out as an append.
    fn send_append(&mut self, peer: NodeId, allow_empty: bool) -> bool {
        let Some(progress) = self.progress.get(&peer) else {
            return false;
        };
        let next = progress.next_index;
        let prev_log_index = next.prev();
        let Some(prev_log_term) = self.log.term_at(prev_log_index) else {
            // The entries this follower needs are compacted away: switch it to a snapshot.
            self.start_snapshot_transfer(peer);
            return false;
        };
        let entries = self
            .log
            .entries_from(next, self.config.max_entries_per_append);
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let last_sent = entries.last().map(|entry| entry.index);
        if let Some(progress) = self.progress.get_mut(&peer) {
            progress.on_sent(last_sent);
        }
        let request = AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: self.commit_index,
            round: self.heartbeat_round,
        };
        self.send(peer, Rpc::AppendEntries(request));
        true
    }

    /// Client commands: append them all, persist once, broadcast once (group commit).
    pub(crate) fn on_proposals(&mut self, commands: Vec<C>) {
        // Never drop a proposal silently: the host fails it with the reason.
        if self.role != Role::Leader {
            self.out.push(Action::Redirect {
                leader_hint: self.leader_id,
            });
            return;
        }
        if let Some(transfer) = self.transfer {
            // While a transfer is pending the leader takes nothing new, so the target can
            // catch up (thesis §3.10).
            self.out.push(Action::TransferInProgress {
                target: transfer.target,
            });
            return;
        }
        if commands.is_empty() {
            return;
        }
        let term = self.current_term;
        let first = self.log.last_index().next();
        let entries: Vec<LogEntry<C>> = commands
            .into_iter()
            .enumerate()
            .map(|(offset, command)| LogEntry {
                term,
                index: first.plus(offset as u64),
                payload: EntryPayload::Command(command),
            })
            .collect();
        self.append_and_persist(entries);
        self.maybe_commit();
        self.broadcast_appends();
    }

    pub(crate) fn on_append_entries_response(
        &mut self,
        peer: NodeId,
        response: AppendEntriesResponse,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&peer) else {
            return;
        };
        // Any answer in our term but a stale-term refusal shows the follower recognised us as
        // of that round. A refusal of something we sent in an older term acknowledges
        // nothing of this one (`step` already compared terms).
        if response.outcome != AppendOutcome::StaleTerm {
            progress.acked_round = progress
                .acked_round
                .max(response.round.min(self.heartbeat_round));
        }
        match response.outcome {
            AppendOutcome::StaleTerm => return,
            AppendOutcome::Accepted { match_index } => {
                if match_index > last_index {
                    warn!(
                        target: "yggr::engine",
                        node_id = self.id.get(),
                        from = peer.get(),
                        "dropped an acknowledgement past the end of our log"
                    );
                    return;
                }
                if progress.on_accepted(match_index) {
                    self.maybe_commit();
                    self.on_peer_caught_up(peer);
                }
            }
            AppendOutcome::Rejected {
                prev_log_index,
                conflict_term,
                conflict_index,
            } => {
                let rejection = Rejection {
                    prev_log_index,
                    conflict_term,
                    conflict_index,
                };
                let log = &self.log;
                let match_before = progress.match_index;
                match progress
                    .on_rejected(rejection, last_index, |term| log.last_index_of_term(term))
                {
                    RejectionVerdict::Ignored => {}
                    RejectionVerdict::BackedOff => debug!(
                        target: "yggr::engine",
                        node_id = self.id.get(),
                        term = self.current_term.get(),
                        peer = peer.get(),
                        next_index = progress.next_index.get(),
                        "follower rejected AppendEntries; backing off"
                    ),
                    RejectionVerdict::LostAcknowledged => {
                        self.metrics.followers_lost_acknowledged += 1;
                        warn!(
                            target: "yggr::engine",
                            node_id = self.id.get(),
                            term = self.current_term.get(),
                            peer = peer.get(),
                            acknowledged_through = match_before.get(),
                            now_holds_through = progress.match_index.get(),
                            "follower no longer holds entries it acknowledged (its log was damaged); sending them again"
                        );
                    }
                }
            }
        }
        self.confirm_reads();
        if self.role == Role::Leader {
            self.send_appends(peer);
        }
    }

    /// §5.3–5.4.2: the highest index on a majority of voters commits, but only by counting
    /// replicas of an entry from the current term; earlier terms commit with it (Figure 8).
    pub(crate) fn maybe_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let own = self.id;
        let own_match = self.log.last_index();
        let mut matches: Vec<LogIndex> = self
            .membership()
            .voters
            .iter()
            .map(|voter| {
                if *voter == own {
                    own_match
                } else {
                    self.progress
                        .get(voter)
                        .map_or(LogIndex::ZERO, |progress| progress.match_index)
                }
            })
            .collect();
        let candidate = majority_index(&mut matches);
        if candidate > self.commit_index && self.log.term_at(candidate) == Some(self.current_term) {
            self.advance_commit_to(candidate);
        }
    }

    /// Leadership ended (a newer term, or stepping down after removing ourselves).
    pub(crate) fn on_leadership_lost(&mut self) {
        self.transfer = None;
        self.fail_pending_reads(crate::action::ReadFailure::SteppedDown);
    }

    /// Called whenever the commit index moves, on any role.
    pub(crate) fn on_commit_advanced(&mut self) {
        if self.role == Role::Leader {
            // The first commit of our term makes the reads that waited for it answerable.
            self.assign_read_indexes();
        }
        if self.role == Role::Leader && !self.committed_membership().is_voter(self.id) {
            // A leader that removed itself led until the change committed; now it goes.
            info!(
                target: "yggr::engine",
                node_id = self.id.get(),
                term = self.current_term.get(),
                "stepping down: no longer a voter in the committed configuration"
            );
            // Hand over rather than leave the cluster an election timeout without a leader: a
            // remaining voter that holds the whole log is told to campaign at once, as in a
            // leadership transfer (thesis §3.10).
            if let Some(successor) = self.caught_up_voter() {
                self.lease_revoked = true;
                self.send(successor, Rpc::TimeoutNow);
            }
            let term = self.current_term;
            self.become_follower(term, None);
        }
    }

    /// A voter of the committed configuration, other than this node, whose log matches the
    /// whole of ours (the lowest id among them, for determinism).
    fn caught_up_voter(&self) -> Option<NodeId> {
        let last = self.log.last_index();
        self.committed_membership()
            .voters
            .iter()
            .copied()
            .filter(|voter| *voter != self.id)
            .find(|voter| {
                self.progress
                    .get(voter)
                    .is_some_and(|progress| progress.match_index == last)
            })
    }
}

impl<C: Clone> Engine<C> {
    /// CheckQuorum: whether a majority of voters acknowledged a round sent within the last
    /// minimum election timeout. Always true during the first timeout of a reign. A leader
    /// that is the only voter acknowledges its own rounds; one that removed itself counts
    /// only the others.
    ///
    /// A voter added during this reign counts as heard from as of the round current when it
    /// joined, so it has a timeout to answer before its silence can depose the leader. That
    /// grace serves check-quorum only: reads and the lease count real acknowledgements alone.
    fn quorum_is_active(&self) -> bool {
        let window = self.config.election_timeout_min_ticks;
        let active_round =
            self.majority_round(|progress| progress.acked_round.max(progress.joined_round));
        self.leader_ticks < window
            || self
                .round_clock
                .sent_within(active_round, self.leader_ticks, window)
    }
}
