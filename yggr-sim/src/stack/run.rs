//! One run: build the simulation, drive it through the faults phase and the liveness phase,
//! check, and report.

use std::cell::{Cell, RefCell};
use std::hash::{Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use turmoil::Sim;
use yggr::NodeId;

use super::check::{HistoryCounts, check};
use super::clients::{Client, History};
use super::cluster::{NodeHost, Registry, host_name};
use super::digest::Fnv64;
use super::faults::{FaultCounts, Injector, LINK_LATENCY_MAX};
use super::liveness::{Probe, Progress};
use super::monitor::{Monitor, Watch};
use super::observed::{Entry, Journal};
use super::operator::{Operator, OperatorCounts};
use super::options::StackOptions;
use super::steady::{Steady, SteadyOutcome, WINDOW};
use super::stored::StorageCounts;
use super::workload::{Draw, Workload};

/// What a run that passed did.
#[derive(Clone, Debug)]
pub struct StackReport {
    /// The seed it ran.
    pub seed: u64,
    /// What the clients did and were told, as checked.
    pub history: HistoryCounts,
    /// What the fault injector did.
    pub faults: FaultCounts,
    /// What the operator did.
    pub operator: OperatorCounts,
    /// What the nodes' storage was put through, and how much of it was held to Log Matching.
    pub storage: StorageCounts,
    /// The highest term any node reached (roughly, the elections held).
    pub term: u64,
    /// Terms in which the monitor saw a leader.
    pub terms_with_a_leader: u64,
    /// Simulated time from the heal to one agreed leader.
    pub time_to_leader: Duration,
    /// Simulated time from the heal to every live replica in the same state.
    pub time_to_converge: Duration,
    /// The simulated time the run covered.
    pub simulated: Duration,
    /// A digest of every event of the run (every apply, restore and start on every node,
    /// every request and answer with its time, every fault): the same seed gives the same
    /// digest, on any machine.
    pub digest: u64,
}

/// A run that failed: what went wrong, and how to run it again.
#[derive(Clone, Debug)]
pub struct StackFailure {
    /// The options of the run (its seed among them).
    pub options: Box<StackOptions>,
    /// What went wrong.
    pub reason: String,
    /// The fault injector's last actions, oldest first.
    pub last_faults: Vec<String>,
}

impl std::fmt::Display for StackFailure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            formatter,
            "stack simulation failed (seed {}): {}",
            self.options.seed, self.reason
        )?;
        writeln!(formatter, "options: {:?}", self.options)?;
        if !self.last_faults.is_empty() {
            writeln!(formatter, "last faults:")?;
            for line in &self.last_faults {
                writeln!(formatter, "  {line}")?;
            }
        }
        let seed = self.options.seed;
        if *self.options == StackOptions::from_seed(seed) {
            write!(
                formatter,
                "replay: run_stack(&workload, &StackOptions::from_seed({seed})) repeats this run \
                 event for event (for the simulator's own register workload: \
                 YGGR_STACK_SEED={seed} cargo run --release -p yggr-sim --example stack)"
            )
        } else {
            write!(
                formatter,
                "replay: run_stack with the same workload and the options above (seed {seed}) \
                 repeats this run event for event"
            )
        }
    }
}

impl std::error::Error for StackFailure {}

/// Runs `workload` on a simulated cluster as `options` say, and checks it.
///
/// # Errors
/// [`StackFailure`] when a check fails, the healed cluster does not recover within
/// `options.liveness_limit`, the run exercised nothing, or the node code panicked.
pub fn run_stack<W: Workload>(
    workload: &W,
    options: &StackOptions,
) -> Result<StackReport, StackFailure> {
    let log = Rc::new(RefCell::new(Vec::new()));
    let outcome = catch_unwind(AssertUnwindSafe(|| run_inner(workload, options, &log)));
    let failure = |reason: String| StackFailure {
        options: Box::new(options.clone()),
        reason,
        last_faults: log.borrow().iter().rev().take(40).rev().cloned().collect(),
    };
    match outcome {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(reason)) => Err(failure(reason)),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|message| (*message).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            Err(failure(format!("panicked: {message}")))
        }
    }
}

