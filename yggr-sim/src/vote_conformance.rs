//! Vote conformance: one engine as a voter, given every kind of vote request and the traffic
//! that surrounds elections, checked against the voting rules after every answer.
//!
//! Cluster runs test a voter's rules only when an election happens to meet the right state.
//! Here a scripted stream of events does it on purpose:
//!
//! - leaders of rising terms send the voter heartbeats and entries (each one is leader
//!   contact);
//! - messages from newer terms that are not vote requests (a refusal, an acknowledgement)
//!   make the voter adopt the newer term and forget its leader;
//! - candidates of the current or newer terms ask for votes and pre-votes, with logs ahead of
//!   or behind the voter's, now and then flagged as a leadership transfer;
//! - time passes in ticks.
//!
//! After every answer: a vote is granted only to a candidate whose log is at least as up to
//! date (§5.4.1); at most one candidate gets a vote in a term (§5.2); and no vote goes to a
//! candidate that is not taking over by transfer while fewer than `election_timeout_min_ticks`
//! ticks have passed since the voter last heard from a leader (thesis §4.2.3). The last rule is
//! what a leader lease counts on, and it must hold whether or not the voter still knows who
//! that leader is.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use yggr_core::{
    Action, AppendEntries, AppendEntriesResponse, AppendOutcome, Engine, EngineConfig,
    EntryPayload, Event, LogEntry, LogIndex, Membership, Message, NodeId, RandomEnv, Rpc, Term,
    VoteRequest, VoteResponse,
};

use crate::conformance::{ConformanceFailure, ScriptedCoverage, run_scripted};

/// The voter under test.
const VOTER: NodeId = node(1);
/// The cluster's size; nodes 2..=SIZE are leaders and candidates.
const SIZE: u64 = 5;

const fn node(raw: u64) -> NodeId {
    match NodeId::new(raw) {
        Some(id) => id,
        None => panic!("node ids are nonzero"),
    }
}

/// What vote-conformance runs exercised, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VoteCoverage {
    /// Vote and pre-vote requests delivered.
    pub requests: u64,
    /// Votes granted.
    pub grants: u64,
    /// Requests that arrived within the minimum election timeout of leader contact after a
    /// newer term had made the voter forget its leader: the shape a lease depends on.
    pub requests_in_forgotten_lease: u64,
    /// Requests from candidates whose logs were behind the voter's.
    pub requests_from_stale_logs: u64,
    /// A second candidate asking in a term the voter already voted in.
    pub second_candidates: u64,
}

impl VoteCoverage {
    fn add(&mut self, other: &VoteCoverage) {
        self.requests += other.requests;
        self.grants += other.grants;
        self.requests_in_forgotten_lease += other.requests_in_forgotten_lease;
        self.requests_from_stale_logs += other.requests_from_stale_logs;
        self.second_candidates += other.second_candidates;
    }

    /// The counters below `gate`'s, as `name: seen < minimum`.
    pub fn shortfalls(&self, gate: &VoteCoverage) -> Vec<String> {
        [
            ("requests", self.requests, gate.requests),
            ("grants", self.grants, gate.grants),
            (
                "requests_in_forgotten_lease",
                self.requests_in_forgotten_lease,
                gate.requests_in_forgotten_lease,
            ),
            (
                "requests_from_stale_logs",
                self.requests_from_stale_logs,
                gate.requests_from_stale_logs,
            ),
            (
                "second_candidates",
                self.second_candidates,
                gate.second_candidates,
            ),
        ]
        .into_iter()
        .filter(|(_, seen, minimum)| seen < minimum)
        .map(|(name, seen, minimum)| format!("{name}: {seen} < {minimum}"))
        .collect()
    }

    fn scaled(&self, factor: f64) -> VoteCoverage {
        let scale = |minimum: u64| (minimum as f64 * factor).floor() as u64;
        VoteCoverage {
            requests: scale(self.requests),
            grants: scale(self.grants),
            requests_in_forgotten_lease: scale(self.requests_in_forgotten_lease),
            requests_from_stale_logs: scale(self.requests_from_stale_logs),
            second_candidates: scale(self.second_candidates),
        }
    }
}

