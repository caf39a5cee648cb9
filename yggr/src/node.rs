//! [`Node`]: the handle applications hold, and [`Admin`] for operators. Every clone talks to
//! the same driver task; a call sends it a request with a channel for the answer.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};
use yggr_core::{
    ConfigChange, Engine, EngineMetrics, Membership, NodeId, RandomEnv, RecoveredHardState,
};

use crate::apply::{self, ApplyJob, BatchCollector, InFlight, Read, ReadAnswer, Waiter};
use crate::config::{Bootstrap, Config};
use crate::driver::{Driver, Request, Shared, Wiring, lifecycle};
use crate::error::{
    MembershipError, NodeStartError, ProposeError, ReadError, ShutdownError, StatusError,
    TransferLeadershipError,
};
use crate::identity::{NodeIdentity, cluster_id};
use crate::state_machine::{SnapshotError, StateMachine};
use crate::status::{NodeMetrics, Status};
use crate::storage::{Storage, StoredState};
use crate::transport::Transport;

/// A running Raft node. Cheap to clone; every clone drives the same node.
///
/// Start one with [`Node::start`]; it spawns its driver and apply tasks on the current tokio
/// runtime. Writes and reads go to the leader: a follower answers with the leader it knows.
pub struct Node<S: StateMachine> {
    inner: Arc<Inner<S>>,
}

impl<S: StateMachine> Clone for Node<S> {
    fn clone(&self) -> Node<S> {
        Node {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: StateMachine> std::fmt::Debug for Node<S> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Node")
            .field("id", &self.inner.id)
            .field("leader", &self.current_leader())
            .finish_non_exhaustive()
    }
}

struct Inner<S: StateMachine> {
    id: NodeId,
    requests: mpsc::Sender<Request<S>>,
    shared: Arc<Shared>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
    max_command_bytes: usize,
    driver: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Operator actions on a node: membership changes and snapshots. From [`Node::admin`].
pub struct Admin<S: StateMachine> {
    node: Node<S>,
}

impl<S: StateMachine> Clone for Admin<S> {
    fn clone(&self) -> Admin<S> {
        Admin {
            node: self.node.clone(),
        }
    }
}

/// What a failed send tells the caller: the lifecycle decides between a clean stop, a fatal
/// one, and a driver that vanished.
enum Gone {
    Shutdown,
    Fatal,
    DriverDead,
}

impl<S: StateMachine> Node<S> {
    /// Starts a node: checks `config`, loads `storage`, founds, joins or recovers as
    /// [`Config::bootstrap`] says, restores the state machine from the stored snapshot, and
    /// spawns the driver and apply tasks on the current tokio runtime.
    ///
    /// # Errors
    /// [`NodeStartError`]: an invalid configuration, a storage failure, nothing to recover
    /// for [`Bootstrap::Recover`], a joiner's bootstrap over a founding member's storage, or
    /// inconsistent stored state.
    pub async fn start<St: Storage, T: Transport>(
        config: Config,
        mut state_machine: S,
        mut storage: St,
        mut transport: T,
    ) -> Result<Node<S>, NodeStartError<St::Error>> {
        config.validate()?;
        let id = config.node_id;
        let stored = storage.load().await.map_err(NodeStartError::Storage)?;
        if let Some(stored_id) = stored.as_ref().and_then(|stored| stored.node_id)
            && stored_id != id
        {
            // Another node's vote and log under this id could vote twice in one term.
            return Err(NodeStartError::WrongNode {
                stored: stored_id,
                configured: id,
            });
        }
        let (founding, recovered) = match (&config.bootstrap, stored) {
            (Bootstrap::Join, Some(stored)) if !stored.founding.voters.is_empty() => {
                return Err(NodeStartError::JoinOverFoundingMember);
            }
            (Bootstrap::NewCluster { members }, Some(stored))
                if stored.founding.voters != *members =>
            {
                // As etcd does with its initial cluster: the stored state wins on a restart.
                // Say so, since the configuration asked for something else.
                warn!(target: "yggr::node", node_id = id.get(), stored = ?stored.founding.voters, asked = ?members, "storage already holds a cluster founded with other members; recovering it and ignoring Bootstrap::NewCluster");
                (stored.founding.clone(), Some(stored))
            }
            (_, Some(stored)) => (stored.founding.clone(), Some(stored)),
            (Bootstrap::NewCluster { members }, None) => {
                let founding = Membership::from_voters(members.iter().copied());
                storage
                    .bootstrap(id, &founding)
                    .await
                    .map_err(NodeStartError::Storage)?;
                (founding, None)
            }
            (Bootstrap::Join, None) => {
                let founding = Membership::empty();
                storage
                    .bootstrap(id, &founding)
                    .await
                    .map_err(NodeStartError::Storage)?;
                (founding, None)
            }
            (Bootstrap::Recover, None) => return Err(NodeStartError::NothingToRecover),
        };
        let env = match config.random_seed {
            Some(seed) => RandomEnv::seeded(node_seed(seed, id)),
            None => RandomEnv::from_entropy(),
        };
        let founding_cluster = cluster_id(&founding);
        let mut engine = Engine::with_config(id, founding, env, config.engine_config())
            .map_err(|error| NodeStartError::Config(error.into()))?;
        if let Some(stored) = recovered {
            if let Some(snapshot) = &stored.snapshot {
                state_machine.restore(snapshot.bytes.to_vec());
            }
            engine
                .recover_from(recovered_state(stored))
                .map_err(NodeStartError::Recovery)?;
        }
        // Known only now that storage is loaded or bootstrapped; see `crate::identity`.
        let identity = NodeIdentity {
            cluster_id: founding_cluster,
            incarnation: storage.incarnation().unwrap_or(0),
        };
        transport.set_identity(identity);
        info!(target: "yggr::node", node_id = id.get(), term = engine.current_term().get(), cluster_id = format_args!("{:016x}", identity.cluster_id), incarnation = format_args!("{:016x}", identity.incarnation), "started");
        Ok(Node::spawn(
            config,
            engine,
            state_machine,
            storage,
            transport,
        ))
    }

