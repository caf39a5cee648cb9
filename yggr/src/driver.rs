//! The driver: one task that owns the engine, its storage and its transport, and carries out
//! the engine's actions in order.
//!
//! Each iteration takes everything that is waiting (client requests, peer messages, due
//! ticks, reports from the apply task), steps the engine through all of it, then:
//! 1. makes every write of the iteration durable in one [`Storage::persist`] call (group
//!    commit: one fsync for everything gathered);
//! 2. only then carries out the rest in order: sends (one AppendEntries per peer for all the
//!    proposals gathered), applies and reads to the apply task, answers to clients.
//!
//! Time comes from a clock read at every iteration: ticks that fell due while the task was
//! busy (or the process was stopped) are delivered before anything else is handled, so a
//! leader never serves a lease read on a clock that stood still.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use yggr_core::{
    Action, ConfigChange, ConfigChangeRejection, Engine, Event, LogIndex, MembershipChangeError,
    NodeId, ReadFailure, RecoveredSnapshot, Role, Rpc, Term,
};

use crate::apply::{ApplyJob, ApplyReport, ReadJob, Waiter};
use crate::config::{Config, MAX_PARKED_READS};
use crate::error::{
    MembershipError, ProposeError, ReadError, ShutdownError, TransferLeadershipError,
};
use crate::state_machine::{SnapshotError, StateMachine};
use crate::status::{FollowerProgress, NodeMetrics, ReplicationMetrics, Status};
use crate::storage::{Storage, StorageWrite};
use crate::transport::Transport;

/// The most requests or messages taken from one source in one iteration, so that one busy
/// source cannot starve the others or grow a batch without bound.
const MAX_PER_SOURCE: usize = 4096;

/// What handles ask the driver.
pub(crate) enum Request<S: StateMachine> {
    /// One command to replicate and whoever waits for it (the common case, without the two
    /// allocations of a batch).
    ProposeOne {
        command: Bytes,
        waiter: Waiter<S>,
    },
    /// Commands to replicate, each with whoever waits for it.
    Propose {
        commands: Vec<Bytes>,
        waiters: Vec<Waiter<S>>,
    },
    /// A linearizable read.
    Read(Box<dyn ReadJob<S>>),
    /// A membership change; answered once it has committed.
    Membership {
        change: ConfigChange,
        reply: oneshot::Sender<Result<(), MembershipError>>,
    },
    /// Start a leadership transfer.
    Transfer {
        target: NodeId,
        reply: oneshot::Sender<Result<(), TransferLeadershipError>>,
    },
    /// Report status, or metrics.
    Status(oneshot::Sender<Status>),
    Metrics(oneshot::Sender<NodeMetrics>),
    /// Take a snapshot now.
    TriggerSnapshot(oneshot::Sender<Result<(), SnapshotError>>),
    /// Drain and stop.
    Shutdown(oneshot::Sender<Result<(), ShutdownError>>),
}

/// The node's lifecycle, shared with its handles.
pub(crate) mod lifecycle {
    /// Running normally.
    pub(crate) const RUNNING: u8 = 0;
    /// Draining after a shutdown request: new requests are refused.
    pub(crate) const SHUTTING_DOWN: u8 = 1;
    /// Stopped cleanly.
    pub(crate) const STOPPED: u8 = 2;
    /// Stopped after a fatal storage or state-machine error.
    pub(crate) const FATAL: u8 = 3;
}

/// What the driver shares with every handle, without a round trip.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The leader as last seen, `0` for none.
    pub(crate) leader: AtomicU64,
    /// One of [`lifecycle`]'s values.
    pub(crate) lifecycle: AtomicU8,
    /// The last index the state machine has applied (or restored a snapshot through),
    /// published by the apply task after each job. The engine's own applied index runs ahead
    /// of it by whatever waits in the apply channel.
    pub(crate) state_machine_applied: AtomicU64,
    /// Snapshots taken and stored, and snapshots that failed, for `NodeMetrics`.
    pub(crate) snapshots_taken: AtomicU64,
    pub(crate) snapshots_failed: AtomicU64,
}

impl Shared {
    /// `applied`: what the state machine reflects at start (the snapshot it was restored from).
    pub(crate) fn new(applied: LogIndex) -> Shared {
        Shared {
            leader: AtomicU64::new(0),
            lifecycle: AtomicU8::new(lifecycle::RUNNING),
            state_machine_applied: AtomicU64::new(applied.get()),
            snapshots_taken: AtomicU64::new(0),
            snapshots_failed: AtomicU64::new(0),
        }
    }

    pub(crate) fn lifecycle(&self) -> u8 {
        self.lifecycle.load(Ordering::Acquire)
    }

    /// The last index the state machine has applied.
    pub(crate) fn state_machine_applied(&self) -> LogIndex {
        LogIndex::new(self.state_machine_applied.load(Ordering::Acquire))
    }
}

/// An appended entry someone waits on.
///
/// Its waiter learns the entry's fate from what commits at `index`: the same term means it
/// committed (answered with the state machine's response once applied), another term means
/// it was replaced and never will (a definite refusal). A leader that steps down keeps its
/// pending entries and goes on learning their fate as a follower; a local truncation of the
/// entry proves nothing, since another node holding it may still win and commit it.
struct Pending<S: StateMachine> {
    index: LogIndex,
    term: Term,
    waiter: PendingWaiter<S>,
    /// Set once the leader that appended the entry lost its role: the tick after which the
    /// waiter is told that the outcome is unknown, if its fate was not learned by then.
    orphaned_until: Option<u64>,
}

enum PendingWaiter<S: StateMachine> {
    Entry(Waiter<S>),
    Membership(oneshot::Sender<Result<(), MembershipError>>),
}

impl<S: StateMachine> PendingWaiter<S> {
    /// Answers that the entry's fate is not known: it may or may not commit.
    fn outcome_unknown(self) {
        match self {
            PendingWaiter::Entry(waiter) => waiter.fail(ProposeError::OutcomeUnknown),
            PendingWaiter::Membership(reply) => {
                let _ = reply.send(Err(MembershipError::OutcomeUnknown));
            }
        }
    }

    /// Answers that the entry will never commit: another entry committed at its index.
    fn refused(self, leader_hint: Option<NodeId>) {
        match self {
            PendingWaiter::Entry(waiter) => waiter.fail(match leader_hint {
                Some(leader_hint) => ProposeError::NotLeader { leader_hint },
                None => ProposeError::NoLeader,
            }),
            PendingWaiter::Membership(reply) => {
                let _ = reply.send(Err(match leader_hint {
                    Some(leader_hint) => MembershipError::NotLeader { leader_hint },
                    None => MembershipError::NoLeader,
                }));
            }
        }
    }

