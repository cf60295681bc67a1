//! The password table in DynamoDB.
//!
//! Every write that must not happen twice is conditional, and the mint is a single
//! `TransactWriteItems` (rate counter + password + the owner's ledger, and the trigger claim
//! unless the issuer claimed it already), so it can never leave a counted-but-unstored or a
//! stored-but-unlisted state behind.
//!
//! `list` and `revoke` find a requester's passwords through the requester's ledger item
//! (`owner#<team>#<user>`, a string set of password keys), read with strong consistency; a
//! global secondary index is only eventually consistent and could miss a password minted a
//! moment before. Keys of passwords that are gone, used or expired are pruned from the ledger
//! as they are found.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, KeysAndAttributes, Put,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};

use super::{
    AlertStore, Attributed, CallerLookup, CallerStore, Consume, ConsumeOutcome, ConsumeStore, Mint,
    MintOutcome, MintStore, Outstanding, OutstandingStore, PasswordLookup, PasswordRecord,
    REPLY_POSTS, Recorded, Reply, ReplyStore, ResponseStore, StoreError, TellClaim, TriggerClaim,
    TriggerStore, VerdictHistory, VerdictStore,
};
use crate::caller::Caller;
use crate::digest::Digest;
use crate::ids::{InstanceId, Owner, ShortId};
use crate::org::Place;
use crate::reply::Front;
use crate::table as t;
use crate::time::UnixTime;
use crate::verdict::{AlertClaim, Cycle, DenyReason, Verdict, VerdictRecord};

type Item = HashMap<String, AttributeValue>;

/// The password table in DynamoDB.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    ledger_cap: usize,
}

/// How many password keys an owner's ledger holds at most (about 35 bytes each, far below
/// DynamoDB's 400 KB item limit). A mint that finds it full prunes it and tries once more.
pub const LEDGER_CAP: usize = 2000;

/// How long an owner's ledger outlives the owner's latest mint: the longest lifetime the
/// configuration allows (`EC2PASS_LIFETIME_MAX` is at most 24 h) plus the grace a password item
/// is kept after its expiry. Every mint sets it anew, so the ledger outlives every item in it.
const LEDGER_KEEP: std::time::Duration =
    std::time::Duration::from_secs(24 * 3600 + t::PASSWORD_TTL_GRACE.as_secs());

