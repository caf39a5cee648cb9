//! A leader's view of each follower's replication (§5.3 `nextIndex` / `matchIndex`).

use std::collections::VecDeque;

use crate::types::{LogIndex, Term};

/// How the leader is currently replicating to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplicationState {
    /// The follower's match point is unknown: one AppendEntries at a time until one is
    /// accepted.
    Probe,
    /// The match point is known: send ahead optimistically, up to the in-flight window.
    Replicate,
    /// The follower needs entries the leader has compacted: it is being sent a snapshot.
    Snapshot,
}

/// Replication progress of one follower.
///
/// Invariants: `match_index < next_index`; every in-flight entry lies in
/// `match_index + 1 .. next_index`. `match_index` never decreases while this leader reigns,
/// except when the follower refuses an AppendEntries anchored at it: then its disk lost what
/// it acknowledged, and the match index follows it down (see [`Progress::on_rejected`]).
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) match_index: LogIndex,
    pub(crate) next_index: LogIndex,
    pub(crate) state: ReplicationState,
    /// In `Probe`: an AppendEntries is outstanding; wait for its answer or the next heartbeat.
    probe_sent: bool,
    /// In `Replicate`: the last index carried by each unacknowledged AppendEntries, oldest
    /// first. Bounded by the configured window.
    inflight: VecDeque<LogIndex>,
    /// Heartbeat intervals that passed with messages in flight and no advance of
    /// `match_index`. Two in a row mean a message was lost (an answer takes far less than an
    /// interval on a healthy link), and the follower is re-probed from its match point.
    intervals_without_progress: u8,
    /// The highest heartbeat round this follower has acknowledged in the current term.
    pub(crate) acked_round: u64,
    /// The round current when this follower was first tracked in this reign: check-quorum
    /// treats a member that just joined as heard from then. Never an acknowledgement.
    pub(crate) joined_round: u64,
    /// In `Snapshot`: which snapshot is being sent, and the offset the follower expects next.
    pub(crate) snapshot_index: LogIndex,
    pub(crate) snapshot_offset: u64,
    /// In `Snapshot`: whether an answer moved the offset forward since the last heartbeat; if
    /// not, the heartbeat resends the current chunk.
    pub(crate) snapshot_advanced: bool,
}

/// Heartbeat intervals without progress, with messages in flight, before re-probing.
const STALLED_AFTER_INTERVALS: u8 = 2;

/// A peer the leader removed from the configuration and still replicates to until it knows
/// the entry that removed it is committed, or for a bounded number of heartbeat rounds.
/// Holding the entry is not enough: while the removal sits past its commit index the peer
/// may still be a committed voter (the change could yet be rolled back), so it goes on
/// campaigning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Departure {
    /// The index of the configuration entry that removed the peer.
    pub(crate) removal_index: LogIndex,
    /// The first heartbeat round started once the removal was committed: every message of
    /// it and of later rounds tells the peer so, and an answer to one of them shows it heard.
    pub(crate) committed_round: Option<u64>,
    /// Heartbeat rounds left before the leader stops sending to it, held or not.
    pub(crate) rounds_left: u8,
}

/// Heartbeat rounds a removed peer is still sent to, at most: with the default timing about
/// one maximum election timeout, enough for a live peer to take the entry.
pub(crate) const DEPARTURE_ROUNDS: u8 = 10;

/// What a rejection did to a follower's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RejectionVerdict {
    /// Stale: about a point already matched or an old probe.
    Ignored,
    /// Current: `next_index` moved back and the follower is probed from there.
    BackedOff,
    /// Refused at the match index: the follower lost entries it had acknowledged, and the
    /// match index came down to what it still holds.
    LostAcknowledged,
}

/// What the leader learned from a rejection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rejection {
    pub(crate) prev_log_index: LogIndex,
    pub(crate) conflict_term: Option<Term>,
    pub(crate) conflict_index: LogIndex,
}

impl Progress {
    /// Fresh progress for a follower first tracked in round `round`, by a leader whose log ends
    /// at `last_index` (§5.3: nextIndex starts just past the leader's log).
    pub(crate) fn new(last_index: LogIndex, round: u64) -> Progress {
        Progress {
            match_index: LogIndex::ZERO,
            next_index: last_index.next(),
            state: ReplicationState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            intervals_without_progress: 0,
            acked_round: 0,
            joined_round: round,
            snapshot_index: LogIndex::ZERO,
            snapshot_offset: 0,
            snapshot_advanced: false,
        }
    }

