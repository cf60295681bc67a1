//! The password table in DynamoDB.
//!
//! Every write that must not happen twice is conditional, and the mint is a single
//! `TransactWriteItems` (trigger claim + rate counter + password), so the mint path costs one
//! round trip and can never leave a counted-but-unstored or stored-but-replayable state behind.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Put, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};

use super::{
    Consume, ConsumeOutcome, ConsumeStore, Mint, MintOutcome, MintStore, Outstanding,
    OutstandingStore, PasswordLookup, PasswordRecord, Recorded, StoreError, TriggerClaim,
    TriggerStore, VerdictStore,
};
use crate::digest::Digest;
use crate::ids::{InstanceId, Owner, ShortId};
use crate::table as t;
use crate::time::UnixTime;
use crate::verdict::{Cycle, DenyReason, Verdict, VerdictRecord};

type Item = HashMap<String, AttributeValue>;

/// The password table in DynamoDB.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    /// A store on `table`, using a client built once at cold start.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Runs a transaction; `Ok(None)` when it committed, `Ok(Some(reasons))` when a condition
    /// cancelled it. Cancellations caused by a concurrent transaction on the same items
    /// (`TransactionConflict`), which the SDK does not retry, are retried here a few times.
    async fn transact(
        &self,
        items: &[TransactWriteItem],
    ) -> Result<Option<Vec<CancellationReason>>, StoreError> {
        const ATTEMPTS: u32 = 6;
        for attempt in 1..=ATTEMPTS {
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.to_vec()))
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(None),
                Err(err) => err,
            };
            let reasons = match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                    c.cancellation_reasons().to_vec()
                }
                _ => return Err(unavailable("TransactWriteItems", err)),
            };
            let conflict = reasons
                .iter()
                .any(|r| r.code() == Some("TransactionConflict"));
            if !conflict || attempt == ATTEMPTS {
                return Ok(Some(reasons));
            }
            let jitter = u64::from(rand::random::<u8>() % 20);
            tokio::time::sleep(std::time::Duration::from_millis(
                10 * (1 << attempt) + jitter,
            ))
            .await;
        }
        Ok(None)
    }

    /// The owner's passwords that have not expired at `now` and are not consumed, as full items.
    async fn query_outstanding(
        &self,
        owner: &Owner,
        now: UnixTime,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(t::OWNER_INDEX)
                .key_condition_expression("#owner = :owner AND #exp > :now")
                .filter_expression("attribute_not_exists(#consumed)")
                .expression_attribute_names("#owner", t::OWNER)
                .expression_attribute_names("#exp", t::EXPIRES_AT)
                .expression_attribute_names("#consumed", t::CONSUMED_BY)
                .expression_attribute_values(":owner", s(owner.key()))
                .expression_attribute_values(":now", n(now.0))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("Query", e))?;
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    /// Deletes one password item if it is still the owner's and unconsumed; `Ok(false)` if not.
    async fn delete_outstanding(&self, owner: &Owner, key: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(t::PK, s(key))
            .condition_expression("#owner = :owner AND attribute_not_exists(#consumed)")
            .expression_attribute_names("#owner", t::OWNER)
            .expression_attribute_names("#consumed", t::CONSUMED_BY)
            .expression_attribute_values(":owner", s(owner.key()))
            .send()
            .await;
        applied(result, "DeleteItem")
    }
}