impl DynamoStore {
    /// A store on `table`, using a client built once at cold start.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            ledger_cap: LEDGER_CAP,
        }
    }

    /// The same store with another ledger cap than [`LEDGER_CAP`] (tests reach it with a few
    /// mints).
    pub fn with_ledger_cap(self, cap: usize) -> Self {
        Self {
            ledger_cap: cap,
            ..self
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

    /// The password keys in the owner's ledger, read with strong consistency.
    async fn ledger(&self, owner: &Owner) -> Result<Vec<String>, StoreError> {
        let key = ledger_key(owner);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(t::PK, s(&key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        match out.item.as_ref().and_then(|i| i.get(t::PASSWORDS)) {
            None => Ok(Vec::new()),
            Some(AttributeValue::Ss(keys)) => Ok(keys.clone()),
            Some(_) => Err(StoreError::Malformed {
                key,
                problem: format!("{} is not a string set", t::PASSWORDS),
            }),
        }
    }

    /// The items with these keys (absent ones are left out), read with strong consistency:
    /// `BatchGetItem`, at most 100 keys a request, keys it could not serve in time asked for
    /// again a few times.
    async fn get_all(&self, keys: &[String]) -> Result<Vec<Item>, StoreError> {
        const BATCH: usize = 100;
        const ATTEMPTS: u32 = 5;
        let mut items = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH) {
            let keys = chunk
                .iter()
                .map(|k| HashMap::from([(t::PK.to_owned(), s(k))]))
                .collect();
            let mut wanted = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| build_error("password batch get", e))?,
            );
            let mut attempt = 0;
            while let Some(request) = wanted.take() {
                attempt += 1;
                if attempt > ATTEMPTS {
                    return Err(StoreError::Unavailable {
                        operation: "BatchGetItem",
                        message: "password keys still unprocessed after retries".into(),
                    });
                }
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| unavailable("BatchGetItem", e))?;
                items.extend(
                    out.responses
                        .unwrap_or_default()
                        .remove(&self.table)
                        .unwrap_or_default(),
                );
                wanted = out
                    .unprocessed_keys
                    .unwrap_or_default()
                    .remove(&self.table)
                    .filter(|k| !k.keys().is_empty());
                if wanted.is_some() {
                    tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
                }
            }
        }
        Ok(items)
    }

    /// The owner's passwords through the ledger: those outstanding at `now`, soonest expiry
    /// first, and the ledger's dead keys (the password is gone, used, expired, or, which never
    /// happens, not the owner's).
    async fn owned(
        &self,
        owner: &Owner,
        now: UnixTime,
    ) -> Result<(Vec<PasswordRecord>, Vec<String>), StoreError> {
        let keys = self.ledger(owner).await?;
        if keys.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut live = Vec::new();
        for item in self.get_all(&keys).await? {
            let record = record_from_item(&item)?;
            if &record.owner == owner && record.is_outstanding(now) {
                live.push(record);
            }
        }
        live.sort_by(|a, b| (a.expires_at, &a.short_id).cmp(&(b.expires_at, &b.short_id)));
        let live_keys: std::collections::HashSet<String> =
            live.iter().map(|r| r.digest.table_key()).collect();
        let dead = keys
            .into_iter()
            .filter(|k| !live_keys.contains(k))
            .collect();
        Ok((live, dead))
    }

    /// Removes dead keys from the owner's ledger (a mint adding a key meanwhile is unaffected).
    async fn prune(&self, owner: &Owner, dead: Vec<String>) -> Result<(), StoreError> {
        if dead.is_empty() {
            return Ok(());
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(t::PK, s(ledger_key(owner)))
            .update_expression("DELETE #pw :dead")
            // Without it, an update of a ledger that is gone would create an empty one.
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", t::PK)
            .expression_attribute_names("#pw", t::PASSWORDS)
            .expression_attribute_values(":dead", AttributeValue::Ss(dead))
            .send()
            .await;
        applied(result, "UpdateItem").map(|_| ())
    }

    /// Prunes after a read that has its answer already: a failure only leaves dead keys for
    /// the next read to prune, so it is logged, not returned.
    async fn prune_after_read(&self, owner: &Owner, dead: Vec<String>) {
        if let Err(e) = self.prune(owner, dead).await {
            tracing::warn!(error = %e, "could not prune the owner's ledger; the next read will");
        }
    }

    /// Deletes one password item if it is still the owner's and unconsumed; `Ok(false)` if not.
    async fn delete_outstanding(&self, owner: &Owner, key: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(t::PK, s(key))
            .condition_expression(
                "#team = :team AND #user = :user AND attribute_not_exists(#consumed)",
            )
            .expression_attribute_names("#team", t::TEAM_ID)
            .expression_attribute_names("#user", t::USER_ID)
            .expression_attribute_names("#consumed", t::CONSUMED_BY)
            .expression_attribute_values(":team", s(&owner.team_id))
            .expression_attribute_values(":user", s(&owner.user_id))
            .send()
            .await;
        applied(result, "DeleteItem")
    }
}

/// One try of a mint's transaction.
enum MintAttempt {
    /// Decided.
    Done(MintOutcome),
    /// The owner's ledger is full; nothing was written.
    LedgerFull,
}

impl DynamoStore {
    async fn mint_once(&self, mint: &Mint) -> Result<MintAttempt, StoreError> {
        let mut items = Vec::with_capacity(4);
        if !mint.trigger_claimed {
            let trigger = Put::builder()
                .table_name(&self.table)
                .set_item(Some(trigger_item(&mint.trigger)))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", t::PK)
                .build()
                .map_err(|e| build_error("trigger put", e))?;
            items.push(TransactWriteItem::builder().put(trigger).build());
        }
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
        let ledger = Update::builder()
            .table_name(&self.table)
            .key(t::PK, s(ledger_key(&mint.record.owner)))
            .update_expression("SET #ttl = :ttl, #kind = :kind ADD #pw :key")
            .condition_expression("attribute_not_exists(#pw) OR size(#pw) < :cap")
            .expression_attribute_names("#ttl", t::TTL)
            .expression_attribute_names("#kind", t::KIND)
            .expression_attribute_names("#pw", t::PASSWORDS)
            .expression_attribute_values(":ttl", n(mint.record.issued_at.plus(LEDGER_KEEP).0))
            .expression_attribute_values(":kind", s("ledger"))
            .expression_attribute_values(
                ":key",
                AttributeValue::Ss(vec![mint.record.digest.table_key()]),
            )
            .expression_attribute_values(
                ":cap",
                n(i64::try_from(self.ledger_cap).unwrap_or(i64::MAX)),
            )
            .build()
            .map_err(|e| build_error("ledger update", e))?;
        items.push(TransactWriteItem::builder().update(rate).build());
        items.push(TransactWriteItem::builder().put(password).build());
        items.push(TransactWriteItem::builder().update(ledger).build());
        // Last, so the conditions above keep their places in the cancellation reasons.
        if let Some(reply) = &mint.reply {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(reply_item(reply)))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", t::PK)
                .build()
                .map_err(|e| build_error("reply put", e))?;
            items.push(TransactWriteItem::builder().put(put).build());
        }

