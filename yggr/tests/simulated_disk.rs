//! `DiskStorage` on turmoil's simulated file system (the `simulation` feature): the storage's
//! own code, unmodified, against a disk that loses what was not synced when its host crashes.
//!
//! Run with `cargo test -p yggr --features simulation --test simulated_disk`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;
use yggr::core::{EntryPayload, LogEntry, LogIndex, Membership, NodeId, Term};
use yggr::{DiskStorage, Storage, StorageWrite};

/// Where the node keeps its storage, on the simulated host's file system only.
const DATA: &str = "/var/lib/yggr-simulated-disk-test/raft";

fn entries(range: std::ops::RangeInclusive<u64>) -> StorageWrite {
    StorageWrite::Entries(
        range
            .map(|index| LogEntry {
                index: LogIndex::new(index),
                term: Term::new(1),
                payload: EntryPayload::Command(Bytes::from(format!("command {index}"))),
            })
            .collect(),
    )
}

fn id(raw: u64) -> NodeId {
    NodeId::new(raw).unwrap()
}

/// A host stores three synced entries, crashes (the simulated disk keeps exactly what was
/// synced), restarts, and reads them back: the storage's syncs reach the simulated disk, and
/// its recovery runs on it. Nothing is written to the real file system.
#[test]
fn disk_storage_keeps_what_it_synced_across_a_simulated_crash() -> turmoil::Result {
    let mut sim = turmoil::Builder::new().build();
    let restarted = Arc::new(AtomicBool::new(false));
    let recovered: Arc<Mutex<Option<Vec<u64>>>> = Arc::default();
    let done = Arc::new(Notify::new());
    {
        let (restarted, recovered, done) = (restarted.clone(), recovered.clone(), done.clone());
        sim.host("node", move || {
            let (restarted, recovered, done) = (restarted.clone(), recovered.clone(), done.clone());
            async move {
                let mut storage = DiskStorage::open(DATA).await?;
                if restarted.load(Ordering::SeqCst) {
                    let state = storage.load().await?.expect("the node's state survived");
                    let indexes = state.log.iter().map(|entry| entry.index.get()).collect();
                    *recovered.lock().unwrap() = Some(indexes);
                } else {
                    assert_eq!(storage.load().await?, None);
                    let founding = Membership::from_voters([id(1), id(2), id(3)]);
                    storage.bootstrap(id(1), &founding).await?;
                    storage.persist(vec![entries(1..=3)]).await?;
                }
                done.notify_one();
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }
    let waiter = done.clone();
    sim.client("before-crash", async move {
        waiter.notified().await;
        Ok(())
    });
    sim.run()?;
    sim.crash("node");
    restarted.store(true, Ordering::SeqCst);
    sim.bounce("node");
    let waiter = done.clone();
    sim.client("after-restart", async move {
        waiter.notified().await;
        Ok(())
    });
    sim.run()?;
    assert_eq!(*recovered.lock().unwrap(), Some(vec![1, 2, 3]));
    assert!(
        !Path::new(DATA).exists(),
        "the storage wrote to the real file system"
    );
    Ok(())
}
