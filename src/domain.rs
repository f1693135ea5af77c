//! Plain data passed between the stages: articles, the digest, subscribers.
//! Parse once, no I/O: a value of these types is already valid.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// The languages the email speaks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, Default, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    #[default]
    Fr,
    En,
}

impl Locale {
    pub const ALL: [Locale; 2] = [Locale::Fr, Locale::En];

    pub fn code(self) -> &'static str {
        match self {
            Locale::Fr => "fr",
            Locale::En => "en",
        }
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A locale name that is neither French nor English.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown locale {0:?}: use fr or en")]
pub struct UnknownLocale(pub String);

impl FromStr for Locale {
    type Err = UnknownLocale;
    fn from_str(s: &str) -> Result<Self, UnknownLocale> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fr" | "fr-fr" | "fr_fr" => Ok(Locale::Fr),
            "en" | "en-gb" | "en-us" | "en_gb" | "en_us" => Ok(Locale::En),
            other => Err(UnknownLocale(other.to_string())),
        }
    }
}

/// One story from a feed, cleaned: text fields hold plain text only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Article {
    /// Plain text, no control characters, no markup.
    pub title: String,
    /// Canonical http(s) link (tracking parameters and fragment removed), if the item had one.
    pub url: Option<String>,
    /// Name of the source (config `[[sources]] name`).
    pub source: String,
    pub category: String,
    pub published: DateTime<Utc>,
    /// Plain-text teaser, cut at a word boundary with "…".
    pub summary: String,
    /// Estimated minutes to read the full article (at least 1).
    pub reading_minutes: u32,
    /// Weight of the source it came from.
    pub source_weight: f64,
    /// Other sources that carried the same story.
    #[serde(default)]
    pub also_in: Vec<String>,
}

impl Article {
    /// A stable key: the canonical URL, else source + title.
    pub fn key(&self) -> String {
        match &self.url {
            Some(u) => u.clone(),
            None => format!("{}#{}", self.source, self.title),
        }
    }
}

/// A story as it stands in the digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Story {
    #[serde(flatten)]
    pub article: Article,
    pub score: f64,
    pub pinned: bool,
}

/// Why a candidate was not picked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    OutsideWindow,
    InFuture,
    DuplicateOf { url: String },
    OverBudget,
    OverMaxArticles,
    Excluded,
    AlreadySent { date: NaiveDate },
    NoLink,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::OutsideWindow => f.write_str("outside the window"),
            Reason::InFuture => f.write_str("dated after now"),
            Reason::DuplicateOf { url } => write!(f, "duplicate of {url}"),
            Reason::OverBudget => f.write_str("over the reading budget"),
            Reason::OverMaxArticles => f.write_str("over max_articles"),
            Reason::Excluded => f.write_str("excluded by the editor"),
            Reason::AlreadySent { date } => write!(f, "already sent on {date}"),
            Reason::NoLink => f.write_str("no http(s) link"),
        }
    }
}

/// One article of the pool with the selection's verdict (`digestif articles`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub article: Article,
    pub score: f64,
    pub picked: bool,
    pub reason: Option<Reason>,
}

/// The issue of one day: what the renderer needs, nothing personal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    pub date: NaiveDate,
    pub name: String,
    pub tagline: String,
    pub locale: Locale,
    pub base_url: String,
    pub intro: Option<String>,
    pub stories: Vec<Story>,
    /// Estimated minutes to read the digest itself.
    pub reading_minutes: u32,
    /// Instant the issue was built for (the `now` handed in).
    pub built_at: DateTime<Utc>,
    /// Window the issue covers.
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
}

impl Digest {
    /// Distinct categories in story order.
    pub fn categories(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for s in &self.stories {
            if !out.contains(&s.article.category.as_str()) {
                out.push(&s.article.category);
            }
        }
        out
    }
}

/// Counts the words of a plain text.
pub fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Minutes to read `words` at `wpm`, rounded up, at least 1.
pub fn minutes_for(words: usize, wpm: u32) -> u32 {
    let wpm = wpm.max(1) as usize;
    words.div_ceil(wpm).max(1) as u32
}

/// Lowercase ASCII slug: `L'Essentiel` → `l-essentiel`.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for ch in s.chars() {
        let c = match ch {
            'à' | 'â' | 'ä' | 'á' => 'a',
            'é' | 'è' | 'ê' | 'ë' | 'É' | 'È' => 'e',
            'î' | 'ï' | 'í' => 'i',
            'ô' | 'ö' | 'ó' => 'o',
            'ù' | 'û' | 'ü' | 'ú' => 'u',
            'ç' => 'c',
            c => c,
        };
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let trimmed = out.trim_end_matches('-').to_string();
    if trimmed.is_empty() {
        "newsletter".into()
    } else {
        trimmed
    }
}

