//! Proposing single-server membership changes (§4.3).

use tracing::info;

use crate::action::{Action, ConfigChangeRejection};
use crate::engine::Engine;
use crate::entry::{EntryPayload, LogEntry};
use crate::membership::ConfigChange;
use crate::types::Role;

impl<C: Clone> Engine<C> {
    pub(crate) fn on_propose_config_change(&mut self, change: ConfigChange) {
        if self.role != Role::Leader {
            self.out.push(Action::Redirect {
                leader_hint: self.leader_id,
            });
            return;
        }
        if let Err(reason) = self.check_config_change(change) {
            self.out
                .push(Action::ConfigChangeRejected { change, reason });
            return;
        }
        let membership = match self.membership().with_change(change) {
            Ok(membership) => membership,
            Err(error) => {
                self.out.push(Action::ConfigChangeRejected {
                    change,
                    reason: ConfigChangeRejection::Invalid(error),
                });
                return;
            }
        };
        info!(
            target: "yggr::engine",
            node_id = self.id.get(),
            term = self.current_term.get(),
            change = ?change,
            "proposing membership change"
        );
        let entry = LogEntry {
            term: self.current_term,
            index: self.log.last_index().next(),
            payload: EntryPayload::ConfigChange { change, membership },
        };
        // The new configuration is in force from this append on (§4.3), for replication and
        // for the commit majority alike.
        self.append_and_persist(vec![entry]);
        self.sync_progress();
        self.maybe_commit();
        self.broadcast_appends();
        // The majority that confirms reads changed with the configuration: a read waiting on
        // voters that just left may be confirmed already (the leader alone, say).
        self.confirm_reads();
    }

    fn check_config_change(&self, _change: ConfigChange) -> Result<(), ConfigChangeRejection> {
        if self.transfer.is_some() {
            return Err(ConfigChangeRejection::TransferInProgress);
        }
        // One change at a time: the previous one must be committed first (§4.3).
        let uncommitted = self
            .log_memberships
            .last()
            .is_some_and(|(index, _)| *index > self.commit_index);
        if uncommitted {
            return Err(ConfigChangeRejection::ChangeInProgress);
        }
        // A new leader must commit an entry of its own term before changing membership, or it
        // could commit a change decided against a stale configuration.
        if self.log.term_at(self.commit_index) != Some(self.current_term) {
            return Err(ConfigChangeRejection::LeaderNotReady);
        }
        Ok(())
    }
}