    /// Whether another AppendEntries carrying entries may go out now.
    pub(crate) fn can_send(&self, window: usize) -> bool {
        match self.state {
            ReplicationState::Probe => !self.probe_sent,
            ReplicationState::Replicate => self.inflight.len() < window,
            ReplicationState::Snapshot => false,
        }
    }

    /// Records an AppendEntries sent with entries up to `last_sent` (or none, for a probe with
    /// an empty tail).
    pub(crate) fn on_sent(&mut self, last_sent: Option<LogIndex>) {
        match self.state {
            ReplicationState::Probe => self.probe_sent = true,
            ReplicationState::Replicate => {
                if let Some(last) = last_sent {
                    self.inflight.push_back(last);
                    self.next_index = last.next();
                }
            }
            ReplicationState::Snapshot => {}
        }
    }

    /// A heartbeat interval passed. Returns true when the follower should be re-probed from
    /// its match point because messages in flight went unacknowledged for too long.
    pub(crate) fn on_heartbeat(&mut self) -> bool {
        if self.state == ReplicationState::Replicate && !self.inflight.is_empty() {
            self.intervals_without_progress = self.intervals_without_progress.saturating_add(1);
        } else {
            self.intervals_without_progress = 0;
        }
        let stalled = self.intervals_without_progress >= STALLED_AFTER_INTERVALS;
        if stalled {
            self.become_probe(self.match_index.next());
        }
        if self.state == ReplicationState::Probe {
            // A probe lost on the wire must not block the follower forever.
            self.probe_sent = false;
        }
        stalled
    }

    /// The follower verified its log against ours through `match_index`. Returns true when
    /// the match index advanced. Duplicated and reordered acknowledgements are harmless: the
    /// match index only grows.
    pub(crate) fn on_accepted(&mut self, match_index: LogIndex) -> bool {
        let advanced = match_index > self.match_index;
        if advanced {
            self.match_index = match_index;
            self.intervals_without_progress = 0;
        }
        if self.next_index <= match_index {
            self.next_index = match_index.next();
        }
        while self
            .inflight
            .front()
            .is_some_and(|last| *last <= match_index)
        {
            self.inflight.pop_front();
        }
        // Only an answer to the outstanding probe (one that verified at least its anchor,
        // `next_index - 1`) lets another probe go: a stale acknowledgement of something older
        // must not, or a backlog of them would resend the probe once per acknowledgement.
        if self.state == ReplicationState::Probe && match_index.next() >= self.next_index {
            self.probe_sent = false;
            // The probe point itself was verified: we know where the follower stands.
            self.state = ReplicationState::Replicate;
            self.inflight.clear();
        }
        advanced
    }

    /// The follower refused an AppendEntries. Stale rejections (for a point below the match
    /// index, or for an old probe) are ignored. A rejection *at* the match index means the
    /// follower no longer holds what it acknowledged: its disk lost the tail of its log in a
    /// way its recovery could not tell from a torn write. The match index then comes down to
    /// what the follower's hint says it holds, so the entries are sent again instead of the
    /// follower being refused at the same point for ever. Lowering a match index is always
    /// safe for the leader (it only ever delays a commit); a duplicated old rejection that
    /// lands here costs one extra probe.
    pub(crate) fn on_rejected(
        &mut self,
        rejection: Rejection,
        leader_last_index: LogIndex,
        leader_last_index_of_term: impl Fn(Term) -> Option<LogIndex>,
    ) -> RejectionVerdict {
        let at_match = rejection.prev_log_index == self.match_index;
        if rejection.prev_log_index < self.match_index
            || (at_match && self.state == ReplicationState::Snapshot)
        {
            return RejectionVerdict::Ignored;
        }
        if self.state == ReplicationState::Probe && !at_match {
            if rejection.prev_log_index.next() != self.next_index {
                return RejectionVerdict::Ignored;
            }
            self.probe_sent = false;
        }
        let hinted = match rejection.conflict_term {
            Some(term) => match leader_last_index_of_term(term) {
                Some(last_of_term) => last_of_term.next(),
                None => rejection.conflict_index,
            },
            None => rejection.conflict_index,
        };
        // The rejected point is known not to match, so next may not stay above it, nor past
        // the end of our log (a rejection naming a point beyond it is not ours to trust).
        let next = hinted
            .min(rejection.prev_log_index)
            .min(leader_last_index.next())
            .max(LogIndex::new(1));
        if at_match {
            self.match_index = next.prev();
            self.become_probe(next);
            return RejectionVerdict::LostAcknowledged;
        }
        // Everything through match_index is known to match, so next never drops below it.
        self.become_probe(next.max(self.match_index.next()));
        RejectionVerdict::BackedOff
    }

