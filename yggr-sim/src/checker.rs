//! Raft's safety invariants, checked against what the simulator observes after every step.
//!
//! The checker keeps a cumulative history (every leader per term, every entry ever stored,
//! every committed and applied index) so that a violation is caught at the step that causes it,
//! not only at the end of a run.

use std::collections::BTreeMap;
use std::fmt;

use yggr_core::{EntryPayload, LogEntry, LogIndex, Membership, Message, NodeId, Rpc, Term};

use crate::disk::DurableState;
use crate::harness::Command;

/// The safety properties the simulator checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Invariant {
    /// §5.2: at most one leader per term.
    ElectionSafety,
    /// §5.2, Figure 2: a node grants at most one vote per term, however often it restarts
    /// (`votedFor` is durable state).
    OneVotePerTerm,
    /// §5.3: two logs holding an entry with the same index and term are identical up to it.
    LogMatching,
    /// §5.4: a committed entry is in the log of every leader of a later term.
    LeaderCompleteness,
    /// §5.4.3: no two nodes apply different commands at one index.
    StateMachineSafety,
    /// Figure 2: nothing is sent that promises state not yet on disk.
    PersistBeforeSend,
    /// Every prefix of the writes a node asks for leaves a disk it can recover from: no entry
    /// or snapshot from a term newer than the stored term (a crash between two writes of one
    /// step must not strand the node).
    RecoverableDisk,
    /// §5.3: a leader's match index for a follower of its term never claims an entry that
    /// follower does not durably hold with the same term.
    MatchIndex,
    /// §4.3: a leader has at most one uncommitted configuration change in its log.
    SingleInFlightConfigChange,
    /// §7: a snapshot never covers more than is committed.
    SnapshotWithinCommit,
    /// §8: a read served as ready observes every entry any node saw committed before the
    /// read was proposed.
    ReadLinearizability,
    /// §9: a read served at once on the strength of a lease is never served by a leader while
    /// a leader of a newer term exists: the lease exists to guarantee that none can have been
    /// elected.
    LeaseExclusivity,
    /// §9, thesis §4.2.3: a read a leader serves on the strength of its lease is served only
    /// while every voter whose acknowledgement that lease counts still refuses votes by its
    /// own clock, its own vote included (it is not campaigning). That refusal is the whole of
    /// what a lease rests on: a voter that would grant a vote could help elect a rival while
    /// the lease still vouches for the old leader.
    LeaseRefusals,
    /// §4.3: two nodes that both hold index `i` committed agree on the configuration in
    /// force at `i`.
    CommittedConfiguration,
    /// The host contract: entries are applied in order, without gaps, and durable state
    /// recovers cleanly.
    HostContract,
    /// Within one process lifetime a node's applied index never moves backwards (a stale
    /// snapshot must not roll the state machine back).
    AppliedMonotonic,
    /// Every write acknowledged to its client is in the history every node applies.
    WriteDurability,
    /// Progress: once every fault is healed the cluster elects one leader, answers every
    /// pending request, converges, and serves a fresh write and a fresh read within a bound.
    Liveness,
    /// The engine broke one of its own invariants: `Engine::check_invariants`, or any
    /// `assert!` inside a step, panicked.
    EngineInvariant,
}

impl fmt::Display for Invariant {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, formatter)
    }
}

/// One broken invariant, with what was observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub invariant: Invariant,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} violated: {}", self.invariant, self.detail)
    }
}

fn violation(invariant: Invariant, detail: String) -> Result<(), Violation> {
    Err(Violation { invariant, detail })
}

/// What the checker remembers of one (index, term) entry.
#[derive(Clone, Debug)]
struct EntryRecord {
    payload: EntryPayload<Command>,
    previous_term: Term,
}

/// What the checker remembers of one committed index.
#[derive(Clone, Copy, Debug)]
struct CommittedEntry {
    term: Term,
    committed_in: Term,
}

