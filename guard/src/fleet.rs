//! Where the guard acts: the EC2 API of the account and region each start happened in.
//!
//! A batch is split by place ([`Place`]) before anything is described: EC2 throttles per account
//! and region, and each place's starts are described, stopped and untagged with that place's
//! EC2, got from [`Fleet::at`].
//!
//! - Any [`Ec2`] is a fleet of one place. A single-account stack acts with its own credentials
//!   in its own region whatever an event says: it only receives its own account's events, and a
//!   forged one names an instance that it describes (or does not find) like any other.
//! - [`MemberRoles`] is the hub's. For each member account it assumes the member role
//!   (`EC2PASS_MEMBER_ROLE`, through [`Assume`], with [`Sessions`]), keeps the credentials until
//!   [`REFRESH_BEFORE`] their expiry, and keeps one paced EC2 client per account and region. A
//!   role it cannot assume is a [`FleetError`], which the guard alerts as `guard-error` naming
//!   the account, and the starts go back to the queue: never a silent skip.
//!
//! Each account and region's client has a retry quota of its own ([`retry_partition`]). The SDK
//! keys its quota by service and region (`ec2-us-east-1`) for the whole process, so by default
//! every account of a region would share one: an attacker throttled in one account, or one
//! account's burst, would spend the retries the guard needs in all the others. EC2 throttles per
//! account and region, so that is where a quota belongs.

use std::future::Future;

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_sdk_ec2::config::retry::RetryPartition;
use aws_sdk_ec2::config::{Region, SharedCredentialsProvider};
use ec2pass_shared::org::{Assume, Hub, Place, Roster, Sessions, Unreachable};

use crate::ec2::{Ec2, Ec2Client};
use crate::pace::Paced;

pub use ec2pass_shared::org::{REFRESH_BEFORE, STILL_USABLE};

/// The session name the guard's assumed-role sessions carry (CloudTrail shows it in each member
/// account).
pub const SESSION_NAME: &str = "ec2pass-guard";

/// The guard cannot act in a place.
pub type FleetError = Unreachable;

/// The EC2 APIs of the places the guard guards.
pub trait Fleet: Send + Sync {
    /// The EC2 of one place.
    type Ec2<'a>: Ec2
    where
        Self: 'a;

    /// The EC2 of `place`.
    fn at<'a>(
        &'a self,
        place: &Place,
    ) -> impl Future<Output = Result<Self::Ec2<'a>, FleetError>> + Send;

    /// Every place the sweep covers (`here` is where the sweep's own schedule runs), and why
    /// that list may be out of date (the Organization could not be read).
    fn places(&self, here: &Place) -> impl Future<Output = (Vec<Place>, Option<String>)> + Send;
}

/// A single account: its one EC2, wherever the event says it happened.
impl<E: Ec2> Fleet for E {
    type Ec2<'a>
        = &'a E
    where
        E: 'a;

    fn at<'a>(&'a self, _place: &Place) -> impl Future<Output = Result<&'a E, FleetError>> + Send {
        std::future::ready(Ok(self))
    }

    fn places(&self, here: &Place) -> impl Future<Output = (Vec<Place>, Option<String>)> + Send {
        std::future::ready((vec![here.clone()], None))
    }
}

/// The hub's fleet: every member account through its member role (see the module's doc); the
/// sweep's places from `R`, the configured members or the Organization's
/// ([`ec2pass_shared::org::OrgRoster`]).
pub struct MemberRoles<A, R = Hub> {
    sessions: Sessions<A, Paced<Ec2Client>>,
    base: SdkConfig,
    quota: String,
    roster: R,
}

impl<A: Assume> MemberRoles<A> {
    /// The hub's members, reached with `assume`; EC2 clients are built from `base` (timeouts,
    /// retries, endpoint) with the member's credentials and the place's region.
    pub fn new(hub: Hub, assume: A, base: SdkConfig) -> Self {
        Self {
            sessions: Sessions::new(hub.clone(), assume),
            base,
            quota: "ec2".into(),
            roster: hub,
        }
    }
}

impl<A: Assume, R: Roster> MemberRoles<A, R> {
    /// Sweeps the members `roster` gives (the Organization's, read as it changes).
    pub fn with_roster<R2: Roster>(self, roster: R2) -> MemberRoles<A, R2> {
        MemberRoles {
            sessions: self.sessions,
            base: self.base,
            quota: self.quota,
            roster,
        }
    }

