//! Every crash point of one storage batch: the real `DiskStorage`, alone on a simulated host,
//! stores a random history a follower might (appends, suffixes replaced by a new leader's
//! entries, compactions, installs that replace the whole log), and one batch of it is cut
//! short at each of its file operations in turn, by a power loss, or by a failed fsync and
//! a restart of the process.
//!
//! A cluster run crashes a node at random moments; the middle of a rare batch (an install
//! replacing a log made of many segments, say) is a few file operations long, and a random
//! crash almost never lands on the one that matters. Here every one of them is tried. After
//! each, the storage is opened again (with, half the time, another power loss part way
//! through its own recovery, then opened once more) and must hold:
//!
//! - **a state the batch could leave**: the state before it with a prefix of its writes done,
//!   the last of them possibly only in part when it appends entries (some of them, or none
//!   after the cut); never a mix of two histories, never less than the batches before it;
//! - **what it read back, durably**: a power loss right after opening, with nothing written
//!   since, opens to the same state. (A process that stopped on a failed fsync leaves data in
//!   the page cache only; a successor that reads it back, and may acknowledge it, must make
//!   it durable first.)
//!
//! And once the batch has completed, a corruption is written into the files (a flipped bit
//! anywhere, a segment zeroed, a flipped bit in the last batch, each never what a torn write
//! leaves): the storage must refuse to open them, never repair them in silence.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use yggr::simulation::SimulatedHost;
use yggr::storage::{Storage, StorageWrite, StoredState};
use yggr::{DiskStorage, NodeId};
use yggr_core::{EntryPayload, LogEntry, LogIndex, Membership, RecoveredSnapshot, Term};

use super::cluster::{Corruption, corrupt};

/// Where the storage lives on its host.
const DIRECTORY: &str = "/yggr/crash-points";
/// The host's name.
const HOST: &str = "storage";
/// Simulation steps one phase may take before the sweep calls it stuck.
const STEPS_PER_PHASE: u32 = 100_000;
/// The most crash points tried in one batch (a batch has far fewer file operations).
const CRASH_POINTS_MAX: u32 = 400;

/// What one seed's sweep covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashPointReport {
    /// Batches in the history.
    pub batches: u64,
    /// Crash points tried (power losses at each file operation of the chosen batches, and
    /// failed fsyncs).
    pub crash_points: u64,
    /// Of those, during an install that replaced a log holding entries past the snapshot.
    pub in_installs_replacing_a_log: u64,
    /// Recoveries interrupted by a second power loss.
    pub recoveries_interrupted: u64,
    /// Corruptions written into the files after a batch (a flipped bit anywhere, a zeroed
    /// segment, a flipped bit in the last batch), each of which the storage must refuse.
    pub corruptions: u64,
}

/// A stored state as the checks compare it: term, vote, the snapshot's index, term and
/// bytes, and every entry's index, term and payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    term: u64,
    vote: Option<u64>,
    snapshot: Option<(u64, u64, Bytes)>,
    log: Vec<(u64, u64, Bytes)>,
}

impl Model {
    fn from_stored(stored: Option<&StoredState>) -> Model {
        let Some(stored) = stored else {
            return Model::default();
        };
        Model {
            term: stored.current_term.get(),
            vote: stored.voted_for.map(NodeId::get),
            snapshot: stored.snapshot.as_ref().map(|snapshot| {
                (
                    snapshot.last_included_index.get(),
                    snapshot.last_included_term.get(),
                    snapshot.bytes.clone(),
                )
            }),
            log: stored.log.iter().map(entry_key).collect(),
        }
    }

    fn term_at(&self, index: u64) -> Option<u64> {
        if let Some((at, term, _)) = &self.snapshot
            && *at == index
        {
            return Some(*term);
        }
        self.log
            .iter()
            .find(|(at, _, _)| *at == index)
            .map(|(_, term, _)| *term)
    }

    fn last_index(&self) -> u64 {
        self.log.last().map_or_else(
            || self.snapshot.as_ref().map_or(0, |(index, _, _)| *index),
            |(index, _, _)| *index,
        )
    }

    fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |(index, _, _)| *index)
    }

    /// The state after `write`, as the storage contract defines it.
    fn apply(&mut self, write: &StorageWrite) {
        match write {
            StorageWrite::HardState {
                current_term,
                voted_for,
            } => {
                self.term = current_term.get();
                self.vote = voted_for.map(NodeId::get);
            }
            StorageWrite::Entries(entries) => {
                if let Some(first) = entries.first() {
                    self.log.retain(|(index, _, _)| *index < first.index.get());
                    self.log.extend(entries.iter().map(entry_key));
                }
            }
            StorageWrite::Snapshot(snapshot) => {
                let (index, term) = (
                    snapshot.last_included_index.get(),
                    snapshot.last_included_term.get(),
                );
                if self.term_at(index) == Some(term) {
                    self.log.retain(|(at, _, _)| *at > index);
                } else {
                    self.log.clear();
                }
                self.snapshot = Some((index, term, snapshot.bytes.clone()));
            }
        }
    }

    /// Every state a crash in the middle of `batch` may leave, starting from this one: the
    /// state after each prefix of its writes, and inside a write of entries, the old suffix
    /// cut anywhere from its first index on (a cut reaches the disk a segment at a time, the
    /// last segment's first), or cut at its first index and followed by some of its entries.
    /// A suffix the batch replaces was never committed, so losing it early is safe; keeping
    /// a stale suffix behind a new snapshot, or behind new entries, is not.
    fn after_a_crash_in(&self, batch: &[StorageWrite]) -> Vec<Model> {
        let mut states = vec![self.clone()];
        let mut state = self.clone();
        for write in batch {
            if let StorageWrite::Entries(entries) = write
                && let Some(first) = entries.first()
            {
                let first = first.index.get();
                for cut in first..=state.last_index() {
                    let mut partial = state.clone();
                    partial.log.retain(|(index, _, _)| *index < cut);
                    states.push(partial);
                }
                for kept in 1..entries.len() {
                    let mut partial = state.clone();
                    partial.apply(&StorageWrite::Entries(entries[..kept].to_vec()));
                    states.push(partial);
                }
            }
            state.apply(write);
            states.push(state.clone());
        }
        states
    }
}

fn entry_key(entry: &LogEntry<Bytes>) -> (u64, u64, Bytes) {
    let payload = match &entry.payload {
        EntryPayload::Command(bytes) => bytes.clone(),
        other => Bytes::from(format!("{other:?}")),
    };
    (entry.index.get(), entry.term.get(), payload)
}

/// A random history a follower's storage might be given: batches that each keep the log
/// consistent (a new term is stored before entries of that term).
fn history(draw: &mut ChaCha8Rng, batches: usize) -> Vec<Vec<StorageWrite>> {
    let mut model = Model::default();
    let mut term = 1;
    let mut history = vec![vec![StorageWrite::HardState {
        current_term: Term::new(term),
        voted_for: NodeId::new(1),
    }]];
    model.apply(&history[0][0]);
    while history.len() < batches {
        let last = model.last_index();
        let floor = model.snapshot_index();
        let batch = match draw.random_range(0..100) {
            // A new term, stored before anything of it.
            0..10 => {
                term += 1;
                vec![StorageWrite::HardState {
                    current_term: Term::new(term),
                    voted_for: NodeId::new(draw.random_range(1..=3)),
                }]
            }
            // A new leader's entries over a suffix, with its term, as a follower stores them.
            10..30 if last > floor => {
                term += 1;
                let from = draw.random_range(floor + 1..=last);
                vec![
                    StorageWrite::HardState {
                        current_term: Term::new(term),
                        voted_for: None,
                    },
                    entries(draw, from, term),
                ]
            }
            // A compaction: a snapshot the log continues.
            30..42 if last > floor => {
                let index = draw.random_range(floor + 1..=last);
                let at = model
                    .term_at(index)
                    .expect("the log holds every index it spans");
                vec![StorageWrite::Snapshot(snapshot(draw, index, at))]
            }
            // An install from a leader of a new term whose log differs from this one at the
            // snapshot's index: it replaces the whole log, often holding entries past it.
            42..55 => {
                term += 1;
                let index = draw.random_range(floor + 1..=last.max(floor + 1) + 2);
                vec![
                    StorageWrite::HardState {
                        current_term: Term::new(term),
                        voted_for: None,
                    },
                    StorageWrite::Snapshot(snapshot(draw, index, term)),
                ]
            }
            // Appends: one to three entries of the current term.
            _ => vec![entries(draw, last + 1, model.term)],
        };
        for write in &batch {
            model.apply(write);
        }
        history.push(batch);
    }
    history
}