/// What the checker follows of one leader's reign for [`Invariant::LeaseRefusals`]: the
/// rounds it sent and every acknowledgement delivered to it, seen from outside the engine.
#[derive(Clone, Debug, Default)]
struct Reign {
    term: Term,
    /// The highest round this leader was seen sending in this term.
    latest_round: u64,
    /// Each peer's highest acknowledged round, as delivered to the leader in this term.
    acknowledged: BTreeMap<NodeId, u64>,
    /// Reads proposed while the leader was ready to serve them (an entry of its term
    /// committed), each with the latest round it had sent before the read arrived.
    reads: BTreeMap<u64, u64>,
}

/// The cumulative history and the checks over it.
#[derive(Clone, Debug, Default)]
pub struct SafetyChecker {
    leaders: BTreeMap<Term, NodeId>,
    /// Every vote granted: (voter, term) → candidate, kept across the voter's restarts.
    votes: BTreeMap<(NodeId, Term), NodeId>,
    entries: BTreeMap<(LogIndex, Term), EntryRecord>,
    /// Committed entries: their term, and the term in which the commit was first seen (the
    /// observer's current term then). Leader Completeness binds the leaders of later terms
    /// than that: a deposed leader of an older term, elected late on votes held up in the
    /// network, owes nothing to entries committed after its own term.
    committed: BTreeMap<LogIndex, CommittedEntry>,
    applied: BTreeMap<LogIndex, (Option<Command>, u64)>,
    /// The current reign of every node that led, for the lease check.
    reigns: BTreeMap<NodeId, Reign>,
    /// Every distinct configuration seen in force at a committed index, so that the record
    /// below holds a number per index rather than a copy of the configuration.
    configurations: Vec<Membership>,
    /// The configuration in force at each committed index (a position in `configurations`),
    /// as the first node to show it had it.
    configuration_at: BTreeMap<LogIndex, (usize, NodeId)>,
}

/// A configuration as [`SafetyChecker::configuration_id`] numbers it: equal numbers, equal
/// configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigurationId(usize);

/// A read-only view of one node's log, for checks that need more than one entry.
pub trait LogView {
    /// The term at `index` (the snapshot's term at its index), if held.
    fn term_at(&self, index: LogIndex) -> Option<Term>;
    /// The snapshot floor.
    fn snapshot_index(&self) -> LogIndex;
    /// The last index.
    fn last_index(&self) -> LogIndex;
}

impl LogView for yggr_core::Engine<Command> {
    fn term_at(&self, index: LogIndex) -> Option<Term> {
        yggr_core::Engine::term_at(self, index)
    }
    fn snapshot_index(&self) -> LogIndex {
        yggr_core::Engine::snapshot_index(self)
    }
    fn last_index(&self) -> LogIndex {
        self.last_log_index()
    }
}

impl SafetyChecker {
    /// An empty history.
    pub fn new() -> SafetyChecker {
        SafetyChecker::default()
    }

    /// Election Safety: `node` is leader in `term`.
    ///
    /// # Errors
    /// The [`Violation`] this observation proves, when it breaks the invariant named above.
    pub fn observe_leader(&mut self, node: NodeId, term: Term) -> Result<(), Violation> {
        let first = *self.leaders.entry(term).or_insert(node);
        if first != node {
            return violation(
                Invariant::ElectionSafety,
                format!("nodes {first} and {node} both lead term {term}"),
            );
        }
        Ok(())
    }

    /// One vote per term: `voter` sent a grant of its term-`term` vote to `candidate`.
    /// Granting the same candidate again (a retransmitted answer) is fine.
    ///
    /// # Errors
    /// The [`Violation`] this observation proves, when it breaks the invariant named above.
    pub fn observe_vote(
        &mut self,
        voter: NodeId,
        candidate: NodeId,
        term: Term,
    ) -> Result<(), Violation> {
        let first = *self.votes.entry((voter, term)).or_insert(candidate);
        if first != candidate {
            return violation(
                Invariant::OneVotePerTerm,
                format!(
                    "node {voter} granted its term-{term} vote to {first} and then to {candidate}"
                ),
            );
        }
        Ok(())
    }

