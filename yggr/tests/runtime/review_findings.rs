//! Findings of an outside review, each proved by a test that fails on the reviewed code.

use std::future::Future;
use std::task::{Context, Poll, Waker};

use yggr::{
    LocalNetwork, MemStorage, Membership, Node, NodeId, Storage, StorageWrite, StoredState,
};

use crate::common::*;

/// `MemStorage` whose `persist` gives the runtime a few turns before it completes, as any storage
/// that does real I/O does (`DiskStorage` awaits the blocking pool).
#[derive(Clone, Default)]
struct YieldingStorage {
    inner: MemStorage,
}

impl Storage for YieldingStorage {
    type Error = std::convert::Infallible;

    async fn load(&mut self) -> Result<Option<StoredState>, Self::Error> {
        self.inner.load().await
    }

    async fn bootstrap(
        &mut self,
        node_id: NodeId,
        founding: &Membership,
    ) -> Result<(), Self::Error> {
        self.inner.bootstrap(node_id, founding).await
    }

    async fn persist(&mut self, writes: Vec<StorageWrite>) -> Result<(), Self::Error> {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        self.inner.persist(writes).await
    }
}

/// Hands `command` to the node as a write and returns once the request is queued, without
/// waiting for its answer (the write goes on; its answer is dropped).
fn send_write(node: &Node<Recorder>, command: u64) {
    let mut write = std::pin::pin!(node.write(command));
    let mut context = Context::from_waker(Waker::noop());
    assert!(
        write.as_mut().poll(&mut context).is_pending(),
        "the write is queued and waits for its answer"
    );
}

/// A snapshot taken under a steady stream of writes must still be stored. The driver's
/// `select!` is biased, requests first, and the prepared snapshot's future is polled only
/// there (reports are drained after the select, preparations are not): while every iteration
/// finds a request waiting (each iteration's write yields to the client), the preparation,
/// here the default one that is ready at its first poll, is never polled. The snapshot is
/// never stored, `trigger_snapshot` never answers, and no other snapshot can start
/// (`in_flight` stays set) for as long as the load lasts. On a multi-threaded runtime under
/// load, requests (or acknowledgements) are waiting at nearly every iteration.
#[tokio::test(start_paused = true)]
async fn a_snapshot_is_stored_while_writes_keep_arriving() {
    let network = LocalNetwork::new();
    let node = lone_leader(
        &network,
        Recorder::default(),
        YieldingStorage::default(),
        |config| config.max_pending_proposals = 1 << 20,
    )
    .await;
    node.write(0).await.unwrap();

    // A steady client load: a few more writes every time the client gets a turn, whatever
    // became of the earlier ones. After 100 turns the client also asks for a snapshot (along
    // with that turn's writes), then gives it 5000 more turns.
    let admin = node.admin();
    let client = tokio::spawn({
        let node = node.clone();
        async move {
            let mut trigger = None;
            let mut command = 0;
            for round in 0..5100 {
                for _ in 0..4 {
                    command += 1;
                    send_write(&node, command);
                }
                if round == 100 {
                    trigger = Some(Box::pin(admin.trigger_snapshot()));
                }
                if let Some(trigger) = trigger.as_mut() {
                    let polled =
                        std::future::poll_fn(|context| Poll::Ready(trigger.as_mut().poll(context)))
                            .await;
                    if let Poll::Ready(taken) = polled {
                        return Some(taken);
                    }
                }
                tokio::task::yield_now().await;
            }
            None
        }
    });
    let outcome = client.await.unwrap();
    let metrics = node.node_metrics().await.unwrap();
    assert!(
        matches!(outcome, Some(Ok(()))),
        "trigger_snapshot not answered during 5000 rounds of writes ({outcome:?}); snapshots \
         taken: {}",
        metrics.snapshots_taken
    );
    node.shutdown().await.unwrap();
}
