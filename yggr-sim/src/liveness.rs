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
//! Finally every write ever acknowledged must be in the applied history. A run that does not
//! get there fails like a safety violation, with its seed and a replay command.

use yggr_core::{NodeId, Role};

use crate::checker::{Invariant, Violation};
use crate::harness::{Cluster, Command, SimError};
use crate::history::ProposalOutcome;
use crate::network::NetworkFaults;
use crate::policy::Schedule;

/// How long a healed cluster may take to recover, in maximum election timeouts.
pub const LIVENESS_BOUND_ELECTION_TIMEOUTS: u64 = 60;

/// What the liveness phase measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LivenessReport {
    /// Ticks (of an average clock) from healing until the cluster had converged.
    pub ticks_to_converge: u64,
    /// Ticks from healing until the fresh write and read were served.
    pub ticks_to_serve: u64,
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
    let nodes = cluster.nodes.len() as u64;
    let bound_ticks =
        LIVENESS_BOUND_ELECTION_TIMEOUTS * cluster.engine_config().election_timeout_max_ticks;
    let start = schedule.node_ticks();
    let elapsed = |schedule: &Schedule| (schedule.node_ticks() - start) / nodes;

    loop {
        let reason = match converged(cluster) {
            Ok(leader) => {
                let ticks_to_converge = elapsed(schedule);
                serve_fresh_requests(cluster, schedule, leader, |s| elapsed(s) <= bound_ticks)?;
                let ticks_to_serve = elapsed(schedule);
                check_acknowledged_writes(cluster)?;
                return Ok(LivenessReport {
                    ticks_to_converge,
                    ticks_to_serve,
                });
            }
            Err(reason) => reason,
        };
        if elapsed(schedule) > bound_ticks {
            return Err(liveness_failure(
                cluster,
                format!("the healed cluster did not converge within {bound_ticks} ticks: {reason}"),
            ));
        }
        schedule.healed_step(cluster)?;
    }
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
fn converged(cluster: &Cluster) -> Result<NodeId, String> {
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
    for member in membership.members() {
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
        if read_served && written_everywhere(cluster, command) {
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

/// Whether `command` was acknowledged and every member of the leader's configuration applied
/// it.
fn written_everywhere(cluster: &Cluster, command: Command) -> bool {
    let Some(ProposalOutcome::Acknowledged { index }) = cluster.history.outcome(command) else {
        return false;
    };
    let Some(leader) = cluster.leader().and_then(|leader| cluster.engine(leader)) else {
        return false;
    };
    leader.membership().members().all(|member| {
        cluster
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

fn liveness_failure(cluster: &Cluster, detail: String) -> SimError {
    cluster.violation(Violation {
        invariant: Invariant::Liveness,
        detail,
    })
}
