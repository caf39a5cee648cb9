//! The fault injector: between simulation steps, it crashes and restarts nodes, cuts and
//! heals links, holds a node's traffic and lets it all through at once, slows links. Every
//! choice comes from the run's seed; every action is written to the run's log.
//!
//! It never takes more than a minority of the voters down at once (crashed, or stopped by
//! an I/O error, or refusing to start), so a majority always holds every acknowledged write.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use turmoil::Sim;
use yggr::NodeId;

use super::cluster::{Process, Registry, host_name};
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
    /// The node is down (crashed or stopped) and restarts when this ends.
    Down(NodeId),
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
    /// Nodes that stopped by themselves (an I/O error, say), seen by the injector.
    pub stops: u64,
}

pub(crate) struct Injector {
    faults: Faults,
    members: Vec<NodeId>,
    draw: ChaCha8Rng,
    next_action: Duration,
    /// Each lasting fault and when it ends.
    active: BTreeMap<Lasting, Duration>,
    pub(crate) counts: FaultCounts,
    /// Every action, with its simulated time: part of the run's digest and its failure report.
    pub(crate) log: Vec<String>,
}

impl Injector {
    pub(crate) fn new(faults: Faults, members: Vec<NodeId>, seed: u64) -> Injector {
        Injector {
            faults,
            members,
            draw: ChaCha8Rng::seed_from_u64(seed ^ 0xfa01_7500),
            next_action: Duration::ZERO,
            active: BTreeMap::new(),
            counts: FaultCounts::default(),
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

    /// Ends what is due, schedules restarts of nodes that stopped by themselves, and takes a
    /// new action when one is due.
    pub(crate) fn act<W: Workload>(&mut self, sim: &mut Sim<'_>, registry: &Registry<W>) {
        let now = sim.elapsed();
        self.notice_stops(now, registry);
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

    /// A node that stopped by itself stays down for a while, then restarts.
    fn notice_stops<W: Workload>(&mut self, now: Duration, registry: &Registry<W>) {
        for &id in &self.members.clone() {
            if let Process::Stopped(reason) = registry.process(id)
                && !self.active.contains_key(&Lasting::Down(id))
            {
                self.counts.stops += 1;
                self.note(now, format!("node {id} stopped: {reason}"));
                let back = now + self.random_duration(100, 1_000);
                self.active.insert(Lasting::Down(id), back);
            }
        }
    }

    fn random_duration(&mut self, low_ms: u64, high_ms: u64) -> Duration {
        Duration::from_millis(self.draw.random_range(low_ms..=high_ms))
    }

    fn down_count(&self) -> usize {
        self.active
            .keys()
            .filter(|fault| matches!(fault, Lasting::Down(_)))
            .count()
    }

    fn start_one<W: Workload>(&mut self, sim: &mut Sim<'_>, registry: &Registry<W>, now: Duration) {
        let mut kinds = Vec::new();
        if self.faults.crashes && self.down_count() < self.tolerance() {
            kinds.push(0);
        }
        if self.faults.partitions {
            kinds.push(1);
        }
        if self.faults.one_way_cuts {
            kinds.push(2);
        }
        if self.faults.holds {
            kinds.push(3);
        }
        if self.faults.slow_links {
            kinds.push(4);
        }
        if kinds.is_empty() {
            return;
        }
        let kind = kinds[self.draw.random_range(0..kinds.len())];
        let node = self.members[self.draw.random_range(0..self.members.len())];
        let other = self.members[self.draw.random_range(0..self.members.len())];
        match kind {
            0 => {
                if registry.process(node) != Process::Up
                    || self.active.contains_key(&Lasting::Down(node))
                {
                    return;
                }
                sim.crash(host_name(node));
                registry.set_crashed(node);
                self.counts.crashes += 1;
                self.note(now, format!("crash node {node}"));
                let back = now + self.random_duration(50, 2_000);
                self.active.insert(Lasting::Down(node), back);
            }
            1 => {
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
            2 if node != other => {
                sim.partition_oneway(host_name(node), host_name(other));
                self.counts.one_way_cuts += 1;
                self.note(now, format!("cut {node} -> {other}"));
                let end = now + self.random_duration(100, 3_000);
                self.active.insert(Lasting::OneWay(node, other), end);
            }
            3 => {
                if self.active.contains_key(&Lasting::Hold(node)) {
                    return;
                }
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
            4 if node != other => {
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
            _ => {}
        }
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
            Lasting::Down(node) => match registry.process(*node) {
                Process::Crashed | Process::Stopped(_) => {
                    sim.bounce(host_name(*node));
                    self.counts.restarts += 1;
                    self.note(now, format!("restart node {node}"));
                }
                Process::Starting | Process::Up => {}
            },
        }
    }

    /// Ends every fault now and restarts every node that is down.
    pub(crate) fn heal<W: Workload>(&mut self, sim: &mut Sim<'_>, registry: &Registry<W>) {
        let now = sim.elapsed();
        self.note(now, "heal everything".to_string());
        for fault in std::mem::take(&mut self.active).into_keys() {
            self.end(sim, registry, now, &fault);
        }
        self.faults.crashes = false;
        self.faults.partitions = false;
        self.faults.one_way_cuts = false;
        self.faults.holds = false;
        self.faults.slow_links = false;
    }
}
