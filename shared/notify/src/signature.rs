//! The Standard Webhooks signature (<https://www.standardwebhooks.com/>): `webhook-signature` is
//! `v1,` + base64 of HMAC-SHA256 over `<webhook-id>.<webhook-timestamp>.<body>`, keyed with the
//! base64-decoded part of the `whsec_…` secret.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// The secret is not a `whsec_` + base64 string.
#[derive(Debug, thiserror::Error)]
#[error("the signing secret is not whsec_ followed by base64")]
pub struct BadSecret;

/// The `webhook-id` of the delivery of event `event_id` to endpoint `webhook_id`: the same for
/// every attempt, every replay and every notifier instance, so receivers can de-duplicate by it.
pub fn webhook_id(webhook_id: &str, event_id: &str) -> String {
    let digest = Sha256::digest(format!("{webhook_id}/{event_id}").as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

/// The `webhook-signature` header of `body` sent as `id` at `timestamp` (Unix seconds).
///
/// # Errors
/// The secret is not in the `whsec_…` form.
pub fn sign(
    secret: &SecretString,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, BadSecret> {
    let raw = secret
        .expose_secret()
        .strip_prefix("whsec_")
        .ok_or(BadSecret)?;
    let key = STANDARD.decode(raw).map_err(|_| BadSecret)?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(id.as_bytes());
    context.update(b".");
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    Ok(format!("v1,{}", STANDARD.encode(context.sign().as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn the_reference_example() {
        let secret = SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(sign(&SecretString::from("nope"), "m", 1, b"").is_err());
    }

    #[test]
    fn the_id_is_stable_and_differs_per_endpoint_and_event() {
        let a = webhook_id("w1", "e1");
        assert_eq!(a, webhook_id("w1", "e1"));
        assert_ne!(a, webhook_id("w2", "e1"));
        assert_ne!(a, webhook_id("w1", "e2"));
        assert!(a.starts_with("msg_") && a.len() == 36);
    }
}