    /// Answers that the node stopped for good after a fatal error.
    fn fatal(self) {
        match self {
            PendingWaiter::Entry(waiter) => waiter.fail(ProposeError::Fatal),
            PendingWaiter::Membership(reply) => {
                let _ = reply.send(Err(MembershipError::Fatal));
            }
        }
    }
}

/// Snapshots for compaction, taken on the apply task one at a time.
///
/// A snapshot goes through three steps, none of which holds up heartbeats or replication:
/// the apply task takes it; the engine compacts its log in memory and the storage prepares
/// the bytes on the side ([`Storage::prepare_snapshot`]); then the next iteration's write
/// stores it. Until then storage holds the previous snapshot and the whole log, which is
/// what a crash in between recovers.
#[derive(Default)]
struct Snapshots {
    /// A snapshot is wanted (a hint, a request, a retry) and not yet handed to the apply task.
    wanted: bool,
    /// One is being taken, prepared or stored: no other is started meanwhile.
    in_flight: bool,
    /// Prepared and ready to store with the next iteration's write.
    ready_to_store: Option<RecoveredSnapshot>,
    /// The index of the newest snapshot handed to storage, whichever way it came (taken here
    /// or received from a leader): an older one prepared meanwhile is not stored over it.
    stored_index: LogIndex,

    /// After a refused snapshot: the tick from which to ask again, and the applied index at
    /// the refusal (another `max_log_entries` applied also asks again).
    retry_at: Option<(u64, LogIndex)>,
    /// Callers of `trigger_snapshot` waiting for the snapshot being taken.
    waiting_for_current: Vec<oneshot::Sender<Result<(), SnapshotError>>>,
    /// Callers that arrived while one was being taken: they wait for the next.
    waiting_for_next: Vec<oneshot::Sender<Result<(), SnapshotError>>>,
    /// Callers whose snapshot was taken, answered once the iteration's write is durable.
    taken: Vec<oneshot::Sender<Result<(), SnapshotError>>>,
}

/// A snapshot whose bytes the storage is writing on the side.
struct Preparation<E> {
    snapshot: RecoveredSnapshot,
    /// When the storage was handed it.
    started: Instant,
    work: Pin<Box<dyn Future<Output = Result<(), E>> + Send>>,
}

/// Why the driver stops.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// Every handle is gone, or a shutdown request drained: stop cleanly.
    Clean,
    /// Storage or the state machine failed.
    Fatal,
}

pub(crate) struct Driver<S: StateMachine, St: Storage, T: Transport> {
    id: NodeId,
    engine: Engine<Bytes>,
    storage: St,
    transport: T,
    config: Config,
    requests: mpsc::Receiver<Request<S>>,
    apply: Option<mpsc::Sender<ApplyJob<S>>>,
    /// Jobs for the apply task that did not fit its channel, oldest first. While any wait
    /// here, every new job queues behind them, so the apply task sees jobs in order; the
    /// driver meanwhile goes on ticking, replicating and answering (a slow state machine must
    /// not cost the node its leadership). See [`Driver::apply_backlog_limit`].
    apply_backlog: VecDeque<ApplyJob<S>>,
    apply_task: Option<oneshot::Receiver<()>>,
    reports: mpsc::UnboundedReceiver<ApplyReport>,
    shared: Arc<Shared>,
    /// Entries appended for a waiter, sorted by index (ties in the order they were appended).
    pending: VecDeque<Pending<S>>,
    /// The earliest `orphaned_until` among `pending`, if any entry is orphaned.
    earliest_orphan_deadline: Option<u64>,
    /// Reads handed to the engine, by id; a `BTreeMap` so that failing them all goes in one
    /// fixed order.
    reads: BTreeMap<u64, Box<dyn ReadJob<S>>>,
    next_read: u64,
    /// Proposals held back to form a larger batch (`max_batch_delay_ticks`).
    held: Vec<(Bytes, Waiter<S>)>,
    held_since_tick: u64,
    /// Writes and reads a leader set aside while the apply backlog is full, in arrival order;
    /// other requests (status, membership, shutdown) are still served meanwhile, and a
    /// non-leader parks nothing (it can only redirect). Bounded: writes by the in-flight limit
    /// (their waiters hold its units), reads by [`MAX_PARKED_READS`].
    parked: VecDeque<Request<S>>,
    /// How many of `parked` are reads.
    parked_reads: usize,
    snapshots: Snapshots,
    preparation: Option<Preparation<St::Error>>,
    /// Ticks delivered so far.
    ticks: u64,
    /// When the next tick falls due.
    next_tick: Instant,
    /// Whether the ticks that fell due were delivered since the driver last waited.
    /// Invariant: set whenever a message is stepped. A message stepped at a stale tick count
    /// looks a whole stall old once the owed ticks arrive: a leader's fresh contact taken
    /// for an expired one, and a vote granted an election timeout early.
    ticks_caught_up: bool,
    /// Set by a shutdown request: the tick by which draining gives up, and who to tell.
    draining: Option<(u64, oneshot::Sender<Result<(), ShutdownError>>)>,
    /// While a draining leader hands over: the tick by which it stops waiting for its
    /// successor to take over.
    handover_until: Option<u64>,
    /// The actions of the iteration, in order.
    actions: Vec<Action<Bytes>>,
}

/// The channels and tasks a driver works with, from `Node::start`.
pub(crate) struct Wiring<S: StateMachine> {
    pub(crate) requests: mpsc::Receiver<Request<S>>,
    pub(crate) apply: mpsc::Sender<ApplyJob<S>>,
    /// Fires (or closes) once the apply loop has stopped; awaited at shutdown.
    pub(crate) apply_task: oneshot::Receiver<()>,
    pub(crate) reports: mpsc::UnboundedReceiver<ApplyReport>,
    pub(crate) shared: Arc<Shared>,
}

