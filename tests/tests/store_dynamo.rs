//! The password store against the moto emulator, through the real AWS SDK.
//!
//! Each test works with its own freshly named users, so tests share the one local table
//! without seeing each other's items.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use ec2pass_shared::digest::Digest;
use ec2pass_shared::ids::{InstanceId, Owner};
use ec2pass_shared::password::{Password, new_short_id};
use ec2pass_shared::store::dynamo::{DynamoStore, ledger_key};
use ec2pass_shared::store::memory::MemoryStore;
use ec2pass_shared::store::{
    Mint, MintOutcome, MintStore, OutstandingStore, PasswordLookup, PasswordRecord, RateWindow,
    TriggerClaim, TriggerStore,
};
use ec2pass_shared::time::UnixTime;
use ec2pass_tests::{Local, now, scan_all, unique};

struct Fixture {
    store: DynamoStore,
    ddb: aws_sdk_dynamodb::Client,
    owner: Owner,
    now: UnixTime,
}

async fn fixture() -> Fixture {
    let local = Local::load();
    let aws = local.aws().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    Fixture {
        store: DynamoStore::new(ddb.clone(), local.table()),
        ddb,
        owner: Owner {
            team_id: "T0TEST".into(),
            user_id: unique("U"),
        },
        now: UnixTime(now()),
    }
}

impl Fixture {
    /// A mint for `owner` of a fresh password, issued at `issued_at` for `lifetime`.
    fn mint_for(
        &self,
        owner: &Owner,
        scope: Option<&str>,
        issued_at: UnixTime,
        lifetime: u64,
    ) -> (Password, Mint) {
        let password = Password::generate();
        let record = PasswordRecord {
            short_id: new_short_id(),
            digest: password.digest(),
            owner: owner.clone(),
            channel_id: "C0TEST".into(),
            scope: scope.and_then(InstanceId::parse),
            issued_at,
            expires_at: issued_at.plus(Duration::from_secs(lifetime)),
            consumed_by: None,
        };
        let mint = Mint {
            trigger: TriggerClaim {
                trigger_id: unique("trigger."),
                forget_after: issued_at.plus(Duration::from_secs(660)),
            },
            trigger_claimed: false,
            reply: None,
            rate: RateWindow {
                owner: owner.clone(),
                window: issued_at.0 / 3600,
                limit: 10,
                forget_after: issued_at.plus(Duration::from_secs(7200)),
            },
            record,
        };
        (password, mint)
    }

    async fn mint(&self, scope: Option<&str>, lifetime: u64) -> (Password, Mint) {
        let (password, mint) = self.mint_for(&self.owner, scope, self.now, lifetime);
        assert_eq!(self.store.mint(&mint).await.ok(), Some(MintOutcome::Minted));
        (password, mint)
    }

    /// The password keys in the owner's ledger, and whether the ledger has a TTL.
    async fn ledger(&self, owner: &Owner) -> (Vec<String>, bool) {
        let item = self
            .ddb
            .get_item()
            .table_name(self.store.table())
            .key("pk", AttributeValue::S(ledger_key(owner)))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem")
            .item
            .unwrap_or_default();
        let mut keys = item
            .get("passwords")
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default();
        keys.sort();
        (keys, item.contains_key("ttl"))
    }

    /// Marks a password consumed, as the guard will.
    async fn consume(&self, digest: &Digest, cycle: &str) {
        self.ddb
            .update_item()
            .table_name(self.store.table())
            .key("pk", AttributeValue::S(digest.table_key()))
            .update_expression("SET consumed_by = :c")
            .expression_attribute_values(":c", AttributeValue::S(cycle.into()))
            .send()
            .await
            .expect("UpdateItem");
    }
}

#[tokio::test]
async fn a_stored_password_reads_back_by_its_digest() {
    // Given a password minted for an instance
    let f = fixture().await;
    let (password, mint) = f.mint(Some("i-0123456789abcdef0"), 900).await;
    // When it is looked up by the digest of what an operator would paste
    let pasted = Password::from_tag(&password.display().to_uppercase()).map(|p| p.digest());
    let found = f
        .store
        .find(&pasted.unwrap_or(Digest::of(b"x")))
        .await
        .expect("GetItem");
    // Then the very record comes back, and its digest matches in constant time
    assert_eq!(found.as_ref(), Some(&mint.record));
    assert!(found.is_some_and(|r| r.digest.ct_eq(&password.digest())));
    // And an unknown digest is simply absent
    assert_eq!(
        f.store.find(&Password::generate().digest()).await.ok(),
        Some(None)
    );
}

