//! Each write is answered with its true fate. A write that was never appended is refused
//! (`NotLeader`, `NoLeader`, `Busy`, ...). One that was appended by a leader that then lost
//! its role is answered by what finally commits at its index: the state machine's response
//! if it committed, a refusal if another leader's entry did, and `OutcomeUnknown` only when
//! the node could not learn which in time. Every test checks the answers against the log the
//! cluster finally agrees on.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use tokio::task::JoinHandle;
use yggr::{Config, LocalNetwork, MembershipError, Node, NodeId, ProposeError, Role};

type Answer = Result<usize, ProposeError>;

/// Starts `command`'s write on `node` in a task of its own.
fn spawn_write(node: &Node<Recorder>, command: u64) -> JoinHandle<Answer> {
    let node = node.clone();
    tokio::spawn(async move { node.write(command).await })
}

/// Waits for every write's answer, by command.
async fn answers(writes: Vec<(u64, JoinHandle<Answer>)>) -> BTreeMap<u64, Answer> {
    let mut answered = BTreeMap::new();
    for (command, write) in writes {
        let answer = tokio::time::timeout(Duration::from_secs(60), write)
            .await
            .expect("every write is answered")
            .expect("the write task does not panic");
        answered.insert(command, answer);
    }
    answered
}

/// Checks each answer against `log`, the commands the cluster finally applied: a response
/// means applied exactly once, a refusal means never applied, an unknown outcome allows
/// either (but never twice).
fn check_against_log(answers: &BTreeMap<u64, Answer>, log: &[u64]) {
    for (command, answer) in answers {
        let copies = log.iter().filter(|applied| *applied == command).count();
        match answer {
            Ok(_) => assert_eq!(copies, 1, "write {command} was acknowledged: {log:?}"),
            Err(ProposeError::OutcomeUnknown) => {
                assert!(copies <= 1, "write {command} applied twice: {log:?}");
            }
            Err(refusal) => assert_eq!(
                copies, 0,
                "write {command} was refused ({refusal:?}) but applied: {log:?}"
            ),
        }
    }
}

/// The node among `candidates` that leads, once one does.
async fn new_leader_among(cluster: &Cluster, candidates: &[NodeId]) -> Node<Recorder> {
    leader_among(candidates.iter().map(|me| &cluster.nodes[me])).await
}

