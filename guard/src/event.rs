//! What invoked the guard: an EC2 state change, the scheduled sweep, or something to ignore.
//!
//! The payload arrives as raw JSON and is parsed here, so an event of an unexpected shape is
//! logged and acknowledged instead of failing the invocation (which Lambda would retry).

use aws_lambda_events::eventbridge::EventBridgeEvent;
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::org::{Place, is_account_id, is_region};
use serde::Deserialize;
use serde_json::Value;

/// Where a decision came from, for the verdict record and the alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// EventBridge event id (`sweep:<id>` for the sweep).
    pub event_id: String,
    /// When the event happened (RFC 3339, as EventBridge wrote it).
    pub event_time: String,
    /// AWS account.
    pub account: String,
    /// AWS region.
    pub region: String,
}

/// What the guard was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// An instance entered `pending` or `running`.
    StateChange {
        /// The instance.
        instance: InstanceId,
        /// `pending` or `running`.
        state: String,
        /// The event.
        origin: Origin,
    },
    /// The scheduled sweep.
    Sweep {
        /// The schedule's event.
        origin: Origin,
    },
    /// Anything else: logged and acknowledged, never retried.
    Ignore(String),
}

#[derive(Deserialize)]
struct StateChangeDetail {
    #[serde(rename = "instance-id")]
    instance_id: String,
    state: String,
}

impl Origin {
    /// The account and region the event happened in.
    pub fn place(&self) -> Place {
        Place::new(&self.account, &self.region)
    }
}

