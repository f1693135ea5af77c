//! Signed tokens for the links in the emails: unsubscribe (opaque, never shows
//! the address) and sign-up confirmation (carries the address and an expiry).
//! HMAC-SHA256 under `DIGESTIF_SECRET`, compared in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the MAC kept in an unsubscribe token: 128 bits is plenty against
/// forgery and keeps the link short.
const UNSUB_MAC_LEN: usize = 16;

/// Why a token was refused. Deliberately vague for the outside world: the HTTP
/// layer shows the same page for every variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the link is malformed")]
    Malformed,
    #[error("the link's signature does not match")]
    BadSignature,
    #[error("the link has expired")]
    Expired,
}

fn mac(secret: &Secret, parts: &[&[u8]]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(secret.bytes()).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn unsubscribe_mac(secret: &Secret, list_id: &str, subscriber_id: i64) -> [u8; 32] {
    mac(
        secret,
        &[
            b"unsubscribe:",
            list_id.as_bytes(),
            b":",
            subscriber_id.to_string().as_bytes(),
        ],
    )
}

/// The unsubscribe token of `subscriber_id` on list `list_id`:
/// base64url(id as 8 bytes big-endian ‖ first 16 bytes of the HMAC).
pub fn unsubscribe_token(secret: &Secret, list_id: &str, subscriber_id: i64) -> String {
    let mut raw = [0u8; 8 + UNSUB_MAC_LEN];
    raw[..8].copy_from_slice(&subscriber_id.to_be_bytes());
    raw[8..].copy_from_slice(&unsubscribe_mac(secret, list_id, subscriber_id)[..UNSUB_MAC_LEN]);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Checks an unsubscribe token for `list_id`; returns the subscriber id it names.
pub fn verify_unsubscribe(secret: &Secret, list_id: &str, token: &str) -> Result<i64, TokenError> {
    let raw = URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| TokenError::Malformed)?;
    if raw.len() != 8 + UNSUB_MAC_LEN {
        return Err(TokenError::Malformed);
    }
    let id = i64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
    let expected = unsubscribe_mac(secret, list_id, id);
    if bool::from(raw[8..].ct_eq(&expected[..UNSUB_MAC_LEN])) {
        Ok(id)
    } else {
        Err(TokenError::BadSignature)
    }
}

fn confirm_mac(secret: &Secret, email: &str, expires: i64) -> [u8; 32] {
    mac(
        secret,
        &[
            b"confirm:",
            email.as_bytes(),
            b":",
            expires.to_string().as_bytes(),
        ],
    )
}

/// The confirmation token of a sign-up: base64url(expiry as 8 bytes ‖ email) `.`
/// base64url(HMAC). It carries the address (the confirming click needs it).
pub fn confirm_token(secret: &Secret, email: &str, expires: DateTime<Utc>) -> String {
    let exp = expires.timestamp();
    let mut payload = Vec::with_capacity(8 + email.len());
    payload.extend_from_slice(&exp.to_be_bytes());
    payload.extend_from_slice(email.as_bytes());
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(confirm_mac(secret, email, exp))
    )
}

