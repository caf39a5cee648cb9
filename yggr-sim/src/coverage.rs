//! What a run exercised. A run that passes having elected nobody, served no read or installed
//! no snapshot proves nothing about those paths; the counters here let a run and a suite of
//! runs say what they tested, and fail when it is too little.

use std::fmt;
use std::ops::AddAssign;

/// Counters of what one run (or, summed, a suite) exercised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Runs counted (1 for a single run).
    pub runs: u64,
    /// Runs whose chaos phase committed nothing: they tested little beyond elections and the
    /// recovery.
    pub empty_runs: u64,
    /// Steps taken, liveness phase included.
    pub steps: u64,
    /// Terms in which some node led.
    pub elections: u64,
    /// The highest index committed anywhere, summed over runs.
    pub committed: u64,
    /// Writes acknowledged to their client.
    pub writes_acknowledged: u64,
    /// Writes refused (redirects, transfers, overwritten entries).
    pub writes_refused: u64,
    /// Writes whose client got an error that leaves the outcome open.
    pub writes_indeterminate: u64,
    /// Reads served as linearizable.
    pub reads_served: u64,
    /// Reads served in the very step they arrived (the lease, or a leader alone).
    pub reads_served_at_once: u64,
    /// Reads answered with a failure.
    pub reads_failed: u64,
    /// Reads served by a lease whose voters' refusals were checked
    /// ([`Invariant::LeaseRefusals`](crate::Invariant::LeaseRefusals)).
    pub lease_reads_checked: u64,
    /// Bursts of reads far larger than any internal window.
    pub read_bursts: u64,
    /// Snapshots taken by a node of its own state machine.
    pub snapshots_taken: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Snapshot installs that took longer than an election timeout from the first chunk.
    pub long_snapshot_installs: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Crashes followed at once by a restart, with messages to the node still in flight
    /// (right after the node granted a vote or acknowledged a round). Counted in `crashes` too.
    pub bounces: u64,
    /// Bounces of a node right after it acknowledged a leader's round, its answer still on
    /// the way. Counted in `bounces` too.
    pub bounces_after_acknowledging: u64,
    /// Partitions started (leader isolations included).
    pub partitions: u64,
    /// Leaders cut off from everyone for several election timeouts.
    pub leader_isolations: u64,
    /// Processes paused for a while (mostly leaders).
    pub pauses: u64,
    /// Liveness phases that first left one node down and required the others to serve.
    pub minority_down_phases: u64,
    /// Times two nodes believed at once that they lead (a deposed leader still acting).
    pub stale_leader_windows: u64,
    /// Client requests that reached a node believing it leads while a newer leader existed.
    pub requests_at_stale_leaders: u64,
    /// Messages held back and delivered late.
    pub messages_delayed: u64,
    /// Membership changes committed.
    pub membership_changes: u64,
    /// Learners added.
    pub learners_added: u64,
    /// Learners promoted to voters.
    pub promotions: u64,
    /// Leaders that removed themselves.
    pub leader_removals: u64,
    /// Leadership transfers requested.
    pub transfers: u64,
    /// Ticks the liveness phase needed to recover the cluster, summed over runs.
    pub liveness_ticks: u64,
}

