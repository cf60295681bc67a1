//! An in-memory password store with the same semantics as the DynamoDB one, for unit tests.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use super::{
    AlertStore, Attributed, CallerLookup, CallerStore, Consume, ConsumeOutcome, ConsumeStore, Mint,
    MintOutcome, MintStore, Outstanding, OutstandingStore, PasswordLookup, PasswordRecord,
    REPLY_POSTS, Recorded, Reply, ReplyStore, ResponseStore, StoreError, TOLD, TellClaim,
    TriggerClaim, TriggerStore, VerdictHistory, VerdictStore,
};
use crate::caller::Caller;
use crate::digest::Digest;
use crate::ids::{InstanceId, Owner, ShortId};
use crate::time::UnixTime;
use crate::verdict::{AlertClaim, Cycle, Verdict, VerdictRecord};

/// The table's items, held in memory behind one lock so every operation is atomic.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    passwords: HashMap<String, PasswordRecord>,
    triggers: HashSet<String>,
    rates: HashMap<(String, i64), u32>,
    verdicts: HashMap<String, VerdictRecord>,
    replies: HashMap<String, Reply>,
    forwards: HashMap<String, bool>,
    /// The latest call by instance, and when it was made.
    calls: HashMap<InstanceId, (Caller, UnixTime)>,
    /// The caller recorded with a verdict (by verdict key), and until when telling it is taken.
    callers: HashMap<String, (Caller, Option<UnixTime>)>,
    /// When each principal was last acted on, and until when that action is in hand.
    responses: HashMap<String, (UnixTime, Option<UnixTime>)>,
    activation: UnixTime,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-written (each operation
        // checks before it writes), so a poisoned lock is still safe to use.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every stored password record (for assertions in tests).
    pub fn records(&self) -> Vec<PasswordRecord> {
        self.lock().passwords.values().cloned().collect()
    }

    /// Every recorded verdict (for assertions in tests).
    pub fn verdicts(&self) -> Vec<VerdictRecord> {
        self.lock().verdicts.values().cloned().collect()
    }

    /// A store whose table was created at `at` (the guard's activation).
    pub fn activated_at(at: UnixTime) -> Self {
        let store = Self::default();
        store.lock().activation = at;
        store
    }

    /// Deletes the verdicts whose retention has passed at `now`, as DynamoDB's TTL does (some
    /// time after `retain_until`; never before).
    pub fn expire_verdicts(&self, now: UnixTime) {
        self.lock().verdicts.retain(|_, v| v.retain_until > now);
    }

    /// The caller recorded with a cycle's verdict, and whether it was told for good (for
    /// assertions).
    pub fn caller_of(&self, cycle: &Cycle) -> Option<(Caller, bool)> {
        self.lock()
            .callers
            .get(&cycle.verdict_key())
            .map(|(c, told)| (c.clone(), *told == Some(TOLD)))
    }

    /// When each principal was last acted on (for assertions).
    pub fn responses(&self) -> HashMap<String, UnixTime> {
        self.lock()
            .responses
            .iter()
            .map(|(k, (at, _))| (k.clone(), *at))
            .collect()
    }

    /// Stores a record directly, as if minted earlier (for arranging tests).
    pub fn insert(&self, record: PasswordRecord) {
        self.lock()
            .passwords
            .insert(record.digest.table_key(), record);
    }
}

impl MintStore for MemoryStore {
    async fn mint(&self, mint: &Mint) -> Result<MintOutcome, StoreError> {
        let mut state = self.lock();
        if !mint.trigger_claimed && state.triggers.contains(&mint.trigger.trigger_id) {
            return Ok(MintOutcome::Replayed);
        }
        let window = (mint.rate.owner.key(), mint.rate.window);
        let used = state.rates.get(&window).copied().unwrap_or(0);
        if used >= mint.rate.limit {
            // As in DynamoDB: a refused request's trigger is claimed all the same, so replaying
            // it in the next window mints nothing either.
            state.triggers.insert(mint.trigger.trigger_id.clone());
            return Ok(MintOutcome::RateLimited);
        }
        let key = mint.record.digest.table_key();
        if state.passwords.contains_key(&key) {
            return Err(StoreError::Malformed {
                key,
                problem: "a password with this digest already exists".into(),
            });
        }
        state.triggers.insert(mint.trigger.trigger_id.clone());
        state.rates.insert(window, used + 1);
        state.passwords.insert(key, mint.record.clone());
        if let Some(reply) = &mint.reply {
            state
                .replies
                .insert(reply.short_id.as_str().to_owned(), reply.clone());
        }
        Ok(MintOutcome::Minted)
    }
}

