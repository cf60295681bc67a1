//! The ec2pass issuer: a Slack slash command in, a one-time password out.
//!
//! A request flows through the modules in this order:
//!
//! 1. [`request`]: the HTTP edge. Only `POST`, form-encoded, at most 8 KiB; the form is read
//!    from the raw bytes.
//! 2. [`verify`]: Slack's v0 signature over those bytes, within five minutes, in constant time.
//! 3. [`authorize`]: the optional allow-lists, on Slack ids only.
//! 4. [`command`]: the grammar of the text after `/ec2pass`.
//! 5. [`instances`]: for a scoped password, the instance is looked up in EC2 (name and state).
//! 6. [`mint`]: a fresh password and the all-or-nothing write that stores its digest.
//! 7. the store ([`ec2pass_shared::store`]): one DynamoDB transaction claims the Slack
//!    `trigger_id`, counts the mint against the rate limit and stores the digest.
//! 8. [`answer`]: the ephemeral Block Kit answer, the only place the plaintext ever goes.
//!
//! [`handler`] strings them together; [`secret`] reads the signing secret at cold start.
//! `main.rs` only wires real clients into [`handler::Issuer`].

pub mod answer;
pub mod authorize;
pub mod command;
pub mod handler;
pub mod instances;
pub mod mint;
pub mod request;
pub mod secret;
pub mod verify;