fn others(cluster: &Cluster, leader: NodeId) -> Vec<NodeId> {
    cluster
        .nodes
        .keys()
        .copied()
        .filter(|me| *me != leader)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn writes_a_leader_replicated_before_losing_its_role_answer_with_their_response_once_committed()
 {
    // A long wait: the old leader must learn the fate, not give up on it.
    let cluster = Cluster::start(3, |config| config.outcome_wait_ticks = 100_000).await;
    let leader = cluster.leader().await;
    let followers = others(&cluster, leader.id());
    // The followers receive the leader's entries, but their acknowledgements are lost: the
    // leader cannot commit and steps down (check-quorum), its entries on a majority.
    for follower in &followers {
        cluster.network.cut(*follower, leader.id());
    }
    let writes: Vec<_> = (1..=5)
        .map(|command| (command, spawn_write(&leader, command)))
        .collect();
    let new_leader = new_leader_among(&cluster, &followers).await;
    // The new leader commits the old entries with one of its own.
    new_leader.write(100).await.unwrap();
    assert_ne!(leader.status().await.unwrap().role, Role::Leader);
    cluster.network.heal();
    let answers = answers(writes).await;
    for (command, answer) in &answers {
        assert!(answer.is_ok(), "write {command}: {answer:?}");
    }
    let log = cluster.converged(&[1, 2, 3, 4, 5, 100]).await;
    check_against_log(&answers, &log);
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn writes_of_a_leader_cut_off_before_replicating_them_are_refused_once_another_entry_commits_in_their_place()
 {
    let cluster = Cluster::start(3, |config| config.outcome_wait_ticks = 100_000).await;
    let leader = cluster.leader().await;
    let followers = others(&cluster, leader.id());
    cluster.network.isolate(leader.id());
    let writes: Vec<_> = (1..=3)
        .map(|command| (command, spawn_write(&leader, command)))
        .collect();
    let new_leader = new_leader_among(&cluster, &followers).await;
    for command in 100..105 {
        new_leader.write(command).await.unwrap();
    }
    cluster.network.heal();
    let answers = answers(writes).await;
    for (command, answer) in &answers {
        assert_eq!(
            *answer,
            Err(ProposeError::NotLeader {
                leader_hint: new_leader.id()
            }),
            "write {command}: replaced by the new leader's committed entries"
        );
    }
    let log = cluster.converged(&[100, 101, 102, 103, 104]).await;
    check_against_log(&answers, &log);
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn writes_whose_fate_is_not_learned_within_the_outcome_wait_are_answered_outcome_unknown() {
    // The default wait: 40 ticks of 10 ms.
    let cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    cluster.network.isolate(leader.id());
    let started = tokio::time::Instant::now();
    let writes: Vec<_> = (1..=3)
        .map(|command| (command, spawn_write(&leader, command)))
        .collect();
    let answers = answers(writes).await;
    for (command, answer) in &answers {
        assert_eq!(
            *answer,
            Err(ProposeError::OutcomeUnknown),
            "write {command}"
        );
    }
    // Step-down (check-quorum, an election timeout or two) plus the wait: well under 2 s.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    cluster.network.heal();
    cluster.write(100).await;
    let log = cluster.converged(&[100]).await;
    check_against_log(&answers, &log);
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_transfer_with_writes_in_flight_answers_each_write_by_what_finally_committed() {
    let cluster = Cluster::start(5, |_| {}).await;
    let leader = cluster.leader().await;
    let followers = others(&cluster, leader.id());
    let target = followers[0];
    // Only the target's acknowledgements reach the leader: two of five cannot commit, so
    // the entries of the writes are still pending when the target, caught up, takes over
    // (and commits them: the others hold them too).
    for follower in &followers[1..] {
        cluster.network.cut(*follower, leader.id());
    }
    let mut writes = Vec::new();
    let mut transferred = false;
    for round in 0..40u64 {
        for offset in 0..10 {
            let command = round * 10 + offset + 1;
            writes.push((command, spawn_write(&leader, command)));
        }
        // Let the driver take this round in; the transfer starts in the middle of the stream.
        tokio::task::yield_now().await;
        if round == 20 {
            leader.transfer_leadership_to(target).await.unwrap();
            transferred = true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(transferred);
    let new_leader = new_leader_among(&cluster, &[target]).await;
    new_leader.write(10_000).await.unwrap();
    cluster.network.heal();
    let answers = answers(writes).await;
    let acknowledged = answers.values().filter(|answer| answer.is_ok()).count();
    let unknown = answers
        .values()
        .filter(|answer| **answer == Err(ProposeError::OutcomeUnknown))
        .count();
    // Connected throughout, the old leader learns every fate from the new one.
    assert_eq!(unknown, 0, "{answers:?}");
    assert!(acknowledged > 0);
    let log = cluster.converged(&[10_000]).await;
    check_against_log(&answers, &log);
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn writes_of_a_leader_paused_mid_write_answer_with_their_response_once_another_leader_commits_them()
 {
    // Three nodes on storage whose writes the test can hold: holding the leader's stands in
    // for a paused process (its driver waits in the middle of an iteration, after sending).
    let network = LocalNetwork::new();
    let ids: Vec<NodeId> = (1..=3).map(id).collect();
    let mut nodes = BTreeMap::new();
    let mut storages = BTreeMap::new();
    let mut mirrors = BTreeMap::new();
    for me in &ids {
        let mut config: Config = test_config(*me, ids.iter().copied().filter(|other| other != me));
        config.outcome_wait_ticks = 100_000;
        let storage = FaultyStorage::default();
        let recorder = Recorder::default();
        mirrors.insert(*me, recorder.mirror.clone());
        let node = Node::start(config, recorder, storage.clone(), network.transport(*me))
            .await
            .unwrap();
        nodes.insert(*me, node);
        storages.insert(*me, storage);
    }
    let leader = leader_among(nodes.values()).await;
    leader.write(0).await.unwrap();
    storages[&leader.id()].faults.hold_entries();
    let writes: Vec<_> = (1..=4)
        .map(|command| (command, spawn_write(&leader, command)))
        .collect();
    let followers: Vec<NodeId> = ids
        .iter()
        .copied()
        .filter(|me| *me != leader.id())
        .collect();
    // The others elect a leader while the old one is paused.
    let new_leader = leader_among(followers.iter().map(|me| &nodes[me])).await;
    new_leader.write(100).await.unwrap();
    // The paused leader resumes, finishes its write and learns what happened meanwhile.
    storages[&leader.id()].faults.release(false);
    let answers = answers(writes).await;
    for (command, answer) in &answers {
        assert!(answer.is_ok(), "write {command}: {answer:?}");
    }
    let log = eventually(Duration::from_secs(30), || async {
        let logs: Vec<Vec<u64>> = mirrors
            .values()
            .map(|m| m.lock().unwrap().clone())
            .collect();
        (logs.iter().all(|log| *log == logs[0]) && logs[0].contains(&100)).then(|| logs[0].clone())
    })
    .await
    .expect("the nodes converge");
    check_against_log(&answers, &log);
    for node in nodes.into_values() {
        let _ = node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_membership_change_whose_leader_lost_its_role_after_replicating_it_completes_once_committed()
 {
    let cluster = Cluster::start(3, |config| config.outcome_wait_ticks = 100_000).await;
    let leader = cluster.leader().await;
    cluster.write(1).await;
    let followers = others(&cluster, leader.id());
    for follower in &followers {
        cluster.network.cut(*follower, leader.id());
    }
    let change = tokio::spawn({
        let admin = leader.admin();
        async move { admin.add_learner(id(4)).await }
    });
    let new_leader = new_leader_among(&cluster, &followers).await;
    new_leader.write(100).await.unwrap();
    cluster.network.heal();
    let answer = tokio::time::timeout(Duration::from_secs(60), change)
        .await
        .expect("the change is answered")
        .unwrap();
    assert_eq!(answer, Ok(()));
    let status = new_leader.status().await.unwrap();
    assert!(
        status.membership.is_learner(id(4)),
        "{:?}",
        status.membership
    );
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_membership_change_whose_fate_is_not_learned_in_time_is_answered_outcome_unknown() {
    let cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    cluster.write(1).await;
    cluster.network.isolate(leader.id());
    let answer = tokio::time::timeout(Duration::from_secs(60), leader.admin().add_learner(id(4)))
        .await
        .expect("the change is answered");
    assert_eq!(answer, Err(MembershipError::OutcomeUnknown));
    cluster.network.heal();
    cluster.write(2).await;
    let status = cluster.leader().await.status().await.unwrap();
    assert!(
        !status.membership.contains(id(4)),
        "{:?}",
        status.membership
    );
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn writes_still_waiting_at_shutdown_are_answered_outcome_unknown_and_unsent_ones_shutdown() {
    let cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    cluster.network.isolate(leader.id());
    let appended = spawn_write(&leader, 1);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let stopping = tokio::spawn(leader.clone().shutdown());
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(leader.write(2).await, Err(ProposeError::Shutdown));
    assert_eq!(
        appended.await.unwrap(),
        Err(ProposeError::OutcomeUnknown),
        "appended, not committed: its fate is open when the node stops"
    );
    stopping.await.unwrap().unwrap();
    cluster.shutdown().await;
}
