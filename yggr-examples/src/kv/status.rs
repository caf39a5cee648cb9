//! `RAFT.STATUS` and `INFO`: what a node reports about itself, as `field:value` lines.

use std::fmt::Write;

use bytes::Bytes;
use yggr::{NodeId, Role};

use super::commands::{Service, role_name};
use super::resp::Reply;

fn ids(ids: impl Iterator<Item = NodeId>) -> String {
    ids.map(|id| id.to_string()).collect::<Vec<_>>().join(",")
}

/// `RAFT.STATUS`: id, role, membership (`member:yes`, `no` or `removed`, see [`Standing`]),
/// term, commit and applied indexes, leader (id and client address), voters and learners, the
/// snapshot counters (`snapshots_installed` from a leader, `snapshots_taken` and
/// `snapshots_failed` here), and on the leader one `follower_<id>` line per follower. It is
/// answered by the node asked, from its own view: never redirected.
///
/// [`Standing`]: super::membership::Standing
pub async fn raft_status(service: &Service) -> Reply {
    let metrics = match service.node().node_metrics().await {
        Ok(metrics) => metrics,
        Err(error) => return Reply::error(error),
    };
    let status = &metrics.status;
    let standing = service
        .membership_record()
        .observe(status, metrics.last_log_index);
    let is_learner = status.membership.is_learner(status.id);
    let leader_client = status
        .leader
        .and_then(|leader| service.client_address(leader))
        .map_or(String::new(), |address| address.to_string());
    let mut text = String::new();
    let _ = writeln!(text, "id:{}", status.id);
    let _ = writeln!(text, "role:{}", role_name(status.role, is_learner));
    let _ = writeln!(text, "member:{}", standing.as_str());
    let _ = writeln!(text, "term:{}", status.current_term.get());
    let _ = writeln!(text, "commit_index:{}", status.commit_index.get());
    let _ = writeln!(text, "last_applied:{}", status.last_applied.get());
    let _ = writeln!(text, "leader_id:{}", status.leader.map_or(0, NodeId::get));
    let _ = writeln!(text, "leader_client_addr:{leader_client}");
    let _ = writeln!(
        text,
        "voters:{}",
        ids(status.membership.voters.iter().copied())
    );
    let _ = writeln!(
        text,
        "learners:{}",
        ids(status.membership.learners.iter().copied())
    );
    let _ = writeln!(text, "last_log_index:{}", metrics.last_log_index.get());
    let _ = writeln!(
        text,
        "snapshots_installed:{}",
        metrics.engine.snapshots_installed
    );
    let _ = writeln!(text, "snapshots_taken:{}", metrics.snapshots_taken);
    let _ = writeln!(text, "snapshots_failed:{}", metrics.snapshots_failed);
    if status.role == Role::Leader {
        for (id, progress) in &metrics.replication.followers {
            let _ = writeln!(
                text,
                "follower_{id}:matched={},next={}",
                progress.matched.get(),
                progress.next_index.get()
            );
        }
    }
    Reply::Bulk(Bytes::from(text))
}

/// `INFO [section]`: a `# Server` and a `# Replication` section in Redis's layout (CRLF line
/// ends), the latter naming this node's role as Redis does (`master` for the leader). A
/// section name picks one of them (`all`, `default` and `everything` pick both).
pub async fn info(service: &Service, section: Option<&Bytes>) -> Reply {
    let section = section.map(|name| name.to_ascii_lowercase());
    let wants = |name: &[u8]| match section.as_deref() {
        None | Some(b"all" | b"default" | b"everything") => true,
        Some(asked) => asked == name,
    };
    let status = match service.node().status().await {
        Ok(status) => status,
        Err(error) => return Reply::error(error),
    };
    let is_leader = status.role == Role::Leader;
    let mut text = String::new();
    if wants(b"server") {
        let _ = write!(text, "# Server\r\n");
        let _ = write!(text, "redis_mode:yggr\r\n");
        let _ = write!(text, "yggr_version:{}\r\n", env!("CARGO_PKG_VERSION"));
        let _ = write!(text, "node_id:{}\r\n\r\n", status.id);
    }
    if !wants(b"replication") {
        return Reply::Bulk(Bytes::from(text));
    }
    let _ = write!(text, "# Replication\r\n");
    let _ = write!(
        text,
        "role:{}\r\n",
        if is_leader { "master" } else { "slave" }
    );
    let _ = write!(
        text,
        "raft_role:{}\r\n",
        role_name(status.role, status.membership.is_learner(status.id))
    );
    let _ = write!(text, "raft_term:{}\r\n", status.current_term.get());
    let _ = write!(text, "raft_commit_index:{}\r\n", status.commit_index.get());
    let _ = write!(text, "raft_last_applied:{}\r\n", status.last_applied.get());
    if is_leader {
        let others = status
            .membership
            .members()
            .filter(|id| *id != status.id)
            .count();
        let _ = write!(text, "connected_slaves:{others}\r\n");
    } else if let Some(address) = status
        .leader
        .and_then(|leader| service.client_address(leader))
    {
        let _ = write!(text, "master_host:{}\r\n", address.ip());
        let _ = write!(text, "master_port:{}\r\n", address.port());
        let _ = write!(text, "master_link_status:up\r\n");
    } else {
        let _ = write!(text, "master_link_status:down\r\n");
    }
    Reply::Bulk(Bytes::from(text))
}
