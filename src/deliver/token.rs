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
use crate::domain::LinkKey;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the MAC kept in an unsubscribe token: 128 bits is plenty against
/// forgery and keeps the link short.
const UNSUB_MAC_LEN: usize = 16;

/// First byte of a current unsubscribe token (the older ones had none: 24 bytes).
const KEYED: u8 = 2;

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

/// Whom a genuine unsubscribe (or preferences) link names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkSubject {
    /// The subscriber's own random key: never anyone else's.
    Key(LinkKey),
    /// A link mailed before links named keys: a row id, which older versions
    /// could give to another reader after a removal. The store decides whether
    /// it still names the person it was mailed to (see `Store::subscriber_by_legacy_id`).
    LegacyId(i64),
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Whether `tag` is the (truncated) MAC of `parts` under one of the secrets
/// (current, then previous): links signed before a rotation keep working.
fn signed_by_any(secret: &Secret, parts: &[&[u8]], tag: &[u8]) -> bool {
    secret
        .all()
        .any(|k| bool::from(tag.ct_eq(&mac(k, parts)[..tag.len()])))
}

fn keyed_parts<'a>(list_id: &'a str, key: &'a LinkKey) -> [&'a [u8]; 4] {
    [b"unsubscribe-key:", list_id.as_bytes(), b":", &key.0]
}

/// The unsubscribe token of the subscriber whose link key is `key`, on list
/// `list_id`: base64url(2 ‖ key ‖ first 16 bytes of the HMAC). It names no row
/// id and no part of the address.
pub fn unsubscribe_token(secret: &Secret, list_id: &str, key: &LinkKey) -> String {
    let mut raw = [0u8; 1 + 16 + UNSUB_MAC_LEN];
    raw[0] = KEYED;
    raw[1..17].copy_from_slice(&key.0);
    raw[17..].copy_from_slice(&mac(secret.bytes(), &keyed_parts(list_id, key))[..UNSUB_MAC_LEN]);
    URL_SAFE_NO_PAD.encode(raw)
}

fn legacy_id_text(id: i64) -> String {
    id.to_string()
}

/// The token older versions mailed: base64url(id as 8 bytes big-endian ‖ MAC).
/// Only tests and the migration story need to make one.
pub fn legacy_unsubscribe_token(secret: &Secret, list_id: &str, subscriber_id: i64) -> String {
    let id = legacy_id_text(subscriber_id);
    let m = mac(
        secret.bytes(),
        &[b"unsubscribe:", list_id.as_bytes(), b":", id.as_bytes()],
    );
    let mut raw = [0u8; 8 + UNSUB_MAC_LEN];
    raw[..8].copy_from_slice(&subscriber_id.to_be_bytes());
    raw[8..].copy_from_slice(&m[..UNSUB_MAC_LEN]);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Checks an unsubscribe token for `list_id`; returns whom it names.
pub fn verify_unsubscribe(
    secret: &Secret,
    list_id: &str,
    token: &str,
) -> Result<LinkSubject, TokenError> {
    let raw = URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| TokenError::Malformed)?;
    match raw.len() {
        n if n == 1 + 16 + UNSUB_MAC_LEN && raw[0] == KEYED => {
            let key = LinkKey(raw[1..17].try_into().expect("16 bytes"));
            if signed_by_any(secret, &keyed_parts(list_id, &key), &raw[17..]) {
                Ok(LinkSubject::Key(key))
            } else {
                Err(TokenError::BadSignature)
            }
        }
        n if n == 8 + UNSUB_MAC_LEN => {
            let id = i64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
            let text = legacy_id_text(id);
            let parts: [&[u8]; 4] = [b"unsubscribe:", list_id.as_bytes(), b":", text.as_bytes()];
            if signed_by_any(secret, &parts, &raw[8..]) {
                Ok(LinkSubject::LegacyId(id))
            } else {
                Err(TokenError::BadSignature)
            }
        }
        _ => Err(TokenError::Malformed),
    }
}

