//! The user's state machine as each node runs it, wrapped so the simulation can see what it
//! applies: every command carries the id of the client operation that sent it, and every
//! apply and restore is written to a journal the checker reads.
//!
//! The wrapper counts the commands its state holds (its *position*): applying one moves the
//! position up by one, and a snapshot carries the position it was taken at, so a node that
//! restores one continues from there. Across every node and every restart, the command at a
//! position must be the same one, and a node's positions must run on without a gap or a
//! repeat: that is "apply sees every entry once, in order", checked from outside.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::hash::Hasher;

use yggr::{DecodeError, NodeId, SnapshotError, StateMachine};

use super::digest::Fnv64;
use super::workload::Workload;

/// A client operation's command, tagged with the operation's id.
#[derive(Clone, Debug)]
pub(crate) struct Tagged<C> {
    pub(crate) operation: u64,
    pub(crate) command: C,
}

/// What a node's apply answers: the user's response and the position it was applied at.
#[derive(Clone, Debug)]
pub(crate) struct Applied<R> {
    pub(crate) position: u64,
    pub(crate) response: R,
}

/// One thing a node's state machine did.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Entry {
    /// A node's state machine was created, empty (position 0), for the `life`-th start.
    Started { node: NodeId, life: u32 },
    /// It restored a snapshot taken at `position`.
    Restored {
        node: NodeId,
        life: u32,
        position: u64,
    },
    /// It applied `operation`'s command at `position`.
    Applied {
        node: NodeId,
        life: u32,
        position: u64,
        operation: u64,
    },
    /// It applied a barrier (`operation` is [`BARRIER_OPERATION`] or
    /// [`FINAL_BARRIER_OPERATION`]) at `position`, with its whole state's digest and the
    /// replica's checks: the workload's own, and a snapshot that restores to the same state.
    Barrier {
        node: NodeId,
        life: u32,
        position: u64,
        operation: u64,
        digest: u64,
        check: Result<(), String>,
    },
}

/// Every entry of every node, in the order they happened.
pub(crate) type Journal = Arc<Mutex<Vec<Entry>>>;

/// The operation id of the liveness phase's barrier command.
pub(crate) const BARRIER_OPERATION: u64 = u64::MAX;
/// The operation id of the barrier written after the steady phase.
pub(crate) const FINAL_BARRIER_OPERATION: u64 = u64::MAX - 1;

/// The user's state machine, watched.
pub(crate) struct Observed<W: Workload> {
    pub(crate) inner: W::Machine,
    pub(crate) position: u64,
    workload: W,
    node: NodeId,
    life: u32,
    journal: Journal,
    /// Simulated microseconds each apply takes, set by the fault injector.
    apply_cost: Arc<AtomicU64>,
    /// Zero bytes to add to every snapshot taken, so that writing it costs time on a disk
    /// with a bandwidth (set by the steady phase).
    snapshot_ballast: Arc<AtomicU64>,
}

impl<W: Workload> Observed<W> {
    pub(crate) fn new(
        workload: W,
        node: NodeId,
        life: u32,
        journal: Journal,
        apply_cost: Arc<AtomicU64>,
        snapshot_ballast: Arc<AtomicU64>,
    ) -> Observed<W> {
        record(&journal, Entry::Started { node, life });
        Observed {
            inner: workload.state_machine(node),
            position: 0,
            workload,
            node,
            life,
            journal,
            apply_cost,
            snapshot_ballast,
        }
    }
}

impl<W: Workload> Observed<W> {
    /// Restores a snapshot of this replica into a fresh state machine and compares the two
    /// by what the checker can see of them: the state bytes and a read of every key. A
    /// snapshot that loses something shows here even in a run that never restored one.
    fn check_snapshot_round_trip(&self) -> Result<(), String> {
        let bytes = self
            .inner
            .snapshot()
            .map_err(|error| format!("taking a snapshot failed: {error}"))?;
        let mut copy = self.workload.state_machine(self.node);
        copy.restore(bytes);
        if self.workload.state_bytes(&copy) != self.workload.state_bytes(&self.inner) {
            return Err(
                "a snapshot restored into a fresh state machine gives other state bytes (Workload::state_bytes, by default the snapshot) than the replica it was taken from"
                    .to_string(),
            );
        }
        for key in 0..self.workload.keys() {
            let (read, original) = (
                self.workload.read(&copy, key),
                self.workload.read(&self.inner, key),
            );
            if read != original {
                return Err(format!(
                    "a snapshot restored into a fresh state machine reads {read:?} at key {key}, where the replica it was taken from reads {original:?}: snapshot and restore lose or change something"
                ));
            }
        }
        Ok(())
    }
}

