"""Writes one patch per planted runtime bug into this folder, against the runtime as it is now.

Each plant is a small textual change to the `yggr` crate (the driver, the apply task,
DiskStorage, TcpTransport): the defects a simulation of the engine alone cannot see. Run
this after changing the runtime (from anywhere): it applies each change to the working tree,
saves `git diff` as NN-name.patch, and restores the files. It refuses to run when a plant's
text is no longer in the runtime: update that plant to the new code. Needs a clean `yggr`.
`../measure.sh RUNS runtime/*.patch` measures how often the stack suite catches each.
"""
import os
import subprocess
import sys

root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
if subprocess.run(["git", "diff", "--quiet", "--", "yggr"], cwd=root).returncode != 0:
    sys.exit("yggr has local changes; commit or stash them first")
plants = []
def plant(name, doc, edits):
    plants.append((name, doc, edits))

DRIVER = "yggr/src/driver.rs"
SEGMENT = "yggr/src/storage/disk/segment.rs"
DISK = "yggr/src/storage/disk/mod.rs"
FORMAT = "yggr/src/storage/disk/format.rs"

plant("01-follower-acknowledges-before-durable",
 "A follower sends its AppendEntries acknowledgement before the entries it acknowledges are\ndurable (the leader's early-send exception applied to followers too).",
 [(DRIVER, """        if self.engine.role() == Role::Leader
            && !writes.is_empty()""", """        if !writes.is_empty()"""),
  (DRIVER, """                    Action::Send { to, message }
                        if matches!(message.rpc, Rpc::AppendEntries(_)) =>""", """                    Action::Send { to, message }
                        if matches!(
                            message.rpc,
                            Rpc::AppendEntries(_) | Rpc::AppendEntriesResponse(_)
                        ) =>""")])

plant("02-vote-sent-before-durable",
 "A granted vote is sent before the term and vote it grants are durable.",
 [(DRIVER, """                Action::PersistHardState {
                    current_term,
                    voted_for,
                } => writes.push(StorageWrite::HardState {""", """                Action::Send { to, message }
                    if matches!(message.rpc, Rpc::RequestVoteResponse(_)) =>
                {
                    self.transport.send(to, message);
                }
                Action::PersistHardState {
                    current_term,
                    voted_for,
                } => writes.push(StorageWrite::HardState {""")])

plant("03-apply-before-durable",
 "Committed entries go to the state machine (and their writers get answers) before the\niteration's write is durable: a lone voter answers for entries it has not stored.",
 [(DRIVER, """        for action in self.actions.drain(..) {
            match action {
                Action::PersistLogEntries(entries) => writes.push(StorageWrite::Entries(entries)),""", """        for action in std::mem::take(&mut self.actions) {
            match action {
                Action::Apply(entries) => {
                    let waiters = self.take_waiters(&entries);
                    self.hand_to_apply(ApplyJob::Entries { entries, waiters })?;
                }
                Action::PersistLogEntries(entries) => writes.push(StorageWrite::Entries(entries)),""")])

plant("04-lone-voter-early-append-with-undurable-commit",
 "A lone voter sends its AppendEntries before its own write is durable even when its commit\nindex already covers the entries: learners apply entries the leader may lose.",
 [(DRIVER, """            && first_written.is_some_and(|first| self.engine.commit_index() < first)
""", """            && first_written.is_some()
""")])

plant("05-segment-created-without-directory-sync",
 "A new log segment's directory entry is not synced: a crash can lose the whole file.",
 [(SEGMENT, """        file.write_all_at(&encode_segment_header(first, salt), 0)
            .and_then(|()| file.sync_data())
            .map_err(|error| io_error(&path, error))?;
        sync_dir(&self.dir).map_err(|error| io_error(&self.dir, error))?;""", """        file.write_all_at(&encode_segment_header(first, salt), 0)
            .and_then(|()| file.sync_data())
            .map_err(|error| io_error(&path, error))?;""")])

plant("06-snapshot-rewritten-in-place",
 "The snapshot file is rewritten in place (truncated, written, synced) instead of written\nunder a temporary name and renamed: a crash in between leaves neither snapshot.",
 [(DISK, """                let path = dir.join(&name);
                let bytes = encode_snapshot(&snapshot);""", """                let path = dir.join(SNAPSHOT_FILE);
                let bytes = encode_snapshot(&snapshot);"""),
  (DISK, """            replace_atomically(&self.dir, SNAPSHOT_FILE, &encode_snapshot(snapshot))
                .map_err(|error| io_error(&target, error))?;""", """            write_synced(&target, &encode_snapshot(snapshot))
                .map_err(|error| io_error(&target, error))?;""")])

plant("07-failed-fsync-retried",
 "A failed fsync of a log append is retried, and a retry that reports success is believed\n(after a writeback error, Linux reports success for data it dropped).",
 [(SEGMENT, """        file.write_all_at(&bytes, base)
            .and_then(|()| file.sync_data())""", """        file.write_all_at(&bytes, base)
            .and_then(|()| file.sync_data().or_else(|_| file.sync_data()))""")])

plant("08-deposed-leader-writes-refused",
 "Issue 12, put back: a leader that steps down answers its appended writes NotLeader, as if\nnever proposed, though they may still commit under the next leader.",
 [(DRIVER, """            self.orphan_pending();
        }
    }""", """            let leader_hint = self.leader_hint();
            for pending in self.pending.drain(..) {
                pending.waiter.refused(leader_hint);
            }
        }
    }""")])

plant("09-zeroed-segment-deleted",
 "Issue 12, put back: any all-zero last segment is taken for an interrupted creation and\nremoved, even one long enough to have held synced batches.",
 [(SEGMENT, """        || (bytes.len() == SEGMENT_HEADER_BYTES && bytes.iter().all(|byte| *byte == 0))""", """        || bytes.iter().all(|byte| *byte == 0)""")])