#[tokio::test]
async fn list_shows_only_the_requesters_unexpired_unused_passwords() {
    // Given two live passwords, one expired, one consumed, and another user's
    let f = fixture().await;
    let (_, a) = f.mint(Some("i-0123456789abcdef0"), 900).await;
    let (_, b) = f.mint(None, 1800).await;
    let (_, expired) = f.mint_for(&f.owner, None, f.now.minus(Duration::from_secs(3600)), 600);
    assert_eq!(f.store.mint(&expired).await.ok(), Some(MintOutcome::Minted));
    let (_, used) = f.mint(None, 900).await;
    f.consume(
        &used.record.digest,
        "i-0123456789abcdef0#2026-11-21T10:00:00Z",
    )
    .await;
    let other = Owner {
        team_id: f.owner.team_id.clone(),
        user_id: unique("U"),
    };
    let (_, theirs) = f.mint_for(&other, None, f.now, 900);
    assert_eq!(f.store.mint(&theirs).await.ok(), Some(MintOutcome::Minted));

    // When the requester lists
    let list = f.store.outstanding(&f.owner, f.now).await.expect("Query");

    // Then exactly the two live ones show, soonest expiry first, with no secret in them
    let ids: Vec<_> = list.iter().map(|o| o.short_id.clone()).collect();
    assert_eq!(
        ids,
        vec![a.record.short_id.clone(), b.record.short_id.clone()]
    );
    assert_eq!(list[0].scope, a.record.scope);
    assert_eq!(list[1].scope, None);
    assert_eq!(list[0].expires_at, a.record.expires_at);
}

#[tokio::test]
async fn revoke_withdraws_one_or_all_of_the_requesters_own() {
    let f = fixture().await;
    let (_, a) = f.mint(None, 900).await;
    let (_, b) = f.mint(None, 900).await;
    let (_, c) = f.mint(None, 900).await;
    let stranger = Owner {
        team_id: f.owner.team_id.clone(),
        user_id: unique("U"),
    };

    // Someone else cannot revoke it
    assert_eq!(
        f.store
            .revoke(&stranger, &a.record.short_id, f.now)
            .await
            .ok(),
        Some(false)
    );
    assert_eq!(f.store.revoke_all(&stranger, f.now).await.ok(), Some(0));
    // The owner revokes one: it is gone from the table, not just from the list
    assert_eq!(
        f.store
            .revoke(&f.owner, &a.record.short_id, f.now)
            .await
            .ok(),
        Some(true)
    );
    assert_eq!(f.store.find(&a.record.digest).await.ok(), Some(None));
    assert_eq!(
        f.store
            .revoke(&f.owner, &a.record.short_id, f.now)
            .await
            .ok(),
        Some(false)
    );
    // A consumed one is not the requester's to revoke any more (it is the audit trail)
    f.consume(&c.record.digest, "cycle").await;
    // Revoke all takes the rest
    assert_eq!(f.store.revoke_all(&f.owner, f.now).await.ok(), Some(1));
    assert_eq!(f.store.find(&b.record.digest).await.ok(), Some(None));
    assert!(
        f.store
            .find(&c.record.digest)
            .await
            .ok()
            .flatten()
            .is_some()
    );
    assert_eq!(
        f.store.outstanding(&f.owner, f.now).await.ok(),
        Some(vec![])
    );
}

#[tokio::test]
async fn the_rate_limit_is_exact_at_its_boundary_even_under_concurrency() {
    // Given a limit of 10 per hour
    let f = fixture().await;
    // When 16 mints race in the same window
    let mut racing = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (store, (_, mint)) = (f.store.clone(), f.mint_for(&f.owner, None, f.now, 900));
        racing.spawn(async move { store.mint(&mint).await });
    }
    let outcomes: Vec<_> = racing.join_all().await;
    // Then exactly 10 are minted and 6 refused, and exactly 10 passwords are stored
    let minted = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(MintOutcome::Minted)))
        .count();
    let limited = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(MintOutcome::RateLimited)))
        .count();
    assert_eq!((minted, limited), (10, 6), "{outcomes:?}");
    assert_eq!(
        f.store
            .outstanding(&f.owner, f.now)
            .await
            .map(|l| l.len())
            .ok(),
        Some(10)
    );
    // And the next window starts afresh
    let next = f.now.plus(Duration::from_secs(3600));
    let (_, mut later) = f.mint_for(&f.owner, None, next, 900);
    later.rate.window = next.0 / 3600;
    assert_eq!(f.store.mint(&later).await.ok(), Some(MintOutcome::Minted));
}

