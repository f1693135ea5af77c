//! Amazon SNS messages posted to an HTTP endpoint, checked before anything is read
//! from them: the signature (SignatureVersion 1 = SHA1withRSA, 2 = SHA256withRSA over
//! SNS's canonical string) must verify against a signing certificate the operator
//! pinned (`[bounces] ses_certificate`; the service never fetches one), the
//! `SigningCertURL` must have the shape of SNS's own, and the topic must be one of
//! `[bounces] ses_topic_arns` (every AWS account's topic is signed with the same key),
//! and its `Timestamp` must be recent: a signed message replayed later is refused.

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier as _;
use rsa::RsaPublicKey;
use serde::Deserialize;

/// Oldest signed message read, by its `Timestamp` (when SNS published it): SNS's
/// default delivery policy stops retrying within a minute; AWS's own message
/// validators take an hour too. Older, it is a replay.
pub const MAX_AGE: TimeDelta = TimeDelta::hours(1);

/// How far a `Timestamp` may be ahead of our clock (clocks drift apart).
pub const MAX_SKEW: TimeDelta = TimeDelta::minutes(5);

/// What SNS posts (the fields it signs, and the signature).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Envelope {
    #[serde(rename = "Type")]
    pub kind: String,
    pub message_id: String,
    pub topic_arn: String,
    pub message: String,
    pub timestamp: String,
    pub subject: Option<String>,
    pub token: Option<String>,
    #[serde(rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    pub signature_version: Option<String>,
    pub signature: Option<String>,
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: Option<String>,
}

/// What an SNS message is, once it verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

/// Why a posted message is refused (the request is answered 403, nothing changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The body is not an SNS message (not its JSON).
    NotSns(String),
    /// `Timestamp` is not an ISO 8601 time.
    BadTimestamp {
        timestamp: String,
        error: chrono::ParseError,
    },
    /// A (un)subscribe confirmation without a field it must carry.
    Missing {
        kind: String,
        field: &'static str,
    },
    /// A `Type` SNS does not send.
    UnknownType(String),
    Unsigned,
    UnknownSignatureVersion(String),
    BadCertUrl(String),
    BadSignature,
    OtherTopic(String),
    /// Signed longer than [`MAX_AGE`] ago: a replay, or a delivery retried that long.
    Stale(String),
    /// Signed more than [`MAX_SKEW`] ahead of our clock.
    FromTheFuture(String),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::NotSns(e) => write!(f, "not an SNS message: {e}"),
            Refused::BadTimestamp { timestamp, error } => write!(
                f,
                "not an SNS message: Timestamp {timestamp:?} is not an ISO 8601 time: {error}"
            ),
            Refused::Missing { kind, field } => {
                write!(f, "not an SNS message: a {kind} without {field}")
            }
            Refused::UnknownType(t) => write!(f, "not an SNS message: unknown Type {t:?}"),
            Refused::Unsigned => f.write_str("the message is not signed"),
            Refused::UnknownSignatureVersion(v) => {
                write!(f, "unknown SignatureVersion {v:?} (1 and 2 are read)")
            }
            Refused::BadCertUrl(u) => write!(
                f,
                "SigningCertURL {u:?} is not an https://sns.<region>.amazonaws.com/….pem address"
            ),
            Refused::BadSignature => f.write_str(
                "the signature does not verify against bounces.ses_certificate (forged, or SNS \
                 signs with a newer certificate: add it to that file)",
            ),
            Refused::OtherTopic(t) => write!(f, "topic {t:?} is not in bounces.ses_topic_arns"),
            Refused::Stale(t) => write!(
                f,
                "Timestamp {t} is more than {} hour(s) old: a replay (or an SNS delivery policy \
                 retrying longer than that)",
                MAX_AGE.num_hours()
            ),
            Refused::FromTheFuture(t) => write!(
                f,
                "Timestamp {t} is more than {} minutes ahead of this server's clock (is the \
                 clock right?)",
                MAX_SKEW.num_minutes()
            ),
        }
    }
}

impl Envelope {
    pub fn kind(&self) -> Option<Kind> {
        match self.kind.as_str() {
            "Notification" => Some(Kind::Notification),
            "SubscriptionConfirmation" => Some(Kind::SubscriptionConfirmation),
            "UnsubscribeConfirmation" => Some(Kind::UnsubscribeConfirmation),
            _ => None,
        }
    }

