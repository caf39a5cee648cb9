//! When a leader's heartbeat rounds were sent, for check-quorum and the lease.
//!
//! A follower's acknowledgement names a round. Check-quorum asks whether a majority
//! acknowledged a round sent within the last minimum election timeout; the lease asks the same
//! for a shorter span. Both only care about rounds sent within one horizon (the minimum
//! election timeout), and both only need the tick a round was sent at. So instead of one
//! record per round, which a burst of reads can outrun, the clock keeps one record per tick in
//! which rounds started, and only for the ticks inside the horizon. Its size is bounded by
//! the horizon, however many rounds start.

use std::collections::VecDeque;

/// The send tick of every round started within the last `horizon_ticks` ticks.
///
/// Invariants: `buckets` is ordered by first round and by tick, both strictly increasing;
/// every round from a bucket's first round up to the next bucket's first round (exclusive) was
/// started in that bucket's tick; at most `horizon_ticks + 1` buckets are kept.
#[derive(Clone, Debug)]
pub(crate) struct RoundClock {
    /// `(first round started in the tick, the tick)`, oldest first.
    buckets: VecDeque<(u64, u64)>,
    horizon_ticks: u64,
}

impl RoundClock {
    /// A clock that forgets rounds sent `horizon_ticks` or more ticks ago.
    pub(crate) fn new(horizon_ticks: u64) -> RoundClock {
        RoundClock {
            buckets: VecDeque::new(),
            horizon_ticks,
        }
    }

    /// Forgets everything: a new reign starts its rounds afresh.
    pub(crate) fn clear(&mut self) {
        self.buckets.clear();
    }

    /// Records that `round` started at `tick`. Rounds and ticks never go backwards.
    pub(crate) fn record(&mut self, round: u64, tick: u64) {
        if let Some(&(last_round, last_tick)) = self.buckets.back() {
            assert!(
                round > last_round && tick >= last_tick,
                "round clock invariant: rounds and ticks only move forward"
            );
            if last_tick == tick {
                return;
            }
        }
        self.buckets.push_back((round, tick));
        // Keep the newest bucket that is already too old to matter only until a newer one
        // replaces it as the boundary: a round older than every kept bucket is then known to
        // have been sent before the horizon.
        while self
            .buckets
            .get(1)
            .is_some_and(|&(_, second_tick)| tick - second_tick >= self.horizon_ticks)
        {
            self.buckets.pop_front();
        }
        // Every bucket but the front one lies within the horizon, one per tick.
        debug_assert!(self.buckets.len() as u64 <= self.horizon_ticks + 1);
    }

    /// The tick `round` was sent at, or `None` when it was sent before the oldest kept bucket
    /// (and so at least `horizon_ticks` ago) or has not started.
    pub(crate) fn sent_at(&self, round: u64) -> Option<u64> {
        let position = self
            .buckets
            .partition_point(|&(first_round, _)| first_round <= round);
        let (_, tick) = *self.buckets.get(position.checked_sub(1)?)?;
        Some(tick)
    }

    /// Whether `round` was sent fewer than `span` ticks before `now`. `span` must not exceed
    /// the horizon: older rounds are forgotten.
    pub(crate) fn sent_within(&self, round: u64, now: u64, span: u64) -> bool {
        debug_assert!(
            span <= self.horizon_ticks,
            "span beyond the clock's horizon"
        );
        self.sent_at(round)
            .is_some_and(|sent| now.saturating_sub(sent) < span)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_in_one_tick_share_its_bucket() {
        let mut clock = RoundClock::new(10);
        clock.record(0, 0);
        for round in 1..=1000 {
            clock.record(round, 3);
        }
        assert_eq!(clock.len(), 2);
        assert_eq!(clock.sent_at(0), Some(0));
        assert_eq!(clock.sent_at(1), Some(3));
        assert_eq!(clock.sent_at(1000), Some(3));
    }

    #[test]
    fn a_burst_of_rounds_never_evicts_a_recent_one() {
        let mut clock = RoundClock::new(10);
        clock.record(0, 0);
        clock.record(1, 5);
        for round in 2..100_000 {
            clock.record(round, 6);
        }
        assert!(clock.sent_within(1, 6, 10), "round 1 was sent one tick ago");
        assert!(clock.sent_within(0, 6, 10));
    }

    #[test]
    fn rounds_older_than_the_horizon_are_forgotten_and_memory_stays_bounded() {
        let mut clock = RoundClock::new(10);
        for tick in 0..1000u64 {
            clock.record(tick * 2 + 1, tick);
        }
        assert!(clock.len() <= 11);
        assert_eq!(clock.sent_at(1), None, "sent 999 ticks ago");
        assert!(!clock.sent_within(1, 999, 10));
        assert_eq!(clock.sent_at(999 * 2 + 1), Some(999));
        assert_eq!(clock.sent_at(990 * 2 + 1), Some(990));
        assert!(!clock.sent_within(989 * 2 + 1, 999, 10));
        assert!(clock.sent_within(990 * 2 + 1, 999, 10));
    }

    #[test]
    fn unknown_before_the_first_round() {
        let clock = RoundClock::new(10);
        assert_eq!(clock.sent_at(0), None);
        let mut clock = RoundClock::new(10);
        clock.record(5, 2);
        assert_eq!(clock.sent_at(4), None);
    }
}