fn record(journal: &Journal, entry: Entry) {
    journal
        .lock()
        .expect("the journal's lock is never held across a panic")
        .push(entry);
}

/// A digest of a replica: its position and the bytes that stand for its state.
pub(crate) fn state_digest(bytes: Option<Vec<u8>>, position: u64) -> u64 {
    let mut hash = Fnv64::new();
    hash.write_u64(position);
    if let Some(bytes) = bytes {
        hash.write(&bytes);
    }
    hash.finish()
}

impl<W: Workload> StateMachine for Observed<W> {
    type Command = Tagged<W::Command>;
    type Response = Applied<W::Response>;

    fn encode_command(command: &Self::Command) -> Vec<u8> {
        let mut bytes = command.operation.to_le_bytes().to_vec();
        bytes.extend(W::Machine::encode_command(&command.command));
        bytes
    }

    fn decode_command(bytes: &[u8]) -> Result<Self::Command, DecodeError> {
        let Some((operation, rest)) = bytes.split_first_chunk::<8>() else {
            return Err(DecodeError::new("shorter than an operation id"));
        };
        Ok(Tagged {
            operation: u64::from_le_bytes(*operation),
            command: W::Machine::decode_command(rest)?,
        })
    }

    fn apply(&mut self, command: Self::Command) -> Self::Response {
        let cost = self.apply_cost.load(Ordering::Relaxed);
        if cost > 0 {
            yggr::simulation::charge(Duration::from_micros(cost));
        }
        let response = self.inner.apply(command.command);
        self.position += 1;
        let entry = if matches!(
            command.operation,
            BARRIER_OPERATION | FINAL_BARRIER_OPERATION
        ) {
            Entry::Barrier {
                node: self.node,
                life: self.life,
                position: self.position,
                operation: command.operation,
                digest: state_digest(self.workload.state_bytes(&self.inner), self.position),
                check: self
                    .workload
                    .check_replica(&self.inner)
                    .and_then(|()| self.check_snapshot_round_trip()),
            }
        } else {
            Entry::Applied {
                node: self.node,
                life: self.life,
                position: self.position,
                operation: command.operation,
            }
        };
        record(&self.journal, entry);
        Applied {
            position: self.position,
            response,
        }
    }

    /// The position, the ballast's length and the ballast (zeros), then the state machine's
    /// own snapshot.
    fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        let ballast = self.snapshot_ballast.load(Ordering::Relaxed) as usize;
        let mut bytes = self.position.to_le_bytes().to_vec();
        bytes.extend((ballast as u64).to_le_bytes());
        bytes.resize(bytes.len() + ballast, 0);
        bytes.extend(self.inner.snapshot()?);
        Ok(bytes)
    }

    fn restore(&mut self, bytes: Vec<u8>) {
        // Only this wrapper's snapshots reach here; one that is not is a harness bug.
        let (position, rest) = bytes
            .split_first_chunk::<8>()
            .expect("a snapshot starts with the simulation's position");
        let (ballast, rest) = rest
            .split_first_chunk::<8>()
            .expect("a snapshot's position is followed by its ballast's length");
        let rest = rest
            .get(u64::from_le_bytes(*ballast) as usize..)
            .expect("a snapshot holds the ballast it announces");
        self.position = u64::from_le_bytes(*position);
        self.inner.restore(rest.to_vec());
        record(
            &self.journal,
            Entry::Restored {
                node: self.node,
                life: self.life,
                position: self.position,
            },
        );
    }
}
