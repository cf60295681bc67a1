//! The password table in DynamoDB.
//!
//! Every write that must not happen twice is conditional, and the mint is a single
//! `TransactWriteItems` (trigger claim + rate counter + password), so the mint path costs one
//! round trip and can never leave a counted-but-unstored or stored-but-replayable state behind.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};

use super::{
    Mint, MintOutcome, MintStore, Outstanding, OutstandingStore, PasswordLookup, PasswordRecord,
    StoreError, TriggerClaim, TriggerStore,
};
use crate::digest::Digest;
use crate::ids::{InstanceId, Owner, ShortId};
use crate::table as t;
use crate::time::UnixTime;

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
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(unavailable("DeleteItem", e)),
        }
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

        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(trigger).build())
            .transact_items(TransactWriteItem::builder().update(rate).build())
            .transact_items(TransactWriteItem::builder().put(password).build())
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(MintOutcome::Minted),
            Err(err) => err,
        };
        // Which of the three conditions failed decides the answer (in this order of precedence).
        let failed: Vec<bool> = err
            .as_service_error()
            .and_then(|e| match e {
                TransactWriteItemsError::TransactionCanceledException(c) => Some(c),
                _ => None,
            })
            .map(|c| {
                c.cancellation_reasons()
                    .iter()
                    .map(|r| r.code() == Some("ConditionalCheckFailed"))
                    .collect()
            })
            .unwrap_or_default();
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
            _ => Err(unavailable("TransactWriteItems", err)),
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
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(unavailable("PutItem", e)),
        }
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
