//! The fault injector: between simulation steps, it crashes and restarts nodes, pauses and
//! resumes them, cuts and heals links, holds a node's traffic and lets it all through at
//! once, slows links, disks and state machines, fills disks, and corrupts a crashed node's
//! files before it restarts. Every choice comes from the run's seed; every action is written
//! to the run's log.
//!
//! It never has more than a minority of the voters down (crashed, stopped by a disk fault,
//! or lost to corruption) at once, and never loses more than a minority for good, so a
//! majority always holds every acknowledged write.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use turmoil::Sim;
use yggr::NodeId;

use super::cluster::{Corruption, Process, Registry, host_name};
use super::options::Faults;
use super::workload::Workload;

/// The usual latency of a link: a LAN.
pub(crate) const LINK_LATENCY_MAX: Duration = Duration::from_millis(3);

/// A fault that is undone later.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Lasting {
    /// `.0` and `.1` cannot reach each other.
    Partition(Vec<NodeId>, Vec<NodeId>),
    /// Nothing goes from `.0` to `.1`.
    OneWay(NodeId, NodeId),
    /// Everything to and from the node is held.
    Hold(NodeId),
    /// The link is slow.
    SlowLink(NodeId, NodeId),
    /// The node's process is paused.
    Pause(NodeId),
    /// The node's disk is full.
    DiskFull(NodeId),
    /// The node's disk is slow.
    SlowDisk(NodeId),
    /// The node's state machine is slow.
    SlowStateMachine(NodeId),
    /// The node is down (crashed or stopped) and restarts when this ends.
    Down(NodeId),
}

/// The kinds of action the injector draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Crash,
    Partition,
    OneWay,
    Hold,
    SlowLink,
    Pause,
    DiskFull,
    SlowDisk,
    SlowStateMachine,
}

/// What the injector has done, counted for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Nodes crashed.
    pub crashes: u64,
    /// Nodes restarted (after a crash or after they stopped by themselves).
    pub restarts: u64,
    /// Two-way partitions.
    pub partitions: u64,
    /// One-way cuts.
    pub one_way_cuts: u64,
    /// Holds (a node's traffic held, then delivered at once).
    pub holds: u64,
    /// Links slowed.
    pub slow_links: u64,
    /// Process pauses.
    pub pauses: u64,
    /// Disks filled.
    pub full_disks: u64,
    /// Disks slowed.
    pub slow_disks: u64,
    /// State machines slowed.
    pub slow_state_machines: u64,
    /// Crashed nodes whose files were corrupted before they restarted.
    pub corruptions: u64,
    /// Of those, the nodes that refused to start, as they must (then lost for the run).
    pub corruptions_refused: u64,
    /// Nodes that stopped by themselves (a failed fsync, a full disk), seen by the injector.
    pub stops: u64,
    /// Power losses planned in the middle of storage work (each, once it happens, also
    /// counts as a crash).
    pub power_losses: u64,
}

impl FaultCounts {
    /// Faults the injector started (not counting restarts and the stops they caused).
    pub fn injected(&self) -> u64 {
        self.crashes
            + self.power_losses
            + self.partitions
            + self.one_way_cuts
            + self.holds
            + self.slow_links
            + self.pauses
            + self.full_disks
            + self.slow_disks
            + self.slow_state_machines
            + self.corruptions
    }
}

pub(crate) struct Injector {
    faults: Faults,
    members: Vec<NodeId>,
    draw: ChaCha8Rng,
    next_action: Duration,
    /// Each lasting fault and when it ends.
    active: BTreeMap<Lasting, Duration>,
    pub(crate) counts: FaultCounts,
    /// Voters lost for good (they refused a corrupted disk, as they must).
    lost: Vec<NodeId>,
    /// Whether every member is a voter now (the operator's changes may leave fewer, and
    /// losing one of few voters could lose acknowledged writes): only then is a disk
    /// corrupted.
    full: Rc<Cell<bool>>,
    /// Every action, with its simulated time: part of the run's digest and its failure report.
    pub(crate) log: Vec<String>,
}

impl Injector {
    pub(crate) fn new(
        faults: Faults,
        members: Vec<NodeId>,
        seed: u64,
        full: Rc<Cell<bool>>,
    ) -> Injector {
        Injector {
            full,
            faults,
            members,
            draw: ChaCha8Rng::seed_from_u64(seed ^ 0xfa01_7500),
            next_action: Duration::ZERO,
            active: BTreeMap::new(),
            counts: FaultCounts::default(),
            lost: Vec::new(),
            log: Vec::new(),
        }
    }

    fn note(&mut self, now: Duration, what: String) {
        self.log.push(format!("{:>8.3}s {what}", now.as_secs_f64()));
    }

