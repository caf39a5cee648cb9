//! The apply backlog and the apply task's failures, from an outside review: reads alone must
//! not stop a leader whose state machine is slow, a panicking decoder is a broken state
//! machine (Fatal), and a dead apply task stops the driver rather than leaving it spinning.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::common::*;
use yggr::{DecodeError, LocalNetwork, MemStorage, Node, ProposeError, ReadError, StateMachine};

/// `apply` blocks while the gate is closed (reads are served after it, on the apply task).
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

/// Three nodes over `Gated` state machines (gates open) with the smallest apply queue, so
/// the backlog limit is 64 jobs.
async fn gated_cluster(network: &LocalNetwork) -> (Vec<Gated>, Vec<Node<Gated>>) {
    let gates: Vec<Gated> = (0..3).map(|_| Gated::default()).collect();
    let mut nodes = Vec::new();
    for (position, gate) in gates.iter().enumerate() {
        gate.set_open(true);
        let me = id(position as u64 + 1);
        let peers = (1..=3).map(id).filter(|other| *other != me);
        let mut config = test_config(me, peers);
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
    (gates, nodes)
}

/// Linearizable reads queued on the leader: with 60 (under the 64-job backlog limit) the
/// test passes; with 100 the leader's driver stops.
const READS: usize = 100;

/// BUG: reads are not bounded by `max_pending_proposals` (no in-flight units), and every
/// `ReadReady` is an apply job of its own. So on a LEADER, reads alone push the backlog past
/// 64 x `max_pending_applies`, and `hand_to_apply` then awaits the state machine with
/// heartbeats stopped, until half the backlog drained. The doc comment on
/// `apply_backlog_limit` ("On the leader the in-flight limit keeps it far below that") does
/// not hold; a slow state machine under read load costs the node its leadership.
///
/// Real time on two threads, as in `apply::a_slow_apply_does_not_stall_heartbeats` (a
/// blocked `apply` on the blocking pool would freeze tokio's paused clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_a_leader_with_a_slow_apply_do_not_stop_its_heartbeats() {
    let network = LocalNetwork::new();
    let (gates, nodes) = gated_cluster(&network).await;
    let leader = leader_among(nodes.iter()).await;
    leader.write(()).await.unwrap();
    let term = leader.status().await.unwrap().current_term;
    for gate in &gates {
        gate.set_open(false);
    }
    // One write that commits but cannot apply, then 100 linearizable reads behind it: well
    // within `max_pending_proposals` (1024) and the request channel.
    let write = tokio::spawn({
        let leader = leader.clone();
        async move { leader.write(()).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut reads = Vec::new();
    for _ in 0..READS {
        reads.push(tokio::spawn({
            let leader = leader.clone();
            async move {
                leader
                    .read_linearizable(|state: &Gated| state.applied)
                    .await
            }
        }));
    }
    // Many election timeouts (10 ms ticks, at most 20 ticks each) with applies stuck.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut problems = Vec::new();
    for node in &nodes {
        match tokio::time::timeout(Duration::from_secs(1), node.status()).await {
            Err(_) => problems.push(format!("node {}: status did not answer in 1 s", node.id())),
            Ok(status) => {
                let status = status.unwrap();
                if status.current_term != term || status.leader != Some(leader.id()) {
                    problems.push(format!(
                        "node {}: term {:?} leader {:?} (was term {term:?} leader {})",
                        node.id(),
                        status.current_term,
                        status.leader,
                        leader.id()
                    ));
                }
            }
        }
    }
    for gate in &gates {
        gate.set_open(true);
    }
    let _ = write.await;
    for read in reads {
        let _ = read.await;
    }
    for node in nodes {
        let _ = node.shutdown().await;
    }
    assert!(
        problems.is_empty(),
        "reads queued behind a slow apply stopped the leader's driver: {problems:#?}"
    );
}

/// Command 7's bytes make `decode_command` PANIC (not return an error).
#[derive(Clone, Default)]
struct PanickyDecode {
    applied: u64,
}

impl StateMachine for PanickyDecode {
    type Command = u64;
    type Response = u64;
    fn encode_command(command: &u64) -> Vec<u8> {
        command.to_le_bytes().to_vec()
    }
    fn decode_command(bytes: &[u8]) -> Result<u64, DecodeError> {
        let command = u64::from_le_bytes(bytes.try_into().map_err(|_| DecodeError::new("8"))?);
        assert!(command != 7, "a bug in decode_command");
        Ok(command)
    }
    fn apply(&mut self, _: u64) -> u64 {
        self.applied += 1;
        self.applied
    }
}

/// A lone leader over `PanickyDecode`, after one good write.
async fn panicky_leader() -> Node<PanickyDecode> {
    let network = LocalNetwork::new();
    let node = lone_leader(
        &network,
        PanickyDecode::default(),
        MemStorage::new(),
        |_| {},
    )
    .await;
    assert_eq!(node.write(1).await, Ok(1));
    node
}

/// BUG (apply.rs, older than this commit): `apply_one` calls `S::decode_command` outside
/// `catch_unwind`. A panic there unwinds out of the apply thread (or out of the blocking task,
/// which `run_in_busy_periods` takes for "the runtime shutting down") without reporting
/// `Fatal`. The writer's waiter is merely dropped, so it reads the lifecycle (still RUNNING)
/// and gets `DriverDead`; every other user-code panic (apply, restore, snapshot, read) is
/// caught and answered `Fatal`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_decode_is_answered_fatal() {
    let node = panicky_leader().await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), node.write(7))
        .await
        .expect("answered, not hung");
    assert_eq!(outcome, Err(ProposeError::Fatal));
}