plant("10-flipped-bit-in-last-batch-cut",
 "Issue 12, put back: a full-length last batch that fails its checksum is cut as a torn\nwrite, though no sector of it reads as unwritten.",
 [(FORMAT, """        return refused(
            at as usize,
            "batch checksum mismatch over the batch's full length with no unwritten (all-zero) \\
             sector outside its valid records: a changed byte, not a torn write",
        );""", """        return Ok(());""")])

plant("11-install-removes-segments-oldest-first",
 "Issue 12, put back: a snapshot install that replaces the log retires its segments oldest\nfirst, so a crash part way leaves a suffix that can pass for a log continuing the snapshot.",
 [(SEGMENT, """        while let Some(segment) = self.segments.pop() {
            self.retire_durably(&segment.path)?;
        }""", """        for segment in std::mem::take(&mut self.segments) {
            self.retire_durably(&segment.path)?;
        }""")])

plant("12-pending-writes-never-answered-after-step-down",
 "A leader that steps down drops its pending writes' waiters without answering them (kept\nalive, so the callers wait for ever).",
 [(DRIVER, """            self.orphan_pending();
        }
    }""", """            std::mem::forget(std::mem::take(&mut self.pending));
        }
    }""")])

plant("13-follower-parks-redirects",
 "Issue 12, put back: a follower whose apply backlog is full sets writes and reads aside like\na leader, so its redirects wait for its state machine to catch up.",
 [(DRIVER, """        let leads = self.engine.role() == Role::Leader;
        if leads && self.apply_backlog_full()""", """        let leads = true;
        if leads && self.apply_backlog_full()""")])

plant("14-recovery-trusts-the-tail-it-read",
 "Found by the stack simulation: recovery trusts the last batch it reads, though a process\nthat stopped on a failed fsync may have left it in the page cache only; a power loss after\nthe restart then takes away entries the node may have acknowledged.",
 [(SEGMENT, """            if last {
                // Before anything else is written: a cut of a torn tail, synced, must not
                // reach the disk while the batch before it is still in the page cache only.
                make_last_batch_durable(&segment)?;
            }
""", "")])

OUTBOUND = "yggr/src/transport/tcp/outbound.rs"

plant("15-quiet-connection-loses-messages",
 "Issue 12, put back: a writer sends no keep-alives and never looks at its connection, so\nthe peer closes it as idle and the next message goes into the closed socket, counted as\nsent and lost (followers' connections to each other go quiet between elections).",
 [(OUTBOUND, """        tokio::select! {
            biased;
            read = connection.read(&mut probe) => Wake::PeerClosed(read),
            received = self.queue.recv_many(&mut self.batch, MAX_BATCH) => {
                if received == 0 { Wake::QueueClosed } else { Wake::Batch }
            }
            () = tokio::time::sleep_until(keep_alive_due) => Wake::KeepAliveDue,
        }""", """        let _ = (&mut probe, keep_alive_due);
        tokio::select! {
            received = self.queue.recv_many(&mut self.batch, MAX_BATCH) => {
                if received == 0 { Wake::QueueClosed } else { Wake::Batch }
            }
        }"""),
  (OUTBOUND, """        if let Some(read) = connection.closed_by_peer() {""", """        if let Some(read) = None::<std::io::Result<usize>> {"""),
  (OUTBOUND, """        debug!(target: "yggr::node", peer = self.peer.get(), "sending the batch again over a new connection");""", """        if encoded > 0 {
            bump(&counters.messages_dropped, encoded);
            return false;
        }""")])

plant("16-snapshot-stored-by-the-driver",
 "Issue 12, put back: the driver stores a new snapshot itself, with its next write, instead\nof having the storage prepare it on the side: a large snapshot on a slow disk holds up the\nleader's heartbeats until a follower campaigns.",
 [(DRIVER, """                        let work = Box::pin(self.storage.prepare_snapshot(&snapshot));
                        self.preparation = Some(Preparation {
                            snapshot,
                            started: Instant::now(),
                            work,
                        });""", """                        self.snapshots.ready_to_store = Some(snapshot);""")])

plant("17-messages-stepped-before-owed-ticks",
 "Issue 12, put back: woken by a message after a stall, the driver steps it before the ticks\nthat fell due meanwhile, so a leader's fresh contact is taken for one a whole stall old\n(and a vote may be granted an election timeout early).",
 [(DRIVER, """                    let Some(message) = message else { break Stop::Fatal };
                    // Woken after a stall, the time that passed comes first: a message
                    // stepped at a stale tick count would look a whole stall old once the
                    // ticks arrive (a fresh leader contact taken for an expired one).
                    self.deliver_due_ticks();
                    self.step(Event::Incoming(message));""", """                    let Some(message) = message else { break Stop::Fatal };
                    self.step(Event::Incoming(message));""")])

outdir = os.path.dirname(os.path.abspath(__file__))
for name, doc, edits in plants:
    backups = {}
    for (f, old, new) in edits:
        p = os.path.join(root, f)
        backups.setdefault(p, open(p).read())
        cur = open(p).read()
        if old not in cur:
            print("MISSING", name, f); sys.exit(1)
        open(p, 'w').write(cur.replace(old, new, 1))
    diff = subprocess.run(['git', 'diff', '--', 'yggr'], cwd=root, capture_output=True, text=True).stdout
    for p, s in backups.items():
        open(p, 'w').write(s)
    header = "".join("# " + line + "\n" for line in doc.split("\n"))
    open(os.path.join(outdir, name + '.patch'), 'w').write(header + diff)
print(len(plants), "patches")
