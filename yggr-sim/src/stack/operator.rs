//! An operator at work during the faults: leadership transfers, and membership changes that
//! take a voter out and bring it back as a learner, then promote it; on three nodes, now and
//! then down to a lone voter with two learners for a while. Once the faults are healed, it
//! puts every member back as a voter, and says so.
//!
//! Its calls fail under faults as often as clients' do; it only ever asks the node it
//! believes leads, and starts over from the cluster's status after any error.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use yggr::{Membership, NodeId, Role};

use super::cluster::{Process, Registry};
use super::observed::Observed;
use super::workload::{Draw, Workload};

pub(crate) struct Operator<W: Workload> {
    pub(crate) registry: Rc<Registry<W>>,
    pub(crate) members: Vec<NodeId>,
    /// Set when the faults phase ends.
    pub(crate) stop: Rc<Cell<bool>>,
    /// Set once every member is a voter again after the faults.
    pub(crate) restored: Rc<Cell<bool>>,
    /// Whether every member is a voter now; the fault injector corrupts disks only then.
    pub(crate) full: Rc<Cell<bool>>,
    pub(crate) draw: Draw,
    pub(crate) transfers: bool,
    pub(crate) membership_changes: bool,
    /// What was done, for the report.
    pub(crate) counts: Rc<Cell<OperatorCounts>>,
}

/// What the operator did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OperatorCounts {
    /// Leadership transfers that completed.
    pub transfers: u64,
    /// Voters removed.
    pub removals: u64,
    /// Learners added.
    pub learners_added: u64,
    /// Learners promoted.
    pub promotions: u64,
    /// Periods with one voter left.
    pub lone_voter_periods: u64,
}

const RETRY: Duration = Duration::from_millis(20);

impl<W: Workload> Operator<W> {
    pub(crate) async fn run(mut self) -> turmoil::Result {
        while !self.stop.get() {
            let pause = 300 + self.draw.below(1_200);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            if self.stop.get() {
                break;
            }
            let choice = self.draw.below(4);
            if self.transfers && choice == 0 {
                self.transfer().await;
            } else if self.membership_changes && choice == 1 {
                self.cycle_one_voter().await;
            } else if self.membership_changes && choice == 2 && self.members.len() == 3 {
                self.lone_voter_period().await;
            }
        }
        self.restore().await;
        self.restored.set(true);
        Ok(())
    }

    fn bump(&self, change: impl FnOnce(&mut OperatorCounts)) {
        let mut counts = self.counts.get();
        change(&mut counts);
        self.counts.set(counts);
    }

    /// The node that says it leads, with the highest term, and its membership.
    async fn leader(&self) -> Option<(yggr::Node<Observed<W>>, NodeId, Membership)> {
        let mut best: Option<(u64, yggr::Node<Observed<W>>, NodeId, Membership)> = None;
        for id in self.registry.up() {
            let Some((node, _)) = self.registry.node(id) else {
                continue;
            };
            let Ok(Ok(status)) = tokio::time::timeout(RETRY, node.status()).await else {
                continue;
            };
            let term = status.current_term.get();
            if status.role == Role::Leader && best.as_ref().is_none_or(|(seen, ..)| term > *seen) {
                best = Some((term, node, id, status.membership));
            }
        }
        best.map(|(_, node, id, membership)| (node, id, membership))
    }

    async fn transfer(&mut self) {
        let Some((node, leader, membership)) = self.leader().await else {
            return;
        };
        let candidates: Vec<NodeId> = membership
            .voters
            .iter()
            .copied()
            .filter(|&id| id != leader && self.registry.process(id) == Process::Up)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let target = candidates[self.draw.below(candidates.len() as u64) as usize];
        if node.transfer_leadership_to(target).await.is_ok() {
            self.bump(|counts| counts.transfers += 1);
        }
    }

    /// Whether no member is lost for good or about to be (its disk corrupted before its
    /// restart): only then does the operator shrink the configuration, since with a member
    /// lost, fewer voters could mean no majority at all.
    fn none_lost(&self) -> bool {
        self.members.iter().all(|&id| {
            let lost = matches!(self.registry.process(id), Process::Lost(_));
            let doomed = self
                .registry
                .with_slot(id, |slot| slot.corrupt_before_start.is_some());
            !lost && !doomed
        })
    }

    /// Removes one voter, adds it back as a learner, and promotes it.
    async fn cycle_one_voter(&mut self) {
        if !self.none_lost() {
            return;
        }
        let Some((node, _, membership)) = self.leader().await else {
            return;
        };
        if membership.voters.len() != self.members.len() {
            return;
        }
        let victim = self.members[self.draw.below(self.members.len() as u64) as usize];
        self.full.set(false);
        if node.admin().remove_peer(victim).await.is_ok() {
            self.bump(|counts| counts.removals += 1);
        }
        tokio::time::sleep(Duration::from_millis(50 + self.draw.below(500))).await;
        self.restore().await;
    }

    /// Leaves one voter and two learners for a while, then restores the voters.
    async fn lone_voter_period(&mut self) {
        if !self.none_lost() {
            return;
        }
        let Some((_, leader, membership)) = self.leader().await else {
            return;
        };
        if membership.voters.len() != self.members.len() {
            return;
        }
        self.full.set(false);
        for &id in &self.members.clone() {
            if id == leader {
                continue;
            }
            let Some((node, ..)) = self.leader().await else {
                break;
            };
            if node.admin().remove_peer(id).await.is_ok() {
                self.bump(|counts| counts.removals += 1);
            }
            let Some((node, ..)) = self.leader().await else {
                break;
            };
            if node.admin().add_learner(id).await.is_ok() {
                self.bump(|counts| counts.learners_added += 1);
            }
        }
        if let Some((_, _, membership)) = self.leader().await
            && membership.voters.len() == 1
        {
            self.bump(|counts| counts.lone_voter_periods += 1);
        }
        tokio::time::sleep(Duration::from_millis(200 + self.draw.below(1_500))).await;
        self.restore().await;
    }

    /// Brings every member back as a voter: adds the missing ones as learners, promotes
    /// learners. Keeps at it until the leader's configuration holds every member as a voter.
    async fn restore(&mut self) {
        loop {
            let Some((node, _, membership)) = self.leader().await else {
                tokio::time::sleep(RETRY).await;
                continue;
            };
            let missing: Vec<NodeId> = self
                .members
                .iter()
                .copied()
                .filter(|id| !membership.voters.contains(id))
                .collect();
            let Some(&next) = missing.first() else {
                self.full.set(true);
                return;
            };
            let admin = node.admin();
            if membership.learners.contains(&next) {
                if admin.promote_learner(next).await.is_ok() {
                    self.bump(|counts| counts.promotions += 1);
                }
            } else if admin.add_learner(next).await.is_ok() {
                self.bump(|counts| counts.learners_added += 1);
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}
