//! The engine: state, the `step` entry point, and the transitions shared by every role.
//!
//! `step` handles what is common to all messages once (the sender's term, §5.1) and then
//! dispatches to the role-specific handlers in `role/`.

use std::collections::{BTreeMap, VecDeque};

use tracing::{debug, info, warn};

use crate::action::Action;
use crate::config::{ConfigError, EngineConfig};
use crate::entry::LogEntry;
use crate::env::Env;
use crate::event::Event;
use crate::log::RaftLog;
use crate::membership::Membership;
use crate::message::{Message, Rpc};
use crate::metrics::EngineMetrics;
use crate::progress::{Departure, Progress};
use crate::recovery::{RecoveredHardState, RecoveryError};
use crate::role::reads::PendingRead;
use crate::role::snapshot::{IncomingSnapshot, SnapshotData};
use crate::role::transfer::Transfer;
use crate::rounds::RoundClock;
use crate::types::{LogIndex, NodeId, Role, Term};

/// The Raft protocol for one server, as a deterministic state machine.
///
/// Feed it [`Event`]s with [`Engine::step`]; carry out the returned [`Action`]s in order (see
/// the ordering contract on [`Action`]). It performs no I/O, reads no clock and draws
/// randomness only from its [`Env`].
///
/// Invariants (checked after every step in debug builds):
/// - `last_applied <= commit_index <= last_log_index`;
/// - a leader names itself as leader and tracks progress for every other member;
/// - `voted_for` changes only together with `current_term`, or from `None` to a vote.
pub struct Engine<C> {
    pub(crate) id: NodeId,
    pub(crate) config: EngineConfig,
    pub(crate) env: Box<dyn Env>,

    // Persistent state (Figure 2): written through `PersistHardState` / `PersistLogEntries`.
    pub(crate) current_term: Term,
    pub(crate) voted_for: Option<NodeId>,
    pub(crate) log: RaftLog<C>,

    // Volatile state on all servers.
    pub(crate) role: Role,
    pub(crate) leader_id: Option<NodeId>,
    pub(crate) commit_index: LogIndex,
    pub(crate) last_applied: LogIndex,
    pub(crate) election_elapsed: u64,
    pub(crate) randomized_election_timeout: u64,
    pub(crate) heartbeat_elapsed: u64,

    // Membership: the configuration below the live log (from the snapshot or bootstrap), and
    // the configurations installed by entries still in the live log, oldest first. The one in
    // force is the newest (§4.3: a configuration applies as soon as it is in the log).
    pub(crate) base_membership: Membership,
    pub(crate) log_memberships: Vec<(LogIndex, Membership)>,

    // Candidate and pre-candidate state: every answer received this campaign.
    pub(crate) votes: BTreeMap<NodeId, bool>,

    // Leader state, reinitialised on election (Figure 2).
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Peers this leader removed from the configuration, still in `progress` for a few
    /// heartbeat rounds so the entry that removed them, and word that it committed, reach
    /// them: a removed node without both goes on believing it may be a member, and campaigns.
    /// Never counted in any majority (those are taken over the configuration's voters).
    pub(crate) departing: BTreeMap<NodeId, Departure>,
    /// Incremented for every heartbeat broadcast and every round started for reads; echoed
    /// by followers.
    pub(crate) heartbeat_round: u64,
    /// Ticks since this node became leader: the clock the lease is measured on.
    pub(crate) leader_ticks: u64,
    /// When recent rounds were sent, for check-quorum and the lease.
    pub(crate) round_clock: RoundClock,
    /// The latest round started to confirm reads; a new one starts only once a majority
    /// acknowledged it, so reads arriving meanwhile share the next round.
    pub(crate) last_read_round: u64,
    pub(crate) transfer: Option<Transfer>,
    /// Set once this leader sent TimeoutNow: the target may now win without waiting out
    /// anyone's election timeout, so lease reads are off for the rest of the term.
    pub(crate) lease_revoked: bool,
    /// Ticks since this node last heard from the leader of its term (`u64::MAX`: never). It
    /// refuses to help elect anyone else for a minimum election timeout after that, whatever
    /// its role or term since: a leader's lease relies on it (§9, thesis §4.2.3). With leases
    /// on, a freshly started node counts as having just heard from a leader, since it cannot
    /// know whether it acknowledged a lease just before it restarted.
    pub(crate) ticks_since_leader_contact: u64,
    pub(crate) pending_reads: VecDeque<PendingRead>,