impl MintStore for DynamoStore {
    async fn mint(&self, mint: &Mint) -> Result<MintOutcome, StoreError> {
        let trigger = Put::builder()
            .table_name(&self.table)
            .set_item(Some(trigger_item(&mint.trigger)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", t::PK)
            .build()
            .map_err(|e| build_error("trigger put", e))?;
        let rate = Update::builder()
            .table_name(&self.table)
            .key(t::PK, s(rate_key(&mint.rate.owner, mint.rate.window)))
            .update_expression("SET #ttl = :ttl, #kind = :kind ADD #n :one")
            .condition_expression("attribute_not_exists(#n) OR #n < :limit")
            .expression_attribute_names("#ttl", t::TTL)
            .expression_attribute_names("#kind", t::KIND)
            .expression_attribute_names("#n", t::COUNT)
            .expression_attribute_values(":ttl", n(mint.rate.forget_after.0))
            .expression_attribute_values(":kind", s("rate"))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(i64::from(mint.rate.limit)))
            .build()
            .map_err(|e| build_error("rate update", e))?;
        let password = Put::builder()
            .table_name(&self.table)
            .set_item(Some(password_item(&mint.record)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", t::PK)
            .build()
            .map_err(|e| build_error("password put", e))?;

        let items = [
            TransactWriteItem::builder().put(trigger).build(),
            TransactWriteItem::builder().update(rate).build(),
            TransactWriteItem::builder().put(password).build(),
        ];
        let Some(reasons) = self.transact(&items).await? else {
            return Ok(MintOutcome::Minted);
        };
        // Which of the three conditions failed decides the answer (in this order of precedence).
        let failed: Vec<bool> = reasons.iter().map(condition_failed).collect();
        match failed.as_slice() {
            [true, ..] => Ok(MintOutcome::Replayed),
            [false, true, ..] => {
                // Nothing was written, so the trigger is not yet claimed. Claim it now, so that
                // replaying this refused request later (in the next window) mints nothing either.
                self.claim_trigger(&mint.trigger).await?;
                Ok(MintOutcome::RateLimited)
            }
            [false, false, true] => Err(StoreError::Malformed {
                key: mint.record.digest.table_key(),
                problem: "a password with this digest already exists".into(),
            }),
            _ => Err(StoreError::Unavailable {
                operation: "TransactWriteItems",
                message: format!(
                    "cancelled: {:?}",
                    reasons
                        .iter()
                        .map(CancellationReason::code)
                        .collect::<Vec<_>>()
                ),
            }),
        }
    }
}

impl TriggerStore for DynamoStore {
    async fn claim_trigger(&self, claim: &TriggerClaim) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(trigger_item(claim)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", t::PK)
            .send()
            .await;
        applied(result, "PutItem")
    }
}

impl OutstandingStore for DynamoStore {
    async fn outstanding(
        &self,
        owner: &Owner,
        now: UnixTime,
    ) -> Result<Vec<Outstanding>, StoreError> {
        let items = self.query_outstanding(owner, now).await?;
        let mut list = items
            .iter()
            .map(|item| record_from_item(item).map(|r| Outstanding::from(&r)))
            .collect::<Result<Vec<_>, _>>()?;
        list.sort_by(|a, b| (a.expires_at, &a.short_id).cmp(&(b.expires_at, &b.short_id)));
        Ok(list)
    }

    async fn revoke(&self, owner: &Owner, id: &ShortId, now: UnixTime) -> Result<bool, StoreError> {
        let items = self.query_outstanding(owner, now).await?;
        let mut revoked = false;
        for item in &items {
            let record = record_from_item(item)?;
            if &record.short_id == id {
                revoked |= self
                    .delete_outstanding(owner, &record.digest.table_key())
                    .await?;
            }
        }
        Ok(revoked)
    }

    async fn revoke_all(&self, owner: &Owner, now: UnixTime) -> Result<usize, StoreError> {
        let items = self.query_outstanding(owner, now).await?;
        let mut revoked = 0;
        for item in &items {
            let record = record_from_item(item)?;
            if self
                .delete_outstanding(owner, &record.digest.table_key())
                .await?
            {
                revoked += 1;
            }
        }
        Ok(revoked)
    }
}

impl PasswordLookup for DynamoStore {
    async fn find(&self, digest: &Digest) -> Result<Option<PasswordRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(t::PK, s(digest.table_key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        out.item.as_ref().map(record_from_item).transpose()
    }
}

impl ConsumeStore for DynamoStore {
    async fn consume(&self, c: &Consume) -> Result<ConsumeOutcome, StoreError> {
        let password = Update::builder()
            .table_name(&self.table)
            .key(t::PK, s(c.digest.table_key()))
            .update_expression(
                "SET #consumed = :cycle, #consumed_at = if_not_exists(#consumed_at, :now)",
            )
            .condition_expression(
                "attribute_exists(#pk) AND #digest = :digest AND (#consumed = :cycle OR \
                 (attribute_not_exists(#consumed) AND #exp > :now AND \
                 (attribute_not_exists(#scope) OR #scope = :instance)))",
            )
            .expression_attribute_names("#pk", t::PK)
            .expression_attribute_names("#digest", t::DIGEST)
            .expression_attribute_names("#consumed", t::CONSUMED_BY)
            .expression_attribute_names("#consumed_at", t::CONSUMED_AT)
            .expression_attribute_names("#exp", t::EXPIRES_AT)
            .expression_attribute_names("#scope", t::SCOPE)
            .expression_attribute_values(":cycle", s(c.cycle.id()))
            .expression_attribute_values(":now", n(c.now.0))
            .expression_attribute_values(
                ":digest",
                AttributeValue::B(c.digest.as_bytes().to_vec().into()),
            )
            .expression_attribute_values(":instance", s(c.cycle.instance.as_str()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| build_error("consume update", e))?;
        let verdict = Put::builder()
            .table_name(&self.table)
            .set_item(Some(verdict_item(&c.allow)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", t::PK)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| build_error("verdict put", e))?;
        let items = [
            TransactWriteItem::builder().update(password).build(),
            TransactWriteItem::builder().put(verdict).build(),
        ];
        let Some(reasons) = self.transact(&items).await? else {
            return Ok(ConsumeOutcome::Allowed);
        };
        // An existing verdict wins over anything else: the cycle is decided.
        if let Some(existing) = reasons.get(1).filter(|r| condition_failed(r)) {
            let item = existing.item().ok_or_else(|| StoreError::Malformed {
                key: c.cycle.verdict_key(),
                problem: "cancelled on the verdict but no item returned".into(),
            })?;
            return verdict_from_item(item).map(ConsumeOutcome::Decided);
        }
        if let Some(refused) = reasons.first().filter(|r| condition_failed(r)) {
            // No item returned: the password does not exist.
            let record = refused
                .item()
                .filter(|i| !i.is_empty())
                .map(record_from_item)
                .transpose()?;
            return Ok(ConsumeOutcome::Refused(record));
        }
        Err(StoreError::Unavailable {
            operation: "TransactWriteItems",
            message: format!(
                "cancelled: {:?}",
                reasons
                    .iter()
                    .map(CancellationReason::code)
                    .collect::<Vec<_>>()
            ),
        })
    }

    async fn burn(&self, digest: &Digest, cycle: &Cycle) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(t::PK, s(digest.table_key()))
            .update_expression("SET #consumed = :burned")
            .condition_expression("attribute_exists(#pk) AND attribute_not_exists(#consumed)")
            .expression_attribute_names("#pk", t::PK)
            .expression_attribute_names("#consumed", t::CONSUMED_BY)
            .expression_attribute_values(":burned", s(super::memory::burned(cycle)))
            .send()
            .await;
        applied(result, "UpdateItem").map(|_| ())
    }
}

impl VerdictStore for DynamoStore {
    async fn record(&self, v: &VerdictRecord) -> Result<Recorded, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(verdict_item(v)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", t::PK)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Recorded::Ours),
            Err(e) => {
                let existing = e
                    .as_service_error()
                    .and_then(|se| match se {
                        aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => c.item(),
                        _ => None,
                    })
                    .cloned();
                match existing {
                    Some(item) => verdict_from_item(&item).map(Recorded::Theirs),
                    None if is_condition_failure(&e) => {
                        // The emulator or an old API version may not return the item: read it.
                        match self.verdict(&v.cycle).await? {
                            Some(theirs) => Ok(Recorded::Theirs(theirs)),
                            None => Err(StoreError::Malformed {
                                key: v.cycle.verdict_key(),
                                problem: "condition failed but no verdict found".into(),
                            }),
                        }
                    }
                    None => Err(unavailable("PutItem", e)),
                }
            }
        }
    }

    async fn verdict(&self, cycle: &Cycle) -> Result<Option<VerdictRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(t::PK, s(cycle.verdict_key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        out.item.as_ref().map(verdict_from_item).transpose()
    }

    async fn claim_alert(&self, cycle: &Cycle, owner: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(t::PK, s(cycle.verdict_key()))
            .update_expression("SET #owner = :me")
            .condition_expression("attribute_exists(#pk) AND attribute_not_exists(#owner)")
            .expression_attribute_names("#pk", t::PK)
            .expression_attribute_names("#owner", t::ALERT_OWNER)
            .expression_attribute_values(":me", s(owner))
            .send()
            .await;
        applied(result, "UpdateItem")
    }

    async fn release_alert(&self, cycle: &Cycle, owner: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(t::PK, s(cycle.verdict_key()))
            .update_expression("REMOVE #owner")
            .condition_expression("#owner = :me")
            .expression_attribute_names("#owner", t::ALERT_OWNER)
            .expression_attribute_values(":me", s(owner))
            .send()
            .await;
        applied(result, "UpdateItem").map(|_| ())
    }

    async fn activation(&self, now: UnixTime) -> Result<UnixTime, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(t::PK, s(t::ACTIVATION_KEY))
            .item(t::KIND, s("meta"))
            .item(t::AT, n(now.0))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", t::PK)
            .send()
            .await;
        match result {
            Ok(_) => Ok(now),
            Err(e) if is_condition_failure(&e) => {
                let out = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .key(t::PK, s(t::ACTIVATION_KEY))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| unavailable("GetItem", e))?;
                out.item
                    .as_ref()
                    .and_then(|i| i.get(t::AT))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
                    .map(UnixTime)
                    .ok_or_else(|| StoreError::Malformed {
                        key: t::ACTIVATION_KEY.into(),
                        problem: "no activation time".into(),
                    })
            }
            Err(e) => Err(unavailable("PutItem", e)),
        }
    }
}

/// The item for a verdict record.
pub fn verdict_item(v: &VerdictRecord) -> Item {
    let mut item = HashMap::from([
        (t::PK.into(), s(v.cycle.verdict_key())),
        (t::KIND.into(), s("verdict")),
        (t::VERDICT.into(), s(v.verdict.kind())),
        (t::INSTANCE_ID.into(), s(v.cycle.instance.as_str())),
        (t::LAUNCH_TIME.into(), n(v.cycle.launch_time.0)),
        (t::DECIDED_AT.into(), n(v.decided_at.0)),
        (t::EVENT_ID.into(), s(&v.event_id)),
        (t::TTL.into(), n(v.retain_until.0)),
    ]);
    let optional = [
        (t::REASON, v.verdict.reason().map(|r| r.as_str().to_owned())),
        (
            t::SHORT_ID,
            v.short_id.as_ref().map(|id| id.as_str().to_owned()),
        ),
        (t::TEAM_ID, v.issuer.as_ref().map(|o| o.team_id.clone())),
        (t::USER_ID, v.issuer.as_ref().map(|o| o.user_id.clone())),
        (t::PASSWORD_KEY, v.password_key.clone()),
        (t::ALERT_OWNER, v.alert_owner.clone()),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            item.insert(name.into(), s(value));
        }
    }
    item
}

/// Reads a verdict record back from its item.
pub fn verdict_from_item(item: &Item) -> Result<VerdictRecord, StoreError> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let number = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .map(UnixTime)
    };
    let key = text(t::PK).unwrap_or_default();
    let bad = |problem: &str| StoreError::Malformed {
        key: key.clone(),
        problem: problem.to_owned(),
    };
    let verdict = match (
        text(t::VERDICT).as_deref(),
        text(t::REASON).as_deref().and_then(DenyReason::parse),
    ) {
        (Some("allow"), _) => Verdict::Allow,
        (Some("exempt"), _) => Verdict::Exempt,
        (Some("deny"), Some(reason)) => Verdict::Deny(reason),
        _ => return Err(bad("bad verdict or reason")),
    };
    let instance = text(t::INSTANCE_ID)
        .as_deref()
        .and_then(InstanceId::parse)
        .ok_or_else(|| bad("bad instance_id"))?;
    let issuer = match (text(t::TEAM_ID), text(t::USER_ID)) {
        (Some(team_id), Some(user_id)) => Some(Owner { team_id, user_id }),
        _ => None,
    };
    Ok(VerdictRecord {
        cycle: Cycle {
            instance,
            launch_time: number(t::LAUNCH_TIME).ok_or_else(|| bad("bad launch_time"))?,
        },
        verdict,
        short_id: text(t::SHORT_ID).as_deref().and_then(ShortId::parse),
        issuer,
        password_key: text(t::PASSWORD_KEY),
        decided_at: number(t::DECIDED_AT).ok_or_else(|| bad("bad decided_at"))?,
        event_id: text(t::EVENT_ID).unwrap_or_default(),
        retain_until: number(t::TTL).unwrap_or(UnixTime(0)),
        alert_owner: text(t::ALERT_OWNER),
    })
}

fn condition_failed(r: &CancellationReason) -> bool {
    r.code() == Some("ConditionalCheckFailed")
}

/// The table key of an owner's rate counter for one window.
fn rate_key(owner: &Owner, window: i64) -> String {
    format!("{}{}#{window}", t::RATE_PREFIX, owner.key())
}

fn trigger_item(claim: &TriggerClaim) -> Item {
    HashMap::from([
        (
            t::PK.into(),
            s(format!("{}{}", t::TRIGGER_PREFIX, claim.trigger_id)),
        ),
        (t::KIND.into(), s("trigger")),
        (t::TTL.into(), n(claim.forget_after.0)),
    ])
}

/// The item for a password record. The plaintext is not an input, so it cannot be written.
pub fn password_item(r: &PasswordRecord) -> Item {
    let mut item = HashMap::from([
        (t::PK.into(), s(r.digest.table_key())),
        (t::KIND.into(), s("password")),
        (
            t::DIGEST.into(),
            AttributeValue::B(r.digest.as_bytes().to_vec().into()),
        ),
        (t::SHORT_ID.into(), s(r.short_id.as_str())),
        (t::OWNER.into(), s(r.owner.key())),
        (t::TEAM_ID.into(), s(&r.owner.team_id)),
        (t::USER_ID.into(), s(&r.owner.user_id)),
        (t::CHANNEL_ID.into(), s(&r.channel_id)),
        (t::ISSUED_AT.into(), n(r.issued_at.0)),
        (t::EXPIRES_AT.into(), n(r.expires_at.0)),
        (t::TTL.into(), n(r.expires_at.plus(t::PASSWORD_TTL_GRACE).0)),
    ]);
    if let Some(scope) = &r.scope {
        item.insert(t::SCOPE.into(), s(scope.as_str()));
    }
    if let Some(cycle) = &r.consumed_by {
        item.insert(t::CONSUMED_BY.into(), s(cycle));
    }
    item
}

/// Reads a password record back from its item, refusing anything malformed.
pub fn record_from_item(item: &Item) -> Result<PasswordRecord, StoreError> {
    let key = item
        .get(t::PK)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default();
    let bad = |problem: &str| StoreError::Malformed {
        key: key.clone(),
        problem: problem.to_owned(),
    };
    let text = |name: &str| -> Result<String, StoreError> {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .ok_or_else(|| bad(&format!("{name} missing or not a string")))
    };
    let number = |name: &str| -> Result<UnixTime, StoreError> {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .map(UnixTime)
            .ok_or_else(|| bad(&format!("{name} missing or not an integer")))
    };
    let digest = item
        .get(t::DIGEST)
        .and_then(|v| v.as_b().ok())
        .and_then(|b| Digest::from_slice(b.as_ref()))
        .ok_or_else(|| bad("digest missing or not 32 bytes"))?;
    let short_id = ShortId::parse(&text(t::SHORT_ID)?).ok_or_else(|| bad("bad short_id"))?;
    let scope = match item.get(t::SCOPE) {
        None => None,
        Some(v) => Some(
            v.as_s()
                .ok()
                .and_then(|s| InstanceId::parse(s))
                .ok_or_else(|| bad("bad scope"))?,
        ),
    };
    Ok(PasswordRecord {
        short_id,
        digest,
        owner: Owner {
            team_id: text(t::TEAM_ID)?,
            user_id: text(t::USER_ID)?,
        },
        channel_id: text(t::CHANNEL_ID)?,
        scope,
        issued_at: number(t::ISSUED_AT)?,
        expires_at: number(t::EXPIRES_AT)?,
        consumed_by: item
            .get(t::CONSUMED_BY)
            .and_then(|v| v.as_s().ok())
            .cloned(),
    })
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The outcome of a conditional write: `Ok(true)` when applied, `Ok(false)` when its condition
/// did not hold, an error when DynamoDB could not be used.
fn applied<T, E, R>(
    result: Result<T, SdkError<E, R>>,
    operation: &'static str,
) -> Result<bool, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_condition_failure(&e) => Ok(false),
        Err(e) => Err(unavailable(operation, e)),
    }
}