    /// Whether `Timestamp` is within [`MAX_AGE`] before `now` and [`MAX_SKEW`] after.
    pub fn fresh(&self, now: DateTime<Utc>) -> Result<(), Refused> {
        let at = DateTime::parse_from_rfc3339(self.timestamp.trim())
            .map_err(|error| Refused::BadTimestamp {
                timestamp: self.timestamp.clone(),
                error,
            })?
            .with_timezone(&Utc);
        if at < now - MAX_AGE {
            Err(Refused::Stale(self.timestamp.clone()))
        } else if at > now + MAX_SKEW {
            Err(Refused::FromTheFuture(self.timestamp.clone()))
        } else {
            Ok(())
        }
    }

    /// The string SNS signs: chosen fields as `name\nvalue\n`, in byte order of
    /// their names; `Subject` only when present, the subscription fields only on
    /// (un)subscribe confirmations.
    pub fn canonical(&self) -> Result<String, Refused> {
        let mut fields: Vec<(&str, &str)> =
            vec![("Message", &self.message), ("MessageId", &self.message_id)];
        match self.kind() {
            Some(Kind::Notification) => {
                if let Some(s) = &self.subject {
                    fields.push(("Subject", s));
                }
                fields.push(("Timestamp", &self.timestamp));
            }
            Some(Kind::SubscriptionConfirmation | Kind::UnsubscribeConfirmation) => {
                let missing = |field| Refused::Missing {
                    kind: self.kind.clone(),
                    field,
                };
                fields.push((
                    "SubscribeURL",
                    self.subscribe_url
                        .as_deref()
                        .ok_or_else(|| missing("SubscribeURL"))?,
                ));
                fields.push(("Timestamp", &self.timestamp));
                fields.push((
                    "Token",
                    self.token.as_deref().ok_or_else(|| missing("Token"))?,
                ));
            }
            None => return Err(Refused::UnknownType(self.kind.clone())),
        }
        fields.push(("TopicArn", &self.topic_arn));
        fields.push(("Type", &self.kind));
        Ok(fields
            .into_iter()
            .map(|(k, v)| format!("{k}\n{v}\n"))
            .collect())
    }
}

/// Whether `url` has the shape of SNS's signing certificate addresses:
/// `https://sns.<region>.amazonaws.com[.cn]/….pem`, nothing else.
pub fn is_sns_cert_url(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    let host = u.host_str().unwrap_or("");
    let region = host
        .strip_prefix("sns.")
        .and_then(|h| {
            h.strip_suffix(".amazonaws.com")
                .or_else(|| h.strip_suffix(".amazonaws.com.cn"))
        })
        .unwrap_or("");
    u.scheme() == "https"
        && u.port().is_none()
        && u.username().is_empty()
        && !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && u.path().ends_with(".pem")
}

/// The pinned certificates' keys and the accepted topics.
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<RsaPublicKey>,
    topics: Vec<String>,
    /// When each pinned certificate stops being valid.
    not_after: Vec<DateTime<Utc>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Verifier({} certificate(s), topics {:?})",
            self.keys.len(),
            self.topics
        )
    }
}

/// Why PEM text gives no usable SNS certificate; `n` counts certificates from 1.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("certificate {n} has no END line")]
    NoEnd { n: usize },
    #[error("certificate {n} is not readable: {error}")]
    Unreadable {
        n: usize,
        error: x509_cert::der::Error,
    },
    #[error("holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate,
    #[error("certificate {n}: {error}")]
    KeyInfo {
        n: usize,
        error: x509_cert::der::Error,
    },
    #[error("certificate {n} has no RSA key: {error}")]
    NotRsa {
        n: usize,
        error: rsa::pkcs8::spki::Error,
    },
}

/// `[bounces] ses_certificate` cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum CertificateFileError {
    #[error("bounces.ses_certificate {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "bounces.ses_certificate {}: {error} (save SNS's SigningCertURL certificate there)",
        path.display()
    )]
    Pem { path: PathBuf, error: PemError },
}

/// Every pinned certificate has expired: SNS signs with a newer one, so every
/// message would be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "every certificate of bounces.ses_certificate has expired, valid until {last}: save the \
     one SNS signs with now (its SigningCertURL) there"
)]
pub struct CertificatesExpired {
    pub last: chrono::NaiveDate,
}

