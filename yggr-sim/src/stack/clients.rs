//! Clients: turmoil hosts that send the workload's commands and reads to the nodes, one at a
//! time each, and write down what they asked and what they were told.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use yggr::{NodeId, ProposeError, ReadError};

use super::cluster::{Process, Registry};
use super::observed::{Applied, Tagged};
use super::workload::{Draw, Workload};

/// What a client asked for.
#[derive(Clone, Debug)]
pub(crate) enum Request<C> {
    /// A command, through `Node::write`.
    Write(C),
    /// A read of a key, through `Node::read_linearizable`.
    Read { key: u64 },
}

/// What the client was told.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome<R, Q> {
    /// No answer yet.
    Pending,
    /// The command was applied at `position` and answered `response`.
    Written { position: u64, response: R },
    /// The read was served from the state at `position`.
    Read { position: u64, value: Option<Q> },
    /// A definite refusal: the command was not, and will never be, applied.
    Refused(String),
    /// The command may or may not have been applied.
    Unknown(String),
    /// The read failed (it says nothing about the state).
    ReadFailed(String),
}

/// One request and its answer. Times are simulated.
#[derive(Clone, Debug)]
pub(crate) struct Operation<C, R, Q> {
    pub(crate) id: u64,
    pub(crate) client: u32,
    pub(crate) node: NodeId,
    pub(crate) request: Request<C>,
    pub(crate) invoked: Duration,
    pub(crate) returned: Option<Duration>,
    pub(crate) outcome: Outcome<R, Q>,
    /// Set when the answer named another node as the leader, or said none is known.
    pub(crate) redirect: Option<Redirect>,
}

/// A request a node answered by naming another as the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Redirect {
    /// Whether the node's process was paused or resumed while the request waited: the wait
    /// then tells nothing about the node.
    pub(crate) held_up_by_pause: bool,
}

/// One operation of `W`'s history.
pub(crate) type Op<W> =
    Operation<<W as Workload>::Command, <W as Workload>::Response, <W as Workload>::Read>;

/// Every operation of every client, in the order they were invoked.
pub(crate) type History<W> = Rc<RefCell<Vec<Op<W>>>>;

/// The simulation's time.
pub(crate) fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// One client's loop.
pub(crate) struct Client<W: Workload> {
    pub(crate) index: u32,
    pub(crate) workload: W,
    pub(crate) registry: Rc<Registry<W>>,
    pub(crate) history: History<W>,
    /// Set when the faults phase ends: the client finishes its request and sends no more.
    pub(crate) stop: Rc<Cell<bool>>,
    pub(crate) draw: Draw,
    pub(crate) think_time: Duration,
    /// Whether the workload has reads.
    pub(crate) reads: bool,
}

impl<W: Workload> Client<W> {
    pub(crate) async fn run(mut self) -> turmoil::Result {
        let mut leader_hint: Option<NodeId> = None;
        let mut sequence = 0u64;
        while !self.stop.get() {
            let Some(target) = self.pick(leader_hint) else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            sequence += 1;
            let id = (u64::from(self.index) << 40) | sequence;
            let request = if self.reads && self.draw.chance(0.3) {
                Request::Read {
                    key: self.draw.below(self.workload.keys()),
                }
            } else {
                Request::Write(self.workload.command(&mut self.draw))
            };
            leader_hint = self.send(id, target, request).await;
            let pause = self.draw.below(self.think_time.as_micros() as u64 + 1);
            tokio::time::sleep(Duration::from_micros(pause)).await;
        }
        Ok(())
    }

    /// The hinted leader if it is up, else any node that is up.
    fn pick(&mut self, hint: Option<NodeId>) -> Option<NodeId> {
        let up = self.registry.up();
        if let Some(hint) = hint.filter(|hint| up.contains(hint)) {
            return Some(hint);
        }
        if up.is_empty() {
            return None;
        }
        Some(up[self.draw.below(up.len() as u64) as usize])
    }