        let Some(reasons) = self.transact(&items).await? else {
            return Ok(MintAttempt::Done(MintOutcome::Minted));
        };
        // Which condition failed decides the answer (in this order of precedence).
        let failed: Vec<bool> = reasons.iter().map(condition_failed).collect();
        let rest = if mint.trigger_claimed {
            failed.as_slice()
        } else if failed.first() == Some(&true) {
            return Ok(MintAttempt::Done(MintOutcome::Replayed));
        } else {
            failed.get(1..).unwrap_or_default()
        };
        match rest {
            [true, ..] => {
                // Nothing was written. Unless the trigger is claimed already, claim it now, so
                // that replaying this refused request later (in the next window) mints nothing.
                if !mint.trigger_claimed {
                    self.claim_trigger(&mint.trigger).await?;
                }
                Ok(MintAttempt::Done(MintOutcome::RateLimited))
            }
            [false, true, ..] => Err(StoreError::Malformed {
                key: mint.record.digest.table_key(),
                problem: "a password with this digest already exists".into(),
            }),
            [false, false, true] => Ok(MintAttempt::LedgerFull),
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

impl MintStore for DynamoStore {
    async fn mint(&self, mint: &Mint) -> Result<MintOutcome, StoreError> {
        if let MintAttempt::Done(outcome) = self.mint_once(mint).await? {
            return Ok(outcome);
        }
        // The owner's ledger is full: prune the keys of passwords that are gone, used or
        // expired (the requester never ran `list`), and try once more.
        let owner = &mint.record.owner;
        let (_, dead) = self.owned(owner, mint.record.issued_at).await?;
        self.prune(owner, dead).await?;
        match self.mint_once(mint).await? {
            MintAttempt::Done(outcome) => Ok(outcome),
            MintAttempt::LedgerFull => Err(StoreError::Unavailable {
                operation: "TransactWriteItems",
                message: format!(
                    "the requester has {} outstanding passwords, the most one ledger holds",
                    self.ledger_cap
                ),
            }),
        }
    }
}

impl TriggerStore for DynamoStore {
    async fn claim_trigger(&self, claim: &TriggerClaim) -> Result<bool, StoreError> {
        // A one-item transaction rather than a conditional PutItem: the SDK retries an attempt
        // whose answer was late or lost, and a PutItem's retry would find its own claim and call
        // the requester's first request a replay. TransactWriteItems carries an idempotency
        // token (ClientRequestToken, filled in by the SDK), so its retry succeeds instead.
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(trigger_item(claim)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", t::PK)
            .build()
            .map_err(|e| build_error("trigger put", e))?;
        let items = [TransactWriteItem::builder().put(put).build()];
        match self.transact(&items).await? {
            None => Ok(true),
            Some(reasons) if reasons.iter().any(condition_failed) => Ok(false),
            Some(reasons) => Err(StoreError::Unavailable {
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

impl OutstandingStore for DynamoStore {
    async fn outstanding(
        &self,
        owner: &Owner,
        now: UnixTime,
    ) -> Result<Vec<Outstanding>, StoreError> {
        let (live, dead) = self.owned(owner, now).await?;
        self.prune_after_read(owner, dead).await;
        Ok(live.iter().map(Outstanding::from).collect())
    }

    async fn revoke(&self, owner: &Owner, id: &ShortId, now: UnixTime) -> Result<bool, StoreError> {
        let (live, mut dead) = self.owned(owner, now).await?;
        let mut revoked = false;
        for record in live.iter().filter(|r| &r.short_id == id) {
            let key = record.digest.table_key();
            // Deleted now, or used meanwhile: dead either way.
            revoked |= self.delete_outstanding(owner, &key).await?;
            dead.push(key);
        }
        self.prune_after_read(owner, dead).await;
        Ok(revoked)
    }

    async fn revoke_all(&self, owner: &Owner, now: UnixTime) -> Result<usize, StoreError> {
        let (live, mut dead) = self.owned(owner, now).await?;
        let mut revoked = 0;
        for record in &live {
            let key = record.digest.table_key();
            if self.delete_outstanding(owner, &key).await? {
                revoked += 1;
            }
            dead.push(key);
        }
        self.prune_after_read(owner, dead).await;
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

    async fn verdicts(
        &self,
        cycles: &[Cycle],
    ) -> Result<HashMap<String, VerdictRecord>, StoreError> {
        // BatchGetItem takes at most 100 keys; keys it could not serve in time come back as
        // UnprocessedKeys and are asked for again (a few times, then it is an error).
        const BATCH: usize = 100;
        const ATTEMPTS: u32 = 5;
        let mut found = HashMap::new();
        for chunk in cycles.chunks(BATCH) {
            let mut keys = Vec::with_capacity(chunk.len());
            for c in chunk {
                keys.push(HashMap::from([(t::PK.to_owned(), s(c.verdict_key()))]));
            }
            // BatchGetItem refuses a batch that names a key twice.
            keys.sort_by(|a, b| {
                a.get(t::PK)
                    .map(|v| v.as_s().ok())
                    .cmp(&b.get(t::PK).map(|v| v.as_s().ok()))
            });
            keys.dedup();
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| build_error("batch get", e))?,
            );
            let mut attempt = 0;
            while let Some(wanted) = request.take() {
                attempt += 1;
                if attempt > ATTEMPTS {
                    return Err(StoreError::Unavailable {
                        operation: "BatchGetItem",
                        message: "keys still unprocessed after retries".into(),
                    });
                }
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, wanted)
                    .send()
                    .await
                    .map_err(|e| unavailable("BatchGetItem", e))?;
                for item in out
                    .responses
                    .unwrap_or_default()
                    .remove(&self.table)
                    .unwrap_or_default()
                {
                    let v = verdict_from_item(&item)?;
                    found.insert(v.cycle.verdict_key(), v);
                }
                request = out
                    .unprocessed_keys
                    .unwrap_or_default()
                    .remove(&self.table)
                    .filter(|k| !k.keys().is_empty());
                if request.is_some() {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
            }
        }
        Ok(found)
    }

    async fn annotate(
        &self,
        cycle: &Cycle,
        short_id: &ShortId,
        issuer: &Owner,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(t::PK, s(cycle.verdict_key()))
            .update_expression("SET #short = :short, #team = :team, #user = :user")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", t::PK)
            .expression_attribute_names("#short", t::SHORT_ID)
            .expression_attribute_names("#team", t::TEAM_ID)
            .expression_attribute_names("#user", t::USER_ID)
            .expression_attribute_values(":short", s(short_id.as_str()))
            .expression_attribute_values(":team", s(&issuer.team_id))
            .expression_attribute_values(":user", s(&issuer.user_id))
            .send()
            .await;
        applied(result, "UpdateItem").map(|_| ())
    }

    async fn withdraw_exemption(&self, cycle: &Cycle) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(t::PK, s(cycle.verdict_key()))
            .condition_expression("#verdict = :exempt")
            .expression_attribute_names("#verdict", t::VERDICT)
            .expression_attribute_values(":exempt", s(Verdict::Exempt.kind()))
            .send()
            .await;
        applied(result, "DeleteItem")
    }

    async fn activation(&self) -> Result<UnixTime, StoreError> {
        let out = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| unavailable("DescribeTable", e))?;
        out.table
            .and_then(|t| t.creation_date_time)
            .map(|at| UnixTime(at.secs()))
            .ok_or_else(|| StoreError::Malformed {
                key: self.table.clone(),
                problem: "DescribeTable gave no creation time".into(),
            })
    }
}

impl AlertStore for DynamoStore {
    async fn claim_alert(
        &self,
        cycle: &Cycle,
        owner: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let claim = AlertClaim::by(owner, now);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(t::PK, s(cycle.verdict_key()))
            .update_expression("SET #owner = :me, #lease = :lease")
            .condition_expression(
                "attribute_exists(#due) AND (attribute_not_exists(#owner) OR #owner = :me \
                 OR #lease <= :now)",
            )
            .expression_attribute_names("#due", t::ALERT_DUE)
            .expression_attribute_names("#owner", t::ALERT_OWNER)
            .expression_attribute_names("#lease", t::ALERT_LEASE_UNTIL)
            .expression_attribute_values(":me", s(owner))
            .expression_attribute_values(":lease", n(claim.lease_until.0))
            .expression_attribute_values(":now", n(now.0))
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

    async fn alert_sent(&self, cycle: &Cycle, now: UnixTime) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(t::PK, s(cycle.verdict_key()))
            .update_expression("REMOVE #due, #owner, #lease SET #sent = :now")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", t::PK)
            .expression_attribute_names("#due", t::ALERT_DUE)
            .expression_attribute_names("#owner", t::ALERT_OWNER)
            .expression_attribute_names("#lease", t::ALERT_LEASE_UNTIL)
            .expression_attribute_names("#sent", t::ALERT_SENT_AT)
            .expression_attribute_values(":now", n(now.0))
            .send()
            .await;
        applied(result, "UpdateItem").map(|_| ())
    }

    async fn due_alerts(
        &self,
        now: UnixTime,
        limit: usize,
    ) -> Result<Vec<VerdictRecord>, StoreError> {
        // The index is sparse (only owed alerts carry `alert_due`) and ordered by lease: the
        // lapsed ones come first. A given-back alert keeps its lease but has no owner.
        self.walk_due(
            t::ALERTS_DUE_INDEX,
            t::ALERT_DUE,
            t::ALERT_DUE_VALUE,
            limit,
            |item| {
                let v = verdict_from_item(item)?;
                let free = v
                    .alert
                    .as_ref()
                    .is_some_and(|c| c.owner.is_none() || c.lease_until <= now);
                Ok(free.then_some(v))
            },
        )
        .await
    }
}

impl DynamoStore {
    /// Walks a sparse "due" index (`hash` = `value` on every item in it), page by page, keeping
    /// what `keep` returns until `limit` are kept. An error from `keep` ends the walk.
    async fn walk_due<T>(
        &self,
        index: &str,
        hash: &str,
        value: &str,
        limit: usize,
        mut keep: impl FnMut(&Item) -> Result<Option<T>, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut due = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression("#due = :due")
                .expression_attribute_names("#due", hash)
                .expression_attribute_values(":due", s(value))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("Query", e))?;
            for item in out.items() {
                if let Some(kept) = keep(item)? {
                    due.push(kept);
                    if due.len() >= limit {
                        return Ok(due);
                    }
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(due),
            }
        }
    }
}

impl VerdictHistory for DynamoStore {
    async fn recent_verdicts(
        &self,
        instance: &InstanceId,
        limit: usize,
    ) -> Result<Vec<VerdictRecord>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(t::INSTANCE_INDEX)
            .key_condition_expression("#instance = :instance")
            .expression_attribute_names("#instance", t::INSTANCE_ID)
            .expression_attribute_values(":instance", s(instance.as_str()))
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| unavailable("Query", e))?;
        out.items().iter().map(verdict_from_item).collect()
    }
}

impl ReplyStore for DynamoStore {
    async fn reply(&self, short_id: &ShortId) -> Result<Option<Reply>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(t::PK, s(reply_key(short_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        out.item().map(reply_from_item).transpose()
    }

    async fn take_post(
        &self,
        short_id: &ShortId,
        now: UnixTime,
        settles: bool,
    ) -> Result<bool, StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(t::PK, s(reply_key(short_id)))
            .expression_attribute_names("#posts", t::REPLY_POSTS)
            .expression_attribute_names("#until", t::REPLY_UNTIL)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(i64::from(REPLY_POSTS)))
            .expression_attribute_values(":now", n(now.0));
        update = if settles {
            update
                .update_expression("ADD #posts :one REMOVE #due, #due_at")
                .condition_expression("#posts < :max AND #until > :now AND attribute_exists(#due)")
                .expression_attribute_names("#due", t::REPLY_DUE)
                .expression_attribute_names("#due_at", t::REPLY_DUE_AT)
        } else {
            update
                .update_expression("ADD #posts :one")
                .condition_expression("#posts < :max AND #until > :now")
        };
        applied(update.send().await, "UpdateItem")
    }

    async fn release_post(&self, short_id: &ShortId, settled: bool) -> Result<(), StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(t::PK, s(reply_key(short_id)))
            .condition_expression("#posts > :zero")
            .expression_attribute_names("#posts", t::REPLY_POSTS)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":zero", n(0));
        update = if settled {
            update
                .update_expression("SET #posts = #posts - :one, #due = :due, #due_at = #expires")
                .expression_attribute_names("#due", t::REPLY_DUE)
                .expression_attribute_names("#due_at", t::REPLY_DUE_AT)
                .expression_attribute_names("#expires", t::EXPIRES_AT)
                .expression_attribute_values(":due", s(t::REPLY_DUE_VALUE))
        } else {
            update.update_expression("SET #posts = #posts - :one")
        };
        applied(update.send().await, "UpdateItem").map(|_| ())
    }