    fn spawn<St: Storage, T: Transport>(
        config: Config,
        engine: Engine<yggr_core::Bytes>,
        state_machine: S,
        storage: St,
        transport: T,
    ) -> Node<S> {
        let id = config.node_id;
        let capacity = config.max_pending_proposals.max(64);
        let (requests, request_receiver) = mpsc::channel(capacity);
        let (apply, apply_receiver) = mpsc::channel::<ApplyJob<S>>(config.max_pending_applies);
        let (report_sender, reports) = mpsc::unbounded_channel();
        let applied = engine.last_applied();
        let shared = Arc::new(Shared::new(applied));
        let apply_task = apply::spawn(
            id,
            state_machine,
            applied,
            apply_receiver,
            report_sender,
            Arc::clone(&shared),
        );
        let max_in_flight = config.max_pending_proposals;
        let max_command_bytes = config.max_command_bytes;
        let wiring = Wiring {
            requests: request_receiver,
            apply,
            apply_task,
            reports,
            shared: Arc::clone(&shared),
        };
        let driver = Driver::new(engine, storage, transport, config, wiring);
        let driver = crate::sys::task::spawn(driver.run());
        Node {
            inner: Arc::new(Inner {
                id,
                requests,
                shared,
                in_flight: Arc::new(AtomicUsize::new(0)),
                max_in_flight,
                max_command_bytes,
                driver: std::sync::Mutex::new(Some(driver)),
            }),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The leader this node knows of (`Some(self)` on the leader), as of the driver's last
    /// iteration. Synchronous and cheap: no round trip to the driver.
    pub fn current_leader(&self) -> Option<NodeId> {
        NodeId::new(self.inner.shared.leader.load(Ordering::Acquire))
    }

    /// An operator's handle: membership changes and snapshots.
    pub fn admin(&self) -> Admin<S> {
        Admin { node: self.clone() }
    }

    fn gone(&self) -> Gone {
        match self.inner.shared.lifecycle() {
            lifecycle::SHUTTING_DOWN | lifecycle::STOPPED => Gone::Shutdown,
            lifecycle::FATAL => Gone::Fatal,
            _ => Gone::DriverDead,
        }
    }

    /// Whether new requests are refused because the node stops.
    fn stopping(&self) -> Option<Gone> {
        (self.inner.shared.lifecycle() != lifecycle::RUNNING).then(|| self.gone())
    }

    async fn send(&self, request: Request<S>) -> Result<(), Gone> {
        self.inner
            .requests
            .send(request)
            .await
            .map_err(|_| self.gone())
    }

    /// Replicates `command` and returns what the state machine answered, once it has
    /// committed on a majority and applied here.
    ///
    /// # Errors
    /// [`ProposeError`]: `NotLeader` or `NoLeader` off the leader, or when another leader's
    /// entry committed in the command's place (never executed: safe to retry);
    /// `OutcomeUnknown` when this node lost leadership and could not learn in time whether
    /// the command committed (it may have); `Busy` above `max_pending_proposals`, `TooLarge`
    /// above `max_command_bytes`, `Shutdown`, `DriverDead`, `Fatal`.
    pub async fn write(&self, command: S::Command) -> Result<S::Response, ProposeError> {
        if let Some(gone) = self.stopping() {
            return Err(propose_error(gone));
        }
        let bytes = self.encode(&command)?;
        let in_flight = InFlight::acquire(&self.inner.in_flight, 1, self.inner.max_in_flight)
            .ok_or(ProposeError::Busy)?;
        let (reply, answer) = oneshot::channel();
        let request = Request::ProposeOne {
            command: bytes,
            waiter: Waiter::Write {
                reply,
                _in_flight: in_flight,
            },
        };
        self.send(request).await.map_err(propose_error)?;
        answer
            .await
            .unwrap_or_else(|_| Err(propose_error(self.gone())))
    }

    /// The log bytes of `command`, or `TooLarge`.
    fn encode(&self, command: &S::Command) -> Result<Bytes, ProposeError> {
        let bytes = S::encode_command(command);
        if bytes.len() > self.inner.max_command_bytes {
            return Err(ProposeError::TooLarge {
                bytes: bytes.len(),
                limit: self.inner.max_command_bytes,
            });
        }
        Ok(Bytes::from(bytes))
    }

    /// The same as [`Node::write`].
    ///
    /// # Errors
    /// As [`Node::write`].
    pub async fn propose(&self, command: S::Command) -> Result<S::Response, ProposeError> {
        self.write(command).await
    }

    /// Replicates `commands` as consecutive entries, in order, and returns their responses in
    /// the same order once all of them have applied here; or an error.
    ///
    /// # Errors
    /// As [`Node::write`], for the batch as a whole: a refusal only when every command was
    /// refused; `OutcomeUnknown` when some may have applied and others not.
    pub async fn write_batch(
        &self,
        commands: Vec<S::Command>,
    ) -> Result<Vec<S::Response>, ProposeError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(gone) = self.stopping() {
            return Err(propose_error(gone));
        }
        let bytes = commands
            .iter()
            .map(|command| self.encode(command))
            .collect::<Result<Vec<_>, _>>()?;
        let in_flight = InFlight::acquire(
            &self.inner.in_flight,
            commands.len(),
            self.inner.max_in_flight,
        )
        .ok_or(ProposeError::Busy)?;
        let (reply, answer) = oneshot::channel();
        let batch = BatchCollector::new(commands.len(), reply, in_flight);
        let waiters = (0..commands.len())
            .map(|slot| Waiter::BatchItem {
                batch: Arc::clone(&batch),
                slot,
            })
            .collect();
        drop(batch);
        self.send(Request::Propose {
            commands: bytes,
            waiters,
        })
        .await
        .map_err(propose_error)?;
        answer
            .await
            .unwrap_or_else(|_| Err(propose_error(self.gone())))
    }

    /// Runs `read` against the state machine at a linearizable point: it sees every write
    /// that completed before this call, and the state machine has applied nothing this read
    /// cannot see. Reads that arrive together share one confirmation round; with a lease,
    /// reads inside it need none.
    ///
    /// # Errors
    /// [`ReadError`]: `NotLeader` / `NoLeader` off the leader, `SteppedDown` when leadership
    /// is lost before the read is confirmed, `Shutdown`, `DriverDead`, `Fatal`.
    pub async fn read_linearizable<R, F>(&self, read: F) -> Result<R, ReadError>
    where
        R: Send + 'static,
        F: FnOnce(&S) -> R + Send + 'static,
    {
        if let Some(gone) = self.stopping() {
            return Err(read_error(gone));
        }
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Read {
            read,
            reply,
            state: PhantomData,
        });
        self.send(Request::Read(job)).await.map_err(read_error)?;
        match answer.await {
            Ok(ReadAnswer::Value(value)) => Ok(value),
            Ok(ReadAnswer::Failed(error)) => Err(error),
            Ok(ReadAnswer::Panicked(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(read_error(self.gone())),
        }
    }

    /// Adds `node` as a voter (§4.3); returns once the change has committed. Prefer adding a
    /// learner and promoting it once it has caught up ([`Admin`]).
    ///
    /// # Errors
    /// As [`Admin::add_peer`].
    pub async fn add_peer(&self, node: NodeId) -> Result<(), MembershipError> {
        self.admin().add_peer(node).await
    }

    /// Removes `node` (voter or learner); returns once the change has committed.
    ///
    /// # Errors
    /// As [`Admin::remove_peer`].
    pub async fn remove_peer(&self, node: NodeId) -> Result<(), MembershipError> {
        self.admin().remove_peer(node).await
    }

    /// Asks the leader to hand leadership to `target`. Returns once the transfer has started,
    /// not once `target` leads.
    ///
    /// # Errors
    /// [`TransferLeadershipError`]: `NotLeader` / `NoLeader` off the leader, `InvalidTarget`
    /// for this node or a non-voter, `Shutdown`, `DriverDead`, `Fatal`.
    pub async fn transfer_leadership_to(
        &self,
        target: NodeId,
    ) -> Result<(), TransferLeadershipError> {
        if let Some(gone) = self.stopping() {
            return Err(transfer_error(gone));
        }
        let (reply, answer) = oneshot::channel();
        self.send(Request::Transfer { target, reply })
            .await
            .map_err(transfer_error)?;
        answer
            .await
            .unwrap_or_else(|_| Err(transfer_error(self.gone())))
    }

    /// Role, term, commit and applied indexes, leader and membership, now.
    ///
    /// # Errors
    /// [`StatusError`] once the node has stopped.
    pub async fn status(&self) -> Result<Status, StatusError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Status(reply))
            .await
            .map_err(status_error)?;
        answer.await.map_err(|_| status_error(self.gone()))
    }