    /// Log Matching: `entry` entered some node's log right after an entry of
    /// `previous_term`. Any other log holding the same index and term must agree on both the
    /// entry and its predecessor's term, which by induction makes the prefixes identical.
    ///
    /// # Errors
    /// The [`Violation`] this observation proves, when it breaks the invariant named above.
    pub fn observe_stored(
        &mut self,
        node: NodeId,
        entry: &LogEntry<Command>,
        previous_term: Term,
    ) -> Result<(), Violation> {
        let record = self
            .entries
            .entry((entry.index, entry.term))
            .or_insert_with(|| EntryRecord {
                payload: entry.payload.clone(),
                previous_term,
            });
        if record.payload != entry.payload || record.previous_term != previous_term {
            return violation(
                Invariant::LogMatching,
                format!(
                    "node {node} stores index {} term {} as {:?} after term {previous_term}; \
                     another log has {:?} after term {}",
                    entry.index, entry.term, entry.payload, record.payload, record.previous_term
                ),
            );
        }
        Ok(())
    }

    /// Records that `node`, in its term `observer_term`, holds the entry at `index` (of
    /// `term`) as committed.
    ///
    /// # Errors
    /// The [`Violation`] this observation proves, when it breaks the invariant named above.
    pub fn observe_committed(
        &mut self,
        node: NodeId,
        index: LogIndex,
        term: Term,
        observer_term: Term,
    ) -> Result<(), Violation> {
        let first = self.committed.entry(index).or_insert(CommittedEntry {
            term,
            committed_in: observer_term,
        });
        let first = first.term;
        if first != term {
            return violation(
                Invariant::StateMachineSafety,
                format!(
                    "node {node} committed term {term} at index {index}; term {first} was committed there before"
                ),
            );
        }
        Ok(())
    }

    /// Leader Completeness (§5.4): the new leader of `term` holds every entry committed in an
    /// earlier term.
    ///
    /// # Errors
    /// The [`Violation`] this observation proves, when it breaks the invariant named above.
    pub fn check_leader_complete(
        &self,
        node: NodeId,
        term: Term,
        log: &impl LogView,
    ) -> Result<(), Violation> {
        let floor = log.snapshot_index();
        for (index, committed) in self.committed.range(floor.next()..) {
            if committed.committed_in >= term {
                continue;
            }
            let committed_term = committed.term;
            if log.term_at(*index) != Some(committed_term) {
                return violation(
                    Invariant::LeaderCompleteness,
                    format!(
                        "leader {node} of term {term} lacks entry {index} of term {committed_term}, committed in term {} (it holds {:?}, last index {})",
                        committed.committed_in,
                        log.term_at(*index),
                        log.last_index()
                    ),
                );
            }
        }
        Ok(())
    }

    /// State Machine Safety: `node` applied `command` at `index`, reaching `digest`.
    ///
    /// # Errors
    /// The [`Violation`] this observation proves, when it breaks the invariant named above.
    pub fn observe_applied(
        &mut self,
        node: NodeId,
        index: LogIndex,
        command: Option<Command>,
        digest: u64,
    ) -> Result<(), Violation> {
        let first = *self.applied.entry(index).or_insert((command, digest));
        if first.0 != command {
            return violation(
                Invariant::StateMachineSafety,
                format!(
                    "node {node} applied {command:?} at index {index}; {:?} was applied there before",
                    first.0
                ),
            );
        }
        if first.1 != digest {
            return violation(
                Invariant::StateMachineSafety,
                format!("node {node} reached a different state at index {index}"),
            );
        }
        Ok(())
    }

    /// A node restored a snapshot claiming the state after `index` is `digest`.
    ///
    /// # Errors
    /// The [`Violation`] this observation proves, when it breaks the invariant named above.
    pub fn observe_restored(
        &self,
        node: NodeId,
        index: LogIndex,
        digest: u64,
    ) -> Result<(), Violation> {
        if let Some((_, known)) = self.applied.get(&index)
            && *known != digest
        {
            return violation(
                Invariant::StateMachineSafety,
                format!(
                    "node {node} restored a snapshot at {index} whose state differs from what was applied there"
                ),
            );
        }
        Ok(())
    }

