//! Leader conformance: one engine, elected leader over a log that holds uncommitted entries of
//! earlier terms, answered by scripted followers, late, out of order, and now and then by an
//! answer from an older term.
//!
//! Cluster runs reach the commit rule's corners only when a schedule lines them up: a leader
//! whose followers acknowledge an earlier term's entries before its own no-op (the Figure 8
//! shape of §5.4.2), or an acknowledgement from an older term arriving after a new reign began.
//! Here the followers are scripted, so those shapes come up in every run. Each run:
//!
//! - builds the engine's log as a follower of earlier leaders (terms 1, 2, ...), committing
//!   nothing, then elects it by granting every (pre-)vote it asks for; before the real grants
//!   arrive, every voter's grant stamped with the previous term is delivered too, and a
//!   candidate that counts them fails the run;
//! - in some runs adds learners, which receive entries but must not count towards a commit;
//! - models each follower as holding a prefix of the leader's log: a request it receives is
//!   accepted when its previous index is within that prefix (the prefix grows), refused
//!   otherwise, exactly as a correct follower answers;
//! - delivers the leader's requests in random order (some are lost), ticks, proposes, and
//!   injects acknowledgements stamped with an older term claiming more than the follower holds;
//! - ends by delivering everything until the leader has committed its whole log.
//!
//! After every step the leader may only have moved its commit index to an entry of its own
//! term, and never past what a majority truly holds.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use yggr_core::{
    Action, AppendEntries, AppendEntriesResponse, AppendOutcome, Engine, EngineConfig,
    EntryPayload, Event, LogEntry, LogIndex, Membership, Message, NodeId, RandomEnv, Role, Rpc,
    Term, VoteResponse,
};

use crate::conformance::{ConformanceFailure, ScriptedCoverage, run_scripted};

/// The leader under test.
const LEADER: NodeId = node(1);

const fn node(raw: u64) -> NodeId {
    match NodeId::new(raw) {
        Some(id) => id,
        None => panic!("node ids are nonzero"),
    }
}

/// What leader-conformance runs exercised, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaderCoverage {
    /// Runs whose engine was elected.
    pub elected: u64,
    /// Runs whose new leader held entries of earlier terms it had not committed.
    pub inherited_entries: u64,
    /// Follower answers delivered (acceptances and refusals).
    pub answers: u64,
    /// Acknowledgements from an older term claiming more than the follower held.
    pub stale_acks: u64,
    /// Steps at which a majority held an entry of an earlier term past the commit index while
    /// no entry of the current term was held by a majority: counting replicas would commit it.
    pub figure_8_shapes: u64,
    /// Times the commit index advanced.
    pub commits: u64,
    /// Vote grants stamped with an older term, fed to a candidate before its real ones.
    pub stale_votes: u64,
    /// Runs with learners, whose acknowledgements must not count toward commitment.
    pub with_learners: u64,
}

impl LeaderCoverage {
    fn add(&mut self, other: &LeaderCoverage) {
        self.elected += other.elected;
        self.inherited_entries += other.inherited_entries;
        self.answers += other.answers;
        self.stale_acks += other.stale_acks;
        self.figure_8_shapes += other.figure_8_shapes;
        self.commits += other.commits;
        self.stale_votes += other.stale_votes;
        self.with_learners += other.with_learners;
    }

    /// The counters of `self` below their minimum in `gate`, by name.
    pub fn shortfalls(&self, gate: &LeaderCoverage) -> Vec<String> {
        [
            ("elected", self.elected, gate.elected),
            (
                "inherited_entries",
                self.inherited_entries,
                gate.inherited_entries,
            ),
            ("answers", self.answers, gate.answers),
            ("stale_acks", self.stale_acks, gate.stale_acks),
            (
                "figure_8_shapes",
                self.figure_8_shapes,
                gate.figure_8_shapes,
            ),
            ("commits", self.commits, gate.commits),
            ("stale_votes", self.stale_votes, gate.stale_votes),
            ("with_learners", self.with_learners, gate.with_learners),
        ]
        .into_iter()
        .filter(|(_, seen, minimum)| seen < minimum)
        .map(|(name, seen, minimum)| format!("{name} {seen} < {minimum}"))
        .collect()
    }

