//! The apply task runs apart from the driver: a slow state machine delays applies, not
//! heartbeats, so the cluster keeps its leader.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::common::*;
use yggr::{DecodeError, LocalNetwork, MemStorage, Node, StateMachine};

/// A state machine whose `apply` blocks while the gate is closed.
#[derive(Clone, Default)]
struct Gated {
    gate: Arc<(Mutex<bool>, Condvar)>,
    applied: u64,
}

impl Gated {
    fn set_open(&self, open: bool) {
        let (lock, signal) = &*self.gate;
        *lock.lock().unwrap() = open;
        signal.notify_all();
    }
}

impl StateMachine for Gated {
    type Command = ();
    type Response = u64;
    fn encode_command(_: &()) -> Vec<u8> {
        Vec::new()
    }
    fn decode_command(_: &[u8]) -> Result<(), DecodeError> {
        Ok(())
    }
    fn apply(&mut self, (): ()) -> u64 {
        let (lock, signal) = &*self.gate;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = signal.wait(open).unwrap();
        }
        self.applied += 1;
        self.applied
    }
}

/// Real time on a two-thread runtime: the blocked `apply` holds a thread, as a slow state
/// machine would. The check is that nothing happens (no election) for many election
/// timeouts while it is blocked, so it has to let that time pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_apply_does_not_stall_heartbeats() {
    let network = LocalNetwork::new();
    let gates: Vec<Gated> = (0..3).map(|_| Gated::default()).collect();
    let mut nodes = Vec::new();
    for (position, gate) in gates.iter().enumerate() {
        gate.set_open(true);
        let me = id(position as u64 + 1);
        let peers = (1..=3).map(id).filter(|other| *other != me);
        let mut config = test_config(me, peers);
        // The smallest apply queue, so that a handful of writes fills it.
        config.max_pending_applies = 1;
        let node = Node::start(
            config,
            gate.clone(),
            MemStorage::new(),
            network.transport(me),
        )
        .await
        .unwrap();
        nodes.push(node);
    }
    let leader = loop {
        if let Some(leader) = nodes.iter().find(|n| n.current_leader() == Some(n.id())) {
            break leader.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    leader.write(()).await.unwrap();
    let term = leader.status().await.unwrap().current_term;
    // Close every gate: the next write commits but cannot apply anywhere.
    for gate in &gates {
        gate.set_open(false);
    }
    // Writes arriving one after another, each committed in an iteration of its own: far more
    // apply jobs than the queue holds, on every node.
    let mut blocked = Vec::new();
    for _ in 0..20 {
        blocked.push(tokio::spawn({
            let leader = leader.clone();
            async move { leader.write(()).await }
        }));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    // Thirty election timeouts (10 ms ticks, at most 20 ticks each) with applies stuck.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for node in &nodes {
        let status = node.status().await.unwrap();
        assert_eq!(
            status.current_term,
            term,
            "node {} saw an election",
            node.id()
        );
        assert_eq!(status.leader, Some(leader.id()));
    }
    assert!(blocked.iter().all(|write| !write.is_finished()));
    for gate in &gates {
        gate.set_open(true);
    }
    let mut answers = Vec::new();
    for write in blocked {
        answers.push(write.await.unwrap().unwrap());
    }
    answers.sort_unstable();
    assert_eq!(answers, (2..=21).collect::<Vec<u64>>());
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}