#[tokio::test]
async fn a_refused_mint_still_claims_its_trigger() {
    // Given a user at the limit
    let f = fixture().await;
    for _ in 0..10 {
        f.mint(None, 900).await;
    }
    let (_, refused) = f.mint_for(&f.owner, None, f.now, 900);
    assert_eq!(
        f.store.mint(&refused).await.ok(),
        Some(MintOutcome::RateLimited)
    );
    // Then replaying the refused request in a later window is still a replay
    let mut replay = refused.clone();
    replay.rate.window += 1;
    assert_eq!(
        f.store.mint(&replay).await.ok(),
        Some(MintOutcome::Replayed)
    );
}

#[tokio::test]
async fn a_replayed_trigger_writes_nothing() {
    let f = fixture().await;
    let (_, first) = f.mint(None, 900).await;
    let (_, mut second) = f.mint_for(&f.owner, None, f.now, 900);
    second.trigger = first.trigger.clone();
    assert_eq!(
        f.store.mint(&second).await.ok(),
        Some(MintOutcome::Replayed)
    );
    assert_eq!(f.store.find(&second.record.digest).await.ok(), Some(None));
    assert_eq!(
        f.store.claim_trigger(&first.trigger).await.ok(),
        Some(false)
    );
    let fresh = TriggerClaim {
        trigger_id: unique("trigger."),
        forget_after: f.now,
    };
    assert_eq!(f.store.claim_trigger(&fresh).await.ok(), Some(true));
    assert_eq!(f.store.claim_trigger(&fresh).await.ok(), Some(false));
}

#[tokio::test]
async fn an_expired_item_not_yet_deleted_by_ttl_is_treated_as_expired() {
    // Given a password that expired a minute ago; DynamoDB's TTL has not deleted it (it may take
    // up to two days), and moto does not delete it either
    let f = fixture().await;
    let (_, m) = f.mint_for(&f.owner, None, f.now.minus(Duration::from_secs(960)), 900);
    assert_eq!(f.store.mint(&m).await.ok(), Some(MintOutcome::Minted));
    let stored = f.store.find(&m.record.digest).await.ok().flatten();
    assert!(stored.is_some(), "the item is still in the table");
    // Then every read treats it as expired
    assert!(stored.is_some_and(|r| r.is_expired(f.now) && !r.is_outstanding(f.now)));
    assert_eq!(
        f.store.outstanding(&f.owner, f.now).await.ok(),
        Some(vec![])
    );
    assert_eq!(
        f.store
            .revoke(&f.owner, &m.record.short_id, f.now)
            .await
            .ok(),
        Some(false)
    );
    // And at the instant of expiry it is already expired
    assert!(m.record.is_expired(m.record.expires_at));
    assert!(
        !m.record
            .is_expired(m.record.expires_at.minus(Duration::from_secs(1)))
    );
}

#[tokio::test]
async fn the_table_holds_digests_never_plaintexts() {
    let f = fixture().await;
    let (password, _) = f.mint(Some("i-0123456789abcdef0"), 900).await;
    let everything: String = scan_all(&f.ddb, f.store.table())
        .await
        .iter()
        .map(ec2pass_tests::item_text)
        .collect();
    assert!(
        everything.contains(&password.digest().table_key()),
        "the scan sees the item"
    );
    assert!(!everything.contains(password.canonical()));
    assert!(!everything.contains(&password.display()));
}

/// Mints, then at once lists and revokes all: the password is found both times.
async fn mint_then_list_and_revoke_all<S>(store: &S, mint: &Mint, now: UnixTime)
where
    S: MintStore + OutstandingStore + PasswordLookup,
{
    let owner = &mint.record.owner;
    let listed = store.outstanding(owner, now).await.expect("list");
    assert_eq!(
        listed.iter().map(|o| &o.short_id).collect::<Vec<_>>(),
        vec![&mint.record.short_id]
    );
    assert_eq!(store.revoke_all(owner, now).await.ok(), Some(1));
    assert_eq!(store.find(&mint.record.digest).await.ok(), Some(None));
    assert_eq!(store.outstanding(owner, now).await.ok(), Some(vec![]));
}

