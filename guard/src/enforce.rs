//! Enforcing a deny: stopping the instance (SPEC §4.4).
//!
//! A freshly launched instance still in `pending` answers StopInstances with
//! `IncorrectInstanceState`; the stop is retried with backoff until the invocation's time runs
//! out (the `running` event enforces again). A launch flag must not beat the guard, so by default
//! stop protection (`--disable-api-stop`) is cleared and the instance stopped, and an instance that
//! can never be stopped (instance-store root, one-time Spot) is terminated, its termination
//! protection (`--disable-api-termination`) cleared first. Alert-only for either is an opt-in
//! (docs/configuration.md states the risk).

use std::time::Duration;

use ec2pass_shared::alert::Action;
use ec2pass_shared::config::{GuardConfig, Unstoppable};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::ec2::{AwsError, Ec2, InstanceFacts, StopError};

/// First pause between stop attempts; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// How often one stop clears stop protection that comes back.
pub const MAX_CLEARS: u32 = 3;

/// Longest pause between stop attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Stops a denied instance, within `deadline`. Returns what was done, or the EC2 failure.
pub async fn stop<E: Ec2>(
    ec2: &E,
    config: &GuardConfig,
    facts: &InstanceFacts,
    deadline: Instant,
) -> Result<Action, AwsError> {
    if facts.is_down() {
        return Ok(Action::Stopped);
    }
    if facts.has_instance_store_root() {
        return unstoppable(ec2, config, facts).await;
    }
    let mut backoff = FIRST_BACKOFF;
    let mut clears = 0;
    loop {
        match ec2.stop(&facts.id).await {
            Ok(()) | Err(StopError::Gone) => return Ok(Action::Stopped),
            Err(StopError::NotYet) => {
                if Instant::now() + backoff >= deadline {
                    warn!(instance_id = %facts.id, "still pending at the deadline; the running event will stop it");
                    return Ok(Action::StopPending);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(StopError::Unstoppable) => return unstoppable(ec2, config, facts).await,
            // Someone with the same stolen keys may set the protection again between our clear
            // and our stop: clear it a few times, then the running event and the sweep go on.
            Err(StopError::Protected) if config.clear_stop_protection && clears < MAX_CLEARS => {
                info!(instance_id = %facts.id, "clearing stop protection to stop a denied instance");
                ec2.clear_stop_protection(&facts.id).await?;
                clears += 1;
            }
            Err(StopError::Protected) => {
                warn!(instance_id = %facts.id, "stop protection is on: alert only, as configured");
                return Ok(Action::AlertOnly);
            }
            Err(StopError::Failed(e)) => return Err(e),
        }
    }
}

async fn unstoppable<E: Ec2>(
    ec2: &E,
    config: &GuardConfig,
    facts: &InstanceFacts,
) -> Result<Action, AwsError> {
    match config.unstoppable {
        Unstoppable::Terminate => {
            warn!(instance_id = %facts.id, spot = facts.spot, "cannot be stopped: terminating");
            match ec2.terminate(&facts.id).await {
                Ok(()) | Err(StopError::Gone) => return Ok(Action::Terminated),
                Err(StopError::Protected) => {}
                Err(StopError::Failed(e)) => return Err(e),
                Err(other) => {
                    return Err(AwsError {
                        operation: "TerminateInstances",
                        message: format!("unexpected answer {other:?}"),
                        throttled: false,
                    });
                }
            }
            // `--disable-api-termination` (OperationNotPermitted): clear it, then terminate.
            info!(instance_id = %facts.id, "clearing termination protection to terminate a denied instance");
            ec2.clear_termination_protection(&facts.id).await?;
            match ec2.terminate(&facts.id).await {
                Ok(()) | Err(StopError::Gone) => Ok(Action::Terminated),
                Err(StopError::Failed(e)) => Err(e),
                Err(other) => Err(AwsError {
                    operation: "TerminateInstances",
                    message: format!("still refused after clearing protection: {other:?}"),
                    throttled: false,
                }),
            }
        }
        Unstoppable::AlertOnly => {
            warn!(instance_id = %facts.id, spot = facts.spot, "cannot be stopped: alert only");
            Ok(Action::AlertOnly)
        }
    }
}