/// The simulation's shared records.
struct Records<W: Workload> {
    registry: Rc<Registry<W>>,
    journal: Journal,
    history: History<W>,
}

fn build<'a, W: Workload>(
    workload: &W,
    options: &StackOptions,
    members: &[NodeId],
    records: &Records<W>,
    stop: &Rc<Cell<bool>>,
) -> Sim<'a> {
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(options.seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .tick_duration(Duration::from_millis(1))
        .simulation_duration(
            options.chaos_duration + options.liveness_limit + Duration::from_secs(60),
        )
        .min_message_latency(Duration::ZERO)
        .max_message_latency(LINK_LATENCY_MAX);
    builder
        .fs()
        .sync_probability(options.faults.early_sync_probability)
        // A crash tears writes it interrupts at 512-byte blocks, as a disk does at sectors.
        .block_size(512)
        .io_error_probability(options.faults.io_error_probability);
    let mut sim = builder.build();
    for &id in members {
        let host = Rc::new(NodeHost {
            id,
            members: members.to_vec(),
            workload: workload.clone(),
            registry: records.registry.clone(),
            journal: records.journal.clone(),
            options: options.clone(),
        });
        sim.host(host_name(id), move || {
            let host = host.clone();
            async move { host.run().await }
        });
    }
    let reads = workload
        .read(&workload.state_machine(members[0]), 0)
        .is_some();
    for index in 0..options.clients {
        let client = Client {
            index,
            workload: workload.clone(),
            registry: records.registry.clone(),
            history: records.history.clone(),
            stop: stop.clone(),
            draw: Draw::new(
                options.seed ^ (u64::from(index) + 1).wrapping_mul(0x2545_f491_4f6c_dd1d),
            ),
            think_time: options.client_think_time,
            reads,
        };
        sim.client(format!("client-{index}"), client.run());
    }
    sim
}