    /// Persist-before-Send: everything `message` (to `to`) promises is on `disk` already.
    ///
    /// # Errors
    /// The [`Violation`] this observation proves, when it breaks the invariant named above.
    pub fn check_send_ordering(
        disk: &DurableState,
        to: NodeId,
        message: &Message<Command>,
    ) -> Result<(), Violation> {
        let from = message.from;
        let stale_term = |claimed: Term| {
            violation(
                Invariant::PersistBeforeSend,
                format!(
                    "node {from} sent {} in term {claimed} with term {} on disk",
                    message.rpc.kind(),
                    disk.current_term
                ),
            )
        };
        match &message.rpc {
            // A pre-vote carries the term it asks about, one past the sender's own.
            Rpc::RequestPreVote(_) => {
                if message.term.get() > disk.current_term.get().saturating_add(1) {
                    return stale_term(message.term);
                }
            }
            // A granted pre-vote echoes the candidate's term; it promises nothing.
            Rpc::RequestPreVoteResponse(_) => {}
            _ => {
                if message.term > disk.current_term {
                    return stale_term(message.term);
                }
            }
        }
        match &message.rpc {
            Rpc::RequestVote(_)
                if disk.voted_for != Some(from) || disk.current_term != message.term =>
            {
                violation(
                    Invariant::PersistBeforeSend,
                    format!(
                        "candidate {from} asked for votes in term {} before persisting its own vote",
                        message.term
                    ),
                )
            }
            Rpc::RequestVoteResponse(response)
                if response.granted
                    && (disk.voted_for != Some(to) || disk.current_term != message.term) =>
            {
                violation(
                    Invariant::PersistBeforeSend,
                    format!(
                        "node {from} granted its term-{} vote to {to} before persisting it",
                        message.term
                    ),
                )
            }
            Rpc::AppendEntries(request) => {
                for entry in &request.entries {
                    let stored = disk.term_at(entry.index);
                    if stored.is_some_and(|term| term != entry.term)
                        || (stored.is_none() && entry.index > disk.floor())
                    {
                        return violation(
                            Invariant::PersistBeforeSend,
                            format!(
                                "leader {from} sent entry {} before persisting it",
                                entry.index
                            ),
                        );
                    }
                }
                Ok(())
            }
            // A finished snapshot answer promises everything through its index: the leader
            // counts it toward commits.
            Rpc::InstallSnapshotResponse(response)
                if response.done && disk.last_index() < response.last_included_index =>
            {
                violation(
                    Invariant::PersistBeforeSend,
                    format!(
                        "node {from} acknowledged a snapshot through {} with {} on disk",
                        response.last_included_index,
                        disk.last_index()
                    ),
                )
            }
            Rpc::AppendEntriesResponse(response) => {
                if let yggr_core::AppendOutcome::Accepted { match_index } = response.outcome
                    && match_index > disk.last_index()
                {
                    return violation(
                        Invariant::PersistBeforeSend,
                        format!(
                            "node {from} acknowledged up to {match_index} with {} on disk",
                            disk.last_index()
                        ),
                    );
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Recoverable disk: after each write `node`'s disk holds no term newer than its stored
    /// current term. Terms along a stored log never decrease, so the last entry and the
    /// snapshot are the only ones to look at.
    ///
    /// # Errors
    /// The [`Violation`] this observation proves, when it breaks the invariant named above.
    pub fn check_recoverable(node: NodeId, disk: &DurableState) -> Result<(), Violation> {
        let newest = disk
            .log
            .last()
            .map(|entry| entry.term)
            .into_iter()
            .chain(disk.snapshot.as_ref().map(|s| s.last_included_term))
            .max();
        if let Some(newest) = newest
            && newest > disk.current_term
        {
            return violation(
                Invariant::RecoverableDisk,
                format!(
                    "node {node} stored term {newest} on disk with current term {} stored",
                    disk.current_term
                ),
            );
        }
        Ok(())
    }

    /// At most one configuration entry above the commit index in a leader's log.
    ///
    /// # Errors
    /// The [`Violation`] this observation proves, when it breaks the invariant named above.
    pub fn check_single_config_change(
        node: NodeId,
        entries: impl Iterator<Item = (LogIndex, bool)>,
        commit_index: LogIndex,
    ) -> Result<(), Violation> {
        let uncommitted = entries
            .filter(|(index, is_config)| *is_config && *index > commit_index)
            .count();
        if uncommitted > 1 {
            return violation(
                Invariant::SingleInFlightConfigChange,
                format!("leader {node} holds {uncommitted} uncommitted configuration changes"),
            );
        }
        Ok(())
    }

    /// Applied-index monotonicity: `node`'s state machine at `applied` is replaced by a
    /// snapshot through `restored`.
    ///
    /// # Errors
    /// The [`Violation`] this observation proves, when it breaks the invariant named above.
    pub fn check_applied_moves_forward(
        node: NodeId,
        applied: LogIndex,
        restored: LogIndex,
    ) -> Result<(), Violation> {
        if restored <= applied {
            return violation(
                Invariant::AppliedMonotonic,
                format!(
                    "node {node} restored a snapshot through {restored} over a state machine that had applied {applied}"
                ),
            );
        }
        Ok(())
    }

    /// Write durability: the client of `command` was told it committed at `index`.
    ///
    /// # Errors
    /// The [`Violation`] this observation proves, when it breaks the invariant named above.
    pub fn check_acknowledged_write(
        &self,
        command: Command,
        index: LogIndex,
    ) -> Result<(), Violation> {
        match self.applied.get(&index) {
            Some((Some(applied), _)) if *applied == command => Ok(()),
            other => violation(
                Invariant::WriteDurability,
                format!(
                    "write {command} was acknowledged at index {index}, but the history applied {:?} there",
                    other.map(|(command, _)| command)
                ),
            ),
        }
    }

    /// A snapshot persisted at `index` while the node's commit index is `commit_index`.
    ///
    /// # Errors
    /// The [`Violation`] this observation proves, when it breaks the invariant named above.
    pub fn check_snapshot_within_commit(
        node: NodeId,
        index: LogIndex,
        commit_index: LogIndex,
    ) -> Result<(), Violation> {
        if index > commit_index {
            return violation(
                Invariant::SnapshotWithinCommit,
                format!(
                    "node {node} persisted a snapshot through {index} with commit index {commit_index}"
                ),
            );
        }
        Ok(())
    }

    /// Read linearizability: a read proposed when `required` was the highest index committed
    /// anywhere was served by `node` from a state machine that had applied `applied`.
    ///
    /// # Errors
    /// The [`Violation`] this observation proves, when it breaks the invariant named above.
    pub fn check_read(
        node: NodeId,
        read: u64,
        required: LogIndex,
        applied: LogIndex,
    ) -> Result<(), Violation> {
        if applied < required {
            return violation(
                Invariant::ReadLinearizability,
                format!(
                    "node {node} served read {read} at applied index {applied}, but {required} was committed before the read was proposed"
                ),
            );
        }
        Ok(())
    }

    /// Match index soundness: `leader` believes `follower` matches its log through
    /// `match_index`, where its own entry has `leader_term_at_match`. The follower, in the
    /// leader's term, durably holds `follower_disk`. Below the follower's snapshot floor there
    /// is nothing to compare.
    ///
    /// # Errors
    /// The [`Violation`] this observation proves, when it breaks the invariant named above.
    pub fn check_match_index(
        leader: NodeId,
        follower: NodeId,
        match_index: LogIndex,
        leader_term_at_match: Option<Term>,
        follower_disk: &DurableState,
    ) -> Result<(), Violation> {
        if match_index == LogIndex::ZERO || match_index < follower_disk.floor() {
            return Ok(());
        }
        let held = follower_disk.term_at(match_index);
        let sound = match (held, leader_term_at_match) {
            (None, _) => false,
            (Some(held), Some(expected)) => held == expected,
            // The leader compacted it: it was committed, and the follower holds something there.
            (Some(_), None) => true,
        };
        if !sound {
            return violation(
                Invariant::MatchIndex,
                format!(
                    "leader {leader} counts follower {follower} as matching through {match_index} (term {leader_term_at_match:?}), but its disk holds {held:?} there"
                ),
            );
        }
        Ok(())
    }

    /// Lease exclusivity: `node`, leading `term`, served a read by its lease.
    ///
    /// # Errors
    /// The [`Violation`] this observation proves, when it breaks the invariant named above.
    pub fn check_lease_read(&self, node: NodeId, term: Term) -> Result<(), Violation> {
        match self.newest_leader_term() {
            Some(newest) if newest > term => violation(
                Invariant::LeaseExclusivity,
                format!(
                    "node {node}, leader of term {term}, served a read by its lease while node {} leads term {newest}",
                    self.leader_of(newest).map_or(0, NodeId::get)
                ),
            ),
            _ => Ok(()),
        }
    }

    /// The number of `membership` for [`SafetyChecker::observe_committed_configuration`]. A
    /// run sees few distinct configurations, so a linear search is cheap; callers keep the
    /// number while the configuration stays.
    pub fn configuration_id(&mut self, membership: &Membership) -> ConfigurationId {
        let position = self
            .configurations
            .iter()
            .position(|known| known == membership)
            .unwrap_or_else(|| {
                self.configurations.push(membership.clone());
                self.configurations.len() - 1
            });
        ConfigurationId(position)
    }

    /// The configuration numbered `id` by [`SafetyChecker::configuration_id`].
    ///
    /// # Panics
    /// If `id` came from another checker.
    pub fn configuration(&self, id: ConfigurationId) -> &Membership {
        &self.configurations[id.0]
    }

    /// Committed configuration: `node` holds `index` committed, with `configuration` in force
    /// at it. Every node that holds that index committed must show the same one.
    ///
    /// # Errors
    /// The [`Violation`] this observation proves, when it breaks the invariant named above.
    pub fn observe_committed_configuration(
        &mut self,
        node: NodeId,
        index: LogIndex,
        configuration: ConfigurationId,
    ) -> Result<(), Violation> {
        let (first, first_node) = *self
            .configuration_at
            .entry(index)
            .or_insert((configuration.0, node));
        if first != configuration.0 {
            return violation(
                Invariant::CommittedConfiguration,
                format!(
                    "node {node} has {:?} in force at committed index {index}; node {first_node} had {:?} there",
                    self.configurations[configuration.0], self.configurations[first]
                ),
            );
        }
        Ok(())
    }

    /// The reign of `leader` in `term`, started afresh when the term is new.
    fn reign(&mut self, leader: NodeId, term: Term) -> &mut Reign {
        let reign = self.reigns.entry(leader).or_default();
        if reign.term != term {
            *reign = Reign {
                term,
                ..Reign::default()
            };
        }
        reign
    }

    /// Lease refusals: `leader`, leading `term`, sent a message carrying `round`.
    pub fn observe_round_sent(&mut self, leader: NodeId, term: Term, round: u64) {
        let reign = self.reign(leader, term);
        reign.latest_round = reign.latest_round.max(round);
    }

    /// Lease refusals: an answer from `peer` acknowledging `round` reached `leader` while it
    /// led `term`. Every such answer counts, whether or not the engine takes it: counting more
    /// acknowledgements than the leader does can only make the check below judge a read as
    /// confirmed by a round, or hold more recent acknowledgements to it, never fewer.
    pub fn observe_round_acknowledged(
        &mut self,
        leader: NodeId,
        term: Term,
        peer: NodeId,
        round: u64,
    ) {
        let acknowledged = self
            .reign(leader, term)
            .acknowledged
            .entry(peer)
            .or_insert(round);
        *acknowledged = (*acknowledged).max(round);
    }

    /// Lease refusals: `leader`, leading `term` and ready to serve reads (an entry of its term
    /// is committed), received read `read`.
    pub fn observe_read_proposed(&mut self, leader: NodeId, term: Term, read: u64) {
        let reign = self.reign(leader, term);
        let latest = reign.latest_round;
        reign.reads.insert(read, latest);
    }

    /// Lease refusals: `leader`, leading `term` in a configuration whose voters are `voters`,
    /// served `read`. Returns whether the read was judged as a lease read.
    ///
    /// A read proposed while the leader was ready is confirmed in the step that serves it,
    /// either by a round that started after it arrived and that a majority of voters
    /// acknowledged, or by the lease. When no such round is acknowledged, it was the lease:
    /// then every voter that acknowledged the round the lease rests on (the latest one a
    /// majority acknowledged) must still refuse votes, its own included, as `refuses_votes`
    /// says (`None`: the node is down, and votes for no one). Reads proposed before the leader was ready may
    /// have been confirmed in an earlier step than the one that serves them, and are not
    /// judged.
    ///
    /// # Errors
    /// The [`Violation`] this observation proves, when it breaks the invariant named above.
    pub fn check_lease_read_refusals(
        &mut self,
        leader: NodeId,
        term: Term,
        read: u64,
        voters: &std::collections::BTreeSet<NodeId>,
        refuses_votes: impl Fn(NodeId) -> Option<bool>,
    ) -> Result<bool, Violation> {
        let reign = self.reign(leader, term);
        let Some(latest_before_read) = reign.reads.remove(&read) else {
            return Ok(false);
        };
        if voters.is_empty() {
            return Ok(false);
        }
        // Rounds shifted by one, so that zero means "acknowledged nothing" (round 0 is real:
        // a reign's first appends carry it). The leader vouches for every round it sends.
        let mut rounds: Vec<u64> = voters
            .iter()
            .map(|voter| {
                if *voter == leader {
                    u64::MAX
                } else {
                    reign.acknowledged.get(voter).map_or(0, |round| round + 1)
                }
            })
            .collect();
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let Some(majority_round) = rounds[voters.len() / 2].checked_sub(1) else {
            return violation(
                Invariant::LeaseRefusals,
                format!(
                    "leader {leader} of term {term} served read {read} with no round \
                     acknowledged by a majority of voters {voters:?}"
                ),
            )
            .map(|()| true);
        };
        if majority_round > latest_before_read {
            return Ok(false);
        }
        for (voter, round) in &reign.acknowledged {
            if *voter == leader || !voters.contains(voter) || *round < majority_round {
                continue;
            }
            if refuses_votes(*voter) == Some(false) {
                return violation(
                    Invariant::LeaseRefusals,
                    format!(
                        "leader {leader} of term {term} served read {read} by its lease, which \
                         counts voter {voter}'s acknowledgement of round {round} (a majority \
                         acknowledged round {majority_round}, none after the read arrived), \
                         but voter {voter} no longer refuses every vote (its refusal ran out, or it \
                         campaigns)"
                    ),
                )
                .map(|()| true);
            }
        }
        Ok(true)
    }

    /// The highest index known committed (applied) anywhere.
    pub fn max_committed(&self) -> LogIndex {
        self.committed
            .keys()
            .next_back()
            .copied()
            .unwrap_or(LogIndex::ZERO)
    }

    /// How many terms had a leader.
    pub fn terms_with_leader(&self) -> usize {
        self.leaders.len()
    }

    /// The leader of `term`, if one was seen.
    pub fn leader_of(&self, term: Term) -> Option<NodeId> {
        self.leaders.get(&term).copied()
    }

    /// The newest term in which a leader was seen.
    pub fn newest_leader_term(&self) -> Option<Term> {
        self.leaders.keys().next_back().copied()
    }
}