impl fmt::Display for VoteCoverage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "requests {}, grants {}, requests in a forgotten lease {}, from stale logs {}, \
             second candidates {}",
            self.requests,
            self.grants,
            self.requests_in_forgotten_lease,
            self.requests_from_stale_logs,
            self.second_candidates
        )
    }
}

/// Runs of the vote-conformance suite and what they must exercise.
#[derive(Clone, Debug)]
pub struct VoteSuite {
    /// Runs at budget 1.
    pub runs: u64,
    /// Scripted steps per run.
    pub steps: u64,
    /// The least the runs must exercise together at budget 1.
    pub gate: VoteCoverage,
}

impl Default for VoteSuite {
    /// 10,000 runs of 200 steps, gated at about half of what that was measured to exercise.
    fn default() -> Self {
        VoteSuite {
            runs: 10_000,
            steps: 200,
            gate: VoteCoverage {
                requests: 380_000,
                grants: 23_000,
                requests_in_forgotten_lease: 130_000,
                requests_from_stale_logs: 100_000,
                second_candidates: 10_000,
            },
        }
    }
}

/// What a passing vote suite exercised.
#[derive(Clone, Debug)]
pub struct VoteReport {
    /// The base seed the runs' seeds came from.
    pub base_seed: u64,
    /// The runs' coverage, summed.
    pub coverage: VoteCoverage,
    /// Wall-clock time taken.
    pub elapsed: Duration,
}

impl fmt::Display for VoteReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "suite votes (base seed {}, {:.1} s): {}",
            self.base_seed,
            self.elapsed.as_secs_f64(),
            self.coverage
        )
    }
}

impl VoteSuite {
    /// Runs `runs × budget` seeds derived from `base_seed` (at least one), stopping at the
    /// first failure, then holds the summed coverage to the gate scaled by `budget`.
    ///
    /// # Errors
    /// [`ConformanceFailure`]: the first violation, or the coverage shortfall.
    pub fn run(&self, base_seed: u64, budget: f64) -> Result<VoteReport, ConformanceFailure> {
        let started = Instant::now();
        let coverage = run_scripted(base_seed, budget, self.runs, &self.gate, |seed| {
            run_voter(seed, self.steps)
        })?;
        Ok(VoteReport {
            base_seed,
            coverage,
            elapsed: started.elapsed(),
        })
    }
}

/// The checks on one granted vote, as a pure function of what the script knows.
///
/// # Errors
/// Which rule the grant broke.
pub fn check_grant(
    candidate: NodeId,
    term: Term,
    request: &VoteRequest,
    voter_last: (LogIndex, Term),
    earlier_grant: Option<NodeId>,
    ticks_since_leader_contact: Option<u64>,
    election_timeout_min_ticks: u64,
) -> Result<(), String> {
    let (last_index, last_term) = voter_last;
    let up_to_date = request.last_log_term > last_term
        || (request.last_log_term == last_term && request.last_log_index >= last_index);
    if !up_to_date {
        return Err(format!(
            "granted its term-{} vote to {candidate}, whose log ends at {}/{} behind its own {}/{} (§5.4.1)",
            term.get(),
            request.last_log_index.get(),
            request.last_log_term.get(),
            last_index.get(),
            last_term.get()
        ));
    }
    if let Some(first) = earlier_grant
        && first != candidate
    {
        return Err(format!(
            "granted its term-{} vote to {first} and then to {candidate} (§5.2)",
            term.get()
        ));
    }
    if let Some(ticks) = ticks_since_leader_contact
        && ticks < election_timeout_min_ticks
        && !request.leadership_transfer
    {
        return Err(format!(
            "granted its term-{} vote to {candidate} {ticks} ticks after hearing from a leader, \
             within the minimum election timeout of {election_timeout_min_ticks} (thesis §4.2.3): \
             that leader's lease counts on this refusal",
            term.get()
        ));
    }
    Ok(())
}

fn violation(seed: u64, steps: u64, step: u64, detail: String) -> ConformanceFailure {
    ConformanceFailure::Violation {
        replay: "yggr_sim::vote_conformance::run_voter",
        seed,
        steps,
        step,
        detail,
    }
}

