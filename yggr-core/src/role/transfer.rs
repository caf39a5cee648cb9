//! Leadership transfer (thesis §3.10).

use tracing::{info, warn};

use crate::action::Action;
use crate::engine::Engine;
use crate::message::Rpc;
use crate::types::{NodeId, Role};

/// A transfer in progress on the leader.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Transfer {
    pub(crate) target: NodeId,
    pub(crate) elapsed_ticks: u64,
}

impl<C: Clone> Engine<C> {
    pub(crate) fn on_transfer_leadership(&mut self, target: NodeId) {
        if self.role != Role::Leader {
            self.out.push(Action::Redirect {
                leader_hint: self.leader_id,
            });
            return;
        }
        if target == self.id || !self.membership().is_voter(target) {
            warn!(
                target: "yggr::engine",
                node_id = self.id.get(),
                term = self.current_term.get(),
                transfer_target = target.get(),
                "refused leadership transfer to self or a non-voter"
            );
            self.out.push(Action::TransferRejected { target });
            return;
        }
        info!(
            target: "yggr::engine",
            node_id = self.id.get(),
            term = self.current_term.get(),
            transfer_target = target.get(),
            "leadership transfer started"
        );
        self.transfer = Some(Transfer {
            target,
            elapsed_ticks: 0,
        });
        self.on_peer_caught_up(target);
        self.send_appends(target);
    }

    /// Once the transfer target holds our whole log, tell it to campaign. This fires once per
    /// transfer: it runs when a transfer starts and when the target's match index advances
    /// (by an acknowledgement or a completed snapshot), and once that reached the end of the
    /// log it cannot advance again, since a leader handing over appends nothing (proposals and
    /// changes are refused until the transfer ends).
    pub(crate) fn on_peer_caught_up(&mut self, peer: NodeId) {
        let Some(transfer) = self.transfer else {
            return;
        };
        if transfer.target != peer {
            return;
        }
        let caught_up = self
            .progress
            .get(&peer)
            .is_some_and(|progress| progress.match_index == self.log.last_index());
        if caught_up {
            self.lease_revoked = true;
            self.send(peer, Rpc::TimeoutNow);
        }
    }

    /// A transfer that has not completed within an election timeout is abandoned and the
    /// leader takes proposals again.
    pub(crate) fn tick_transfer(&mut self) {
        let Some(mut transfer) = self.transfer else {
            return;
        };
        transfer.elapsed_ticks += 1;
        if transfer.elapsed_ticks >= self.config.election_timeout_min_ticks {
            info!(
                target: "yggr::engine",
                node_id = self.id.get(),
                term = self.current_term.get(),
                transfer_target = transfer.target.get(),
                "leadership transfer timed out; resuming"
            );
            self.transfer = None;
        } else {
            self.transfer = Some(transfer);
        }
    }
}
