//! What a user gives the stack simulation: their state machine and the commands clients send.

use std::fmt::Debug;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use yggr::{NodeId, StateMachine};

/// A state machine to chaos-test, and the traffic to test it with.
///
/// The simulation runs one copy of [`Machine`](Self::Machine) per node, inside the real
/// `yggr::Node`, and clients send it commands from [`command`](Self::command). Every answer a
/// client gets is checked against a model: a fresh state machine from
/// [`state_machine`](Self::state_machine), cloned, with the committed commands applied in the
/// order the cluster committed them. An answer the model does not give at that point, an
/// acknowledged command that is missing, a refused one that was applied anyway, or a read
/// that misses a write acknowledged before it began fails the run.
///
/// `apply` must be deterministic (the same command on the same state gives the same state and
/// response), as yggr requires anyway.
pub trait Workload: Clone + Send + Sync + 'static {
    /// The state machine's commands.
    type Command: Clone + Debug + Send + 'static;
    /// The state machine's responses.
    type Response: Clone + Debug + PartialEq + Send + 'static;
    /// What a read returns (`()` for a workload without reads).
    type Read: Clone + Debug + PartialEq + Send + 'static;
    /// The state machine under test. Cloning it must give an independent copy with the same
    /// state: the checker's model is made of clones.
    type Machine: StateMachine<Command = Self::Command, Response = Self::Response> + Clone;

    /// A fresh state machine for `node`, as a node with an empty disk starts with. The model
    /// starts from `state_machine(NodeId::new(1))`: every node's must behave alike.
    fn state_machine(&self, node: NodeId) -> Self::Machine;

    /// The next command a client sends.
    fn command(&self, draw: &mut Draw) -> Self::Command;

    /// The key `command` touches, for the per-key figures of the report. Default: 0.
    fn key(&self, command: &Self::Command) -> u64 {
        let _ = command;
        0
    }

    /// How many keys clients read, `0..keys()`. Default: 1.
    fn keys(&self) -> u64 {
        1
    }

    /// What a linearizable read of `key` returns from `state`. The default, `None`, means the
    /// state machine has no reads: clients only send commands.
    fn read(&self, state: &Self::Machine, key: u64) -> Option<Self::Read> {
        let _ = (state, key);
        None
    }

    /// The bytes that stand for a replica's whole state, compared across replicas once the
    /// cluster has healed: equal states must give equal bytes. The default is the state
    /// machine's snapshot, which must then be deterministic (a snapshot of a hash map in its
    /// iteration order is not); `None` compares nothing but the commands applied.
    fn state_bytes(&self, state: &Self::Machine) -> Option<Vec<u8>> {
        state.snapshot().ok()
    }

    /// A check over one replica's whole state, run on every live replica once the cluster has
    /// healed and applied the same commands. Default: none.
    ///
    /// # Errors
    /// A description of what is wrong with `state`; it fails the run.
    fn check_replica(&self, state: &Self::Machine) -> Result<(), String> {
        let _ = state;
        Ok(())
    }
}

/// Random draws for a workload, from the run's seed.
#[derive(Debug)]
pub struct Draw {
    generator: ChaCha8Rng,
}

impl Draw {
    /// Draws from `seed`.
    pub fn new(seed: u64) -> Draw {
        Draw {
            generator: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A number in `0..bound`; 0 when `bound` is 0.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        self.generator.random_range(0..bound)
    }

    /// True with probability `chance` (clamped to `0.0..=1.0`).
    pub fn chance(&mut self, chance: f64) -> bool {
        self.generator.random_bool(chance.clamp(0.0, 1.0))
    }

    /// Any `u64`.
    pub fn any(&mut self) -> u64 {
        self.generator.random()
    }

    /// `length` random bytes.
    pub fn bytes(&mut self, length: usize) -> Vec<u8> {
        (0..length).map(|_| self.generator.random()).collect()
    }
}
