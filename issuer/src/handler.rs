//! The issuer's request path: request → verify → parse → mint → store → answer.
//!
//! [`Issuer::handle`] never fails: every outcome is an HTTP answer. Requests that are not from
//! Slack get a bare 4xx; anything a person typed gets an ephemeral explanation with status 200;
//! AWS trouble gets an ephemeral "try again" (Slack shows a 5xx as an opaque error, and nothing
//! was issued, so there is nothing to hide). Whatever AWS does, the answer comes within
//! [`DEADLINE`].

use std::time::Duration;

use ec2pass_shared::config::{IssuerConfig, SigningSecret};
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::ids::Owner;
use ec2pass_shared::org::{Member, Place, is_account_id};
use ec2pass_shared::reply::{Front, ReplyKey, allowed};
use ec2pass_shared::store::{
    MintOutcome, MintStore, OutstandingStore, STATUS_VERDICTS, TriggerStore, VerdictHistory,
};
use ec2pass_shared::time::{Clock, UnixTime};
use lambda_http::http::{HeaderMap, Response, header};
use lambda_http::{Body, Request};
use serde_json::Value;
use tracing::{error, info, warn};

use crate::answer;
use crate::authorize::authorize;
use crate::chat::Chat;
use crate::command::{self, Command, Mistake, Near, RevokeTarget};
use crate::front::{MattermostToken, Route, render, token_matches};
use crate::instances::{InstanceDirectory, InstanceInfo};
use crate::mint;
use crate::request::{
    Action, Form, FormError, Incoming, Press, SlashCommand, check_shape, parse_form,
    parse_mattermost, parse_press, parse_token,
};
use crate::verify::{HeaderValue, verify};

/// How long a request may take, from the moment it reaches the handler to its answer.
///
/// Slack gives up 3000 ms after it sent the request, and shows the requester an opaque error.
/// Its clock starts before ours: the request's way to the function URL, and on a cold start the
/// function's init (the runtime, the configuration, and the signing secret's `GetSecretValue`:
/// tens of milliseconds, a few hundred at worst), come first, and the answer must travel back.
/// 2.5 s leaves half a second for all of that, and still lets one slow AWS call (each is bounded
/// at 2 s by the SDK's operation timeout) finish, or be answered "try again", in time.
pub const DEADLINE: Duration = Duration::from_millis(2500);

/// An HTTP answer: a status and, for 200s, a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body, if any.
    pub body: Option<Value>,
}

impl Reply {
    fn empty(status: u16) -> Self {
        Self { status, body: None }
    }

    fn ok(body: Value) -> Self {
        Self {
            status: 200,
            body: Some(body),
        }
    }
}

/// The issuer and what it depends on: configuration, the chats' credentials, the password
/// store, the instance directory, the chat (to replace a message after a button) and a clock.
pub struct Issuer<S, D, C, H> {
    /// Validated configuration.
    pub config: IssuerConfig,
    /// The Slack signing secret, resolved at cold start.
    pub secret: SigningSecret,
    /// The Mattermost slash command's token, when Mattermost is a front (resolved at cold
    /// start); `None`: `/mattermost` answers 404.
    pub mattermost: Option<MattermostToken>,
    /// The chat, for the message a button press replaces.
    pub chat: H,
    /// The key that seals the reply URLs kept with passwords (resolved at cold start); `None`:
    /// no reply URL is kept, so no follow-ups.
    pub replies: Option<ReplyKey>,
    /// The password table.
    pub store: S,
    /// EC2, for scoped mints.
    pub directory: D,
    /// The time.
    pub clock: C,
}