impl<S: StateMachine, St: Storage, T: Transport> Driver<S, St, T> {
    /// A driver for `engine`, ready to run.
    pub(crate) fn new(
        engine: Engine<Bytes>,
        storage: St,
        transport: T,
        config: Config,
        wiring: Wiring<S>,
    ) -> Driver<S, St, T> {
        let tick_interval = config.tick_interval;
        Driver {
            id: engine.id(),
            engine,
            storage,
            transport,
            config,
            requests: wiring.requests,
            apply: Some(wiring.apply),
            apply_backlog: VecDeque::new(),
            apply_task: Some(wiring.apply_task),
            reports: wiring.reports,
            shared: wiring.shared,
            pending: VecDeque::new(),
            earliest_orphan_deadline: None,
            reads: BTreeMap::new(),
            next_read: 1,
            held: Vec::new(),
            held_since_tick: 0,
            parked: VecDeque::new(),
            parked_reads: 0,
            snapshots: Snapshots::default(),
            preparation: None,
            ticks: 0,
            next_tick: Instant::now() + tick_interval,
            ticks_caught_up: true,
            draining: None,
            handover_until: None,
            actions: Vec::new(),
        }
    }

    /// Runs until every handle is gone, a shutdown drained, or a fatal error.
    pub(crate) async fn run(mut self) {
        let mut requests = Vec::new();
        let mut handles_remain = true;
        let stop = loop {
            self.deliver_due_ticks();
            if let Some(stop) = self.finish_draining() {
                break stop;
            }
            let next_tick = self.next_tick;
            // Time passes while the driver waits: until it delivers the ticks that fell due
            // meanwhile, no message may be stepped.
            self.ticks_caught_up = false;
            tokio::select! {
                biased;
                // First: it completes once per snapshot, and behind a steady stream of
                // requests or messages a later branch might never be polled at all.
                prepared = prepared(&mut self.preparation) => {
                    self.deliver_due_ticks();
                    self.on_snapshot_prepared(prepared);
                }
                received = self.requests.recv_many(&mut requests, MAX_PER_SOURCE),
                    if handles_remain =>
                {
                    if received == 0 {
                        // Every handle is gone: nobody can ask anything any more.
                        handles_remain = false;
                        if self.draining.is_none() {
                            break Stop::Clean;
                        }
                    }
                }
                message = self.transport.recv() => {
                    let Some(message) = message else { break Stop::Fatal };
                    // Woken after a stall, the time that passed comes first: a message
                    // stepped at a stale tick count would look a whole stall old once the
                    // ticks arrive (a fresh leader contact taken for an expired one).
                    self.deliver_due_ticks();
                    self.step(Event::Incoming(message));
                }
                report = self.reports.recv() => {
                    // The apply task holds the only report sender: `None` means it is gone,
                    // and nothing can be applied any more.
                    let Some(report) = report else { break Stop::Fatal };
                    self.deliver_due_ticks();
                    if let Some(stop) = self.on_report(report) {
                        break stop;
                    }
                }
                open = has_room(self.apply.as_ref()), if !self.apply_backlog.is_empty() => {
                    // `feed_apply_backlog` below fills the room.
                    if !open {
                        break Stop::Fatal;
                    }
                }
                () = tokio::time::sleep_until(next_tick) => {}
            }
            if let Err(stop) = self.feed_apply_backlog() {
                break stop;
            }
            // Take everything else already waiting, so that it all shares one write and one
            // round of messages; due ticks first, as everywhere.
            self.deliver_due_ticks();
            while let Some(message) = self.transport.try_recv() {
                self.step(Event::Incoming(message));
                if self.actions.len() > MAX_PER_SOURCE {
                    break;
                }
            }
            // Reports too: under steady requests and messages the biased select may not reach
            // them.
            let mut stopping = None;
            while let Ok(report) = self.reports.try_recv() {
                if let Some(stop) = self.on_report(report) {
                    stopping = Some(stop);
                    break;
                }
            }
            if let Some(stop) = stopping {
                break stop;
            }
            if requests.is_empty() {
                while let Ok(request) = self.requests.try_recv() {
                    requests.push(request);
                    if requests.len() >= MAX_PER_SOURCE {
                        break;
                    }
                }
            }
            self.deliver_due_ticks();
            self.on_requests(&mut requests);
            if let Err(stop) = self.carry_out().await {
                break stop;
            }
        };
        self.stop(stop).await;
    }

    // ---- Time ----

    /// Delivers every tick that fell due, however many (after a stall, the engine sees the
    /// time that passed).
    fn deliver_due_ticks(&mut self) {
        let now = Instant::now();
        while self.next_tick <= now {
            self.ticks += 1;
            self.step(Event::Tick);
            // `Config::validate` bounds the interval, so this stays far from overflowing.
            self.next_tick += self.config.tick_interval;
        }
        self.ticks_caught_up = true;
        self.maybe_retry_compaction();
        self.expire_orphans();
    }

    // ---- Stepping ----

    /// Steps the engine, keeping its actions for `carry_out`.
    fn step(&mut self, event: Event<Bytes>) {
        if matches!(event, Event::Incoming(_)) && !self.ticks_caught_up {
            crate::sys::invariant_broken(
                "a message is stepped only after the ticks that fell due while the driver waited",
            );
        }
        let actions = self.engine.step(event);
        self.actions.extend(actions);
    }

    /// Steps `event` and returns what it emitted that answers the request itself (a redirect
    /// or a refusal), leaving everything else for `carry_out`.
    fn step_request(&mut self, event: Event<Bytes>) -> Option<Action<Bytes>> {
        let start = self.actions.len();
        self.step(event);
        let position = self.actions[start..].iter().position(|action| {
            matches!(
                action,
                Action::Redirect { .. }
                    | Action::TransferInProgress { .. }
                    | Action::ConfigChangeRejected { .. }
                    | Action::TransferRejected { .. }
            )
        })?;
        Some(self.actions.remove(start + position))
    }

    fn leader_hint(&self) -> Option<NodeId> {
        self.engine.leader().filter(|leader| *leader != self.id)
    }

