//! A refused snapshot is asked for again: with compaction driven by `max_log_entries` alone
//! (the engine hints once when the log outgrows it), and when a hint meets a full apply
//! channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::common::*;
use yggr::{DecodeError, LocalNetwork, MemStorage, SnapshotError, StateMachine};

#[derive(Clone, Default)]
struct Reluctant {
    inner: Recorder,
    willing: Arc<AtomicBool>,
    attempts: Arc<AtomicU64>,
}

impl StateMachine for Reluctant {
    type Command = u64;
    type Response = usize;
    fn encode_command(command: &u64) -> Vec<u8> {
        Recorder::encode_command(command)
    }
    fn decode_command(bytes: &[u8]) -> Result<u64, DecodeError> {
        Recorder::decode_command(bytes)
    }
    fn apply(&mut self, command: u64) -> usize {
        self.inner.apply(command)
    }
    fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.willing.load(Ordering::SeqCst) {
            self.inner.snapshot()
        } else {
            Err(SnapshotError::new("busy"))
        }
    }
    fn restore(&mut self, bytes: Vec<u8>) {
        self.inner.restore(bytes);
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_snapshot_is_retried_when_only_max_log_entries_drives_compaction() {
    let network = LocalNetwork::new();
    let state = Reluctant::default();
    let (willing, attempts) = (Arc::clone(&state.willing), Arc::clone(&state.attempts));
    let node = lone_leader(&network, state, MemStorage::new(), |config| {
        config.snapshot_hint_threshold_entries = 0;
        config.max_log_entries = 10;
    })
    .await;
    for command in 0..15 {
        node.write(command).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "the log-growth hint asked once, refused"
    );
    willing.store(true, Ordering::SeqCst);
    for command in 15..200 {
        node.write(command).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log_len = node.metrics().await.unwrap().log_len;
    assert!(
        log_len <= 50,
        "the live log holds {log_len} entries (max_log_entries = 10) after {} snapshot attempt(s): \
         the refused snapshot was never retried",
        attempts.load(Ordering::SeqCst)
    );
    node.shutdown().await.unwrap();
}

/// A counter whose `apply` blocks while the gate is closed, and says when it is blocked.
#[derive(Clone, Default)]
struct Gated {
    gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
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

/// The same without any refusal from the state machine: the driver `try_send`s the hinted
/// snapshot job and silently drops the hint when the apply channel is full at that moment.
/// With `max_log_entries` driving compaction, that single lost hint is never repeated, and the
/// log is never compacted again.
#[tokio::test(start_paused = true)]
async fn a_snapshot_hint_that_meets_a_full_apply_channel_is_not_lost_for_good() {
    let network = LocalNetwork::new();
    let state = Gated::default();
    state.set_open(true);
    let node = lone_leader(&network, state.clone(), MemStorage::new(), |config| {
        config.snapshot_hint_threshold_entries = 0;
        config.max_log_entries = 4;
        config.max_pending_applies = 1;
    })
    .await;
    // noop at 1, then 2 and 3: the live log holds 3 entries, under the limit of 4.
    node.write(0).await.unwrap();
    node.write(1).await.unwrap();
    // Write A (index 4) blocks in apply; write B (index 5) fills the channel and takes the
    // live log past the limit: its hint meets the full channel.
    state.set_open(false);
    let write_a = tokio::spawn({
        let node = node.clone();
        async move { node.write(2).await }
    });
    while !state.blocked.load(Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
    let write_b = tokio::spawn({
        let node = node.clone();
        async move { node.write(3).await }
    });
    loop {
        // Committed on a lone node: handed to the apply channel in the same iteration.
        if node.status().await.unwrap().commit_index.get() >= 5 {
            break;
        }
        tokio::task::yield_now().await;
    }
    state.set_open(true);
    write_a.await.unwrap().unwrap();
    write_b.await.unwrap().unwrap();
    for command in 4..200 {
        node.write(command).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log_len = node.metrics().await.unwrap().log_len;
    assert!(
        log_len <= 50,
        "the live log holds {log_len} entries with max_log_entries = 4: the hint dropped on a \
         full apply channel was never repeated"
    );
    node.shutdown().await.unwrap();
}