    pub(crate) fn become_probe(&mut self, next_index: LogIndex) {
        self.state = ReplicationState::Probe;
        self.intervals_without_progress = 0;
        self.probe_sent = false;
        self.inflight.clear();
        self.next_index = next_index.max(self.match_index.next());
    }

    pub(crate) fn become_snapshot(&mut self) {
        self.state = ReplicationState::Snapshot;
        self.probe_sent = false;
        self.inflight.clear();
        self.snapshot_offset = 0;
        self.snapshot_advanced = false;
    }

    #[cfg(test)]
    pub(crate) fn inflight_len(&self) -> usize {
        self.inflight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(raw: u64) -> LogIndex {
        LogIndex::new(raw)
    }

    fn replicating_at(match_index: u64) -> Progress {
        let mut progress = Progress::new(idx(match_index), 0);
        assert!(progress.on_accepted(idx(match_index)) || match_index == 0);
        progress.on_accepted(idx(match_index));
        assert_eq!(progress.state, ReplicationState::Replicate);
        progress
    }

    #[test]
    fn probe_allows_one_message_until_answered() {
        let mut progress = Progress::new(idx(5), 0);
        assert!(progress.can_send(8));
        progress.on_sent(Some(idx(5)));
        assert!(!progress.can_send(8));
        assert_eq!(
            progress.next_index,
            idx(6),
            "probing does not advance next_index"
        );
    }

    #[test]
    fn pipelining_is_bounded_by_the_window() {
        let mut progress = replicating_at(3);
        progress.on_sent(Some(idx(4)));
        progress.on_sent(Some(idx(5)));
        assert!(!progress.can_send(2));
        assert_eq!(progress.next_index, idx(6));
        progress.on_accepted(idx(4));
        assert!(progress.can_send(2));
        assert_eq!(progress.inflight_len(), 1);
    }

    #[test]
    fn match_index_never_decreases_on_reordered_acks() {
        let mut progress = replicating_at(3);
        progress.on_sent(Some(idx(4)));
        progress.on_sent(Some(idx(5)));
        assert!(progress.on_accepted(idx(5)));
        assert!(
            !progress.on_accepted(idx(4)),
            "an older ack arriving late changes nothing"
        );
        assert_eq!(progress.match_index, idx(5));
        assert_eq!(progress.next_index, idx(6));
    }

    #[test]
    fn stale_acknowledgement_does_not_release_another_probe() {
        let mut progress = Progress::new(idx(10), 0);
        progress.on_accepted(idx(4));
        assert_eq!(progress.state, ReplicationState::Probe);
        progress.on_sent(None);
        assert!(!progress.can_send(8));
        for _ in 0..100 {
            progress.on_accepted(idx(4));
            assert!(
                !progress.can_send(8),
                "an old acknowledgement is not the probe's answer"
            );
        }
        progress.on_accepted(idx(10));
        assert_eq!(progress.state, ReplicationState::Replicate);
        assert!(progress.can_send(8));
    }

    /// A probe lost on the wire must not block the follower until it stalls: the next
    /// heartbeat interval lets another probe go.
    #[test]
    fn a_heartbeat_interval_releases_an_unanswered_probe() {
        let mut progress = Progress::new(idx(10), 0);
        assert_eq!(progress.state, ReplicationState::Probe);
        progress.on_sent(None);
        assert!(!progress.can_send(8));
        let stalled = progress.on_heartbeat();
        assert!(!stalled);
        assert!(progress.can_send(8), "the lost probe is sent again");
    }

    #[test]
    fn stale_rejection_below_match_is_ignored() {
        let mut progress = replicating_at(6);
        let stale = Rejection {
            prev_log_index: idx(4),
            conflict_term: None,
            conflict_index: idx(2),
        };
        assert_eq!(
            progress.on_rejected(stale, idx(10), |_| None),
            RejectionVerdict::Ignored
        );
        assert_eq!(progress.state, ReplicationState::Replicate);
        assert_eq!(progress.next_index, idx(7));
    }

    #[test]
    fn rejection_never_moves_next_below_match_plus_one() {
        let mut progress = replicating_at(3);
        progress.on_sent(Some(idx(8)));
        let rejection = Rejection {
            prev_log_index: idx(8),
            conflict_term: None,
            conflict_index: idx(1),
        };
        assert_eq!(
            progress.on_rejected(rejection, idx(10), |_| None),
            RejectionVerdict::BackedOff
        );
        assert_eq!(progress.state, ReplicationState::Probe);
        assert_eq!(progress.next_index, idx(4));
    }

    #[test]
    fn conflict_term_known_to_leader_skips_to_its_last_entry() {
        let mut progress = Progress::new(idx(10), 0);
        progress.on_sent(None);
        let rejection = Rejection {
            prev_log_index: idx(10),
            conflict_term: Some(Term::new(2)),
            conflict_index: idx(3),
        };
        let verdict = progress.on_rejected(rejection, idx(10), |term| {
            (term == Term::new(2)).then_some(idx(5))
        });
        assert_eq!(verdict, RejectionVerdict::BackedOff);
        assert_eq!(progress.next_index, idx(6));
    }

    #[test]
    fn conflict_term_unknown_to_leader_skips_the_whole_term() {
        let mut progress = Progress::new(idx(10), 0);
        progress.on_sent(None);
        let rejection = Rejection {
            prev_log_index: idx(10),
            conflict_term: Some(Term::new(4)),
            conflict_index: idx(3),
        };
        assert_eq!(
            progress.on_rejected(rejection, idx(10), |_| None),
            RejectionVerdict::BackedOff
        );
        assert_eq!(progress.next_index, idx(3));
    }

    #[test]
    fn rejection_beyond_the_leaders_log_never_moves_next_past_its_end() {
        let mut progress = Progress::new(idx(5), 0);
        progress.on_sent(None);
        let rejection = Rejection {
            prev_log_index: idx(40),
            conflict_term: None,
            conflict_index: idx(30),
        };
        // A probe of 5 was outstanding; an answer about 40 is not about it.
        assert_eq!(
            progress.on_rejected(rejection, idx(5), |_| None),
            RejectionVerdict::Ignored
        );
        let mut progress = replicating_at(3);
        progress.on_sent(Some(idx(5)));
        assert_eq!(
            progress.on_rejected(rejection, idx(5), |_| None),
            RejectionVerdict::BackedOff
        );
        assert_eq!(progress.next_index, idx(6), "clamped to last_index + 1");
    }

    #[test]
    fn unanswered_pipeline_falls_back_to_probe_at_the_match_point() {
        let mut progress = replicating_at(3);
        progress.on_sent(Some(idx(6)));
        assert!(
            !progress.on_heartbeat(),
            "first interval: nothing overdue yet"
        );
        assert!(
            progress.on_heartbeat(),
            "a whole interval without an answer"
        );
        assert_eq!(progress.state, ReplicationState::Probe);
        assert_eq!(progress.next_index, idx(4));
        assert!(progress.can_send(8));
    }

    /// A follower whose disk lost the tail it acknowledged refuses even the heartbeat
    /// anchored at its match point. Ignoring that (as a stale rejection) would leave it
    /// refused at the same point for ever; the match index must follow it down.
    #[test]
    fn rejection_at_the_match_point_lowers_match_to_what_the_follower_holds() {
        let mut progress = replicating_at(8);
        let lost_tail = Rejection {
            prev_log_index: idx(8),
            conflict_term: None,
            conflict_index: idx(6),
        };
        assert_eq!(
            progress.on_rejected(lost_tail, idx(10), |_| None),
            RejectionVerdict::LostAcknowledged
        );
        assert_eq!(progress.match_index, idx(5));
        assert_eq!(progress.next_index, idx(6));
        assert_eq!(progress.state, ReplicationState::Probe);
        assert!(
            progress.can_send(8),
            "the repair starts with a probe at once"
        );
    }

    /// The same when the follower holds another term at the match point (a damaged entry
    /// that still parsed): back to before that term's run.
    #[test]
    fn conflicting_term_at_the_match_point_lowers_match_below_it() {
        let mut progress = replicating_at(8);
        let damaged = Rejection {
            prev_log_index: idx(8),
            conflict_term: Some(Term::new(3)),
            conflict_index: idx(7),
        };
        assert_eq!(
            progress.on_rejected(damaged, idx(10), |_| None),
            RejectionVerdict::LostAcknowledged
        );
        assert_eq!(progress.match_index, idx(6));
        assert_eq!(progress.next_index, idx(7));
    }

    #[test]
    fn rejection_at_the_match_point_during_a_snapshot_transfer_is_ignored() {
        let mut progress = replicating_at(8);
        progress.become_snapshot();
        let rejection = Rejection {
            prev_log_index: idx(8),
            conflict_term: None,
            conflict_index: idx(2),
        };
        assert_eq!(
            progress.on_rejected(rejection, idx(10), |_| None),
            RejectionVerdict::Ignored
        );
        assert_eq!(progress.match_index, idx(8));
    }
}