#[tokio::test]
async fn revoke_all_finds_a_password_minted_a_moment_before_though_the_index_lags() {
    // Given a password just minted, and an owner index that has not caught up with it yet.
    // moto updates indexes synchronously, so the lag is made: the item's index key is removed,
    // which takes it out of the sparse by-owner index, as a Query sees an index that lags.
    let f = fixture().await;
    let (_, m) = f.mint(Some("i-0123456789abcdef0"), 900).await;
    f.ddb
        .update_item()
        .table_name(f.store.table())
        .key("pk", AttributeValue::S(m.record.digest.table_key()))
        .update_expression("REMOVE #owner")
        .expression_attribute_names("#owner", "owner")
        .send()
        .await
        .expect("UpdateItem");
    // When the requester lists and revokes all at once, then they find it: the ledger, read
    // with strong consistency, lists it
    assert_eq!(
        f.ledger(&f.owner).await,
        (vec![m.record.digest.table_key()], true)
    );
    mint_then_list_and_revoke_all(&f.store, &m, f.now).await;
    // And the revoked key has left the ledger
    assert_eq!(f.ledger(&f.owner).await.0, Vec::<String>::new());
}

#[tokio::test]
async fn the_memory_store_finds_a_password_minted_a_moment_before_too() {
    let f = fixture().await;
    let store = MemoryStore::new();
    let (_, m) = f.mint_for(&f.owner, None, f.now, 900);
    assert_eq!(store.mint(&m).await.ok(), Some(MintOutcome::Minted));
    mint_then_list_and_revoke_all(&store, &m, f.now).await;
}

#[tokio::test]
async fn the_ledger_is_pruned_of_dead_passwords_and_a_full_one_makes_room() {
    // Given a ledger that holds three passwords at most, full of live ones
    let f = fixture().await;
    let store = f.store.clone().with_ledger_cap(3);
    let mut minted = Vec::new();
    for _ in 0..3 {
        let (_, m) = f.mint_for(&f.owner, None, f.now, 900);
        assert_eq!(store.mint(&m).await.ok(), Some(MintOutcome::Minted));
        minted.push(m);
    }
    // Then a fourth mint is refused, and nothing of it is stored
    let (_, fourth) = f.mint_for(&f.owner, None, f.now, 900);
    assert!(store.mint(&fourth).await.is_err());
    assert_eq!(store.find(&fourth.record.digest).await.ok(), Some(None));
    // When one password is used by the guard, the next mint prunes it from the ledger and fits
    f.consume(&minted[1].record.digest, "cycle").await;
    let (_, fifth) = f.mint_for(&f.owner, None, f.now, 900);
    assert_eq!(store.mint(&fifth).await.ok(), Some(MintOutcome::Minted));
    let mut expected = vec![
        minted[0].record.digest.table_key(),
        minted[2].record.digest.table_key(),
        fifth.record.digest.table_key(),
    ];
    expected.sort();
    assert_eq!(f.ledger(&f.owner).await, (expected, true));
    // And a password that expired is pruned by `list`, which shows only the live ones
    let (_, old) = f.mint_for(&f.owner, None, f.now.minus(Duration::from_secs(3600)), 600);
    store
        .revoke(&f.owner, &minted[0].record.short_id, f.now)
        .await
        .expect("revoke");
    assert_eq!(store.mint(&old).await.ok(), Some(MintOutcome::Minted));
    let listed = store.outstanding(&f.owner, f.now).await.expect("list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    let mut expected = vec![
        minted[2].record.digest.table_key(),
        fifth.record.digest.table_key(),
    ];
    expected.sort();
    assert_eq!(f.ledger(&f.owner).await.0, expected);
}

#[tokio::test]
async fn a_trigger_the_issuer_claimed_already_is_not_a_replay_of_its_own_mint() {
    // Given a request whose trigger the issuer claimed while it looked the instance up
    let f = fixture().await;
    let (_, mut m) = f.mint_for(&f.owner, Some("i-0123456789abcdef0"), f.now, 900);
    assert_eq!(f.store.claim_trigger(&m.trigger).await.ok(), Some(true));
    // When it mints saying so, then it mints (the transaction does not claim it again)
    m.trigger_claimed = true;
    assert_eq!(f.store.mint(&m).await.ok(), Some(MintOutcome::Minted));
    assert!(
        f.store
            .find(&m.record.digest)
            .await
            .ok()
            .flatten()
            .is_some()
    );
    // And a mint that would claim that trigger itself is a replay
    let (_, mut again) = f.mint_for(&f.owner, None, f.now, 900);
    again.trigger = m.trigger.clone();
    assert_eq!(f.store.mint(&again).await.ok(), Some(MintOutcome::Replayed));
}

