//! The liveness phase's probe: once every fault is healed, a client that waits for the
//! cluster to agree on one leader and answer every request still outstanding, then writes a
//! barrier command and reads, and waits for every live replica to apply the barrier.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use yggr::{NodeId, ProposeError, Role};

use super::clients::{History, Operation, Outcome, Request, now};
use super::cluster::Registry;
use super::observed::{
    BARRIER_OPERATION, Entry, FINAL_BARRIER_OPERATION, Journal, Observed, Tagged,
};
use super::steady::Steady;
use super::workload::{Draw, Workload};

/// How far the probe got, and when (simulated time).
#[derive(Clone, Debug, Default)]
pub(crate) struct Progress {
    /// When one leader was known to every node that is up.
    pub(crate) leader_agreed: Option<Duration>,
    /// The highest term any node reported then.
    pub(crate) term: u64,
    /// When every client request had been answered.
    pub(crate) all_answered: Option<Duration>,
    /// Where the barrier was applied.
    pub(crate) barrier_position: Option<u64>,
    /// When the fresh read was served, at what position.
    pub(crate) read_position: Option<u64>,
    /// When every live replica had applied the barrier.
    pub(crate) converged: Option<Duration>,
    /// The nodes that had applied it then.
    pub(crate) replicas: Vec<NodeId>,
    /// Where the barrier written after the steady phase was applied, once every live
    /// replica had applied it.
    pub(crate) final_barrier_position: Option<u64>,
}

pub(crate) struct Probe<W: Workload> {
    pub(crate) workload: W,
    pub(crate) registry: Rc<Registry<W>>,
    pub(crate) history: History<W>,
    pub(crate) journal: Journal,
    pub(crate) progress: Rc<RefCell<Progress>>,
    /// Set once the operator has every member a voter again.
    pub(crate) restored: Rc<Cell<bool>>,
    pub(crate) draw: Draw,
    /// The steady phase to run once the replicas converged, if any.
    pub(crate) steady: Option<Steady<W>>,
}

const POLL: Duration = Duration::from_millis(10);

impl<W: Workload> Probe<W> {
    pub(crate) async fn run(mut self) -> turmoil::Result {
        while !self.restored.get() {
            tokio::time::sleep(POLL).await;
        }
        let leader = self.agree_on_leader().await;
        while self
            .history
            .borrow()
            .iter()
            .any(|operation| operation.outcome == Outcome::Pending)
        {
            tokio::time::sleep(POLL).await;
        }
        self.progress.borrow_mut().all_answered = Some(now());
        let position = self.barrier(leader, BARRIER_OPERATION).await;
        self.progress.borrow_mut().barrier_position = Some(position);
        if self
            .workload
            .read(&self.workload.state_machine(leader), 0)
            .is_some()
        {
            self.fresh_read(leader).await;
        }
        self.wait_for_replicas(position).await;
        if let Some(steady) = self.steady.take() {
            let leader = self.agree_on_leader().await;
            let outcome = steady.outcome.clone();
            steady.run(leader).await;
            // The replicas are compared again once the steady phase is over: a replica that
            // went wrong during it may have answered nothing.
            let leader = self.agree_on_leader().await;
            let position = self.barrier(leader, FINAL_BARRIER_OPERATION).await;
            self.wait_for_replicas(position).await;
            self.progress.borrow_mut().final_barrier_position = Some(position);
            outcome.borrow_mut().done = Some(now());
        }
        Ok(())
    }

    /// Waits until every node that is up names the same leader, which says it leads.
    async fn agree_on_leader(&self) -> NodeId {
        loop {
            tokio::time::sleep(POLL).await;
            let up = self.registry.up();
            let mut leaders = Vec::new();
            let mut term = 0;
            for &id in &up {
                let Some((node, _)) = self.registry.node(id) else {
                    continue;
                };
                if let Ok(status) = node.status().await {
                    term = term.max(status.current_term.get());
                    leaders.push((status.leader, status.role == Role::Leader, id));
                }
            }
            if leaders.is_empty() || leaders.len() != up.len() {
                continue;
            }
            let Some(leader) = leaders[0].0 else { continue };
            let agreed = leaders.iter().all(|(named, _, _)| *named == Some(leader));
            let leads = leaders
                .iter()
                .any(|(_, leading, id)| *leading && *id == leader);
            if agreed && leads {
                let mut progress = self.progress.borrow_mut();
                progress.leader_agreed = Some(now());
                progress.term = term;
                return leader;
            }
        }
    }

    /// Writes a barrier (`operation` is its id) through the leader (following redirects),
    /// recorded in the history like any client's write; returns its position.
    async fn barrier(&mut self, mut leader: NodeId, operation: u64) -> u64 {
        let command = self.workload.command(&mut self.draw);
        loop {
            let Some((node, _)) = self.registry.node(leader) else {
                tokio::time::sleep(POLL).await;
                leader = self.agree_on_leader().await;
                continue;
            };
            let invoked = now();
            let tagged = Tagged {
                operation,
                command: command.clone(),
            };
            match node.write(tagged).await {
                Ok(applied) => {
                    self.history.borrow_mut().push(Operation {
                        id: operation,
                        client: u32::MAX,
                        node: leader,
                        request: Request::Write(command),
                        invoked,
                        returned: Some(now()),
                        outcome: Outcome::Written {
                            position: applied.position,
                            response: applied.response,
                        },
                        redirect: None,
                    });
                    return applied.position;
                }
                Err(ProposeError::NotLeader { leader_hint }) => leader = leader_hint,
                Err(_) => {
                    // Refused or unknown: the barrier cannot be retried under the same id if
                    // it may have applied, so this is a liveness failure the runner reports
                    // by timing out.
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    async fn fresh_read(&self, leader: NodeId) {
        let Some((node, _)) = self.registry.node(leader) else {
            return;
        };
        if let Ok(position) = node
            .read_linearizable(|state: &Observed<W>| state.position)
            .await
        {
            self.progress.borrow_mut().read_position = Some(position);
        }
    }

    /// Waits until every node that is up has applied the barrier (or restored a snapshot
    /// past it) in its current start. The journal is read once, as it grows.
    async fn wait_for_replicas(&self, position: u64) {
        let mut scanned = 0;
        let mut reached: BTreeSet<(NodeId, u32)> = BTreeSet::new();
        loop {
            tokio::time::sleep(POLL).await;
            {
                let journal = self
                    .journal
                    .lock()
                    .expect("the journal's lock is never poisoned");
                for entry in &journal[scanned..] {
                    match entry {
                        Entry::Barrier {
                            node,
                            life,
                            position: at,
                            ..
                        } if *at == position => {
                            reached.insert((*node, *life));
                        }
                        Entry::Restored {
                            node,
                            life,
                            position: at,
                        } if *at >= position => {
                            reached.insert((*node, *life));
                        }
                        _ => {}
                    }
                }
                scanned = journal.len();
            }
            let up = self.registry.up();
            let all = up
                .iter()
                .all(|id| reached.contains(&(*id, self.registry.life(*id))));
            if !up.is_empty() && all {
                let mut progress = self.progress.borrow_mut();
                progress.converged = Some(now());
                progress.replicas = up;
                return;
            }
        }
    }
}