/// User plus system CPU time of this process, in clock ticks (Linux).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the file (utime, stime) are 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// BUG (driver.rs `run`): once the apply task is gone, the reports channel is closed and
/// `self.reports.recv()` is ready with `None` at once, every time; the select arm ignores
/// `None`, so the driver loops without ever waiting: 100 % of a core (and under tokio's
/// paused clock, time never advances again: the first version of this test hung). It lasts
/// until some later apply finds the channel closed. Reached here through the uncaught
/// `decode_command` panic above; any exit of the apply task while the driver runs does it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_apply_task_does_not_make_the_driver_spin() {
    let node = panicky_leader().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), node.write(7)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // An idle lone leader: a heartbeat timer every 10 ms and nothing else to do.
    let before = cpu_ticks();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks() - before;
    // Clock ticks are normally 100 per second: an idle node uses a few, a spinning one ~200.
    assert!(
        used < 50,
        "the node used {used} clock ticks of CPU in 2 s while idle: the driver spins"
    );
}

/// `Status::last_applied` is what the state machine has applied, not what was handed to it:
/// with `apply` blocked, a committed write shows in `commit_index` only, and once `apply`
/// runs, in both. (Real time, as above: a blocked `apply` would freeze the paused clock.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_last_applied_counts_only_what_the_state_machine_applied() {
    let network = LocalNetwork::new();
    let gate = Gated::default();
    gate.set_open(true);
    let node = lone_leader(&network, gate.clone(), MemStorage::new(), |_| {}).await;
    node.write(()).await.unwrap();
    let before = node.status().await.unwrap();
    assert_eq!(before.last_applied, before.commit_index);

    gate.set_open(false);
    let write = tokio::spawn({
        let node = node.clone();
        async move { node.write(()).await }
    });
    let stuck = eventually(Duration::from_secs(10), || async {
        let status = node.status().await.unwrap();
        (status.commit_index > before.commit_index).then_some(status)
    })
    .await
    .expect("the write commits although it cannot be applied");
    assert_eq!(
        stuck.last_applied, before.last_applied,
        "nothing was applied while apply was blocked"
    );

    gate.set_open(true);
    assert_eq!(write.await.unwrap(), Ok(2));
    let after = node.status().await.unwrap();
    assert_eq!(after.last_applied, stuck.commit_index);
    node.shutdown().await.unwrap();
}

