//! Slack's v0 request signature.
//!
//! Slack signs `v0:{X-Slack-Request-Timestamp}:{raw body}` with HMAC-SHA256 keyed by the app's
//! signing secret and sends `v0={hex}` in `X-Slack-Signature`. A request is genuine when the
//! signature matches (compared in constant time) and the timestamp is within five minutes of now
//! in either direction. This module is pure: the caller supplies the header values, the raw body
//! bytes as Lambda delivered them (after base64 decoding) and the time.

use ec2pass_shared::config::SigningSecret;
use ec2pass_shared::time::UnixTime;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// How far a request's timestamp may be from now, either way.
pub const MAX_SKEW_SECS: u64 = 300;

/// Why a request failed verification. Logged; never sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No `X-Slack-Request-Timestamp` header.
    #[error("missing X-Slack-Request-Timestamp")]
    MissingTimestamp,
    /// No `X-Slack-Signature` header.
    #[error("missing X-Slack-Signature")]
    MissingSignature,
    /// A signature header came more than once (or as a comma-joined list).
    #[error("duplicated {0} header")]
    Duplicated(&'static str),
    /// The timestamp is not a plain decimal number.
    #[error("malformed timestamp")]
    MalformedTimestamp,
    /// The signature is not `v0=` and 64 hex digits.
    #[error("malformed signature")]
    MalformedSignature,
    /// The timestamp is too far from now.
    #[error("timestamp {skew_secs}s from now (limit {MAX_SKEW_SECS}s)")]
    Stale {
        /// Distance from now, in seconds.
        skew_secs: u64,
    },
    /// The signature does not match.
    #[error("signature mismatch")]
    Mismatch,
}

/// A header's value as the request carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderValue<'a> {
    /// Not present.
    Absent,
    /// Present once.
    Once(&'a str),
    /// Present more than once.
    Repeated,
}

/// Verifies a request's Slack signature.
pub fn verify(
    secret: &SigningSecret,
    timestamp: HeaderValue<'_>,
    signature: HeaderValue<'_>,
    body: &[u8],
    now: UnixTime,
) -> Result<(), VerifyError> {
    let timestamp = match timestamp {
        HeaderValue::Absent => return Err(VerifyError::MissingTimestamp),
        HeaderValue::Repeated => return Err(VerifyError::Duplicated("X-Slack-Request-Timestamp")),
        HeaderValue::Once(t) => t,
    };
    let signature = match signature {
        HeaderValue::Absent => return Err(VerifyError::MissingSignature),
        HeaderValue::Repeated => return Err(VerifyError::Duplicated("X-Slack-Signature")),
        HeaderValue::Once(s) => s,
    };
    // Function URLs join repeated headers with commas; neither value ever contains one.
    if timestamp.contains(',') {
        return Err(VerifyError::Duplicated("X-Slack-Request-Timestamp"));
    }
    if signature.contains(',') {
        return Err(VerifyError::Duplicated("X-Slack-Signature"));
    }
    let sent_at = parse_timestamp(timestamp).ok_or(VerifyError::MalformedTimestamp)?;
    let expected = parse_signature(signature).ok_or(VerifyError::MalformedSignature)?;
    let skew_secs = now.abs_diff(UnixTime(sent_at));
    if skew_secs > MAX_SKEW_SECS {
        return Err(VerifyError::Stale { skew_secs });
    }
    let mac = mac(secret, timestamp, body).ok_or(VerifyError::Mismatch)?;
    mac.verify_slice(&expected)
        .map_err(|_| VerifyError::Mismatch)
}

/// Signs a request body as Slack does: `v0=` and the hex HMAC. For clients (the demo, tests);
/// the issuer itself only verifies.
pub fn sign(secret: &SigningSecret, timestamp: &str, body: &[u8]) -> String {
    let hex = mac(secret, timestamp, body)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("v0={hex}")
}

/// HMAC-SHA256 over `v0:{timestamp}:{body}`. HMAC takes keys of any length, so this is `None`
/// only in theory.
fn mac(secret: &SigningSecret, timestamp: &str, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose()).ok()?;
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    Some(mac)
}