/// Checks a confirmation token at `now`; returns the address it confirms.
pub fn verify_confirm(
    secret: &Secret,
    token: &str,
    now: DateTime<Utc>,
) -> Result<String, TokenError> {
    let (payload, sig) = token.trim().split_once('.').ok_or(TokenError::Malformed)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?;
    if payload.len() <= 8 || sig.len() != 32 {
        return Err(TokenError::Malformed);
    }
    let exp = i64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
    let email = std::str::from_utf8(&payload[8..]).map_err(|_| TokenError::Malformed)?;
    let expected = confirm_mac(secret, email, exp);
    if !bool::from(sig.as_slice().ct_eq(&expected)) {
        return Err(TokenError::BadSignature);
    }
    if now.timestamp() > exp {
        return Err(TokenError::Expired);
    }
    Ok(email.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn secret() -> Secret {
        Secret::new("0123456789abcdef-test-secret")
    }

    const LIST: &str = "l-essentiel.news.example.com";

    #[test]
    fn unsubscribe_token_round_trips_to_the_subscriber_id() {
        for id in [1, 42, 1_000_000, i64::MAX] {
            let t = unsubscribe_token(&secret(), LIST, id);
            assert_eq!(verify_unsubscribe(&secret(), LIST, &t), Ok(id));
        }
    }

    #[test]
    fn unsubscribe_token_is_url_safe() {
        let t = unsubscribe_token(&secret(), LIST, 123_456_789);
        assert!(t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn tampered_unsubscribe_token_is_rejected() {
        let t = unsubscribe_token(&secret(), LIST, 7);
        // Point the token at another subscriber by changing the id bytes.
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[7] = 8;
        let forged = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(
            verify_unsubscribe(&secret(), LIST, &forged),
            Err(TokenError::BadSignature)
        );
        // Flip one bit of the MAC.
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[12] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(&raw);
        assert!(verify_unsubscribe(&secret(), LIST, &forged).is_err());
        assert_eq!(
            verify_unsubscribe(&secret(), LIST, "not a token!"),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            verify_unsubscribe(&secret(), LIST, &t[..t.len() - 2]),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn unsubscribe_token_signed_with_another_secret_is_rejected() {
        let t = unsubscribe_token(&Secret::new("another-secret-of-16+"), LIST, 7);
        assert_eq!(
            verify_unsubscribe(&secret(), LIST, &t),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn unsubscribe_token_of_another_list_is_rejected() {
        let t = unsubscribe_token(&secret(), "other.example.org", 7);
        assert_eq!(
            verify_unsubscribe(&secret(), LIST, &t),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn unsubscribe_token_contains_no_part_of_the_address() {
        // The token is built from the id only; whatever the address, nothing of it leaks,
        // neither as text nor once decoded.
        let t = unsubscribe_token(&secret(), LIST, 31);
        let decoded = URL_SAFE_NO_PAD.decode(&t).unwrap();
        let decoded = String::from_utf8_lossy(&decoded).to_lowercase();
        for part in ["jean", "dupont", "example", "@"] {
            assert!(!t.to_lowercase().contains(part), "{t} contains {part}");
            assert!(!decoded.contains(part));
        }
    }

    #[test]
    fn confirm_token_round_trips_before_expiry() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap();
        let exp = now + chrono::Duration::hours(48);
        let t = confirm_token(&secret(), "jean@example.com", exp);
        assert_eq!(
            verify_confirm(&secret(), &t, now),
            Ok("jean@example.com".to_string())
        );
        assert_eq!(
            verify_confirm(&secret(), &t, exp),
            Ok("jean@example.com".to_string())
        );
    }

    #[test]
    fn expired_confirm_token_is_rejected() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap();
        let t = confirm_token(&secret(), "jean@example.com", now);
        assert_eq!(
            verify_confirm(&secret(), &t, now + chrono::Duration::seconds(1)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn confirm_token_with_a_changed_address_or_expiry_is_rejected() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap();
        let t = confirm_token(&secret(), "jean@example.com", now);
        let (_, sig) = t.split_once('.').unwrap();
        // Same signature, later expiry.
        let mut payload = (now.timestamp() + 86_400).to_be_bytes().to_vec();
        payload.extend_from_slice(b"jean@example.com");
        let forged = format!("{}.{sig}", URL_SAFE_NO_PAD.encode(&payload));
        assert_eq!(
            verify_confirm(&secret(), &forged, now),
            Err(TokenError::BadSignature)
        );
        // Same signature, another address.
        let mut payload = now.timestamp().to_be_bytes().to_vec();
        payload.extend_from_slice(b"evil@example.com");
        let forged = format!("{}.{sig}", URL_SAFE_NO_PAD.encode(&payload));
        assert_eq!(
            verify_confirm(&secret(), &forged, now),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify_confirm(&secret(), "garbage", now),
            Err(TokenError::Malformed)
        );
    }
}
