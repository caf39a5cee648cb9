//! The apply task: it owns the state machine, applies committed entries in order, answers
//! the clients waiting on them, runs linearizable reads after everything applied before them,
//! restores snapshots from the leader and takes snapshots for compaction.
//!
//! It sits behind a bounded channel; when the channel is full, jobs wait in order in the
//! driver. The state machine's code never runs on a runtime worker, so a slow or even
//! blocking `apply` delays other applies but never heartbeats. Where it runs depends on the runtime:
//!
//! - on a multi-threaded runtime, on a thread of its own that waits on the channel: one
//!   wake-up per job at most, the cheapest hand-off there is (see [`spawn`]);
//! - on a current-thread runtime (tests with tokio's paused clock among them), as a task that
//!   hands each busy period (a job and whatever queued behind it) to the blocking pool. That
//!   frees the runtime's one thread, and tells the paused clock that work is in progress: a
//!   plain thread would let virtual time race ahead while it ran;
//! - inside a turmoil simulation (whose hosts run current-thread runtimes), the same task, but
//!   each busy period runs right on the host's thread (`sys::task`): a thread would see
//!   neither the simulated clock nor the simulated file system, and the run would not repeat.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error};
use yggr_core::{EntryPayload, LogEntry, LogIndex, NodeId};

use crate::driver::Shared;
use crate::error::{ProposeError, ReadError};
use crate::state_machine::{SnapshotError, StateMachine};
use crate::sys::task::Blocking;

/// Work for the apply task, in the order the driver hands it over.
pub(crate) enum ApplyJob<S: StateMachine> {
    /// Committed entries in order, and the clients waiting on some of them.
    Entries {
        entries: Vec<LogEntry<Bytes>>,
        waiters: Vec<(LogIndex, Waiter<S>)>,
    },
    /// Replace the state with a snapshot the leader sent.
    Restore { index: LogIndex, bytes: Bytes },
    /// Run a confirmed read against the state as it stands now.
    Read(Box<dyn ReadJob<S>>),
    /// Take a snapshot of the state as it stands now and report it to the driver.
    Snapshot,
}

/// What the apply task reports back to the driver.
#[derive(Debug)]
pub(crate) enum ApplyReport {
    /// A snapshot of the state through `index` was taken; the state machine spent `took`
    /// on it, while nothing was applied.
    Snapshot {
        index: LogIndex,
        bytes: Bytes,
        took: std::time::Duration,
    },
    /// A snapshot could not be taken now.
    SnapshotFailed(SnapshotError),
    /// A committed entry does not decode, or the state machine panicked: this node cannot
    /// go on.
    Fatal(String),
}

/// A linearizable read waiting to run, with its caller's answer channel, type-erased.
pub(crate) trait ReadJob<S>: Send {
    /// Runs the read against the state machine and answers the caller.
    fn run(self: Box<Self>, state: &S);
    /// Answers the caller with an error.
    fn fail(self: Box<Self>, error: ReadError);
}

/// What a read's caller gets back.
pub(crate) enum ReadAnswer<R> {
    /// What the closure returned.
    Value(R),
    /// Why the read did not run.
    Failed(ReadError),
    /// The closure panicked; the caller resumes the panic, as if it had run the closure
    /// itself. The state machine is untouched (a read only borrows it), so the node goes on.
    Panicked(Box<dyn std::any::Any + Send>),
}

/// A read closure and the channel its result goes back on.
pub(crate) struct Read<S, R, F: FnOnce(&S) -> R> {
    pub(crate) read: F,
    pub(crate) reply: oneshot::Sender<ReadAnswer<R>>,
    pub(crate) state: std::marker::PhantomData<fn(&S)>,
}

impl<S, R, F> ReadJob<S> for Read<S, R, F>
where
    R: Send + 'static,
    F: FnOnce(&S) -> R + Send + 'static,
{
    fn run(self: Box<Self>, state: &S) {
        let Read { read, reply, .. } = *self;
        let answer = match catch_unwind(AssertUnwindSafe(|| read(state))) {
            Ok(value) => ReadAnswer::Value(value),
            Err(panic) => ReadAnswer::Panicked(panic),
        };
        let _ = reply.send(answer);
    }

    fn fail(self: Box<Self>, error: ReadError) {
        let _ = self.reply.send(ReadAnswer::Failed(error));
    }
}

