//! When storage fails the node stops `Fatal`, and requests already queued in the driver's
//! channel at that moment are answered `Fatal` too, not as if the node had shut down cleanly.

use std::time::Duration;

use crate::common::*;
use yggr::{LocalNetwork, ProposeError, ReadError, ShutdownError};

#[tokio::test(start_paused = true)]
async fn requests_queued_when_storage_fails_are_answered_fatal() {
    let network = LocalNetwork::new();
    // Once failing, a persist takes a little while and then fails (a slow fsync that
    // reports an I/O error), so requests queue up behind it.
    let storage = FaultyStorage {
        failure_delay: Duration::from_millis(20),
        ..FaultyStorage::default()
    };
    let node = lone_leader(&network, Recorder::default(), storage.clone(), |_| {}).await;
    assert_eq!(node.write(1).await, Ok(1));

    storage.faults.fail_writes();
    let first = tokio::spawn({
        let node = node.clone();
        async move { node.write(2).await }
    });
    // The driver is now inside the failing persist; these queue up behind it.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let queued_write = tokio::spawn({
        let node = node.clone();
        async move { node.write(3).await }
    });
    let queued_read = tokio::spawn({
        let node = node.clone();
        async move { node.read_linearizable(|_: &Recorder| ()).await }
    });
    let queued_shutdown = tokio::spawn({
        let node = node.clone();
        async move { node.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    assert_eq!(first.await.unwrap(), Err(ProposeError::Fatal));
    // The node did stop with a fatal error: every call from now on says so.
    assert_eq!(node.write(4).await, Err(ProposeError::Fatal));
    let answers = (
        queued_write.await.unwrap(),
        queued_read.await.unwrap(),
        queued_shutdown.await.unwrap(),
    );
    assert_eq!(
        answers,
        (
            Err(ProposeError::Fatal),
            Err(ReadError::Fatal),
            Err(ShutdownError::Fatal)
        ),
        "requests queued when storage failed were answered as if the node had shut down cleanly"
    );
}
