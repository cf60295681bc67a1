//! Who started an instance: the caller of a `RunInstances` or `StartInstances` call, as
//! CloudTrail recorded it (SPEC §11).
//!
//! CloudTrail's `userIdentity` says who signed the request; the guard keeps the parts a
//! responder asks for first, with the verdict of each start the call made, and puts them in the
//! deny alert (or in an attribution alert that follows it). Every field came from the event, so
//! everything shown to people is cleaned to one line where it is shown.

use serde::{Deserialize, Serialize};

/// The caller of one call (`userIdentity` and the request's own fields).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// `userIdentity.type`: `IAMUser`, `AssumedRole`, `FederatedUser`, `Root`, `AWSService`,
    /// `AWSAccount`, `IdentityCenterUser`, ...
    pub principal_type: String,
    /// `userIdentity.arn` (absent for an AWS service).
    pub principal_arn: Option<String>,
    /// `userIdentity.accountId`.
    pub account: Option<String>,
    /// `userIdentity.userName`, for an IAM user.
    pub user_name: Option<String>,
    /// `userIdentity.accessKeyId`: `AKIA…` a long-term key, `ASIA…` temporary credentials.
    pub access_key_id: Option<String>,
    /// `sessionContext.sessionIssuer.arn`: the role (or user) whose session signed the call.
    pub session_issuer: Option<String>,
    /// `sessionContext.attributes.creationDate`: when the session's credentials were issued.
    pub session_created: Option<String>,
    /// `sessionContext.attributes.mfaAuthenticated`.
    pub mfa: Option<bool>,
    /// `userIdentity.invokedBy`: the service that made the call on the principal's behalf.
    pub invoked_by: Option<String>,
    /// `sourceIPAddress` (an address, or a service's name).
    pub source_ip: Option<String>,
    /// `userAgent`.
    pub user_agent: Option<String>,
    /// `eventName`: `RunInstances` or `StartInstances`.
    pub event_name: String,
    /// `eventID`: the call's CloudTrail event.
    pub event_id: String,
    /// `eventTime` (RFC 3339).
    pub event_time: String,
}

impl Caller {
    /// Who it is, in one line: the principal's ARN, else its type and the service behind it.
    pub fn who(&self) -> String {
        match (&self.principal_arn, &self.invoked_by) {
            (Some(arn), _) => arn.clone(),
            (None, Some(service)) => format!("{} {service}", self.principal_type),
            (None, None) => self.principal_type.clone(),
        }
    }

    /// The lines an alert for people shows about the caller.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "Started by: {} ({})",
            self.who(),
            self.principal_type
        )];
        if let Some(issuer) = &self.session_issuer {
            lines.push(format!("Session of: {issuer}"));
        }
        if let Some(key) = &self.access_key_id {
            lines.push(format!("Access key: {key}"));
        }
        if let Some(mfa) = self.mfa {
            lines.push(format!("MFA: {}", if mfa { "yes" } else { "no" }));
        }
        let from = [self.source_ip.as_deref(), self.user_agent.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ");
        if !from.is_empty() {
            lines.push(format!("From: {from}"));
        }
        lines.push(format!(
            "Call: {} at {} (CloudTrail event {})",
            self.event_name, self.event_time, self.event_id
        ));
        lines
    }
}
