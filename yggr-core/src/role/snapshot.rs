//! Snapshots (§7): compaction on the host's word, chunked InstallSnapshot to lagging
//! followers, and installation on the receiving side.

use bytes::{Bytes, BytesMut};
use tracing::{debug, info, warn};

use crate::action::Action;
use crate::engine::Engine;
use crate::membership::Membership;
use crate::message::{InstallSnapshot, InstallSnapshotResponse, Rpc};
use crate::progress::ReplicationState;
use crate::types::{LogIndex, NodeId, Role, Term};

/// The latest snapshot this node holds, kept to serve followers that fell behind it.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotData {
    pub(crate) index: LogIndex,
    pub(crate) term: Term,
    pub(crate) membership: Membership,
    pub(crate) bytes: Bytes,
}

/// A snapshot being received chunk by chunk.
#[derive(Debug)]
pub(crate) struct IncomingSnapshot {
    index: LogIndex,
    term: Term,
    /// The term of the leader sending it. One leader sends one byte stream per snapshot
    /// index; another leader's snapshot of the same index may serialise differently, so its
    /// chunks never mix with these.
    leader_term: Term,
    buffer: BytesMut,
}

impl<C: Clone> Engine<C> {
    pub(crate) fn on_snapshot_taken(&mut self, index: LogIndex, bytes: Bytes) {
        if index <= self.log.snapshot_index() {
            debug!(target: "yggr::engine", node_id = self.id.get(), index = index.get(), "ignored a stale snapshot");
            return;
        }
        if index > self.last_applied {
            // Compacting past the applied index would discard entries the state machine has
            // not seen; the host broke the contract, so refuse rather than lose them.
            warn!(
                target: "yggr::engine",
                node_id = self.id.get(),
                index = index.get(),
                last_applied = self.last_applied.get(),
                "ignored a snapshot past the applied index"
            );
            return;
        }
        let Some(term) = self.log.term_at(index) else {
            return;
        };
        let membership = self.membership_at(index);
        self.compact(index, term, membership.clone());
        self.snapshot = Some(SnapshotData {
            index,
            term,
            membership: membership.clone(),
            bytes: bytes.clone(),
        });
        self.flush_hard_state();
        self.out.push(Action::PersistSnapshot {
            last_included_index: index,
            last_included_term: term,
            membership,
            bytes,
        });
    }

    /// The configuration in force at `index`: the newest recorded at or below it.
    fn membership_at(&self, index: LogIndex) -> Membership {
        self.log_memberships
            .iter()
            .rev()
            .find(|(at, _)| *at <= index)
            .map_or_else(|| self.base_membership.clone(), |(_, m)| m.clone())
    }

    /// Moves the snapshot floor to `index` with `term` and installs `membership` below it.
    ///
    /// The suffix is kept only if the log holds the snapshot's last entry with its term; a log
    /// that does not continue from the snapshot is discarded whole (§7).
    fn compact(&mut self, index: LogIndex, term: Term, membership: Membership) {
        if self.log.term_at(index) == Some(term) {
            self.log.compact_to(index, term);
            self.log_memberships.retain(|(at, _)| *at > index);
        } else {
            self.log.reset_to(index, term);
            self.log_memberships.clear();
        }
        self.base_membership = membership;
        self.hinted_band = 0;
        self.hinted_log_growth = false;
    }

    /// Emits `SnapshotHint` when the applied entries past the floor cross another multiple of
    /// the threshold, or the live log outgrows its limit.
    pub(crate) fn maybe_hint_snapshot(&mut self) {
        let floor = self.log.snapshot_index();
        if self.last_applied <= floor {
            return;
        }
        let mut hint = false;
        let applied_past_floor = self.last_applied.distance_from(floor);
        // A zero threshold disables the band hint; checked_div yields None for it.
        if let Some(band) =
            applied_past_floor.checked_div(self.config.snapshot_hint_threshold_entries)
            && band > self.hinted_band
        {
            self.hinted_band = band;
            hint = true;
        }
        let max_log = self.config.max_log_entries;
        if max_log > 0 && self.log.len() > max_log && !self.hinted_log_growth {
            self.hinted_log_growth = true;
            hint = true;
        }
        if hint {
            self.out.push(Action::SnapshotHint {
                last_included_index: self.last_applied,
            });
        }
    }

