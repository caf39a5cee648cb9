"""Writes one patch per planted engine bug into this folder, against the engine as it is now.

Each plant is a small textual change to yggr-core. Run this after changing the engine (from
anywhere): it applies each change to the working tree, saves `git diff` as NN-name.patch,
and restores the file. It refuses to run when a plant's text is no longer in the engine:
update that plant to the new code. Needs a clean yggr-core.
"""
import os
import subprocess
import sys

root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if subprocess.run(["git", "diff", "--quiet", "--", "yggr-core"], cwd=root).returncode != 0:
    sys.exit("yggr-core has local changes; commit or stash them first")
plants = []
def plant(name, doc, file, old, new, count=1):
    plants.append((name, doc, [(file, old, new, count)]))
def plant_multi(name, doc, edits):
    plants.append((name, doc, edits))

plant("01-no-prev-term-check", "AppendEntries rule 2: the follower accepts entries whatever the term of its entry at prev_log_index.",
 "yggr-core/src/role/follower.rs", "                Some(term) if term != prev_log_term => {", "                Some(term) if term != prev_log_term && false => {")
plant("02-vote-without-up-to-date-check", "§5.4.1: votes are granted without comparing logs.",
 "yggr-core/src/role/candidate.rs", "        let granted = vote_free && !leader_live && self.candidate_log_is_up_to_date(&request);", "        let granted = vote_free && !leader_live;")
plant("03-vote-sent-before-persisted", "A granted vote is answered without persisting it first.",
 "yggr-core/src/role/candidate.rs", """        if granted {
            self.voted_for = Some(candidate);
            self.hard_state_dirty = true;""", """        if granted {
            self.voted_for = Some(candidate);""")
plant("04-stale-term-vote-counted", "Vote responses from older terms are counted instead of dropped.",
 "yggr-core/src/engine.rs", """        if message.term < self.current_term {
            self.on_stale_term(message);
            return;
        }""", """        if message.term < self.current_term
            && !matches!(message.rpc, Rpc::RequestVoteResponse(_))
        {
            self.on_stale_term(message);
            return;
        }""")
plant("05-stale-append-truncates", "A delayed AppendEntries whose entries are all present truncates the longer log after them.",
 "yggr-core/src/role/follower.rs", """        if let Some(position) = first_new {""", """        if first_new.is_none() && last_new_index < self.log.last_index() && last_new_index > self.commit_index {
            self.truncate_log_from(last_new_index.next());
        }
        if let Some(position) = first_new {""")
plant("06-follower-commit-past-last-new-entry", "AppendEntries rule 5: the follower commits up to leader_commit even past what this request verified.",
 "yggr-core/src/role/follower.rs", """        self.advance_commit_to(leader_commit.min(last_new_index));""", """        self.advance_commit_to(leader_commit.min(self.log.last_index()));""")
plant("07-two-config-changes-in-flight", "§4.3: a second membership change is accepted while one is uncommitted.",
 "yggr-core/src/role/membership_change.rs", """        if uncommitted {
            return Err(ConfigChangeRejection::ChangeInProgress);
        }""", """        if uncommitted && false {
            return Err(ConfigChangeRejection::ChangeInProgress);
        }""")
plant("08-double-vote", "Figure 2: a node votes for a second candidate in the same term.",
 "yggr-core/src/role/candidate.rs", """        let vote_free = self.voted_for.is_none_or(|voted| voted == candidate);""", """        let vote_free = true;""")
plant("09-entries-persisted-before-their-term", "Entries of a new term reach the disk before the term does.",
 "yggr-core/src/engine.rs", """        self.flush_hard_state();
        self.out.push(Action::PersistLogEntries(entries));""", """        self.out.push(Action::PersistLogEntries(entries));
        self.flush_hard_state();""")
plant("10-figure-8-old-term-commit-by-count", "§5.4.2 / Figure 8: an entry of an earlier term commits by counting replicas.",
 "yggr-core/src/role/leader.rs", """        if candidate > self.commit_index && self.log.term_at(candidate) == Some(self.current_term) {""", """        if candidate > self.commit_index {""")
plant("11-read-index-without-round", "ReadIndex served without a confirming heartbeat round.",
 "yggr-core/src/role/reads.rs", """                confirmation: Confirmation::AwaitingRound,
            });""", """                confirmation: Confirmation::Confirmed,
            });""")
