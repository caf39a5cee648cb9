//! Follower conformance: one engine, driven as a follower by every AppendEntries a succession
//! of correct leaders may send it, in any order.
//!
//! The cluster runs reach a follower's corner cases only when a schedule happens to line them
//! up: a stale suffix left by a deposed leader, then a heartbeat from the new leader whose
//! commit index covers indices the heartbeat did not verify. Here the leaders are scripted
//! instead of simulated, so those shapes come up in every run. Each run:
//!
//! - builds a history of leaders, each in a higher term, each starting from some earlier
//!   leader's log that holds everything committed so far (the Leader Completeness property a
//!   correct election guarantees), cut anywhere past the committed prefix, plus entries of its
//!   own term; the current leader appends and commits (only up to an entry of its own term,
//!   as §5.4.2 requires);
//! - has every leader, old or current, put AppendEntries in flight from any point of its log
//!   (a correct leader's `nextIndex` may be anywhere while it probes), heartbeats included,
//!   each carrying that leader's commit index at the time;
//! - delivers them to the follower in random order, late and out of order, while the
//!   follower now and then compacts what it applied;
//! - ends with the current leader probing down from its last index until the follower
//!   accepts, as a leader does, after which the follower must hold and apply exactly what was
//!   committed.
//!
//! After every step the [`FollowerChecker`] holds the follower to what a leader relies on:
//! everything it committed or applied is the committed log, every acceptance claims only a
//! prefix it really shares with the sender, every refusal names its own log truthfully.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use yggr_core::{
    Action, AppendEntries, AppendOutcome, Engine, EngineConfig, EntryPayload, Event, LogEntry,
    LogIndex, Membership, Message, NodeId, RandomEnv, Rpc, Term,
};

use crate::suite::run_seed;

/// The follower under test.
const FOLLOWER: NodeId = node(1);
/// The nodes that take turns leading.
const LEADERS: [NodeId; 4] = [node(2), node(3), node(4), node(5)];

const fn node(raw: u64) -> NodeId {
    match NodeId::new(raw) {
        Some(id) => id,
        None => panic!("node ids are nonzero"),
    }
}

/// How many runs a suite makes, and how long each is.
#[derive(Clone, Copy, Debug)]
pub struct ConformanceSuite {
    /// Runs at budget 1.
    pub runs: u64,
    /// Scripted steps per run before the final catch-up.
    pub steps: u64,
    /// What the runs must exercise in total, at budget 1.
    pub gate: ConformanceCoverage,
}

impl Default for ConformanceSuite {
    /// The CI suite: 20,000 runs of 400 steps (about a second and a half in release), gated
    /// at about half of what that was measured to exercise.
    fn default() -> Self {
        ConformanceSuite {
            runs: 20_000,
            steps: 400,
            gate: ConformanceCoverage {
                delivered: 1_600_000,
                accepted: 590_000,
                rejected: 690_000,
                stale_terms: 390_000,
                suffixes_overwritten: 6_500,
                commits_capped: 3_900,
                entries_applied: 990_000,
                snapshots_taken: 49_000,
            },
        }
    }
}

/// What conformance runs exercised, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConformanceCoverage {
    /// AppendEntries delivered to the follower.
    pub delivered: u64,
    /// Of those, accepted.
    pub accepted: u64,
    /// Refused at the consistency check.
    pub rejected: u64,
    /// Refused as coming from an older term.
    pub stale_terms: u64,
    /// Times the follower discarded a stored suffix that conflicted with a leader's entries.
    pub suffixes_overwritten: u64,
    /// Accepted requests whose `leader_commit` was past the last index they verified while
    /// the follower stored, right after that index, an entry the sender does not have (a
    /// deposed leader's): the follower must not commit past what it verified.
    pub commits_capped: u64,
    /// Entries the follower applied.
    pub entries_applied: u64,
    /// Snapshots the follower took.
    pub snapshots_taken: u64,
}

impl ConformanceCoverage {
    /// The counters of `self` below their minimum in `gate`, by name.
    pub fn shortfalls(&self, gate: &ConformanceCoverage) -> Vec<String> {
        let pairs = [
            ("delivered", self.delivered, gate.delivered),
            ("accepted", self.accepted, gate.accepted),
            ("rejected", self.rejected, gate.rejected),
            ("stale_terms", self.stale_terms, gate.stale_terms),
            (
                "suffixes_overwritten",
                self.suffixes_overwritten,
                gate.suffixes_overwritten,
            ),
            ("commits_capped", self.commits_capped, gate.commits_capped),
            (
                "entries_applied",
                self.entries_applied,
                gate.entries_applied,
            ),
            (
                "snapshots_taken",
                self.snapshots_taken,
                gate.snapshots_taken,
            ),
        ];
        pairs
            .into_iter()
            .filter(|(_, seen, minimum)| seen < minimum)
            .map(|(name, seen, minimum)| format!("{name} {seen} < {minimum}"))
            .collect()
    }