    /// How many voters may be down at once.
    fn tolerance(&self) -> usize {
        (self.members.len() - 1) / 2
    }

    /// Sets the faults that hold for the whole faults phase on every node.
    pub(crate) fn begin<W: Workload>(&mut self, registry: &Registry<W>) {
        for &id in &self.members {
            registry
                .host(id)
                .set_fsync_failure_probability(self.faults.fsync_failure_probability);
        }
        registry.stored_logs().plan_power_losses = self.faults.crashes;
    }

    /// Ends what is due, schedules restarts of nodes that stopped by themselves, and takes a
    /// new action when one is due.
    pub(crate) fn act<W: Workload>(&mut self, sim: &mut Sim<'_>, registry: &Registry<W>) {
        let now = sim.elapsed();
        self.notice_stops(sim, now, registry);
        let due: Vec<Lasting> = self
            .active
            .iter()
            .filter(|(_, end)| **end <= now)
            .map(|(fault, _)| fault.clone())
            .collect();
        for fault in due {
            self.active.remove(&fault);
            self.end(sim, registry, now, &fault);
        }
        if now < self.next_action {
            return;
        }
        let mean = self.faults.mean_interval.as_micros() as u64;
        self.next_action = now + Duration::from_micros(self.draw.random_range(0..=2 * mean));
        self.start_one(sim, registry, now);
    }

    /// A node that stopped by itself stays down for a while, then restarts; one that lost
    /// power goes down with whatever it had not synced; one that refused its corrupted disk
    /// is lost.
    fn notice_stops<W: Workload>(
        &mut self,
        sim: &mut Sim<'_>,
        now: Duration,
        registry: &Registry<W>,
    ) {
        for &id in &self.members.clone() {
            let host = registry.host(id);
            if host.powered_off() && matches!(registry.process(id), Process::Stopped(_)) {
                host.cancel_power_loss();
                self.counts.power_losses += 1;
                self.note(now, format!("node {id} lost power"));
                registry.host(id).crashing();
                sim.crash(host_name(id));
                registry.set_crashed(id);
                self.counts.crashes += 1;
                if !self.active.contains_key(&Lasting::Down(id)) {
                    let back = now + self.random_duration(50, 1_000);
                    self.active.insert(Lasting::Down(id), back);
                }
                continue;
            }
            match registry.process(id) {
                Process::Stopped(reason) if !self.active.contains_key(&Lasting::Down(id)) => {
                    self.counts.stops += 1;
                    self.note(now, format!("node {id} stopped: {reason}"));
                    let back = now + self.random_duration(100, 1_000);
                    self.active.insert(Lasting::Down(id), back);
                }
                Process::Lost(reason) if !self.lost.contains(&id) => {
                    self.lost.push(id);
                    self.counts.corruptions_refused += 1;
                    self.note(now, format!("node {id} is lost: {reason}"));
                }
                _ => {}
            }
        }
    }

    fn random_duration(&mut self, low_ms: u64, high_ms: u64) -> Duration {
        Duration::from_millis(self.draw.random_range(low_ms..=high_ms))
    }

    /// Voters down now or lost for good.
    fn unavailable(&self) -> usize {
        let down = self
            .active
            .keys()
            .filter(|fault| matches!(fault, Lasting::Down(node) if !self.lost.contains(node)))
            .count();
        down + self.lost.len()
    }

    fn kinds(&self) -> Vec<Kind> {
        let faults = &self.faults;
        let room = self.unavailable() < self.tolerance();
        [
            (faults.crashes && room, Kind::Crash),
            (faults.partitions, Kind::Partition),
            (faults.one_way_cuts, Kind::OneWay),
            (faults.holds, Kind::Hold),
            (faults.slow_links, Kind::SlowLink),
            (faults.pauses, Kind::Pause),
            (faults.full_disks && room, Kind::DiskFull),
            (faults.slow_disks, Kind::SlowDisk),
            (faults.slow_state_machines, Kind::SlowStateMachine),
        ]
        .into_iter()
        .filter_map(|(enabled, kind)| enabled.then_some(kind))
        .collect()
    }