impl AddAssign for Coverage {
    fn add_assign(&mut self, other: Coverage) {
        let Coverage {
            runs,
            empty_runs,
            steps,
            elections,
            committed,
            writes_acknowledged,
            writes_refused,
            writes_indeterminate,
            reads_served,
            reads_served_at_once,
            reads_failed,
            lease_reads_checked,
            read_bursts,
            snapshots_taken,
            snapshots_installed,
            long_snapshot_installs,
            crashes,
            bounces,
            bounces_after_acknowledging,
            partitions,
            leader_isolations,
            pauses,
            minority_down_phases,
            stale_leader_windows,
            requests_at_stale_leaders,
            messages_delayed,
            membership_changes,
            learners_added,
            promotions,
            leader_removals,
            transfers,
            liveness_ticks,
        } = other;
        self.runs += runs;
        self.empty_runs += empty_runs;
        self.steps += steps;
        self.elections += elections;
        self.committed += committed;
        self.writes_acknowledged += writes_acknowledged;
        self.writes_refused += writes_refused;
        self.writes_indeterminate += writes_indeterminate;
        self.reads_served += reads_served;
        self.reads_served_at_once += reads_served_at_once;
        self.reads_failed += reads_failed;
        self.lease_reads_checked += lease_reads_checked;
        self.read_bursts += read_bursts;
        self.snapshots_taken += snapshots_taken;
        self.snapshots_installed += snapshots_installed;
        self.long_snapshot_installs += long_snapshot_installs;
        self.crashes += crashes;
        self.bounces += bounces;
        self.bounces_after_acknowledging += bounces_after_acknowledging;
        self.partitions += partitions;
        self.leader_isolations += leader_isolations;
        self.pauses += pauses;
        self.minority_down_phases += minority_down_phases;
        self.stale_leader_windows += stale_leader_windows;
        self.requests_at_stale_leaders += requests_at_stale_leaders;
        self.messages_delayed += messages_delayed;
        self.membership_changes += membership_changes;
        self.learners_added += learners_added;
        self.promotions += promotions;
        self.leader_removals += leader_removals;
        self.transfers += transfers;
        self.liveness_ticks += liveness_ticks;
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} runs ({} empty), {} steps: {} elections, {} committed, writes {}/{}/{} (acked/refused/open), \
             reads {} served ({} at once, {} by a lease checked) {} failed, {} bursts, snapshots {} taken {} installed \
             ({} slower than an election timeout), \
             {} crashes ({} bounces, {} after acknowledging), {} partitions ({} leader isolations), {} pauses, {} stale-leader windows \
             ({} requests at stale leaders), {} delayed messages, {} membership changes \
             ({} learners added, {} promotions, {} leader removals), {} transfers, \
             {} liveness ticks ({} with a node down first)",
            self.runs,
            self.empty_runs,
            self.steps,
            self.elections,
            self.committed,
            self.writes_acknowledged,
            self.writes_refused,
            self.writes_indeterminate,
            self.reads_served,
            self.reads_served_at_once,
            self.lease_reads_checked,
            self.reads_failed,
            self.read_bursts,
            self.snapshots_taken,
            self.snapshots_installed,
            self.long_snapshot_installs,
            self.crashes,
            self.bounces,
            self.bounces_after_acknowledging,
            self.partitions,
            self.leader_isolations,
            self.pauses,
            self.stale_leader_windows,
            self.requests_at_stale_leaders,
            self.messages_delayed,
            self.membership_changes,
            self.learners_added,
            self.promotions,
            self.leader_removals,
            self.transfers,
            self.liveness_ticks,
            self.minority_down_phases,
        )
    }
}

/// The least a suite must exercise, as totals over its runs (zero: no requirement), and the
/// most runs that may be empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoverageGate {
    /// The most empty runs allowed, per thousand runs.
    pub empty_runs_per_thousand: u64,
    /// Minimum elections.
    pub elections: u64,
    /// Minimum acknowledged writes.
    pub writes_acknowledged: u64,
    /// Minimum stale-leader windows.
    pub stale_leader_windows: u64,
    /// Minimum requests that reached stale leaders.
    pub requests_at_stale_leaders: u64,
    /// Minimum reads served.
    pub reads_served: u64,
    /// Minimum reads served at once (leases).
    pub reads_served_at_once: u64,
    /// Minimum read bursts.
    pub read_bursts: u64,
    /// Minimum snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Minimum snapshot installs slower than an election timeout.
    pub long_snapshot_installs: u64,
    /// Minimum crashes.
    pub crashes: u64,
    /// Minimum bounces.
    pub bounces: u64,
    /// Minimum bounces right after acknowledging a round.
    pub bounces_after_acknowledging: u64,
    /// Minimum learners added.
    pub learners_added: u64,
    /// Minimum promotions.
    pub promotions: u64,
    /// Minimum leaders removing themselves.
    pub leader_removals: u64,
    /// Minimum transfers.
    pub transfers: u64,
    /// Minimum messages delivered late.
    pub messages_delayed: u64,
}