    fn on_requests(&mut self, requests: &mut Vec<Request<S>>) {
        // Only a leader sets writes and reads aside: anywhere else they end in a redirect,
        // which costs the state machine nothing, so they are answered at once.
        let leads = self.engine.role() == Role::Leader;
        if leads && self.apply_backlog_full() && self.draining.is_none() {
            // Set writes and reads aside until the state machine catches up; serve the rest.
            let mut others = Vec::new();
            for request in requests.drain(..) {
                match request {
                    Request::Read(read) if self.parked_reads >= MAX_PARKED_READS => {
                        read.fail(ReadError::Busy);
                    }
                    Request::Read(_) => {
                        self.parked_reads += 1;
                        self.parked.push_back(request);
                    }
                    Request::ProposeOne { .. } | Request::Propose { .. } => {
                        self.parked.push_back(request);
                    }
                    other => others.push(other),
                }
            }
            *requests = others;
        } else if !self.parked.is_empty() {
            let mut resumed: Vec<Request<S>> = self.parked.drain(..).collect();
            self.parked_reads = 0;
            resumed.append(requests);
            *requests = resumed;
        }
        let mut commands = Vec::new();
        let mut waiters = Vec::new();
        let mut reads = Vec::new();
        for request in requests.drain(..) {
            if self.draining.is_some() {
                refuse_when_stopped(request, &self.engine, &self.shared, None);
                continue;
            }
            match request {
                Request::ProposeOne { command, waiter } => {
                    commands.push(command);
                    waiters.push(waiter);
                }
                Request::Propose {
                    commands: more,
                    waiters: more_waiters,
                } => {
                    commands.extend(more);
                    waiters.extend(more_waiters);
                }
                Request::Read(job) => {
                    let id = self.next_read;
                    self.next_read += 1;
                    self.reads.insert(id, job);
                    reads.push(id);
                }
                Request::Membership { change, reply } => self.propose_change(change, reply),
                Request::Transfer { target, reply } => self.transfer(target, reply),
                Request::Status(reply) => {
                    let _ = reply.send(status(&self.engine, &self.shared));
                }
                Request::Metrics(reply) => {
                    let _ = reply.send(metrics(&self.engine, &self.shared));
                }
                Request::TriggerSnapshot(reply) => {
                    // A snapshot already being taken may predate writes this caller saw
                    // acknowledged: wait for one that starts after the request.
                    self.snapshots.waiting_for_next.push(reply);
                    self.snapshots.wanted = true;
                }
                Request::Shutdown(reply) => self.begin_draining(reply),
            }
        }
        if !reads.is_empty() {
            self.step(Event::ProposeReads { ids: reads });
        }
        self.held.extend(commands.into_iter().zip(waiters));
        if self.held.is_empty() {
            self.held_since_tick = self.ticks;
        } else if self.batch_is_due() {
            self.propose_held();
        }
    }

    /// Whether held proposals go out now: always without a batch delay; with one, once
    /// enough are held or the oldest has waited long enough.
    fn batch_is_due(&self) -> bool {
        let delay = self.config.max_batch_delay_ticks;
        delay == 0
            || self.held.len() >= self.config.max_batch_entries
            || self.ticks.saturating_sub(self.held_since_tick) >= delay
    }

