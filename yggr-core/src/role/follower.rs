//! The receiving side of replication: AppendEntries (§5.3), InstallSnapshot (§7) and
//! TimeoutNow (thesis §3.10).

use tracing::{debug, warn};

use crate::engine::Engine;
use crate::entry::LogEntry;
use crate::message::{AppendEntries, AppendEntriesResponse, AppendOutcome, Rpc};
use crate::types::{LogIndex, NodeId, Role, Term};

impl<C: Clone> Engine<C> {
    /// An AppendEntries in our current term (an older one was refused by `step`).
    pub(crate) fn on_append_entries(&mut self, leader: NodeId, request: AppendEntries<C>) {
        self.metrics.append_entries_received += 1;
        if !self.recognise_leader(leader) {
            return;
        }
        if !entries_are_well_formed(&request, self.current_term) {
            warn!(
                target: "yggr::engine",
                node_id = self.id.get(),
                term = self.current_term.get(),
                from = leader.get(),
                "dropped a malformed AppendEntries"
            );
            return;
        }
        let round = request.round;
        let outcome = self.accept_entries(request);
        if matches!(outcome, AppendOutcome::Rejected { .. }) {
            self.metrics.append_entries_rejected += 1;
        }
        self.send(
            leader,
            Rpc::AppendEntriesResponse(AppendEntriesResponse { round, outcome }),
        );
    }

    /// The consistency check and the append itself (Figure 2, AppendEntries receiver rules
    /// 2–5). Persists new entries and advances the commit index before returning.
    fn accept_entries(&mut self, request: AppendEntries<C>) -> AppendOutcome {
        let AppendEntries {
            prev_log_index,
            prev_log_term,
            mut entries,
            leader_commit,
            ..
        } = request;
        let last_new_index = prev_log_index.plus(entries.len() as u64);

        // Entries at or below our snapshot floor are committed and already covered by it, so
        // they match by definition; check consistency from the floor instead.
        let floor = self.log.snapshot_index();
        if prev_log_index < floor {
            entries.retain(|entry| entry.index > floor);
            // What follows the floor must follow the snapshot's term: terms never decrease
            // along a log. Only a corrupt or forged message can say otherwise.
            let floor_term = self.log.term_at(floor);
            if entries
                .first()
                .is_some_and(|first| Some(first.term) < floor_term)
            {
                warn!(
                    target: "yggr::engine",
                    node_id = self.id.get(),
                    term = self.current_term.get(),
                    "refused entries whose terms run backwards past the snapshot"
                );
                return AppendOutcome::Rejected {
                    prev_log_index,
                    conflict_term: None,
                    conflict_index: floor.next(),
                };
            }
        } else {
            // Rule 2: reply false if the log holds no entry at prev_log_index whose term
            // matches prev_log_term.
            match self.log.term_at(prev_log_index) {
                None => {
                    return AppendOutcome::Rejected {
                        prev_log_index,
                        conflict_term: None,
                        conflict_index: self.log.last_index().next(),
                    };
                }
                Some(term) if term != prev_log_term => {
                    return AppendOutcome::Rejected {
                        prev_log_index,
                        conflict_term: Some(term),
                        conflict_index: self.log.first_index_of_term_at(prev_log_index),
                    };
                }
                Some(_) => {}
            }
        }

        // Rules 3–4: skip entries we already hold; at the first real conflict (same index,
        // other term) drop our suffix from there; append the rest. An AppendEntries whose
        // entries are all present never truncates, so a delayed duplicate cannot erase
        // entries that arrived after it.
        let first_new = entries
            .iter()
            .position(|entry| self.log.term_at(entry.index) != Some(entry.term));
        if let Some(position) = first_new {
            let new_entries = entries.split_off(position);
            let first_index = new_entries[0].index;
            if first_index <= self.log.last_index() {
                if first_index <= self.commit_index {
                    // A leader asking us to overwrite a committed entry contradicts Leader
                    // Completeness; refuse instead of corrupting applied state.
                    warn!(
                        target: "yggr::engine",
                        node_id = self.id.get(),
                        index = first_index.get(),
                        "refused to overwrite a committed entry"
                    );
                    return AppendOutcome::Rejected {
                        prev_log_index,
                        conflict_term: None,
                        conflict_index: self.commit_index.next(),
                    };
                }
                debug!(
                    target: "yggr::engine",
                    node_id = self.id.get(),
                    term = self.current_term.get(),
                    from_index = first_index.get(),
                    "truncating a conflicting suffix"
                );
                self.truncate_log_from(first_index);
            }
            self.append_and_persist(new_entries);
        }

        // Rule 5: commit up to the leader's commit, but never past what this request verified.
        self.advance_commit_to(leader_commit.min(last_new_index));
        AppendOutcome::Accepted {
            match_index: last_new_index,
        }
    }

    /// A message only the leader of our term sends arrived from `leader`. Candidates and
    /// pre-candidates of this term give way to it (§5.2) and the election timer restarts.
    /// Returns false, dropping the message, if we are ourselves the leader of this term: two
    /// leaders in one term would break Election Safety, so only a corrupt or forged message
    /// can claim it.
    pub(crate) fn recognise_leader(&mut self, leader: NodeId) -> bool {
        if self.role == Role::Leader {
            warn!(
                target: "yggr::engine",
                node_id = self.id.get(),
                term = self.current_term.get(),
                from = leader.get(),
                "dropped a leader's message from a second leader of our own term"
            );
            return false;
        }
        if self.role != Role::Follower || self.leader_id != Some(leader) {
            let term = self.current_term;
            self.become_follower(term, Some(leader));
        }
        self.election_elapsed = 0;
        self.ticks_since_leader_contact = 0;
        true
    }

    /// TimeoutNow from the leader: campaign at once, skipping pre-vote (thesis §3.10).
    pub(crate) fn on_timeout_now(&mut self, from: NodeId) {
        if self.role == Role::Leader || !self.is_voter() || self.leader_id != Some(from) {
            debug!(
                target: "yggr::engine",
                node_id = self.id.get(),
                from = from.get(),
                "ignored TimeoutNow"
            );
            return;
        }
        self.become_candidate(true);
    }
}

/// Validates an untrusted AppendEntries once, where it enters: entries contiguous from
/// `prev_log_index + 1`, terms non-decreasing, not below `prev_log_term` and not above the
/// sender's term.
fn entries_are_well_formed<C>(request: &AppendEntries<C>, sender_term: Term) -> bool {
    if request.prev_log_index == LogIndex::ZERO && request.prev_log_term != Term::ZERO {
        return false;
    }
    let mut expected_index = request.prev_log_index.next();
    let mut previous_term = request.prev_log_term;
    for entry in &request.entries {
        let LogEntry { index, term, .. } = entry;
        if *index != expected_index || *term < previous_term || *term > sender_term {
            return false;
        }
        if *index == LogIndex::ZERO {
            return false;
        }
        expected_index = expected_index.next();
        previous_term = *term;
    }
    request.prev_log_term <= sender_term
}