    async fn settle(&self, short_id: &ShortId) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(t::PK, s(reply_key(short_id)))
            .update_expression("REMOVE #due, #due_at")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", t::PK)
            .expression_attribute_names("#due", t::REPLY_DUE)
            .expression_attribute_names("#due_at", t::REPLY_DUE_AT)
            .send()
            .await;
        applied(result, "UpdateItem").map(|_| ())
    }

    async fn claim_forward(&self, key: &str, forget_after: UnixTime) -> Result<bool, StoreError> {
        // An UpdateItem, like every write of the follow-up role: it creates the record.
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(t::PK, s(format!("{}{key}", t::FORWARD_PREFIX)))
            .update_expression("SET #forwarded = :yes, #ttl = :ttl, #kind = :kind")
            .condition_expression("attribute_not_exists(#pk) OR #forwarded = :no")
            .expression_attribute_names("#pk", t::PK)
            .expression_attribute_names("#forwarded", t::FORWARDED)
            .expression_attribute_names("#ttl", t::TTL)
            .expression_attribute_names("#kind", t::KIND)
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(":no", AttributeValue::Bool(false))
            .expression_attribute_values(":ttl", n(forget_after.0))
            .expression_attribute_values(":kind", s("channel"));
        applied(update.send().await, "UpdateItem")
    }

    async fn release_forward(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(t::PK, s(format!("{}{key}", t::FORWARD_PREFIX)))
            .update_expression("SET #forwarded = :no")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", t::PK)
            .expression_attribute_names("#forwarded", t::FORWARDED)
            .expression_attribute_values(":no", AttributeValue::Bool(false))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| {
                if is_condition_failure(&e) {
                    Ok(())
                } else {
                    Err(unavailable("UpdateItem", e))
                }
            })
    }

    async fn due_replies(&self, _now: UnixTime, limit: usize) -> Result<Vec<Reply>, StoreError> {
        // One malformed reply is logged and passed over: it must not keep every other
        // requester's outcome untold.
        self.walk_due(
            t::REPLIES_DUE_INDEX,
            t::REPLY_DUE,
            t::REPLY_DUE_VALUE,
            limit,
            |item| match reply_from_item(item) {
                Ok(reply) => Ok(Some(reply)),
                Err(e) => {
                    tracing::warn!(error = %e, "a malformed reply item, passed over");
                    Ok(None)
                }
            },
        )
        .await
    }
}