plant("12-read-index-confirmed-by-earlier-acks", "A read is confirmed by a round that started before it arrived.",
 "yggr-core/src/role/reads.rs", """            if !waiting || self.last_read_round > acked {""", """            if let Some(read) = self.pending_reads.back_mut() {
                if read.confirmation == Confirmation::AwaitingRound {
                    read.confirmation = Confirmation::AwaitingAck(self.heartbeat_round);
                    continue;
                }
            }
            if !waiting || self.last_read_round > acked {""")
plant("13-lease-kept-after-timeout-now", "The leader keeps serving lease reads after handing leadership over with TimeoutNow.",
 "yggr-core/src/role/transfer.rs", """            self.lease_revoked = true;""", """            self.lease_revoked = false;""")
plant("14-stale-snapshot-rolls-back", "A snapshot older than the commit index is installed, rolling the state machine back.",
 "yggr-core/src/role/snapshot.rs", """        if index <= self.commit_index {
            // Already covered""", """        if index <= self.commit_index && index < self.log.snapshot_index() {
            // Already covered""")
plant("15-leader-counts-older-term-acks", "AppendEntries responses from older terms are applied to today's progress.",
 "yggr-core/src/engine.rs", """        if message.term < self.current_term {
            self.on_stale_term(message);
            return;
        }""", """        if message.term < self.current_term
            && !matches!(message.rpc, Rpc::AppendEntriesResponse(_))
        {
            self.on_stale_term(message);
            return;
        }""")
plant("16-pending-reads-dropped-on-step-down", "A leader that steps down forgets its pending reads without answering them.",
 "yggr-core/src/role/leader.rs", """        self.fail_pending_reads(crate::action::ReadFailure::SteppedDown);""", """        self.pending_reads.clear();""")
plant("17-learners-counted-in-commit-quorum", "Learners' acknowledgements count toward the commit majority.",
 "yggr-core/src/role/leader.rs", """        let mut matches: Vec<LogIndex> = self
            .membership()
            .voters
            .iter()""", """        let mut matches: Vec<LogIndex> = self
            .membership()
            .members()
            .collect::<Vec<_>>()
            .iter()""")
plant("18-snapshot-install-drops-matching-suffix", "Installing a snapshot discards log entries after it even when they match.",
 "yggr-core/src/role/snapshot.rs", """        if self.log.term_at(index) == Some(term) {
            self.log.compact_to(index, term);""", """        if self.log.term_at(index) == Some(term) && self.role == Role::Leader {
            self.log.compact_to(index, term);""")
plant("19-membership-at-commit", "§4.3: a configuration takes effect once committed instead of once appended.",
 "yggr-core/src/engine.rs", """    pub fn membership(&self) -> &Membership {
        self.log_memberships
            .last()
            .map_or(&self.base_membership, |(_, membership)| membership)
    }""", """    pub fn membership(&self) -> &Membership {
        self.committed_membership()
    }""")
plant("20-voted-for-not-restored", "A restarted node forgets whom it voted for in its current term.",
 "yggr-core/src/engine.rs", """        self.voted_for = state.voted_for;""", """        self.voted_for = None;""")
plant("21-learner-refuses-votes", "Review finding A: a node that believes it is a learner refuses every vote.",
 "yggr-core/src/role/candidate.rs", """        let granted = vote_free && !leader_live && self.candidate_log_is_up_to_date(&request);""", """        let granted = vote_free
            && !leader_live
            && !self.membership().is_learner(self.id)
            && self.candidate_log_is_up_to_date(&request);""")
plant_multi("22-self-removed-leader-counts-itself", "Review finding B: a leader whose configuration has one voter treats itself as a majority, even when that voter is another node.",
 [("yggr-core/src/role/reads.rs", """    pub(crate) fn majority_acked_round(&self) -> u64 {""", """    pub(crate) fn majority_acked_round(&self) -> u64 {
        if self.membership().voters.len() <= 1 {
            return self.heartbeat_round;
        }""", 1)])
plant_multi("23-read-round-per-read-in-a-bounded-window", "Review finding C: every read starts its own round, and only the last 64 rounds' send times are kept.",
 [("yggr-core/src/role/reads.rs", """            if !waiting || self.last_read_round > acked {""", """            if !waiting {""", 1),
  ("yggr-core/src/rounds.rs", """            if last_tick == tick {
                return;
            }""", """            if self.buckets.len() >= 64 {
                self.buckets.pop_front();
            }""", 1)])
