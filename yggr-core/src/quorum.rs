//! Pure majority arithmetic over voters.

use crate::types::LogIndex;

/// The highest index stored on a majority of `match_indexes` (one per voter, the leader's own
/// included when it is a voter). Zero when there are no voters.
///
/// Sorting descending, the entry at position `n / 2` is held by that voter and every voter
/// before it: `n / 2 + 1` voters, a majority.
pub fn majority_index(match_indexes: &mut [LogIndex]) -> LogIndex {
    majority_value(match_indexes)
}

/// The largest value that a majority of `values` reach or exceed; the default (zero) when
/// `values` is empty. Used for match indexes and for acknowledged heartbeat rounds alike.
pub fn majority_value<T: Ord + Copy + Default>(values: &mut [T]) -> T {
    if values.is_empty() {
        return T::default();
    }
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[values.len() / 2]
}

/// Whether `count` of `voters` is a strict majority.
pub const fn is_majority(count: usize, voters: usize) -> bool {
    voters > 0 && count > voters / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indexes(raw: &[u64]) -> Vec<LogIndex> {
        raw.iter().copied().map(LogIndex::new).collect()
    }

    #[test]
    fn no_count_is_a_majority_of_no_voters() {
        assert!(!is_majority(0, 0));
        assert!(!is_majority(1, 0));
        assert!(is_majority(1, 1));
        assert!(!is_majority(1, 2));
        assert!(is_majority(2, 3));
    }

    #[test]
    fn majority_index_of_one_voter_is_its_own_match() {
        assert_eq!(majority_index(&mut indexes(&[7])), LogIndex::new(7));
    }

    #[test]
    fn majority_index_is_exhaustively_correct_for_small_clusters() {
        // Every assignment of match indexes 0..=3 for 1..=5 voters: the result must be held by
        // a majority, and one more would not be.
        for voters in 1..=5usize {
            let total = 4usize.pow(voters as u32);
            for code in 0..total {
                let raw: Vec<u64> = (0..voters)
                    .map(|v| ((code / 4usize.pow(v as u32)) % 4) as u64)
                    .collect();
                let result = majority_index(&mut indexes(&raw));
                let holders = raw.iter().filter(|m| **m >= result.get()).count();
                assert!(is_majority(holders, voters), "{raw:?} -> {result}");
                let beyond = raw.iter().filter(|m| **m > result.get()).count();
                assert!(
                    !is_majority(beyond, voters),
                    "{raw:?} -> {result} is not the highest"
                );
            }
        }
    }

    #[test]
    fn no_voters_means_nothing_is_committed() {
        assert_eq!(majority_index(&mut []), LogIndex::ZERO);
        assert!(!is_majority(0, 0));
    }

    #[test]
    fn majority_needs_more_than_half() {
        assert!(!is_majority(1, 2));
        assert!(is_majority(2, 3));
        assert!(!is_majority(2, 4));
        assert!(is_majority(3, 4));
    }
}