impl CoverageGate {
    /// Every minimum multiplied by `factor` (rounded down): a budget `factor` times larger
    /// must exercise that much more.
    pub fn scaled(&self, factor: f64) -> CoverageGate {
        let scale = |minimum: u64| (minimum as f64 * factor).floor() as u64;
        CoverageGate {
            empty_runs_per_thousand: self.empty_runs_per_thousand,
            elections: scale(self.elections),
            writes_acknowledged: scale(self.writes_acknowledged),
            stale_leader_windows: scale(self.stale_leader_windows),
            requests_at_stale_leaders: scale(self.requests_at_stale_leaders),
            reads_served: scale(self.reads_served),
            reads_served_at_once: scale(self.reads_served_at_once),
            read_bursts: scale(self.read_bursts),
            snapshots_installed: scale(self.snapshots_installed),
            long_snapshot_installs: scale(self.long_snapshot_installs),
            crashes: scale(self.crashes),
            bounces: scale(self.bounces),
            bounces_after_acknowledging: scale(self.bounces_after_acknowledging),
            learners_added: scale(self.learners_added),
            promotions: scale(self.promotions),
            leader_removals: scale(self.leader_removals),
            transfers: scale(self.transfers),
            messages_delayed: scale(self.messages_delayed),
        }
    }

    /// The counters below their minimum, as `name: seen < minimum`; empty when the gate
    /// passes.
    pub fn shortfalls(&self, seen: &Coverage) -> Vec<String> {
        let checks = [
            ("elections", seen.elections, self.elections),
            (
                "writes_acknowledged",
                seen.writes_acknowledged,
                self.writes_acknowledged,
            ),
            (
                "stale_leader_windows",
                seen.stale_leader_windows,
                self.stale_leader_windows,
            ),
            (
                "requests_at_stale_leaders",
                seen.requests_at_stale_leaders,
                self.requests_at_stale_leaders,
            ),
            ("reads_served", seen.reads_served, self.reads_served),
            (
                "reads_served_at_once",
                seen.reads_served_at_once,
                self.reads_served_at_once,
            ),
            ("read_bursts", seen.read_bursts, self.read_bursts),
            (
                "snapshots_installed",
                seen.snapshots_installed,
                self.snapshots_installed,
            ),
            (
                "long_snapshot_installs",
                seen.long_snapshot_installs,
                self.long_snapshot_installs,
            ),
            ("crashes", seen.crashes, self.crashes),
            ("bounces", seen.bounces, self.bounces),
            (
                "bounces_after_acknowledging",
                seen.bounces_after_acknowledging,
                self.bounces_after_acknowledging,
            ),
            ("learners_added", seen.learners_added, self.learners_added),
            ("promotions", seen.promotions, self.promotions),
            (
                "leader_removals",
                seen.leader_removals,
                self.leader_removals,
            ),
            ("transfers", seen.transfers, self.transfers),
            (
                "messages_delayed",
                seen.messages_delayed,
                self.messages_delayed,
            ),
        ];
        let mut shortfalls: Vec<String> = checks
            .into_iter()
            .filter(|(_, seen, minimum)| seen < minimum)
            .map(|(name, seen, minimum)| format!("{name}: {seen} < {minimum}"))
            .collect();
        let allowed = seen.runs * self.empty_runs_per_thousand / 1000;
        if seen.empty_runs > allowed {
            shortfalls.push(format!(
                "empty_runs: {} of {} runs committed nothing (at most {allowed} allowed)",
                seen.empty_runs, seen.runs
            ));
        }
        shortfalls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_names_every_counter_below_its_minimum() {
        let gate = CoverageGate {
            elections: 10,
            reads_served: 5,
            ..CoverageGate::default()
        };
        let mut seen = Coverage {
            elections: 12,
            reads_served: 4,
            ..Coverage::default()
        };
        assert_eq!(gate.shortfalls(&seen), vec!["reads_served: 4 < 5"]);
        let empty = Coverage {
            runs: 1000,
            empty_runs: 11,
            elections: 12,
            reads_served: 5,
            ..Coverage::default()
        };
        let strict = CoverageGate {
            empty_runs_per_thousand: 10,
            ..gate
        };
        assert_eq!(strict.shortfalls(&empty).len(), 1, "11 empty runs in 1000");
        seen += Coverage {
            reads_served: 1,
            ..Coverage::default()
        };
        assert!(gate.shortfalls(&seen).is_empty());
    }
}