/// A follower whose state machine is stuck, with far more committed jobs waiting than the
/// backlog limit, still answers everything at once: writes and reads with a redirect (on a
/// follower they can only end in one), status and metrics, thousands of requests in a row.
/// Real time on two threads, as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_answers_writes_reads_and_status_at_once_whatever_its_apply_backlog() {
    let network = LocalNetwork::new();
    let (gates, nodes) = gated_cluster(&network).await;
    let leader = leader_among(nodes.iter()).await;
    let position = nodes.iter().position(|n| n.id() != leader.id()).unwrap();
    let follower = nodes[position].clone();
    gates[position].set_open(false);
    // One commit at a time: each is an apply job of its own on the stuck follower, 200 of
    // them against a limit of 64.
    for _ in 0..200 {
        leader.write(()).await.unwrap();
    }
    let quickly = Duration::from_secs(2);
    let redirect = ProposeError::NotLeader {
        leader_hint: leader.id(),
    };
    let mut problems = Vec::new();
    match tokio::time::timeout(quickly, follower.write(())).await {
        Ok(Err(error)) if error == redirect => {}
        other => problems.push(format!("write: {other:?}")),
    }
    match tokio::time::timeout(
        quickly,
        follower.read_linearizable(|state: &Gated| state.applied),
    )
    .await
    {
        Ok(Err(ReadError::NotLeader { leader_hint })) if leader_hint == leader.id() => {}
        other => problems.push(format!("read: {other:?}")),
    }
    // More requests than the driver ever set aside before it stopped taking any.
    let many: Vec<_> = (0..5000)
        .map(|_| {
            let follower = follower.clone();
            tokio::spawn(async move { follower.write(()).await })
        })
        .collect();
    for request in many {
        match tokio::time::timeout(quickly, request).await {
            Ok(Ok(Err(ProposeError::NotLeader { .. } | ProposeError::Busy))) => {}
            other => {
                problems.push(format!("one of many writes: {other:?}"));
                break;
            }
        }
    }
    if tokio::time::timeout(quickly, follower.status())
        .await
        .is_err()
    {
        problems.push("status did not answer".to_string());
    }
    gates[position].set_open(true);
    for node in nodes {
        let _ = node.shutdown().await;
    }
    assert!(
        problems.is_empty(),
        "a follower with a full apply backlog did not answer at once: {problems:#?}"
    );
}

/// On a leader whose state machine is stuck, reads set aside are bounded: past
/// `MAX_PARKED_READS` they are refused with `Busy`, and status still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_sets_aside_at_most_max_parked_reads_and_still_answers_status() {
    let network = LocalNetwork::new();
    let gate = Gated::default();
    gate.set_open(true);
    let leader = lone_leader(&network, gate.clone(), MemStorage::new(), |config| {
        config.max_pending_applies = 1;
    })
    .await;
    leader.write(()).await.unwrap();
    gate.set_open(false);
    let stuck = tokio::spawn({
        let leader = leader.clone();
        async move { leader.write(()).await }
    });
    // The first batch goes to the engine and fills the backlog; later ones are set aside.
    let reads: Vec<_> = (0..2 * yggr::MAX_PARKED_READS + 1000)
        .map(|_| {
            let leader = leader.clone();
            tokio::spawn(async move {
                leader
                    .read_linearizable(|state: &Gated| state.applied)
                    .await
            })
        })
        .collect();
    let busy = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if reads.iter().any(|read| read.is_finished()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let status = tokio::time::timeout(Duration::from_secs(2), leader.status()).await;
    gate.set_open(true);
    let mut refused = 0;
    for read in reads {
        match read.await.unwrap() {
            Ok(_) => {}
            Err(ReadError::Busy) => refused += 1,
            Err(other) => panic!("read: {other:?}"),
        }
    }
    stuck.await.unwrap().unwrap();
    leader.shutdown().await.unwrap();
    assert!(
        busy.is_ok(),
        "no read was answered while the state machine was stuck"
    );
    assert!(status.is_ok(), "status did not answer with reads set aside");
    assert!(refused > 0, "every read was set aside");
}