/// The key of a password's reply item.
pub fn reply_key(short_id: &ShortId) -> String {
    format!("{}{}", t::REPLY_PREFIX, short_id.as_str())
}

/// The item for a reply: kept as long as its password's item.
pub fn reply_item(r: &Reply) -> Item {
    let mut item = HashMap::from([
        (t::PK.into(), s(reply_key(&r.short_id))),
        (t::KIND.into(), s("reply")),
        (t::SHORT_ID.into(), s(r.short_id.as_str())),
        (
            t::DIGEST.into(),
            AttributeValue::B(r.digest.as_bytes().to_vec().into()),
        ),
        (t::OWNER.into(), s(r.owner.key())),
        (t::TEAM_ID.into(), s(&r.owner.team_id)),
        (t::USER_ID.into(), s(&r.owner.user_id)),
        (t::EXPIRES_AT.into(), n(r.expires_at.0)),
        (t::REPLY_URL.into(), s(&r.url)),
        (t::REPLY_UNTIL.into(), n(r.until.0)),
        (t::REPLY_POSTS.into(), n(i64::from(r.posts))),
        (t::TTL.into(), n(r.expires_at.plus(t::PASSWORD_TTL_GRACE).0)),
    ]);
    if let Some(scope) = &r.scope {
        item.insert(t::SCOPE.into(), s(scope.as_str()));
    }
    if r.front != Front::Slack {
        item.insert(t::REPLY_FRONT.into(), s(r.front.as_str()));
    }
    if r.due {
        item.insert(t::REPLY_DUE.into(), s(t::REPLY_DUE_VALUE));
        item.insert(t::REPLY_DUE_AT.into(), n(r.expires_at.0));
    }
    item
}