impl VerdictHistory for MemoryStore {
    async fn recent_verdicts(
        &self,
        instance: &InstanceId,
        limit: usize,
    ) -> Result<Vec<VerdictRecord>, StoreError> {
        let mut theirs: Vec<VerdictRecord> = self
            .lock()
            .verdicts
            .values()
            .filter(|v| &v.cycle.instance == instance)
            .cloned()
            .collect();
        theirs.sort_by_key(|v| std::cmp::Reverse(v.decided_at));
        theirs.truncate(limit);
        Ok(theirs)
    }
}

impl ReplyStore for MemoryStore {
    async fn reply(&self, short_id: &ShortId) -> Result<Option<Reply>, StoreError> {
        Ok(self.lock().replies.get(short_id.as_str()).cloned())
    }

    async fn take_post(
        &self,
        short_id: &ShortId,
        now: UnixTime,
        settles: bool,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let Some(r) = state.replies.get_mut(short_id.as_str()) else {
            return Ok(false);
        };
        if r.posts >= REPLY_POSTS || r.until <= now || (settles && !r.due) {
            return Ok(false);
        }
        r.posts += 1;
        if settles {
            r.due = false;
        }
        Ok(true)
    }

    async fn release_post(&self, short_id: &ShortId, settled: bool) -> Result<(), StoreError> {
        if let Some(r) = self.lock().replies.get_mut(short_id.as_str()) {
            r.posts = r.posts.saturating_sub(1);
            r.due |= settled;
        }
        Ok(())
    }

    async fn settle(&self, short_id: &ShortId) -> Result<(), StoreError> {
        if let Some(r) = self.lock().replies.get_mut(short_id.as_str()) {
            r.due = false;
        }
        Ok(())
    }

    async fn claim_forward(&self, key: &str, _forget_after: UnixTime) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let forwarded = state.forwards.entry(key.to_owned()).or_insert(false);
        Ok(!std::mem::replace(forwarded, true))
    }

    async fn release_forward(&self, key: &str) -> Result<(), StoreError> {
        self.lock().forwards.insert(key.to_owned(), false);
        Ok(())
    }

    async fn due_replies(&self, _now: UnixTime, limit: usize) -> Result<Vec<Reply>, StoreError> {
        let mut due: Vec<Reply> = self
            .lock()
            .replies
            .values()
            .filter(|r| r.due)
            .cloned()
            .collect();
        due.sort_by_key(|r| r.expires_at);
        due.truncate(limit);
        Ok(due)
    }
}

impl TriggerStore for MemoryStore {
    async fn claim_trigger(&self, claim: &TriggerClaim) -> Result<bool, StoreError> {
        Ok(self.lock().triggers.insert(claim.trigger_id.clone()))
    }
}

impl OutstandingStore for MemoryStore {
    async fn outstanding(
        &self,
        owner: &Owner,
        now: UnixTime,
    ) -> Result<Vec<Outstanding>, StoreError> {
        let mut list: Vec<Outstanding> = self
            .lock()
            .passwords
            .values()
            .filter(|r| &r.owner == owner && r.is_outstanding(now))
            .map(Outstanding::from)
            .collect();
        list.sort_by(|a, b| (a.expires_at, &a.short_id).cmp(&(b.expires_at, &b.short_id)));
        Ok(list)
    }

    async fn revoke(&self, owner: &Owner, id: &ShortId, now: UnixTime) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let before = state.passwords.len();
        state
            .passwords
            .retain(|_, r| !(&r.owner == owner && &r.short_id == id && r.is_outstanding(now)));
        Ok(state.passwords.len() < before)
    }

    async fn revoke_all(&self, owner: &Owner, now: UnixTime) -> Result<usize, StoreError> {
        let mut state = self.lock();
        let before = state.passwords.len();
        state
            .passwords
            .retain(|_, r| !(&r.owner == owner && r.is_outstanding(now)));
        Ok(before - state.passwords.len())
    }
}