/// The account and region of `instance` in an ARN among `resources`
/// (`arn:<partition>:ec2:<region>:<account>:instance/<id>`).
fn place_in_arn(resources: &[String], instance: &InstanceId) -> Option<(String, String)> {
    resources.iter().find_map(|arn| {
        let mut parts = arn.splitn(6, ':');
        let (Some("arn"), Some(_), Some("ec2"), Some(region), Some(account), Some(resource)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        (resource.strip_prefix("instance/") == Some(instance.as_str())
            && is_account_id(account)
            && is_region(region))
        .then(|| (account.to_owned(), region.to_owned()))
    })
}

/// Reads an invocation payload.
pub fn parse(payload: &Value) -> Trigger {
    // serde reads a struct from a JSON list too (its fields in order); EventBridge never sends
    // one, so neither the event nor its detail may be anything but an object.
    if !payload.is_object() {
        return Trigger::Ignore("not an EventBridge event: not a JSON object".into());
    }
    let event: EventBridgeEvent<Value> = match serde_json::from_value(payload.clone()) {
        Ok(e) => e,
        Err(e) => return Trigger::Ignore(format!("not an EventBridge event: {e}")),
    };
    let origin = Origin {
        event_id: event.id.clone().unwrap_or_default(),
        event_time: payload
            .get("time")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        account: event.account.clone().unwrap_or_default(),
        region: event.region.clone().unwrap_or_default(),
    };
    match (event.source.as_str(), event.detail_type.as_str()) {
        ("aws.ec2", "EC2 Instance State-change Notification") => {
            if !event.detail.is_object() {
                return Trigger::Ignore("state change whose detail is not an object".into());
            }
            let detail: StateChangeDetail = match serde_json::from_value(event.detail) {
                Ok(d) => d,
                Err(e) => {
                    return Trigger::Ignore(format!("state change without instance-id/state: {e}"));
                }
            };
            let Some(instance) = InstanceId::parse(&detail.instance_id) else {
                return Trigger::Ignore(format!("malformed instance id {:?}", detail.instance_id));
            };
            if detail.state != "pending" && detail.state != "running" {
                return Trigger::Ignore(format!("state {:?} is not guarded", detail.state));
            }
            // Where it happened: the instance's ARN, when the event carries it, else the
            // event's account and region. On AWS the two agree (EventBridge keeps both as EC2
            // wrote them, across accounts too); an emulator that rewrites a forwarded event's
            // account keeps the ARN.
            let origin =
                match place_in_arn(event.resources.as_deref().unwrap_or_default(), &instance) {
                    Some((account, region)) => Origin {
                        account,
                        region,
                        ..origin
                    },
                    None => origin,
                };
            Trigger::StateChange {
                instance,
                state: detail.state,
                origin,
            }
        }
        ("aws.events", "Scheduled Event") => Trigger::Sweep {
            origin: Origin {
                event_id: format!("sweep:{}", origin.event_id),
                ..origin
            },
        },
        (source, detail_type) => {
            Trigger::Ignore(format!("unexpected event {source:?} / {detail_type:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state_change(state: &str) -> Value {
        json!({"version":"0","id":"7bf73129-1428-4cd3-a780-95db273d1602","detail-type":"EC2 Instance State-change Notification",
         "source":"aws.ec2","account":"123456789012","time":"2026-11-21T10:00:00Z","region":"us-east-1",
         "resources":["arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"],
         "detail":{"instance-id":"i-0123456789abcdef0","state":state}})
    }

    #[test]
    fn the_documented_state_change_is_read() {
        let Trigger::StateChange {
            instance,
            state,
            origin,
        } = parse(&state_change("pending"))
        else {
            panic!("not a state change");
        };
        assert_eq!(instance.as_str(), "i-0123456789abcdef0");
        assert_eq!(state, "pending");
        assert_eq!(origin.event_id, "7bf73129-1428-4cd3-a780-95db273d1602");
        assert_eq!(origin.event_time, "2026-11-21T10:00:00Z");
        assert_eq!(
            (origin.account.as_str(), origin.region.as_str()),
            ("123456789012", "us-east-1")
        );
        assert!(matches!(
            parse(&state_change("running")),
            Trigger::StateChange { .. }
        ));
    }

    #[test]
    fn the_place_is_the_instance_arns_and_otherwise_the_events() {
        // Given a state change forwarded from a member account by an emulator that rewrote the
        // event's account and region to the hub's (moto does; AWS keeps the member's)
        let mut forwarded = state_change("pending");
        forwarded["resources"] = json!([
            "arn:aws:ec2:eu-west-1:222222222222:instance/i-0fffffffffffffff0",
            "arn:aws:ec2:eu-west-1:222222222222:instance/i-0123456789abcdef0"
        ]);
        let place = |e: &Value| match parse(e) {
            Trigger::StateChange { origin, .. } => origin.place(),
            other => panic!("not a state change: {other:?}"),
        };
        // Then the place is the one in this instance's ARN
        assert_eq!(place(&forwarded), Place::new("222222222222", "eu-west-1"));
        // And with no ARN of this instance, or one that does not read as a place, the event's
        for resources in [
            json!([]),
            json!(["arn:aws:ec2:eu-west-1:222222222222:instance/i-0fffffffffffffff0"]),
            json!(["arn:aws:ec2:eu-west-1:2222:instance/i-0123456789abcdef0"]),
            json!(["arn:aws:ec2:EU:222222222222:instance/i-0123456789abcdef0"]),
            json!(["arn:aws:s3:eu-west-1:222222222222:instance/i-0123456789abcdef0"]),
        ] {
            let mut e = state_change("pending");
            e["resources"] = resources.clone();
            assert_eq!(
                place(&e),
                Place::new("123456789012", "us-east-1"),
                "{resources}"
            );
        }
        let mut none = state_change("pending");
        none.as_object_mut().map(|o| o.remove("resources"));
        assert_eq!(place(&none), Place::new("123456789012", "us-east-1"));
    }

    #[test]
    fn other_states_and_shapes_are_ignored_not_failed() {
        for state in ["stopping", "stopped", "terminated", "shutting-down", ""] {
            assert!(
                matches!(parse(&state_change(state)), Trigger::Ignore(_)),
                "{state}"
            );
        }
        let mut bad_id = state_change("pending");
        bad_id["detail"]["instance-id"] = json!("i-NOPE");
        assert!(matches!(parse(&bad_id), Trigger::Ignore(_)));
        let mut no_detail = state_change("pending");
        no_detail["detail"] = json!({});
        assert!(matches!(parse(&no_detail), Trigger::Ignore(_)));
        for junk in [
            json!(null),
            json!(42),
            json!("x"),
            json!({}),
            json!({"detail-type": 5}),
            json!([1, 2]),
        ] {
            assert!(matches!(parse(&junk), Trigger::Ignore(_)), "{junk}");
        }
        let mut other = state_change("pending");
        other["source"] = json!("aws.s3");
        assert!(matches!(parse(&other), Trigger::Ignore(_)));
    }

    /// Found by `guard/tests/properties.rs`: serde read the event, or its detail, from a JSON
    /// list of the fields' values, so `"detail": ["i-…", "pending"]` was a state change.
    #[test]
    fn an_event_or_detail_written_as_a_list_is_ignored() {
        let mut listed_detail = state_change("pending");
        listed_detail["detail"] = json!(["i-0123456789abcdef0", "pending"]);
        assert!(matches!(parse(&listed_detail), Trigger::Ignore(_)));
        let e = state_change("pending");
        let listed_event = json!([
            e["version"],
            e["id"],
            e["detail-type"],
            e["source"],
            e["account"],
            e["time"],
            e["region"],
            e["resources"],
            e["detail"]
        ]);
        assert!(matches!(parse(&listed_event), Trigger::Ignore(_)));
    }

    #[test]
    fn a_scheduled_event_is_the_sweep() {
        let sweep = json!({"version":"0","id":"s-1","detail-type":"Scheduled Event","source":"aws.events",
            "account":"123456789012","time":"2026-11-21T10:05:00Z","region":"us-east-1","resources":[],"detail":{}});
        let Trigger::Sweep { origin } = parse(&sweep) else {
            panic!("not a sweep")
        };
        assert_eq!(origin.event_id, "sweep:s-1");
    }
}
