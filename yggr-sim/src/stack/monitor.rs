//! A client that watches every node's status through the run and holds the cluster to the
//! rules it can see from outside: at most one leader per term (Election Safety, §5.2), and
//! no node's term or commit index going backwards while its process lives.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use yggr::{NodeId, Role};

use super::cluster::Registry;
use super::workload::Workload;

/// What the monitor saw.
#[derive(Clone, Debug, Default)]
pub(crate) struct Watch {
    /// The leader seen in each term.
    pub(crate) leaders: BTreeMap<u64, NodeId>,
    /// The first rule broken, if any.
    pub(crate) violation: Option<String>,
    /// Each node's last (life, term, commit index).
    last: BTreeMap<NodeId, (u32, u64, u64)>,
}

pub(crate) struct Monitor<W: Workload> {
    pub(crate) registry: Rc<Registry<W>>,
    pub(crate) watch: Rc<RefCell<Watch>>,
}

/// How often every node is asked.
const POLL: Duration = Duration::from_millis(5);

impl<W: Workload> Monitor<W> {
    pub(crate) async fn run(self) -> turmoil::Result {
        loop {
            tokio::time::sleep(POLL).await;
            for id in self.registry.up() {
                let Some((node, life)) = self.registry.node(id) else {
                    continue;
                };
                // A node paused since it was picked answers late: skip it this round.
                let Ok(Ok(status)) = tokio::time::timeout(POLL, node.status()).await else {
                    continue;
                };
                let term = status.current_term.get();
                let commit = status.commit_index.get();
                let mut watch = self.watch.borrow_mut();
                if watch.violation.is_some() {
                    continue;
                }
                if status.role == Role::Leader {
                    match watch.leaders.get(&term) {
                        Some(other) if *other != id => {
                            watch.violation = Some(format!(
                                "two leaders in term {term}: node {other} and node {id}"
                            ));
                        }
                        _ => {
                            watch.leaders.insert(term, id);
                        }
                    }
                }
                if let Some((seen_life, seen_term, seen_commit)) = watch.last.get(&id).copied()
                    && seen_life == life
                    && (term < seen_term || commit < seen_commit)
                {
                    watch.violation = Some(format!(
                        "node {id} went back from term {seen_term}, commit {seen_commit} to term {term}, commit {commit} without restarting"
                    ));
                }
                watch.last.insert(id, (life, term, commit));
            }
        }
    }
}
