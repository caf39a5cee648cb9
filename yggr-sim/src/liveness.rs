//! The liveness phase: after the chaos, heal everything and require the cluster to recover.
//!
//! Healing means: the partition is lifted, crashed nodes restart, the network stops dropping,
//! duplicating and holding back messages (those already held back are released), and every
//! write is flushed at once. Then, within [`LIVENESS_BOUND_ELECTION_TIMEOUTS`] maximum
//! election timeouts of simulated time, the cluster must reach a state where:
//! - exactly one node believes it leads, and it has committed an entry of its term;
//! - every proposal a client is waiting on is answered, and every read too;
//! - every member of the leader's configuration holds the leader's log, commit index and
//!   configuration, and has applied everything committed;
//!
//! and then serve a fresh write (acknowledged, and applied on every member) and a fresh read.
//! Finally every write ever acknowledged must be in the applied history, and what the healed
//! run cost (elections, time to converge, campaigns by followers of a live leader during a
//! watch of one maximum election timeout) must stay within a [`LivenessBaseline`] derived
//! from its configuration. A run that does not
//! get there fails like a safety violation, with its seed and a replay command, and the state
//! of every node.
//!
//! In half the runs the phase first keeps one node down (the one with the longest log that
//! every configuration can do without) and requires the rest to do all of the above on their
//! own, left-out node excepted; then it restarts that node and requires it again of everyone.
//! Raft promises progress with any majority up, and a majority that needs a slow follower (one
//! that must install a long snapshot, say) is where a leader that deposes itself too eagerly
//! stalls the cluster.

use std::collections::BTreeMap;

use rand::RngExt;
use yggr_core::{EngineConfig, EntryPayload, Membership, NodeId, Role};

use crate::checker::{Invariant, Violation};
use crate::harness::{Cluster, Command, SimError};
use crate::history::ProposalOutcome;
use crate::network::NetworkFaults;
use crate::options::Clocks;
use crate::policy::Schedule;

/// How long a healed cluster may take to recover, in maximum election timeouts.
pub const LIVENESS_BOUND_ELECTION_TIMEOUTS: u64 = 60;

/// What a healed run may cost at most, derived from its configuration: the cluster's size,
/// the election timeouts and the clocks' drift bound. A run above it fails like a liveness
/// violation: an election timer that misbehaves only costs extra elections, or followers that
/// campaign against a leader they hear from, and nothing else would notice.
///
/// How each figure was chosen (`examples/liveness_costs.rs` prints the data):
/// - **Elections** until the healed cluster converges, by the voters of the configuration it
///   converges on: `3 × (N + ⌈emax / w⌉)`, with `N` the
///   nodes, `emax` the maximum election timeout and `w = emax − emin` the number of values a
///   timeout is drawn from. One election normally suffices. One fails when its candidate's
///   log is behind a majority's (up to `N − 1` such candidates may time out before one that can
///   win; without pre-vote each costs a term), or when another timer fires close enough to split
///   the vote, which gets likelier as `w` narrows next to `emax`. Over 7,200 runs of the six
///   suites (budget 2) the correct engine's worst was 17 elections where `N + ⌈emax / w⌉` is 11
///   (five nodes, timeouts 10 to 12, no pre-vote); three times that sum leaves room for the
///   tail. With drifting clocks it is multiplied by `⌈(1 + d) / (1 − d)⌉`, `d` the drift bound:
///   a node whose clock runs that many times faster than the one that can win may fail that
///   many campaigns during one of its timeouts (a lease of one tick allows `d` above 0.8, a
///   factor of ten). 12,000 runs of each suite (budget 20) stayed within it.
/// - **Ticks to converge**: `(3 × (N + ⌈emax / w⌉) + 2) × ⌈emax / (1 − d)⌉`, `d` the drift
///   bound (zero for independent clocks, which run at one rate once healed): every round of
///   elections allowed above may cost a maximum election timeout on the slowest clock, and two
///   more cover catching the members up (a long log, a snapshot sent in small chunks). Over the
///   7,200 runs the worst used a fifth of it.
/// - **Campaigns while led**: none, when `(h + 1) / (1 − d) < (emin − 1) / (1 + d)` (`h` the
///   heartbeat interval): the longest real time between two heartbeats reaching a follower
///   (the interval on the slowest leader clock, plus one of its ticks for a heartbeat that waits
///   in the network) is shorter than the shortest election timeout on the fastest follower
///   clock (`emin − 1` whole ticks: the first may come at once). A follower of a live leader on
///   a healed network then has no reason to campaign, and one that does is counted (campaigns
///   at the leader's request, by TimeoutNow, excepted). Watched for one maximum election
///   timeout after the fresh requests were served. Independent clocks run at one rate once
///   healed, so every run of the five suites without a lease is held to it; lease runs whose
///   drift bound lets a fast follower outwait a slow leader's heartbeats are not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LivenessBaseline {
    /// The most elections a healed cluster may start before it converges.
    pub elections: u64,
    /// The most ticks (of an average clock) it may take to converge.
    pub ticks_to_converge: u64,
    /// Whether the voters of a live leader's configuration must not campaign at all.
    pub quiet_while_led: bool,
}