fn run_inner<W: Workload>(
    workload: &W,
    options: &StackOptions,
    log: &Rc<RefCell<Vec<String>>>,
) -> Result<StackReport, String> {
    yggr::simulation::seed_randomness(options.seed);
    let members: Vec<NodeId> = (1..=options.nodes)
        .map(|id| NodeId::new(id).expect("node ids start at 1"))
        .collect();
    let records = Records {
        registry: Rc::new(Registry::new(&members, options.seed)),
        journal: Arc::new(Mutex::new(Vec::new())),
        history: Rc::new(RefCell::new(Vec::new())),
    };
    let stop = Rc::new(Cell::new(false));
    let mut sim = build(workload, options, &members, &records, &stop);
    let watch = Rc::new(RefCell::new(Watch::default()));
    let monitor = Monitor {
        registry: records.registry.clone(),
        watch: watch.clone(),
    };
    sim.client("monitor", monitor.run());
    let full = Rc::new(Cell::new(true));
    let restored = Rc::new(Cell::new(true));
    let operator_counts = Rc::new(Cell::new(OperatorCounts::default()));
    if options.faults.transfers || options.faults.membership_changes {
        restored.set(false);
        let operator = Operator {
            registry: records.registry.clone(),
            members: members.clone(),
            stop: stop.clone(),
            restored: restored.clone(),
            full: full.clone(),
            draw: Draw::new(options.seed ^ 0x0e7a_7000),
            transfers: options.faults.transfers,
            membership_changes: options.faults.membership_changes,
            counts: operator_counts.clone(),
        };
        sim.client("operator", operator.run());
    }
    let mut injector = Injector::new(options.faults.clone(), members.clone(), options.seed, full);
    // Every message in flight after every step, by endpoints and kind, goes into the digest.
    let traffic = RefCell::new(Fnv64::new());
    let started = std::time::Instant::now();
    let step = |sim: &mut Sim<'_>| {
        // The only wall-clock reading of a run: it decides nothing inside the run, only
        // whether to give up on one that spins (a livelock does all its work in no simulated
        // time, so no simulated bound ends it).
        if started.elapsed() > options.wall_time_limit {
            return Err(format!(
                "the run took more than {:?} of wall time, at {:?} of simulated time: something spins without letting simulated time pass (a correct run takes well under a second per simulated minute)",
                options.wall_time_limit,
                sim.elapsed()
            ));
        }
        let stepped = sim
            .step()
            .map(|_| ())
            .map_err(|error| format!("the simulation stopped: {error}"));
        let mut traffic = traffic.borrow_mut();
        sim.links(|links| {
            for link in links {
                for sent in link {
                    sent.pair().hash(&mut *traffic);
                    segment_digest(sent.protocol()).hash(&mut *traffic);
                }
            }
        });
        stepped
    };
    injector.begin(&records.registry);
    let outcome = (|| {
        while sim.elapsed() < options.chaos_duration {
            step(&mut sim)?;
            injector.act(&mut sim, &records.registry);
        }
        stop.set(true);
        injector.heal(&mut sim, &records.registry);
        let healed = sim.elapsed();
        let progress = Rc::new(RefCell::new(Progress::default()));
        let steady = Rc::new(RefCell::new(SteadyOutcome::default()));
        let probe = Probe {
            workload: workload.clone(),
            registry: records.registry.clone(),
            history: records.history.clone(),
            journal: records.journal.clone(),
            progress: progress.clone(),
            restored: restored.clone(),
            draw: Draw::new(options.seed ^ 0x9e0b_e000),
            steady: options.steady_phase.then(|| Steady {
                workload: workload.clone(),
                registry: records.registry.clone(),
                history: records.history.clone(),
                outcome: steady.clone(),
                clients: options.clients,
                first_index: options.clients + 1,
                think_time: options.client_think_time,
                seed: options.seed ^ 0x57ea_d000,
            }),
        };
        sim.client("probe", probe.run());
        let deadline = healed + options.liveness_limit;
        while progress.borrow().converged.is_none() {
            if sim.elapsed() > deadline {
                return Err(liveness_failure(&progress.borrow(), &records, options));
            }
            step(&mut sim)?;
            injector.act(&mut sim, &records.registry);
        }
        // The steady phase's clients may wait out a slow disk and a backlog, within as long
        // again as the liveness phase allowed.
        let deadline = sim.elapsed() + 2 * WINDOW + options.liveness_limit;
        while options.steady_phase && steady.borrow().done.is_none() {
            if sim.elapsed() > deadline {
                return Err(format!(
                    "liveness: the steady phase did not end within {:?}",
                    2 * WINDOW + options.liveness_limit
                ));
            }
            step(&mut sim)?;
        }
        if let Some(election) = steady.borrow().election.clone() {
            return Err(election);
        }
        let progress = progress.borrow().clone();
        Ok((healed, progress))
    })();
    *log.borrow_mut() = injector.log.clone();
    let (healed, progress) = outcome?;
    let journal = records
        .journal
        .lock()
        .expect("the journal's lock is never poisoned")
        .clone();
    let history = records.history.borrow().clone();
    if let Some(violation) = &watch.borrow().violation {
        return Err(violation.clone());
    }
    for (id, slot) in records.registry.slots.borrow().iter() {
        if let Some(broken) = slot.host.invariants_broken().first() {
            return Err(format!(
                "node {id} broke an invariant of the runtime: {broken}"
            ));
        }
    }
    if let Some(violation) = &records.registry.stored_logs().violation {
        return Err(format!("storage: {violation}"));
    }
    if options.faults.io_error_probability == 0.0
        && let Some(violation) = records.registry.storage_violations.borrow().first()
    {
        return Err(format!("storage: {violation}"));
    }
    let counts = check(workload, &journal, &history)?;
    super::responsiveness::slow_redirect(&history, &watch.borrow())?;
    check_convergence(&journal, &progress)?;
    if let Some(position) = progress.final_barrier_position {
        check_replicas_at(&journal, position)?;
    }
    if counts.acknowledged == 0 {
        return Err("the run exercised nothing: no write was acknowledged".to_string());
    }
    let faults = &options.faults;
    let faults_enabled = faults.crashes
        || faults.partitions
        || faults.one_way_cuts
        || faults.holds
        || faults.slow_links
        || faults.pauses
        || faults.full_disks
        || faults.slow_disks
        || faults.slow_state_machines;
    if faults_enabled && injector.counts.injected() == 0 {
        return Err(
            "the run exercised nothing: faults were enabled and none was injected".to_string(),
        );
    }
    let mut digest = Fnv64::new();
    journal.hash(&mut digest);
    for operation in &history {
        format!("{operation:?}").hash(&mut digest);
    }
    injector.log.hash(&mut digest);
    traffic.borrow().finish().hash(&mut digest);
    sim.elapsed().hash(&mut digest);
    Ok(StackReport {
        seed: options.seed,
        history: counts,
        faults: injector.counts,
        operator: operator_counts.get(),
        storage: records.registry.stored_logs().counts,
        term: progress.term,
        terms_with_a_leader: watch.borrow().leaders.len() as u64,
        time_to_leader: progress
            .leader_agreed
            .unwrap_or_default()
            .saturating_sub(healed),
        time_to_converge: progress
            .converged
            .unwrap_or_default()
            .saturating_sub(healed),
        simulated: sim.elapsed(),
        digest: digest.finish(),
    })
}