#[tokio::test]
async fn a_malformed_reply_item_is_passed_over_not_keeping_every_other_outcome_untold() {
    use ec2pass_shared::store::{REPLY_FOR, Reply, ReplyStore};
    let f = fixture().await;
    // Given a reply item without its URL, due in the index (written by anyone, or by an older
    // version), and a well-formed reply
    let bad_key = unique("reply#bad");
    f.ddb
        .put_item()
        .table_name(Local::load().table())
        .item("pk", AttributeValue::S(bad_key.clone()))
        .item("reply_due", AttributeValue::S("due".into()))
        .item("reply_due_at", AttributeValue::N("1".into()))
        .send()
        .await
        .expect("PutItem");
    let (_, mut mint) = f.mint_for(&f.owner, Some("i-0123456789abcdef0"), f.now, 600);
    let r = mint.record.clone();
    mint.reply = Some(Reply {
        short_id: r.short_id.clone(),
        digest: r.digest,
        owner: r.owner.clone(),
        scope: r.scope.clone(),
        expires_at: r.expires_at,
        url: "v1:00".into(),
        until: r.issued_at.plus(REPLY_FOR),
        posts: 0,
        due: true,
        front: Default::default(),
    });
    assert_eq!(f.store.mint(&mint).await.ok(), Some(MintOutcome::Minted));
    // Then the schedule's read still finds the good one
    let due = f.store.due_replies(f.now, 100_000).await;
    f.ddb
        .delete_item()
        .table_name(Local::load().table())
        .key("pk", AttributeValue::S(bad_key))
        .send()
        .await
        .expect("DeleteItem");
    let due = due.expect("due replies, the malformed one passed over");
    assert!(due.iter().any(|d| d.short_id == r.short_id), "{due:?}");
}

/// The guard's side of the table: verdicts, owed alerts and the activation time.
mod guard_side {
    use std::collections::HashSet;
    use std::time::Duration;

    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    use ec2pass_shared::ids::InstanceId;
    use ec2pass_shared::store::dynamo::DynamoStore;
    use ec2pass_shared::store::{
        AlertStore, Recorded, STATUS_VERDICTS, VerdictHistory, VerdictStore,
    };
    use ec2pass_shared::table;
    use ec2pass_shared::time::UnixTime;
    use ec2pass_shared::verdict::{
        ALERT_LEASE, AlertClaim, Cycle, DenyReason, Verdict, VerdictRecord,
    };
    use ec2pass_tests::{Local, delete_items, now, unique};

    struct Fixture {
        store: DynamoStore,
        ddb: aws_sdk_dynamodb::Client,
        table: String,
        now: UnixTime,
        written: Vec<String>,
    }

    async fn fixture() -> Fixture {
        let local = Local::load();
        let aws = local.aws().await;
        let ddb = aws_sdk_dynamodb::Client::new(&aws);
        Fixture {
            store: DynamoStore::new(ddb.clone(), local.table()),
            ddb,
            table: local.table(),
            now: UnixTime(now()),
            written: Vec::new(),
        }
    }

    /// An instance id no other test uses.
    fn fresh_instance() -> InstanceId {
        let hex = unique("").to_ascii_lowercase();
        let tail = &hex[hex.len().saturating_sub(17)..];
        InstanceId::parse(&format!("i-{tail:0>17}")).expect("a well-formed instance id")
    }

    fn cycle(launch_time: UnixTime) -> Cycle {
        Cycle {
            instance: fresh_instance(),
            launch_time,
        }
    }

    fn verdict(
        cycle: &Cycle,
        verdict: Verdict,
        now: UnixTime,
        alert: Option<AlertClaim>,
    ) -> VerdictRecord {
        VerdictRecord {
            cycle: cycle.clone(),
            verdict,
            short_id: None,
            issuer: None,
            password_key: None,
            decided_at: now,
            event_id: unique("evt-"),
            place: None,
            retain_until: now.plus(Duration::from_secs(90 * 86_400)),
            alert,
        }
    }