/// One scripted run. Returns what it exercised.
///
/// # Errors
/// [`ConformanceFailure::Violation`]: the voter broke a rule.
pub fn run_voter(seed: u64, steps: u64) -> Result<VoteCoverage, ConformanceFailure> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0076_07e5);
    let config = EngineConfig {
        pre_vote: rng.random_bool(0.5),
        election_timeout_min_ticks: 10,
        election_timeout_max_ticks: 20,
        heartbeat_interval_ticks: 3,
        ..EngineConfig::default()
    };
    let minimum = config.election_timeout_min_ticks;
    let members = Membership::from_voters((1..=SIZE).map(node));
    let mut voter = Engine::with_config(VOTER, members, RandomEnv::seeded(seed), config)
        .map_err(|error| violation(seed, steps, 0, format!("config refused: {error}")))?;
    let mut coverage = VoteCoverage::default();
    // Ticks since the voter last heard from a leader, `None` before it ever did.
    let mut contact: Option<u64> = None;
    // Whether a newer term made it forget its leader since that contact.
    let mut forgotten = false;
    let mut grants: BTreeMap<Term, NodeId> = BTreeMap::new();
    for step in 0..steps {
        let term = voter.current_term();
        let roll = rng.random_range(0..100);
        if roll < 30 {
            // Time passes.
            voter.step(Event::Tick);
            contact = contact.map(|ticks| ticks + 1);
        } else if roll < 50 {
            // A leader of the current term or a newer one sends a heartbeat or entries that
            // continue the voter's log.
            let leader_term = Term::new(term.get() + u64::from(rng.random_bool(0.3)));
            let leader = node(rng.random_range(2..=SIZE));
            let last = voter.last_log_index();
            let count = rng.random_range(0..=2u64);
            let entries = (1..=count)
                .map(|offset| LogEntry {
                    term: leader_term,
                    index: LogIndex::new(last.get() + offset),
                    payload: EntryPayload::Command(step),
                })
                .collect();
            let actions = voter.step(Event::Incoming(Message {
                from: leader,
                term: leader_term,
                rpc: Rpc::AppendEntries(AppendEntries {
                    prev_log_index: last,
                    prev_log_term: voter.last_log_term(),
                    entries,
                    leader_commit: LogIndex::ZERO,
                    round: step,
                }),
            }));
            // Heard from a leader only if it took the request as its current leader's.
            let accepted = actions.iter().any(|action| {
                matches!(
                    action,
                    Action::Send {
                        message: Message {
                            rpc: Rpc::AppendEntriesResponse(AppendEntriesResponse {
                                outcome: AppendOutcome::Accepted { .. },
                                ..
                            }),
                            ..
                        },
                        ..
                    }
                )
            });
            if accepted {
                contact = Some(0);
                forgotten = false;
            }
        } else if roll < 62 {
            // A message of a newer term that is no vote request: the voter adopts the term and
            // forgets its leader, but not the promise it made by hearing from it.
            let from = node(rng.random_range(2..=SIZE));
            let newer = Term::new(term.get() + rng.random_range(1..=2));
            let rpc = if rng.random_bool(0.5) {
                Rpc::RequestVoteResponse(VoteResponse { granted: false })
            } else {
                Rpc::AppendEntriesResponse(AppendEntriesResponse {
                    round: 0,
                    outcome: AppendOutcome::StaleTerm,
                })
            };
            voter.step(Event::Incoming(Message {
                from,
                term: newer,
                rpc,
            }));
            forgotten = true;
        } else {
            // A candidate asks.
            let candidate = node(rng.random_range(2..=SIZE));
            let asked_term = Term::new(term.get() + rng.random_range(0..=1));
            let voter_last = (voter.last_log_index(), voter.last_log_term());
            let behind = rng.random_bool(0.3);
            let (last_log_index, last_log_term) = if behind {
                (
                    LogIndex::new(voter_last.0.get().saturating_sub(1)),
                    voter_last.1,
                )
            } else if rng.random_bool(0.5) {
                voter_last
            } else {
                (LogIndex::new(voter_last.0.get() + 1), voter_last.1)
            };
            let request = VoteRequest {
                last_log_index,
                last_log_term,
                leadership_transfer: rng.random_bool(0.1),
            };
            let pre_vote = rng.random_bool(0.3);
            coverage.requests += 1;
            if behind && voter_last.0.get() > 0 {
                coverage.requests_from_stale_logs += 1;
            }
            if forgotten && contact.is_some_and(|ticks| ticks < minimum) {
                coverage.requests_in_forgotten_lease += 1;
            }
            if !pre_vote
                && grants
                    .get(&asked_term)
                    .is_some_and(|first| *first != candidate)
            {
                coverage.second_candidates += 1;
            }
            let rpc = if pre_vote {
                Rpc::RequestPreVote(request)
            } else {
                Rpc::RequestVote(request)
            };
            let actions = voter.step(Event::Incoming(Message {
                from: candidate,
                term: asked_term,
                rpc,
            }));
            let granted = actions.iter().any(|action| {
                matches!(action, Action::Send { to, message: Message { rpc: Rpc::RequestVoteResponse(VoteResponse { granted: true }), .. } } if *to == candidate)
            });
            if granted {
                coverage.grants += 1;
                check_grant(
                    candidate,
                    asked_term,
                    &request,
                    voter_last,
                    grants.get(&asked_term).copied(),
                    contact,
                    minimum,
                )
                .map_err(|detail| violation(seed, steps, step, detail))?;
                grants.insert(asked_term, candidate);
                // A grant restarts the voter's election timer, not its leader contact.
            }
        }
        voter.check_invariants();
    }
    Ok(coverage)
}