    /// Proposes every held command in one batch: one append, one write, one message per peer.
    fn propose_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.held_since_tick = self.ticks;
        let (commands, waiters): (Vec<Bytes>, Vec<Waiter<S>>) = held.into_iter().unzip();
        let count = commands.len() as u64;
        let before = self.engine.last_log_index();
        match self.step_request(Event::ClientProposalBatch(commands)) {
            Some(Action::TransferInProgress { target }) => {
                fail_all(
                    waiters,
                    ProposeError::NotLeader {
                        leader_hint: target,
                    },
                );
            }
            Some(_) => {
                let error = match self.leader_hint() {
                    Some(leader_hint) => ProposeError::NotLeader { leader_hint },
                    None => ProposeError::NoLeader,
                };
                fail_all(waiters, error);
            }
            None => {
                debug_assert_eq!(self.engine.last_log_index(), before.plus(count));
                let term = self.engine.current_term();
                for (offset, waiter) in waiters.into_iter().enumerate() {
                    self.add_pending(
                        before.plus(offset as u64 + 1),
                        term,
                        PendingWaiter::Entry(waiter),
                    );
                }
            }
        }
    }

    fn propose_change(
        &mut self,
        change: ConfigChange,
        reply: oneshot::Sender<Result<(), MembershipError>>,
    ) {
        match self.step_request(Event::ProposeConfigChange(change)) {
            Some(Action::ConfigChangeRejected { reason, .. }) => {
                let _ = reply.send(Err(membership_error(reason)));
            }
            Some(_) => {
                let _ = reply.send(Err(match self.leader_hint() {
                    Some(leader_hint) => MembershipError::NotLeader { leader_hint },
                    None => MembershipError::NoLeader,
                }));
            }
            None => self.add_pending(
                self.engine.last_log_index(),
                self.engine.current_term(),
                PendingWaiter::Membership(reply),
            ),
        }
    }

    fn transfer(
        &mut self,
        target: NodeId,
        reply: oneshot::Sender<Result<(), TransferLeadershipError>>,
    ) {
        let outcome = match self.step_request(Event::TransferLeadership { target }) {
            None => Ok(()),
            Some(Action::TransferRejected { .. }) => Err(TransferLeadershipError::InvalidTarget),
            Some(_) => Err(match self.leader_hint() {
                Some(leader_hint) => TransferLeadershipError::NotLeader { leader_hint },
                None => TransferLeadershipError::NoLeader,
            }),
        };
        let _ = reply.send(outcome);
    }

    /// Hands a wanted snapshot to the apply task unless one is being taken; retried every
    /// iteration while the apply channel is full.
    fn dispatch_snapshot(&mut self) {
        if !self.snapshots.wanted || self.snapshots.in_flight {
            return;
        }
        let Some(apply) = &self.apply else { return };
        if apply.try_send(ApplyJob::Snapshot).is_ok() {
            self.snapshots.wanted = false;
            self.snapshots.in_flight = true;
            let next = std::mem::take(&mut self.snapshots.waiting_for_next);
            self.snapshots.waiting_for_current.extend(next);
        }
    }

    /// With `max_log_entries` set, the engine hints once when the log outgrows it; if that
    /// snapshot was refused, ask again after an election timeout or once another
    /// `max_log_entries` entries were applied, whichever comes first, while the log is still
    /// too long and something was applied since the last snapshot. (Hints from
    /// `snapshot_hint_threshold_entries` come again by themselves.)
    fn maybe_retry_compaction(&mut self) {
        let limit = self.config.max_log_entries;
        let Some((retry_tick, refused_at)) = self.snapshots.retry_at else {
            return;
        };
        if self.snapshots.in_flight || self.snapshots.wanted {
            return;
        }
        let applied = self.engine.last_applied();
        let due = self.ticks >= retry_tick || applied.distance_from(refused_at) >= limit.max(1);
        if !due {
            return;
        }
        let live = self
            .engine
            .last_log_index()
            .distance_from(self.engine.snapshot_index());
        if limit > 0 && live > limit && applied > self.engine.snapshot_index() {
            self.snapshots.wanted = true;
        }
        self.snapshots.retry_at = None;
    }

    fn on_report(&mut self, report: ApplyReport) -> Option<Stop> {
        match report {
            ApplyReport::Snapshot { index, bytes, took } => {
                self.snapshots.retry_at = None;
                let compacting = Instant::now();
                let size = bytes.len();
                let start = self.actions.len();
                self.step(Event::SnapshotTaken {
                    last_included_index: index,
                    bytes,
                });
                // The engine compacted in memory; its storage write is taken out of the
                // iteration and prepared on the side.
                let persist = self.actions[start..]
                    .iter()
                    .position(|action| matches!(action, Action::PersistSnapshot { .. }));
                match persist
                    .and_then(|position| snapshot_write(&self.actions.remove(start + position)))
                {
                    Some(StorageWrite::Snapshot(snapshot)) => {
                        debug!(
                            target: "yggr::node",
                            node_id = self.id.get(),
                            index = index.get(),
                            bytes = size,
                            state_machine_us = took.as_micros() as u64,
                            compact_us = compacting.elapsed().as_micros() as u64,
                            "snapshot taken; preparing it"
                        );
                        let work = Box::pin(self.storage.prepare_snapshot(&snapshot));
                        self.preparation = Some(Preparation {
                            snapshot,
                            started: Instant::now(),
                            work,
                        });
                    }
                    _ => {
                        // Nothing to store (the engine already had this one): done.
                        self.snapshots.in_flight = false;
                        let taken = std::mem::take(&mut self.snapshots.waiting_for_current);
                        self.snapshots.taken.extend(taken);
                    }
                }
                None
            }
            ApplyReport::SnapshotFailed(error) => {
                self.snapshot_failed(&error);
                None
            }
            ApplyReport::Fatal(reason) => {
                error!(target: "yggr::node", node_id = self.id.get(), %reason, "the state machine cannot go on");
                Some(Stop::Fatal)
            }
        }
    }

    /// The storage finished preparing a snapshot: store it with the next write, or give up
    /// on it.
    fn on_snapshot_prepared<E: std::fmt::Display>(&mut self, prepared: Result<(), E>) {
        let Some(preparation) = self.preparation.take() else {
            return;
        };
        match prepared {
            Ok(()) => {
                debug!(
                    target: "yggr::node",
                    node_id = self.id.get(),
                    index = preparation.snapshot.last_included_index.get(),
                    prepare_us = preparation.started.elapsed().as_micros() as u64,
                    "snapshot prepared"
                );
                self.snapshots.ready_to_store = Some(preparation.snapshot);
            }
            Err(error) => self.snapshot_failed(&SnapshotError::new(format!(
                "storage could not prepare the snapshot through {}: {error}",
                preparation.snapshot.last_included_index
            ))),
        }
    }

    /// A snapshot was refused by the state machine or could not be prepared: nothing stored
    /// changed; ask again later.
    fn snapshot_failed(&mut self, error: &SnapshotError) {
        self.snapshots.in_flight = false;
        self.shared.snapshots_failed.fetch_add(1, Ordering::Relaxed);
        self.snapshots.retry_at = Some((
            self.ticks
                .saturating_add(self.config.election_timeout_max_ticks),
            self.engine.last_applied(),
        ));
        warn!(target: "yggr::node", node_id = self.id.get(), %error, "snapshot failed; another will be taken later");
        for waiter in self.snapshots.waiting_for_current.drain(..) {
            let _ = waiter.send(Err(error.clone()));
        }
    }

    /// The prepared snapshot's write, first in the iteration's writes, unless a newer
    /// snapshot was stored meanwhile (one received from a leader).
    fn prepared_snapshot_write(&mut self) -> Option<StorageWrite> {
        let snapshot = self.snapshots.ready_to_store.take()?;
        self.snapshots.in_flight = false;
        let taken = std::mem::take(&mut self.snapshots.waiting_for_current);
        self.snapshots.taken.extend(taken);
        if snapshot.last_included_index <= self.snapshots.stored_index {
            return None;
        }
        self.snapshots.stored_index = snapshot.last_included_index;
        self.shared.snapshots_taken.fetch_add(1, Ordering::Relaxed);
        Some(StorageWrite::Snapshot(snapshot))
    }

    // ---- Carrying out ----

    /// Makes the iteration's writes durable, then performs everything else in order.
    async fn carry_out(&mut self) -> Result<(), Stop> {
        let was_leader = self.shared.leader.load(Ordering::Relaxed) == self.id.get();
        // Entries move into the storage write rather than being copied; everything else keeps
        // its order for after the write.
        let mut writes: Vec<StorageWrite> = self.prepared_snapshot_write().into_iter().collect();
        let mut actions = Vec::with_capacity(self.actions.len());
        for action in self.actions.drain(..) {
            match action {
                Action::PersistLogEntries(entries) => writes.push(StorageWrite::Entries(entries)),
                Action::PersistHardState {
                    current_term,
                    voted_for,
                } => writes.push(StorageWrite::HardState {
                    current_term,
                    voted_for,
                }),
                Action::PersistSnapshot {
                    last_included_index,
                    ..
                } => {
                    // Received from a leader: stored now (it is acknowledged only once durable).
                    self.snapshots.stored_index =
                        self.snapshots.stored_index.max(last_included_index);
                    writes.extend(snapshot_write(&action));
                    actions.push(action);
                }
                other => actions.push(other),
            }
        }
        let mut sent = false;
        // The first index this iteration writes: everything before it is durable already.
        let first_written = writes
            .iter()
            .filter_map(|write| match write {
                StorageWrite::Entries(entries) => entries.first().map(|entry| entry.index),
                _ => None,
            })
            .min();
        if self.engine.role() == Role::Leader
            && !writes.is_empty()
            && writes
                .iter()
                .all(|write| matches!(write, StorageWrite::Entries(_)))
            // Not when the commit index already covers what is being written (a lone voter
            // commits on its own append): the requests would carry a commit index that no
            // disk backs yet, and a learner could apply an entry the leader then loses.
            && first_written.is_some_and(|first| self.engine.commit_index() < first)
        {
            // A leader's own log write may overlap replicating it (thesis §10.2.1): its
            // AppendEntries go out before its fsync. Safe because the acknowledgements that
            // could commit these entries are only read in a later iteration, after the write
            // below is durable, so the leader never counts itself before its disk does. Only
            // entries: a new term or vote must be durable before any message carries it.
            let mut rest = Vec::with_capacity(actions.len());
            for action in actions {
                match action {
                    Action::Send { to, message }
                        if matches!(message.rpc, Rpc::AppendEntries(_)) =>
                    {
                        self.transport.send(to, message);
                        sent = true;
                    }
                    other => rest.push(other),
                }
            }
            actions = rest;
            if sent {
                self.transport.flush();
            }
        }
        let stores_snapshot = writes.iter().find_map(|write| match write {
            StorageWrite::Snapshot(snapshot) => Some(snapshot.last_included_index),
            _ => None,
        });
        let writing = Instant::now();
        if !writes.is_empty()
            && let Err(error) = self.storage.persist(writes).await
        {
            error!(target: "yggr::node", node_id = self.id.get(), %error, "storage failed; stopping");
            return Err(Stop::Fatal);
        }
        if let Some(index) = stores_snapshot {
            debug!(
                target: "yggr::node",
                node_id = self.id.get(),
                index = index.get(),
                write_us = writing.elapsed().as_micros() as u64,
                "snapshot stored"
            );
        }
        // Snapshots taken before this iteration are durable now.
        for waiter in self.snapshots.taken.drain(..) {
            let _ = waiter.send(Ok(()));
        }
        let mut snapshot_index = LogIndex::ZERO;
        for action in actions {
            match action {
                Action::Send { to, message } => {
                    self.transport.send(to, message);
                    sent = true;
                }
                Action::Apply(entries) => {
                    let waiters = self.take_waiters(&entries);
                    self.hand_to_apply(ApplyJob::Entries { entries, waiters })?;
                }
                Action::PersistSnapshot {
                    last_included_index,
                    ..
                } => snapshot_index = last_included_index,
                Action::ApplySnapshot { bytes } => {
                    self.skip_pending_through(snapshot_index);
                    let job = ApplyJob::Restore {
                        index: snapshot_index,
                        bytes,
                    };
                    self.hand_to_apply(job)?;
                }
                Action::ReadReady { id } => {
                    if let Some(read) = self.reads.remove(&id) {
                        self.hand_to_apply(ApplyJob::Read(read))?;
                    }
                }
                Action::ReadFailed { id, reason } => {
                    if let Some(read) = self.reads.remove(&id) {
                        read.fail(self.read_error(reason));
                    }
                }
                Action::SnapshotHint { .. } => self.snapshots.wanted = true,
                _ => {}
            }
        }
        if sent {
            self.transport.flush();
        }
        self.after_iteration(was_leader);
        self.dispatch_snapshot();
        Ok(())
    }

    /// Queues `job` for the apply task without waiting: into its channel, or behind the
    /// jobs already waiting in the backlog.
    fn hand_to_apply(&mut self, job: ApplyJob<S>) -> Result<(), Stop> {
        let Some(apply) = &self.apply else {
            return Err(Stop::Fatal);
        };
        if self.apply_backlog.is_empty() {
            match apply.try_send(job) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(job)) => self.apply_backlog.push_back(job),
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stop::Fatal),
            }
        } else {
            self.apply_backlog.push_back(job);
        }
        Ok(())
    }

    /// Whether the backlog is long enough that a leader sets new writes and reads aside until
    /// the state machine catches up: 64 channels' worth of jobs. Ticks, replication, elections
    /// and every other request go on regardless, so a slow state machine never costs the node
    /// its place in the cluster. A follower's backlog has no bound of its own: it grows with
    /// what the leader commits (one job per committed batch), and its jobs share their bytes
    /// with the log the engine holds anyway, so it costs little beyond the unapplied log.
    fn apply_backlog_full(&self) -> bool {
        self.apply_backlog.len() >= self.config.max_pending_applies.saturating_mul(64)
    }

    /// Moves backlogged jobs into the apply channel while it has room.
    fn feed_apply_backlog(&mut self) -> Result<(), Stop> {
        let Some(apply) = &self.apply else {
            return Ok(());
        };
        while let Some(job) = self.apply_backlog.pop_front() {
            match apply.try_send(job) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(job)) => {
                    self.apply_backlog.push_front(job);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stop::Fatal),
            }
        }
        Ok(())
    }

    /// The waiters of the entries about to be applied. A waiter whose index holds another
    /// term's entry lost its write to a later leader.
    fn take_waiters(
        &mut self,
        entries: &[yggr_core::LogEntry<Bytes>],
    ) -> Vec<(LogIndex, Waiter<S>)> {
        let Some(last) = entries.last().map(|entry| entry.index) else {
            return Vec::new();
        };
        let first = entries[0].index;
        let mut waiters = Vec::new();
        while self
            .pending
            .front()
            .is_some_and(|pending| pending.index <= last)
        {
            let Some(pending) = self.pending.pop_front() else {
                break;
            };
            let entry = (pending.index >= first).then(|| {
                &entries[usize::try_from(pending.index.distance_from(first)).unwrap_or(0)]
            });
            // Pending entries are sorted and every index below `first` was applied by an
            // earlier job, which took its waiters then: `entry` is always found.
            debug_assert!(entry.is_some(), "a pending entry below the applied range");
            let committed = entry.is_some_and(|entry| entry.term == pending.term);
            match (pending.waiter, committed) {
                (PendingWaiter::Entry(waiter), true) => waiters.push((pending.index, waiter)),
                (PendingWaiter::Membership(reply), true) => {
                    let _ = reply.send(Ok(()));
                }
                (waiter, false) => waiter.refused(self.leader_hint()),
            }
        }
        self.earliest_orphan_deadline = self.orphan_deadline();
        waiters
    }

    /// Records an entry appended for a waiter, keeping `pending` sorted by index. A leader
    /// elected again after its log was cut back can append below entries it still waits on
    /// from its earlier term.
    fn add_pending(&mut self, index: LogIndex, term: Term, waiter: PendingWaiter<S>) {
        let pending = Pending {
            index,
            term,
            waiter,
            orphaned_until: None,
        };
        if self.pending.back().is_none_or(|last| last.index <= index) {
            self.pending.push_back(pending);
        } else {
            let position = self.pending.partition_point(|other| other.index <= index);
            self.pending.insert(position, pending);
        }
    }

    /// After losing leadership: every pending entry gets `outcome_wait_ticks` to learn its
    /// fate (entries orphaned by an earlier step-down keep their deadline).
    fn orphan_pending(&mut self) {
        let deadline = self.ticks.saturating_add(self.config.outcome_wait_ticks);
        for pending in &mut self.pending {
            pending.orphaned_until.get_or_insert(deadline);
        }
        self.earliest_orphan_deadline = self.orphan_deadline();
        self.expire_orphans();
    }

    fn orphan_deadline(&self) -> Option<u64> {
        self.pending
            .iter()
            .filter_map(|pending| pending.orphaned_until)
            .min()
    }

    /// Answers `OutcomeUnknown` to every orphaned entry whose wait is over.
    fn expire_orphans(&mut self) {
        if self
            .earliest_orphan_deadline
            .is_none_or(|deadline| self.ticks < deadline)
        {
            return;
        }
        let ticks = self.ticks;
        let mut kept = VecDeque::with_capacity(self.pending.len());
        for pending in self.pending.drain(..) {
            if pending
                .orphaned_until
                .is_some_and(|deadline| deadline <= ticks)
            {
                debug!(target: "yggr::node", node_id = self.id.get(), index = pending.index.get(), "fate of an entry not learned in time: outcome unknown");
                pending.waiter.outcome_unknown();
            } else {
                kept.push_back(pending);
            }
        }
        self.pending = kept;
        self.earliest_orphan_deadline = self.orphan_deadline();
    }

    /// A snapshot from the leader replaced the log through `index`: the entries pending at or
    /// below it can no longer be compared with what committed there.
    fn skip_pending_through(&mut self, index: LogIndex) {
        while self
            .pending
            .front()
            .is_some_and(|pending| pending.index <= index)
        {
            if let Some(pending) = self.pending.pop_front() {
                pending.waiter.outcome_unknown();
            }
        }
        self.earliest_orphan_deadline = self.orphan_deadline();
    }

    fn lost_write_error(&self) -> ProposeError {
        match self.leader_hint() {
            Some(leader_hint) => ProposeError::NotLeader { leader_hint },
            None => ProposeError::NoLeader,
        }
    }

    fn read_error(&self, reason: ReadFailure) -> ReadError {
        match reason {
            ReadFailure::NotLeader {
                leader_hint: Some(leader_hint),
            } if leader_hint != self.id => ReadError::NotLeader { leader_hint },
            ReadFailure::NotLeader { .. } => ReadError::NoLeader,
            ReadFailure::SteppedDown => ReadError::SteppedDown,
            _ => ReadError::NoLeader,
        }
    }

    /// After each iteration: publish the leader, and fail the waiters of a leader that lost
    /// its role (none may hang).
    fn after_iteration(&mut self, was_leader: bool) {
        let leads = self.engine.role() == Role::Leader;
        let leader = self.engine.leader().map_or(0, NodeId::get);
        if self.shared.leader.swap(leader, Ordering::AcqRel) != leader {
            if leads {
                info!(target: "yggr::node", node_id = self.id.get(), term = self.engine.current_term().get(), "became leader");
            } else {
                debug!(target: "yggr::node", node_id = self.id.get(), leader, "leader changed");
            }
        }
        if was_leader && !leads {
            // Held proposals were never appended: a definite refusal. Appended ones may still
            // commit under the next leader; this node learns their fate as a follower.
            let error = self.lost_write_error();
            for (_, waiter) in self.held.drain(..) {
                waiter.fail(error.clone());
            }
            self.orphan_pending();
        }
    }

    // ---- Stopping ----

    fn begin_draining(&mut self, reply: oneshot::Sender<Result<(), ShutdownError>>) {
        self.shared
            .lifecycle
            .store(lifecycle::SHUTTING_DOWN, Ordering::Release);
        // Proposals accepted so far get a couple of election timeouts to commit.
        let deadline = self
            .ticks
            .saturating_add(self.config.election_timeout_max_ticks.saturating_mul(2));
        info!(target: "yggr::node", node_id = self.id.get(), "shutting down: draining");
        self.draining = Some((deadline, reply));
        if !self.held.is_empty() {
            self.propose_held();
        }
        self.hand_over();
    }

    /// A leader that stops hands leadership to its most caught-up voter first (as etcd does
    /// on a clean stop), so a planned restart costs the cluster no election timeout. Bounded
    /// by an election timeout: past it the node stops whatever happened.
    fn hand_over(&mut self) {
        if self.engine.role() != Role::Leader {
            return;
        }
        let membership = self.engine.membership();
        let successor = self
            .engine
            .follower_progress()
            .into_iter()
            .filter(|(id, _)| *id != self.id && membership.is_voter(*id))
            .max_by_key(|(id, (matched, _))| (*matched, std::cmp::Reverse(*id)))
            .map(|(id, _)| id);
        let Some(successor) = successor else {
            return;
        };
        if self
            .step_request(Event::TransferLeadership { target: successor })
            .is_none()
        {
            info!(target: "yggr::node", node_id = self.id.get(), successor = successor.get(), "shutting down: handing leadership over first");
            self.handover_until = Some(
                self.ticks
                    .saturating_add(self.config.election_timeout_max_ticks),
            );
        }
    }

    /// While draining: stop once nothing waits any more and a handover is done (or given
    /// up), or the deadline passed.
    fn finish_draining(&mut self) -> Option<Stop> {
        let (deadline, _) = self.draining.as_ref()?;
        let idle = self.pending.is_empty() && self.reads.is_empty() && self.held.is_empty();
        let handing_over = self.engine.role() == Role::Leader
            && self.handover_until.is_some_and(|until| self.ticks < until);
        ((idle && !handing_over) || self.ticks >= *deadline).then_some(Stop::Clean)
    }

    async fn stop(mut self, stop: Stop) {
        let (lifecycle_value, error) = match stop {
            Stop::Clean => (lifecycle::STOPPED, ProposeError::Shutdown),
            Stop::Fatal => (lifecycle::FATAL, ProposeError::Fatal),
        };
        self.shared
            .lifecycle
            .store(lifecycle_value, Ordering::Release);
        self.shared.leader.store(0, Ordering::Release);
        // Appended entries whose fate is still open: they may commit after this node stops.
        for pending in self.pending.drain(..) {
            match stop {
                Stop::Clean => pending.waiter.outcome_unknown(),
                Stop::Fatal => pending.waiter.fatal(),
            }
        }
        for (_, waiter) in self.held.drain(..) {
            waiter.fail(error.clone());
        }
        self.parked_reads = 0;
        for request in self.parked.drain(..) {
            refuse_when_stopped(request, &self.engine, &self.shared, Some(stop));
        }
        let read_error = match stop {
            Stop::Clean => ReadError::Shutdown,
            Stop::Fatal => ReadError::Fatal,
        };
        // In id order, so that a simulated run answers them, and wakes their callers, in the
        // same order every time.
        for (_, read) in std::mem::take(&mut self.reads) {
            read.fail(read_error.clone());
        }
        // Answer what is still queued, then let the apply task finish what it was handed.
        self.requests.close();
        while let Ok(request) = self.requests.try_recv() {
            refuse_when_stopped(request, &self.engine, &self.shared, Some(stop));
        }
        // Committed entries (and the writers waiting on them) still in the backlog go to the
        // apply task before it is told to finish.
        if let Some(apply) = self.apply.take() {
            for job in self.apply_backlog.drain(..) {
                if apply.send(job).await.is_err() {
                    break;
                }
            }
        }
        if let Some(task) = self.apply_task.take() {
            let _ = task.await;
        }
        info!(target: "yggr::node", node_id = self.id.get(), "stopped");
        if let Some((_, reply)) = self.draining.take() {
            let _ = reply.send(match stop {
                Stop::Clean => Ok(()),
                Stop::Fatal => Err(ShutdownError::Fatal),
            });
        }
    }
}