    // Snapshots: the latest one held (to serve lagging followers), one being received, and
    // the hint bookkeeping (which applied-entries band was last hinted, and whether the
    // live-log limit was).
    pub(crate) snapshot: Option<SnapshotData>,
    pub(crate) incoming_snapshot: Option<IncomingSnapshot>,
    pub(crate) hinted_band: u64,
    pub(crate) hinted_log_growth: bool,

    // Output of the step in progress, and whether the hard state changed since it was last
    // emitted. The hard state is flushed lazily, right before the first action that depends
    // on it, so a term bump and a vote in one step cost one write.
    pub(crate) out: Vec<Action<C>>,
    pub(crate) hard_state_dirty: bool,
    pub(crate) started: bool,

    pub(crate) metrics: EngineMetrics,
}

impl<C> std::fmt::Debug for Engine<C> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Engine")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("current_term", &self.current_term)
            .field("voted_for", &self.voted_for)
            .field("commit_index", &self.commit_index)
            .field("last_log_index", &self.log.last_index())
            .field("leader_id", &self.leader_id)
            .finish_non_exhaustive()
    }
}

impl<C: Clone> Engine<C> {
    /// An engine for server `id` in a founding cluster whose other voters are `peers`, with the
    /// default [`EngineConfig`] except for the heartbeat interval.
    ///
    /// # Panics
    /// If `heartbeat_ticks` is zero or not below the default minimum election timeout (10
    /// ticks). Use [`Engine::with_config`] for a constructor that returns the error instead.
    pub fn new(
        id: NodeId,
        peers: impl IntoIterator<Item = NodeId>,
        env: impl Env + 'static,
        heartbeat_ticks: u64,
    ) -> Engine<C> {
        let config = EngineConfig {
            heartbeat_interval_ticks: heartbeat_ticks,
            ..EngineConfig::default()
        };
        let membership = Membership::from_voters(peers.into_iter().chain([id]));
        match Engine::with_config(id, membership, env, config) {
            Ok(engine) => engine,
            Err(error) => panic!("Engine::new: {error}"),
        }
    }

    /// An engine for server `id` whose configuration starts as `membership`: the founding
    /// members for a new cluster, or [`Membership::empty`] for a node joining a running one
    /// (it will not campaign until a leader replicates a configuration that makes it a voter).
    ///
    /// # Errors
    /// [`ConfigError`] when `config` fails [`EngineConfig::validate`], or when `membership` is
    /// neither empty nor names `id` ([`ConfigError::NotAMember`]).
    pub fn with_config(
        id: NodeId,
        membership: Membership,
        env: impl Env + 'static,
        config: EngineConfig,
    ) -> Result<Engine<C>, ConfigError> {
        config.validate()?;
        let joining = membership.voters.is_empty() && membership.learners.is_empty();
        if !joining && !membership.contains(id) {
            return Err(ConfigError::NotAMember {
                id,
                voters: membership.voters.iter().copied().collect(),
                learners: membership.learners.iter().copied().collect(),
            });
        }
        let ticks_since_leader_contact = if config.lease_duration_ticks > 0 {
            0
        } else {
            u64::MAX
        };
        let round_clock = RoundClock::new(config.election_timeout_min_ticks);
        let mut engine = Engine {
            id,
            config,
            env: Box::new(env),
            current_term: Term::ZERO,
            voted_for: None,
            log: RaftLog::new(),
            role: Role::Follower,
            leader_id: None,
            commit_index: LogIndex::ZERO,
            last_applied: LogIndex::ZERO,
            election_elapsed: 0,
            randomized_election_timeout: 0,
            heartbeat_elapsed: 0,
            base_membership: membership,
            log_memberships: Vec::new(),
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            departing: BTreeMap::new(),
            heartbeat_round: 0,
            leader_ticks: 0,
            round_clock,
            last_read_round: 0,
            transfer: None,
            lease_revoked: false,
            ticks_since_leader_contact,
            pending_reads: VecDeque::new(),
            snapshot: None,
            incoming_snapshot: None,
            hinted_band: 0,
            hinted_log_growth: false,
            out: Vec::new(),
            hard_state_dirty: false,
            started: false,
            metrics: EngineMetrics::default(),
        };
        engine.reset_election_timer();
        Ok(engine)
    }