/// Every live replica that applied the barrier holds the same state and passes the
/// workload's replica check; the fresh read saw the barrier.
fn check_convergence(journal: &[Entry], progress: &Progress) -> Result<(), String> {
    let position = progress
        .barrier_position
        .ok_or("the barrier was never written")?;
    if let Some(read) = progress.read_position
        && read < position
    {
        return Err(format!(
            "the fresh read after the barrier (position {position}) saw position {read}"
        ));
    }
    check_replicas_at(journal, position)
}

/// Every live replica that applied the barrier at `position` passed its checks and holds the
/// same state.
fn check_replicas_at(journal: &[Entry], position: u64) -> Result<(), String> {
    let mut digests = Vec::new();
    for entry in journal {
        if let Entry::Barrier {
            node,
            position: at,
            digest,
            check,
            ..
        } = entry
        {
            if *at != position {
                continue;
            }
            if let Err(problem) = check {
                return Err(format!(
                    "node {node}'s replica check failed at position {position}: {problem}"
                ));
            }
            digests.push((*node, *digest));
        }
    }
    if let Some((first, digest)) = digests.first()
        && let Some((other, _)) = digests.iter().find(|(_, other)| other != digest)
    {
        return Err(format!(
            "replicas differ after applying the same commands: node {first} and node {other} hold different states at position {position} (compared by Workload::state_bytes, by default the snapshot: a snapshot that serializes equal states differently, a hash map in iteration order say, differs too)"
        ));
    }
    Ok(())
}

fn liveness_failure<W: Workload>(
    progress: &Progress,
    records: &Records<W>,
    options: &StackOptions,
) -> String {
    let pending = records
        .history
        .borrow()
        .iter()
        .filter(|operation| operation.outcome == super::clients::Outcome::Pending)
        .map(|operation| {
            format!(
                "{:#x} (client {}) to node {}",
                operation.id, operation.client, operation.node
            )
        })
        .collect::<Vec<_>>();
    let processes: Vec<String> = records
        .registry
        .slots
        .borrow()
        .iter()
        .map(|(id, slot)| format!("node {id}: {:?} (start {})", slot.process, slot.life))
        .collect();
    // A node that refused a disk nothing corrupted keeps the cluster from recovering: that
    // refusal is the cause to report.
    let storage = match records.registry.storage_violations.borrow().first() {
        Some(violation) => format!("storage: {violation}; then "),
        None => String::new(),
    };
    format!(
        "{storage}liveness: the healed cluster did not recover within {:?}: {progress:?}; requests still unanswered: {pending:?}; nodes: {processes:?}",
        options.liveness_limit
    )
}

/// What identifies a message on the simulated network: its kind and length (its bytes are
/// the runtime's, fixed by everything else the digest covers).
fn segment_digest(protocol: &turmoil::Protocol) -> (u8, usize) {
    match protocol {
        turmoil::Protocol::Tcp(segment) => match segment {
            turmoil::Segment::Syn(_) => (1, 0),
            turmoil::Segment::Data(_, bytes) => (2, bytes.len()),
            turmoil::Segment::Fin(_) => (3, 0),
            turmoil::Segment::Rst => (4, 0),
        },
        turmoil::Protocol::Udp(datagram) => (5, datagram.0.len()),
    }
}