    /// The engine's counters and gauges.
    ///
    /// # Errors
    /// As [`Node::status`].
    pub async fn metrics(&self) -> Result<EngineMetrics, StatusError> {
        Ok(self.node_metrics().await?.engine)
    }

    /// The engine's counters and gauges, the status, and on the leader each follower's
    /// replication progress.
    ///
    /// # Errors
    /// As [`Node::status`].
    pub async fn node_metrics(&self) -> Result<NodeMetrics, StatusError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Metrics(reply))
            .await
            .map_err(status_error)?;
        answer.await.map_err(|_| status_error(self.gone()))
    }

    /// Stops the node: refuses new requests, gives the writes already accepted up to two
    /// election timeouts to commit and apply, answers every waiting caller, and returns once
    /// the driver and apply tasks have stopped. Other clones get `Shutdown` from then on.
    ///
    /// # Errors
    /// [`ShutdownError`]: already shut down by another clone, the driver died, or the node
    /// had stopped after a fatal error.
    pub async fn shutdown(self) -> Result<(), ShutdownError> {
        let (reply, answer) = oneshot::channel();
        let sent = self.inner.requests.send(Request::Shutdown(reply)).await;
        let outcome = match sent {
            Ok(()) => answer.await.unwrap_or(Err(ShutdownError::DriverDead)),
            Err(_) => Err(match self.gone() {
                Gone::Shutdown => ShutdownError::AlreadyShutdown,
                Gone::Fatal => ShutdownError::Fatal,
                Gone::DriverDead => ShutdownError::DriverDead,
            }),
        };
        let driver = self
            .inner
            .driver
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(driver) = driver
            && driver.await.is_err()
            && outcome.is_ok()
        {
            return Err(ShutdownError::DriverDead);
        }
        outcome
    }
}