/// Units of the in-flight proposal count, given back when dropped (when the proposal is
/// answered, whichever way).
#[derive(Debug)]
pub(crate) struct InFlight {
    count: Arc<AtomicUsize>,
    units: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(self.units, Ordering::AcqRel);
    }
}

impl InFlight {
    /// Takes `units` if that keeps the count within `limit`. A request larger than the
    /// whole limit takes the whole limit, so it goes through when nothing else is in flight
    /// instead of being refused forever.
    pub(crate) fn acquire(
        count: &Arc<AtomicUsize>,
        units: usize,
        limit: usize,
    ) -> Option<InFlight> {
        let units = units.min(limit);
        let mut current = count.load(Ordering::Relaxed);
        loop {
            if current + units > limit {
                return None;
            }
            match count.compare_exchange_weak(
                current,
                current + units,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(InFlight {
                        count: Arc::clone(count),
                        units,
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }
}

/// A single write's answer channel.
pub(crate) type WriteReply<S> =
    oneshot::Sender<Result<<S as StateMachine>::Response, ProposeError>>;

/// A batch's answer channel: all responses in order, or the first error.
pub(crate) type BatchReply<S> =
    oneshot::Sender<Result<Vec<<S as StateMachine>::Response>, ProposeError>>;

/// The responses of a batch so far; the answer goes out once every command is answered.
///
/// Commands of one batch can meet different fates (a leader that steps down may see the first
/// ones commit and the rest replaced), so the answer waits for all of them and is truthful
/// about the whole: every response; or, when all failed with definite refusals, the first
/// refusal; or `Fatal` if the node failed; otherwise (some applied, or some unknown)
/// `OutcomeUnknown`, since a definite error would claim that applied commands did not.
pub(crate) struct BatchCollector<S: StateMachine> {
    inner: Mutex<BatchInner<S>>,
}

struct BatchInner<S: StateMachine> {
    responses: Vec<Option<S::Response>>,
    /// Commands not answered yet.
    missing: usize,
    /// The first definite refusal among the answers.
    refusal: Option<ProposeError>,
    /// An answer that leaves the command's fate open (`OutcomeUnknown`, `Fatal`,
    /// `DriverDead`); `Fatal` wins over the others.
    undecided: Option<ProposeError>,
    reply: Option<BatchReply<S>>,
    /// The batch's share of the in-flight limit, given back before the answer goes out.
    in_flight: Option<InFlight>,
}

impl<S: StateMachine> BatchInner<S> {
    /// Sends the batch's answer once the last command is answered.
    fn answer_when_complete(&mut self) {
        if self.missing > 0 {
            return;
        }
        let Some(reply) = self.reply.take() else {
            return;
        };
        let any_applied = self.responses.iter().any(Option::is_some);
        let answer = match (self.undecided.take(), self.refusal.take()) {
            (None, None) => Ok(self.responses.drain(..).flatten().collect()),
            (Some(ProposeError::Fatal), _) => Err(ProposeError::Fatal),
            (None, Some(refusal)) if !any_applied => Err(refusal),
            _ => Err(ProposeError::OutcomeUnknown),
        };
        // Room first: a caller that writes again as soon as it hears back must find it.
        self.in_flight = None;
        let _ = reply.send(answer);
    }
}

impl<S: StateMachine> BatchCollector<S> {
    pub(crate) fn new(
        size: usize,
        reply: BatchReply<S>,
        in_flight: InFlight,
    ) -> Arc<BatchCollector<S>> {
        Arc::new(BatchCollector {
            inner: Mutex::new(BatchInner {
                responses: (0..size).map(|_| None).collect(),
                missing: size,
                refusal: None,
                undecided: None,
                reply: Some(reply),
                in_flight: Some(in_flight),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BatchInner<S>> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Each slot is answered once: its waiter is consumed by the answer.
    fn complete(&self, slot: usize, response: S::Response) {
        let mut inner = self.lock();
        inner.responses[slot] = Some(response);
        inner.missing -= 1;
        inner.answer_when_complete();
    }

    fn fail(&self, error: ProposeError) {
        let mut inner = self.lock();
        inner.missing -= 1;
        match error {
            ProposeError::OutcomeUnknown | ProposeError::DriverDead | ProposeError::Fatal => {
                if inner.undecided != Some(ProposeError::Fatal) {
                    inner.undecided = Some(error);
                }
            }
            refusal => {
                inner.refusal.get_or_insert(refusal);
            }
        }
        inner.answer_when_complete();
    }
}

/// Someone waiting for an entry to apply.
pub(crate) enum Waiter<S: StateMachine> {
    /// One write.
    Write {
        reply: WriteReply<S>,
        _in_flight: InFlight,
    },
    /// One command of a batch.
    BatchItem {
        batch: Arc<BatchCollector<S>>,
        slot: usize,
    },
}

impl<S: StateMachine> Waiter<S> {
    /// Answers with what the state machine returned.
    pub(crate) fn complete(self, response: S::Response) {
        match self {
            Waiter::Write { reply, _in_flight } => {
                // Room first: a caller that writes again as soon as it hears back must find it.
                drop(_in_flight);
                let _ = reply.send(Ok(response));
            }
            Waiter::BatchItem { batch, slot, .. } => batch.complete(slot, response),
        }
    }

    /// Answers with an error.
    pub(crate) fn fail(self, error: ProposeError) {
        match self {
            Waiter::Write { reply, _in_flight } => {
                drop(_in_flight);
                let _ = reply.send(Err(error));
            }
            Waiter::BatchItem { batch, .. } => batch.fail(error),
        }
    }
}

/// The apply task's state between busy periods.
struct Applier<S: StateMachine> {
    state: S,
    last_applied: LogIndex,
    jobs: mpsc::Receiver<ApplyJob<S>>,
    reports: mpsc::UnboundedSender<ApplyReport>,
    /// Where `last_applied` is published for `Node::status`.
    shared: Arc<Shared>,
    /// Set once an entry could not be applied: the state is unknown from then on, so
    /// nothing more is applied or read, and everyone still waiting is answered `Fatal` until
    /// the driver, told so, closes the channel.
    broken: bool,
}

/// Starts the apply loop where it belongs on the current runtime (see the module
/// documentation). `state` already reflects every entry through `applied` (the snapshot it
/// was restored from, at startup). The returned receiver fires (or closes) once the loop has
/// stopped: the driver closed the channel, or an entry could not be applied.
pub(crate) fn spawn<S: StateMachine>(
    id: NodeId,
    state: S,
    applied: LogIndex,
    jobs: mpsc::Receiver<ApplyJob<S>>,
    reports: mpsc::UnboundedSender<ApplyReport>,
    shared: Arc<Shared>,
) -> oneshot::Receiver<()> {
    let applier = Applier {
        state,
        last_applied: applied,
        jobs,
        reports,
        shared,
        broken: false,
    };
    let (finished, stopped) = oneshot::channel();
    match Handle::current().runtime_flavor() {
        RuntimeFlavor::CurrentThread => {
            crate::sys::task::spawn(async move {
                run_in_busy_periods(applier).await;
                let _ = finished.send(());
            });
        }
        _ => {
            let reports = applier.reports.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("yggr-apply-{id}"))
                .spawn(move || {
                    run_on_this_thread(applier);
                    let _ = finished.send(());
                });
            if let Err(error) = spawned {
                let reason = format!("could not start the apply thread: {error}");
                error!(target: "yggr::node", %reason, "apply stopped");
                let _ = reports.send(ApplyReport::Fatal(reason));
            }
        }
    }
    stopped
}

/// The apply loop on a dedicated thread, until the driver closes the channel.
fn run_on_this_thread<S: StateMachine>(mut applier: Applier<S>) {
    while let Some(job) = applier.jobs.blocking_recv() {
        applier.handle(job);
    }
}

/// The apply loop as a task, each busy period on the blocking pool, until the driver closes
/// the channel.
async fn run_in_busy_periods<S: StateMachine>(mut applier: Applier<S>) {
    loop {
        let Some(first) = applier.jobs.recv().await else {
            return;
        };
        // On tokio's blocking pool, or right here on a simulated host (see `sys::task`).
        let busy = crate::sys::task::run_blocking(Blocking::StateMachine, move || {
            applier.busy_period(first);
            applier
        });
        match busy.await {
            Ok(back) => applier = back,
            // Panics in user code are caught inside; this is the runtime shutting down.
            Err(_) => return,
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|message| (*message).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

impl<S: StateMachine> Applier<S> {
    /// Runs `first` and every job queued behind it.
    fn busy_period(&mut self, first: ApplyJob<S>) {
        let mut job = first;
        loop {
            self.handle(job);
            match self.jobs.try_recv() {
                Ok(next) => job = next,
                Err(_) => return,
            }
        }
    }

    /// Runs one job, or once broken answers everyone in it with `Fatal`.
    fn handle(&mut self, job: ApplyJob<S>) {
        if self.broken {
            refuse(job);
            return;
        }
        match job {
            ApplyJob::Entries { entries, waiters } => {
                if let Err(reason) = self.apply_entries(entries, waiters) {
                    self.fail(reason);
                }
            }
            ApplyJob::Restore { index, bytes } => {
                let state = &mut self.state;
                match catch_unwind(AssertUnwindSafe(|| state.restore(bytes.to_vec()))) {
                    Ok(()) => {
                        self.last_applied = index;
                        self.publish_applied();
                        debug!(target: "yggr::node", index = index.get(), "restored a snapshot");
                    }
                    Err(panic) => self.fail(format!(
                        "the state machine panicked restoring a snapshot: {}",
                        panic_message(panic.as_ref())
                    )),
                }
            }
            ApplyJob::Read(read) => read.run(&self.state),
            ApplyJob::Snapshot => {
                let state = &self.state;
                let started = std::time::Instant::now();
                let report = match catch_unwind(AssertUnwindSafe(|| state.snapshot())) {
                    Ok(Ok(bytes)) => ApplyReport::Snapshot {
                        index: self.last_applied,
                        bytes: Bytes::from(bytes),
                        took: started.elapsed(),
                    },
                    Ok(Err(error)) => ApplyReport::SnapshotFailed(error),
                    Err(panic) => ApplyReport::SnapshotFailed(SnapshotError::new(format!(
                        "the state machine panicked taking a snapshot: {}",
                        panic_message(panic.as_ref())
                    ))),
                };
                let _ = self.reports.send(report);
            }
        }
    }

    /// Makes `last_applied` visible to `Node::status`.
    fn publish_applied(&self) {
        self.shared
            .state_machine_applied
            .store(self.last_applied.get(), Ordering::Release);
    }

    /// Stops applying for good and tells the driver.
    fn fail(&mut self, reason: String) {
        error!(target: "yggr::node", %reason, "apply stopped");
        self.broken = true;
        let _ = self.reports.send(ApplyReport::Fatal(reason));
    }

    /// Applies `entries` in order, answering each waiter with its command's response. On an
    /// entry that does not decode, or an `apply` that panics, answers that entry's waiter and
    /// every later one `Fatal` and returns why.
    fn apply_entries(
        &mut self,
        entries: Vec<LogEntry<Bytes>>,
        waiters: Vec<(LogIndex, Waiter<S>)>,
    ) -> Result<(), String> {
        // Waiters are sorted by index, and each names a command entry of this job.
        let mut waiters = waiters.into_iter().peekable();
        for entry in entries {
            let response = match &entry.payload {
                EntryPayload::Command(bytes) => match self.apply_one(bytes) {
                    Ok(response) => Some(response),
                    Err(reason) => {
                        for (_, waiter) in waiters {
                            waiter.fail(ProposeError::Fatal);
                        }
                        return Err(format!("entry {}: {reason}", entry.index));
                    }
                },
                _ => None,
            };
            self.last_applied = entry.index;
            // Before the writer hears back: a status it asks for then shows its write applied.
            self.publish_applied();
            if waiters
                .peek()
                .is_some_and(|(index, _)| *index == entry.index)
                && let (Some((_, waiter)), Some(response)) = (waiters.next(), response)
            {
                waiter.complete(response);
            }
        }
        debug_assert!(
            waiters.next().is_none(),
            "every waiter names an entry of its job"
        );
        Ok(())
    }

    /// Decodes and applies one command.
    fn apply_one(&mut self, bytes: &Bytes) -> Result<S::Response, String> {
        // The application's decoder is user code too: a panic in it is a broken state
        // machine, answered like one, never a dead apply thread.
        let command = catch_unwind(AssertUnwindSafe(|| S::decode_command(bytes)))
            .map_err(|panic| {
                format!(
                    "decoding a command panicked: {}",
                    panic_message(panic.as_ref())
                )
            })?
            .map_err(|error| error.to_string())?;
        let state = &mut self.state;
        catch_unwind(AssertUnwindSafe(|| state.apply(command))).map_err(|panic| {
            format!(
                "the state machine panicked: {}",
                panic_message(panic.as_ref())
            )
        })
    }
}

/// Answers everyone waiting on `job` with `Fatal`: the state machine can no longer serve.
fn refuse<S: StateMachine>(job: ApplyJob<S>) {
    match job {
        ApplyJob::Entries { waiters, .. } => {
            for (_, waiter) in waiters {
                waiter.fail(ProposeError::Fatal);
            }
        }
        ApplyJob::Read(read) => read.fail(ReadError::Fatal),
        ApplyJob::Restore { .. } | ApplyJob::Snapshot => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::DecodeError;

    /// The smallest state machine: answers each command with itself.
    struct Echo;

    impl StateMachine for Echo {
        type Command = u8;
        type Response = u8;

        fn encode_command(command: &u8) -> Vec<u8> {
            vec![*command]
        }

        fn decode_command(bytes: &[u8]) -> Result<u8, DecodeError> {
            bytes.first().copied().ok_or(DecodeError::new("empty"))
        }

        fn apply(&mut self, command: u8) -> u8 {
            command
        }
    }

    /// A batch of `size` commands, its waiters, and where its answer arrives.
    type BatchAnswer = oneshot::Receiver<Result<Vec<u8>, ProposeError>>;

    fn batch(size: usize) -> (Vec<Waiter<Echo>>, BatchAnswer) {
        let count = Arc::new(AtomicUsize::new(0));
        let in_flight = InFlight::acquire(&count, size, 64).unwrap();
        let (reply, answer) = oneshot::channel();
        let collector = BatchCollector::<Echo>::new(size, reply, in_flight);
        let waiters = (0..size)
            .map(|slot| Waiter::BatchItem {
                batch: Arc::clone(&collector),
                slot,
            })
            .collect();
        (waiters, answer)
    }

    #[test]
    fn a_batch_is_answered_once_every_command_is_with_every_response_in_order() {
        let (waiters, mut answer) = batch(3);
        let mut waiters = waiters.into_iter();
        let (first, second, third) = (
            waiters.next().unwrap(),
            waiters.next().unwrap(),
            waiters.next().unwrap(),
        );
        third.complete(30);
        first.complete(10);
        assert!(answer.try_recv().is_err(), "one command is still open");
        second.complete(20);
        assert_eq!(answer.try_recv().unwrap(), Ok(vec![10, 20, 30]));
    }

    #[test]
    fn a_batch_whose_commands_were_all_refused_is_answered_with_the_refusal() {
        let (waiters, mut answer) = batch(2);
        for waiter in waiters {
            waiter.fail(ProposeError::NoLeader);
        }
        assert_eq!(answer.try_recv().unwrap(), Err(ProposeError::NoLeader));
    }

    #[test]
    fn a_batch_partly_applied_and_partly_refused_is_answered_outcome_unknown_not_refused() {
        let (waiters, mut answer) = batch(2);
        let mut waiters = waiters.into_iter();
        waiters.next().unwrap().complete(1);
        waiters.next().unwrap().fail(ProposeError::NoLeader);
        assert_eq!(
            answer.try_recv().unwrap(),
            Err(ProposeError::OutcomeUnknown),
            "a refusal would claim that the applied command did not apply"
        );
    }

    #[test]
    fn a_batch_with_one_unknown_outcome_is_answered_outcome_unknown_and_fatal_wins() {
        let (waiters, mut answer) = batch(2);
        let mut waiters = waiters.into_iter();
        waiters.next().unwrap().fail(ProposeError::NoLeader);
        waiters.next().unwrap().fail(ProposeError::OutcomeUnknown);
        assert_eq!(
            answer.try_recv().unwrap(),
            Err(ProposeError::OutcomeUnknown)
        );

        let (waiters, mut answer) = batch(3);
        let mut waiters = waiters.into_iter();
        waiters.next().unwrap().fail(ProposeError::OutcomeUnknown);
        waiters.next().unwrap().fail(ProposeError::Fatal);
        waiters.next().unwrap().fail(ProposeError::OutcomeUnknown);
        assert_eq!(answer.try_recv().unwrap(), Err(ProposeError::Fatal));
    }
}