    /// `peer` needs entries below our floor: send it our snapshot from the start.
    pub(crate) fn start_snapshot_transfer(&mut self, peer: NodeId) {
        let Some(progress) = self.progress.get_mut(&peer) else {
            return;
        };
        if self.snapshot.is_none() {
            // A floor without snapshot bytes cannot happen: the floor only rises through a
            // snapshot, and recovery restores its bytes. Refuse to send garbage if it does.
            warn!(target: "yggr::engine", node_id = self.id.get(), peer = peer.get(), "no snapshot to send");
            return;
        }
        progress.become_snapshot();
        debug!(
            target: "yggr::engine",
            node_id = self.id.get(),
            term = self.current_term.get(),
            peer = peer.get(),
            "sending snapshot"
        );
        self.send_snapshot_chunk(peer);
    }

    /// Sends the chunk at `peer`'s snapshot offset. Each answer that moves the offset forward
    /// sends the next chunk; a heartbeat interval without such an answer resends the current
    /// one (see `broadcast_heartbeat`). Answers that do not move the offset forward send
    /// nothing, so duplicated chunks and answers never multiply into parallel streams.
    pub(crate) fn send_snapshot_chunk(&mut self, peer: NodeId) {
        let Some(snapshot) = self.snapshot.as_ref() else {
            return;
        };
        let Some(progress) = self.progress.get_mut(&peer) else {
            return;
        };
        if progress.snapshot_index != snapshot.index {
            // A newer snapshot replaced the one being sent: start over with it.
            progress.snapshot_index = snapshot.index;
            progress.snapshot_offset = 0;
        }
        let total = snapshot.bytes.len();
        let start = usize::try_from(progress.snapshot_offset)
            .unwrap_or(total)
            .min(total);
        let end = start
            .saturating_add(self.config.snapshot_chunk_size_bytes)
            .min(total);
        let request = InstallSnapshot {
            last_included_index: snapshot.index,
            last_included_term: snapshot.term,
            membership: snapshot.membership.clone(),
            offset: start as u64,
            data: snapshot.bytes.slice(start..end),
            done: end == total,
            round: self.heartbeat_round,
        };
        self.metrics.snapshots_sent += 1;
        self.send(peer, Rpc::InstallSnapshot(request));
    }

    pub(crate) fn on_install_snapshot_response(
        &mut self,
        peer: NodeId,
        response: InstallSnapshotResponse,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let Some(snapshot_index) = self.snapshot.as_ref().map(|s| s.index) else {
            return;
        };
        let Some(progress) = self.progress.get_mut(&peer) else {
            return;
        };
        // Any answer in our term shows the follower recognised us as of that round, however
        // long the transfer takes (check-quorum and reads rely on it).
        progress.acked_round = progress
            .acked_round
            .max(response.round.min(self.heartbeat_round));
        if progress.state != ReplicationState::Snapshot
            || response.last_included_index != progress.snapshot_index
        {
            self.confirm_reads();
            return;
        }
        if response.done {
            // The follower now holds everything through the snapshot.
            let index = response.last_included_index;
            let advanced = index > progress.match_index;
            if advanced {
                progress.match_index = index;
            }
            progress.become_probe(index.next());
            self.maybe_commit();
            // As for AppendEntries: only a match index that moved can newly catch a transfer
            // target up (an acknowledgement may have got it there before this answer came).
            if advanced {
                self.on_peer_caught_up(peer);
            }
            self.send_appends(peer);
        } else if response.last_included_index == snapshot_index {
            let advanced = response.next_offset > progress.snapshot_offset;
            // A smaller offset means the follower lost what it had buffered (it restarted) or
            // the answer is stale; either way the next heartbeat resends from there.
            progress.snapshot_offset = response.next_offset;
            progress.snapshot_advanced = advanced;
            if advanced {
                self.send_snapshot_chunk(peer);
            }
        }
        self.confirm_reads();
    }

    /// A snapshot chunk in our current term.
    pub(crate) fn on_install_snapshot(&mut self, leader: NodeId, request: InstallSnapshot) {
        if !self.recognise_leader(leader) {
            return;
        }
        let index = request.last_included_index;
        let round = request.round;
        let (next_offset, done) = self.receive_chunk(request);
        self.send(
            leader,
            Rpc::InstallSnapshotResponse(InstallSnapshotResponse {
                last_included_index: index,
                next_offset,
                done,
                round,
            }),
        );
    }