/// Only plain decimal digits: no sign, no space, no exponent.
fn parse_timestamp(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `v0=` and exactly 64 hex digits, to 32 bytes.
fn parse_signature(s: &str) -> Option<[u8; 32]> {
    let hex_digits = s.strip_prefix("v0=")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use HeaderValue::{Absent, Once, Repeated};

    // Slack's documented example (SPEC §3.1).
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const NOW: UnixTime = UnixTime(1_531_420_618);

    fn check(
        ts: HeaderValue<'_>,
        sig: HeaderValue<'_>,
        body: &str,
        now: UnixTime,
    ) -> Result<(), VerifyError> {
        verify(&SigningSecret::new(SECRET), ts, sig, body.as_bytes(), now)
    }

    #[test]
    fn slacks_documented_test_vector_verifies() {
        assert_eq!(check(Once(TIMESTAMP), Once(SIGNATURE), BODY, NOW), Ok(()));
    }

    #[test]
    fn signing_reproduces_slacks_documented_test_vector() {
        assert_eq!(
            sign(&SigningSecret::new(SECRET), TIMESTAMP, BODY.as_bytes()),
            SIGNATURE
        );
    }

    #[test]
    fn a_tampered_body_is_rejected() {
        let body = BODY.replace("roadrunner", "coyote");
        assert_eq!(
            check(Once(TIMESTAMP), Once(SIGNATURE), &body, NOW),
            Err(VerifyError::Mismatch)
        );
        let body = format!("{BODY}&text=i-0123abcd");
        assert_eq!(
            check(Once(TIMESTAMP), Once(SIGNATURE), &body, NOW),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn a_tampered_timestamp_is_rejected() {
        assert_eq!(
            check(Once("1531420619"), Once(SIGNATURE), BODY, NOW),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn a_different_secret_is_rejected() {
        let r = verify(
            &SigningSecret::new("another"),
            Once(TIMESTAMP),
            Once(SIGNATURE),
            BODY.as_bytes(),
            NOW,
        );
        assert_eq!(r, Err(VerifyError::Mismatch));
    }

    #[test]
    fn the_window_is_300_seconds_either_way() {
        for skew in [-300, 0, 300] {
            assert_eq!(
                check(
                    Once(TIMESTAMP),
                    Once(SIGNATURE),
                    BODY,
                    UnixTime(NOW.0 + skew)
                ),
                Ok(())
            );
        }
        for skew in [-301, 301, 86_400] {
            assert_eq!(
                check(
                    Once(TIMESTAMP),
                    Once(SIGNATURE),
                    BODY,
                    UnixTime(NOW.0 + skew)
                ),
                Err(VerifyError::Stale {
                    skew_secs: skew.unsigned_abs()
                })
            );
        }
    }

    #[test]
    fn missing_duplicated_and_malformed_headers_are_rejected() {
        use VerifyError::*;
        let joined = format!("{SIGNATURE},{SIGNATURE}");
        let cases: Vec<(HeaderValue<'_>, HeaderValue<'_>, VerifyError)> = vec![
            (Absent, Once(SIGNATURE), MissingTimestamp),
            (Once(TIMESTAMP), Absent, MissingSignature),
            (
                Repeated,
                Once(SIGNATURE),
                Duplicated("X-Slack-Request-Timestamp"),
            ),
            (Once(TIMESTAMP), Repeated, Duplicated("X-Slack-Signature")),
            (
                Once(TIMESTAMP),
                Once(&joined),
                Duplicated("X-Slack-Signature"),
            ),
            (
                Once("1531420618,1531420618"),
                Once(SIGNATURE),
                Duplicated("X-Slack-Request-Timestamp"),
            ),
            (Once(""), Once(SIGNATURE), MalformedTimestamp),
            (Once("+1531420618"), Once(SIGNATURE), MalformedTimestamp),
            (Once(" 1531420618"), Once(SIGNATURE), MalformedTimestamp),
            (Once("1.5e9"), Once(SIGNATURE), MalformedTimestamp),
            (
                Once("99999999999999999999"),
                Once(SIGNATURE),
                MalformedTimestamp,
            ),
            (
                Once(TIMESTAMP),
                Once("v1=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"),
                MalformedSignature,
            ),
            (Once(TIMESTAMP), Once("v0=a2114d57"), MalformedSignature),
            (
                Once(TIMESTAMP),
                Once("v0=zz114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"),
                MalformedSignature,
            ),
            (
                Once(TIMESTAMP),
                Once("a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"),
                MalformedSignature,
            ),
            (Once(TIMESTAMP), Once(""), MalformedSignature),
        ];
        for (ts, sig, expected) in cases {
            assert_eq!(
                check(ts, sig, BODY, NOW),
                Err(expected.clone()),
                "{ts:?} {sig:?}"
            );
        }
    }

    #[test]
    fn an_uppercase_hex_signature_is_still_the_same_signature() {
        let upper = format!("v0={}", SIGNATURE[3..].to_uppercase());
        assert_eq!(check(Once(TIMESTAMP), Once(&upper), BODY, NOW), Ok(()));
    }
}