/// The instants an issue covers: `window_hours` before `send_time` on `date`, in `tz`.
/// On a day where `send_time` does not exist (DST gap) the first valid instant after it is used.
pub fn issue_window(
    date: NaiveDate,
    send_time: chrono::NaiveTime,
    tz: chrono_tz::Tz,
    window_hours: u32,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let end = local_instant(date, send_time, tz);
    let start = end - chrono::Duration::hours(window_hours as i64);
    (start, end)
}

/// `date` at `time` in `tz` as UTC; ambiguous times take the earlier, gaps move forward.
pub fn local_instant(date: NaiveDate, time: chrono::NaiveTime, tz: chrono_tz::Tz) -> DateTime<Utc> {
    let naive = date.and_time(time);
    let mut probe = naive;
    for _ in 0..180 {
        match tz.from_local_datetime(&probe) {
            chrono::LocalResult::Single(t) => return t.with_timezone(&Utc),
            chrono::LocalResult::Ambiguous(a, _) => return a.with_timezone(&Utc),
            chrono::LocalResult::None => probe += chrono::Duration::minutes(1),
        }
    }
    Utc.from_utc_datetime(&naive)
}

/// Today's date in `tz` at `now`.
pub fn today_in(now: DateTime<Utc>, tz: chrono_tz::Tz) -> NaiveDate {
    now.with_timezone(&tz).date_naive()
}

/// A subscriber's address: syntactically valid, no CR/LF, domain lowercased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(try_from = "String", into = "String")]
pub struct SubscriberEmail(String);

/// Why a string is not a subscriber address; `address` is the trimmed input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// CR/LF or another control character: a header injection attempt or a
    /// broken export.
    #[error("address contains a control character (CR/LF?)")]
    ControlCharacter,
    #[error("address is empty")]
    Empty,
    #[error("address is longer than 254 characters")]
    TooLong,
    #[error("{address:?} is not an email address (no @)")]
    NoAt { address: String },
    #[error("{address:?}: bad local part")]
    BadLocalPart { address: String },
    #[error("{address:?}: forbidden character in local part")]
    ForbiddenCharacter { address: String },
    #[error("{address:?}: bad domain {domain:?}")]
    BadDomain { address: String, domain: String },
    #[error("{address:?} is not a valid address: {error}")]
    Invalid {
        address: String,
        error: lettre::address::AddressError,
    },
}

impl SubscriberEmail {
    pub fn parse(raw: &str) -> Result<SubscriberEmail, EmailError> {
        if raw.chars().any(|c| c.is_control()) {
            return Err(EmailError::ControlCharacter);
        }
        let s = raw.trim();
        if s.is_empty() {
            return Err(EmailError::Empty);
        }
        if s.len() > 254 {
            return Err(EmailError::TooLong);
        }
        let address = || s.to_string();
        let (local, domain) = s
            .rsplit_once('@')
            .ok_or_else(|| EmailError::NoAt { address: address() })?;
        if local.is_empty() || local.len() > 64 {
            return Err(EmailError::BadLocalPart { address: address() });
        }
        if local.contains(['<', '>', ',', ';', ' ', '"', '(', ')', '[', ']', '\\']) {
            return Err(EmailError::ForbiddenCharacter { address: address() });
        }
        let domain = domain.to_ascii_lowercase();
        let labels_ok = domain.contains('.')
            && domain.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
            });
        if !labels_ok {
            return Err(EmailError::BadDomain {
                address: address(),
                domain,
            });
        }
        let out = format!("{local}@{domain}");
        out.parse::<lettre::Address>()
            .map_err(|error| EmailError::Invalid {
                address: address(),
                error,
            })?;
        Ok(SubscriberEmail(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }

    /// The identity of the address: the whole address lowercased (ASCII), so
    /// `Bob@Example.com` and `bob@example.com` are one subscriber. The spelling
    /// given is kept for sending.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl TryFrom<String> for SubscriberEmail {
    type Error = EmailError;
    fn try_from(s: String) -> Result<Self, EmailError> {
        SubscriberEmail::parse(&s)
    }
}
impl From<SubscriberEmail> for String {
    fn from(e: SubscriberEmail) -> String {
        e.0
    }
}
impl fmt::Display for SubscriberEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriberStatus {
    /// Signed up, not confirmed yet (double opt-in).
    Pending,
    Active,
    Unsubscribed,
    /// A hard bounce: never mailed again until re-added by hand.
    Bounced,
}

impl SubscriberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriberStatus::Pending => "pending",
            SubscriberStatus::Active => "active",
            SubscriberStatus::Unsubscribed => "unsubscribed",
            SubscriberStatus::Bounced => "bounced",
        }
    }
}

