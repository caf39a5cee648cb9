//! The simulated network: messages in flight, delivered in any order, dropped, duplicated or
//! blocked by partitions. All choices come from the caller's seeded RNG.

use std::collections::BTreeSet;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use yggr_core::{Message, NodeId};

use crate::harness::Command;

/// One message on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The destination.
    pub to: NodeId,
    /// The message, naming its sender.
    pub message: Message<Command>,
}

/// Fault rates for a run, each a probability in `[0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetworkFaults {
    /// A delivered message is lost instead.
    pub drop: f64,
    /// A delivered message is also kept in flight, to arrive again later.
    pub duplicate: f64,
    /// Messages are delivered in random order rather than oldest first.
    pub reorder: bool,
}

impl NetworkFaults {
    /// A perfect network: in order, nothing lost or repeated.
    pub const NONE: NetworkFaults = NetworkFaults {
        drop: 0.0,
        duplicate: 0.0,
        reorder: false,
    };
}

/// Messages in flight plus the current partition.
///
/// Limit: at most [`Network::MAX_IN_FLIGHT`] messages; past that the oldest is lost, as a
/// congested link would, so a run's memory stays bounded.
#[derive(Clone, Debug)]
pub struct Network {
    in_flight: Vec<Envelope>,
    faults: NetworkFaults,
    /// Each node's side; nodes on different sides cannot reach each other. Empty: no partition.
    sides: Vec<BTreeSet<NodeId>>,
}

/// What became of one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Hand this to the destination.
    Deliver(Envelope),
    /// Lost on the wire.
    Dropped(Envelope),
    /// Blocked by the partition.
    Partitioned(Envelope),
}

impl Network {
    /// The most messages kept in flight.
    pub const MAX_IN_FLIGHT: usize = 4096;

    /// An empty network with the given fault rates.
    pub fn new(faults: NetworkFaults) -> Network {
        Network {
            in_flight: Vec::new(),
            faults,
            sides: Vec::new(),
        }
    }

    /// The fault rates in force.
    pub fn faults(&self) -> NetworkFaults {
        self.faults
    }

    /// Replaces the fault rates (a liveness phase heals the network this way).
    pub fn set_faults(&mut self, faults: NetworkFaults) {
        self.faults = faults;
    }

    /// Puts a message on the wire.
    pub fn send(&mut self, envelope: Envelope) {
        if self.in_flight.len() >= Self::MAX_IN_FLIGHT {
            self.in_flight.remove(0);
        }
        self.in_flight.push(envelope);
    }

    /// Messages in flight, oldest first.
    pub fn in_flight(&self) -> &[Envelope] {
        &self.in_flight
    }

    /// Whether anything is in flight.
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Takes one message off the wire and decides its fate.
    pub fn next_delivery(&mut self, rng: &mut ChaCha8Rng) -> Option<Delivery> {
        if self.in_flight.is_empty() {
            return None;
        }
        let position = if self.faults.reorder {
            rng.random_range(0..self.in_flight.len())
        } else {
            0
        };
        let envelope = self.in_flight.remove(position);
        if !self.can_reach(envelope.message.from, envelope.to) {
            return Some(Delivery::Partitioned(envelope));
        }
        if self.faults.drop > 0.0 && rng.random_bool(self.faults.drop) {
            return Some(Delivery::Dropped(envelope));
        }
        if self.faults.duplicate > 0.0 && rng.random_bool(self.faults.duplicate) {
            self.send(envelope.clone());
        }
        Some(Delivery::Deliver(envelope))
    }

    /// Splits the nodes into `sides`; a node on no side is cut off from everyone.
    pub fn partition(&mut self, sides: Vec<BTreeSet<NodeId>>) {
        self.sides = sides;
    }

    /// Removes the partition.
    pub fn heal(&mut self) {
        self.sides.clear();
    }

    /// Whether a partition is in force.
    pub fn is_partitioned(&self) -> bool {
        !self.sides.is_empty()
    }

    /// Whether `from` can reach `to` under the current partition.
    pub fn can_reach(&self, from: NodeId, to: NodeId) -> bool {
        self.sides.is_empty()
            || self
                .sides
                .iter()
                .any(|side| side.contains(&from) && side.contains(&to))
    }

    /// Drops every message to or from `node` (it crashed: its sockets are gone).
    pub fn forget_node(&mut self, node: NodeId) {
        self.in_flight.retain(|e| e.to != node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use yggr_core::{Rpc, Term};

    fn envelope(from: u64, to: u64) -> Envelope {
        Envelope {
            to: NodeId::new(to).unwrap(),
            message: Message {
                from: NodeId::new(from).unwrap(),
                term: Term::new(1),
                rpc: Rpc::TimeoutNow,
            },
        }
    }

    #[test]
    fn partition_blocks_only_messages_across_sides() {
        let mut network = Network::new(NetworkFaults::NONE);
        let id = |raw| NodeId::new(raw).unwrap();
        network.partition(vec![[id(1), id(2)].into(), [id(3)].into()]);
        assert!(network.can_reach(id(1), id(2)));
        assert!(!network.can_reach(id(1), id(3)));
        network.heal();
        assert!(network.can_reach(id(1), id(3)));
    }

    #[test]
    fn perfect_network_delivers_in_order() {
        let mut network = Network::new(NetworkFaults::NONE);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        network.send(envelope(1, 2));
        network.send(envelope(3, 2));
        assert_eq!(
            network.next_delivery(&mut rng),
            Some(Delivery::Deliver(envelope(1, 2)))
        );
        assert_eq!(
            network.next_delivery(&mut rng),
            Some(Delivery::Deliver(envelope(3, 2)))
        );
        assert_eq!(network.next_delivery(&mut rng), None);
    }

    #[test]
    fn certain_drop_loses_everything() {
        let mut network = Network::new(NetworkFaults {
            drop: 1.0,
            ..NetworkFaults::NONE
        });
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        network.send(envelope(1, 2));
        assert!(matches!(
            network.next_delivery(&mut rng),
            Some(Delivery::Dropped(_))
        ));
    }
}
