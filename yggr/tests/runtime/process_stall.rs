//! A process that stalls (SIGSTOP, a VM pause, CPU starvation) resumes with messages queued
//! and ticks overdue. The driver delivers the time that passed before it steps anything, so a
//! leader contact queued during the stall counts as recent, not as a stall old: the follower
//! neither campaigns on it nor grants a vote while the leader it just acknowledged may still
//! serve lease reads.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use yggr::core::{AppendEntries, Bytes, Message, Rpc, VoteRequest};
use yggr::{LocalNetwork, LocalTransport, MemStorage, Node, NodeId, Role, Transport};

use crate::common::*;

/// A node's transport with a side door: the test puts messages in it as if they had arrived
/// from the network.
struct SideDoor {
    inner: LocalTransport,
    injected: mpsc::UnboundedReceiver<Message<Bytes>>,
}

impl Transport for SideDoor {
    fn send(&mut self, to: NodeId, message: Message<Bytes>) {
        self.inner.send(to, message);
    }

    async fn recv(&mut self) -> Option<Message<Bytes>> {
        tokio::select! {
            biased;
            Some(message) = self.injected.recv() => Some(message),
            message = self.inner.recv() => message,
        }
    }

    fn try_recv(&mut self) -> Option<Message<Bytes>> {
        self.injected
            .try_recv()
            .ok()
            .or_else(|| self.inner.try_recv())
    }
}

#[tokio::test(start_paused = true)]
async fn a_leader_contact_queued_during_a_stall_counts_as_recent_so_no_vote_is_granted_right_after_it()
 {
    let network = LocalNetwork::new();
    let ids: Vec<NodeId> = (1..=3).map(id).collect();
    let stalled = id(3);
    let (door, injected) = mpsc::unbounded_channel();
    let mut injected = Some(injected);
    let mut nodes = BTreeMap::new();
    for me in &ids {
        let mut config = test_config(*me, ids.iter().copied().filter(|other| other != me));
        let transport = network.transport(*me);
        let node = if *me == stalled {
            // Slow to campaign, so one of the others leads.
            config.election_timeout_min_ticks = 50;
            config.election_timeout_max_ticks = 60;
            let transport = SideDoor {
                inner: transport,
                injected: injected.take().unwrap(),
            };
            Node::start(config, Recorder::default(), MemStorage::new(), transport).await
        } else {
            Node::start(config, Recorder::default(), MemStorage::new(), transport).await
        };
        nodes.insert(*me, node.unwrap());
    }
    let leader = leader_among(nodes.values()).await;
    assert_ne!(leader.id(), stalled);
    let other = ids
        .iter()
        .copied()
        .find(|me| *me != leader.id() && *me != stalled)
        .unwrap();
    leader.write(1).await.unwrap();
    let follower = nodes[&stalled].clone();
    eventually(Duration::from_secs(10), || async {
        let status = follower.status().await.unwrap();
        (status.commit_index == leader.status().await.unwrap().commit_index).then_some(())
    })
    .await
    .expect("the follower catches up");
    let before = follower.status().await.unwrap();
    let (term, last) = (before.current_term, before.commit_index);

    // From here on the follower hears only what the test hands it.
    network.isolate(stalled);
    // Its process stalls: the leader's heartbeat arrives, and while nothing runs, two of its
    // longest election timeouts pass.
    door.send(Message {
        from: leader.id(),
        term,
        rpc: Rpc::AppendEntries(AppendEntries {
            prev_log_index: last,
            prev_log_term: term,
            entries: Vec::new(),
            leader_commit: last,
            round: 0,
        }),
    })
    .unwrap();
    tokio::time::advance(Duration::from_millis(1200)).await;
    // Resumed, it has stepped the heartbeat; the other node now asks for its vote.
    tokio::time::sleep(Duration::from_millis(1)).await;
    door.send(Message {
        from: other,
        term: term.next(),
        rpc: Rpc::RequestVote(VoteRequest {
            last_log_index: last,
            last_log_term: term,
            leadership_transfer: false,
        }),
    })
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let after = follower.status().await.unwrap();
    // A leader contact this recent refuses the vote outright, term and all.
    assert_eq!(
        after.current_term, term,
        "the follower took a vote request right after acknowledging its leader: {after:?}"
    );
    assert_eq!(after.role, Role::Follower);
    for node in nodes.into_values() {
        let _ = node.shutdown().await;
    }
}