/// A status name none of [`SubscriberStatus`] spells.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}: use active or unsubscribed")]
pub struct UnknownStatus(pub String);

impl FromStr for SubscriberStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, UnknownStatus> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pending" => Ok(SubscriberStatus::Pending),
            "active" | "" => Ok(SubscriberStatus::Active),
            "unsubscribed" => Ok(SubscriberStatus::Unsubscribed),
            "bounced" => Ok(SubscriberStatus::Bounced),
            other => Err(UnknownStatus(other.to_string())),
        }
    }
}

impl fmt::Display for SubscriberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The random per-subscriber key that unsubscribe and preferences links name:
/// it says nothing about the address and is never given to anyone else (unlike
/// a row id). 16 bytes, written as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LinkKey(pub [u8; 16]);

impl LinkKey {
    pub fn random() -> LinkKey {
        use rand::RngCore;
        let mut b = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut b);
        LinkKey(b)
    }
}

/// Why a string is not a [`LinkKey`]: a link cut short, or not hex at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkKeyError {
    #[error("link key {0:?} is not 32 hex digits")]
    Length(String),
    #[error("bad link key {0:?}")]
    NotHex(String),
}

impl FromStr for LinkKey {
    type Err = LinkKeyError;
    fn from_str(s: &str) -> Result<LinkKey, LinkKeyError> {
        let b = s.as_bytes();
        if b.len() != 32 {
            return Err(LinkKeyError::Length(s.to_string()));
        }
        let mut out = [0u8; 16];
        for (i, pair) in b.chunks(2).enumerate() {
            let not_hex = || LinkKeyError::NotHex(s.to_string());
            let pair = std::str::from_utf8(pair).map_err(|_| not_hex())?;
            out[i] = u8::from_str_radix(pair, 16).map_err(|_| not_hex())?;
        }
        Ok(LinkKey(out))
    }
}
impl TryFrom<String> for LinkKey {
    type Error = LinkKeyError;
    fn try_from(s: String) -> Result<Self, LinkKeyError> {
        s.parse()
    }
}
impl From<LinkKey> for String {
    fn from(k: LinkKey) -> String {
        k.to_string()
    }
}
impl fmt::Display for LinkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::config::hex(&self.0))
    }
}

/// A subscriber as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscriber {
    pub id: i64,
    /// What their unsubscribe and preferences links name.
    pub link_key: LinkKey,
    pub email: SubscriberEmail,
    pub name: Option<String>,
    pub locale: Option<Locale>,
    /// Categories they follow, shown first.
    pub categories: Vec<String>,
    pub timezone: Option<chrono_tz::Tz>,
    pub status: SubscriberStatus,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveTime;

    #[test]
    fn email_domain_is_lowercased_local_part_kept() {
        let e = SubscriberEmail::parse(" Jean.Dupont@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "Jean.Dupont@example.com");
    }

    #[test]
    fn email_with_crlf_is_refused() {
        assert!(SubscriberEmail::parse("a@b.com\r\nBcc: x@y.com").is_err());
        assert!(SubscriberEmail::parse("no-at-sign").is_err());
        assert!(SubscriberEmail::parse("a@localhost").is_err());
        assert!(SubscriberEmail::parse("a b@c.com").is_err());
    }

    #[test]
    fn window_ends_at_send_time_in_zone() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let (s, e) = issue_window(
            d,
            NaiveTime::from_hms_opt(7, 0, 0).unwrap(),
            chrono_tz::Europe::Paris,
            24,
        );
        assert_eq!(e.to_rfc3339(), "2026-11-27T06:00:00+00:00");
        assert_eq!(s.to_rfc3339(), "2026-11-26T06:00:00+00:00");
    }

    #[test]
    fn send_time_in_dst_gap_moves_forward() {
        // 2026-03-29 02:30 does not exist in Paris.
        let d = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        let t = local_instant(
            d,
            NaiveTime::from_hms_opt(2, 30, 0).unwrap(),
            chrono_tz::Europe::Paris,
        );
        assert_eq!(t.to_rfc3339(), "2026-03-29T01:00:00+00:00");
    }

    #[test]
    fn slug_folds_accents_and_punctuation() {
        assert_eq!(slug("L'Essentiel du Matin"), "l-essentiel-du-matin");
        assert_eq!(slug("Éco & Société"), "eco-societe");
    }

    #[test]
    fn minutes_round_up() {
        assert_eq!(minutes_for(0, 230), 1);
        assert_eq!(minutes_for(230, 230), 1);
        assert_eq!(minutes_for(231, 230), 2);
    }
}