/// Reads a reply back from its item, refusing anything malformed.
pub fn reply_from_item(item: &Item) -> Result<Reply, StoreError> {
    let r = ItemReader::of(item);
    Ok(Reply {
        short_id: r.short_id()?,
        digest: r.digest()?,
        owner: r.owner()?,
        scope: r.scope()?,
        expires_at: r.time(t::EXPIRES_AT)?,
        url: r.text(t::REPLY_URL)?,
        until: r.time(t::REPLY_UNTIL)?,
        posts: u32::try_from(r.number(t::REPLY_POSTS)?).map_err(|_| r.bad("bad posts"))?,
        due: item.contains_key(t::REPLY_DUE),
        front: match item.get(t::REPLY_FRONT) {
            None => Front::Slack,
            Some(v) => v
                .as_s()
                .ok()
                .and_then(|s| Front::parse(s))
                .ok_or_else(|| r.bad("bad chat"))?,
        },
    })
}

/// Reads the attributes a password and its reply share, refusing anything malformed: each error
/// names the item's key and what is wrong.
struct ItemReader<'a> {
    item: &'a Item,
    key: String,
}

impl<'a> ItemReader<'a> {
    fn of(item: &'a Item) -> Self {
        let key = item
            .get(t::PK)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default();
        Self { item, key }
    }

    fn bad(&self, problem: &str) -> StoreError {
        StoreError::Malformed {
            key: self.key.clone(),
            problem: problem.to_owned(),
        }
    }

    fn text(&self, name: &str) -> Result<String, StoreError> {
        self.item
            .get(name)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .ok_or_else(|| self.bad(&format!("{name} missing or not a string")))
    }