    impl Fixture {
        /// Records a verdict, which must be the cycle's first, and remembers its key.
        async fn record(&mut self, v: &VerdictRecord) {
            assert_eq!(self.store.record(v).await.ok(), Some(Recorded::Ours));
            self.written.push(v.cycle.verdict_key());
        }

        /// The keys of `ours` that the sweep's query finds due at `at`, in the order it gives.
        async fn due(&self, at: UnixTime, ours: &[&Cycle]) -> Vec<String> {
            let ours: HashSet<String> = ours.iter().map(|c| c.verdict_key()).collect();
            self.store
                .due_alerts(at, 100_000)
                .await
                .expect("due alerts")
                .into_iter()
                .map(|v| v.cycle.verdict_key())
                .filter(|k| ours.contains(k))
                .collect()
        }

        /// Whether the verdict's item is in the sparse `alerts-due` index at all, read straight
        /// from the index (not through the store).
        async fn indexed(&self, cycle: &Cycle) -> bool {
            let mut start = None;
            loop {
                let page = self
                    .ddb
                    .query()
                    .table_name(&self.table)
                    .index_name(table::ALERTS_DUE_INDEX)
                    .key_condition_expression("#due = :due")
                    .expression_attribute_names("#due", table::ALERT_DUE)
                    .expression_attribute_values(
                        ":due",
                        AttributeValue::S(table::ALERT_DUE_VALUE.into()),
                    )
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .expect("Query on the alerts-due index");
                let key = cycle.verdict_key();
                if page
                    .items()
                    .iter()
                    .any(|i| i.get(table::PK).and_then(|v| v.as_s().ok()) == Some(&key))
                {
                    return true;
                }
                match page.last_evaluated_key {
                    Some(k) if !k.is_empty() => start = Some(k),
                    _ => return false,
                }
            }
        }

        /// Leaves the shared table as it was.
        async fn clean_up(self) {
            delete_items(&self.ddb, &self.table, &self.written).await;
        }
    }

    #[tokio::test]
    async fn verdicts_reads_more_than_a_hundred_cycles_in_batches() {
        // Given 150 cycles with a verdict, of every kind, and 30 without one
        let mut f = fixture().await;
        let kinds = [
            Verdict::Allow,
            Verdict::Exempt,
            Verdict::Deny(DenyReason::Missing),
            Verdict::Deny(DenyReason::WrongInstance),
        ];
        let mut cycles = Vec::new();
        let mut recorded = Vec::new();
        for n in 0..150 {
            let c = cycle(UnixTime(f.now.0 - 60));
            let mut v = verdict(&c, kinds[n % kinds.len()], f.now, None);
            // A hub's verdicts say where the start happened; earlier ones do not.
            if n % 2 == 0 {
                v.place = Some(ec2pass_shared::org::Place::new("222222222222", "eu-west-1"));
            }
            f.record(&v).await;
            cycles.push(c);
            recorded.push(v);
        }
        let undecided: Vec<Cycle> = (0..30).map(|_| cycle(UnixTime(f.now.0 - 60))).collect();
        cycles.splice(70..70, undecided.iter().cloned());

        // When the sweep reads them all at once (BatchGetItem takes 100 keys a request)
        let found = f.store.verdicts(&cycles).await.expect("verdicts");

        // Then every recorded verdict comes back, as recorded, and nothing for the others
        assert_eq!(found.len(), 150);
        for v in &recorded {
            assert_eq!(found.get(&v.cycle.verdict_key()), Some(v));
        }
        for c in &undecided {
            assert!(!found.contains_key(&c.verdict_key()));
        }
        assert_eq!(f.store.verdicts(&[]).await.ok().map(|m| m.len()), Some(0));
        f.clean_up().await;
    }

