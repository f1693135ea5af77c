//! The VERP return path: each message's envelope sender names its subscriber and
//! issue, signed, so that what comes back to it is matched without trusting what
//! the report says.
//!
//! `bounces@news.example.com` becomes `bounces+42-20261127-<mac>@news.example.com`:
//! the subscriber id, the issue date and 80 bits of HMAC-SHA256 under
//! `DIGESTIF_SECRET`, in lowercase base32. Digits, `-` and lowercase letters only,
//! since some MTAs lowercase local parts on the way back.

use std::fmt;

use chrono::NaiveDate;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// Bytes of the MAC kept in a tag: 80 bits, 16 base32 characters.
const TAG_MAC_LEN: usize = 10;

/// The configured return path, `local@domain`, checked when the config is read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReturnPath {
    local: String,
    domain: String,
}

/// Why `[bounces] return_path` cannot be used: the value as written, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bounces.return_path {given:?} {problem}: write it as \"bounces@news.example.com\"")]
pub struct ReturnPathError {
    pub given: String,
    pub problem: ReturnPathProblem,
}

/// What is wrong with a `[bounces] return_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReturnPathProblem {
    #[error("has no @")]
    NoAt,
    #[error("is not an address")]
    NotAnAddress,
    #[error("must not contain '+' (digestif adds +tag itself)")]
    Plus,
    #[error("may use only letters, digits, '.', '_' and '-'")]
    Characters,
}

impl TryFrom<String> for ReturnPath {
    type Error = ReturnPathError;
    fn try_from(s: String) -> Result<ReturnPath, ReturnPathError> {
        let bad = |problem: ReturnPathProblem| ReturnPathError {
            given: s.clone(),
            problem,
        };
        let (local, domain) = s
            .trim()
            .rsplit_once('@')
            .ok_or_else(|| bad(ReturnPathProblem::NoAt))?;
        if local.is_empty() || domain.is_empty() || !domain.contains('.') {
            return Err(bad(ReturnPathProblem::NotAnAddress));
        }
        if local.contains('+') {
            return Err(bad(ReturnPathProblem::Plus));
        }
        if !local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            || !domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b))
        {
            return Err(bad(ReturnPathProblem::Characters));
        }
        Ok(ReturnPath {
            local: local.to_ascii_lowercase(),
            domain: domain.to_ascii_lowercase(),
        })
    }
}

impl From<ReturnPath> for String {
    fn from(r: ReturnPath) -> String {
        r.to_string()
    }
}

impl fmt::Display for ReturnPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// What a tag names: one subscriber's copy of one issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub subscriber_id: i64,
    pub issue: NaiveDate,
}

/// What an address turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagCheck {
    /// Not `local+…@domain` of this return path.
    NotOurs,
    /// A tag whose signature matches.
    Verified(Tag),
    /// Our form, but the tag is malformed or its signature does not match.
    Forged,
}

fn tag_mac(key: &[u8], subscriber_id: i64, date: &str) -> [u8; TAG_MAC_LEN] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(b"verp:");
    m.update(subscriber_id.to_string().as_bytes());
    m.update(b":");
    m.update(date.as_bytes());
    let full = m.finalize().into_bytes();
    full[..TAG_MAC_LEN].try_into().expect("TAG_MAC_LEN bytes")
}

/// RFC 4648 base32, lowercase, without padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

impl ReturnPath {
    /// The envelope sender of `subscriber_id`'s copy of the issue of `issue`.
    pub fn address_for(&self, secret: &Secret, subscriber_id: i64, issue: NaiveDate) -> String {
        let date = issue.format("%Y%m%d").to_string();
        let mac = base32(&tag_mac(secret.bytes(), subscriber_id, &date));
        format!(
            "{}+{subscriber_id}-{date}-{mac}@{}",
            self.local, self.domain
        )
    }

    /// Reads the tag of `address` (case-insensitive), checking its signature.
    pub fn check(&self, secret: &Secret, address: &str) -> TagCheck {
        let address = address.trim().to_ascii_lowercase();
        let Some((local, domain)) = address.rsplit_once('@') else {
            return TagCheck::NotOurs;
        };
        let Some(tag) = local
            .strip_prefix(self.local.as_str())
            .and_then(|rest| rest.strip_prefix('+'))
        else {
            return TagCheck::NotOurs;
        };
        if domain != self.domain {
            return TagCheck::NotOurs;
        }
        let mut parts = tag.split('-');
        let (Some(id), Some(date), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return TagCheck::Forged;
        };
        let (Ok(subscriber_id), Ok(issue)) =
            (id.parse::<i64>(), NaiveDate::parse_from_str(date, "%Y%m%d"))
        else {
            return TagCheck::Forged;
        };
        // Compare the canonical spelling: "007" or a reformatted date is not ours.
        if subscriber_id.to_string() != id || date.len() != 8 {
            return TagCheck::Forged;
        }
        // The current secret or a previous one: mail sent before a rotation still bounces.
        let signed = secret.all().any(|key| {
            let expected = base32(&tag_mac(key, subscriber_id, date));
            bool::from(expected.as_bytes().ct_eq(mac.as_bytes()))
        });
        if signed {
            TagCheck::Verified(Tag {
                subscriber_id,
                issue,
            })
        } else {
            TagCheck::Forged
        }
    }