impl Verifier {
    /// From the PEM text of one or more certificates (RSA keys).
    pub fn from_pem(pem: &str, topics: Vec<String>) -> Result<Verifier, PemError> {
        use x509_cert::der::{DecodePem, Encode};
        const END: &str = "-----END CERTIFICATE-----";
        // Each BEGIN…END block; text around them (comments, a key) is skipped.
        let certs = pem
            .match_indices("-----BEGIN CERTIFICATE-----")
            .enumerate()
            .map(|(i, (start, _))| {
                let block = &pem[start..];
                let end = block.find(END).ok_or(PemError::NoEnd { n: i + 1 })?;
                x509_cert::Certificate::from_pem(&block[..end + END.len()])
                    .map_err(|error| PemError::Unreadable { n: i + 1, error })
            })
            .collect::<Result<Vec<_>, PemError>>()?;
        if certs.is_empty() {
            return Err(PemError::NoCertificate);
        }
        let not_after = certs
            .iter()
            .filter_map(|c| {
                let t = c.tbs_certificate.validity.not_after.to_unix_duration();
                DateTime::from_timestamp(i64::try_from(t.as_secs()).ok()?, 0)
            })
            .collect();
        let keys = certs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let spki = c
                    .tbs_certificate
                    .subject_public_key_info
                    .to_der()
                    .map_err(|error| PemError::KeyInfo { n: i + 1, error })?;
                RsaPublicKey::from_public_key_der(&spki)
                    .map_err(|error| PemError::NotRsa { n: i + 1, error })
            })
            .collect::<Result<Vec<_>, PemError>>()?;
        Ok(Verifier {
            keys,
            topics,
            not_after,
        })
    }

    /// What `check` says: the certificates, until when the last one is valid, the topics.
    /// An error when every pinned certificate has expired at `now` (SNS signs with a
    /// newer one: messages would all be refused).
    pub fn describe(&self, now: DateTime<Utc>) -> Result<String, CertificatesExpired> {
        let last = self.not_after.iter().max().copied();
        let until = last.map_or(String::new(), |t| {
            format!(", valid until {}", t.date_naive())
        });
        if let Some(t) = last.filter(|t| *t < now) {
            return Err(CertificatesExpired {
                last: t.date_naive(),
            });
        }
        Ok(format!(
            "SES: {} certificate(s) pinned{until}; topic(s) {}",
            self.keys.len(),
            self.topics.join(", ")
        ))
    }

    /// Reads `[bounces] ses_certificate`; the error names the file.
    pub fn load(path: &Path, topics: Vec<String>) -> Result<Verifier, CertificateFileError> {
        let pem = std::fs::read_to_string(path).map_err(|error| CertificateFileError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Verifier::from_pem(&pem, topics).map_err(|error| CertificateFileError::Pem {
            path: path.to_path_buf(),
            error,
        })
    }

    /// Reads a body posted at `now`; only a message SNS signed for one of our topics
    /// within [`MAX_AGE`] is returned.
    pub fn verify(&self, body: &[u8], now: DateTime<Utc>) -> Result<Envelope, Refused> {
        use base64::Engine;
        let env: Envelope =
            serde_json::from_slice(body).map_err(|e| Refused::NotSns(e.to_string()))?;
        let (Some(version), Some(signature), Some(cert_url)) = (
            env.signature_version.as_deref(),
            env.signature.as_deref(),
            env.signing_cert_url.as_deref(),
        ) else {
            return Err(Refused::Unsigned);
        };
        if !matches!(version, "1" | "2") {
            return Err(Refused::UnknownSignatureVersion(version.to_string()));
        }
        if !is_sns_cert_url(cert_url) {
            return Err(Refused::BadCertUrl(cert_url.to_string()));
        }
        let canonical = env.canonical()?;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .ok()
            .and_then(|b| Signature::try_from(b.as_slice()).ok())
            .ok_or(Refused::BadSignature)?;
        let verifies = |key: &RsaPublicKey| match version {
            "1" => VerifyingKey::<sha1::Sha1>::new(key.clone())
                .verify(canonical.as_bytes(), &sig)
                .is_ok(),
            _ => VerifyingKey::<sha2::Sha256>::new(key.clone())
                .verify(canonical.as_bytes(), &sig)
                .is_ok(),
        };
        if !self.keys.iter().any(verifies) {
            return Err(Refused::BadSignature);
        }
        if !self.topics.iter().any(|t| t == &env.topic_arn) {
            return Err(Refused::OtherTopic(env.topic_arn.clone()));
        }
        // After the signature: a refusal for its age is then about a message SNS sent.
        env.fresh(now)?;
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(kind: &str, subject: Option<&str>) -> Envelope {
        Envelope {
            kind: kind.into(),
            message_id: "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324".into(),
            topic_arn: "arn:aws:sns:us-west-2:123456789012:MyTopic".into(),
            message: "hello\nworld".into(),
            timestamp: "2012-05-02T00:54:06.655Z".into(),
            subject: subject.map(String::from),
            token: Some("2336412f37".into()),
            subscribe_url: Some("https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription".into()),
            signature_version: Some("1".into()),
            signature: Some("x".into()),
            signing_cert_url: Some("https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem".into()),
        }
    }

    #[test]
    fn the_canonical_string_has_snss_fields_in_order() {
        assert_eq!(
            envelope("Notification", Some("My First Message"))
                .canonical()
                .unwrap(),
            "Message\nhello\nworld\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n\
             Subject\nMy First Message\nTimestamp\n2012-05-02T00:54:06.655Z\n\
             TopicArn\narn:aws:sns:us-west-2:123456789012:MyTopic\nType\nNotification\n"
        );
        assert!(!envelope("Notification", None)
            .canonical()
            .unwrap()
            .contains("Subject"));
        let sub = envelope("SubscriptionConfirmation", Some("ignored"))
            .canonical()
            .unwrap();
        assert!(sub.contains(
            "SubscribeURL\nhttps://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription\n\
             Timestamp\n2012-05-02T00:54:06.655Z\nToken\n2336412f37\nTopicArn\n"
        ));
        assert!(!sub.contains("Subject"), "{sub}");
        assert_eq!(
            envelope("Other", None).canonical(),
            Err(Refused::UnknownType("Other".into()))
        );
        let mut no_token = envelope("UnsubscribeConfirmation", None);
        no_token.token = None;
        let e = no_token.canonical().unwrap_err();
        assert_eq!(
            e,
            Refused::Missing {
                kind: "UnsubscribeConfirmation".into(),
                field: "Token"
            }
        );
        assert_eq!(
            e.to_string(),
            "not an SNS message: a UnsubscribeConfirmation without Token"
        );
    }

    #[test]
    fn a_message_signed_over_an_hour_ago_or_ahead_of_the_clock_is_refused() {
        // Regression: the Timestamp was signed but never compared with the clock,
        // so a captured notification could be posted again at any later time.
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let env = envelope("Notification", None); // Timestamp 2012-05-02T00:54:06.655Z
        for ok in [
            "2012-05-02T00:54:06.655Z",
            "2012-05-02T01:54:06.655Z",
            "2012-05-02T00:49:07Z",
        ] {
            assert_eq!(env.fresh(at(ok)), Ok(()), "{ok}");
        }
        assert_eq!(
            env.fresh(at("2012-05-02T01:54:07Z")),
            Err(Refused::Stale("2012-05-02T00:54:06.655Z".into()))
        );
        assert_eq!(
            env.fresh(at("2012-05-02T00:49:06Z")),
            Err(Refused::FromTheFuture("2012-05-02T00:54:06.655Z".into()))
        );
        let mut bad = env.clone();
        bad.timestamp = "yesterday".into();
        let e = bad.fresh(at("2012-05-02T00:54:06Z")).unwrap_err();
        assert!(
            matches!(&e, Refused::BadTimestamp { timestamp, .. } if timestamp == "yesterday"),
            "{e:?}"
        );
        assert!(e
            .to_string()
            .starts_with("not an SNS message: Timestamp \"yesterday\" is not an ISO 8601 time: "));
        assert!(Refused::Stale(env.timestamp.clone())
            .to_string()
            .contains("more than 1 hour(s) old"));
    }

    #[test]
    fn only_snss_own_certificate_addresses_are_accepted() {
        for good in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        ] {
            assert!(is_sns_cert_url(good), "{good}");
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
            "https://sns..amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com/x.txt",
            "https://sns.us-east-1.amazonaws.com:8443/x.pem",
            "https://user@sns.us-east-1.amazonaws.com/x.pem",
            "https://s3.amazonaws.com/x.pem",
            "not a url",
        ] {
            assert!(!is_sns_cert_url(bad), "{bad}");
        }
    }

    #[test]
    fn a_file_without_a_certificate_is_refused_with_its_reason() {
        assert!(Verifier::from_pem("", vec![]).is_err());
        assert!(Verifier::from_pem(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            vec![]
        )
        .is_err());
        let e = Verifier::load(Path::new("/nonexistent/sns.pem"), vec![])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bounces.ses_certificate /nonexistent/sns.pem"),
            "{e}"
        );
    }
}