impl LivenessBaseline {
    /// The baseline of a cluster of `nodes` with `engine`'s settings and `clocks`.
    pub fn for_run(nodes: u64, engine: &EngineConfig, clocks: Clocks) -> LivenessBaseline {
        let min = engine.election_timeout_min_ticks;
        let max = engine.election_timeout_max_ticks;
        let width = max.saturating_sub(min).max(1);
        let rounds = 3 * (nodes + max.div_ceil(width));
        let drift = match clocks {
            Clocks::Independent => 0.0,
            Clocks::Drifting {
                max_drift_per_mille,
            } => f64::from(max_drift_per_mille) / 1000.0,
        };
        // How many times faster the fastest clock may run than the slowest.
        let rate_ratio = ((1.0 + drift) / (1.0 - drift)).ceil() as u64;
        let slowest_timeout = (max as f64 / (1.0 - drift)).ceil() as u64;
        // Real time between two heartbeats reaching a follower, at worst: the interval on the
        // slowest clock, and one more of its ticks for a heartbeat that waits in the network
        // while time passes. The shortest election timeout on the fastest clock: its first
        // tick may come at once, so `min − 1` whole ticks.
        let heartbeat_gap = (engine.heartbeat_interval_ticks + 1) as f64 / (1.0 - drift);
        let shortest_timeout = min.saturating_sub(1) as f64 / (1.0 + drift);
        LivenessBaseline {
            elections: rounds * rate_ratio,
            ticks_to_converge: (rounds + 2) * slowest_timeout,
            quiet_while_led: heartbeat_gap < shortest_timeout,
        }
    }

    /// What `report` spent beyond this baseline, if anything.
    pub fn excess(&self, report: &LivenessReport) -> Option<String> {
        if report.elections_to_converge > self.elections {
            return Some(format!(
                "the healed cluster started {} elections before it converged; its baseline is {}",
                report.elections_to_converge, self.elections
            ));
        }
        if report.ticks_to_converge > self.ticks_to_converge {
            return Some(format!(
                "the healed cluster took {} ticks to converge; its baseline is {}",
                report.ticks_to_converge, self.ticks_to_converge
            ));
        }
        if self.quiet_while_led && report.campaigns_while_led > 0 {
            return Some(format!(
                "voters of a live leader's configuration started {} campaigns on a healed \
                 network, where its heartbeats come well within every election timeout",
                report.campaigns_while_led
            ));
        }
        None
    }
}

/// What the liveness phase measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LivenessReport {
    /// Ticks (of an average clock) from healing until the cluster had converged.
    pub ticks_to_converge: u64,
    /// Ticks from healing until the fresh write and read were served.
    pub ticks_to_serve: u64,
    /// Real elections (terms started) from healing until the cluster had converged, by the
    /// voters of the configuration it converged on. (A removed node that does not know it was
    /// removed campaigns on its own; pre-vote and the leader-contact rule keep it from
    /// disturbing the others, and that is not what this measures.)
    pub elections_to_converge: u64,
    /// Campaigns (pre-vote rounds and elections) that voters of the leader's configuration
    /// started, while another node led the term they were in, during a watch of one maximum
    /// election timeout after the fresh requests were served: followers campaigning against a
    /// live leader they can reach.
    pub campaigns_while_led: u64,
}