    fn number(&self, name: &str) -> Result<i64, StoreError> {
        self.item
            .get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| self.bad(&format!("{name} missing or not an integer")))
    }

    fn time(&self, name: &str) -> Result<UnixTime, StoreError> {
        self.number(name).map(UnixTime)
    }

    fn digest(&self) -> Result<Digest, StoreError> {
        self.item
            .get(t::DIGEST)
            .and_then(|v| v.as_b().ok())
            .and_then(|b| Digest::from_slice(b.as_ref()))
            .ok_or_else(|| self.bad("digest missing or not 32 bytes"))
    }

    fn short_id(&self) -> Result<ShortId, StoreError> {
        ShortId::parse(&self.text(t::SHORT_ID)?).ok_or_else(|| self.bad("bad short_id"))
    }

    fn owner(&self) -> Result<Owner, StoreError> {
        Ok(Owner {
            team_id: self.text(t::TEAM_ID)?,
            user_id: self.text(t::USER_ID)?,
        })
    }

    /// The instance it is for; `None` when the attribute is absent (unscoped).
    fn scope(&self) -> Result<Option<InstanceId>, StoreError> {
        match self.item.get(t::SCOPE) {
            None => Ok(None),
            Some(v) => v
                .as_s()
                .ok()
                .and_then(|s| InstanceId::parse(s))
                .map(Some)
                .ok_or_else(|| self.bad("bad scope")),
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
        (
            t::ALERT_OWNER,
            v.alert.as_ref().and_then(|c| c.owner.clone()),
        ),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            item.insert(name.into(), s(value));
        }
    }
    if let Some(place) = &v.place {
        item.insert(t::ACCOUNT.into(), s(&place.account));
        item.insert(t::REGION.into(), s(&place.region));
    }
    if let Some(claim) = &v.alert {
        item.insert(t::ALERT_DUE.into(), s(t::ALERT_DUE_VALUE));
        item.insert(t::ALERT_LEASE_UNTIL.into(), n(claim.lease_until.0));
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
        place: match (text(t::ACCOUNT), text(t::REGION)) {
            (Some(account), Some(region)) => Some(Place { account, region }),
            _ => None,
        },
        retain_until: number(t::TTL).unwrap_or(UnixTime(0)),
        alert: text(t::ALERT_DUE).map(|_| AlertClaim {
            owner: text(t::ALERT_OWNER),
            lease_until: number(t::ALERT_LEASE_UNTIL).unwrap_or(UnixTime(0)),
        }),
    })
}

fn condition_failed(r: &CancellationReason) -> bool {
    r.code() == Some("ConditionalCheckFailed")
}

/// The table key of an owner's ledger: the keys of the owner's passwords.
pub fn ledger_key(owner: &Owner) -> String {
    format!("{}{}", t::OWNER_PREFIX, owner.key())
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
    let r = ItemReader::of(item);
    Ok(PasswordRecord {
        short_id: r.short_id()?,
        digest: r.digest()?,
        owner: r.owner()?,
        channel_id: r.text(t::CHANNEL_ID)?,
        scope: r.scope()?,
        issued_at: r.time(t::ISSUED_AT)?,
        expires_at: r.time(t::EXPIRES_AT)?,
        consumed_by: item
            .get(t::CONSUMED_BY)
            .and_then(|v| v.as_s().ok())
            .cloned(),
    })
}

/// The key of an instance's call item.
pub fn call_key(instance: &InstanceId) -> String {
    format!("{}{instance}", t::CALL_PREFIX)
}

fn caller_json(caller: &Caller) -> AttributeValue {
    s(serde_json::to_string(caller).unwrap_or_else(|_| "{}".into()))
}

fn caller_from(item: &Item) -> Option<Caller> {
    item.get(t::CALLER)
        .and_then(|v| v.as_s().ok())
        .and_then(|json| serde_json::from_str(json).ok())
}

impl CallerLookup for DynamoStore {
    async fn call_for(
        &self,
        instance: &InstanceId,
    ) -> Result<Option<(Caller, UnixTime)>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(t::PK, s(call_key(instance)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        let reader = ItemReader::of(item);
        let caller = caller_from(item).ok_or_else(|| reader.bad("caller missing or not JSON"))?;
        Ok(Some((caller, reader.time(t::CALL_TIME)?)))
    }

    async fn claim_tell(
        &self,
        cycle: &Cycle,
        caller: &Caller,
        claim: TellClaim,
    ) -> Result<bool, StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(t::PK, s(cycle.verdict_key()))
            .update_expression("SET #told = :until, #caller = if_not_exists(#caller, :caller)")
            .expression_attribute_names("#pk", t::PK)
            .expression_attribute_names("#told", t::CALLER_TOLD)
            .expression_attribute_names("#caller", t::CALLER)
            .expression_attribute_values(":caller", caller_json(caller));
        let update = match claim {
            TellClaim::InAlert => update
                .condition_expression("attribute_exists(#pk) AND attribute_not_exists(#told)")
                .expression_attribute_values(":until", n(super::TOLD.0)),
            TellClaim::After { now, until } => update
                .condition_expression(
                    "attribute_exists(#pk) AND attribute_not_exists(#due) \
                     AND (attribute_not_exists(#told) OR #told < :now)",
                )
                .expression_attribute_names("#due", t::ALERT_DUE)
                .expression_attribute_values(":now", n(now.0))
                .expression_attribute_values(":until", n(until.0)),
        };
        applied(update.send().await, "UpdateItem")
    }
}

