//! When the state machine cannot go on (a committed entry that does not decode, or a panic in
//! `apply`), the node stops with a fatal error, and the writer whose entry caused it, and those
//! queued with it, are answered `Fatal` like every later caller (not `DriverDead`, which means
//! the driver itself died).

use std::time::Duration;

use crate::common::*;
use yggr::{DecodeError, LocalNetwork, MemStorage, Node, ProposeError, StateMachine};

/// Command 13 encodes to bytes that do not decode; command 66 makes `apply` panic.
#[derive(Clone, Default)]
struct Picky {
    applied: u64,
}

impl StateMachine for Picky {
    type Command = u64;
    type Response = u64;
    fn encode_command(command: &u64) -> Vec<u8> {
        if *command == 13 {
            return vec![1, 2, 3];
        }
        command.to_le_bytes().to_vec()
    }
    fn decode_command(bytes: &[u8]) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            bytes.try_into().map_err(|_| DecodeError::new("8 bytes"))?,
        ))
    }
    fn apply(&mut self, command: u64) -> u64 {
        if command == 66 {
            panic!("the state machine has a bug");
        }
        self.applied += 1;
        self.applied
    }
}

async fn lone_node() -> Node<Picky> {
    let network = LocalNetwork::new();
    lone_leader(&network, Picky::default(), MemStorage::new(), |_| {}).await
}

/// The apply task answers the writer itself before it reports to the driver; were the answer
/// channel merely dropped, the caller could read the lifecycle before the driver stopped and
/// say `DriverDead`. That depends on thread timing, so each case runs on 20 fresh nodes.
async fn outcomes(poison: Vec<u64>) -> Vec<Result<Vec<u64>, ProposeError>> {
    let mut seen = Vec::new();
    for _ in 0..20 {
        let node = lone_node().await;
        assert_eq!(node.write(1).await, Ok(1));
        let outcome =
            tokio::time::timeout(Duration::from_secs(10), node.write_batch(poison.clone()))
                .await
                .expect("answered, not hung");
        // Every later call says Fatal: the node did stop with a fatal error.
        assert_eq!(node.write(2).await, Err(ProposeError::Fatal));
        seen.push(outcome);
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn a_write_whose_entry_does_not_decode_is_answered_fatal() {
    let seen = outcomes(vec![13]).await;
    assert!(
        seen.iter()
            .all(|outcome| *outcome == Err(ProposeError::Fatal)),
        "the writer of an undecodable entry was answered {seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_write_whose_apply_panics_is_answered_fatal() {
    let seen = outcomes(vec![66]).await;
    assert!(
        seen.iter()
            .all(|outcome| *outcome == Err(ProposeError::Fatal)),
        "the writer whose apply panicked was answered {seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_batch_stopped_by_an_undecodable_entry_is_answered_fatal() {
    let seen = outcomes(vec![2, 13, 3]).await;
    assert!(
        seen.iter()
            .all(|outcome| *outcome == Err(ProposeError::Fatal)),
        "the batch was answered {seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_read_closure_that_panics_panics_in_its_caller_and_the_node_serves_on() {
    let node = lone_node().await;
    assert_eq!(node.write(1).await, Ok(1));
    let reader = node.clone();
    let read = tokio::spawn(async move {
        reader
            .read_linearizable(|_: &Picky| -> u64 { panic!("a bug in the read") })
            .await
    });
    let panic = read
        .await
        .expect_err("the caller's task panicked")
        .into_panic();
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"a bug in the read"));
    // A read only borrows the state: nothing is lost, the node goes on.
    assert_eq!(node.write(2).await, Ok(2));
    assert_eq!(
        node.read_linearizable(|state: &Picky| state.applied).await,
        Ok(2)
    );
    node.shutdown().await.unwrap();
}