impl PasswordLookup for MemoryStore {
    async fn find(&self, digest: &Digest) -> Result<Option<PasswordRecord>, StoreError> {
        Ok(self.lock().passwords.get(&digest.table_key()).cloned())
    }
}

impl ConsumeStore for MemoryStore {
    async fn consume(&self, c: &Consume) -> Result<ConsumeOutcome, StoreError> {
        let mut state = self.lock();
        if let Some(existing) = state.verdicts.get(&c.cycle.verdict_key()) {
            return Ok(ConsumeOutcome::Decided(existing.clone()));
        }
        let key = c.digest.table_key();
        let cycle = c.cycle.id();
        let Some(record) = state.passwords.get_mut(&key) else {
            return Ok(ConsumeOutcome::Refused(None));
        };
        let usable = record.digest == c.digest
            && (record.consumed_by.as_deref() == Some(cycle.as_str())
                || (record.consumed_by.is_none()
                    && !record.is_expired(c.now)
                    && record.scope.as_ref().is_none_or(|s| *s == c.cycle.instance)));
        if !usable {
            return Ok(ConsumeOutcome::Refused(Some(record.clone())));
        }
        record.consumed_by = Some(cycle);
        state
            .verdicts
            .insert(c.cycle.verdict_key(), c.allow.clone());
        Ok(ConsumeOutcome::Allowed)
    }

    async fn burn(&self, digest: &Digest, cycle: &Cycle) -> Result<(), StoreError> {
        if let Some(record) = self.lock().passwords.get_mut(&digest.table_key()) {
            record.consumed_by.get_or_insert_with(|| burned(cycle));
        }
        Ok(())
    }
}

/// What a burned password's `consumed_by` says.
pub(crate) fn burned(cycle: &Cycle) -> String {
    cycle.burn_mark()
}

impl VerdictStore for MemoryStore {
    async fn record(&self, v: &VerdictRecord) -> Result<Recorded, StoreError> {
        let mut state = self.lock();
        match state.verdicts.get(&v.cycle.verdict_key()) {
            Some(existing) => Ok(Recorded::Theirs(existing.clone())),
            None => {
                state.verdicts.insert(v.cycle.verdict_key(), v.clone());
                Ok(Recorded::Ours)
            }
        }
    }

    async fn verdict(&self, cycle: &Cycle) -> Result<Option<VerdictRecord>, StoreError> {
        Ok(self.lock().verdicts.get(&cycle.verdict_key()).cloned())
    }

    async fn verdicts(
        &self,
        cycles: &[Cycle],
    ) -> Result<HashMap<String, VerdictRecord>, StoreError> {
        let state = self.lock();
        Ok(cycles
            .iter()
            .filter_map(|c| {
                let key = c.verdict_key();
                state.verdicts.get(&key).map(|v| (key, v.clone()))
            })
            .collect())
    }

    async fn annotate(
        &self,
        cycle: &Cycle,
        short_id: &ShortId,
        issuer: &Owner,
    ) -> Result<(), StoreError> {
        if let Some(v) = self.lock().verdicts.get_mut(&cycle.verdict_key()) {
            v.short_id = Some(short_id.clone());
            v.issuer = Some(issuer.clone());
        }
        Ok(())
    }

    async fn withdraw_exemption(&self, cycle: &Cycle) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let key = cycle.verdict_key();
        if state.verdicts.get(&key).map(|v| v.verdict) == Some(Verdict::Exempt) {
            state.verdicts.remove(&key);
            return Ok(true);
        }
        Ok(false)
    }

    async fn activation(&self) -> Result<UnixTime, StoreError> {
        Ok(self.lock().activation)
    }
}