    /// Names the retry quotas `<quota>-<account>-<region>` rather than `ec2-…`: for a process
    /// that runs several hubs' guards (the throttle model's execution environments), since the
    /// SDK shares a quota between every client of the process with the same name.
    pub fn with_retry_quota(mut self, quota: impl Into<String>) -> Self {
        self.quota = quota.into();
        self
    }
}

/// The retry quota of one place's EC2 client: `<quota>-<account>-<region>`, one per place, as
/// EC2's throttling is (see the module's doc).
pub fn retry_partition(quota: &str, place: &Place) -> RetryPartition {
    RetryPartition::new(format!("{quota}-{}-{}", place.account, place.region))
}

/// The EC2 client configuration of one place: `base` (timeouts, retries, endpoint, HTTP client)
/// with the member's credentials, the place's region and its own retry quota.
pub fn member_config(
    base: &SdkConfig,
    credentials: &Credentials,
    place: &Place,
    quota: &str,
) -> aws_sdk_ec2::Config {
    aws_sdk_ec2::config::Builder::from(base)
        .region(Region::new(place.region.clone()))
        .credentials_provider(SharedCredentialsProvider::new(credentials.clone()))
        .retry_partition(retry_partition(quota, place))
        .build()
}

impl<A: Assume, R: Roster> Fleet for MemberRoles<A, R> {
    type Ec2<'a>
        = Paced<Ec2Client>
    where
        Self: 'a;

    fn at(
        &self,
        place: &Place,
    ) -> impl Future<Output = Result<Paced<Ec2Client>, FleetError>> + Send {
        let place = place.clone();
        async move {
            self.sessions
                .client(&place, |credentials, region| {
                    let here = Place::new(place.account.clone(), region);
                    let conf = member_config(&self.base, credentials, &here, &self.quota);
                    Paced(Ec2Client::new(aws_sdk_ec2::Client::from_conf(conf)))
                })
                .await
        }
    }

    async fn places(&self, _here: &Place) -> (Vec<Place>, Option<String>) {
        let current = self.roster.current().await;
        (current.hub.places(), current.problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, SystemTime};

    use aws_sdk_ec2::config::Credentials;
    use ec2pass_shared::org::Member;

    /// Counts assumptions; refuses one account, and every call after `answers` calls; hands
    /// out credentials that live `lifetime`.
    struct FakeSts {
        calls: std::sync::Arc<AtomicUsize>,
        refused: &'static str,
        answers: usize,
        lifetime: Duration,
    }

    impl Assume for FakeSts {
        async fn assume(&self, role_arn: &str) -> Result<Credentials, String> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if role_arn.contains(self.refused) || n >= self.answers {
                return Err("AccessDenied: not authorized to perform sts:AssumeRole".into());
            }
            Ok(Credentials::new(
                "ASIAFAKE",
                "fake",
                Some("token".into()),
                Some(SystemTime::now() + self.lifetime),
                "fake",
            ))
        }
    }

    fn hub() -> Hub {
        Hub {
            role: "ec2pass-member".into(),
            partition: "aws".into(),
            members: ["111111111111", "222222222222", "333333333333"]
                .iter()
                .enumerate()
                .map(|(n, id)| Member {
                    alias: format!("a{n}"),
                    id: (*id).into(),
                })
                .collect(),
            regions: vec!["us-east-1".into(), "eu-west-1".into()],
            units: Vec::new(),
        }
    }

    fn fleet(lifetime: Duration) -> (MemberRoles<FakeSts>, std::sync::Arc<AtomicUsize>) {
        fleet_answering(lifetime, usize::MAX)
    }

    /// A fleet whose STS answers `answers` times, then fails.
    fn fleet_answering(
        lifetime: Duration,
        answers: usize,
    ) -> (MemberRoles<FakeSts>, std::sync::Arc<AtomicUsize>) {
        let base = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let calls = std::sync::Arc::new(AtomicUsize::new(0));
        let fake = FakeSts {
            calls: calls.clone(),
            refused: "333333333333",
            answers,
            lifetime,
        };
        (MemberRoles::new(hub(), fake, base), calls)
    }