/// Heals `cluster` and checks that it recovers; see the module documentation.
///
/// # Errors
/// [`SimError`] with [`Invariant::Liveness`] naming what did not happen in time, or any
/// safety violation met on the way.
pub fn heal_and_check(
    cluster: &mut Cluster,
    schedule: &mut Schedule,
) -> Result<LivenessReport, SimError> {
    schedule.heal(cluster)?;
    heal(cluster)?;
    let start = schedule.node_ticks();
    let elections_at_heal = elections(cluster);
    if cluster.rng.random_bool(MINORITY_DOWN_SHARE)
        && let Some(down) = node_a_majority_can_do_without(cluster)
    {
        cluster.coverage.minority_down_phases += 1;
        cluster.trace.note(
            cluster.step_count,
            format!("liveness phase: node {down} stays down until the others serve"),
        );
        cluster.crash(down, false)?;
        recover(cluster, schedule, Some(down))?;
        cluster.restart(down)?;
    }
    let recovered = recover(cluster, schedule, None)?;
    let campaigns_while_led = watch_the_led_cluster(cluster, schedule)?;
    let nodes = cluster.nodes.len() as u64;
    let report = LivenessReport {
        ticks_to_converge: (recovered.converged_at - start) / nodes,
        ticks_to_serve: (recovered.served_at - start) / nodes,
        elections_to_converge: elections_by_voters(
            cluster,
            recovered.leader,
            &elections_at_heal,
            &recovered.elections_at_convergence,
        ),
        campaigns_while_led,
    };
    let clocks = cluster
        .run_options
        .as_ref()
        .map_or(Clocks::Independent, |options| options.workload.clocks);
    let baseline = LivenessBaseline::for_run(nodes, cluster.engine_config(), clocks);
    if let Some(excess) = baseline.excess(&report) {
        return Err(liveness_failure(cluster, excess));
    }
    Ok(report)
}

/// Real elections each node started so far.
fn elections(cluster: &Cluster) -> BTreeMap<NodeId, u64> {
    cluster
        .campaigns
        .iter()
        .map(|(node, campaigns)| (*node, campaigns.elections))
        .collect()
}

/// Elections the voters of `leader`'s configuration started between `then` and `now`.
fn elections_by_voters(
    cluster: &Cluster,
    leader: NodeId,
    then: &BTreeMap<NodeId, u64>,
    now: &BTreeMap<NodeId, u64>,
) -> u64 {
    let Some(engine) = cluster.engine(leader) else {
        return 0;
    };
    engine
        .membership()
        .voters
        .iter()
        .map(|voter| now.get(voter).copied().unwrap_or(0) - then.get(voter).copied().unwrap_or(0))
        .sum()
}

/// Runs the healed, served cluster for one maximum election timeout more and counts the
/// campaigns the voters of the leader's configuration start meanwhile against a live leader
/// of their term: every one of them hears from it over a network that loses nothing. (A
/// leader deposed by a newer term from outside, say a removed node's that reached it without
/// pre-vote, leaves no live leader, and the campaigns that follow do not count.)
fn watch_the_led_cluster(cluster: &mut Cluster, schedule: &mut Schedule) -> Result<u64, SimError> {
    let nodes = cluster.nodes.len() as u64;
    let window = cluster.engine_config().election_timeout_max_ticks;
    let before = cluster.campaigns.clone();
    let start = schedule.node_ticks();
    while (schedule.node_ticks() - start) / nodes < window {
        schedule.healed_step(cluster)?;
    }
    let Some(leader) = cluster.leader().and_then(|leader| cluster.engine(leader)) else {
        return Ok(0);
    };
    let started = leader
        .membership()
        .voters
        .iter()
        .map(|voter| {
            let now = cluster.campaigns.get(voter).copied().unwrap_or_default();
            let then = before.get(voter).copied().unwrap_or_default();
            now.against_a_live_leader - then.against_a_live_leader
        })
        .sum();
    Ok(started)
}

/// How often the liveness phase first keeps one node down: a majority must serve on its
/// own, which is where a follower the majority needs (one that is slow to catch up, say)
/// must not stall the cluster.
const MINORITY_DOWN_SHARE: f64 = 0.5;

/// When a healed cluster converged and served, as [`recover`] saw it.
struct Recovered {
    /// The schedule's node ticks when it had converged.
    converged_at: u64,
    /// The schedule's node ticks when it had served the fresh requests.
    served_at: u64,
    /// The leader it converged on.
    leader: NodeId,
    /// Elections each node had started by then, since the run began.
    elections_at_convergence: BTreeMap<NodeId, u64>,
}