plant("24-vote-refusal-by-known-leader", "Review finding D: a voter refuses votes only while it still knows a leader, not for a timeout after hearing from one.",
 "yggr-core/src/engine.rs", """            || self.ticks_since_leader_contact < self.config.election_timeout_min_ticks""", """            || (self.leader_id.is_some()
                && self.election_elapsed < self.config.election_timeout_min_ticks)""")
plant("25-snapshot-answers-acknowledge-nothing", "Review finding E: a follower receiving a snapshot counts as silent for check-quorum and reads.",
 "yggr-core/src/role/snapshot.rs", """        progress.acked_round = progress
            .acked_round
            .max(response.round.min(self.heartbeat_round));
        if progress.state""", """        if progress.state""")
plant("26-reads-not-rechecked-on-membership-change", "Review finding F: pending reads are not re-checked when the configuration shrinks.",
 "yggr-core/src/role/membership_change.rs", """        self.confirm_reads();""", """""")
plant("27-stale-term-refusal-echoes-round", "Found by the simulator: a refusal of a stale-term request echoes its round as an acknowledgement.",
 "yggr-core/src/engine.rs", """                Some(Rpc::AppendEntriesResponse(AppendEntriesResponse {
                    round: 0,
                    outcome: AppendOutcome::StaleTerm,
                }))""", """                Some(Rpc::AppendEntriesResponse(AppendEntriesResponse {
                    round: match &message.rpc {
                        Rpc::AppendEntries(request) => request.round,
                        _ => 0,
                    },
                    outcome: AppendOutcome::Rejected {
                        prev_log_index: crate::types::LogIndex::ZERO,
                        conflict_term: None,
                        conflict_index: self.log.last_index().next(),
                    },
                }))""")
plant("28-stale-ack-releases-probe", "Found by the simulator: any stale acknowledgement lets another probe go.",
 "yggr-core/src/progress.rs", """        if self.state == ReplicationState::Probe && match_index.next() >= self.next_index {
            self.probe_sent = false;""", """        if self.state == ReplicationState::Probe {
            self.probe_sent = false;
        }
        if self.state == ReplicationState::Probe && match_index.next() >= self.next_index {""")
plant("29-newer-term-restarts-election-timer", "Found by the simulator: adopting a newer term restarts the election timer.",
 "yggr-core/src/engine.rs", """        if was == Role::Leader {
            // A leader's election timer was idle; start it afresh.
            self.reset_election_timer();
        }""", """        self.reset_election_timer();""")
plant("30-lease-one-tick-too-long", "A leader's lease lasts one tick longer than lease_duration_ticks: by the lease's last tick, a voter it counts may already grant votes.",
 "yggr-core/src/role/reads.rs", """            .sent_within(self.majority_acked_round(), self.leader_ticks, lease)""", """            .sent_within(self.majority_acked_round(), self.leader_ticks, lease + 1)""")
plant("31-restart-forgets-lease-refusal", "A restarted node counts as never having heard from a leader, so it grants votes at once, though before the restart it may have acknowledged a round a leader's lease still counts.",
 "yggr-core/src/engine.rs", """        self.role = Role::Follower;
        self.leader_id = None;
        self.reset_election_timer();""", """        self.role = Role::Follower;
        self.leader_id = None;
        self.ticks_since_leader_contact = u64::MAX;
        self.reset_election_timer();""")
plant("32-election-timer-not-restarted-by-known-leader", "A follower restarts its election timer only when it recognises a new leader, not on every message from the one it follows: it campaigns every election timeout against a live leader.",
 "yggr-core/src/role/follower.rs", """            self.become_follower(term, Some(leader));
        }
        self.election_elapsed = 0;""", """            self.become_follower(term, Some(leader));
            self.election_elapsed = 0;
        }""")

outdir = os.path.join(root, 'yggr-sim/planted')
for name, doc, edits in plants:
    backups = {}
    for (f, old, new, count) in edits:
        p = os.path.join(root, f)
        s = backups.get(p) or open(p).read()
        backups.setdefault(p, s)
        cur = open(p).read()
        if old not in cur:
            print("MISSING", name, f); sys.exit(1)
        open(p,'w').write(cur.replace(old, new, count))
    diff = subprocess.run(['git','diff','--','yggr-core'], cwd=root, capture_output=True, text=True).stdout
    for p, s in backups.items():
        open(p,'w').write(s)
    header = "".join("# " + line + "\n" for line in doc.split("\n"))
    open(os.path.join(outdir, name + '.patch'), 'w').write(header + diff)
print(len(plants), "patches")
