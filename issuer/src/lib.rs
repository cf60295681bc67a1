//! The ec2pass issuer: a slash command in (Slack or Mattermost), a one-time password out.
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
//! 7. the store ([`ec2pass_shared::store`]): the Slack `trigger_id` is claimed first (for a
//!    scoped mint concurrently with the lookup), then one DynamoDB transaction counts the mint
//!    against the rate limit, stores the digest and adds it to the requester's ledger.
//! 8. [`answer`]: the ephemeral Block Kit answer, the only place the plaintext ever goes.
//!
//! [`front`] says what differs between the two chats that post here (Slack and Mattermost): the
//! path, how a request proves it is the chat's, and how an answer is written. A button pressed
//! on a Slack answer comes back through the same function URL and the same signature check.
//!
//! [`followup`] is the other half of the loop: what became of each password, told to its
//! requester through the command's reply URL (or the Slack bot's direct message), from the
//! guard's alerts and the schedule (the `followup` binary); [`channel`] forwards deny alerts to
//! a chat channel through Amazon Q Developer. [`chat`] is the HTTP edge both post through.
//!
//! [`handler`] strings them together; [`cold_start`] builds the deployed issuer once, with the
//! signing secret that [`secret`] reads from Secrets Manager. `main.rs` only adds the Lambda
//! runtime.

pub mod answer;
pub mod authorize;
pub mod channel;
pub mod chat;
pub mod cold_start;
pub mod command;
pub mod followup;
pub mod front;
pub mod handler;
pub mod instances;
pub mod mint;
pub mod request;
pub mod secret;
pub mod verify;