    /// `self` with every minimum multiplied by `budget` (rounded up).
    pub fn scaled(&self, budget: f64) -> ConformanceCoverage {
        let scale = |value: u64| (value as f64 * budget).ceil() as u64;
        ConformanceCoverage {
            delivered: scale(self.delivered),
            accepted: scale(self.accepted),
            rejected: scale(self.rejected),
            stale_terms: scale(self.stale_terms),
            suffixes_overwritten: scale(self.suffixes_overwritten),
            commits_capped: scale(self.commits_capped),
            entries_applied: scale(self.entries_applied),
            snapshots_taken: scale(self.snapshots_taken),
        }
    }

    fn add(&mut self, other: &ConformanceCoverage) {
        self.delivered += other.delivered;
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.stale_terms += other.stale_terms;
        self.suffixes_overwritten += other.suffixes_overwritten;
        self.commits_capped += other.commits_capped;
        self.entries_applied += other.entries_applied;
        self.snapshots_taken += other.snapshots_taken;
    }
}

impl fmt::Display for ConformanceCoverage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "delivered {}, accepted {}, rejected {}, stale terms {}, suffixes overwritten {}, \
             commits capped {}, entries applied {}, snapshots taken {}",
            self.delivered,
            self.accepted,
            self.rejected,
            self.stale_terms,
            self.suffixes_overwritten,
            self.commits_capped,
            self.entries_applied,
            self.snapshots_taken
        )
    }
}

/// Why a conformance run or suite failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConformanceFailure {
    /// The follower broke a rule.
    Violation {
        /// The function that replays the run given `seed` and `steps`, e.g.
        /// `yggr_sim::conformance::run_follower`.
        replay: &'static str,
        /// The run's seed.
        seed: u64,
        /// The run's scripted steps.
        steps: u64,
        /// The step it happened at (the catch-up phase counts on past the scripted steps).
        step: u64,
        /// What went wrong.
        detail: String,
    },
    /// Every run passed but together they exercised too little.
    Coverage {
        /// The suite's base seed.
        base_seed: u64,
        /// The counters below their minimum.
        shortfalls: Vec<String>,
        /// What was exercised, as text.
        coverage: String,
    },
}

impl fmt::Display for ConformanceFailure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConformanceFailure::Violation {
                replay,
                seed,
                steps,
                step,
                detail,
            } => write!(
                formatter,
                "conformance: seed {seed}, step {step}: {detail}\n\
                 replay: {replay}({seed}, {steps})"
            ),
            ConformanceFailure::Coverage {
                base_seed,
                shortfalls,
                coverage,
            } => write!(
                formatter,
                "conformance suite (base seed {base_seed}) exercised too little: {}\n\
                 coverage: {coverage}",
                shortfalls.join(", ")
            ),
        }
    }
}

impl std::error::Error for ConformanceFailure {}

/// What the scripted suites' coverage counters have in common, so one loop runs them all.
pub(crate) trait ScriptedCoverage: Default + fmt::Display {
    /// Adds one run's counters.
    fn add_run(&mut self, other: &Self);
    /// The counters below `gate`'s, as `name: seen < minimum`.
    fn shortfalls_against(&self, gate: &Self) -> Vec<String>;
    /// Every minimum multiplied by `budget`.
    fn scaled_by(&self, budget: f64) -> Self;
}

/// Runs `runs × budget` seeds derived from `base_seed` (at least one) through `run_one`,
/// stopping at the first failure, then holds the summed coverage to `gate` scaled by
/// `budget`. Returns the coverage.
pub(crate) fn run_scripted<C: ScriptedCoverage>(
    base_seed: u64,
    budget: f64,
    runs: u64,
    gate: &C,
    mut run_one: impl FnMut(u64) -> Result<C, ConformanceFailure>,
) -> Result<C, ConformanceFailure> {
    let runs = ((runs as f64 * budget).ceil() as u64).max(1);
    let mut coverage = C::default();
    for index in 0..runs {
        coverage.add_run(&run_one(run_seed(base_seed, index))?);
    }
    let shortfalls = coverage.shortfalls_against(&gate.scaled_by(budget));
    if !shortfalls.is_empty() {
        return Err(ConformanceFailure::Coverage {
            base_seed,
            shortfalls,
            coverage: coverage.to_string(),
        });
    }
    Ok(coverage)
}

/// What a passing suite exercised.
#[derive(Clone, Debug)]
pub struct ConformanceReport {
    /// The base seed the runs' seeds came from.
    pub base_seed: u64,
    /// The runs' coverage, summed.
    pub coverage: ConformanceCoverage,
    /// Wall-clock time taken.
    pub elapsed: Duration,
}

impl fmt::Display for ConformanceReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "suite follower (base seed {}, {:.1} s): {}",
            self.base_seed,
            self.elapsed.as_secs_f64(),
            self.coverage
        )
    }
}

