//! An Organization in moto: the hub is the local account of `dev/local.env` (in `us-east-1`),
//! with three member accounts in two regions, each reached through its member role as the hub's
//! guard reaches it.
//!
//! moto's STS maps an assumed role's credentials to the role's account, so what a member's client
//! launches lives in that account and region, invisible to the hub's own credentials. moto does
//! not check that the role exists or trusts the caller (IAM is not enforced): who may assume the
//! member role is checked offline, in `infra/check.py`.

use aws_config::SdkConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_sdk_ec2::config::Region;
use ec2pass_shared::config::{Env, GuardConfig};
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::org::{Hub, OrgRoster, Place, StsAssume};
use ec2pass_shared::store::dynamo::DynamoStore;
use ec2pass_shared::time::SystemClock;
use guard::alerts::SnsAlerts;
use guard::batch::Message;
use guard::fleet::{MemberRoles, SESSION_NAME};
use guard::guard::Guard;
use serde_json::Value;

use crate::{Local, unique};

/// The member accounts: alias and id.
pub const MEMBERS: [(&str, &str); 3] = [
    ("alpha", "111111111111"),
    ("bravo", "222222222222"),
    ("charlie", "333333333333"),
];

/// The guarded regions.
pub const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

/// The member role's name, as `infra/member.yaml` creates it.
pub const MEMBER_ROLE: &str = "ec2pass-member";

/// Every member account in every region.
pub fn places() -> Vec<Place> {
    MEMBERS
        .iter()
        .flat_map(|(_, id)| REGIONS.iter().map(move |r| Place::new(*id, *r)))
        .collect()
}

/// The variables that make a guard the hub's.
pub fn hub_vars() -> Vec<(&'static str, String)> {
    let accounts: Vec<String> = MEMBERS.iter().map(|(a, id)| format!("{a}={id}")).collect();
    vec![
        ("EC2PASS_MEMBER_ROLE", MEMBER_ROLE.to_owned()),
        ("EC2PASS_ACCOUNTS", accounts.join(",")),
        ("EC2PASS_REGIONS", REGIONS.join(",")),
    ]
}

/// An EC2 client of a member account and region, through its member role (as the member
/// account's own operators, or an attacker with its keys, would reach its instances).
pub async fn member_ec2(aws: &SdkConfig, place: &Place) -> aws_sdk_ec2::Client {
    let role = format!("arn:aws:iam::{}:role/{MEMBER_ROLE}", place.account);
    let provider = AssumeRoleProvider::builder(role)
        .session_name("ec2pass-test")
        .configure(aws)
        .build()
        .await;
    let conf = aws_sdk_ec2::config::Builder::from(aws)
        .region(Region::new(place.region.clone()))
        .credentials_provider(provider)
        .build();
    aws_sdk_ec2::Client::from_conf(conf)
}

/// The hub's guard, wired as `guard`'s `main` wires it when `EC2PASS_MEMBER_ROLE` is set.
pub type HubGuard = Guard<DynamoStore, MemberRoles<StsAssume>, SnsAlerts, SystemClock>;

/// Builds the hub's guard against the emulator: `dev/local.env`'s settings and [`hub_vars`].
pub fn hub_guard(local: &Local, aws: &SdkConfig) -> HubGuard {
    let lookup = local.lookup();
    let extra = hub_vars();
    let config = GuardConfig::from_env(&Env::from_fn(|k| {
        extra
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
            .or_else(|| lookup(k))
    }))
    .expect("hub guard configuration");
    let hub = config.hub.clone().expect("a hub");
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(aws), config.table.clone());
    let alerts = SnsAlerts::new(aws_sdk_sns::Client::new(aws), config.topic_arn.clone());
    let fleet = MemberRoles::new(hub, StsAssume::new(aws.clone(), SESSION_NAME), aws.clone());
    Guard::new(config, store, fleet, alerts, SystemClock)
}

/// The hub's guard reading its members from the Organization: [`hub_guard`]'s, its sweep over
/// the active accounts under `units` (no configured list).
pub fn hub_guard_reading(
    local: &Local,
    aws: &SdkConfig,
    units: &[String],
) -> Guard<
    DynamoStore,
    MemberRoles<StsAssume, OrgRoster<aws_sdk_organizations::Client>>,
    SnsAlerts,
    SystemClock,
> {
    let guard = hub_guard(local, aws);
    let hub = Hub {
        members: Vec::new(),
        units: units.to_vec(),
        ..guard.config.hub.clone().expect("a hub")
    };
    let roster = OrgRoster::new(hub.clone(), aws_sdk_organizations::Client::new(aws));
    let fleet = MemberRoles::new(hub, StsAssume::new(aws.clone(), SESSION_NAME), aws.clone())
        .with_roster(roster);
    Guard::new(guard.config, guard.store, fleet, guard.alerts, SystemClock)
}

/// An account that has just joined the Organization, in an OU of its own: moto's Organization
/// (created if there is none yet), a new OU under its root, a sub-OU, and an account moved into
/// the sub-OU. The OU's id, and the account's id and name.
pub async fn joined_account(aws: &SdkConfig) -> (String, String, String) {
    let org = aws_sdk_organizations::Client::new(aws);
    if org.describe_organization().send().await.is_err() {
        org.create_organization()
            .feature_set(aws_sdk_organizations::types::OrganizationFeatureSet::All)
            .send()
            .await
            .expect("CreateOrganization against moto");
    }
    let roots = org.list_roots().send().await.expect("ListRoots");
    let root = roots
        .roots()
        .first()
        .and_then(|r| r.id())
        .expect("a root")
        .to_owned();
    let unit_under = async |parent: &str, name: String| {
        org.create_organizational_unit()
            .parent_id(parent)
            .name(name)
            .send()
            .await
            .expect("CreateOrganizationalUnit")
            .organizational_unit()
            .and_then(|u| u.id())
            .expect("an OU id")
            .to_owned()
    };
    let ou = unit_under(&root, unique("workloads-")).await;
    let nested = unit_under(&ou, unique("team-")).await;
    let name = format!("Data Lake {}", unique(""));
    let created = org
        .create_account()
        .account_name(&name)
        .email(format!("{}@example.com", unique("aws-")))
        .send()
        .await
        .expect("CreateAccount");
    let id = created
        .create_account_status()
        .and_then(|s| s.account_id())
        .expect("moto creates the account at once")
        .to_owned();
    org.move_account()
        .account_id(&id)
        .source_parent_id(&root)
        .destination_parent_id(&nested)
        .send()
        .await
        .expect("MoveAccount");
    (ou, id, name)
}

/// A state change of a member account's instance as EventBridge delivers it to the hub: the
/// member's account and region, and the instance's ARN in `resources`.
pub fn member_state_change(instance: &InstanceId, state: &str, place: &Place) -> Value {
    let (account, region) = (&place.account, &place.region);
    serde_json::json!({
        "version": "0",
        "id": unique("evt-"),
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "account": account,
        "time": "2026-11-21T10:00:00Z",
        "region": region,
        "resources": [format!("arn:aws:ec2:{region}:{account}:instance/{instance}")],
        "detail": {"instance-id": instance.as_str(), "state": state}
    })
}

/// Events as the queue would hold them, one message each.
pub fn messages(events: &[Value]) -> Vec<Message> {
    events
        .iter()
        .map(|e| Message {
            id: unique("msg-"),
            receipt: unique("receipt-"),
            receive_count: 1,
            body: e.to_string(),
        })
        .collect()
}
