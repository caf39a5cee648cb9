//! `Admin::trigger_snapshot` is answered even when the apply channel is full at the moment the
//! request reaches the driver.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::common::*;
use yggr::{DecodeError, LocalNetwork, MemStorage, SnapshotError, StateMachine};

/// A counter whose `apply` blocks while the gate is closed, and says when it is blocked.
#[derive(Clone, Default)]
struct Gated {
    gate: Arc<(Mutex<bool>, Condvar)>,
    blocked: Arc<AtomicBool>,
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
    type Command = u64;
    type Response = u64;
    fn encode_command(command: &u64) -> Vec<u8> {
        command.to_le_bytes().to_vec()
    }
    fn decode_command(bytes: &[u8]) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            bytes.try_into().map_err(|_| DecodeError::new("8 bytes"))?,
        ))
    }
    fn apply(&mut self, _: u64) -> u64 {
        let (lock, signal) = &*self.gate;
        let mut open = lock.lock().unwrap();
        while !*open {
            self.blocked.store(true, Ordering::SeqCst);
            open = signal.wait(open).unwrap();
        }
        self.blocked.store(false, Ordering::SeqCst);
        self.applied += 1;
        self.applied
    }
    fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        Ok(self.applied.to_le_bytes().to_vec())
    }
    fn restore(&mut self, bytes: Vec<u8>) {
        self.applied = u64::from_le_bytes(bytes.try_into().unwrap());
    }
}

/// `trigger_snapshot` puts its caller in `snapshot_waiters` and `try_send`s a snapshot job to
/// the apply task. When the apply channel is full that `try_send` fails, nothing is in flight,
/// and nothing ever answers the waiter: the caller hangs until shutdown, even after the apply
/// task has drained its channel.
#[tokio::test(start_paused = true)]
async fn trigger_snapshot_is_answered_even_when_the_apply_channel_was_full() {
    let network = LocalNetwork::new();
    let state = Gated::default();
    state.set_open(true);
    let node = lone_leader(&network, state.clone(), MemStorage::new(), |config| {
        config.max_pending_applies = 1;
    })
    .await;
    assert_eq!(node.write(0).await, Ok(1));

    // Block the state machine inside the apply of write A...
    state.set_open(false);
    let write_a = tokio::spawn({
        let node = node.clone();
        async move { node.write(1).await }
    });
    while !state.blocked.load(Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
    // ...and queue write B's apply job behind it: the channel (capacity 1) is now full.
    let write_b = tokio::spawn({
        let node = node.clone();
        async move { node.write(2).await }
    });
    loop {
        let status = node.status().await.unwrap();
        // noop 1, write 0 at 2, A at 3, B at 4. A lone node commits an entry in the step
        // that learns it is durable and hands it to the apply channel in the same iteration,
        // so once B is committed its job waits in the channel.
        if status.commit_index.get() >= 4 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let trigger = tokio::spawn({
        let admin = node.admin();
        async move { admin.trigger_snapshot().await }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    // The driver has handled the trigger by the time it answers a later status request.
    node.status().await.unwrap();

    state.set_open(true);
    assert_eq!(write_a.await.unwrap(), Ok(2));
    assert_eq!(write_b.await.unwrap(), Ok(3));
    let answered = tokio::time::timeout(Duration::from_secs(30), trigger).await;
    assert!(
        answered.is_ok(),
        "trigger_snapshot still waiting 30 s (virtual) after the apply task drained: it hangs"
    );
    assert_eq!(answered.unwrap().unwrap(), Ok(()));
    node.shutdown().await.unwrap();
}