impl<S, D, C, H> Issuer<S, D, C, H>
where
    S: MintStore + TriggerStore + OutstandingStore + VerdictHistory,
    D: InstanceDirectory,
    C: Clock,
    H: Chat,
{
    /// Answers one HTTP request as Lambda delivered it.
    pub async fn handle_http(&self, request: Request) -> Response<Body> {
        let headers = request.headers();
        let incoming = Incoming {
            method: request.method().as_str(),
            path: request.uri().path(),
            content_type: single(headers, header::CONTENT_TYPE.as_str()),
            timestamp: single(headers, "x-slack-request-timestamp"),
            signature: single(headers, "x-slack-signature"),
            body: request.body().as_ref(),
        };
        into_response(self.handle(&incoming).await)
    }

    /// Answers one request, within [`DEADLINE`].
    pub async fn handle(&self, req: &Incoming<'_>) -> Reply {
        self.handle_within(req, DEADLINE).await
    }

    /// Answers one request within `deadline`: when it passes, the work in flight is dropped and
    /// the requester is told to try again.
    ///
    /// Dropping the work means nothing starts after the answer, and no password can be shown
    /// after it (the plaintext lives only in the dropped work and is dropped with it). What
    /// cannot be undone is a write DynamoDB already received: the mint's transaction may still
    /// commit after the answer. Then the table holds a digest, with its expiry, of a password
    /// nobody has ever seen and nobody can find out (the plaintext was never sent or logged; a
    /// digest does not give it back): no instance can be started with it, it dies at its expiry
    /// like any other, and until then `list` shows it, so its owner can `revoke` it. The rate
    /// counter and the trigger claim may count it too. That is harmless: no usable password
    /// exists that the requester did not see. A `revoke all` cut short may have revoked some
    /// passwords and not others, so the answer says so and points to `list`.
    pub async fn handle_within(&self, req: &Incoming<'_>, deadline: Duration) -> Reply {
        match tokio::time::timeout(deadline, self.answer(req)).await {
            Ok(reply) => reply,
            Err(_) => {
                let deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
                error!(
                    deadline_ms,
                    "answered late: AWS was too slow; the work was dropped"
                );
                Reply::ok(answer::too_slow())
            }
        }
    }

    async fn answer(&self, req: &Incoming<'_>) -> Reply {
        if let Err(shape) = check_shape(req) {
            warn!(
                ?shape,
                method = req.method,
                bytes = req.body.len(),
                "refused request"
            );
            return Reply::empty(shape.status());
        }
        let Some(route) = Route::of(req.path) else {
            warn!(bytes = req.body.len(), "refused request: no such path");
            return Reply::empty(404);
        };
        let now = self.clock.now();
        match route {
            Route::SlackCommand => self.slack_command(req, now).await,
            Route::SlackAction => self.slack_press(req, now).await,
            Route::MattermostCommand => self.mattermost_command(req, now).await,
        }
    }

    /// A Slack slash command: signature → form → the command.
    async fn slack_command(&self, req: &Incoming<'_>, now: UnixTime) -> Reply {
        let form = parse_form(req.body);
        if form == Ok(Form::SslCheck) {
            info!("answered Slack ssl_check");
            return Reply::empty(200);
        }
        if let Err(why) = verify(&self.secret, req.timestamp, req.signature, req.body, now) {
            warn!(reason = %why, "refused request: Slack signature");
            return Reply::empty(401);
        }
        match form {
            Ok(Form::Command(cmd)) => Reply::ok(self.command(&cmd, now).await),
            Ok(Form::SslCheck) => Reply::empty(200),
            Err(problem) => {
                warn!(%problem, "signed request with an unreadable form");
                Reply::ok(answer::malformed())
            }
        }
    }

    /// A Mattermost slash command: token → form → the same command, answered in Markdown.
    async fn mattermost_command(&self, req: &Incoming<'_>, now: UnixTime) -> Reply {
        let Some(expected) = &self.mattermost else {
            warn!("refused request: Mattermost is not configured");
            return Reply::empty(404);
        };
        let form = match parse_mattermost(req.body) {
            Ok(form) if token_matches(expected, &form.token) => form,
            Ok(_) | Err(FormError::Missing("token") | FormError::Duplicated("token")) => {
                warn!("refused request: Mattermost token");
                return Reply::empty(401);
            }
            Err(problem) => {
                // Only the token was checked: a form with a good token and a missing field
                // gets an explanation, any other a bare 401 (the token is compared first).
                let token_ok = parse_token(req.body).is_some_and(|t| token_matches(expected, &t));
                if !token_ok {
                    warn!("refused request: Mattermost token");
                    return Reply::empty(401);
                }
                warn!(%problem, "Mattermost request with an unreadable form");
                return Reply::ok(render(Front::Mattermost, answer::malformed()));
            }
        };
        let answer = self.command(&form.command, now).await;
        Reply::ok(render(Front::Mattermost, answer))
    }

    /// A slash command from either chat, once its request is proven: allow-lists → grammar →
    /// the command's work. The answer is a Slack message; the caller renders it for its chat.
    async fn command(&self, cmd: &SlashCommand, now: UnixTime) -> Value {
        if let Err(refusal) = authorize(&self.config.allow, cmd.who()) {
            info!(
                ?refusal,
                front = cmd.front.as_str(),
                team_id = cmd.team_id,
                user_id = cmd.user_id,
                channel_id = cmd.channel_id,
                "not on the allow-list"
            );
            return answer::not_allowed();
        }
        // The text itself is never logged: someone may paste a password into it by mistake.
        match command::parse(&cmd.text) {
            Err(mistake) => {
                info!(
                    user_id = cmd.user_id,
                    mistake = mistake_kind(&mistake),
                    "usage answered"
                );
                answer::usage(&self.config, Some(&mistake))
            }
            Ok(Command::Help) => answer::usage(&self.config, None),
            Ok(Command::Mint {
                scope,
                lifetime,
                near,
            }) => match self.within(near.as_ref()) {
                Ok(within) => {
                    self.mint(cmd, scope, lifetime, within.as_deref(), now)
                        .await
                }
                Err(mistake) => answer::usage(&self.config, Some(&mistake)),
            },
            Ok(Command::List) => self.list(cmd, now).await,
            Ok(Command::Revoke(target)) => self.revoke(cmd, target, now).await,
            Ok(Command::Status(id)) => self.status(cmd, &id, now).await,
        }
    }

    /// A button pressed on a Slack message: signature → payload → the press, answered by
    /// replacing the message in place through the press's reply URL. The HTTP answer is an
    /// empty 200 whatever happened (Slack shows nothing else for a `block_actions` answer).
    async fn slack_press(&self, req: &Incoming<'_>, now: UnixTime) -> Reply {
        if let Err(why) = verify(&self.secret, req.timestamp, req.signature, req.body, now) {
            warn!(reason = %why, "refused request: Slack signature");
            return Reply::empty(401);
        }
        let press = match parse_press(req.body) {
            Ok(press) => press,
            Err(problem) => {
                warn!(%problem, "signed button press that ec2pass cannot read");
                return Reply::empty(200);
            }
        };
        let message = self.press(&press, now).await;
        let Some(url) = press
            .response_url
            .as_ref()
            .and_then(|u| allowed(u.expose(), &self.config.reply_origins))
        else {
            warn!(
                user_id = press.user_id,
                "a press without a reply URL of the chat's own"
            );
            return Reply::empty(200);
        };
        if let Err(e) = self.chat.post(&url, &message).await {
            warn!(user_id = press.user_id, error = %e, "the pressed message could not be replaced");
        }
        Reply::empty(200)
    }

    /// What a press does, and the message that replaces the one pressed on.
    async fn press(&self, press: &Press, now: UnixTime) -> Value {
        if let Err(refusal) = authorize(&self.config.allow, press.who()) {
            info!(
                ?refusal,
                user_id = press.user_id,
                "press: not on the allow-list"
            );
            return answer::keep_original(answer::not_allowed());
        }
        // Only the minting user can revoke: the store revokes a password only for its owner,
        // and the owner is who pressed, as Slack signed it.
        let owner = Owner {
            team_id: press.team_id.clone(),
            user_id: press.user_id.clone(),
        };
        let (id, listed) = match &press.action {
            Action::Revoke(id) => (id, false),
            Action::RevokeListed(id) => (id, true),
        };
        let revoked = match self.store.revoke(&owner, id, now).await {
            Ok(revoked) => revoked,
            Err(e) => {
                error!(error = %e, "press: revoke failed");
                return answer::keep_original(answer::try_again());
            }
        };
        info!(short_id = %id, user_id = press.user_id, revoked, "press: revoke");
        if !listed {
            return answer::replace_original(answer::revoked_one(id, revoked));
        }
        match self.store.outstanding(&owner, now).await {
            Ok(items) => answer::replace_original(answer::revoked_listed(id, revoked, &items)),
            Err(e) => {
                error!(error = %e, "press: list failed");
                answer::replace_original(answer::revoked_one(id, revoked))
            }
        }
    }

    async fn mint(
        &self,
        cmd: &SlashCommand,
        scope: Option<InstanceId>,
        lifetime: Option<std::time::Duration>,
        within: Option<&[Place]>,
        now: UnixTime,
    ) -> Value {
        if scope.is_none() && !self.config.allow_unscoped {
            return answer::usage(&self.config, Some(&Mistake::UnscopedNotAllowed));
        }
        // An unscoped password opens an instance in any account: only for someone every
        // account's allow-list names, or it would be the way around them.
        if scope.is_none()
            && !self
                .config
                .account_users
                .iter()
                .all(|(_, users)| users.contains(&cmd.user_id))
        {
            info!(
                user_id = cmd.user_id,
                "mint refused: unscoped, and not on every account's allow-list"
            );
            return answer::not_allowed();
        }
        let lifetime = match command::choose_lifetime(lifetime, &self.config.lifetimes) {
            Ok(l) => l,
            Err(mistake) => return answer::usage(&self.config, Some(&mistake)),
        };
        // The trigger is claimed before anything can fail, so that a request that fails (the
        // lookup throttled, say) cannot be replayed later, within Slack's five-minute signature
        // window, to be served then, password included, to whoever replays it.
        //
        // A scoped mint claims it concurrently with the instance lookup, so the claim adds no
        // sequential round trip: both run, then the mint transaction. The transaction then no
        // longer writes the trigger, and needs no condition that the claim is ours: the claim
        // is a conditional create, so exactly one request with this trigger id ever sees it
        // succeed, and only that one reaches the transaction; the claim item cannot disappear
        // before its TTL, minutes after Slack's signature window has closed (and a request
        // past that window is refused by the signature check). A claim that failed, or whose
        // answer was lost, mints nothing: "try again", with a fresh trigger id.
        //
        // An unscoped mint looks nothing up, so nothing can fail before its transaction; the
        // claim stays in that transaction (all or nothing, one round trip), and a transaction
        // that fails has written nothing at all, just like a failed claim.
        let info = match &scope {
            None => None,
            Some(id) => {
                let (refused, lookup) =
                    tokio::join!(self.claim(cmd, now), self.directory.describe_in(id, within));
                if let Some(refused) = refused {
                    return refused;
                }
                match lookup {
                    Ok(Some(info)) if info.is_gone() => return answer::instance_gone(id, &info),
                    Ok(Some(info)) if !self.may_mint_in(cmd, &info) => {
                        info!(user_id = cmd.user_id, instance_id = %id, "mint refused: not on the account's allow-list");
                        return answer::not_allowed();
                    }
                    Ok(Some(info)) => Some(info),
                    Ok(None) => {
                        info!(user_id = cmd.user_id, instance_id = %id, "mint refused: unknown instance");
                        return answer::unknown_instance(id);
                    }
                    Err(e) => {
                        error!(error = %e, instance_id = %id, "mint failed: instance lookup");
                        return answer::try_again();
                    }
                }
            }
        };
        let claimed = scope.is_some();
        let (password, mut plan) =
            mint::plan(cmd, scope, lifetime, now, self.config.rate_limit_per_hour);
        plan.trigger_claimed = claimed;
        plan.reply = mint::reply(
            cmd,
            &plan.record,
            &self.config.reply_origins,
            self.replies.as_ref(),
        );
        let record = &plan.record;
        match self.store.mint(&plan).await {
            Ok(MintOutcome::Minted) => {
                info!(
                    short_id = %record.short_id,
                    team_id = cmd.team_id,
                    user_id = cmd.user_id,
                    channel_id = cmd.channel_id,
                    scope = record.scope.as_ref().map(InstanceId::as_str),
                    expires_at = record.expires_at.0,
                    "minted"
                );
                let scope = record.scope.as_ref().zip(info.as_ref());
                answer::minted(&password, &record.short_id, scope, record.expires_at)
            }
            Ok(MintOutcome::Replayed) => {
                warn!(user_id = cmd.user_id, "refused replayed trigger_id");
                answer::replayed()
            }
            Ok(MintOutcome::RateLimited) => {
                info!(
                    user_id = cmd.user_id,
                    limit = self.config.rate_limit_per_hour,
                    "rate limited"
                );
                answer::rate_limited(self.config.rate_limit_per_hour)
            }
            Err(e) => {
                error!(error = %e, "mint failed: store");
                answer::try_again()
            }
        }
    }

    /// The places `in …` names, or `None` (everywhere the hub guards, or this account). A
    /// place this ec2pass does not guard is a mistake explained to the requester.
    fn within(&self, near: Option<&Near>) -> Result<Option<Vec<Place>>, Mistake> {
        let Some(near) = near else {
            return Ok(None);
        };
        let named = match &near.region {
            Some(r) => format!("{}/{r}", near.account),
            None => near.account.clone(),
        };
        let Some(hub) = &self.config.hub else {
            return Err(Mistake::UnknownPlace(named));
        };
        // An account the Organization lists but the configuration does not name goes by its id.
        let read_from_organization = !hub.units.is_empty() && is_account_id(&near.account);
        let member = match hub.member(&near.account) {
            Some(member) => member.clone(),
            None if read_from_organization => Member {
                alias: near.account.clone(),
                id: near.account.clone(),
            },
            None => return Err(Mistake::UnknownPlace(named)),
        };
        match &near.region {
            Some(r) if !hub.regions.contains(r) => Err(Mistake::UnknownPlace(named)),
            Some(r) => Ok(Some(vec![Place::new(&member.id, r)])),
            None => Ok(Some(
                hub.regions
                    .iter()
                    .map(|r| Place::new(&member.id, r))
                    .collect(),
            )),
        }
    }

    /// Whether the account a hub found the instance in lets this requester mint for it
    /// (`EC2PASS_ACCOUNT_USERS`; an account not named there: the allow-lists alone decided).
    fn may_mint_in(&self, cmd: &SlashCommand, info: &InstanceInfo) -> bool {
        let Some((_, place)) = &info.place else {
            return true;
        };
        self.config
            .account_users
            .iter()
            .find(|(account, _)| *account == place.account)
            .is_none_or(|(_, users)| users.contains(&cmd.user_id))
    }

    async fn list(&self, cmd: &SlashCommand, now: UnixTime) -> Value {
        if let Some(refused) = self.claim(cmd, now).await {
            return refused;
        }
        match self.store.outstanding(&mint::owner(cmd), now).await {
            Ok(items) => {
                info!(user_id = cmd.user_id, count = items.len(), "listed");
                answer::listing(&items)
            }
            Err(e) => {
                error!(error = %e, "list failed");
                answer::try_again()
            }
        }
    }

    async fn revoke(&self, cmd: &SlashCommand, target: RevokeTarget, now: UnixTime) -> Value {
        if let Some(refused) = self.claim(cmd, now).await {
            return refused;
        }
        let owner = mint::owner(cmd);
        let result = match &target {
            RevokeTarget::One(id) => self
                .store
                .revoke(&owner, id, now)
                .await
                .map(|done| answer::revoked_one(id, done)),
            RevokeTarget::All => self
                .store
                .revoke_all(&owner, now)
                .await
                .map(answer::revoked_all),
        };
        result.unwrap_or_else(|e| {
            error!(error = %e, "revoke failed");
            answer::try_again()
        })
    }

    /// `status i-…`: for anyone who may mint for the instance. The trigger claim, the lookup
    /// and the verdicts' read run at once: one round trip.
    async fn status(&self, cmd: &SlashCommand, id: &InstanceId, now: UnixTime) -> Value {
        let (refused, lookup, verdicts) = tokio::join!(
            self.claim(cmd, now),
            self.directory.describe_in(id, None),
            self.store.recent_verdicts(id, STATUS_VERDICTS)
        );
        if let Some(refused) = refused {
            return refused;
        }
        let info = match lookup {
            Ok(Some(info)) if self.may_mint_in(cmd, &info) => info,
            Ok(Some(_)) => {
                info!(user_id = cmd.user_id, instance_id = %id, "status refused: not on the account's allow-list");
                return answer::not_allowed();
            }
            Ok(None) => return answer::unknown_instance(id),
            Err(e) => {
                error!(error = %e, instance_id = %id, "status failed: instance lookup");
                return answer::try_again();
            }
        };
        match verdicts {
            Ok(verdicts) => {
                info!(user_id = cmd.user_id, instance_id = %id, count = verdicts.len(), "status");
                answer::status(id, &info, &verdicts)
            }
            Err(e) => {
                error!(error = %e, instance_id = %id, "status failed: store");
                answer::try_again()
            }
        }
    }

    /// Claims the request's trigger id; an answer to send instead when it is a replay or the
    /// claim could not be made.
    async fn claim(&self, cmd: &SlashCommand, now: UnixTime) -> Option<Value> {
        match self
            .store
            .claim_trigger(&mint::trigger_claim(cmd, now))
            .await
        {
            Ok(true) => None,
            Ok(false) => {
                warn!(user_id = cmd.user_id, "refused replayed trigger_id");
                Some(answer::replayed())
            }
            Err(e) => {
                error!(error = %e, "trigger claim failed");
                Some(answer::try_again())
            }
        }
    }
}