impl AlertStore for MemoryStore {
    async fn claim_alert(
        &self,
        cycle: &Cycle,
        owner: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        match state.verdicts.get_mut(&cycle.verdict_key()) {
            Some(v) if v.alert_claimable_by(owner, now) => {
                v.alert = Some(AlertClaim::by(owner, now));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release_alert(&self, cycle: &Cycle, owner: &str) -> Result<(), StoreError> {
        if let Some(v) = self.lock().verdicts.get_mut(&cycle.verdict_key())
            && let Some(claim) = v.alert.as_mut()
            && claim.owner.as_deref() == Some(owner)
        {
            claim.owner = None;
        }
        Ok(())
    }

    async fn alert_sent(&self, cycle: &Cycle, _now: UnixTime) -> Result<(), StoreError> {
        if let Some(v) = self.lock().verdicts.get_mut(&cycle.verdict_key()) {
            v.alert = None;
        }
        Ok(())
    }

    async fn due_alerts(
        &self,
        now: UnixTime,
        limit: usize,
    ) -> Result<Vec<VerdictRecord>, StoreError> {
        let mut due: Vec<VerdictRecord> = self
            .lock()
            .verdicts
            .values()
            .filter(|v| {
                v.alert
                    .as_ref()
                    .is_some_and(|c| c.owner.is_none() || c.lease_until <= now)
            })
            .cloned()
            .collect();
        due.sort_by_key(|v| v.alert.as_ref().map(|c| c.lease_until));
        due.truncate(limit);
        Ok(due)
    }
}

impl CallerLookup for MemoryStore {
    async fn call_for(
        &self,
        instance: &InstanceId,
    ) -> Result<Option<(Caller, UnixTime)>, StoreError> {
        Ok(self.lock().calls.get(instance).cloned())
    }

    async fn claim_tell(
        &self,
        cycle: &Cycle,
        caller: &Caller,
        claim: TellClaim,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let key = cycle.verdict_key();
        let Some(verdict) = state.verdicts.get(&key) else {
            return Ok(false);
        };
        let (free, until) = match claim {
            TellClaim::InAlert => (None, TOLD),
            TellClaim::After { now, until } => {
                if verdict.alert.is_some() {
                    return Ok(false);
                }
                (Some(now), until)
            }
        };
        let entry = state
            .callers
            .entry(key)
            .or_insert_with(|| (caller.clone(), None));
        let taken = match (entry.1, free) {
            (None, _) => false,
            (Some(held), Some(now)) => held >= now,
            (Some(_), None) => true,
        };
        if taken {
            return Ok(false);
        }
        entry.1 = Some(until);
        Ok(true)
    }
}

impl CallerStore for MemoryStore {
    async fn put_call(
        &self,
        instance: &InstanceId,
        caller: &Caller,
        at: UnixTime,
        _retain_until: UnixTime,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        let newer = state.calls.get(instance).is_none_or(|(_, t)| *t <= at);
        if newer {
            state.calls.insert(instance.clone(), (caller.clone(), at));
        }
        Ok(())
    }

    async fn attribute(
        &self,
        cycle: &Cycle,
        caller: &Caller,
    ) -> Result<Option<Attributed>, StoreError> {
        let mut state = self.lock();
        let key = cycle.verdict_key();
        let Some(verdict) = state.verdicts.get(&key).cloned() else {
            return Ok(None);
        };
        let (_, told) = state
            .callers
            .entry(key)
            .or_insert_with(|| (caller.clone(), None))
            .clone();
        Ok(Some(Attributed { verdict, told }))
    }

    async fn confirm_tell(&self, cycle: &Cycle) -> Result<(), StoreError> {
        if let Some(entry) = self.lock().callers.get_mut(&cycle.verdict_key()) {
            entry.1 = Some(TOLD);
        }
        Ok(())
    }

    async fn release_tell(&self, cycle: &Cycle) -> Result<(), StoreError> {
        if let Some(entry) = self.lock().callers.get_mut(&cycle.verdict_key()) {
            entry.1 = None;
        }
        Ok(())
    }
}

impl ResponseStore for MemoryStore {
    async fn claim_response(
        &self,
        principal: &str,
        call_at: UnixTime,
        now: UnixTime,
        pending_until: UnixTime,
        _retain_until: UnixTime,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let free = match state.responses.get(principal) {
            None => true,
            Some((acted, pending)) => *acted < call_at || pending.is_some_and(|p| p < now),
        };
        if free {
            state
                .responses
                .insert(principal.to_owned(), (now, Some(pending_until)));
        }
        Ok(free)
    }

    async fn confirm_response(&self, principal: &str, at: UnixTime) -> Result<(), StoreError> {
        if let Some(entry) = self.lock().responses.get_mut(principal)
            && entry.0 == at
        {
            entry.1 = None;
        }
        Ok(())
    }

    async fn release_response(&self, principal: &str, at: UnixTime) -> Result<(), StoreError> {
        if let Some(entry) = self.lock().responses.get_mut(principal)
            && entry.0 == at
        {
            entry.1 = Some(UnixTime(0));
        }
        Ok(())
    }
}
