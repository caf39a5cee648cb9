//! The identities in the TCP handshake: a peer of another cluster is refused, and so is a
//! node that came back over wiped storage, at both ends, until it is removed and added again.

use std::net::SocketAddr;
use std::time::Duration;

use yggr::core::{Message, Rpc, VoteResponse};
use yggr::{Bytes, NodeIdentity, TcpTransport, Term, Transport};

use crate::common::id;

/// How long a test waits for something that should happen within milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

fn vote(from: u64) -> Message<Bytes> {
    Message {
        from: id(from),
        term: Term::new(1),
        rpc: Rpc::RequestVoteResponse(VoteResponse { granted: true }),
    }
}

async fn node(raw: u64, cluster_id: u64, incarnation: u64) -> TcpTransport {
    let mut transport = TcpTransport::start(id(raw), "127.0.0.1:0".parse().unwrap(), [])
        .await
        .unwrap();
    transport.set_identity(NodeIdentity {
        cluster_id,
        incarnation,
    });
    transport
}

fn introduce(transport: &TcpTransport, peer: u64, address: SocketAddr) {
    transport.handle().add_peer(id(peer), address);
}

/// Sends from `from` to `to` until a message arrives, or `PATIENCE` runs out. A refused
/// writer backs off and drops what queued meanwhile, so it sends again on every poll.
async fn delivered(
    from: &mut TcpTransport,
    sender: u64,
    to: &mut TcpTransport,
    receiver: u64,
) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        from.send(id(receiver), vote(sender));
        if let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(50), to.recv()).await
        {
            assert_eq!(message.from, id(sender));
            return true;
        }
    }
    false
}

/// Sends from `from` to `receiver` until `counted` sees the refusal, or `PATIENCE` runs out.
async fn refused(
    from: &mut TcpTransport,
    sender: u64,
    receiver: u64,
    counted: &TcpTransport,
) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        from.send(id(receiver), vote(sender));
        if counted.handle().stats().refused_identity > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn a_peer_of_another_cluster_is_refused_and_counted_and_one_of_the_same_cluster_accepted() {
    let mut first = node(1, 0xc1, 0x100).await;
    let mut stranger = node(2, 0xc2, 0x200).await;
    let mut member = node(3, 0xc1, 0x300).await;
    introduce(&first, 2, stranger.local_addr());
    introduce(&first, 3, member.local_addr());
    introduce(&stranger, 1, first.local_addr());
    introduce(&member, 1, first.local_addr());

    assert!(refused(&mut stranger, 2, 1, &first).await);
    assert!(first.try_recv().is_none());
    assert!(delivered(&mut member, 3, &mut first, 1).await);
    let stats = first.handle().stats();
    assert!(
        stats.connections_rejected >= stats.refused_identity,
        "{stats:?}"
    );
    // Nothing from the stranger got through meanwhile.
    while let Some(message) = first.try_recv() {
        assert_eq!(message.from, id(3));
    }
}

#[tokio::test]
async fn a_node_that_joins_takes_the_cluster_id_of_the_first_peer_it_accepts() {
    let mut founder = node(1, 0xc1, 0x100).await;
    let mut joiner = node(4, 0, 0x400).await;
    introduce(&founder, 4, joiner.local_addr());
    introduce(&joiner, 1, founder.local_addr());
    assert!(delivered(&mut founder, 1, &mut joiner, 4).await);
    assert_eq!(joiner.handle().identity().cluster_id, 0xc1);
}

/// Node 2 loses its data and comes back with another incarnation at another address: node 1,
/// which accepted the old one, refuses it; node 2 refuses node 1, which knows it by the old
/// one. Both count it. Once node 1 removes node 2 and adds it again, the new one is accepted
/// both ways.
#[tokio::test]
async fn a_peer_that_comes_back_with_another_incarnation_is_refused_at_both_ends_until_removed() {
    let mut first = node(1, 0xc1, 0x100).await;
    let mut second = node(2, 0xc1, 0x200).await;
    introduce(&first, 2, second.local_addr());
    introduce(&second, 1, first.local_addr());
    assert!(delivered(&mut second, 2, &mut first, 1).await);
    assert!(delivered(&mut first, 1, &mut second, 2).await);
    drop(second);

    let mut wiped = node(2, 0xc1, 0x201).await;
    introduce(&wiped, 1, first.local_addr());
    introduce(&first, 2, wiped.local_addr());
    assert!(
        refused(&mut wiped, 2, 1, &first).await,
        "node 1 took the new incarnation: {:?}",
        first.handle().stats()
    );
    assert!(
        refused(&mut first, 1, 2, &wiped).await,
        "node 2 took a peer that knows it by the old incarnation: {:?}",
        wiped.handle().stats()
    );
    let taken = first.try_recv();
    assert!(
        taken.is_none(),
        "node 1 took from the wiped node: {taken:?}"
    );
    let taken = wiped.try_recv();
    assert!(
        taken.is_none(),
        "the wiped node took from node 1: {taken:?}"
    );

    // The recovery: node 1 forgets node 2 and adds it again.
    first.handle().remove_peer(id(2));
    introduce(&first, 2, wiped.local_addr());
    assert!(delivered(&mut wiped, 2, &mut first, 1).await);
    assert!(delivered(&mut first, 1, &mut wiped, 2).await);
}