    /// The first of `addresses` that is ours: a verified tag, else `Forged` if one
    /// looked like ours, else `NotOurs`.
    pub fn find(&self, secret: &Secret, addresses: &[String]) -> TagCheck {
        let mut seen_forged = false;
        for a in addresses {
            match self.check(secret, a) {
                TagCheck::Verified(t) => return TagCheck::Verified(t),
                TagCheck::Forged => seen_forged = true,
                TagCheck::NotOurs => {}
            }
        }
        if seen_forged {
            TagCheck::Forged
        } else {
            TagCheck::NotOurs
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp() -> ReturnPath {
        ReturnPath::try_from("Bounces@News.Example.com".to_string()).unwrap()
    }

    fn secret() -> Secret {
        Secret::new("0123456789abcdef-test-secret")
    }

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
    }

    #[test]
    fn base32_follows_rfc_4648() {
        // RFC 4648 section 10, lowercased, without padding.
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
        assert_eq!(base32(b"fo"), "mzxq");
        assert_eq!(base32(b""), "");
    }

    #[test]
    fn a_tag_round_trips_and_survives_case_changes() {
        let a = rp().address_for(&secret(), 42, date());
        assert!(a.starts_with("bounces+42-20261127-"), "{a}");
        assert!(a.ends_with("@news.example.com"));
        assert!(a.len() <= 64, "{a}");
        let want = TagCheck::Verified(Tag {
            subscriber_id: 42,
            issue: date(),
        });
        assert_eq!(rp().check(&secret(), &a), want);
        assert_eq!(rp().check(&secret(), &a.to_uppercase()), want);
    }

    #[test]
    fn a_changed_or_foreign_tag_is_forged() {
        let a = rp().address_for(&secret(), 42, date());
        let other = a.replacen("+42-", "+43-", 1);
        assert_eq!(rp().check(&secret(), &other), TagCheck::Forged);
        let other = a.replacen("20261127", "20261128", 1);
        assert_eq!(rp().check(&secret(), &other), TagCheck::Forged);
        let b = rp().address_for(&Secret::new("another-secret-of-16+"), 42, date());
        assert_eq!(rp().check(&secret(), &b), TagCheck::Forged);
        // … unless that secret is a previous one.
        let rotated = Secret::new("a-newer-secret-of-16+").with_previous(["another-secret-of-16+"]);
        assert!(matches!(rp().check(&rotated, &b), TagCheck::Verified(_)));
        assert_eq!(
            rp().check(&secret(), "bounces+42@news.example.com"),
            TagCheck::Forged
        );
        assert_eq!(
            rp().check(&secret(), "bounces+042-20261127-aaaa@news.example.com"),
            TagCheck::Forged
        );
    }

    #[test]
    fn other_addresses_are_not_ours() {
        let a = rp().address_for(&secret(), 42, date());
        for other in [
            a.replace("news.example.com", "example.org"),
            "bounces@news.example.com".into(),
            "bouncesx+1-2-3@news.example.com".into(),
            "reader@example.org".into(),
            "no address".into(),
        ] {
            assert_eq!(rp().check(&secret(), &other), TagCheck::NotOurs, "{other}");
        }
    }

    #[test]
    fn the_return_path_is_checked() {
        for bad in [
            "bounces",
            "bounces+x@news.example.com",
            "@x.org",
            "a b@x.org",
        ] {
            assert!(ReturnPath::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_return_path_gives_the_problem_it_has() {
        let problem = |s: &str| ReturnPath::try_from(s.to_string()).unwrap_err().problem;
        assert_eq!(problem("bounces"), ReturnPathProblem::NoAt);
        assert_eq!(problem("@x.org"), ReturnPathProblem::NotAnAddress);
        assert_eq!(
            problem("bounces@localhost"),
            ReturnPathProblem::NotAnAddress
        );
        assert_eq!(
            problem("bounces+x@news.example.com"),
            ReturnPathProblem::Plus
        );
        assert_eq!(problem("a b@x.org"), ReturnPathProblem::Characters);
        assert_eq!(
            ReturnPath::try_from("bounces+x@news.example.com".to_string())
                .unwrap_err()
                .to_string(),
            "bounces.return_path \"bounces+x@news.example.com\" must not contain '+' (digestif \
             adds +tag itself): write it as \"bounces@news.example.com\""
        );
    }
}