    /// `self` with every minimum multiplied by `budget` (rounded up).
    pub fn scaled(&self, budget: f64) -> LeaderCoverage {
        let scale = |value: u64| (value as f64 * budget).ceil() as u64;
        LeaderCoverage {
            elected: scale(self.elected),
            inherited_entries: scale(self.inherited_entries),
            answers: scale(self.answers),
            stale_acks: scale(self.stale_acks),
            figure_8_shapes: scale(self.figure_8_shapes),
            commits: scale(self.commits),
            stale_votes: scale(self.stale_votes),
            with_learners: scale(self.with_learners),
        }
    }
}

impl fmt::Display for LeaderCoverage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "elected {}, inherited entries {}, answers {}, stale acks {}, figure-8 shapes {}, \
             commits {}, stale votes {}, runs with learners {}",
            self.elected,
            self.inherited_entries,
            self.answers,
            self.stale_acks,
            self.figure_8_shapes,
            self.commits,
            self.stale_votes,
            self.with_learners
        )
    }
}

/// Runs of [`run_leader`] held to a gate.
#[derive(Clone, Copy, Debug)]
pub struct LeaderSuite {
    /// Runs at budget 1.
    pub runs: u64,
    /// Scripted steps per run before the final delivery.
    pub steps: u64,
    /// What the runs must exercise in total, at budget 1.
    pub gate: LeaderCoverage,
}

impl Default for LeaderSuite {
    /// The CI suite: 10,000 runs of 300 steps (under a second in release), gated at about half
    /// of what that was measured to exercise.
    fn default() -> Self {
        LeaderSuite {
            runs: 10_000,
            steps: 300,
            gate: LeaderCoverage {
                elected: 5_000,
                inherited_entries: 4_500,
                answers: 600_000,
                stale_acks: 150_000,
                figure_8_shapes: 130_000,
                commits: 100_000,
                stale_votes: 15_000,
                with_learners: 2_000,
            },
        }
    }
}

/// What a passing leader suite exercised.
#[derive(Clone, Debug)]
pub struct LeaderReport {
    /// The base seed the runs' seeds came from.
    pub base_seed: u64,
    /// The runs' coverage, summed.
    pub coverage: LeaderCoverage,
    /// Wall-clock time taken.
    pub elapsed: Duration,
}

impl fmt::Display for LeaderReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "suite leader (base seed {}, {:.1} s): {}",
            self.base_seed,
            self.elapsed.as_secs_f64(),
            self.coverage
        )
    }
}

impl LeaderSuite {
    /// Runs `runs × budget` seeds derived from `base_seed` (at least one), stopping at the
    /// first failure, then holds the summed coverage to the gate scaled by `budget`.
    ///
    /// # Errors
    /// [`ConformanceFailure`]: the first violation, or the coverage shortfall.
    pub fn run(&self, base_seed: u64, budget: f64) -> Result<LeaderReport, ConformanceFailure> {
        let started = Instant::now();
        let coverage = run_scripted(base_seed, budget, self.runs, &self.gate, |seed| {
            run_leader(seed, self.steps)
        })?;
        Ok(LeaderReport {
            base_seed,
            coverage,
            elapsed: started.elapsed(),
        })
    }
}

/// Holds a leader's commit index to the rules, given what its followers truly hold.
#[derive(Clone, Debug, Default)]
pub struct CommitChecker {
    commit: u64,
}