/// Waits for the snapshot being prepared, if any (never completes without one).
async fn prepared<E>(preparation: &mut Option<Preparation<E>>) -> Result<(), E> {
    match preparation {
        Some(preparation) => preparation.work.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Waits until the apply channel has room (true) or the apply task has gone (false). The
/// driver is the channel's only sender, so the room is still there when it fills it.
async fn has_room<S: StateMachine>(apply: Option<&mpsc::Sender<ApplyJob<S>>>) -> bool {
    match apply {
        Some(apply) => apply.reserve().await.is_ok(),
        None => false,
    }
}

/// Answers a request that arrives while the node drains (`stopped` is `None`: status is
/// still served) or once it has stopped: `Shutdown` after a clean stop, `Fatal` after a fatal
/// one.
fn refuse_when_stopped<S: StateMachine>(
    request: Request<S>,
    engine: &Engine<Bytes>,
    shared: &Shared,
    stopped: Option<Stop>,
) {
    let fatal = matches!(stopped, Some(Stop::Fatal));
    match request {
        Request::ProposeOne { waiter, .. } => waiter.fail(if fatal {
            ProposeError::Fatal
        } else {
            ProposeError::Shutdown
        }),
        Request::Propose { waiters, .. } => fail_all(
            waiters,
            if fatal {
                ProposeError::Fatal
            } else {
                ProposeError::Shutdown
            },
        ),
        Request::Read(read) => read.fail(if fatal {
            ReadError::Fatal
        } else {
            ReadError::Shutdown
        }),
        Request::Membership { reply, .. } => {
            let _ = reply.send(Err(if fatal {
                MembershipError::Fatal
            } else {
                MembershipError::Shutdown
            }));
        }
        Request::Transfer { reply, .. } => {
            let _ = reply.send(Err(if fatal {
                TransferLeadershipError::Fatal
            } else {
                TransferLeadershipError::Shutdown
            }));
        }
        // Once stopped, a dropped reply tells the caller how the node stopped.
        Request::Status(reply) => {
            if stopped.is_none() {
                let _ = reply.send(status(engine, shared));
            }
        }
        Request::Metrics(reply) => {
            if stopped.is_none() {
                let _ = reply.send(metrics(engine, shared));
            }
        }
        Request::TriggerSnapshot(reply) => {
            let _ = reply.send(Err(SnapshotError::new("the node is shutting down")));
        }
        Request::Shutdown(reply) => {
            let _ = reply.send(Err(if fatal {
                ShutdownError::Fatal
            } else {
                ShutdownError::AlreadyShutdown
            }));
        }
    }
}

fn fail_all<S: StateMachine>(waiters: Vec<Waiter<S>>, error: ProposeError) {
    for waiter in waiters {
        waiter.fail(error.clone());
    }
}

/// The storage write a `PersistSnapshot` action asks for.
fn snapshot_write(action: &Action<Bytes>) -> Option<StorageWrite> {
    match action {
        Action::PersistSnapshot {
            last_included_index,
            last_included_term,
            membership,
            bytes,
        } => Some(StorageWrite::Snapshot(RecoveredSnapshot {
            last_included_index: *last_included_index,
            last_included_term: *last_included_term,
            membership: membership.clone(),
            bytes: bytes.clone(),
        })),
        _ => None,
    }
}

fn membership_error(reason: ConfigChangeRejection) -> MembershipError {
    match reason {
        ConfigChangeRejection::ChangeInProgress => MembershipError::ChangeInProgress,
        ConfigChangeRejection::LeaderNotReady | ConfigChangeRejection::TransferInProgress => {
            MembershipError::Busy
        }
        ConfigChangeRejection::Invalid(error) => match error {
            MembershipChangeError::AlreadyVoter(node) => MembershipError::AlreadyVoter(node),
            MembershipChangeError::AlreadyLearner(node) => MembershipError::AlreadyLearner(node),
            MembershipChangeError::NotLearner(node) => MembershipError::NotLearner(node),
            MembershipChangeError::UnknownNode(node) => MembershipError::UnknownNode(node),
            MembershipChangeError::NoVotersLeft => MembershipError::InvalidTargetMembership,
        },
    }
}

pub(crate) fn status(engine: &Engine<Bytes>, shared: &Shared) -> Status {
    Status {
        id: engine.id(),
        role: engine.role(),
        current_term: engine.current_term(),
        commit_index: engine.commit_index(),
        last_applied: shared.state_machine_applied(),
        leader: engine.leader(),
        membership: engine.membership().clone(),
    }
}

pub(crate) fn metrics(engine: &Engine<Bytes>, shared: &Shared) -> NodeMetrics {
    let membership = engine.membership();
    let followers = engine
        .follower_progress()
        .into_iter()
        .map(|(id, (matched, next_index))| {
            (
                id,
                FollowerProgress {
                    matched,
                    next_index,
                    is_learner: membership.is_learner(id),
                },
            )
        })
        .collect();
    NodeMetrics {
        engine: engine.metrics(),
        status: status(engine, shared),
        replication: ReplicationMetrics { followers },
        last_log_index: engine.last_log_index(),
        snapshots_taken: shared.snapshots_taken.load(Ordering::Relaxed),
        snapshots_failed: shared.snapshots_failed.load(Ordering::Relaxed),
    }
}
