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