impl<S: StateMachine> Admin<S> {
    async fn change(&self, change: ConfigChange) -> Result<(), MembershipError> {
        if let Some(gone) = self.node.stopping() {
            return Err(membership_error(gone));
        }
        let node = &self.node.inner;
        let _in_flight = InFlight::acquire(&node.in_flight, 1, node.max_in_flight)
            .ok_or(MembershipError::Busy)?;
        let (reply, answer) = oneshot::channel();
        self.node
            .send(Request::Membership { change, reply })
            .await
            .map_err(membership_error)?;
        answer
            .await
            .unwrap_or_else(|_| Err(membership_error(self.node.gone())))
    }

    /// Adds `node` as a voter; returns once the change has committed.
    ///
    /// # Errors
    /// [`MembershipError`]: `NotLeader` / `NoLeader` off the leader; `ChangeInProgress` while
    /// another change is uncommitted; `Busy` while the leader cannot take one yet (a new
    /// leader before its first commit, or during a transfer); `AlreadyVoter`; `Shutdown`,
    /// `DriverDead`, `Fatal`.
    pub async fn add_peer(&self, node: NodeId) -> Result<(), MembershipError> {
        self.change(ConfigChange::AddPeer(node)).await
    }

    /// Adds `node` as a learner: it receives replication but never campaigns, and neither its
    /// votes nor its acknowledgements count. Returns once the change has committed (not once
    /// the learner caught up).
    ///
    /// # Errors
    /// As [`Admin::add_peer`], with `AlreadyLearner` too.
    pub async fn add_learner(&self, node: NodeId) -> Result<(), MembershipError> {
        self.change(ConfigChange::AddLearner(node)).await
    }

