//! TcpStats accounting: every message is counted once, as sent or as dropped, also when a batch
//! holding a message above the frame limit follows a connection the peer closed.

use std::time::Duration;

use yggr::core::{AppendEntries, Message, Rpc};
use yggr::{Bytes, EntryPayload, LogEntry, LogIndex, TcpOptions, TcpTransport, Term, Transport};

use crate::common::{eventually, id};

fn append(bytes: usize) -> Message<Bytes> {
    let entries = if bytes == 0 {
        Vec::new()
    } else {
        vec![LogEntry {
            index: LogIndex::new(1),
            term: Term::new(1),
            payload: EntryPayload::Command(Bytes::from(vec![7; bytes])),
        }]
    };
    Message {
        from: id(1),
        term: Term::new(1),
        rpc: Rpc::AppendEntries(AppendEntries {
            prev_log_index: LogIndex::ZERO,
            prev_log_term: Term::ZERO,
            entries,
            leader_commit: LogIndex::ZERO,
            round: 0,
        }),
    }
}

/// Every message handed to `send` ends up counted once: as a frame written (each of these
/// fits one frame) or as a dropped message. A message above the frame limit is counted as
/// dropped when it is skipped, and not again when the rest of its batch goes out (or is
/// lost) with the connection.
#[tokio::test(flavor = "current_thread")]
async fn each_message_is_counted_once_as_sent_or_dropped() {
    let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer_address = peer.local_addr().unwrap();
    let mut options = TcpOptions::default();
    options.max_frame_bytes = 1024;
    let mut transport = TcpTransport::start_with(
        id(1),
        "127.0.0.1:0".parse().unwrap(),
        [(id(2), peer_address)],
        options,
    )
    .await
    .unwrap();
    let handle = transport.handle();

    // One small message opens the connection and is written.
    transport.send(id(2), append(0));
    let (connection, _) = peer.accept().await.unwrap();
    let written = eventually(Duration::from_secs(10), || async {
        (handle.stats().frames_sent == 1).then_some(())
    })
    .await;
    assert!(written.is_some(), "{:?}", handle.stats());
    // The peer closes without reading what it was sent, so the kernel answers with a reset:
    // the writer sees it, counts a failure and connects again (the listener's backlog takes
    // the new connection).
    drop(connection);
    let reconnected = eventually(Duration::from_secs(10), || async {
        let stats = handle.stats();
        (stats.connection_failures >= 1 && stats.connections_opened >= 2).then_some(())
    })
    .await;
    assert!(
        reconnected.is_some(),
        "the writer never noticed the close: {:?}",
        handle.stats()
    );

    // One batch: a message no frame can carry, and a small one.
    transport.send(id(2), append(4096));
    transport.send(id(2), append(0));
    let written = eventually(Duration::from_secs(10), || async {
        (handle.stats().frames_sent == 2).then_some(())
    })
    .await;
    assert!(
        written.is_some(),
        "the small message was not written: {:?}",
        handle.stats()
    );
    let stats = handle.stats();
    assert_eq!(
        stats.frames_sent + stats.messages_dropped,
        3,
        "three messages were sent, each of one frame: {stats:?}"
    );
}