impl ConformanceSuite {
    /// Runs `runs × budget` seeds derived from `base_seed` (at least one), stopping at the
    /// first failure, then holds the summed coverage to the gate scaled by `budget`.
    ///
    /// # Errors
    /// [`ConformanceFailure`]: the first violation, or the coverage shortfall.
    pub fn run(
        &self,
        base_seed: u64,
        budget: f64,
    ) -> Result<ConformanceReport, ConformanceFailure> {
        let started = Instant::now();
        let runs = ((self.runs as f64 * budget).ceil() as u64).max(1);
        let mut coverage = ConformanceCoverage::default();
        for index in 0..runs {
            coverage.add(&run_follower(run_seed(base_seed, index), self.steps)?);
        }
        let shortfalls = coverage.shortfalls(&self.gate.scaled(budget));
        if !shortfalls.is_empty() {
            return Err(ConformanceFailure::Coverage {
                base_seed,
                shortfalls,
                coverage: coverage.to_string(),
            });
        }
        Ok(ConformanceReport {
            base_seed,
            coverage,
            elapsed: started.elapsed(),
        })
    }
}

/// The payload of the entry at `index` written in `term`. Every (index, term) pair names one
/// entry in the whole history, as in a real cluster, so equal terms mean equal entries.
fn command(index: u64, term: Term) -> u64 {
    (term.get() << 32) | index
}

fn entry(index: u64, term: Term) -> LogEntry<u64> {
    LogEntry {
        term,
        index: LogIndex::new(index),
        payload: EntryPayload::Command(command(index, term)),
    }
}

/// A scripted leader: its term, its log (the term of each entry, index 1 first), its commit
/// index and where it believes the follower's log continues.
#[derive(Clone, Debug)]
struct Leader {
    id: NodeId,
    term: Term,
    log: Vec<Term>,
    commit: u64,
    /// The leader's `nextIndex` for the follower, moved by the follower's answers.
    next: u64,
}

impl Leader {
    fn term_at(&self, index: u64) -> Term {
        if index == 0 {
            Term::new(0)
        } else {
            self.log[index as usize - 1]
        }
    }

    fn last(&self) -> u64 {
        self.log.len() as u64
    }

    /// The AppendEntries this leader sends when it believes the follower matches through
    /// `prev`: entries `prev+1..=through`.
    fn append(&self, prev: u64, through: u64, round: u64) -> Message<u64> {
        Message {
            from: self.id,
            term: self.term,
            rpc: Rpc::AppendEntries(AppendEntries {
                prev_log_index: LogIndex::new(prev),
                prev_log_term: self.term_at(prev),
                entries: (prev + 1..=through)
                    .map(|index| entry(index, self.term_at(index)))
                    .collect(),
                leader_commit: LogIndex::new(self.commit),
                round,
            }),
        }
    }
}

/// Holds the follower to what its leaders rely on, from the actions it emits.
///
/// It keeps a copy of the follower's durable log (from its persist actions), the committed
/// log (the terms of the entries the scripted leaders committed) and what was applied.
#[derive(Clone, Debug, Default)]
pub struct FollowerChecker {
    /// The follower's durable log above `floor`: `stored[i]` is the term at `floor + 1 + i`.
    stored: Vec<Term>,
    /// The follower's durable snapshot index.
    floor: u64,
    /// The terms of the committed log, index 1 first.
    committed: Vec<Term>,
    /// The last index the follower applied.
    applied: u64,
    /// The longest prefix of a leader's log the follower acknowledged in that leader's term.
    /// The leader counts it toward commitment, so the follower must keep storing it for as
    /// long as that term is its current term.
    promised: Option<(Term, Vec<Term>)>,
}

impl FollowerChecker {
    /// A checker for a follower with an empty log.
    pub fn new() -> FollowerChecker {
        FollowerChecker::default()
    }

    /// The scripted leaders committed through the end of `committed` (index 1 first). It only
    /// ever grows: a committed entry is never replaced.
    ///
    /// # Errors
    /// When `committed` rewrites an entry committed before: the script itself is wrong.
    pub fn set_committed(&mut self, committed: &[Term]) -> Result<(), String> {
        if !committed.starts_with(&self.committed) {
            return Err("the script rewrote a committed entry".to_string());
        }
        self.committed = committed.to_vec();
        Ok(())
    }

    /// The follower's stored term at `index`, if it stores that entry (not compacted).
    fn stored_term(&self, index: u64) -> Option<Term> {
        if index == 0 {
            return Some(Term::new(0));
        }
        if index <= self.floor {
            return None;
        }
        self.stored.get((index - self.floor - 1) as usize).copied()
    }

