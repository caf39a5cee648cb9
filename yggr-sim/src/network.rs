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
    /// A message about to be delivered is held back instead, for a random number of steps
    /// up to [`NetworkFaults::max_delay_steps`], and then arrives long after its time.
    pub delay: f64,
    /// The longest a held-back message waits, in steps.
    pub max_delay_steps: u64,
}

impl NetworkFaults {
    /// A perfect network: in order, nothing lost, repeated or held back.
    pub const NONE: NetworkFaults = NetworkFaults {
        drop: 0.0,
        duplicate: 0.0,
        reorder: false,
        delay: 0.0,
        max_delay_steps: 0,
    };
}

/// Messages in flight plus the current partition.
///
/// Limit: at most [`Network::MAX_IN_FLIGHT`] messages; past that the oldest is lost, as a
/// congested link would, so a run's memory stays bounded.
#[derive(Clone, Debug)]
pub struct Network {
    in_flight: Vec<Envelope>,
    /// Messages held back, with the step from which they are back in flight.
    delayed: Vec<(u64, Envelope)>,
    faults: NetworkFaults,
    /// Each node's side; nodes on different sides cannot reach each other. Empty: no partition.
    sides: Vec<BTreeSet<NodeId>>,
    /// Nodes whose process is paused: messages to them wait in flight.
    paused: BTreeSet<NodeId>,
}

/// What became of one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Hand this to the destination.
    Deliver(Envelope),
    /// Lost on the wire.
    Dropped(Envelope),
    /// Held back; it will arrive much later.
    Delayed(Envelope),
    /// Blocked by the partition.
    Partitioned(Envelope),
}

impl Network {
    /// The most messages kept in flight.
    pub const MAX_IN_FLIGHT: usize = 4096;

    /// With reordering, a delivery picks among this many of the oldest messages...
    pub const REORDER_WINDOW: usize = 8;

    /// ...except with this chance, when it picks among all of them.
    pub const FAR_REORDER: f64 = 0.1;

    /// An empty network with the given fault rates.
    pub fn new(faults: NetworkFaults) -> Network {
        Network {
            in_flight: Vec::new(),
            delayed: Vec::new(),
            faults,
            sides: Vec::new(),
            paused: BTreeSet::new(),
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

    /// Whether anything is in flight (held-back messages are not).
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// How many messages are held back.
    pub fn delayed_len(&self) -> usize {
        self.delayed.len()
    }

    /// Puts every held-back message whose time has come back in flight.
    pub fn release_delayed(&mut self, now: u64) {
        if self.delayed.iter().all(|(due, _)| *due > now) {
            return;
        }
        let (due, waiting): (Vec<_>, Vec<_>) =
            self.delayed.drain(..).partition(|(due, _)| *due <= now);
        self.delayed = waiting;
        for (_, envelope) in due {
            self.send(envelope);
        }
    }

    /// Puts every held-back message back in flight at once.
    pub fn release_all_delayed(&mut self) {
        self.release_delayed(u64::MAX);
    }

    /// Takes one message off the wire and decides its fate; `now` is the current step, from
    /// which a held-back message's delay counts.
    pub fn next_delivery(&mut self, rng: &mut ChaCha8Rng, now: u64) -> Option<Delivery> {
        self.release_delayed(now);
        if self.in_flight.is_empty() {
            return None;
        }
        let eligible: Vec<usize> = if self.paused.is_empty() {
            (0..self.in_flight.len()).collect()
        } else {
            (0..self.in_flight.len())
                .filter(|position| !self.paused.contains(&self.in_flight[*position].to))
                .collect()
        };
        if eligible.is_empty() {
            return None;
        }
        // Reordering is mostly local, as on a real network: one of the oldest few messages,
        // and only now and then any message at all (long delays are a fault of their own).
        let position = if !self.faults.reorder {
            eligible[0]
        } else if rng.random_bool(Self::FAR_REORDER) {
            eligible[rng.random_range(0..eligible.len())]
        } else {
            eligible[rng.random_range(0..eligible.len().min(Self::REORDER_WINDOW))]
        };
        let envelope = self.in_flight.remove(position);
        if !self.can_reach(envelope.message.from, envelope.to) {
            return Some(Delivery::Partitioned(envelope));
        }
        if self.faults.drop > 0.0 && rng.random_bool(self.faults.drop) {
            return Some(Delivery::Dropped(envelope));
        }
        if self.faults.delay > 0.0
            && self.faults.max_delay_steps > 0
            && self.delayed.len() < Self::MAX_IN_FLIGHT
            && rng.random_bool(self.faults.delay)
        {
            let due = now + rng.random_range(1..=self.faults.max_delay_steps);
            self.delayed.push((due, envelope.clone()));
            return Some(Delivery::Delayed(envelope));
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

    /// Holds every message to `node` in flight until [`Network::resume`].
    pub fn pause(&mut self, node: NodeId) {
        self.paused.insert(node);
    }

    /// Lets messages to `node` arrive again.
    pub fn resume(&mut self, node: NodeId) {
        self.paused.remove(&node);
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

    /// Drops every message to `node` (it crashed: its sockets are gone). Messages it sent
    /// before crashing may still arrive, as they would from a real network's buffers.
    pub fn forget_node(&mut self, node: NodeId) {
        self.in_flight.retain(|e| e.to != node);
        self.delayed.retain(|(_, e)| e.to != node);
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
            network.next_delivery(&mut rng, 0),
            Some(Delivery::Deliver(envelope(1, 2)))
        );
        assert_eq!(
            network.next_delivery(&mut rng, 0),
            Some(Delivery::Deliver(envelope(3, 2)))
        );
        assert_eq!(network.next_delivery(&mut rng, 0), None);
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
            network.next_delivery(&mut rng, 0),
            Some(Delivery::Dropped(_))
        ));
    }

    #[test]
    fn delayed_message_arrives_only_after_its_delay() {
        let mut network = Network::new(NetworkFaults {
            delay: 1.0,
            max_delay_steps: 50,
            ..NetworkFaults::NONE
        });
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        network.send(envelope(1, 2));
        assert!(matches!(
            network.next_delivery(&mut rng, 10),
            Some(Delivery::Delayed(_))
        ));
        assert!(network.is_empty());
        assert_eq!(network.delayed_len(), 1);
        network.set_faults(NetworkFaults::NONE);
        assert_eq!(network.next_delivery(&mut rng, 10), None, "not yet");
        assert_eq!(
            network.next_delivery(&mut rng, 60),
            Some(Delivery::Deliver(envelope(1, 2)))
        );
    }
}