    fn start_one<W: Workload>(&mut self, sim: &mut Sim<'_>, registry: &Registry<W>, now: Duration) {
        let kinds = self.kinds();
        if kinds.is_empty() {
            return;
        }
        let kind = kinds[self.draw.random_range(0..kinds.len())];
        let node = self.members[self.draw.random_range(0..self.members.len())];
        let other = self.members[self.draw.random_range(0..self.members.len())];
        if self.lost.contains(&node) {
            return;
        }
        match kind {
            Kind::Crash => self.crash(sim, registry, now, node),
            Kind::Partition => self.partition(sim, now),
            Kind::OneWay if node != other => {
                sim.partition_oneway(host_name(node), host_name(other));
                self.counts.one_way_cuts += 1;
                self.note(now, format!("cut {node} -> {other}"));
                let end = now + self.random_duration(100, 3_000);
                self.active.insert(Lasting::OneWay(node, other), end);
            }
            Kind::Hold if !self.active.contains_key(&Lasting::Hold(node)) => {
                for &peer in &self.members {
                    if peer != node {
                        sim.hold(host_name(node), host_name(peer));
                    }
                }
                self.counts.holds += 1;
                self.note(now, format!("hold node {node}"));
                let end = now + self.random_duration(50, 1_500);
                self.active.insert(Lasting::Hold(node), end);
            }
            Kind::SlowLink if node != other => {
                let latency = self.random_duration(10, 150);
                sim.set_link_max_message_latency(host_name(node), host_name(other), latency);
                self.counts.slow_links += 1;
                self.note(
                    now,
                    format!("slow link {node} <-> {other}: up to {latency:?}"),
                );
                let end = now + self.random_duration(200, 3_000);
                self.active.insert(Lasting::SlowLink(node, other), end);
            }
            Kind::Pause if !self.active.contains_key(&Lasting::Pause(node)) => {
                registry.host(node).pause();
                registry.with_slot(node, |slot| slot.pause_events += 1);
                self.counts.pauses += 1;
                self.note(now, format!("pause node {node}"));
                let end = now + self.random_duration(50, 2_000);
                self.active.insert(Lasting::Pause(node), end);
            }
            Kind::DiskFull if !self.active.contains_key(&Lasting::DiskFull(node)) => {
                registry.host(node).set_disk_full(true);
                registry.with_slot(node, |slot| slot.disk_full = true);
                self.counts.full_disks += 1;
                self.note(now, format!("fill node {node}'s disk"));
                let end = now + self.random_duration(100, 1_500);
                self.active.insert(Lasting::DiskFull(node), end);
            }
            Kind::SlowDisk if !self.active.contains_key(&Lasting::SlowDisk(node)) => {
                let latency = Duration::from_micros(self.draw.random_range(500..=20_000));
                registry.host(node).set_disk_latency(latency);
                self.counts.slow_disks += 1;
                self.note(now, format!("slow node {node}'s disk: {latency:?} a call"));
                let end = now + self.random_duration(200, 3_000);
                self.active.insert(Lasting::SlowDisk(node), end);
            }
            Kind::SlowStateMachine
                if !self.active.contains_key(&Lasting::SlowStateMachine(node)) =>
            {
                let cost = self.draw.random_range(200..=30_000);
                registry.apply_cost(node).store(cost, Ordering::Relaxed);
                self.counts.slow_state_machines += 1;
                self.note(
                    now,
                    format!("slow node {node}'s state machine: {cost} us an apply"),
                );
                let end = now + self.random_duration(200, 3_000);
                self.active.insert(Lasting::SlowStateMachine(node), end);
            }
            _ => {}
        }
    }

    fn crash<W: Workload>(
        &mut self,
        sim: &mut Sim<'_>,
        registry: &Registry<W>,
        now: Duration,
        node: NodeId,
    ) {
        if registry.process(node) != Process::Up || self.active.contains_key(&Lasting::Down(node)) {
            return;
        }
        if self.draw.random_bool(0.5) {
            // The power goes in the middle of storage work, a few operations from now: a
            // crash between any two file operations of an append, a snapshot, a cut.
            let operations = self.draw.random_range(0..8);
            registry.host(node).lose_power_after(operations);
            self.note(
                now,
                format!("node {node} loses power within {operations} storage operations"),
            );
            let back = now + self.random_duration(200, 2_000);
            self.active.insert(Lasting::Down(node), back);
            return;
        }
        registry.host(node).crashing();
        sim.crash(host_name(node));
        registry.set_crashed(node);
        registry.host(node).resume();
        self.active.remove(&Lasting::Pause(node));
        self.counts.crashes += 1;
        self.note(now, format!("crash node {node}"));
        // Corrupt its files before it restarts, now and then, while no voter is lost yet.
        if self.faults.corruption
            && self.full.get()
            && self.lost.is_empty()
            && self.draw.random_bool(0.15)
        {
            let corruption = match self.draw.random_range(0..3) {
                0 => Corruption::FlippedBit,
                1 => Corruption::ZeroedSegment,
                _ => Corruption::FlippedBitInLastBatch,
            };
            registry.with_slot(node, |slot| slot.corrupt_before_start = Some(corruption));
            self.counts.corruptions += 1;
            self.note(now, format!("corrupt node {node}'s files: {corruption:?}"));
        }
        let back = now + self.random_duration(50, 2_000);
        self.active.insert(Lasting::Down(node), back);
    }

