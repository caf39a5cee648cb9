//! Elections (§5.2), pre-vote (thesis §9.6) and the voter's side of both.

use tracing::{debug, info};

use crate::engine::Engine;
use crate::message::{Rpc, VoteRequest, VoteResponse};
use crate::quorum::is_majority;
use crate::types::{NodeId, Role, Term};

impl<C: Clone> Engine<C> {
    /// The election timer fired without word from a leader.
    pub(crate) fn on_election_timeout(&mut self) {
        // Learners and nodes outside their configuration (a joiner that has not yet received
        // one) never campaign: that is how a joiner is kept from electing itself. A node whose
        // own removal is in its log but not known to be committed still may, counting only the
        // votes of its latest configuration: its log may be the only one holding the removal,
        // and if the remaining voters need its vote, only it can lead the removal to commit.
        if !self.may_be_a_committed_voter() {
            // No word from a leader for a whole election timeout: the one we knew may have
            // crashed, lost its role or (for a removed node, which nobody contacts again)
            // gone for good. Naming it would send clients to a node that cannot serve them.
            self.leader_id = None;
            self.reset_election_timer();
            return;
        }
        if self.config.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate(false);
        }
    }

    /// Whether this node is a voter in some configuration that is, or may by now be, the
    /// committed one: the latest one it knows committed, or any in its log past its commit
    /// index. The commit index is not durable, so after a restart a configuration that was
    /// committed (a promotion of this node, say) can sit past it.
    fn may_be_a_committed_voter(&self) -> bool {
        self.committed_membership().is_voter(self.id)
            || self.log_memberships.iter().any(|(index, membership)| {
                *index > self.commit_index && membership.is_voter(self.id)
            })
    }

    /// Thesis §9.6: ask whether an election would succeed before disturbing anyone's term.
    fn become_pre_candidate(&mut self) {
        assert_ne!(
            self.role,
            Role::Leader,
            "invalid transition: a leader does not pre-campaign"
        );
        self.role = Role::PreCandidate;
        self.leader_id = None;
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_timer();
        debug!(
            target: "yggr::engine",
            node_id = self.id.get(),
            term = self.current_term.get(),
            role = self.role.as_str(),
            "started pre-vote"
        );
        if self.tally_won() {
            self.become_candidate(false);
            return;
        }
        let request = self.vote_request(false);
        let probe_term = self.current_term.next();
        for voter in self.other_voters() {
            self.send_with_term(voter, probe_term, Rpc::RequestPreVote(request));
        }
    }

    /// §5.2: increment the term, vote for itself, and ask every other voter. `transfer` marks a
    /// campaign started by TimeoutNow, which voters honour even while they hear from a leader.
    pub(crate) fn become_candidate(&mut self, transfer: bool) {
        assert_ne!(
            self.role,
            Role::Leader,
            "invalid transition: a leader does not campaign"
        );
        let from_term = self.current_term;
        self.current_term = self.current_term.next();
        self.voted_for = Some(self.id);
        self.hard_state_dirty = true;
        self.role = Role::Candidate;
        self.leader_id = None;
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_timer();
        self.metrics.elections_started += 1;
        info!(
            target: "yggr::engine",
            node_id = self.id.get(),
            from_term = from_term.get(),
            to_term = self.current_term.get(),
            role = self.role.as_str(),
            "started election"
        );
        if self.tally_won() {
            self.become_leader();
            return;
        }
        let request = self.vote_request(transfer);
        for voter in self.other_voters() {
            // `send` flushes the new term and self-vote first: a vote request must never leave
            // before the vote it implies is durable.
            self.send(voter, Rpc::RequestVote(request));
        }
    }

    fn vote_request(&self, leadership_transfer: bool) -> VoteRequest {
        VoteRequest {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            leadership_transfer,
        }
    }

    /// The candidate's log is strictly more up to date than ours (§5.4.1's order).
    fn candidate_log_is_ahead(&self, request: &VoteRequest) -> bool {
        let our_term = self.log.last_term();
        request.last_log_term > our_term
            || (request.last_log_term == our_term && request.last_log_index > self.log.last_index())
    }

    /// §5.4.1: the candidate's log is at least as up to date as ours.
    fn candidate_log_is_up_to_date(&self, request: &VoteRequest) -> bool {
        let our_term = self.log.last_term();
        request.last_log_term > our_term
            || (request.last_log_term == our_term
                && request.last_log_index >= self.log.last_index())
    }

    /// A RequestVote in our current term (a newer one was adopted by `step`).
    ///
    /// Answered by Figure 2's rules alone, whatever this node believes its own role to be: the
    /// candidate's configuration decides whose votes count. A learner whose promotion it has
    /// not heard of yet may be exactly the vote a new leader needs.
    pub(crate) fn on_vote_request(&mut self, candidate: NodeId, request: VoteRequest) {
        // Figure 2: one vote per term, and only for a log at least as up to date as ours.
        let vote_free = self.voted_for.is_none_or(|voted| voted == candidate);
        // Thesis §4.2.3: not while a leader we heard from may still be live, even if some
        // message since moved us to this term (a lease relies on it), unless that leader
        // asked for this election through TimeoutNow.
        let leader_live = !request.leadership_transfer && self.in_leader_lease();
        let granted = vote_free && !leader_live && self.candidate_log_is_up_to_date(&request);
        if granted {
            self.voted_for = Some(candidate);
            self.hard_state_dirty = true;
            if self.role == Role::PreCandidate {
                // Having voted for another candidate in this term, campaigning against it in
                // the next would only disrupt the election it is helping.
                let term = self.current_term;
                self.become_follower(term, None);
            }
            // Granting a vote counts as hearing from a would-be leader (Figure 2, followers).
            self.reset_election_timer();
            self.metrics.votes_granted += 1;
        } else {
            if !vote_free && !leader_live && self.candidate_log_is_ahead(&request) {
                // Our vote in this term is spent (on ourselves, as a rival candidate), but
                // this candidate's log is ahead of ours, so it can win where we cannot. A node
                // that does not know the candidate is a member never sends it our term, so if
                // our timer keeps firing first, each of our campaigns takes the next term
                // before it can ask us in it, for ever. Starting our timer afresh lets the
                // candidate campaign first next time, when our vote is free.
                self.reset_election_timer();
            }
            self.metrics.votes_denied += 1;
        }
        self.trace_vote_decision("vote request", candidate, granted);
        self.send(
            candidate,
            Rpc::RequestVoteResponse(VoteResponse { granted }),
        );
    }

    /// A pre-vote for `probe_term`. Never changes our term or vote (thesis §9.6). Like a vote,
    /// answered whatever our own role.
    pub(crate) fn on_pre_vote_request(
        &mut self,
        candidate: NodeId,
        probe_term: Term,
        request: VoteRequest,
    ) {
        let granted = probe_term > self.current_term
            && !self.in_leader_lease()
            && self.candidate_log_is_up_to_date(&request);
        if granted {
            self.metrics.pre_votes_granted += 1;
        } else {
            self.metrics.pre_votes_denied += 1;
        }
        self.trace_vote_decision("pre-vote request", candidate, granted);
        // A grant echoes the probed term so the pre-candidate counts it; a refusal carries our
        // own term so a pre-candidate that fell behind learns of it.
        let term = if granted {
            probe_term
        } else {
            self.current_term
        };
        self.send_with_term(
            candidate,
            term,
            Rpc::RequestPreVoteResponse(VoteResponse { granted }),
        );
    }

    fn trace_vote_decision(&self, kind: &'static str, candidate: NodeId, granted: bool) {
        debug!(
            target: "yggr::engine",
            node_id = self.id.get(),
            term = self.current_term.get(),
            candidate = candidate.get(),
            decision = if granted { "granted" } else { "rejected" },
            kind
        );
    }

    pub(crate) fn on_vote_response(&mut self, voter: NodeId, granted: bool) {
        if self.role != Role::Candidate || !self.membership().is_voter(voter) {
            return;
        }
        self.record_answer(voter, granted);
        if self.tally_won() {
            self.become_leader();
        } else if self.tally_lost() {
            let term = self.current_term;
            self.become_follower(term, None);
        }
    }

    pub(crate) fn on_pre_vote_response(&mut self, voter: NodeId, term: Term, granted: bool) {
        if self.role != Role::PreCandidate || !self.membership().is_voter(voter) {
            return;
        }
        // Only answers to the probe in flight count: a grant names the probed term, a refusal
        // our current one. Anything else is left over from an earlier round.
        let expected = if granted {
            self.current_term.next()
        } else {
            self.current_term
        };
        if term != expected {
            return;
        }
        self.record_answer(voter, granted);
        if self.tally_won() {
            self.become_candidate(false);
        } else if self.tally_lost() {
            let term = self.current_term;
            self.become_follower(term, None);
        }
    }

    /// Records `voter`'s answer in this campaign. A grant stands once received: a voter grants
    /// one candidate per term, so a later refusal from the same voter in the same term can
    /// only be its answer to some older request (a delayed one from an earlier campaign,
    /// refused with the voter's current term).
    fn record_answer(&mut self, voter: NodeId, granted: bool) {
        let answer = self.votes.entry(voter).or_insert(granted);
        *answer |= granted;
    }

    fn tally_won(&self) -> bool {
        self.tally(true)
    }

    fn tally_lost(&self) -> bool {
        self.tally(false)
    }

    /// Whether a majority of voters answered `granted` in this campaign.
    fn tally(&self, granted: bool) -> bool {
        let membership = self.membership();
        let count = self
            .votes
            .iter()
            .filter(|(voter, answer)| **answer == granted && membership.is_voter(**voter))
            .count();
        is_majority(count, membership.voters.len())
    }
}