    /// Sends one request, records it and its answer; returns the leader the answer points
    /// to, if any.
    pub(crate) async fn send(
        &mut self,
        id: u64,
        target: NodeId,
        request: Request<W::Command>,
    ) -> Option<NodeId> {
        let (node, life) = self.registry.node(target)?;
        let pause_events = self.registry.pause_events(target);
        let slot = {
            let mut history = self.history.borrow_mut();
            history.push(Operation {
                id,
                client: self.index,
                node: target,
                request: request.clone(),
                invoked: now(),
                returned: None,
                outcome: Outcome::Pending,
                redirect: None,
            });
            history.len() - 1
        };
        // Whether the node answered by naming the leader or saying it knows none: answers
        // that cost it nothing, so they must come at once.
        let leaderless;
        let (outcome, hint) = match request {
            Request::Write(command) => {
                let answer = node
                    .write(Tagged {
                        operation: id,
                        command,
                    })
                    .await;
                leaderless = matches!(
                    answer,
                    Err(ProposeError::NotLeader { .. } | ProposeError::NoLeader)
                );
                self.written(answer, target, life)
            }
            Request::Read { key } => {
                let workload = self.workload.clone();
                let answer = node
                    .read_linearizable(move |state: &super::observed::Observed<W>| {
                        (state.position, workload.read(&state.inner, key))
                    })
                    .await;
                leaderless = matches!(
                    answer,
                    Err(ReadError::NotLeader { .. } | ReadError::NoLeader)
                );
                read(answer, target)
            }
        };
        // A node that went down meanwhile tells nothing (its answer is `Unknown`).
        let redirected =
            leaderless && matches!(&outcome, Outcome::Refused(_) | Outcome::ReadFailed(_));
        let mut history = self.history.borrow_mut();
        let operation = &mut history[slot];
        operation.returned = Some(now());
        operation.outcome = outcome;
        operation.redirect = redirected.then(|| Redirect {
            held_up_by_pause: self.registry.pause_events(target) != pause_events,
        });
        hint
    }

    /// Classifies a write's answer. A node that crashed (or restarted) while the write was in
    /// flight tells nothing: in a real deployment the caller would have gone down with it.
    fn written(
        &self,
        answer: Result<Applied<W::Response>, ProposeError>,
        target: NodeId,
        life: u32,
    ) -> (Outcome<W::Response, W::Read>, Option<NodeId>) {
        let crashed =
            self.registry.life(target) != life || self.registry.process(target) != Process::Up;
        match answer {
            Ok(applied) => (
                Outcome::Written {
                    position: applied.position,
                    response: applied.response,
                },
                Some(target),
            ),
            Err(error) if crashed => (
                Outcome::Unknown(format!(
                    "node {target} went down with it in flight ({error})"
                )),
                None,
            ),
            Err(ProposeError::NotLeader { leader_hint }) => (
                Outcome::Refused(format!("node {target}: not the leader")),
                Some(leader_hint),
            ),
            Err(
                error @ (ProposeError::NoLeader
                | ProposeError::Busy
                | ProposeError::TooLarge { .. }
                | ProposeError::Shutdown),
            ) => (Outcome::Refused(format!("node {target}: {error}")), None),
            Err(error) => (Outcome::Unknown(format!("node {target}: {error}")), None),
        }
    }
}

fn read<R, Q>(
    answer: Result<(u64, Option<Q>), ReadError>,
    target: NodeId,
) -> (Outcome<R, Q>, Option<NodeId>) {
    match answer {
        Ok((position, value)) => (Outcome::Read { position, value }, Some(target)),
        Err(ReadError::NotLeader { leader_hint }) => (
            Outcome::ReadFailed(format!("node {target}: not the leader")),
            Some(leader_hint),
        ),
        Err(error) => (Outcome::ReadFailed(format!("node {target}: {error}")), None),
    }
}
