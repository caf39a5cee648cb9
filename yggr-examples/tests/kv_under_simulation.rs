//! The kv service's state machine, `KvStore`, under the whole-stack simulation, as any user's
//! state machine would be tested: the real node, storage and transport, every fault, and
//! every answer checked against a `KvStore` model.

use std::sync::Arc;

use bytes::Bytes;
use yggr::NodeId;
use yggr_examples::kv::store::{KvCommand, KvResponse, KvStore};
use yggr_sim::stack::{Draw, StackOptions, Workload, run_stack};
use yggr_sim::suite::{base_seed, run_seed};

/// Clients on four keys: SET, INCRBY, DEL and CAS on the same keys at once, and GETs.
#[derive(Clone)]
struct KvClients;

/// The keys clients share.
const KEYS: u64 = 4;

fn key(index: u64) -> Bytes {
    Bytes::from(format!("key-{index}"))
}

/// A small value; numbers often, so that increments and compare-and-sets meet them.
fn value(draw: &mut Draw) -> Bytes {
    if draw.chance(0.7) {
        Bytes::from(draw.below(20).to_string())
    } else {
        Bytes::from(format!("v{}", draw.below(5)))
    }
}

impl Workload for KvClients {
    type Command = KvCommand;
    type Response = KvResponse;
    type Read = Option<Bytes>;
    type Machine = KvStore;

    fn state_machine(&self, node: NodeId) -> KvStore {
        KvStore::new(node, Arc::default(), None)
    }

    fn command(&self, draw: &mut Draw) -> KvCommand {
        let key = key(draw.below(KEYS));
        match draw.below(4) {
            0 => KvCommand::Set {
                key,
                value: value(draw),
            },
            1 => KvCommand::IncrementBy {
                key,
                by: draw.below(5) as i64 - 1,
            },
            2 => KvCommand::Delete { keys: vec![key] },
            _ => KvCommand::CompareAndSet {
                key,
                expected: value(draw),
                new: value(draw),
            },
        }
    }

    fn keys(&self) -> u64 {
        KEYS
    }

    fn read(&self, state: &KvStore, index: u64) -> Option<Option<Bytes>> {
        Some(state.get(&key(index)))
    }

    fn check_replica(&self, state: &KvStore) -> Result<(), String> {
        // Only the four keys clients use can exist.
        match state.len() as u64 <= KEYS {
            true => Ok(()),
            false => Err(format!(
                "{} keys, clients only ever use {KEYS}",
                state.len()
            )),
        }
    }
}

#[test]
fn the_kv_state_machine_keeps_every_acknowledged_write_under_every_fault() {
    let base = base_seed();
    let mut acknowledged = 0;
    let mut reads = 0;
    for index in 0..12 {
        let seed = run_seed(base, index);
        let options = StackOptions::from_seed(seed);
        let report = run_stack(&KvClients, &options).unwrap_or_else(|failure| panic!("{failure}"));
        acknowledged += report.history.acknowledged;
        reads += report.history.reads;
    }
    assert!(
        acknowledged > 1_000,
        "only {acknowledged} writes acknowledged"
    );
    assert!(reads > 100, "only {reads} reads served");
}