    /// Turns learner `node` into a voter; returns once the change has committed.
    ///
    /// # Errors
    /// As [`Admin::add_peer`] (`AlreadyVoter` for a node that already votes), with
    /// `NotLearner` for a node that is not in the cluster at all.
    pub async fn promote_learner(&self, node: NodeId) -> Result<(), MembershipError> {
        self.change(ConfigChange::PromoteLearner(node)).await
    }

    /// Removes `node`, voter or learner; returns once the change has committed. A leader that
    /// removes itself steps down then.
    ///
    /// # Errors
    /// As [`Admin::add_peer`], with `UnknownNode` for a non-member and
    /// `InvalidTargetMembership` for the last voter.
    pub async fn remove_peer(&self, node: NodeId) -> Result<(), MembershipError> {
        self.change(ConfigChange::RemovePeer(node)).await
    }

    /// Snapshots the state machine now (on its task) and compacts the log up to it; returns
    /// once the snapshot was taken. Snapshots also happen on their own as entries apply.
    ///
    /// # Errors
    /// [`SnapshotError`] when the state machine could not take one, or the node stops.
    pub async fn trigger_snapshot(&self) -> Result<(), SnapshotError> {
        let (reply, answer) = oneshot::channel();
        self.node
            .send(Request::TriggerSnapshot(reply))
            .await
            .map_err(|_| SnapshotError::new("the node has stopped"))?;
        answer
            .await
            .unwrap_or_else(|_| Err(SnapshotError::new("the node has stopped")))
    }
}

fn propose_error(gone: Gone) -> ProposeError {
    match gone {
        Gone::Shutdown => ProposeError::Shutdown,
        Gone::Fatal => ProposeError::Fatal,
        Gone::DriverDead => ProposeError::DriverDead,
    }
}

fn read_error(gone: Gone) -> ReadError {
    match gone {
        Gone::Shutdown => ReadError::Shutdown,
        Gone::Fatal => ReadError::Fatal,
        Gone::DriverDead => ReadError::DriverDead,
    }
}

fn transfer_error(gone: Gone) -> TransferLeadershipError {
    match gone {
        Gone::Shutdown => TransferLeadershipError::Shutdown,
        Gone::Fatal => TransferLeadershipError::Fatal,
        Gone::DriverDead => TransferLeadershipError::DriverDead,
    }
}

fn membership_error(gone: Gone) -> MembershipError {
    match gone {
        Gone::Shutdown => MembershipError::Shutdown,
        Gone::Fatal => MembershipError::Fatal,
        Gone::DriverDead => MembershipError::DriverDead,
    }
}

fn status_error(gone: Gone) -> StatusError {
    match gone {
        Gone::Shutdown => StatusError::Shutdown,
        Gone::Fatal => StatusError::Fatal,
        Gone::DriverDead => StatusError::DriverDead,
    }
}

/// The engine's seed for node `id` from `Config::random_seed`: different for every node
/// whatever the configured seeds. (`seed ^ id` was not: nodes configured with their own ids
/// as seeds all drew the same election timeouts, and split their votes for ever.)
fn node_seed(seed: u64, id: NodeId) -> u64 {
    splitmix64(seed ^ splitmix64(id.get()))
}

/// SplitMix64's output function: a bijection of `u64` that spreads every input bit.
fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn recovered_state(stored: StoredState) -> RecoveredHardState<Bytes> {
    RecoveredHardState {
        current_term: stored.current_term,
        voted_for: stored.voted_for,
        snapshot: stored.snapshot,
        log: stored.log,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_seeded_with_their_own_ids_draw_different_randomness() {
        let seeds: std::collections::BTreeSet<u64> = (1..=64)
            .map(|raw| node_seed(raw, NodeId::new(raw).unwrap()))
            .collect();
        assert_eq!(seeds.len(), 64);
        // And one seed shared by every node still gives each its own.
        let shared: std::collections::BTreeSet<u64> = (1..=64)
            .map(|raw| node_seed(7, NodeId::new(raw).unwrap()))
            .collect();
        assert_eq!(shared.len(), 64);
    }
}
