//! What a node must answer at once, whatever else it is doing.
//!
//! A node that does not lead answers a write or a read by naming the leader (or saying there
//! is none): it costs the node nothing, so it must not wait for its state machine, its apply
//! backlog, a snapshot or anything else that may take long. The rule is checked on the
//! history: every redirect came within [`REDIRECT_BOUND`] of simulated time, unless the
//! node's process was paused or resumed meanwhile, or the node led at some point while the
//! request waited (a leader may set writes aside while its state machine catches up, and
//! redirect them only once it has stepped down).

use std::time::Duration;

use super::clients::Operation;
use super::monitor::Watch;

/// The longest a redirect may take. A correct node answers between two iterations of its
/// driver, whose longest legitimate wait is one storage write on a slow disk (at most 20 ms a
/// call in these runs, a few calls a write): the bound leaves ten times that.
pub(crate) const REDIRECT_BOUND: Duration = Duration::from_millis(500);

/// The first redirect that took longer than [`REDIRECT_BOUND`] without an excuse.
pub(crate) fn slow_redirect<C, R, Q>(
    history: &[Operation<C, R, Q>],
    watch: &Watch,
) -> Result<(), String> {
    for operation in history {
        let (Some(redirect), Some(returned)) = (operation.redirect, operation.returned) else {
            continue;
        };
        let waited = returned.saturating_sub(operation.invoked);
        if waited <= REDIRECT_BOUND
            || redirect.held_up_by_pause
            || watch.led_around(operation.node, operation.invoked, returned)
        {
            continue;
        }
        return Err(format!(
            "node {} took {waited:?} (from {:?}) to redirect request {:#x}: a node that does not lead must answer at once",
            operation.node, operation.invoked, operation.id
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use yggr::NodeId;

    use super::*;
    use crate::stack::clients::{Outcome, Redirect, Request};

    fn redirect(node: u64, times: (u64, u64), held_up_by_pause: bool) -> Operation<u64, u64, u64> {
        Operation {
            id: 1,
            client: 0,
            node: NodeId::new(node).unwrap(),
            request: Request::Write(1),
            invoked: Duration::from_millis(times.0),
            returned: Some(Duration::from_millis(times.1)),
            outcome: Outcome::Refused("node 2: not the leader".to_string()),
            redirect: Some(Redirect { held_up_by_pause }),
        }
    }

    #[test]
    fn a_redirect_held_back_by_a_node_that_does_not_lead_fails_the_check() {
        let watch = Watch::default();
        assert!(slow_redirect(&[redirect(2, (1_000, 1_400), false)], &watch).is_ok());
        let error = slow_redirect(&[redirect(2, (1_000, 2_000), false)], &watch).unwrap_err();
        assert!(error.contains("node 2 took 1s"), "{error}");
    }

    #[test]
    fn a_slow_redirect_across_a_pause_or_a_leadership_is_excused() {
        assert!(slow_redirect(&[redirect(2, (1_000, 3_000), true)], &Watch::default()).is_ok());
        let mut watch = Watch::default();
        watch.saw_leading(NodeId::new(2).unwrap(), Duration::from_millis(1_500));
        assert!(slow_redirect(&[redirect(2, (1_000, 3_000), false)], &watch).is_ok());
        // Leading before the request began, or on another node, excuses nothing.
        watch.saw_leading(NodeId::new(3).unwrap(), Duration::from_millis(2_000));
        let late = redirect(2, (1_600, 3_000), false);
        assert!(slow_redirect(&[late], &watch).is_err());
    }
}