fn entries(draw: &mut ChaCha8Rng, from: u64, term: u64) -> StorageWrite {
    let count = draw.random_range(1..=3u64);
    StorageWrite::Entries(
        (from..from + count)
            .map(|index| LogEntry {
                term: Term::new(term),
                index: LogIndex::new(index),
                payload: EntryPayload::Command(random_bytes(draw, 1..=48)),
            })
            .collect(),
    )
}

fn snapshot(draw: &mut ChaCha8Rng, index: u64, term: u64) -> RecoveredSnapshot {
    RecoveredSnapshot {
        last_included_index: LogIndex::new(index),
        last_included_term: Term::new(term),
        membership: founding(),
        bytes: random_bytes(draw, 1..=300),
    }
}

fn random_bytes(draw: &mut ChaCha8Rng, length: std::ops::RangeInclusive<usize>) -> Bytes {
    let length = draw.random_range(length);
    Bytes::from(
        (0..length)
            .map(|_| draw.random::<u8>())
            .collect::<Vec<u8>>(),
    )
}

fn founding() -> Membership {
    Membership::from_voters([1, 2, 3].map(|id| NodeId::new(id).expect("ids start at 1")))
}

/// A history of batches, shared by every crash point's run.
type History = Rc<Vec<Vec<StorageWrite>>>;

/// How the chosen batch is cut short.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// The power goes after this many more storage operations.
    PowerLoss(u32),
    /// Every fsync fails (the first one must end the batch); then the process restarts, or
    /// the machine loses power.
    FailedFsync { then_power_loss: bool },
    /// The batch completes; then the corruption is written into the files, and the process
    /// restarts: it must refuse to open them.
    Corrupted(Corruption),
}

/// What the host's software is asked to do, and what it found.
#[derive(Default)]
struct Script {
    /// Store `history[..=target]`, the target batch cut as `cut` says; or, with no history,
    /// open the storage and load it.
    write: Option<(History, usize, Cut)>,
    /// Set when the software is done: whether the target batch completed, or what loaded.
    done: Option<Result<Finished, String>>,
}

#[derive(Debug)]
enum Finished {
    Stored {
        /// What the target batch's `persist` returned.
        target: Result<(), String>,
        /// Whether the power was off when it returned.
        powered_off: bool,
        /// Whether a corruption was written after it (there may be nothing to corrupt).
        corrupted: bool,
    },
    Loaded(Model),
}

async fn software(
    script: Rc<RefCell<Script>>,
    host: SimulatedHost,
    segment_bytes: u64,
    corruption_seed: u64,
) {
    let write = script.borrow_mut().write.take();
    let outcome = async {
        let mut storage = DiskStorage::open(DIRECTORY)
            .await
            .map_err(|error| format!("open: {error}"))?
            .with_segment_bytes(segment_bytes);
        let loaded = storage
            .load()
            .await
            .map_err(|error| format!("load: {error}"))?;
        let Some((history, target, cut)) = write else {
            return Ok(Finished::Loaded(Model::from_stored(loaded.as_ref())));
        };
        let node = NodeId::new(1).expect("ids start at 1");
        storage
            .bootstrap(node, &founding())
            .await
            .map_err(|error| format!("bootstrap: {error}"))?;
        for (index, batch) in history[..=target].iter().enumerate() {
            if index == target {
                match cut {
                    Cut::PowerLoss(operations) => host.lose_power_after(operations),
                    Cut::FailedFsync { .. } => host.set_fsync_failure_probability(1.0),
                    Cut::Corrupted(_) => {}
                }
                let target = storage
                    .persist(batch.clone())
                    .await
                    .map_err(|error| error.to_string());
                let powered_off = host.powered_off();
                host.set_fsync_failure_probability(0.0);
                host.cancel_power_loss();
                let corrupted = match cut {
                    Cut::Corrupted(corruption) if target.is_ok() => {
                        drop(storage);
                        corrupt(corruption, corruption_seed, DIRECTORY).is_ok()
                    }
                    _ => false,
                };
                return Ok(Finished::Stored {
                    target,
                    powered_off,
                    corrupted,
                });
            }
            storage
                .persist(batch.clone())
                .await
                .map_err(|error| format!("batch {index} before the cut: {error}"))?;
        }
        unreachable!("the loop returns at the target batch")
    }
    .await;
    script.borrow_mut().done = Some(outcome);
}

