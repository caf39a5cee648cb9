//! The simulator's own suites; see the README section "Simulator" for how to run them.

mod chaos;
mod checker;
mod membership;
mod proptests;
mod reads;
mod smoke;
mod snapshot;
mod transfer;

/// Proptest's case budget: `PROPTEST_CASES` when set, otherwise `default`.
pub(crate) fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}