/// Runs the healed cluster until it converges and serves a fresh write and read, with
/// `down` (if any) left out of every check.
fn recover(
    cluster: &mut Cluster,
    schedule: &mut Schedule,
    down: Option<NodeId>,
) -> Result<Recovered, SimError> {
    let nodes = cluster.nodes.len() as u64;
    let bound_ticks =
        LIVENESS_BOUND_ELECTION_TIMEOUTS * cluster.engine_config().election_timeout_max_ticks;
    let start = schedule.node_ticks();
    let elapsed = |schedule: &Schedule| (schedule.node_ticks() - start) / nodes;
    let without = match down {
        Some(node) => format!(" with node {node} down"),
        None => String::new(),
    };
    loop {
        let reason = match converged(cluster, down) {
            Ok(leader) => {
                let converged_at = schedule.node_ticks();
                let elections_at_convergence = elections(cluster);
                serve_fresh_requests(cluster, schedule, leader, down, |s| {
                    elapsed(s) <= bound_ticks
                })?;
                check_acknowledged_writes(cluster)?;
                return Ok(Recovered {
                    converged_at,
                    served_at: schedule.node_ticks(),
                    leader,
                    elections_at_convergence,
                });
            }
            Err(reason) => reason,
        };
        if elapsed(schedule) > bound_ticks {
            return Err(liveness_failure(
                cluster,
                format!(
                    "the healed cluster did not converge{without} within {bound_ticks} ticks: {reason}"
                ),
            ));
        }
        schedule.healed_step(cluster)?;
    }
}

/// The node to keep down for a majority-only phase: one whose absence leaves a majority of
/// every configuration any node's log holds (at least three voters wherever it votes), and
/// among those the one with the longest log, so that the majority left is more likely to
/// need a follower that is behind.
fn node_a_majority_can_do_without(cluster: &Cluster) -> Option<NodeId> {
    let configurations: Vec<Membership> = cluster
        .ids()
        .into_iter()
        .filter_map(|id| cluster.engine(id))
        .flat_map(|engine| {
            let logged = engine
                .log_entries()
                .filter_map(|entry| match &entry.payload {
                    EntryPayload::ConfigChange { membership, .. } => Some(membership.clone()),
                    _ => None,
                });
            [
                engine.membership().clone(),
                engine.committed_membership().clone(),
            ]
            .into_iter()
            .chain(logged)
            .collect::<Vec<_>>()
        })
        .collect();
    cluster
        .ids()
        .into_iter()
        .filter(|id| {
            configurations
                .iter()
                .all(|membership| !membership.is_voter(*id) || membership.voters.len() >= 3)
        })
        .filter_map(|id| {
            cluster
                .engine(id)
                .map(|engine| (engine.last_log_index(), id))
        })
        .max()
        .map(|(_, id)| id)
}

/// Heals what the schedule does not own: the network's faults and crashed nodes.
fn heal(cluster: &mut Cluster) -> Result<(), SimError> {
    cluster.network.set_faults(NetworkFaults::NONE);
    cluster.network.release_all_delayed();
    let down: Vec<NodeId> = cluster
        .nodes
        .values()
        .filter(|node| !node.is_up())
        .map(|node| node.id)
        .collect();
    for node in down {
        cluster.restart(node)?;
    }
    cluster.flush_all()
}

/// The leader, if the cluster has converged; otherwise what is still missing.
fn converged(cluster: &Cluster, down: Option<NodeId>) -> Result<NodeId, String> {
    let leaders = cluster.believed_leaders();
    let [leader] = leaders[..] else {
        return Err(format!(
            "{} nodes believe they lead ({leaders:?})",
            leaders.len()
        ));
    };
    let engine = cluster.engine(leader).ok_or("the leader is down")?;
    if engine.term_at(engine.commit_index()) != Some(engine.current_term()) {
        return Err(format!(
            "leader {leader} has committed nothing in its term {}",
            engine.current_term()
        ));
    }
    if let Some((command, outcome)) = cluster.history.pending_proposals().next() {
        return Err(format!("write {command} still unanswered ({outcome:?})"));
    }
    if let Some(((node, id), read)) = cluster.history.pending_reads().next() {
        return Err(format!(
            "read {id} at node {node} (sent at step {}) still unanswered",
            read.sent_at_step
        ));
    }
    let membership = engine.membership().clone();
    for member in membership.members().filter(|member| Some(*member) != down) {
        let Some(other) = cluster.engine(member) else {
            return Err(format!("member {member} is down"));
        };
        let sim = &cluster.nodes[&member];
        let lagging = other.last_log_index() != engine.last_log_index()
            || other.last_log_term() != engine.last_log_term()
            || other.commit_index() != engine.commit_index()
            || sim.state_machine.last_applied != engine.commit_index()
            || other.membership() != &membership;
        if lagging {
            return Err(format!(
                "member {member} has log {}/{} commit {} applied {} membership {:?}; leader {leader} has {}/{} commit {} membership {membership:?}",
                other.last_log_index(),
                other.last_log_term(),
                other.commit_index(),
                sim.state_machine.last_applied,
                other.membership(),
                engine.last_log_index(),
                engine.last_log_term(),
                engine.commit_index(),
            ));
        }
        if other.role() == Role::Leader && member != leader {
            return Err(format!("member {member} still leads"));
        }
    }
    Ok(leader)
}