    fn partition(&mut self, sim: &mut Sim<'_>, now: Duration) {
        let mut side: Vec<NodeId> = Vec::new();
        let mut rest: Vec<NodeId> = Vec::new();
        for &id in &self.members {
            if self.draw.random_bool(0.5) {
                side.push(id);
            } else {
                rest.push(id);
            }
        }
        if side.is_empty() || rest.is_empty() {
            return;
        }
        for &a in &side {
            for &b in &rest {
                sim.partition(host_name(a), host_name(b));
            }
        }
        self.counts.partitions += 1;
        self.note(now, format!("partition {side:?} | {rest:?}"));
        let end = now + self.random_duration(100, 3_000);
        self.active.insert(Lasting::Partition(side, rest), end);
    }

    fn end<W: Workload>(
        &mut self,
        sim: &mut Sim<'_>,
        registry: &Registry<W>,
        now: Duration,
        fault: &Lasting,
    ) {
        match fault {
            Lasting::Partition(side, rest) => {
                for &a in side {
                    for &b in rest {
                        sim.repair(host_name(a), host_name(b));
                    }
                }
                self.note(now, format!("heal partition {side:?} | {rest:?}"));
            }
            Lasting::OneWay(from, to) => {
                sim.repair_oneway(host_name(*from), host_name(*to));
                self.note(now, format!("heal cut {from} -> {to}"));
            }
            Lasting::Hold(node) => {
                for &peer in &self.members {
                    if peer != *node {
                        sim.release(host_name(*node), host_name(peer));
                    }
                }
                self.note(now, format!("release node {node}"));
            }
            Lasting::SlowLink(a, b) => {
                sim.set_link_max_message_latency(host_name(*a), host_name(*b), LINK_LATENCY_MAX);
                self.note(now, format!("link {a} <-> {b} back to normal"));
            }
            Lasting::Pause(node) => {
                registry.host(*node).resume();
                registry.with_slot(*node, |slot| slot.pause_events += 1);
                self.note(now, format!("resume node {node}"));
            }
            Lasting::DiskFull(node) => {
                registry.host(*node).set_disk_full(false);
                registry.with_slot(*node, |slot| slot.disk_full = false);
                self.note(now, format!("free node {node}'s disk"));
            }
            Lasting::SlowDisk(node) => {
                registry.host(*node).set_disk_latency(Duration::ZERO);
                self.note(now, format!("node {node}'s disk back to normal"));
            }
            Lasting::SlowStateMachine(node) => {
                registry.apply_cost(*node).store(0, Ordering::Relaxed);
                self.note(now, format!("node {node}'s state machine back to normal"));
            }
            Lasting::Down(node) => match registry.process(*node) {
                Process::Crashed | Process::Stopped(_) => {
                    // A process that stopped by itself (a failed fsync, a full disk) may have
                    // left writes in the page cache only, which its successor reads back: the
                    // machine then going down soon after the restart is what tests that.
                    if self.faults.crashes
                        && matches!(registry.process(*node), Process::Stopped(_))
                        && self.draw.random_bool(0.5)
                    {
                        let operations = self.draw.random_range(0..8);
                        registry.with_slot(*node, |slot| {
                            slot.power_loss_on_start = Some(operations);
                        });
                        self.note(
                            now,
                            format!("node {node} will lose power within {operations} storage operations of its restart"),
                        );
                    }
                    registry.host(*node).crashing();
                    sim.bounce(host_name(*node));
                    self.counts.restarts += 1;
                    self.note(now, format!("restart node {node}"));
                }
                // A planned power loss that never came: the node did no storage work.
                Process::Up => registry.host(*node).cancel_power_loss(),
                Process::Starting | Process::Lost(_) => {}
            },
        }
    }

    /// Ends every fault now, stops injecting, and restarts every node that is down.
    pub(crate) fn heal<W: Workload>(&mut self, sim: &mut Sim<'_>, registry: &Registry<W>) {
        let now = sim.elapsed();
        self.note(now, "heal everything".to_string());
        for &id in &self.members {
            registry.host(id).set_fsync_failure_probability(0.0);
        }
        // No faults first, so that the restarts below plan no power loss either.
        self.faults = Faults {
            io_error_probability: self.faults.io_error_probability,
            ..Faults::none()
        };
        for fault in std::mem::take(&mut self.active).into_keys() {
            self.end(sim, registry, now, &fault);
        }
        // Power losses the storage planned into installs that have not come yet.
        registry.stored_logs().plan_power_losses = false;
        for &id in &self.members {
            let host = registry.host(id);
            if !host.powered_off() {
                host.cancel_power_loss();
            }
        }
    }
}