    #[tokio::test]
    async fn a_member_role_is_assumed_once_per_account_and_renewed_before_it_expires() {
        // Given the hub's fleet, with hour-long sessions
        let (f, calls) = fleet(Duration::from_secs(3600));
        // When the guard acts in two regions of one account, then in another account
        for place in [
            Place::new("111111111111", "us-east-1"),
            Place::new("111111111111", "eu-west-1"),
            Place::new("111111111111", "us-east-1"),
            Place::new("222222222222", "us-east-1"),
        ] {
            assert!(f.at(&place).await.is_ok(), "{place}");
        }
        // Then each account's role was assumed once
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // And an account of the Organization the hub was not told about is acted in too (the
        // StackSet gave it a member role; only the sweep needs the list)
        let joined = Place::new("444444444444", "eu-west-1");
        assert!(!f.sessions.hub().guards(&joined));
        assert!(f.at(&joined).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        // Given sessions that expire within REFRESH_BEFORE
        let (short, short_calls) = fleet(REFRESH_BEFORE / 2);
        let place = Place::new("111111111111", "us-east-1");
        for _ in 0..3 {
            assert!(short.at(&place).await.is_ok());
        }
        // Then each use renews it: no call starts with credentials about to die
        assert_eq!(short_calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_renewal_that_fails_keeps_a_session_that_still_serves() {
        // Given a session due for renewal (it expires within REFRESH_BEFORE, but not within an
        // invocation), and STS that answers once and then fails
        let (f, calls) = fleet_answering(REFRESH_BEFORE / 2, 1);
        let place = Place::new("111111111111", "us-east-1");
        assert!(f.at(&place).await.is_ok());
        // When the renewal fails, the guard still acts with the credentials it has …
        assert!(f.at(&place).await.is_ok(), "a live session is not dropped");
        // … and tries to renew each time
        assert!(f.at(&place).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        // Given credentials that die within an invocation, a failed renewal is an error
        let (f, _) = fleet_answering(STILL_USABLE / 2, 1);
        assert!(f.at(&place).await.is_ok());
        assert!(
            f.at(&place).await.is_err(),
            "credentials about to die are not used"
        );
    }

    #[tokio::test]
    async fn a_role_that_cannot_be_assumed_is_an_error_naming_the_account() {
        let (f, calls) = fleet(Duration::from_secs(3600));
        let place = Place::new("333333333333", "eu-west-1");
        let Err(e) = f.at(&place).await else {
            panic!("a refused role must not give an EC2");
        };
        assert_eq!(e.place, place);
        let text = e.to_string();
        assert!(text.contains("333333333333"), "{text}");
        assert!(
            text.contains("arn:aws:iam::333333333333:role/ec2pass-member"),
            "{text}"
        );
        assert!(text.contains("AccessDenied"), "{text}");
        // And it is asked again next time (a role fixed meanwhile is used at once)
        assert!(f.at(&place).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_event_without_a_usable_place_assumes_nothing() {
        let (f, calls) = fleet(Duration::from_secs(3600));
        for place in [
            Place::new("", ""),
            Place::new("12345", "us-east-1"),
            Place::new("111111111111", "Mars"),
        ] {
            assert!(f.at(&place).await.is_err(), "{place}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn each_account_and_region_has_a_retry_quota_of_its_own() {
        // The SDK shares a retry quota between every client of a process whose partition has
        // the same name; by default that name is `ec2-<region>`, whatever the credentials.
        let base = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let credentials = Credentials::new("ASIAFAKE", "fake", None, None, "fake");
        let partition = |account: &str, region: &str| {
            member_config(&base, &credentials, &Place::new(account, region), "ec2")
                .retry_partition()
                .map(ToString::to_string)
        };
        let a = partition("111111111111", "us-east-1");
        assert_eq!(a.as_deref(), Some("ec2-111111111111-us-east-1"));
        // An attacker throttled in one account must not spend another account's retries …
        assert_ne!(a, partition("222222222222", "us-east-1"));
        // … nor one region's those of another
        assert_ne!(a, partition("111111111111", "eu-west-1"));
        assert_eq!(a, partition("111111111111", "us-east-1"));
    }

    #[tokio::test]
    async fn the_hub_sweeps_every_member_in_every_region() {
        let (f, _) = fleet(Duration::from_secs(3600));
        let here = Place::new("999999999999", "ap-south-1");
        let (places, problem) = f.places(&here).await;
        assert_eq!(problem, None);
        assert_eq!(places.len(), 6);
        assert!(places.contains(&Place::new("333333333333", "eu-west-1")));
        assert!(
            !places.contains(&here),
            "the hub's own account is a member like any other"
        );
    }
}