impl CommitChecker {
    /// Checks the leader's commit index after a step: it may move only to an entry of the
    /// leader's own term (§5.4.2), and never past the highest index that a majority of
    /// `held` (each voter's true prefix of the leader's log, the leader's whole log included)
    /// reaches.
    ///
    /// # Errors
    /// Which rule the leader broke.
    pub fn check(
        &mut self,
        commit: u64,
        term_at_commit: Option<Term>,
        leader_term: Term,
        held: &[u64],
    ) -> Result<(), String> {
        if commit < self.commit {
            return Err(format!(
                "the commit index went back from {} to {commit}",
                self.commit
            ));
        }
        if commit > self.commit && term_at_commit != Some(leader_term) {
            return Err(format!(
                "the leader of term {} moved its commit index to {commit}, an entry of term {:?}: \
                 an earlier term's entry commits only under one of the leader's own (§5.4.2)",
                leader_term.get(),
                term_at_commit.map(Term::get)
            ));
        }
        let majority = majority_index(held);
        if commit > majority {
            return Err(format!(
                "the leader committed through {commit}, but a majority holds only through \
                 {majority} (held: {held:?})"
            ));
        }
        self.commit = commit;
        Ok(())
    }
}

/// The highest index a majority of `held` reaches.
fn majority_index(held: &[u64]) -> u64 {
    let mut sorted = held.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.get(held.len() / 2).copied().unwrap_or(0)
}

fn violation(seed: u64, steps: u64, step: u64, detail: String) -> ConformanceFailure {
    ConformanceFailure::Violation {
        replay: "yggr_sim::leader_conformance::run_leader",
        seed,
        steps,
        step,
        detail,
    }
}

/// One scripted run: a fresh engine elected over an inherited log, `steps` random steps, then
/// delivery until everything is committed. Returns what it exercised.
///
/// # Errors
/// [`ConformanceFailure::Violation`]: the leader broke a rule, or never committed its log.
pub fn run_leader(seed: u64, steps: u64) -> Result<LeaderCoverage, ConformanceFailure> {
    let mut run = LeaderRun::new(seed, steps)?;
    if !run.elect()? {
        return Ok(run.coverage);
    }
    for step in 0..steps {
        if run.leader.role() != Role::Leader {
            // Deposed by check-quorum when the script starved it of answers: fine, and over.
            return Ok(run.coverage);
        }
        run.step(step)?;
    }
    run.finish(steps)?;
    Ok(run.coverage)
}

struct LeaderRun {
    seed: u64,
    steps: u64,
    rng: ChaCha8Rng,
    leader: Engine<u64>,
    /// Voters other than the leader.
    followers: Vec<NodeId>,
    /// Learners: they receive the log but must not count toward commitment.
    learners: Vec<NodeId>,
    /// Each follower's and learner's true prefix of the leader's log.
    held: BTreeMap<NodeId, u64>,
    /// Requests the leader sent, not yet delivered.
    in_flight: Vec<(NodeId, AppendEntries<u64>)>,
    checker: CommitChecker,
    coverage: LeaderCoverage,
}