    #[tokio::test]
    async fn owed_alerts_are_claimed_released_sent_and_found_through_the_index() {
        // Given a deny whose alert its recorder holds, one whose recorder's lease has lapsed,
        // and an allow that owes no alert
        let mut f = fixture().await;
        let now = f.now;
        let held = cycle(UnixTime(now.0 - 30));
        let lapsed = cycle(UnixTime(now.0 - 300));
        let quiet = cycle(UnixTime(now.0 - 30));
        f.record(&verdict(
            &held,
            Verdict::Deny(DenyReason::Missing),
            now,
            Some(AlertClaim::by("req-1", now)),
        ))
        .await;
        let dead = AlertClaim {
            owner: Some("req-dead".into()),
            lease_until: UnixTime(now.0 - 1),
        };
        f.record(&verdict(
            &lapsed,
            Verdict::Deny(DenyReason::Unknown),
            UnixTime(now.0 - 300),
            Some(dead),
        ))
        .await;
        f.record(&verdict(&quiet, Verdict::Allow, now, None)).await;

        // Then both owed alerts are in the sparse index, the allow is not; only the lapsed one
        // is due now, and once the live lease lapses both are, the earliest lease first
        assert!(f.indexed(&held).await && f.indexed(&lapsed).await);
        assert!(!f.indexed(&quiet).await);
        assert_eq!(
            f.due(now, &[&held, &lapsed, &quiet]).await,
            [lapsed.verdict_key()]
        );
        let later = now.plus(ALERT_LEASE);
        assert_eq!(
            f.due(later, &[&held, &lapsed]).await,
            [lapsed.verdict_key(), held.verdict_key()]
        );

        // And a live lease is the holder's alone: another invocation cannot claim it, the
        // holder's own retry (same request id) can, and anyone can once it lapsed
        assert_eq!(
            f.store.claim_alert(&held, "req-2", now).await.ok(),
            Some(false)
        );
        assert_eq!(
            f.store.claim_alert(&held, "req-1", now).await.ok(),
            Some(true)
        );
        assert_eq!(
            f.store.claim_alert(&lapsed, "req-2", now).await.ok(),
            Some(true)
        );
        let taken = f
            .store
            .verdict(&lapsed)
            .await
            .ok()
            .flatten()
            .and_then(|v| v.alert);
        assert_eq!(taken, Some(AlertClaim::by("req-2", now)));
        assert_eq!(f.due(now, &[&held, &lapsed]).await, Vec::<String>::new());
        // No alert is owed for the allow: nothing to claim
        assert_eq!(
            f.store.claim_alert(&quiet, "req-2", now).await.ok(),
            Some(false)
        );

        // When someone who does not hold it gives it back, nothing changes; when the holder
        // does, it is due at once, lease or not, and claimable by anyone
        f.store
            .release_alert(&held, "req-2")
            .await
            .expect("release");
        assert_eq!(f.due(now, &[&held]).await, Vec::<String>::new());
        f.store
            .release_alert(&held, "req-1")
            .await
            .expect("release");
        let given_back = f
            .store
            .verdict(&held)
            .await
            .ok()
            .flatten()
            .and_then(|v| v.alert);
        assert_eq!(given_back.as_ref().map(|c| c.owner.clone()), Some(None));
        assert_eq!(f.due(now, &[&held]).await, [held.verdict_key()]);
        assert_eq!(
            f.store.claim_alert(&held, "req-3", now).await.ok(),
            Some(true)
        );

        // When the alert is published and marked sent, it is owed no more: gone from the index,
        // never due, never claimable, whatever the time
        f.store.alert_sent(&held, now).await.expect("alert sent");
        let sent = f
            .store
            .verdict(&held)
            .await
            .ok()
            .flatten()
            .expect("the verdict stays");
        assert_eq!(sent.alert, None);
        assert_eq!(sent.verdict, Verdict::Deny(DenyReason::Missing));
        assert!(!f.indexed(&held).await);
        assert_eq!(
            f.due(now.plus(Duration::from_secs(86_400)), &[&held]).await,
            Vec::<String>::new()
        );
        assert_eq!(
            f.store.claim_alert(&held, "req-1", later).await.ok(),
            Some(false)
        );
        // And marking an alert sent again, or one of a cycle without a verdict, is harmless
        f.store.alert_sent(&held, now).await.expect("sent again");
        let undecided = cycle(now);
        f.store
            .alert_sent(&undecided, now)
            .await
            .expect("no verdict");
        assert_eq!(f.store.verdict(&undecided).await.ok(), Some(None));
        f.clean_up().await;
    }