    /// Hydrates the engine from durable state after a restart: term, vote, snapshot metadata
    /// and the log after the snapshot. Call it before feeding any event.
    ///
    /// What the host must do around it:
    /// - build the engine with the same configuration it started with: the founding members
    ///   for a founding node, [`Membership::empty`] for a node that joined later. The
    ///   configuration in force after recovery is the newest one in the recovered log, else
    ///   the snapshot's, else that founding one; so without a snapshot the founding members
    ///   are needed to know the configuration below the log;
    /// - restore its state machine from the same snapshot (or start it empty without one);
    /// - expect entries after the snapshot to be applied again: the commit index is not
    ///   stored, so the engine starts with the snapshot's index as both commit and applied
    ///   index, and hands out `Apply` for the rest once it learns they are committed. A state
    ///   machine that persisted its own progress skips entries it has already applied.
    ///
    /// # Errors
    /// [`RecoveryError`] when the stored state is inconsistent (a gap in the log, a term that
    /// goes backwards, an entry from the future) or the engine has already run. Nothing is
    /// changed in that case.
    pub fn recover_from(&mut self, state: RecoveredHardState<C>) -> Result<(), RecoveryError> {
        if self.started {
            return Err(RecoveryError::AlreadyStarted);
        }
        state.validate()?;
        let (snapshot_index, snapshot_term) = state
            .snapshot
            .as_ref()
            .map_or((LogIndex::ZERO, Term::ZERO), |s| {
                (s.last_included_index, s.last_included_term)
            });
        self.current_term = state.current_term;
        self.voted_for = state.voted_for;
        if let Some(snapshot) = state.snapshot {
            self.base_membership = snapshot.membership.clone();
            self.snapshot = Some(SnapshotData {
                index: snapshot.last_included_index,
                term: snapshot.last_included_term,
                membership: snapshot.membership,
                bytes: snapshot.bytes,
            });
        }
        self.log_memberships = state
            .log
            .iter()
            .filter_map(|entry| entry.membership().map(|m| (entry.index, m.clone())))
            .collect();
        self.log = RaftLog::restored(snapshot_index, snapshot_term, state.log);
        self.commit_index = snapshot_index;
        self.last_applied = snapshot_index;
        self.role = Role::Follower;
        self.leader_id = None;
        self.reset_election_timer();
        info!(
            target: "yggr::engine",
            node_id = self.id.get(),
            term = self.current_term.get(),
            last_log_index = self.log.last_index().get(),
            "recovered"
        );
        Ok(())
    }

    /// Advances the protocol by one event and returns what the host must do, in order.
    pub fn step(&mut self, event: Event<C>) -> Vec<Action<C>> {
        self.started = true;
        match event {
            Event::Tick => self.on_tick(),
            Event::Incoming(message) => self.on_message(message),
            Event::ClientProposal(command) => self.on_proposals(vec![command]),
            Event::ClientProposalBatch(commands) => self.on_proposals(commands),
            Event::ProposeConfigChange(change) => self.on_propose_config_change(change),
            Event::TransferLeadership { target } => self.on_transfer_leadership(target),
            Event::ProposeRead { id } => self.on_propose_reads(&[id]),
            Event::ProposeReads { ids } => self.on_propose_reads(&ids),
            Event::SnapshotTaken {
                last_included_index,
                bytes,
            } => self.on_snapshot_taken(last_included_index, bytes),
        }
        self.flush_hard_state();
        self.debug_check_invariants();
        std::mem::take(&mut self.out)
    }

    // ---- Read-only accessors ----

