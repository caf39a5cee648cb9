//! The steady phase: once the healed cluster has converged, it must stay quiet while it works
//! under the loads a correct runtime absorbs without losing its leader or its manners.
//!
//! Two windows, with clients writing throughout:
//! 1. **A slow state machine on a follower** (an apply costs [`SLOW_APPLY`] µs): its apply
//!    backlog grows, and in runs with a small apply channel it fills. A prober sends that
//!    follower a write every [`PROBE_EVERY`]; each must come back as a redirect at once (the
//!    redirect rule of [`responsiveness`](super::responsiveness) judges them with the rest of
//!    the history).
//! 2. **A slow disk on the leader** (every storage call costs [`SLOW_DISK`], and it writes
//!    [`DISK_BANDWIDTH`] bytes a second) while snapshots are taken, each made
//!    [`SNAPSHOT_BALLAST`] bytes larger: the leader must go on heartbeating while it writes
//!    them, so no follower campaigns.
//!
//! Then a leadership transfer to another voter, whose connections to the other followers
//! have carried nothing since the last election (they are kept alive, or must be found
//! closed and reopened, without losing a vote).
//!
//! The rules of the phase: no node's term moves during the windows, and the transfer takes
//! exactly one election, within [`TRANSFER_LIMIT`]. Nothing fails, nothing is cut off, so
//! every extra election here is a cost the runtime should not have paid.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use yggr::NodeId;

use super::clients::{Client, History, Request, now};
use super::cluster::Registry;
use super::workload::{Draw, Workload};

/// How long each window lasts, in simulated time.
pub(crate) const WINDOW: Duration = Duration::from_secs(2);
/// What one apply costs on the slowed follower, in microseconds of simulated time: several
/// times slower than the cluster commits, so its backlog grows for the whole window (and it
/// owes up to about `commit rate × window × cost` of simulated time when the window ends,
/// some fifteen seconds, which the final barrier waits out).
const SLOW_APPLY: u64 = 50_000;
/// What one storage call costs on the slowed leader.
const SLOW_DISK: Duration = Duration::from_millis(10);
/// How fast the slowed leader's disk writes, in bytes per simulated second.
const DISK_BANDWIDTH: u64 = 1 << 20;
/// What the leader adds to each snapshot it takes meanwhile: writing one costs a quarter of
/// a second, longer than the longest election timeout, so it must not hold up heartbeats.
const SNAPSHOT_BALLAST: u64 = 256 << 10;
/// How long a transfer in the steady cluster may take to complete.
const TRANSFER_LIMIT: Duration = Duration::from_secs(2);
/// How often the prober writes to the slowed follower.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// What the steady phase found.
#[derive(Clone, Debug, Default)]
pub(crate) struct SteadyOutcome {
    /// When the phase ended and every live replica had applied the barrier written after it.
    pub(crate) done: Option<Duration>,
    /// The terms at its start and end, when they differ.
    pub(crate) election: Option<String>,
}

pub(crate) struct Steady<W: Workload> {
    pub(crate) workload: W,
    pub(crate) registry: Rc<Registry<W>>,
    pub(crate) history: History<W>,
    pub(crate) outcome: Rc<RefCell<SteadyOutcome>>,
    /// Clients to write throughout, and the first client index they may use.
    pub(crate) clients: u32,
    pub(crate) first_index: u32,
    pub(crate) think_time: Duration,
    pub(crate) seed: u64,
}