/// A header's value: absent, present once (as text), or repeated. A value that is not visible
/// ASCII counts as present but unusable, so it fails the check it was for.
pub fn single<'a>(headers: &'a HeaderMap, name: &str) -> HeaderValue<'a> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => HeaderValue::Absent,
        (Some(v), None) => HeaderValue::Once(v.to_str().unwrap_or("\u{fffd}")),
        (Some(_), Some(_)) => HeaderValue::Repeated,
    }
}

fn into_response(reply: Reply) -> Response<Body> {
    let builder = Response::builder().status(reply.status);
    let built = match reply.body {
        Some(json) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::Text(json.to_string())),
        None => builder.body(Body::Empty),
    };
    built.unwrap_or_else(|_| {
        let mut fallback = Response::new(Body::Empty);
        *fallback.status_mut() = lambda_http::http::StatusCode::INTERNAL_SERVER_ERROR;
        fallback
    })
}

fn mistake_kind(m: &Mistake) -> &'static str {
    match m {
        Mistake::Unknown(_) => "unknown-input",
        Mistake::BadInstanceId(_) => "bad-instance-id",
        Mistake::BadLifetime(_) => "bad-lifetime",
        Mistake::LifetimeOutOfBounds(_) => "lifetime-out-of-bounds",
        Mistake::BadRevoke(_) => "bad-revoke",
        Mistake::BadStatus(_) => "bad-status",
        Mistake::UnscopedNotAllowed => "unscoped-not-allowed",
        Mistake::BadPlace(_) => "bad-place",
        Mistake::UnknownPlace(_) => "unknown-place",
    }
}

#[cfg(test)]
#[path = "handler_tests.rs"]
mod tests;