/// Sends a fresh write and a fresh read to `leader` and runs until the write is acknowledged
/// and applied by every member and a read is served, or fails once `within_bound` says the
/// time is up. Like a client, it sends a refused or failed request again, to whichever node
/// leads then (a transfer started during the chaos may still be under way, say).
fn serve_fresh_requests(
    cluster: &mut Cluster,
    schedule: &mut Schedule,
    leader: NodeId,
    down: Option<NodeId>,
    within_bound: impl Fn(&Schedule) -> bool,
) -> Result<(), SimError> {
    let mut command = cluster.propose(leader)?;
    let mut reads_served = cluster.coverage.reads_served;
    cluster.propose_read(leader)?;
    let mut read_served = false;
    loop {
        if !read_served && cluster.history.pending_reads().next().is_none() {
            read_served = cluster.coverage.reads_served > reads_served;
            if !read_served && let Some(leader) = cluster.leader() {
                reads_served = cluster.coverage.reads_served;
                cluster.propose_read(leader)?;
            }
        }
        let outcome = cluster.history.outcome(command);
        let answered_without_success = matches!(
            outcome,
            Some(ProposalOutcome::Refused | ProposalOutcome::Indeterminate)
        );
        if answered_without_success && let Some(leader) = cluster.leader() {
            command = cluster.propose(leader)?;
        }
        if read_served && written_everywhere(cluster, command, down) {
            return Ok(());
        }
        if !within_bound(schedule) {
            return Err(liveness_failure(
                cluster,
                format!(
                    "the healed cluster did not serve a fresh write ({:?}) and read ({}) in time",
                    cluster.history.outcome(command),
                    if read_served { "served" } else { "not served" }
                ),
            ));
        }
        schedule.healed_step(cluster)?;
    }
}

/// Whether `command` was acknowledged and every member of the leader's configuration (but
/// `down`) applied it.
fn written_everywhere(cluster: &Cluster, command: Command, down: Option<NodeId>) -> bool {
    let Some(ProposalOutcome::Acknowledged { index }) = cluster.history.outcome(command) else {
        return false;
    };
    let Some(leader) = cluster.leader().and_then(|leader| cluster.engine(leader)) else {
        return false;
    };
    leader.membership().members().all(|member| {
        Some(member) == down
            || cluster
                .nodes
                .get(&member)
                .is_some_and(|node| node.state_machine.last_applied >= index)
    })
}

fn check_acknowledged_writes(cluster: &Cluster) -> Result<(), SimError> {
    for (command, index) in cluster.history.acknowledged() {
        cluster
            .checker
            .check_acknowledged_write(command, index)
            .map_err(|violation| cluster.violation(violation))?;
    }
    Ok(())
}

/// A liveness failure, with every node's state appended: the first thing anyone diagnosing
/// it needs.
fn liveness_failure(cluster: &Cluster, detail: String) -> SimError {
    let mut detail = detail;
    for id in cluster.ids() {
        detail.push_str(&format!("\n  {}", node_state(cluster, id)));
    }
    cluster.violation(Violation {
        invariant: Invariant::Liveness,
        detail,
    })
}

/// One line describing `id`'s engine: role, term, vote, log, commit and configurations.
fn node_state(cluster: &Cluster, id: NodeId) -> String {
    let Some(engine) = cluster.engine(id) else {
        return format!("n{id}: down");
    };
    let ids = |set: &std::collections::BTreeSet<NodeId>| {
        set.iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "n{id}: {:?} term {} voted {:?} last log ({}, {}) commit {} applied {} snapshot {} \
         voters {{{}}} learners {{{}}} committed voters {{{}}} learners {{{}}}",
        engine.role(),
        engine.current_term().get(),
        engine.voted_for().map(NodeId::get),
        engine.last_log_index().get(),
        engine.last_log_term().get(),
        engine.commit_index().get(),
        engine.last_applied().get(),
        engine.snapshot_index().get(),
        ids(&engine.membership().voters),
        ids(&engine.membership().learners),
        ids(&engine.committed_membership().voters),
        ids(&engine.committed_membership().learners),
    )
}