impl ScriptedCoverage for VoteCoverage {
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

    fn request(index: u64, term: u64, transfer: bool) -> VoteRequest {
        VoteRequest {
            last_log_index: LogIndex::new(index),
            last_log_term: Term::new(term),
            leadership_transfer: transfer,
        }
    }

    const LAST: (LogIndex, Term) = (LogIndex::new(5), Term::new(2));

    #[test]
    fn the_grant_check_rejects_a_vote_for_a_log_behind_the_voters() {
        let error = check_grant(
            node(2),
            Term::new(3),
            &request(4, 2, false),
            LAST,
            None,
            None,
            10,
        )
        .unwrap_err();
        assert!(error.contains("§5.4.1"), "{error}");
        assert!(
            check_grant(
                node(2),
                Term::new(3),
                &request(3, 3, false),
                LAST,
                None,
                None,
                10
            )
            .is_ok()
        );
    }

    #[test]
    fn the_grant_check_rejects_a_second_candidate_in_one_term() {
        let error = check_grant(
            node(3),
            Term::new(3),
            &request(5, 2, false),
            LAST,
            Some(node(2)),
            None,
            10,
        )
        .unwrap_err();
        assert!(error.contains("§5.2"), "{error}");
    }

    #[test]
    fn the_grant_check_rejects_a_vote_within_the_lease_unless_it_is_a_transfer() {
        let error = check_grant(
            node(2),
            Term::new(3),
            &request(5, 2, false),
            LAST,
            None,
            Some(4),
            10,
        )
        .unwrap_err();
        assert!(error.contains("§4.2.3"), "{error}");
        assert!(
            check_grant(
                node(2),
                Term::new(3),
                &request(5, 2, true),
                LAST,
                None,
                Some(4),
                10
            )
            .is_ok()
        );
        assert!(
            check_grant(
                node(2),
                Term::new(3),
                &request(5, 2, false),
                LAST,
                None,
                Some(10),
                10
            )
            .is_ok()
        );
    }

    #[test]
    fn short_runs_of_a_correct_voter_pass_and_reach_the_forgotten_lease() {
        let mut total = VoteCoverage::default();
        for seed in 0..200 {
            total.add(&run_voter(seed, 200).unwrap_or_else(|failure| panic!("{failure}")));
        }
        assert!(total.grants > 0, "{total}");
        assert!(total.requests_in_forgotten_lease > 0, "{total}");
    }
}
