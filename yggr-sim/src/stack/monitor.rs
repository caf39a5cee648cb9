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
    /// When each node was seen leading (simulated time, in order).
    leading: BTreeMap<NodeId, Vec<Duration>>,
}

pub(crate) struct Monitor<W: Workload> {
    pub(crate) registry: Rc<Registry<W>>,
    pub(crate) watch: Rc<RefCell<Watch>>,
}

/// How often every node is asked.
pub(crate) const POLL: Duration = Duration::from_millis(5);

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
                let leads = status.role == Role::Leader;
                let (term, commit) = (status.current_term.get(), status.commit_index.get());
                let mut watch = self.watch.borrow_mut();
                watch.observe(id, life, leads, term, commit);
                if leads {
                    watch.saw_leading(id, super::clients::now());
                }
            }
        }
    }
}

impl Watch {
    /// Notes that `id` said it led at `at`.
    pub(crate) fn saw_leading(&mut self, id: NodeId, at: Duration) {
        self.leading.entry(id).or_default().push(at);
    }

    /// Whether `id` was seen leading at any time in `from..=to`, give or take one poll (a
    /// leadership shorter than a poll may go unseen).
    pub(crate) fn led_around(&self, id: NodeId, from: Duration, to: Duration) -> bool {
        let (from, to) = (from.saturating_sub(2 * POLL), to + 2 * POLL);
        self.leading.get(&id).is_some_and(|times| {
            let first_after = times.partition_point(|at| *at < from);
            times.get(first_after).is_some_and(|at| *at <= to)
        })
    }

    /// Takes one node's status, seen during its `life`-th start; keeps the first rule it
    /// breaks.
    pub(crate) fn observe(&mut self, id: NodeId, life: u32, leads: bool, term: u64, commit: u64) {
        if self.violation.is_some() {
            return;
        }
        if leads {
            match self.leaders.get(&term) {
                Some(other) if *other != id => {
                    self.violation = Some(format!(
                        "two leaders in term {term}: node {other} and node {id}"
                    ));
                }
                _ => {
                    self.leaders.insert(term, id);
                }
            }
        }
        if let Some((seen_life, seen_term, seen_commit)) = self.last.get(&id).copied()
            && seen_life == life
            && (term < seen_term || commit < seen_commit)
        {
            self.violation = Some(format!(
                "node {id} went back from term {seen_term}, commit {seen_commit} to term {term}, commit {commit} without restarting"
            ));
        }
        self.last.insert(id, (life, term, commit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64) -> NodeId {
        NodeId::new(id).unwrap()
    }

    #[test]
    fn two_nodes_leading_in_one_term_break_election_safety() {
        let mut watch = Watch::default();
        watch.observe(node(1), 1, true, 3, 10);
        watch.observe(node(2), 1, false, 3, 10);
        assert!(watch.violation.is_none());
        watch.observe(node(2), 1, true, 3, 11);
        let violation = watch.violation.unwrap();
        assert!(violation.contains("two leaders in term 3"), "{violation}");
    }

    #[test]
    fn one_node_leading_again_in_later_terms_is_fine() {
        let mut watch = Watch::default();
        watch.observe(node(1), 1, true, 3, 10);
        watch.observe(node(1), 1, true, 3, 12);
        watch.observe(node(2), 1, true, 4, 12);
        assert!(watch.violation.is_none(), "{:?}", watch.violation);
        assert_eq!(watch.leaders.len(), 2);
    }

    #[test]
    fn a_term_or_commit_index_going_back_without_a_restart_is_caught() {
        let mut watch = Watch::default();
        watch.observe(node(1), 1, false, 5, 20);
        watch.observe(node(1), 1, false, 5, 19);
        assert!(watch.violation.unwrap().contains("went back"));
        let mut watch = Watch::default();
        watch.observe(node(1), 1, false, 5, 20);
        watch.observe(node(1), 1, false, 4, 20);
        assert!(watch.violation.is_some());
    }

    #[test]
    fn a_restarted_node_may_start_lower() {
        let mut watch = Watch::default();
        watch.observe(node(1), 1, false, 5, 20);
        watch.observe(node(1), 2, false, 5, 0);
        assert!(watch.violation.is_none(), "{:?}", watch.violation);
    }
}