fn is_condition_failure<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error().and_then(ProvideErrorMetadata::code)
        == Some("ConditionalCheckFailedException")
}

fn unavailable<E, R>(operation: &'static str, e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Unavailable {
        operation,
        message: DisplayErrorContext(&e).to_string(),
    }
}

fn build_error(what: &str, e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Malformed {
        key: what.to_owned(),
        problem: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::{Password, new_short_id};

    fn record(scope: Option<&str>) -> PasswordRecord {
        PasswordRecord {
            short_id: new_short_id(),
            digest: Password::generate().digest(),
            owner: Owner {
                team_id: "T1".into(),
                user_id: "U1".into(),
            },
            channel_id: "C1".into(),
            scope: scope.and_then(InstanceId::parse),
            issued_at: UnixTime(1_000),
            expires_at: UnixTime(1_900),
            consumed_by: None,
        }
    }

    #[test]
    fn a_record_survives_the_round_trip_through_an_item() {
        for r in [record(Some("i-0123456789abcdef0")), record(None)] {
            let item = password_item(&r);
            assert_eq!(record_from_item(&item).ok(), Some(r.clone()));
            assert_eq!(item.contains_key(t::SCOPE), r.scope.is_some());
        }
    }

    #[test]
    fn the_ttl_is_expiry_plus_grace() {
        let r = record(None);
        let item = password_item(&r);
        let ttl = item.get(t::TTL).and_then(|v| v.as_n().ok()).cloned();
        assert_eq!(ttl, Some((1_900 + 24 * 3600).to_string()));
    }

    mod sdk {
        use super::*;
        use crate::verdict::{Cycle, Verdict, VerdictRecord};
        use aws_sdk_dynamodb::operation::transact_write_items::{
            TransactWriteItemsError, TransactWriteItemsOutput,
        };
        use aws_sdk_dynamodb::types::error::TransactionCanceledException;
        use aws_smithy_mocks::{RuleMode, mock, mock_client};

        fn cancelled(codes: &[&str]) -> TransactWriteItemsError {
            let mut e = TransactionCanceledException::builder();
            for code in codes {
                e = e.cancellation_reasons(CancellationReason::builder().code(*code).build());
            }
            TransactWriteItemsError::TransactionCanceledException(e.build())
        }

        fn consume() -> Consume {
            let digest = Password::generate().digest();
            let cycle = Cycle {
                instance: InstanceId::parse("i-0123456789abcdef0")
                    .unwrap_or_else(|| unreachable!()),
                launch_time: UnixTime(1_000),
            };
            let allow = VerdictRecord {
                cycle: cycle.clone(),
                verdict: Verdict::Allow,
                short_id: None,
                issuer: None,
                password_key: Some(digest.table_key()),
                decided_at: UnixTime(1_001),
                event_id: "e".into(),
                retain_until: UnixTime(9_999),
                alert_owner: None,
            };
            Consume {
                digest,
                cycle,
                now: UnixTime(1_001),
                allow,
            }
        }

        #[tokio::test]
        async fn a_transaction_conflict_is_retried_until_it_commits() {
            // DynamoDB cancels a transaction that races another on the same item; the SDK does
            // not retry that, the store does.
            let rule = mock!(aws_sdk_dynamodb::Client::transact_write_items)
                .sequence()
                .error(|| cancelled(&["TransactionConflict", "None"]))
                .times(2)
                .output(|| TransactWriteItemsOutput::builder().build())
                .build();
            let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&rule]);
            let store = DynamoStore::new(client, "t");
            assert_eq!(
                store.consume(&consume()).await.ok(),
                Some(ConsumeOutcome::Allowed)
            );
            assert_eq!(rule.num_calls(), 3);
        }

        #[tokio::test]
        async fn a_failed_password_condition_without_an_item_is_an_unknown_password() {
            let rule = mock!(aws_sdk_dynamodb::Client::transact_write_items)
                .then_error(|| cancelled(&["ConditionalCheckFailed", "None"]));
            let store = DynamoStore::new(mock_client!(aws_sdk_dynamodb, [&rule]), "t");
            assert_eq!(
                store.consume(&consume()).await.ok(),
                Some(ConsumeOutcome::Refused(None))
            );
        }

        #[tokio::test]
        async fn throttling_past_the_sdks_retries_is_unavailable() {
            let rule = mock!(aws_sdk_dynamodb::Client::transact_write_items)
                .sequence()
                .http_response(|| {
                    aws_smithy_runtime_api::http::Response::new(
                        aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap_or_else(|_| unreachable!()),
                        aws_smithy_types::body::SdkBody::from(
                            r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"slow down"}"#,
                        ),
                    )
                })
                .repeatedly()
                .build();
            let store = DynamoStore::new(
                mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&rule]),
                "t",
            );
            let result = store.consume(&consume()).await;
            assert!(
                matches!(
                    result,
                    Err(StoreError::Unavailable {
                        operation: "TransactWriteItems",
                        ..
                    })
                ),
                "{result:?}"
            );
            assert!(rule.num_calls() > 1, "the SDK retried throttling");
        }
    }

    #[test]
    fn malformed_items_are_refused_not_panicked_on() {
        let good = password_item(&record(None));
        for (name, value) in [
            (t::DIGEST, AttributeValue::B(vec![1, 2, 3].into())),
            (t::SHORT_ID, s("not-an-id!")),
            (t::SCOPE, s("i-XYZ")),
            (t::EXPIRES_AT, s("soon")),
            (t::USER_ID, n(5)),
        ] {
            let mut item = good.clone();
            item.insert(name.into(), value);
            assert!(record_from_item(&item).is_err(), "{name} accepted");
        }
        assert!(record_from_item(&HashMap::new()).is_err());
    }
}