    /// Buffers one chunk; installs the snapshot when the last one arrives. Returns the offset
    /// expected next and whether the snapshot is now held in full.
    fn receive_chunk(&mut self, request: InstallSnapshot) -> (u64, bool) {
        let index = request.last_included_index;
        if index <= self.commit_index {
            // Already covered by what we have committed: installing would move us backwards.
            self.incoming_snapshot = None;
            return (request.offset, true);
        }
        if request.last_included_term > self.current_term {
            warn!(target: "yggr::engine", node_id = self.id.get(), "dropped a snapshot from a future term");
            return (0, false);
        }
        let same_stream = self.incoming_snapshot.as_ref().is_some_and(|incoming| {
            incoming.index == index
                && incoming.term == request.last_included_term
                && incoming.leader_term == self.current_term
        });
        // A first chunk starts a new stream, unless it is a duplicate of the one under way.
        if request.offset == 0 && !same_stream {
            self.incoming_snapshot = Some(IncomingSnapshot {
                index,
                term: request.last_included_term,
                leader_term: self.current_term,
                buffer: BytesMut::new(),
            });
        }
        let Some(incoming) = self.incoming_snapshot.as_mut() else {
            return (0, false);
        };
        if incoming.index != index
            || incoming.term != request.last_included_term
            || incoming.leader_term != self.current_term
        {
            // A chunk of some other snapshot: ask for this one from the start.
            return (0, false);
        }
        let have = incoming.buffer.len() as u64;
        if request.offset != have {
            // Duplicate or out-of-order: tell the leader where we are.
            return (have, false);
        }
        if !chunk_fits(incoming.buffer.len(), request.data.len()) {
            warn!(target: "yggr::engine", node_id = self.id.get(), "dropped a snapshot over the size limit");
            self.incoming_snapshot = None;
            return (0, false);
        }
        incoming.buffer.extend_from_slice(&request.data);
        let have = incoming.buffer.len() as u64;
        if !request.done {
            return (have, false);
        }
        let Some(incoming) = self.incoming_snapshot.take() else {
            return (0, false);
        };
        self.install_snapshot(SnapshotData {
            index: incoming.index,
            term: incoming.term,
            membership: request.membership,
            bytes: incoming.buffer.freeze(),
        });
        (have, true)
    }

    /// §7: keep the log suffix if it continues from the snapshot's last entry, otherwise
    /// discard the whole log; then reset the state machine from the snapshot.
    fn install_snapshot(&mut self, snapshot: SnapshotData) {
        let SnapshotData {
            index,
            term,
            membership,
            bytes,
        } = snapshot.clone();
        self.compact(index, term, membership.clone());
        // Everything the snapshot covers is committed, and now known to be here.
        self.metrics.entries_committed += index.distance_from(self.commit_index.min(index));
        self.commit_index = self.commit_index.max(index);
        self.last_applied = index;
        self.snapshot = Some(snapshot);
        self.metrics.snapshots_installed += 1;
        info!(
            target: "yggr::engine",
            node_id = self.id.get(),
            term = self.current_term.get(),
            snapshot_index = index.get(),
            "installed snapshot"
        );
        self.flush_hard_state();
        self.out.push(Action::PersistSnapshot {
            last_included_index: index,
            last_included_term: term,
            membership,
            bytes: bytes.clone(),
        });
        self.out.push(Action::ApplySnapshot { bytes });
    }
}

/// The largest snapshot a follower will buffer (4 GiB, or all a 32-bit address space can
/// hold): a bound on memory taken by a misbehaving or corrupted sender.
pub(crate) const MAX_SNAPSHOT_BYTES: usize = {
    const FOUR_GIB: u64 = 4 << 30;
    if FOUR_GIB > usize::MAX as u64 {
        usize::MAX
    } else {
        FOUR_GIB as usize
    }
};

/// Whether a chunk of `chunk` bytes after `buffered` keeps an incoming snapshot within
/// [`MAX_SNAPSHOT_BYTES`].
fn chunk_fits(buffered: usize, chunk: usize) -> bool {
    buffered.saturating_add(chunk) <= MAX_SNAPSHOT_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incoming_snapshot_may_reach_its_size_limit_but_not_pass_it() {
        assert!(chunk_fits(0, 0));
        assert!(chunk_fits(MAX_SNAPSHOT_BYTES - 1, 1));
        assert!(chunk_fits(MAX_SNAPSHOT_BYTES, 0));
        assert!(!chunk_fits(MAX_SNAPSHOT_BYTES, 1));
        assert!(!chunk_fits(1, MAX_SNAPSHOT_BYTES));
        assert!(!chunk_fits(usize::MAX, usize::MAX), "no overflow");
    }
}