    /// Checks the actions of one step in which the follower handled a message from `sender`
    /// (its term and log, or none), updating the durable copy. `follower_term` and
    /// `follower_commit` are the follower's term and commit index after the step.
    ///
    /// # Errors
    /// What the follower did wrong.
    pub fn check_step(
        &mut self,
        sender: Option<(Term, &[Term])>,
        actions: &[Action<u64>],
        follower_term: Term,
        follower_commit: u64,
        coverage: &mut ConformanceCoverage,
    ) -> Result<(), String> {
        for action in actions {
            match action {
                Action::PersistLogEntries(entries) => self.persist(entries, coverage)?,
                Action::PersistSnapshot {
                    last_included_index,
                    last_included_term,
                    ..
                } => {
                    let index = last_included_index.get();
                    if index > self.applied {
                        return Err(format!(
                            "snapshot through {index} covers entries not applied (applied {})",
                            self.applied
                        ));
                    }
                    if self.committed_term(index) != Some(*last_included_term) {
                        return Err(format!(
                            "snapshot through {index} in term {} is not the committed log",
                            last_included_term.get()
                        ));
                    }
                    let keep = index.saturating_sub(self.floor) as usize;
                    self.stored.drain(..keep.min(self.stored.len()));
                    self.floor = index;
                }
                Action::Apply(entries) => {
                    for applied in entries {
                        let index = applied.index.get();
                        if index != self.applied + 1 {
                            return Err(format!(
                                "applied {index} after {}: applies must be contiguous",
                                self.applied
                            ));
                        }
                        let term = self.committed_term(index);
                        let expected = term.map(|term| entry(index, term));
                        if expected.as_ref() != Some(applied) {
                            return Err(format!(
                                "applied {applied:?} at {index}, but the committed entry there \
                                 is {expected:?}"
                            ));
                        }
                        self.applied = index;
                        coverage.entries_applied += 1;
                    }
                }
                Action::ApplySnapshot { .. } => {
                    return Err("applied a snapshot no leader sent".to_string());
                }
                Action::Send { message, .. } => {
                    if let (Some((term, log)), Rpc::AppendEntriesResponse(response)) =
                        (sender, &message.rpc)
                    {
                        self.check_answer(log, response.outcome)?;
                        if let AppendOutcome::Accepted { match_index } = response.outcome {
                            self.promise(term, log, match_index.get());
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some((term, promised)) = &self.promised
            && *term == follower_term
        {
            for index in self.floor + 1..=promised.len() as u64 {
                if self.stored_term(index) != promised.get(index as usize - 1).copied() {
                    return Err(format!(
                        "acknowledged entries through {} to the leader of term {}, but no \
                             longer stores its entry at {index}",
                        promised.len(),
                        term.get()
                    ));
                }
            }
        }
        if follower_commit > self.committed.len() as u64 {
            return Err(format!(
                "committed through {follower_commit}, but only {} entries are committed",
                self.committed.len()
            ));
        }
        for index in self.floor + 1..=follower_commit {
            if self.stored_term(index) != self.committed_term(index) {
                return Err(format!(
                    "commit index {follower_commit} covers the stored entry at {index} in term \
                     {:?}, but the committed entry there is in term {:?}",
                    self.stored_term(index).map(Term::get),
                    self.committed_term(index).map(Term::get)
                ));
            }
        }
        Ok(())
    }

    /// Records that the follower acknowledged `log` through `match_index` in `term`.
    fn promise(&mut self, term: Term, log: &[Term], match_index: u64) {
        let Some(prefix) = log.get(..match_index as usize) else {
            return;
        };
        match &mut self.promised {
            Some((promised_term, promised)) if *promised_term == term => {
                if prefix.len() > promised.len() {
                    *promised = prefix.to_vec();
                }
            }
            _ => self.promised = Some((term, prefix.to_vec())),
        }
    }

    fn committed_term(&self, index: u64) -> Option<Term> {
        let position = usize::try_from(index).ok()?.checked_sub(1)?;
        self.committed.get(position).copied()
    }

    /// Applies `PersistLogEntries` to the durable copy: contiguous, replacing any stored entry
    /// at or past the first.
    fn persist(
        &mut self,
        entries: &[LogEntry<u64>],
        coverage: &mut ConformanceCoverage,
    ) -> Result<(), String> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let start = first.index.get();
        if start <= self.floor || start > self.floor + self.stored.len() as u64 + 1 {
            return Err(format!(
                "persisted entries from {start}, not next to the stored log ({}..={})",
                self.floor + 1,
                self.floor + self.stored.len() as u64
            ));
        }
        let keep = (start - self.floor - 1) as usize;
        if keep < self.stored.len() {
            coverage.suffixes_overwritten += 1;
        }
        self.stored.truncate(keep);
        for (offset, stored) in entries.iter().enumerate() {
            if stored.index.get() != start + offset as u64 {
                return Err("persisted entries are not contiguous".to_string());
            }
            self.stored.push(stored.term);
        }
        Ok(())
    }

    /// An answer to a leader whose log is `sender` must describe the follower's log truly.
    fn check_answer(&self, sender: &[Term], outcome: AppendOutcome) -> Result<(), String> {
        let sender_term = |index: u64| -> Option<Term> {
            if index == 0 {
                Some(Term::new(0))
            } else {
                sender.get(index as usize - 1).copied()
            }
        };
        match outcome {
            AppendOutcome::Accepted { match_index } => {
                let claimed = match_index.get();
                for index in self.floor + 1..=claimed {
                    if self.stored_term(index) != sender_term(index) {
                        return Err(format!(
                            "accepted through {claimed}, but at {index} it stores term {:?} \
                             where the leader has {:?}",
                            self.stored_term(index).map(Term::get),
                            sender_term(index).map(Term::get)
                        ));
                    }
                }
            }
            AppendOutcome::Rejected {
                prev_log_index,
                conflict_term: Some(term),
                ..
            } => {
                let index = prev_log_index.get();
                if self.stored_term(index) != Some(term) {
                    return Err(format!(
                        "refused naming term {} at {index}, but it stores {:?} there",
                        term.get(),
                        self.stored_term(index).map(Term::get)
                    ));
                }
                if sender_term(index) == Some(term) {
                    return Err(format!(
                        "refused the entry at {index}, but it holds the leader's term {} there",
                        term.get()
                    ));
                }
            }
            AppendOutcome::Rejected { .. } | AppendOutcome::StaleTerm => {}
        }
        Ok(())
    }
}

/// One scripted run against a fresh follower: `steps` random steps, then the catch-up.
/// Returns what it exercised.
///
/// # Errors
/// [`ConformanceFailure::Violation`]: the follower broke a rule (or the engine refused its
/// configuration).
pub fn run_follower(seed: u64, steps: u64) -> Result<ConformanceCoverage, ConformanceFailure> {
    let mut run = FollowerRun::new(seed, steps)?;
    for step in 0..steps {
        run.step(step)?;
    }
    run.catch_up(steps)?;
    Ok(run.coverage)
}

fn violation(seed: u64, steps: u64, step: u64, detail: String) -> ConformanceFailure {
    ConformanceFailure::Violation {
        replay: "yggr_sim::conformance::run_follower",
        seed,
        steps,
        step,
        detail,
    }
}

/// The state of one conformance run.
struct FollowerRun {
    seed: u64,
    steps: u64,
    rng: ChaCha8Rng,
    follower: Engine<u64>,
    checker: FollowerChecker,
    /// Every leader so far, the current one last.
    leaders: Vec<Leader>,
    /// Requests in flight: the index of their sender in `leaders`, and the request.
    in_flight: Vec<(usize, Message<u64>)>,
    next_round: u64,
    coverage: ConformanceCoverage,
}

impl FollowerRun {
    fn new(seed: u64, steps: u64) -> Result<FollowerRun, ConformanceFailure> {
        let members = Membership::from_voters([FOLLOWER].into_iter().chain(LEADERS));
        let config = EngineConfig {
            // No ticks are sent: the follower never campaigns, so every message it gets is a
            // leader's. Small snapshots chunks do not matter; no snapshot is transferred.
            ..EngineConfig::default()
        };
        let follower = Engine::with_config(FOLLOWER, members, RandomEnv::seeded(seed), config)
            .map_err(|error| {
                violation(
                    seed,
                    steps,
                    0,
                    format!("the engine refused its configuration: {error}"),
                )
            })?;
        Ok(FollowerRun {
            seed,
            steps,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0xf011_0e11),
            follower,
            checker: FollowerChecker::new(),
            leaders: vec![Leader {
                id: LEADERS[0],
                term: Term::new(1),
                log: Vec::new(),
                commit: 0,
                next: 1,
            }],
            in_flight: Vec::new(),
            next_round: 1,
            coverage: ConformanceCoverage::default(),
        })
    }

    fn fail(&self, step: u64, detail: String) -> ConformanceFailure {
        violation(self.seed, self.steps, step, detail)
    }

    fn current(&self) -> &Leader {
        self.leaders
            .last()
            .expect("a run always has a leader: the first is made in new()")
    }

    /// One random scripted step.
    fn step(&mut self, step: u64) -> Result<(), ConformanceFailure> {
        let roll = self.rng.random_range(0..100);
        match roll {
            0..4 => self.elect_next_leader(),
            4..16 => self.leader_appends(),
            16..26 => self.leader_commits(step)?,
            26..58 => self.send_append(),
            58..98 => self.deliver_one(step)?,
            _ => self.follower_compacts(step)?,
        }
        Ok(())
    }

    /// A new leader in the next term: some earlier leader's log that holds the committed
    /// prefix, cut anywhere at or past it, plus a few entries of the new term.
    fn elect_next_leader(&mut self) {
        let committed = self.checker.committed.clone();
        let candidates: Vec<usize> = (0..self.leaders.len())
            .filter(|&index| self.leaders[index].log.starts_with(&committed))
            .collect();
        let base = candidates[self.rng.random_range(0..candidates.len())];
        // Half the time the new leader keeps nothing uncommitted of its base, so what the
        // previous leaders left on the follower past the committed prefix must be replaced.
        let keep = if self.rng.random_bool(0.5) {
            committed.len()
        } else {
            self.rng
                .random_range(committed.len()..=self.leaders[base].log.len())
        };
        let mut log = self.leaders[base].log[..keep].to_vec();
        let term = self.current().term.next();
        let id = LEADERS[(term.get() as usize - 1) % LEADERS.len()];
        let own = self.rng.random_range(0..=4);
        log.extend(std::iter::repeat_n(term, own));
        let next = log.len() as u64 + 1;
        self.leaders.push(Leader {
            id,
            term,
            log,
            commit: committed.len() as u64,
            next,
        });
    }

    fn leader_appends(&mut self) {
        let count = self.rng.random_range(1..=4);
        let leader = self.leaders.last_mut().expect("a run always has a leader");
        let term = leader.term;
        leader.log.extend(std::iter::repeat_n(term, count));
    }

    /// The current leader commits through one of its own term's entries past its commit
    /// index, if it has one.
    fn leader_commits(&mut self, step: u64) -> Result<(), ConformanceFailure> {
        let leader = self.current();
        let own: Vec<u64> = (leader.commit + 1..=leader.last())
            .filter(|&index| leader.term_at(index) == leader.term)
            .collect();
        if own.is_empty() {
            return Ok(());
        }
        let committed_log = leader.log.clone();
        let through = own[self.rng.random_range(0..own.len())];
        let committed = committed_log[..through as usize].to_vec();
        self.leaders
            .last_mut()
            .expect("a run always has a leader")
            .commit = through;
        let (seed, steps) = (self.seed, self.steps);
        self.checker
            .set_committed(&committed)
            .map_err(|detail| violation(seed, steps, step, detail))
    }

    /// A leader (mostly the current one) sends from some point of its log.
    fn send_append(&mut self) {
        let sender = if self.leaders.len() > 1 && self.rng.random_bool(0.25) {
            self.rng.random_range(0..self.leaders.len() - 1)
        } else {
            self.leaders.len() - 1
        };
        let leader = &self.leaders[sender];
        let last = leader.last();
        // Mostly from where the follower's answers put it, as a leader does; otherwise from
        // anywhere, as an older request still in flight may be.
        let prev = if self.rng.random_bool(0.7) {
            leader.next.saturating_sub(1).min(last)
        } else {
            self.rng.random_range(0..=last)
        };
        let through = if self.rng.random_bool(0.3) {
            prev
        } else {
            self.rng.random_range(prev..=last.min(prev + 8))
        };
        let round = self.next_round;
        self.next_round += 1;
        let message = leader.append(prev, through, round);
        self.in_flight.push((sender, message));
    }

    /// Delivers a random request in flight and checks the follower's answer.
    fn deliver_one(&mut self, step: u64) -> Result<(), ConformanceFailure> {
        if self.in_flight.is_empty() {
            return Ok(());
        }
        let pick = self.rng.random_range(0..self.in_flight.len());
        let (sender, message) = self.in_flight.swap_remove(pick);
        self.deliver(step, sender, message).map(|_| ())
    }

    /// Feeds `message` from leader `sender` to the follower, checks the step, and returns the
    /// follower's answer.
    fn deliver(
        &mut self,
        step: u64,
        sender: usize,
        message: Message<u64>,
    ) -> Result<Option<AppendOutcome>, ConformanceFailure> {
        let capped = match &message.rpc {
            Rpc::AppendEntries(request) => {
                let verified = request.prev_log_index.get() + request.entries.len() as u64;
                let beyond = self.checker.stored_term(verified + 1);
                request.leader_commit.get() > verified
                    && beyond.is_some()
                    && beyond != self.leaders[sender].log.get(verified as usize).copied()
            }
            _ => false,
        };
        let actions = self.follower.step(Event::Incoming(message));
        self.follower.check_invariants();
        self.coverage.delivered += 1;
        let commit = self.follower.commit_index().get();
        let (seed, steps) = (self.seed, self.steps);
        let leader = &self.leaders[sender];
        self.checker
            .check_step(
                Some((leader.term, &leader.log)),
                &actions,
                self.follower.current_term(),
                commit,
                &mut self.coverage,
            )
            .map_err(|detail| violation(seed, steps, step, detail))?;
        let outcome = actions.iter().find_map(|action| match action {
            Action::Send { message, .. } => match &message.rpc {
                Rpc::AppendEntriesResponse(response) => Some(response.outcome),
                _ => None,
            },
            _ => None,
        });
        let leader = &mut self.leaders[sender];
        match outcome {
            Some(AppendOutcome::Accepted { match_index }) => {
                leader.next = match_index.get() + 1;
            }
            Some(AppendOutcome::Rejected {
                prev_log_index,
                conflict_index,
                ..
            }) => {
                leader.next = conflict_index.get().min(prev_log_index.get()).max(1);
            }
            _ => {}
        }
        match outcome {
            Some(AppendOutcome::Accepted { .. }) => {
                self.coverage.accepted += 1;
                if capped {
                    self.coverage.commits_capped += 1;
                }
            }
            Some(AppendOutcome::Rejected { .. }) => self.coverage.rejected += 1,
            Some(AppendOutcome::StaleTerm) => self.coverage.stale_terms += 1,
            None => {
                return Err(self.fail(step, "an AppendEntries went unanswered".to_string()));
            }
        }
        Ok(outcome)
    }

    /// The follower snapshots what it applied, as a host does now and then.
    fn follower_compacts(&mut self, step: u64) -> Result<(), ConformanceFailure> {
        let applied = self.follower.last_applied();
        if applied <= self.follower.snapshot_index() {
            return Ok(());
        }
        let actions = self.follower.step(Event::SnapshotTaken {
            last_included_index: applied,
            bytes: Bytes::new(),
        });
        self.follower.check_invariants();
        self.coverage.snapshots_taken += 1;
        let commit = self.follower.commit_index().get();
        let (seed, steps) = (self.seed, self.steps);
        self.checker
            .check_step(
                None,
                &actions,
                self.follower.current_term(),
                commit,
                &mut self.coverage,
            )
            .map_err(|detail| violation(seed, steps, step, detail))
    }

    /// The current leader brings the follower up to date as a leader does: send from its last
    /// index, step back on every refusal, until an acceptance; then send the rest. The
    /// follower must end up holding, committing and applying exactly the committed log.
    fn catch_up(&mut self, steps: u64) -> Result<(), ConformanceFailure> {
        let sender = self.leaders.len() - 1;
        let last = self.current().last();
        let mut prev = last;
        let mut step = steps;
        loop {
            let round = self.next_round;
            self.next_round += 1;
            let message = self.leaders[sender].append(prev, last, round);
            match self.deliver(step, sender, message)? {
                Some(AppendOutcome::Accepted { match_index }) if match_index.get() == last => {
                    break;
                }
                Some(AppendOutcome::Accepted { match_index }) => {
                    return Err(self.fail(
                        step,
                        format!("accepted entries through {last} but matched only {match_index}"),
                    ));
                }
                Some(AppendOutcome::Rejected { .. }) if prev > 0 => prev -= 1,
                other => {
                    return Err(self.fail(
                        step,
                        format!("the current leader's request from {prev} got {other:?}"),
                    ));
                }
            }
            step += 1;
        }
        let committed = self.checker.committed.len() as u64;
        let commit = self.follower.commit_index().get();
        let applied = self.checker.applied;
        if commit != committed || applied != committed {
            return Err(self.fail(
                step,
                format!(
                    "caught up with the leader, yet committed {commit} and applied {applied} of \
                     {committed} committed entries"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(raw: u64) -> Term {
        Term::new(raw)
    }

    #[test]
    fn short_runs_of_a_correct_follower_pass_and_reach_the_corner_cases() {
        let mut total = ConformanceCoverage::default();
        for seed in 0..50 {
            total.add(&run_follower(seed, 400).unwrap_or_else(|failure| panic!("{failure}")));
        }
        assert!(total.commits_capped > 0, "{total}");
        assert!(total.suffixes_overwritten > 0, "{total}");
        assert!(total.stale_terms > 0, "{total}");
        assert!(total.snapshots_taken > 0, "{total}");
    }

    #[test]
    fn the_checker_rejects_applying_an_entry_that_was_not_committed() {
        let mut checker = FollowerChecker::new();
        let mut coverage = ConformanceCoverage::default();
        checker.set_committed(&[term(1), term(1)]).unwrap();
        let stale = vec![entry(1, term(1)), entry(2, term(1)), entry(3, term(1))];
        checker
            .check_step(
                None,
                &[Action::PersistLogEntries(stale.clone())],
                term(0),
                0,
                &mut coverage,
            )
            .unwrap();
        let error = checker
            .check_step(None, &[Action::Apply(stale)], term(0), 3, &mut coverage)
            .unwrap_err();
        assert!(error.contains("committed"), "{error}");
    }

    #[test]
    fn the_checker_rejects_a_commit_index_over_a_divergent_stored_entry() {
        let mut checker = FollowerChecker::new();
        let mut coverage = ConformanceCoverage::default();
        // Stored: 1@1, 2@2 (a deposed leader's). Committed: 1@1, 2@3.
        checker
            .check_step(
                None,
                &[Action::PersistLogEntries(vec![
                    entry(1, term(1)),
                    entry(2, term(2)),
                ])],
                term(0),
                0,
                &mut coverage,
            )
            .unwrap();
        checker.set_committed(&[term(1), term(3)]).unwrap();
        assert!(
            checker
                .check_step(None, &[], term(0), 1, &mut coverage)
                .is_ok()
        );
        let error = checker
            .check_step(None, &[], term(0), 2, &mut coverage)
            .unwrap_err();
        assert!(error.contains("covers the stored entry at 2"), "{error}");
    }

    #[test]
    fn the_checker_rejects_an_acceptance_past_the_shared_prefix() {
        let mut checker = FollowerChecker::new();
        let mut coverage = ConformanceCoverage::default();
        checker
            .check_step(
                None,
                &[Action::PersistLogEntries(vec![
                    entry(1, term(1)),
                    entry(2, term(2)),
                ])],
                term(0),
                0,
                &mut coverage,
            )
            .unwrap();
        let leader: &[Term] = &[term(1), term(3)];
        let answer = |match_index: u64| Action::Send {
            to: LEADERS[0],
            message: Message {
                from: FOLLOWER,
                term: term(3),
                rpc: Rpc::AppendEntriesResponse(yggr_core::AppendEntriesResponse {
                    round: 1,
                    outcome: AppendOutcome::Accepted {
                        match_index: LogIndex::new(match_index),
                    },
                }),
            },
        };
        assert!(
            checker
                .check_step(
                    Some((term(3), leader)),
                    &[answer(1)],
                    term(3),
                    0,
                    &mut coverage
                )
                .is_ok()
        );
        let error = checker
            .check_step(
                Some((term(3), leader)),
                &[answer(2)],
                term(3),
                0,
                &mut coverage,
            )
            .unwrap_err();
        assert!(error.contains("accepted through 2"), "{error}");
    }

    #[test]
    fn the_checker_rejects_a_refusal_that_misnames_the_stored_term() {
        let mut checker = FollowerChecker::new();
        let mut coverage = ConformanceCoverage::default();
        checker
            .check_step(
                None,
                &[Action::PersistLogEntries(vec![entry(1, term(2))])],
                term(0),
                0,
                &mut coverage,
            )
            .unwrap();
        let refusal = |conflict: u64| Action::Send {
            to: LEADERS[0],
            message: Message {
                from: FOLLOWER,
                term: term(3),
                rpc: Rpc::AppendEntriesResponse(yggr_core::AppendEntriesResponse {
                    round: 1,
                    outcome: AppendOutcome::Rejected {
                        prev_log_index: LogIndex::new(1),
                        conflict_term: Some(term(conflict)),
                        conflict_index: LogIndex::new(1),
                    },
                }),
            },
        };
        let leader: &[Term] = &[term(3)];
        assert!(
            checker
                .check_step(
                    Some((term(3), leader)),
                    &[refusal(2)],
                    term(3),
                    0,
                    &mut coverage
                )
                .is_ok()
        );
        assert!(
            checker
                .check_step(
                    Some((term(3), leader)),
                    &[refusal(1)],
                    term(3),
                    0,
                    &mut coverage
                )
                .is_err()
        );
    }

    #[test]
    fn the_checker_rejects_dropping_entries_acknowledged_in_the_current_term() {
        let mut checker = FollowerChecker::new();
        let mut coverage = ConformanceCoverage::default();
        let leader: &[Term] = &[term(1), term(1)];
        let accepted = Action::Send {
            to: LEADERS[0],
            message: Message {
                from: FOLLOWER,
                term: term(1),
                rpc: Rpc::AppendEntriesResponse(yggr_core::AppendEntriesResponse {
                    round: 1,
                    outcome: AppendOutcome::Accepted {
                        match_index: LogIndex::new(2),
                    },
                }),
            },
        };
        let stored = Action::PersistLogEntries(vec![entry(1, term(1)), entry(2, term(1))]);
        checker
            .check_step(
                Some((term(1), leader)),
                &[stored, accepted],
                term(1),
                0,
                &mut coverage,
            )
            .unwrap();
        // A late, shorter request of the same leader must not cut what was acknowledged...
        let rewrite = Action::PersistLogEntries(vec![entry(2, term(0))]);
        let error = checker
            .check_step(
                Some((term(1), leader)),
                std::slice::from_ref(&rewrite),
                term(1),
                0,
                &mut coverage,
            )
            .unwrap_err();
        assert!(error.contains("no longer stores"), "{error}");
        // ...but a newer term's leader may replace it.
        let mut checker = FollowerChecker::new();
        checker.promised = Some((term(1), leader.to_vec()));
        checker.stored = leader.to_vec();
        assert!(
            checker
                .check_step(None, &[rewrite], term(2), 0, &mut coverage)
                .is_ok()
        );
    }

    #[test]
    fn the_checker_rejects_a_snapshot_of_unapplied_entries() {
        let mut checker = FollowerChecker::new();
        let mut coverage = ConformanceCoverage::default();
        checker.set_committed(&[term(1)]).unwrap();
        let snapshot = Action::PersistSnapshot {
            last_included_index: LogIndex::new(1),
            last_included_term: term(1),
            membership: Membership::from_voters([FOLLOWER]),
            bytes: Bytes::new(),
        };
        let error = checker
            .check_step(None, &[snapshot], term(0), 0, &mut coverage)
            .unwrap_err();
        assert!(error.contains("not applied"), "{error}");
    }
}