impl CallerStore for DynamoStore {
    async fn put_call(
        &self,
        instance: &InstanceId,
        caller: &Caller,
        at: UnixTime,
        retain_until: UnixTime,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(t::PK, s(call_key(instance)))
            .item(t::KIND, s("call"))
            .item(t::CALLER, caller_json(caller))
            .item(t::CALL_TIME, n(at.0))
            .item(t::TTL, n(retain_until.0))
            .condition_expression("attribute_not_exists(#pk) OR #at <= :at")
            .expression_attribute_names("#pk", t::PK)
            .expression_attribute_names("#at", t::CALL_TIME)
            .expression_attribute_values(":at", n(at.0))
            .send()
            .await;
        // A newer call is kept already: nothing to do.
        applied(result, "PutItem").map(|_| ())
    }

    async fn attribute(
        &self,
        cycle: &Cycle,
        caller: &Caller,
    ) -> Result<Option<Attributed>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(t::PK, s(cycle.verdict_key()))
            .update_expression("SET #caller = if_not_exists(#caller, :caller)")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", t::PK)
            .expression_attribute_names("#caller", t::CALLER)
            .expression_attribute_values(":caller", caller_json(caller))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out.attributes().cloned().unwrap_or_default();
                Ok(Some(Attributed {
                    verdict: verdict_from_item(&item)?,
                    told: item
                        .get(t::CALLER_TOLD)
                        .and_then(|v| v.as_n().ok())
                        .and_then(|v| v.parse().ok())
                        .map(UnixTime),
                }))
            }
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(unavailable("UpdateItem", e)),
        }
    }

    async fn confirm_tell(&self, cycle: &Cycle) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(t::PK, s(cycle.verdict_key()))
            .update_expression("SET #told = :told")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", t::PK)
            .expression_attribute_names("#told", t::CALLER_TOLD)
            .expression_attribute_values(":told", n(super::TOLD.0))
            .send()
            .await;
        applied(result, "UpdateItem").map(|_| ())
    }

    async fn release_tell(&self, cycle: &Cycle) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(t::PK, s(cycle.verdict_key()))
            .update_expression("REMOVE #told")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", t::PK)
            .expression_attribute_names("#told", t::CALLER_TOLD)
            .send()
            .await;
        applied(result, "UpdateItem").map(|_| ())
    }
}

impl ResponseStore for DynamoStore {
    async fn claim_response(
        &self,
        principal: &str,
        call_at: UnixTime,
        now: UnixTime,
        pending_until: UnixTime,
        retain_until: UnixTime,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(t::PK, s(format!("{}{principal}", t::RESPONSE_PREFIX)))
            .item(t::KIND, s("response"))
            .item(t::ACTED_AT, n(now.0))
            .item(t::PENDING_UNTIL, n(pending_until.0))
            .item(t::TTL, n(retain_until.0))
            .condition_expression("attribute_not_exists(#pk) OR #acted < :call OR #pending < :now")
            .expression_attribute_names("#pk", t::PK)
            .expression_attribute_names("#acted", t::ACTED_AT)
            .expression_attribute_names("#pending", t::PENDING_UNTIL)
            .expression_attribute_values(":call", n(call_at.0))
            .expression_attribute_values(":now", n(now.0))
            .send()
            .await;
        applied(result, "PutItem")
    }

    async fn confirm_response(&self, principal: &str, at: UnixTime) -> Result<(), StoreError> {
        self.settle_response(principal, at, "REMOVE #pending").await
    }

    async fn release_response(&self, principal: &str, at: UnixTime) -> Result<(), StoreError> {
        self.settle_response(principal, at, "SET #pending = :lapsed")
            .await
    }
}

impl DynamoStore {
    /// Confirms or gives back the response claim taken at `at` (nothing when another took it).
    async fn settle_response(
        &self,
        principal: &str,
        at: UnixTime,
        update: &str,
    ) -> Result<(), StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(t::PK, s(format!("{}{principal}", t::RESPONSE_PREFIX)))
            .update_expression(update)
            .condition_expression("#acted = :at")
            .expression_attribute_names("#acted", t::ACTED_AT)
            .expression_attribute_names("#pending", t::PENDING_UNTIL)
            .expression_attribute_values(":at", n(at.0));
        if update.contains(":lapsed") {
            request = request.expression_attribute_values(":lapsed", n(0));
        }
        applied(request.send().await, "UpdateItem").map(|_| ())
    }
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
                place: None,
                retain_until: UnixTime(9_999),
                alert: None,
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