impl LeaderRun {
    fn new(seed: u64, steps: u64) -> Result<LeaderRun, ConformanceFailure> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x001e_ade4);
        let size = if rng.random_bool(0.5) { 3 } else { 5 };
        let followers: Vec<NodeId> = (2..=size).map(node).collect();
        let learners: Vec<NodeId> = if rng.random_bool(0.4) {
            (size + 1..=size + rng.random_range(1..=2))
                .map(node)
                .collect()
        } else {
            Vec::new()
        };
        let mut members = Membership::from_voters([LEADER].into_iter().chain(followers.clone()));
        members.learners = learners.iter().copied().collect();
        let config = EngineConfig {
            // One entry per message is what lets followers acknowledge an earlier term's
            // entries before the new leader's own.
            max_entries_per_append: rng.random_range(1..=4),
            max_inflight_appends: rng.random_range(1..=8),
            pre_vote: rng.random_bool(0.5),
            snapshot_hint_threshold_entries: 0,
            ..EngineConfig::default()
        };
        let leader = Engine::with_config(LEADER, members, RandomEnv::seeded(seed), config)
            .map_err(|error| violation(seed, steps, 0, format!("config refused: {error}")))?;
        Ok(LeaderRun {
            seed,
            steps,
            rng,
            leader,
            held: followers
                .iter()
                .chain(&learners)
                .map(|member| (*member, 0))
                .collect(),
            followers,
            learners,
            in_flight: Vec::new(),
            checker: CommitChecker::default(),
            coverage: LeaderCoverage::default(),
        })
    }

    fn fail(&self, step: u64, detail: String) -> ConformanceFailure {
        violation(self.seed, self.steps, step, detail)
    }

    /// Gives the engine a log from earlier terms (nothing committed), then elects it.
    /// Returns false when it did not win (the run then checks nothing more).
    fn elect(&mut self) -> Result<bool, ConformanceFailure> {
        let earlier_leader = self.followers[0];
        let terms = self.rng.random_range(1..=4u64);
        let mut last = 0u64;
        let mut last_term = Term::new(0);
        for raw in 1..=terms {
            let term = Term::new(raw);
            let count = self.rng.random_range(0..=4u64);
            let entries: Vec<LogEntry<u64>> = (last + 1..=last + count)
                .map(|index| LogEntry {
                    term,
                    index: LogIndex::new(index),
                    payload: EntryPayload::Command(index),
                })
                .collect();
            let request = Message {
                from: earlier_leader,
                term,
                rpc: Rpc::AppendEntries(AppendEntries {
                    prev_log_index: LogIndex::new(last),
                    prev_log_term: last_term,
                    entries,
                    leader_commit: LogIndex::ZERO,
                    round: raw,
                }),
            };
            self.leader.step(Event::Incoming(request));
            if count > 0 {
                last += count;
                last_term = term;
            }
        }
        if last > 0 {
            self.coverage.inherited_entries += 1;
        }
        if !self.learners.is_empty() {
            self.coverage.with_learners += 1;
        }
        // Tick until it campaigns, granting every (pre-)vote it asks for, including those it
        // asks for in answer to a grant (a won pre-vote starts the real election).
        for _ in 0..10_000 {
            if self.leader.role() == Role::Leader {
                break;
            }
            let mut pending = self.leader.step(Event::Tick);
            let mut stale_fed = None;
            while !pending.is_empty() {
                let mut next = Vec::new();
                for action in pending {
                    let Action::Send { to, message } = action else {
                        continue;
                    };
                    let rpc = match message.rpc {
                        Rpc::RequestPreVote(_) => {
                            Rpc::RequestPreVoteResponse(VoteResponse { granted: true })
                        }
                        Rpc::RequestVote(_) => {
                            if stale_fed != Some(message.term) {
                                stale_fed = Some(message.term);
                                self.feed_stale_votes(message.term)?;
                            }
                            Rpc::RequestVoteResponse(VoteResponse { granted: true })
                        }
                        _ => continue,
                    };
                    let answer = Message {
                        from: to,
                        term: message.term,
                        rpc,
                    };
                    let more = self.leader.step(Event::Incoming(answer));
                    self.collect(&more);
                    next.extend(more);
                }
                pending = next;
            }
        }
        if self.leader.role() != Role::Leader {
            return Ok(false);
        }
        self.coverage.elected += 1;
        self.check(0)?;
        Ok(true)
    }

    /// Before a candidate of `term` hears its real votes, grants from every voter stamped with
    /// an older term: counting them would make it leader without a vote of its own term.
    fn feed_stale_votes(&mut self, term: Term) -> Result<(), ConformanceFailure> {
        if term.get() < 2 {
            return Ok(());
        }
        for voter in self.followers.clone() {
            let stale = Message {
                from: voter,
                term: Term::new(term.get() - 1),
                rpc: Rpc::RequestVoteResponse(VoteResponse { granted: true }),
            };
            self.leader.step(Event::Incoming(stale));
            self.coverage.stale_votes += 1;
            if self.leader.role() == Role::Leader {
                return Err(self.fail(
                    0,
                    format!(
                        "the candidate of term {} became leader on votes from term {}",
                        term.get(),
                        term.get() - 1
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Keeps the AppendEntries among `actions` for later delivery.
    fn collect(&mut self, actions: &[Action<u64>]) {
        for action in actions {
            if let Action::Send {
                to,
                message:
                    Message {
                        rpc: Rpc::AppendEntries(request),
                        term,
                        ..
                    },
            } = action
                && *term == self.leader.current_term()
            {
                self.in_flight.push((*to, request.clone()));
            }
        }
    }

    fn step_leader(&mut self, event: Event<u64>, step: u64) -> Result<(), ConformanceFailure> {
        let actions = self.leader.step(event);
        self.leader.check_invariants();
        self.collect(&actions);
        self.check(step)
    }

    fn check(&mut self, step: u64) -> Result<(), ConformanceFailure> {
        if self.leader.role() != Role::Leader {
            return Ok(());
        }
        let term = self.leader.current_term();
        let last = self.leader.last_log_index().get();
        let mut held: Vec<u64> = self
            .followers
            .iter()
            .map(|follower| self.held[follower])
            .collect();
        held.push(last);
        let majority = majority_index(&held);
        let commit = self.leader.commit_index().get();
        let current_term_held = (commit + 1..=majority)
            .any(|index| self.leader.term_at(LogIndex::new(index)) == Some(term));
        if majority > commit && !current_term_held {
            self.coverage.figure_8_shapes += 1;
        }
        let before = self.checker.commit;
        let term_at_commit = self.leader.term_at(LogIndex::new(commit));
        self.checker
            .check(commit, term_at_commit, term, &held)
            .map_err(|detail| self.fail(step, detail))?;
        if commit > before {
            self.coverage.commits += 1;
        }
        Ok(())
    }

    fn step(&mut self, step: u64) -> Result<(), ConformanceFailure> {
        match self.rng.random_range(0..100) {
            0..45 => self.deliver_one(step)?,
            45..52 => {
                if !self.in_flight.is_empty() {
                    let lost = self.rng.random_range(0..self.in_flight.len());
                    self.in_flight.swap_remove(lost);
                }
            }
            52..64 => {
                let count = self.rng.random_range(1..=3u64);
                let commands = (0..count).map(|offset| 1_000 + step * 4 + offset).collect();
                self.step_leader(Event::ClientProposalBatch(commands), step)?;
            }
            64..80 => self.stale_ack(step)?,
            _ => self.step_leader(Event::Tick, step)?,
        }
        Ok(())
    }

    /// Delivers a random request to its follower and the follower's answer to the leader.
    fn deliver_one(&mut self, step: u64) -> Result<(), ConformanceFailure> {
        if self.in_flight.is_empty() {
            return Ok(());
        }
        let pick = self.rng.random_range(0..self.in_flight.len());
        let (follower, request) = self.in_flight.swap_remove(pick);
        self.answer(follower, &request, step)
    }

    /// A correct follower holding a prefix of the leader's log answers `request`.
    fn answer(
        &mut self,
        follower: NodeId,
        request: &AppendEntries<u64>,
        step: u64,
    ) -> Result<(), ConformanceFailure> {
        let prev = request.prev_log_index.get();
        let held = self.held.entry(follower).or_insert(0);
        let outcome = if prev <= *held {
            let through = prev + request.entries.len() as u64;
            *held = (*held).max(through);
            AppendOutcome::Accepted {
                match_index: LogIndex::new(through),
            }
        } else {
            AppendOutcome::Rejected {
                prev_log_index: request.prev_log_index,
                conflict_term: None,
                conflict_index: LogIndex::new(*held + 1),
            }
        };
        self.coverage.answers += 1;
        let answer = Message {
            from: follower,
            term: self.leader.current_term(),
            rpc: Rpc::AppendEntriesResponse(AppendEntriesResponse {
                round: request.round,
                outcome,
            }),
        };
        self.step_leader(Event::Incoming(answer), step)
    }

    /// An acknowledgement stamped with an older term, claiming more than the follower holds:
    /// a correct leader ignores it.
    fn stale_ack(&mut self, step: u64) -> Result<(), ConformanceFailure> {
        let term = self.leader.current_term();
        if term.get() < 2 {
            return Ok(());
        }
        let follower = self.followers[self.rng.random_range(0..self.followers.len())];
        let last = self.leader.last_log_index().get();
        let held = self.held[&follower];
        if held >= last {
            return Ok(());
        }
        let claimed = self.rng.random_range(held + 1..=last);
        let answer = Message {
            from: follower,
            term: Term::new(self.rng.random_range(1..term.get())),
            rpc: Rpc::AppendEntriesResponse(AppendEntriesResponse {
                round: self.rng.random_range(0..1_000),
                outcome: AppendOutcome::Accepted {
                    match_index: LogIndex::new(claimed),
                },
            }),
        };
        self.coverage.stale_acks += 1;
        self.step_leader(Event::Incoming(answer), step)
    }

    /// Delivers everything, ticking when nothing is in flight, until the leader has committed
    /// its whole log.
    fn finish(&mut self, steps: u64) -> Result<(), ConformanceFailure> {
        let mut step = steps;
        for _ in 0..100_000 {
            if self.leader.role() != Role::Leader {
                return Ok(());
            }
            let last = self.leader.last_log_index();
            if self.leader.commit_index() == last && self.held.values().all(|h| *h == last.get()) {
                return Ok(());
            }
            if self.in_flight.is_empty() {
                self.step_leader(Event::Tick, step)?;
            } else {
                let (follower, request) = self.in_flight.remove(0);
                self.answer(follower, &request, step)?;
            }
            step += 1;
        }
        Err(self.fail(
            step,
            format!(
                "with every request delivered the leader committed only {} of {}",
                self.leader.commit_index(),
                self.leader.last_log_index()
            ),
        ))
    }
}

impl ScriptedCoverage for LeaderCoverage {
    fn add_run(&mut self, other: &Self) {
        self.add(other);
    }
    fn shortfalls_against(&self, gate: &Self) -> Vec<String> {
        self.shortfalls(gate)
    }
    fn scaled_by(&self, budget: f64) -> Self {
        self.scaled(budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_runs_of_a_correct_leader_pass_and_reach_the_corner_cases() {
        let mut total = LeaderCoverage::default();
        for seed in 0..100 {
            total.add(&run_leader(seed, 300).unwrap_or_else(|failure| panic!("{failure}")));
        }
        assert!(total.elected > 50, "{total}");
        assert!(total.figure_8_shapes > 0, "{total}");
        assert!(total.stale_acks > 0, "{total}");
    }

    #[test]
    fn the_checker_rejects_committing_an_earlier_terms_entry_by_counting() {
        let mut checker = CommitChecker::default();
        let error = checker
            .check(2, Some(Term::new(1)), Term::new(3), &[2, 2, 0])
            .unwrap_err();
        assert!(error.contains("§5.4.2"), "{error}");
        assert!(
            checker
                .check(3, Some(Term::new(3)), Term::new(3), &[3, 3, 0])
                .is_ok()
        );
    }

    #[test]
    fn the_checker_rejects_a_commit_past_what_a_majority_holds() {
        let mut checker = CommitChecker::default();
        let error = checker
            .check(4, Some(Term::new(2)), Term::new(2), &[4, 1, 1])
            .unwrap_err();
        assert!(error.contains("majority holds only through 1"), "{error}");
    }

    #[test]
    fn the_checker_rejects_a_commit_index_going_back() {
        let mut checker = CommitChecker::default();
        checker
            .check(3, Some(Term::new(2)), Term::new(2), &[3, 3, 3])
            .unwrap();
        assert!(
            checker
                .check(2, Some(Term::new(2)), Term::new(2), &[3, 3, 3])
                .is_err()
        );
    }
}