    #[tokio::test]
    async fn withdraw_exemption_deletes_only_an_exempt_verdict() {
        // Given an exempt, a deny and an allow verdict, and a cycle without one
        let mut f = fixture().await;
        let launched = UnixTime(f.now.0 - 60);
        let (exempt, deny, allow, none) = (
            cycle(launched),
            cycle(launched),
            cycle(launched),
            cycle(launched),
        );
        for (c, v) in [
            (&exempt, Verdict::Exempt),
            (&deny, Verdict::Deny(DenyReason::Missing)),
            (&allow, Verdict::Allow),
        ] {
            let record = verdict(c, v, f.now, None);
            f.record(&record).await;
        }

        // Then only the exemption is withdrawn, once
        assert_eq!(f.store.withdraw_exemption(&exempt).await.ok(), Some(true));
        assert_eq!(f.store.verdict(&exempt).await.ok(), Some(None));
        assert_eq!(f.store.withdraw_exemption(&exempt).await.ok(), Some(false));
        for c in [&deny, &allow] {
            assert_eq!(f.store.withdraw_exemption(c).await.ok(), Some(false));
            assert!(
                f.store.verdict(c).await.ok().flatten().is_some(),
                "{c:?} kept"
            );
        }
        assert_eq!(f.store.withdraw_exemption(&none).await.ok(), Some(false));
        assert_eq!(f.store.verdict(&none).await.ok(), Some(None));

        // And the withdrawn cycle can be decided anew
        let deny_now = verdict(&exempt, Verdict::Deny(DenyReason::Missing), f.now, None);
        f.record(&deny_now).await;
        f.clean_up().await;
    }

    #[tokio::test]
    async fn activation_is_the_tables_creation_time() {
        // Given a table created just now
        let f = fixture().await;
        let name = unique("ec2pass-activation-");
        let before = now();
        f.ddb
            .create_table()
            .table_name(&name)
            .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(table::PK)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .expect("an attribute definition"),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(table::PK)
                    .key_type(KeyType::Hash)
                    .build()
                    .expect("a key schema element"),
            )
            .send()
            .await
            .expect("CreateTable");
        let after = now();

        // When the guard reads its activation time from it
        let store = DynamoStore::new(f.ddb.clone(), name.clone());
        let activation = store.activation().await.expect("activation");

        // Then it is the table's creation time, in whole seconds
        let created = f
            .ddb
            .describe_table()
            .table_name(&name)
            .send()
            .await
            .expect("DescribeTable")
            .table
            .and_then(|t| t.creation_date_time)
            .expect("a creation time");
        assert_eq!(activation, UnixTime(created.secs()));
        assert!(
            (before..=after).contains(&activation.0),
            "{before} ≤ {activation:?} ≤ {after}"
        );
        // And a table that does not exist is an error, never a time
        f.ddb
            .delete_table()
            .table_name(&name)
            .send()
            .await
            .expect("DeleteTable");
        assert!(store.activation().await.is_err());
    }

    #[tokio::test]
    async fn status_reads_an_instances_latest_verdicts_from_the_instance_index() {
        let f = fixture().await;
        let instance = fresh_instance();
        let other = fresh_instance();
        // Twelve starts of one instance, an hour apart, and one of another
        for n in 0..12 {
            let at = UnixTime(f.now.0 - 3600 * (12 - n));
            let c = Cycle {
                instance: instance.clone(),
                launch_time: at,
            };
            let kind = if n % 2 == 0 {
                Verdict::Allow
            } else {
                Verdict::Deny(DenyReason::Reused)
            };
            let mut v = verdict(&c, kind, at, None);
            v.decided_at = at;
            assert_eq!(f.store.record(&v).await.ok(), Some(Recorded::Ours));
        }
        let theirs = verdict(&cycle(f.now), Verdict::Exempt, f.now, None);
        let theirs = VerdictRecord {
            cycle: Cycle {
                instance: other.clone(),
                launch_time: f.now,
            },
            ..theirs
        };
        assert_eq!(f.store.record(&theirs).await.ok(), Some(Recorded::Ours));
        // Then status gets the latest ten of that instance, latest first, and no other's
        let recent = f
            .store
            .recent_verdicts(&instance, STATUS_VERDICTS)
            .await
            .expect("Query on by-instance");
        assert_eq!(recent.len(), STATUS_VERDICTS);
        assert!(recent.iter().all(|v| v.cycle.instance == instance));
        let times: Vec<i64> = recent.iter().map(|v| v.decided_at.0).collect();
        let mut sorted = times.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(times, sorted, "latest first");
        assert_eq!(times.first().copied(), Some(f.now.0 - 3600));
        assert_eq!(recent[0].verdict, Verdict::Deny(DenyReason::Reused));
        let none = f
            .store
            .recent_verdicts(&fresh_instance(), STATUS_VERDICTS)
            .await;
        assert_eq!(none.ok().map(|v| v.len()), Some(0));
    }
}