fn confirm_parts<'a>(email: &'a str, expires: &'a str) -> [&'a [u8]; 4] {
    [b"confirm:", email.as_bytes(), b":", expires.as_bytes()]
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
        URL_SAFE_NO_PAD.encode(mac(secret.bytes(), &confirm_parts(email, &exp.to_string())))
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
    if !signed_by_any(secret, &confirm_parts(email, &exp.to_string()), &sig) {
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

    fn key(n: u8) -> LinkKey {
        LinkKey([n; 16])
    }

    #[test]
    fn unsubscribe_token_round_trips_to_the_subscribers_key() {
        for k in [key(0), key(7), LinkKey::random()] {
            let t = unsubscribe_token(&secret(), LIST, &k);
            assert_eq!(
                verify_unsubscribe(&secret(), LIST, &t),
                Ok(LinkSubject::Key(k))
            );
        }
    }

    #[test]
    fn unsubscribe_token_is_url_safe() {
        let t = unsubscribe_token(&secret(), LIST, &LinkKey::random());
        assert!(t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn tampered_unsubscribe_token_is_rejected() {
        let t = unsubscribe_token(&secret(), LIST, &key(7));
        // Point the token at another subscriber by changing the key bytes.
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[5] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(
            verify_unsubscribe(&secret(), LIST, &forged),
            Err(TokenError::BadSignature)
        );
        // Flip one bit of the MAC.
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[20] ^= 1;
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
        let t = unsubscribe_token(&Secret::new("another-secret-of-16+"), LIST, &key(7));
        assert_eq!(
            verify_unsubscribe(&secret(), LIST, &t),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn unsubscribe_token_of_another_list_is_rejected() {
        let t = unsubscribe_token(&secret(), "other.example.org", &key(7));
        assert_eq!(
            verify_unsubscribe(&secret(), LIST, &t),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn links_signed_with_a_previous_secret_still_verify_and_new_ones_use_the_current() {
        let old = Secret::new("the-old-secret-of-2025");
        let rotated =
            Secret::new("the-new-secret-of-2026").with_previous(["the-old-secret-of-2025"]);
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap();
        let exp = now + chrono::Duration::hours(1);
        // Mailed before the rotation: still accepted.
        let t = unsubscribe_token(&old, LIST, &key(3));
        assert_eq!(
            verify_unsubscribe(&rotated, LIST, &t),
            Ok(LinkSubject::Key(key(3)))
        );
        let c = confirm_token(&old, "jean@example.com", exp);
        assert!(verify_confirm(&rotated, &c, now).is_ok());
        // Made after it: signed with the new secret, which the old one refuses.
        let t = unsubscribe_token(&rotated, LIST, &key(3));
        assert_eq!(
            verify_unsubscribe(&Secret::new("the-new-secret-of-2026"), LIST, &t),
            Ok(LinkSubject::Key(key(3)))
        );
        assert_eq!(
            verify_unsubscribe(&old, LIST, &t),
            Err(TokenError::BadSignature)
        );
        // Once the old secret is dropped, its links stop working.
        let c = confirm_token(&old, "jean@example.com", exp);
        assert_eq!(
            verify_confirm(&Secret::new("the-new-secret-of-2026"), &c, now),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_legacy_id_token_is_recognised_as_such_and_never_as_a_key() {
        let t = legacy_unsubscribe_token(&secret(), LIST, 42);
        assert_eq!(
            verify_unsubscribe(&secret(), LIST, &t),
            Ok(LinkSubject::LegacyId(42))
        );
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[7] = 43;
        assert_eq!(
            verify_unsubscribe(&secret(), LIST, &URL_SAFE_NO_PAD.encode(&raw)),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn unsubscribe_token_contains_no_part_of_the_address() {
        // The token is built from the random key only; whatever the address,
        // nothing of it leaks, neither as text nor once decoded.
        let t = unsubscribe_token(&secret(), LIST, &key(b'j'));
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