    /// This server's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The role this server plays now.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The latest term this server has seen.
    pub fn current_term(&self) -> Term {
        self.current_term
    }

    /// The candidate this server voted for in the current term.
    pub fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }

    /// The highest index known to be committed.
    pub fn commit_index(&self) -> LogIndex {
        self.commit_index
    }

    /// The highest index handed to the host in an `Apply` (or covered by a snapshot).
    pub fn last_applied(&self) -> LogIndex {
        self.last_applied
    }

    /// The index of the last entry in the log (the snapshot's index when the live log is empty).
    pub fn last_log_index(&self) -> LogIndex {
        self.log.last_index()
    }

    /// The term of the last entry in the log.
    pub fn last_log_term(&self) -> Term {
        self.log.last_term()
    }

    /// The last index covered by a snapshot (zero without one).
    pub fn snapshot_index(&self) -> LogIndex {
        self.log.snapshot_index()
    }

    /// The term of the entry at `index`: the snapshot's term at the snapshot index, `None`
    /// below it (compacted) or past the end of the log.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term_at(index)
    }

    /// The leader of the current term, when known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader_id
    }

    /// Whether this server would now refuse its vote, and its pre-vote, to any candidate that
    /// is not taking over by leadership transfer, because it leads or because fewer than
    /// `election_timeout_min_ticks` of its own ticks have passed since it last heard from a
    /// leader (thesis §4.2.3). Other reasons to refuse (a vote already cast, a log behind this
    /// one) do not count here. A leader's lease rests on this refusal from every voter whose
    /// acknowledgement it counts; a restarted node with leases on refuses for a whole minimum
    /// election timeout, since it cannot know what it acknowledged before.
    pub fn refuses_votes(&self) -> bool {
        self.in_leader_lease()
    }

    /// The configuration in force: the newest one in the log, else the snapshot's or the
    /// bootstrap one.
    pub fn membership(&self) -> &Membership {
        self.log_memberships
            .last()
            .map_or(&self.base_membership, |(_, membership)| membership)
    }

    /// The configuration recorded at or below the commit index: the one that can no longer be
    /// rolled back.
    pub fn committed_membership(&self) -> &Membership {
        self.log_memberships
            .iter()
            .rev()
            .find(|(index, _)| *index <= self.commit_index)
            .map_or(&self.base_membership, |(_, membership)| membership)
    }

    /// The log entry at `index`, if it is in the live log.
    pub fn entry(&self, index: LogIndex) -> Option<&LogEntry<C>> {
        self.log.entry(index)
    }

    /// The entries of the live log, in order.
    pub fn log_entries(&self) -> impl Iterator<Item = &LogEntry<C>> {
        self.log.iter()
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Counters and current gauges.
    pub fn metrics(&self) -> EngineMetrics {
        let mut metrics = self.metrics.clone();
        metrics.current_term = self.current_term;
        metrics.commit_index = self.commit_index;
        metrics.last_applied = self.last_applied;
        metrics.log_len = self.log.len();
        metrics.role_code = self.role.code();
        metrics
    }

    /// Per-follower replication progress as `(match_index, next_index)`, when leader.
    pub fn follower_progress(&self) -> BTreeMap<NodeId, (LogIndex, LogIndex)> {
        self.progress
            .iter()
            .map(|(id, progress)| (*id, (progress.match_index, progress.next_index)))
            .collect()
    }

    // ---- Shared transitions ----

    /// Whether this server may campaign: only voters of its own configuration do.
    pub(crate) fn is_voter(&self) -> bool {
        self.membership().is_voter(self.id)
    }

    pub(crate) fn other_voters(&self) -> Vec<NodeId> {
        let own = self.id;
        self.membership()
            .voters
            .iter()
            .copied()
            .filter(|voter| *voter != own)
            .collect()
    }

    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let min = self.config.election_timeout_min_ticks;
        let max = self.config.election_timeout_max_ticks;
        self.randomized_election_timeout = self.env.random_ticks(min..max);
    }

    /// Whether this server leads, or heard from a leader within the minimum election timeout:
    /// then it refuses to help depose it (thesis §4.2.3). Measured by its own clock since that
    /// contact, not by whether it still knows a leader: adopting a newer term from some other
    /// message forgets the leader but not the promise a lease relies on.
    pub(crate) fn in_leader_lease(&self) -> bool {
        self.role == Role::Leader
            || self.ticks_since_leader_contact < self.config.election_timeout_min_ticks
    }

    /// Moves to `term` (which must not be older) as a follower of `leader`, if known. A newer
    /// term clears the vote (§5.1).
    ///
    /// The election timer keeps running: Figure 2 restarts it only on hearing from the current
    /// leader or granting a vote, and callers that do either restart it themselves. Restarting
    /// it on every newer term would let one candidate with a fast clock, whose requests keep
    /// raising everyone's term without winning their votes, stop every other node from ever
    /// campaigning.
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(
            term >= self.current_term,
            "term invariant: a server's term never decreases"
        );
        let from_term = self.current_term;
        if term > self.current_term {
            self.current_term = term;
            self.voted_for = None;
            self.hard_state_dirty = true;
        }
        let was = self.role;
        if was == Role::Leader {
            self.on_leadership_lost();
        }
        if was == Role::Leader {
            // A leader's election timer was idle; start it afresh.
            self.reset_election_timer();
        }
        self.role = Role::Follower;
        self.leader_id = leader;
        self.votes.clear();
        self.progress.clear();
        self.departing.clear();
        self.trace_became_follower(was, from_term);
    }

    /// Logs a move to follower, unless it is a follower staying in its term. Logging only.
    fn trace_became_follower(&self, was: Role, from_term: Term) {
        if was != Role::Follower || from_term != self.current_term {
            info!(
                target: "yggr::engine",
                node_id = self.id.get(),
                from_term = from_term.get(),
                to_term = self.current_term.get(),
                role = Role::Follower.as_str(),
                "became follower"
            );
        }
    }

    /// Emits the hard state if it changed since it was last emitted.
    pub(crate) fn flush_hard_state(&mut self) {
        if self.hard_state_dirty {
            self.hard_state_dirty = false;
            self.out.push(Action::PersistHardState {
                current_term: self.current_term,
                voted_for: self.voted_for,
            });
        }
    }

    /// Queues an RPC to `to` in our current term, after any pending hard-state write it
    /// depends on.
    pub(crate) fn send(&mut self, to: NodeId, rpc: Rpc<C>) {
        let term = self.current_term;
        self.send_with_term(to, term, rpc);
    }

    /// Queues an RPC carrying `term`; only pre-vote traffic uses a term other than our own.
    pub(crate) fn send_with_term(&mut self, to: NodeId, term: Term, rpc: Rpc<C>) {
        self.flush_hard_state();
        if matches!(rpc, Rpc::AppendEntries(_)) {
            self.metrics.append_entries_sent += 1;
        }
        self.out.push(Action::Send {
            to,
            message: Message {
                from: self.id,
                term,
                rpc,
            },
        });
    }

    /// Appends entries this server created or accepted, records any configuration they carry,
    /// and asks the host to persist them.
    pub(crate) fn append_and_persist(&mut self, entries: Vec<LogEntry<C>>) {
        if entries.is_empty() {
            return;
        }
        for entry in &entries {
            if let Some(membership) = entry.membership() {
                self.log_memberships.push((entry.index, membership.clone()));
            }
            self.log.append(entry.clone());
        }
        self.metrics.entries_appended += entries.len() as u64;
        // Entries of a new term must never reach the disk before that term does: a crash in
        // between would leave a log from the future of the stored term.
        self.flush_hard_state();
        self.out.push(Action::PersistLogEntries(entries));
    }

    /// Drops the log suffix from `from` on, rolling back any configuration it installed.
    pub(crate) fn truncate_log_from(&mut self, from: LogIndex) {
        assert!(
            from > self.commit_index,
            "State Machine Safety: a committed entry is never truncated"
        );
        self.log.truncate_from(from);
        self.log_memberships.retain(|(index, _)| *index < from);
    }

    /// Raises the commit index to `index` and hands the newly committed entries to the host.
    pub(crate) fn advance_commit_to(&mut self, index: LogIndex) {
        if index <= self.commit_index {
            return;
        }
        assert!(
            index <= self.log.last_index(),
            "commit invariant: commit_index <= last_log_index"
        );
        self.metrics.entries_committed += index.distance_from(self.commit_index);
        debug!(
            target: "yggr::engine",
            node_id = self.id.get(),
            term = self.current_term.get(),
            commit_index = index.get(),
            "commit advanced"
        );
        self.commit_index = index;
        self.on_commit_advanced();
        self.apply_committed();
    }

    fn apply_committed(&mut self) {
        if self.commit_index <= self.last_applied {
            return;
        }
        let entries = self
            .log
            .entries_between(self.last_applied.next(), self.commit_index);
        debug_assert_eq!(
            entries.len() as u64,
            self.commit_index.distance_from(self.last_applied)
        );
        self.last_applied = self.commit_index;
        self.metrics.entries_applied += entries.len() as u64;
        self.out.push(Action::Apply(entries));
        self.after_apply();
    }

    // ---- Dispatch ----

    fn on_tick(&mut self) {
        self.ticks_since_leader_contact = self.ticks_since_leader_contact.saturating_add(1);
        match self.role {
            Role::Leader => self.tick_leader(),
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                self.election_elapsed += 1;
                if self.election_elapsed >= self.randomized_election_timeout {
                    self.on_election_timeout();
                }
            }
        }
    }

    fn on_message(&mut self, message: Message<C>) {
        if message.from == self.id {
            warn!(target: "yggr::engine", node_id = self.id.get(), "dropped a message from itself");
            return;
        }
        if message.term > self.current_term && !self.on_higher_term(&message) {
            return;
        }
        if message.term < self.current_term {
            self.on_stale_term(message);
            return;
        }
        let Message { from, term, rpc } = message;
        match rpc {
            Rpc::RequestVote(request) => self.on_vote_request(from, request),
            Rpc::RequestPreVote(request) => self.on_pre_vote_request(from, term, request),
            Rpc::RequestVoteResponse(response) => self.on_vote_response(from, response.granted),
            Rpc::RequestPreVoteResponse(response) => {
                self.on_pre_vote_response(from, term, response.granted);
            }
            Rpc::AppendEntries(request) => self.on_append_entries(from, request),
            Rpc::AppendEntriesResponse(response) => self.on_append_entries_response(from, response),
            Rpc::InstallSnapshot(request) => self.on_install_snapshot(from, request),
            Rpc::InstallSnapshotResponse(response) => {
                self.on_install_snapshot_response(from, response);
            }
            Rpc::TimeoutNow => self.on_timeout_now(from),
        }
    }

    /// A message carries a newer term. Returns whether to go on handling it.
    ///
    /// §5.1: any newer term makes this server adopt it and become a follower, with two
    /// exceptions. Pre-vote traffic never changes terms (thesis §9.6): a pre-vote request is a
    /// question about the next term, and a granted pre-vote response echoes that question. And
    /// a vote request while this server still hears from a live leader is ignored outright,
    /// term included, unless that leader asked for it through TimeoutNow (thesis §4.2.3).
    fn on_higher_term(&mut self, message: &Message<C>) -> bool {
        match &message.rpc {
            Rpc::RequestPreVote(_) => return true,
            Rpc::RequestPreVoteResponse(response) if response.granted => return true,
            Rpc::RequestVote(request) if !request.leadership_transfer && self.in_leader_lease() => {
                debug!(
                    target: "yggr::engine",
                    node_id = self.id.get(),
                    term = self.current_term.get(),
                    candidate = message.from.get(),
                    decision = "rejected",
                    "ignored a vote request while a leader is live"
                );
                self.metrics.votes_denied += 1;
                return false;
            }
            _ => {}
        }
        info!(
            target: "yggr::engine",
            node_id = self.id.get(),
            from_term = self.current_term.get(),
            to_term = message.term.get(),
            role = self.role.as_str(),
            "stepping down for a higher term"
        );
        self.metrics.higher_term_stepdowns += 1;
        // No leader yet: if the message is a leader's, its own handler, next, records it.
        self.become_follower(message.term, None);
        true
    }

    /// A message from an older term: requests get a refusal carrying our term, so a deposed
    /// leader or stale candidate learns it is behind; responses are dropped (§5.1).
    ///
    /// A leader's request is refused with [`AppendOutcome::StaleTerm`], which carries nothing
    /// but the term: by the time it arrives its sender may lead our term itself, and must not
    /// take it for an answer to anything it sent in this term.
    fn on_stale_term(&mut self, message: Message<C>) {
        use crate::message::{AppendEntriesResponse, AppendOutcome, VoteResponse};
        let refusal = match message.rpc {
            Rpc::RequestVote(_) => Some(Rpc::RequestVoteResponse(VoteResponse { granted: false })),
            Rpc::RequestPreVote(_) => {
                Some(Rpc::RequestPreVoteResponse(VoteResponse { granted: false }))
            }
            Rpc::AppendEntries(_) | Rpc::InstallSnapshot(_) => {
                Some(Rpc::AppendEntriesResponse(AppendEntriesResponse {
                    round: 0,
                    outcome: AppendOutcome::StaleTerm,
                }))
            }
            _ => None,
        };
        if let Some(rpc) = refusal {
            self.send(message.from, rpc);
        }
    }

    /// Checks the invariants written on [`Engine`]; compiled into debug and test builds only.
    fn debug_check_invariants(&self) {
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    /// Asserts the engine's local invariants. Cheap; the simulator calls it after every step.
    ///
    /// # Panics
    /// When an invariant is broken, naming it.
    pub fn check_invariants(&self) {
        assert!(
            self.last_applied <= self.commit_index,
            "invariant: last_applied <= commit_index"
        );
        assert!(
            self.commit_index <= self.log.last_index(),
            "invariant: commit_index <= last_log_index"
        );
        assert!(
            self.log.snapshot_index() <= self.commit_index,
            "invariant: the snapshot floor is committed"
        );
        if self.role == Role::Leader {
            assert_eq!(
                self.leader_id,
                Some(self.id),
                "invariant: a leader knows it leads"
            );
            // A leader that is a majority on its own acknowledges its own read rounds: a read
            // it leaves unconfirmed would wait for an answer no one will send.
            if self.membership().voters.len() == 1 && self.is_voter() {
                assert!(
                    self.pending_reads.iter().all(
                        |read| read.confirmation == crate::role::reads::Confirmation::Confirmed
                    ),
                    "invariant: a leader that alone is a majority leaves no read unconfirmed"
                );
            }
            for (peer, progress) in &self.progress {
                assert!(
                    *peer != self.id,
                    "invariant: a leader tracks no progress for itself"
                );
                assert!(
                    progress.match_index < progress.next_index,
                    "invariant: match_index < next_index"
                );
                assert!(
                    progress.match_index <= self.log.last_index(),
                    "invariant: a follower never matches past the leader's log"
                );
            }
        } else {
            assert!(
                self.progress.is_empty(),
                "invariant: only a leader tracks progress"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::RandomEnv;

    fn engine() -> Engine<u64> {
        let id = NodeId::new(1).expect("non-zero");
        Engine::new(id, [], RandomEnv::seeded(1), 3)
    }

    /// The checker the simulator runs after every step must fire on a broken engine, or the
    /// simulator's "engine invariant" check proves nothing.
    #[test]
    fn check_invariants_fires_on_a_commit_index_past_the_log() {
        let mut broken = engine();
        broken.check_invariants();
        broken.commit_index = LogIndex::new(5);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            broken.check_invariants();
        }));
        assert!(
            outcome.is_err(),
            "a commit index past the log went unnoticed"
        );
    }

    #[test]
    fn check_invariants_fires_on_a_follower_tracking_progress() {
        let mut broken = engine();
        broken.progress.insert(
            NodeId::new(2).expect("non-zero"),
            crate::progress::Progress::new(LogIndex::new(1), 0),
        );
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            broken.check_invariants();
        }));
        assert!(outcome.is_err(), "progress on a follower went unnoticed");
    }
}