/// One simulated host with the storage's directory, run phase by phase.
struct Bench {
    sim: turmoil::Sim<'static>,
    script: Rc<RefCell<Script>>,
    host: SimulatedHost,
    /// Recoveries a planned power loss interrupted.
    recoveries_interrupted: u64,
}

impl Bench {
    fn new(seed: u64, segment_bytes: u64) -> Bench {
        yggr::simulation::seed_randomness(seed);
        let mut builder = turmoil::Builder::new();
        builder
            .rng_seed(seed)
            .epoch(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
            .simulation_duration(Duration::from_secs(3600));
        builder.fs().block_size(512);
        let mut sim = builder.build();
        let script = Rc::new(RefCell::new(Script::default()));
        let host = SimulatedHost::new();
        let (shared, process) = (script.clone(), host.clone());
        sim.host(HOST, move || {
            let (script, host) = (shared.clone(), process.clone());
            async move {
                host.clone()
                    .run(software(script, host, segment_bytes, seed))
                    .await;
                Ok(())
            }
        });
        Bench {
            sim,
            script,
            host,
            recoveries_interrupted: 0,
        }
    }

    /// Steps until the software says it is done.
    fn finish(&mut self) -> Result<Finished, String> {
        for _ in 0..STEPS_PER_PHASE {
            if let Some(done) = self.script.borrow_mut().done.take() {
                return done;
            }
            self.sim
                .step()
                .map_err(|error| format!("the simulation stopped: {error}"))?;
        }
        Err("the storage did not finish within the step limit".to_string())
    }

    /// Starts the software again: after a power loss (unsynced data gone) or a process
    /// restart (the page cache kept), with `power_loss` planned into its recovery.
    fn restart(&mut self, lose_power: bool, power_loss: Option<u32>) {
        self.host.crashing();
        if lose_power {
            self.sim.crash(HOST);
        }
        self.host.restarted();
        if let Some(operations) = power_loss {
            self.host.lose_power_after(operations);
        }
        self.sim.bounce(HOST);
    }

    /// Opens the storage again after a restart and loads it; a power loss planned into the
    /// recovery is followed by another restart.
    fn load(&mut self, lose_power: bool, power_loss: Option<u32>) -> Result<Model, String> {
        self.restart(lose_power, power_loss);
        let outcome = self.finish();
        if self.host.powered_off() {
            self.recoveries_interrupted += 1;
            self.host.cancel_power_loss();
            return self.load(true, None);
        }
        self.host.cancel_power_loss();
        match outcome? {
            Finished::Loaded(model) => Ok(model),
            Finished::Stored { .. } => unreachable!("a load phase loads"),
        }
    }
}

/// Runs the crash-point sweep of one seed.
///
/// # Errors
/// What went wrong, with the seed, the batch and the crash point, when a recovered state is
/// not one the cut batch could leave, a power loss right after a recovery changes what it
/// read, or the storage refuses what it wrote itself.
pub fn run_crash_points(seed: u64) -> Result<CrashPointReport, String> {
    let mut draw = ChaCha8Rng::seed_from_u64(seed ^ 0xc4a5_4001);
    let segment_bytes = match draw.random_range(0..4) {
        0 | 1 => 1,
        2 => 256,
        _ => 64 << 10,
    };
    let batches = draw.random_range(8..=40);
    let history = Rc::new(history(&mut draw, batches));
    let mut report = CrashPointReport {
        batches: batches as u64,
        ..CrashPointReport::default()
    };
    // Two batches: an install that replaces a log when there is one, and any other.
    let mut before = Model::default();
    let mut states = Vec::with_capacity(history.len());
    for batch in history.iter() {
        states.push(before.clone());
        for write in batch {
            before.apply(write);
        }
    }
    let replacing: Vec<usize> = (1..history.len())
        .filter(|&index| replaces_a_log(&states[index], &history[index]))
        .collect();
    let mut targets = vec![draw.random_range(1..history.len())];
    if !replacing.is_empty() {
        targets.push(replacing[draw.random_range(0..replacing.len())]);
    }
    for target in targets {
        sweep_batch(
            seed,
            &history,
            &states[target],
            target,
            segment_bytes,
            &mut draw,
            &mut report,
        )?;
    }
    Ok(report)
}

/// Tries every crash point of `history[target]`, from `before` (the state the batches before
/// it leave), and a failed fsync in it.
fn sweep_batch(
    seed: u64,
    history: &History,
    before: &Model,
    target: usize,
    segment_bytes: u64,
    draw: &mut ChaCha8Rng,
    report: &mut CrashPointReport,
) -> Result<(), String> {
    let context = |cut: Cut| {
        format!(
            "crash points, seed {seed} (segments of {segment_bytes} bytes, {} batches): batch {target} ({}) cut by {cut:?}",
            history.len(),
            describe(&history[target])
        )
    };
    let acceptable = before.after_a_crash_in(&history[target]);
    let after = acceptable
        .last()
        .expect("the state after the whole batch is acceptable");
    let in_install = replaces_a_log(before, &history[target]);
    // The failed fsyncs first: the power losses stop at the first that comes too late.
    let failed_fsyncs = [false, true].map(|then_power_loss| Cut::FailedFsync { then_power_loss });
    let cuts = failed_fsyncs
        .into_iter()
        .chain((0..CRASH_POINTS_MAX).map(Cut::PowerLoss));
    for cut in cuts {
        let mut bench = Bench::new(seed ^ u64::from(target as u32) << 20, segment_bytes);
        bench.script.borrow_mut().write = Some((history.clone(), target, cut));
        let (stored, powered_off) = match bench
            .finish()
            .map_err(|error| format!("{}: {error}", context(cut)))?
        {
            Finished::Stored {
                target,
                powered_off,
                ..
            } => (target, powered_off),
            Finished::Loaded(_) => unreachable!("a write phase stores"),
        };
        let completed = stored.is_ok();
        match (cut, &stored) {
            (Cut::FailedFsync { .. }, Ok(())) => {
                return Err(format!(
                    "{}: the batch was reported stored though an fsync of it failed",
                    context(cut)
                ));
            }
            (Cut::PowerLoss(_), Err(error)) if !powered_off => {
                return Err(format!(
                    "{}: the batch failed before the power went: {error}",
                    context(cut)
                ));
            }
            _ => {}
        }
        if !completed {
            report.crash_points += 1;
            report.in_installs_replacing_a_log += u64::from(in_install);
        }
        let recovery_loss = draw.random_bool(0.5).then(|| draw.random_range(0..6));
        let lose_power = match cut {
            Cut::PowerLoss(_) => true,
            Cut::FailedFsync { then_power_loss } => then_power_loss,
            Cut::Corrupted(_) => false,
        };
        let read = bench.load(lose_power, recovery_loss).map_err(|error| {
            format!(
                "{}: the storage refused its own data: {error}",
                context(cut)
            )
        })?;
        if completed && read != *after {
            return Err(format!(
                "{}: the batch was reported stored, but recovery read {} instead of {}",
                context(cut),
                summary(&read),
                summary(after)
            ));
        }
        if !acceptable.contains(&read) {
            return Err(format!(
                "{}: recovered a state the batch could not leave: {}; the state before the batch: {}",
                context(cut),
                summary(&read),
                summary(before)
            ));
        }
        let again = bench.load(true, None).map_err(|error| {
            format!(
                "{}: after a power loss right after recovery: {error}",
                context(cut)
            )
        })?;
        report.recoveries_interrupted += bench.recoveries_interrupted;
        if again != read {
            return Err(format!(
                "{}: a power loss right after recovery, with nothing written since, changed what recovery had read: {} became {}",
                context(cut),
                summary(&read),
                summary(&again)
            ));
        }
        if completed {
            // The batch finished before the planned power loss: every crash point of it
            // has been tried.
            return corruptions(seed, history, target, segment_bytes, report, &context);
        }
    }
    Err(format!(
        "{}: the batch did not complete within {CRASH_POINTS_MAX} storage operations",
        context(Cut::PowerLoss(CRASH_POINTS_MAX))
    ))
}

/// Writes each corruption into the files once `history[target]` has completed, and requires
/// the storage to refuse them.
fn corruptions(
    seed: u64,
    history: &History,
    target: usize,
    segment_bytes: u64,
    report: &mut CrashPointReport,
    context: &dyn Fn(Cut) -> String,
) -> Result<(), String> {
    for corruption in [
        Corruption::FlippedBit,
        Corruption::ZeroedSegment,
        Corruption::FlippedBitInLastBatch,
    ] {
        let cut = Cut::Corrupted(corruption);
        let mut bench = Bench::new(seed ^ u64::from(target as u32) << 20, segment_bytes);
        bench.script.borrow_mut().write = Some((history.clone(), target, cut));
        let corrupted = match bench
            .finish()
            .map_err(|error| format!("{}: {error}", context(cut)))?
        {
            Finished::Stored { corrupted, .. } => corrupted,
            Finished::Loaded(_) => unreachable!("a write phase stores"),
        };
        if !corrupted {
            continue;
        }
        report.corruptions += 1;
        if let Ok(read) = bench.load(false, None) {
            return Err(format!(
                "{}: opened the corrupted files as if nothing were wrong: {}",
                context(cut),
                summary(&read)
            ));
        }
    }
    Ok(())
}

/// Whether `batch` stores a snapshot that replaces `state`'s log, which holds entries past it.
fn replaces_a_log(state: &Model, batch: &[StorageWrite]) -> bool {
    batch.iter().any(|write| match write {
        StorageWrite::Snapshot(snapshot) => {
            let index = snapshot.last_included_index.get();
            state.last_index() > index
                && state.term_at(index) != Some(snapshot.last_included_term.get())
        }
        _ => false,
    })
}

fn describe(batch: &[StorageWrite]) -> String {
    batch
        .iter()
        .map(|write| match write {
            StorageWrite::HardState { current_term, .. } => format!("term {}", current_term.get()),
            StorageWrite::Entries(entries) => format!(
                "entries {}..={}",
                entries.first().map_or(0, |entry| entry.index.get()),
                entries.last().map_or(0, |entry| entry.index.get())
            ),
            StorageWrite::Snapshot(snapshot) => format!(
                "snapshot through {} at term {}",
                snapshot.last_included_index.get(),
                snapshot.last_included_term.get()
            ),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn summary(model: &Model) -> String {
    let positions: Vec<String> = model
        .log
        .iter()
        .map(|(index, term, _)| format!("{index}@{term}"))
        .collect();
    format!(
        "term {}, snapshot {:?}, log [{}]",
        model.term,
        model
            .snapshot
            .as_ref()
            .map(|(index, term, _)| (index, term)),
        positions.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(positions: &[(u64, u64)]) -> Vec<(u64, u64, Bytes)> {
        positions
            .iter()
            .map(|&(index, term)| (index, term, Bytes::from(format!("{index}@{term}"))))
            .collect()
    }

    fn write_entries(positions: &[(u64, u64)]) -> StorageWrite {
        StorageWrite::Entries(
            log(positions)
                .into_iter()
                .map(|(index, term, payload)| LogEntry {
                    term: Term::new(term),
                    index: LogIndex::new(index),
                    payload: EntryPayload::Command(payload),
                })
                .collect(),
        )
    }

    fn install(index: u64, term: u64) -> StorageWrite {
        StorageWrite::Snapshot(RecoveredSnapshot {
            last_included_index: LogIndex::new(index),
            last_included_term: Term::new(term),
            membership: founding(),
            bytes: Bytes::from_static(b"state"),
        })
    }

    /// Entries 1..=6 of term 1.
    fn six_entries() -> Model {
        Model {
            term: 2,
            log: log(&[(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1)]),
            ..Model::default()
        }
    }

    #[test]
    fn a_crash_in_an_append_may_cut_the_replaced_suffix_anywhere_but_never_splices_it() {
        let before = six_entries();
        let batch = [write_entries(&[(4, 2), (5, 2)])];
        let states = before.after_a_crash_in(&batch);
        let with = |positions: &[(u64, u64)]| Model {
            log: log(positions),
            ..before.clone()
        };
        // The old suffix cut from 4 on, at any index, or the new entries in part or whole.
        assert!(states.contains(&before));
        assert!(states.contains(&with(&[(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)])));
        assert!(states.contains(&with(&[(1, 1), (2, 1), (3, 1)])));
        assert!(states.contains(&with(&[(1, 1), (2, 1), (3, 1), (4, 2)])));
        assert!(states.contains(&with(&[(1, 1), (2, 1), (3, 1), (4, 2), (5, 2)])));
        // Never the new entries with the old suffix behind them, nor less than the prefix.
        assert!(!states.contains(&with(&[(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 1)])));
        assert!(!states.contains(&with(&[(1, 1), (2, 1)])));
    }

    #[test]
    fn a_crash_in_an_install_that_replaces_the_log_never_leaves_a_stale_suffix_behind_it() {
        let before = six_entries();
        let batch = [install(3, 2)];
        assert!(replaces_a_log(&before, &batch));
        let states = before.after_a_crash_in(&batch);
        let installed = Model {
            snapshot: Some((3, 2, Bytes::from_static(b"state"))),
            log: Vec::new(),
            ..before.clone()
        };
        assert_eq!(states, vec![before.clone(), installed.clone()]);
        let spliced = Model {
            log: log(&[(4, 1), (5, 1), (6, 1)]),
            ..installed
        };
        assert!(!states.contains(&spliced));
    }

    #[test]
    fn a_compaction_keeps_the_entries_after_the_snapshot() {
        let mut state = six_entries();
        state.apply(&install(4, 1));
        assert_eq!(state.log, log(&[(5, 1), (6, 1)]));
        assert_eq!(state.snapshot_index(), 4);
    }

    #[test]
    fn generated_histories_hold_installs_that_replace_a_log_and_every_kind_of_batch() {
        let mut draw = ChaCha8Rng::seed_from_u64(1);
        let (mut replacing, mut compactions, mut cuts) = (0, 0, 0);
        for _ in 0..50 {
            let history = history(&mut draw, 30);
            let mut state = Model::default();
            for batch in &history {
                replacing += u32::from(replaces_a_log(&state, batch));
                for write in batch {
                    match write {
                        StorageWrite::Snapshot(snapshot)
                            if state.term_at(snapshot.last_included_index.get())
                                == Some(snapshot.last_included_term.get()) =>
                        {
                            compactions += 1;
                        }
                        StorageWrite::Entries(entries)
                            if entries[0].index.get() <= state.last_index() =>
                        {
                            cuts += 1;
                        }
                        _ => {}
                    }
                    state.apply(write);
                }
            }
        }
        assert!(
            replacing > 20 && compactions > 20 && cuts > 20,
            "{replacing} {compactions} {cuts}"
        );
    }

    #[test]
    fn disk_storage_survives_every_crash_point_of_a_few_histories() {
        let mut crash_points = 0;
        for seed in 0..8 {
            let report = run_crash_points(seed).unwrap_or_else(|failure| panic!("{failure}"));
            crash_points += report.crash_points;
        }
        assert!(crash_points > 50, "{crash_points}");
    }
}