impl<W: Workload> Steady<W> {
    /// Runs both windows with `leader` leading at the start.
    pub(crate) async fn run(self, leader: NodeId) {
        let up = self.registry.up();
        let follower = up.iter().copied().find(|id| *id != leader);
        let before = self.highest_term().await;
        let stop = Rc::new(Cell::new(false));
        let reads = self
            .workload
            .read(&self.workload.state_machine(leader), 0)
            .is_some();
        let client = |index: u32| Client {
            index,
            workload: self.workload.clone(),
            registry: self.registry.clone(),
            history: self.history.clone(),
            stop: stop.clone(),
            draw: Draw::new(self.seed ^ u64::from(index).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            think_time: self.think_time,
            reads,
        };
        let writers: Vec<Client<W>> = (0..self.clients)
            .map(|offset| client(self.first_index + 1 + offset))
            .collect();
        let prober = client(self.first_index);
        let windows = async {
            if let Some(follower) = follower {
                let cost = self.registry.apply_cost(follower);
                cost.store(SLOW_APPLY, Ordering::Relaxed);
                // The window ends on time even if the follower holds a request back.
                let slow = async {
                    tokio::time::sleep(WINDOW).await;
                    cost.store(0, Ordering::Relaxed);
                };
                tokio::join!(slow, probe_follower(prober, follower));
            }
            let disk = self.registry.host(leader);
            let ballast = self.registry.snapshot_ballast(leader);
            disk.set_disk_latency(SLOW_DISK);
            disk.set_disk_bandwidth(DISK_BANDWIDTH);
            ballast.store(SNAPSHOT_BALLAST, Ordering::Relaxed);
            tokio::time::sleep(WINDOW).await;
            ballast.store(0, Ordering::Relaxed);
            disk.set_disk_latency(Duration::ZERO);
            disk.set_disk_bandwidth(0);
            stop.set(true);
        };
        let writing = futures_join_all(writers.into_iter().map(Client::run));
        tokio::join!(windows, writing);
        let after = self.highest_term().await;
        let election = if after != before {
            Some(format!(
                "the healed cluster changed terms in its steady phase (a slow follower's state machine, then a slow leader's disk, nothing cut off): term {before} at its start, {after} at its end"
            ))
        } else {
            self.transfer(leader, follower, after).await
        };
        self.outcome.borrow_mut().election = election;
    }

    /// Hands leadership from `leader` to another voter than `slowed`, whose connections to the followers
    /// have been idle since the last election: it must lead within [`TRANSFER_LIMIT`], in
    /// the next term (one election, every vote delivered). What it says when not.
    async fn transfer(&self, leader: NodeId, slowed: Option<NodeId>, term: u64) -> Option<String> {
        // Not to the follower whose state machine is still working off its backlog: as the
        // leader it could answer nothing until it had.
        let target = self
            .registry
            .up()
            .into_iter()
            .rev()
            .find(|id| *id != leader && Some(*id) != slowed)?;
        let (node, _) = self.registry.node(leader)?;
        if let Err(error) = node.transfer_leadership_to(target).await {
            return Some(format!(
                "the healed cluster's leader {leader} refused to hand leadership to node {target}: {error}"
            ));
        }
        let end = now() + TRANSFER_LIMIT;
        while now() < end {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let Some((node, _)) = self.registry.node(target) else {
                continue;
            };
            if let Ok(status) = node.status().await
                && status.role == yggr::Role::Leader
            {
                let reached = status.current_term.get();
                return (reached != term + 1).then(|| {
                    format!(
                        "a leadership transfer in the healed cluster took {} elections (term {term} to {reached}): every vote should have arrived the first time",
                        reached - term
                    )
                });
            }
        }
        Some(format!(
            "a leadership transfer in the healed cluster did not make node {target} lead within {TRANSFER_LIMIT:?}"
        ))
    }

    /// The highest term any node that is up reports.
    async fn highest_term(&self) -> u64 {
        let mut highest = 0;
        for id in self.registry.up() {
            if let Some((node, _)) = self.registry.node(id)
                && let Ok(status) = node.status().await
            {
                highest = highest.max(status.current_term.get());
            }
        }
        highest
    }
}

/// Writes to `follower` every [`PROBE_EVERY`] for a [`WINDOW`], recording each answer.
async fn probe_follower<W: Workload>(mut prober: Client<W>, follower: NodeId) {
    let end = now() + WINDOW;
    let mut sequence = 0u64;
    while now() < end {
        sequence += 1;
        let id = (u64::from(prober.index) << 40) | sequence;
        let command = prober.workload.command(&mut prober.draw);
        prober.send(id, follower, Request::Write(command)).await;
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// Runs every future to its end, polling them in turn on this task.
async fn futures_join_all<F: std::future::Future<Output = turmoil::Result>>(
    futures: impl Iterator<Item = F>,
) {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(|context| {
        pending.retain_mut(|future| future.as_mut().poll(context).is_pending());
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}
