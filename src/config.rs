//! Strict TOML → validated [`Config`]. `Config::parse` checks, `Config::from_file` only reads.
//!
//! Unknown keys, wrong types, an unknown time zone or a bad URL are refused with
//! a message that names the file, the key and the line, so that an operator can
//! fix the config without reading code.

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::NaiveTime;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::domain::Locale;

mod spans;
use spans::KeySpans;
pub use spans::Position;

/// Where the config was looked for, in order: `--config`, `$DIGESTIF_CONFIG`, `./digestif.toml`.
pub fn locate(cli: Option<&Path>) -> PathBuf {
    if let Some(p) = cli {
        return p.to_path_buf();
    }
    if let Ok(p) = std::env::var("DIGESTIF_CONFIG") {
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("digestif.toml")
}

/// A config that could not be used. Its `Display` is the whole message for people.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read config file {path}: {source}. Pass --config PATH or set DIGESTIF_CONFIG."
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {problem}")]
    Invalid {
        path: PathBuf,
        problem: ConfigProblem,
    },
}

/// What is wrong with a config text, and where: the key path (`smtp.pool_size`,
/// `sources[1].weight`) and its line and column, from the TOML parser's spans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// The parser or the types refused it: not TOML, an unknown key, a value of
    /// the wrong type, an unknown time zone, a bad URL.
    #[error(
        "{}{message}{}",
        at.map(|a| format!("line {}: ", a.line)).unwrap_or_default(),
        snippet.as_ref().map(|s| format!(" (at `{s}`)")).unwrap_or_default()
    )]
    Syntax {
        /// The key whose value holds the error, when the error is inside one.
        key: Option<String>,
        message: String,
        at: Option<Position>,
        /// The line as written, trimmed.
        snippet: Option<String>,
    },
    /// The values parse but break a rule (a range, keys that go together).
    #[error("{message}{}", at.map(|a| format!(" (line {})", a.line)).unwrap_or_default())]
    Value {
        key: String,
        message: String,
        /// Where `key` is written, or its table when it is missing.
        at: Option<Position>,
    },
}

impl ConfigProblem {
    /// The key path the problem concerns, when known.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigProblem::Syntax { key, .. } => key.as_deref(),
            ConfigProblem::Value { key, .. } => Some(key),
        }
    }

    /// Where in the text, when known.
    pub fn at(&self) -> Option<Position> {
        match self {
            ConfigProblem::Syntax { at, .. } | ConfigProblem::Value { at, .. } => *at,
        }
    }

    /// The parser's error, placed in `text`.
    pub fn syntax(text: &str, e: &toml::de::Error) -> ConfigProblem {
        let message = e.message().trim().to_string();
        match e.span() {
            Some(span) => {
                let at = Position::of(text, span.start);
                let snippet = text.lines().nth(at.line - 1).unwrap_or("").trim();
                ConfigProblem::Syntax {
                    key: KeySpans::of(text).key_at(span.start).map(str::to_string),
                    message,
                    at: Some(at),
                    snippet: Some(snippet.to_string()),
                }
            }
            None => ConfigProblem::Syntax {
                key: None,
                message,
                at: None,
                snippet: None,
            },
        }
    }
}

/// The signing secret is missing or cannot be used: the message says what to set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(String);

/// The whole validated configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub newsletter: Newsletter,
    #[serde(default)]
    pub sources: Vec<Source>,
    #[serde(default)]
    pub ranking: Ranking,
    #[serde(default)]
    pub fetch: Fetch,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub sender: Sender,
    #[serde(default)]
    pub smtp: Smtp,
    #[serde(default)]
    pub dkim: Option<Dkim>,
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub schedule: Schedule,
    #[serde(default)]
    pub secrets: Secrets,
    #[serde(default)]
    pub bounces: Bounces,
    /// Folder the config file lives in; relative paths are resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Newsletter {
    pub name: String,
    #[serde(default)]
    pub tagline: String,
    #[serde(default)]
    pub locale: Locale,
    pub timezone: Timezone,
    pub base_url: HttpUrl,
    #[serde(default = "default_send_time")]
    pub send_time: SendTime,
    #[serde(default = "default_window_hours")]
    pub window_hours: u32,
    #[serde(default = "default_budget")]
    pub reading_budget_minutes: u32,
    #[serde(default = "default_wpm")]
    pub words_per_minute: u32,
    #[serde(default = "default_max_articles")]
    pub max_articles: usize,
    #[serde(default = "default_archive_dir")]
    pub archive_dir: PathBuf,
    /// Folder with `theme.toml` and `<locale>.toml`; built-in copies are used when absent.
    #[serde(default)]
    pub templates_dir: Option<PathBuf>,
    /// Categories offered at sign-up; defaults to the sources' categories.
    #[serde(default)]
    pub categories: Vec<String>,
    /// The list identity (RFC 2919 List-Id, and what every link's signature
    /// covers). Defaults to `<name-slug>.<base_url host>`; set it explicitly so
    /// that renaming the newsletter or moving it keeps every link already sent working.
    #[serde(default)]
    pub list_id: Option<String>,
}

/// Where the link-signing secret comes from besides `DIGESTIF_SECRET`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Secrets {
    /// A file (relative to the config) whose first line is the secret; further
    /// lines are previous secrets, still accepted on links (rotation). Must not
    /// be readable by group or others.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub name: String,
    #[serde(default)]
    pub url: Option<HttpUrl>,
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default = "default_weight")]
    pub weight: f64,
}

/// Where a source is read from, once validated.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceLocation {
    Url(Url),
    Path(PathBuf),
}

impl Source {
    /// The URL or the file (resolved against the config's folder).
    pub fn location(&self, base_dir: &Path) -> SourceLocation {
        match (&self.url, &self.path) {
            (Some(u), _) => SourceLocation::Url(u.0.clone()),
            (None, Some(p)) => SourceLocation::Path(base_dir.join(p)),
            (None, None) => unreachable!("validated in Config::parse"),
        }
    }
}

/// Weights of the ranking score. Defaults suit a daily briefing.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ranking {
    /// Hours after which a story's recency score halves.
    pub recency_half_life_hours: f64,
    /// How much the recency part counts (0..).
    pub recency_weight: f64,
    /// How much the source weight counts (0..).
    pub source_weight: f64,
    /// Bonus for a story that several sources carry, per extra source.
    pub coverage_bonus: f64,
    /// Score multiplier applied for each story already picked in the same category.
    pub category_penalty: f64,
    /// At most this many stories of one category while other categories have candidates.
    pub max_per_category: usize,
}

impl Default for Ranking {
    fn default() -> Self {
        Ranking {
            recency_half_life_hours: 12.0,
            recency_weight: 1.0,
            source_weight: 1.0,
            coverage_bonus: 0.25,
            category_penalty: 0.6,
            max_per_category: 3,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fetch {
    pub timeout_s: u64,
    pub max_bytes: u64,
    pub max_redirects: usize,
    pub user_agent: String,
    /// Remembers ETag / Last-Modified and first-seen dates between runs (relative to the config).
    pub cache_file: PathBuf,
    /// How many feeds are fetched at once.
    pub concurrency: usize,
}

impl Default for Fetch {
    fn default() -> Self {
        Fetch {
            timeout_s: 15,
            max_bytes: 5 * 1024 * 1024,
            max_redirects: 5,
            user_agent: format!(
                "digestif/{} (daily newsletter digest builder)",
                env!("CARGO_PKG_VERSION")
            ),
            cache_file: PathBuf::from(".digestif-cache.json"),
            concurrency: 8,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// `sqlite://PATH` (relative to the config file), `sqlite::memory:`, or
    /// `postgres://user[:password]@host[:port]/database[?sslmode=verify-full]`.
    pub database: String,
    /// PEM certificates the PostgreSQL server's certificate is checked against,
    /// besides the system's roots (relative to the config file); turns TLS on.
    pub ca_file: Option<PathBuf>,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            database: "sqlite://digestif.db".into(),
            ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sender {
    /// `Name <address>`.
    pub from: String,
    pub reply_to: Option<String>,
    /// Subject template: `{name}`, `{date}`, `{top_title}`.
    pub subject: String,
    /// Address for the mailto in List-Unsubscribe; defaults to `unsubscribe@<from domain>`.
    pub unsubscribe_mailto: Option<String>,
}

impl Default for Sender {
    fn default() -> Self {
        Sender {
            from: "Digestif <briefing@localhost>".into(),
            reply_to: None,
            subject: "{name} · {date} · {top_title}".into(),
            unsubscribe_mailto: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    #[default]
    Smtp,
    File,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    #[default]
    Starttls,
    Tls,
    None,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Smtp {
    pub transport: TransportKind,
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub username: Option<String>,
    /// Name of the environment variable holding the SMTP password.
    pub password_env: Option<String>,
    pub pool_size: usize,
    /// Messages per second across all connections; 0 means no limit.
    pub rate_per_second: f64,
    pub timeout_s: u64,
    /// Attempts for a transient failure before the subscriber is left pending.
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt (with jitter).
    pub retry_base_ms: u64,
    /// Folder for `transport = "file"` (relative to the config file).
    pub file_dir: PathBuf,
    /// A PEM file of root certificates to trust for TLS besides the system's
    /// (a relay with a private CA), relative to the config file.
    pub ca_file: Option<PathBuf>,
    /// The name given in EHLO; by default this machine's fully-qualified name,
    /// else the sender's domain.
    pub helo_name: Option<String>,
    /// Send the password over a session that is not encrypted (`tls = "none"`).
    pub allow_plaintext_auth: bool,
    /// The run stops after this many messages in a row failed for good (a
    /// misconfigured relay must not burn through the list).
    pub max_consecutive_failures: u32,
}

impl Default for Smtp {
    fn default() -> Self {
        Smtp {
            transport: TransportKind::Smtp,
            host: "localhost".into(),
            port: 25,
            tls: TlsMode::Starttls,
            username: None,
            password_env: None,
            pool_size: 4,
            rate_per_second: 0.0,
            timeout_s: 30,
            max_attempts: 5,
            retry_base_ms: 500,
            file_dir: PathBuf::from("outbox"),
            ca_file: None,
            helo_name: None,
            allow_plaintext_auth: false,
            max_consecutive_failures: 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Dkim {
    pub domain: String,
    pub selector: String,
    pub private_key_path: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub listen: String,
    /// Sign-up requests allowed per client address per minute.
    pub subscribe_per_minute: u32,
    /// Hours a confirmation link stays valid.
    pub confirm_ttl_hours: u32,
    /// At most one confirmation mail per address in this many hours, whoever asks.
    pub confirm_cooldown_hours: u32,
    /// Reverse proxies (addresses or blocks such as "10.0.0.0/8") whose
    /// X-Forwarded-For is believed; from anyone else it is ignored.
    pub trusted_proxies: Vec<String>,
    /// A separate address for `/metrics` and `/healthz` (e.g. "127.0.0.1:9090");
    /// then the public listener does not serve `/metrics` at all.
    pub metrics_listen: Option<String>,
    /// Seconds a client has to send a request's headers.
    pub header_timeout_s: u64,
    /// Seconds a whole request (headers, body, answer) may take.
    pub request_timeout_s: u64,
    /// Connections served at once; further ones wait to be accepted.
    pub max_connections: usize,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:8080".into(),
            subscribe_per_minute: 5,
            confirm_ttl_hours: 48,
            confirm_cooldown_hours: 24,
            trusted_proxies: Vec::new(),
            metrics_listen: None,
            header_timeout_s: 10,
            request_timeout_s: 30,
            max_connections: 512,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    pub enabled: bool,
    /// A missed issue is still sent if the service is back within this many hours.
    pub catch_up_hours: u32,
    /// Seconds a send lease lasts without renewal.
    pub lease_seconds: u64,
    /// How often the service looks at the schedule (1–59 s); each look is one small query.
    pub tick_seconds: u64,
    /// A failed or incomplete pass is retried no sooner than this many seconds after it ended.
    pub retry_seconds: u64,
    /// A sender not heard from for this many seconds is gone: the other senders
    /// of the issue take over its rows (at least 3; it beats every third of that).
    pub heartbeat_seconds: u64,
    /// A sender that joined another's send waits at most this many seconds for
    /// the issue that other process builds.
    pub build_wait_seconds: u64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            enabled: true,
            catch_up_hours: 3,
            lease_seconds: 300,
            tick_seconds: 10,
            retry_seconds: 60,
            heartbeat_seconds: 30,
            build_wait_seconds: 300,
        }
    }
}

/// Returned mail: the VERP return path and the bounce rules.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bounces {
    /// `bounces@news.example.com`: each message's envelope sender becomes
    /// `bounces+<signed tag>@news.example.com`. Unset: the `From` address, as before.
    pub return_path: Option<crate::bounces::ReturnPath>,
    /// Temporary failures (4.x.x) within `soft_bounce_days` that bounce an address.
    pub soft_bounce_limit: u32,
    pub soft_bounce_days: u32,
    /// `send` warns and `check` fails above these rates for the last issue.
    pub max_hard_bounce_percent: f64,
    pub max_complaint_percent: f64,
    /// `imaps://user@imap.example.com/INBOX`: a mailbox `serve` reads returned mail
    /// from every `poll_minutes` (and `bounces --imap` once); read messages are deleted.
    pub mailbox: Option<crate::bounces::imap::MailboxUrl>,
    /// The environment variable holding the mailbox's password.
    pub mailbox_password_env: Option<String>,
    /// A PEM file of root certificates to trust for `imaps://` / `pop3s://` besides
    /// the system's (a mail server with a private CA), relative to the config file.
    pub mailbox_ca_file: Option<PathBuf>,
    pub poll_minutes: u32,
    /// Amazon SES through SNS (`POST /webhooks/ses`): a PEM file holding the SNS
    /// signing certificate(s) to trust, relative to the config file. Unset: the
    /// route answers 404.
    pub ses_certificate: Option<PathBuf>,
    /// The SNS topics whose notifications are read; others are refused.
    pub ses_topic_arns: Vec<String>,
    /// Postmark (`POST /webhooks/postmark`): the basic-auth user Postmark is given,
    /// and the variable holding its password, or a file (relative to the config,
    /// mode 600) whose first line is the password. Unset: the route answers 404.
    pub postmark_user: Option<String>,
    pub postmark_password_env: Option<String>,
    pub postmark_password_file: Option<PathBuf>,
}

impl Default for Bounces {
    fn default() -> Self {
        Bounces {
            return_path: None,
            soft_bounce_limit: 3,
            soft_bounce_days: 15,
            max_hard_bounce_percent: 5.0,
            max_complaint_percent: 0.3,
            mailbox: None,
            mailbox_password_env: None,
            mailbox_ca_file: None,
            poll_minutes: 5,
            ses_certificate: None,
            ses_topic_arns: Vec::new(),
            postmark_user: None,
            postmark_password_env: None,
            postmark_password_file: None,
        }
    }
}

impl Bounces {
    pub fn rules(&self) -> crate::bounces::Rules {
        crate::bounces::Rules {
            soft_limit: self.soft_bounce_limit,
            soft_window: chrono::Duration::days(i64::from(self.soft_bounce_days)),
        }
    }
}

fn default_send_time() -> SendTime {
    SendTime(NaiveTime::from_hms_opt(7, 0, 0).expect("valid"))
}
fn default_window_hours() -> u32 {
    24
}
fn default_budget() -> u32 {
    5
}
fn default_wpm() -> u32 {
    230
}
fn default_max_articles() -> usize {
    10
}
fn default_archive_dir() -> PathBuf {
    PathBuf::from("digests")
}
fn default_weight() -> f64 {
    1.0
}

/// An IANA time zone name, checked when the config is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timezone(pub chrono_tz::Tz);

/// A time zone name that is not in the IANA database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {0:?}: use an IANA name such as \"Europe/Paris\"")]
pub struct UnknownTimezone(pub String);

impl TryFrom<String> for Timezone {
    type Error = UnknownTimezone;
    fn try_from(s: String) -> Result<Self, UnknownTimezone> {
        match s.parse::<chrono_tz::Tz>() {
            Ok(tz) => Ok(Timezone(tz)),
            Err(_) => Err(UnknownTimezone(s)),
        }
    }
}
impl From<Timezone> for String {
    fn from(t: Timezone) -> String {
        t.0.name().to_string()
    }
}

/// An absolute http(s) URL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpUrl(pub Url);

/// Why a string is not an absolute http(s) URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpUrlError {
    #[error("bad URL {url:?}: {error}")]
    Unparsable { url: String, error: url::ParseError },
    /// Parsed, but another scheme (or no host): `mailto:`, `file:`, ….
    #[error("bad URL {url:?}: only http and https URLs are allowed")]
    NotHttp { url: String },
}

impl TryFrom<String> for HttpUrl {
    type Error = HttpUrlError;
    fn try_from(s: String) -> Result<Self, HttpUrlError> {
        let u = match Url::parse(&s) {
            Ok(u) => u,
            Err(error) => return Err(HttpUrlError::Unparsable { url: s, error }),
        };
        match u.scheme() {
            "http" | "https" if u.host().is_some() => Ok(HttpUrl(u)),
            _ => Err(HttpUrlError::NotHttp { url: s }),
        }
    }
}
impl From<HttpUrl> for String {
    fn from(u: HttpUrl) -> String {
        u.0.to_string()
    }
}
impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}
impl HttpUrl {
    /// The URL without a trailing slash, to append `/unsubscribe` and friends.
    pub fn trimmed(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }
}

/// A local time of day, written `HH:MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct SendTime(pub NaiveTime);

/// A time of day not written `HH:MM`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad time {0:?}: write it as HH:MM, e.g. \"07:00\"")]
pub struct BadSendTime(pub String);

impl TryFrom<String> for SendTime {
    type Error = BadSendTime;
    fn try_from(s: String) -> Result<Self, BadSendTime> {
        match NaiveTime::parse_from_str(&s, "%H:%M") {
            Ok(t) => Ok(SendTime(t)),
            Err(_) => Err(BadSendTime(s)),
        }
    }
}
impl From<SendTime> for String {
    fn from(t: SendTime) -> String {
        t.0.format("%H:%M").to_string()
    }
}

impl Config {
    /// Reads and validates the file; relative paths resolve against its folder.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
            .unwrap_or_else(|| PathBuf::from("."));
        Config::parse(&text, &base).map_err(|problem| ConfigError::Invalid {
            path: path.to_path_buf(),
            problem,
        })
    }

    /// Parses and validates config text. The error names the key and its line.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigProblem> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigProblem::syntax(text, &e))?;
        cfg.base_dir = base_dir.to_path_buf();
        cfg.validate(text)?;
        Ok(cfg)
    }

    fn validate(&self, text: &str) -> Result<(), ConfigProblem> {
        let spans = KeySpans::of(text);
        let bad = |key: &str, message: String| ConfigProblem::Value {
            key: key.to_string(),
            message,
            at: spans.span(key).map(|s| Position::of(text, s.start)),
        };
        let n = &self.newsletter;
        if let Some(id) = &n.list_id {
            let ok = !id.is_empty()
                && id.len() <= 200
                && id.contains('.')
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
            if !ok {
                return Err(bad("newsletter.list_id", format!(
                    "newsletter.list_id {id:?} must look like a domain name, e.g. \"essentiel.news.example.com\" (letters, digits, '-', '.', '_')")));
            }
        }
        if n.name.trim().is_empty() {
            return Err(bad(
                "newsletter.name",
                "newsletter.name must not be empty".to_string(),
            ));
        }
        if n.words_per_minute == 0 {
            return Err(bad(
                "newsletter.words_per_minute",
                "newsletter.words_per_minute must be at least 1".to_string(),
            ));
        }
        if n.reading_budget_minutes == 0 {
            return Err(bad(
                "newsletter.reading_budget_minutes",
                "newsletter.reading_budget_minutes must be at least 1".to_string(),
            ));
        }
        if n.max_articles == 0 {
            return Err(bad(
                "newsletter.max_articles",
                "newsletter.max_articles must be at least 1".to_string(),
            ));
        }
        if n.window_hours == 0 {
            return Err(bad(
                "newsletter.window_hours",
                "newsletter.window_hours must be at least 1".to_string(),
            ));
        }
        for (i, s) in self.sources.iter().enumerate() {
            let at = format!("sources[{i}] ({:?})", s.name);
            let key = format!("sources[{i}]");
            match (&s.url, &s.path) {
                (Some(_), Some(_)) => {
                    return Err(bad(
                        &format!("{key}.path"),
                        format!("{at}: give either url or path, not both"),
                    ));
                }
                (None, None) => {
                    return Err(bad(&key, format!("{at}: needs a url or a path")));
                }
                _ => {}
            }
            if !(s.weight.is_finite() && s.weight >= 0.0) {
                return Err(bad(
                    &format!("{key}.weight"),
                    format!("{at}: weight must be a number ≥ 0, got {}", s.weight),
                ));
            }
        }
        if !(1..=100).contains(&self.smtp.pool_size) {
            return Err(bad(
                "smtp.pool_size",
                format!(
                    "smtp.pool_size must be between 1 and 100, got {}",
                    self.smtp.pool_size
                ),
            ));
        }
        if self.smtp.max_consecutive_failures == 0 {
            return Err(bad(
                "smtp.max_consecutive_failures",
                "smtp.max_consecutive_failures must be at least 1".to_string(),
            ));
        }
        if let Some(name) = &self.smtp.helo_name {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b))
            {
                return Err(bad("smtp.helo_name", format!(
                    "smtp.helo_name must be a domain name or an address literal like [192.0.2.1], got {name:?}")));
            }
        }
        if !(self.smtp.rate_per_second.is_finite() && self.smtp.rate_per_second >= 0.0) {
            return Err(bad(
                "smtp.rate_per_second",
                "smtp.rate_per_second must be ≥ 0 (0 = no limit)".to_string(),
            ));
        }
        if self.smtp.transport == TransportKind::Smtp && self.smtp.host.trim().is_empty() {
            return Err(bad("smtp.host", "smtp.host must not be empty".to_string()));
        }
        self.sender
            .from
            .parse::<lettre::message::Mailbox>()
            .map_err(|e| {
                bad("sender.from", format!(
                    "sender.from {:?} is not a valid mailbox ({e}); write it as \"Name <address@domain>\"",
                    self.sender.from))
            })?;
        if let Some(r) = &self.sender.reply_to {
            r.parse::<lettre::message::Mailbox>().map_err(|e| {
                bad(
                    "sender.reply_to",
                    format!("sender.reply_to {r:?} is not a valid mailbox ({e})"),
                )
            })?;
        }
        let db = &self.storage.database;
        if let Some(file) = db.strip_prefix("sqlite:") {
            if file.trim_start_matches("//").is_empty() {
                return Err(bad(
                    "storage.database",
                    "storage.database needs a file: sqlite://digestif.db".to_string(),
                ));
            }
        } else if is_postgres_url(db) {
            let parsed = crate::store::pg::tls::rewrite(db)
                .map_err(|e| e.to_string())
                .and_then(|(url, _)| url.parse::<postgres::Config>().map_err(|e| e.to_string()));
            if let Err(e) = parsed {
                return Err(bad(
                    "storage.database",
                    format!(
                        "storage.database is not a valid PostgreSQL URL ({e}); write \
                     postgres://user[:password]@host[:port]/database"
                    ),
                ));
            }
        } else {
            return Err(bad(
                "storage.database",
                format!(
                    "storage.database {db:?}: write sqlite://PATH or \
                 postgres://user@host:port/database"
                ),
            ));
        }
        if self.storage.ca_file.is_some() && !is_postgres_url(db) {
            return Err(bad(
                "storage.ca_file",
                "storage.ca_file is for a PostgreSQL database (storage.database = \
                 \"postgres://…?sslmode=verify-full\"); remove it for SQLite"
                    .to_string(),
            ));
        }
        let b = &self.bounces;
        if b.poll_minutes == 0 {
            return Err(bad(
                "bounces.poll_minutes",
                "bounces.poll_minutes must be at least 1".to_string(),
            ));
        }
        if b.mailbox.is_some() && b.return_path.is_none() {
            return Err(bad(
                "bounces.mailbox",
                "bounces.mailbox needs bounces.return_path: returned mail is matched to \
                 subscribers by the signed return path of each message"
                    .to_string(),
            ));
        }
        if b.mailbox.is_some() && b.mailbox_password_env.is_none() {
            return Err(bad(
                "bounces.mailbox",
                "bounces.mailbox needs bounces.mailbox_password_env, the variable that holds \
                 its password"
                    .to_string(),
            ));
        }
        if b.ses_certificate.is_some() && b.ses_topic_arns.is_empty() {
            return Err(bad(
                "bounces.ses_certificate",
                "bounces.ses_certificate needs bounces.ses_topic_arns, the SNS topic(s) your SES \
                 notifications are published to (any AWS account's topic is signed with the same \
                 certificate)"
                    .to_string(),
            ));
        }
        if let Some((i, arn)) =
            (b.ses_topic_arns.iter().enumerate()).find(|(_, a)| !a.starts_with("arn:aws"))
        {
            return Err(bad(&format!("bounces.ses_topic_arns[{i}]"), format!(
                "bounces.ses_topic_arns: {arn:?} is not a topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)")));
        }
        match (
            &b.postmark_user,
            &b.postmark_password_env,
            &b.postmark_password_file,
        ) {
            (Some(_), Some(_), Some(_)) => {
                return Err(bad(
                    "bounces.postmark_password_env",
                    "bounces.postmark_password_env and bounces.postmark_password_file: set one, \
                     not both"
                        .to_string(),
                ))
            }
            (Some(_), None, None) | (None, Some(_), _) | (None, _, Some(_)) => {
                let given = if b.postmark_user.is_some() {
                    "bounces.postmark_user"
                } else if b.postmark_password_env.is_some() {
                    "bounces.postmark_password_env"
                } else {
                    "bounces.postmark_password_file"
                };
                return Err(bad(
                    given,
                    "bounces.postmark_user and bounces.postmark_password_env (the variable \
                     holding its password) or bounces.postmark_password_file (a file holding \
                     it) go together: Postmark posts with basic auth"
                        .to_string(),
                ));
            }
            _ => {}
        }
        if b.soft_bounce_limit == 0 || b.soft_bounce_days == 0 {
            let key = if b.soft_bounce_limit == 0 {
                "bounces.soft_bounce_limit"
            } else {
                "bounces.soft_bounce_days"
            };
            return Err(bad(
                key,
                "bounces.soft_bounce_limit and bounces.soft_bounce_days must be at least 1"
                    .to_string(),
            ));
        }
        for (key, v) in [
            ("max_hard_bounce_percent", b.max_hard_bounce_percent),
            ("max_complaint_percent", b.max_complaint_percent),
        ] {
            if !(v.is_finite() && (0.0..=100.0).contains(&v)) {
                return Err(bad(
                    &format!("bounces.{key}"),
                    format!("bounces.{key} must be a percentage between 0 and 100, got {v}"),
                ));
            }
        }
        if !(1..=59).contains(&self.schedule.tick_seconds) {
            return Err(bad(
                "schedule.tick_seconds",
                format!(
                    "schedule.tick_seconds must be between 1 and 59, got {}",
                    self.schedule.tick_seconds
                ),
            ));
        }
        self.server
            .listen
            .parse::<std::net::SocketAddr>()
            .map_err(|_| {
                bad(
                    "server.listen",
                    format!(
                        "server.listen {:?} must be an address and port such as \"127.0.0.1:8080\"",
                        self.server.listen
                    ),
                )
            })?;
        for (i, p) in self.server.trusted_proxies.iter().enumerate() {
            crate::http::limit::Cidr::parse(p).map_err(|e| {
                bad(
                    &format!("server.trusted_proxies[{i}]"),
                    format!("server.trusted_proxies: {e}"),
                )
            })?;
        }
        if let Some(m) = &self.server.metrics_listen {
            m.parse::<std::net::SocketAddr>().map_err(|_| {
                bad("server.metrics_listen", format!(
                    "server.metrics_listen {m:?} must be an address and port such as \"127.0.0.1:9090\""))
            })?;
        }
        for (key, v) in [
            ("header_timeout_s", self.server.header_timeout_s),
            ("request_timeout_s", self.server.request_timeout_s),
            ("max_connections", self.server.max_connections as u64),
        ] {
            if v == 0 {
                return Err(bad(
                    &format!("server.{key}"),
                    format!("server.{key} must be at least 1"),
                ));
            }
        }
        Ok(())
    }

    /// Resolves a path from the config against the config's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.resolve(&self.newsletter.archive_dir)
    }

    /// The database `[storage] database` names.
    pub fn database(&self) -> crate::store::Location {
        use crate::store::Location;
        if is_postgres_url(&self.storage.database) {
            let mut url = self.storage.database.clone();
            // `[storage] ca_file` travels in the URL as libpq's `sslrootcert`.
            if let (Some(ca), Ok(mut u)) = (&self.storage.ca_file, url::Url::parse(&url)) {
                if !u.query_pairs().any(|(k, _)| k == "sslrootcert") {
                    u.query_pairs_mut()
                        .append_pair("sslrootcert", &self.resolve(ca).to_string_lossy());
                    url = u.to_string();
                }
            }
            return Location::Postgres(url);
        }
        match self.database_path() {
            Some(p) => Location::SqliteFile(p),
            None => Location::SqliteMemory,
        }
    }

    /// The SQLite file, or `None` for an in-memory database (or PostgreSQL).
    pub fn database_path(&self) -> Option<PathBuf> {
        let rest = self.storage.database.strip_prefix("sqlite:")?;
        if rest == ":memory:" {
            return None;
        }
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        Some(self.resolve(Path::new(rest)))
    }

    /// Categories offered at sign-up: configured, else the sources' own, in order, once each.
    pub fn categories(&self) -> Vec<String> {
        if !self.newsletter.categories.is_empty() {
            return self.newsletter.categories.clone();
        }
        let mut out: Vec<String> = Vec::new();
        for s in &self.sources {
            if let Some(c) = &s.category {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
        }
        out
    }

    /// The List-Id value (RFC 2919): `newsletter.list_id`, else `<name-slug.host>`.
    pub fn list_id(&self) -> String {
        if let Some(id) = &self.newsletter.list_id {
            return id.clone();
        }
        let host = self
            .newsletter
            .base_url
            .0
            .host_str()
            .unwrap_or("localhost")
            .to_string();
        let slug: String = crate::domain::slug(&self.newsletter.name);
        format!("{slug}.{host}")
    }
}

/// Turns a toml error into one line naming the key and the line.
pub(crate) fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    ConfigProblem::syntax(text, e).to_string()
}

/// The secret that signs unsubscribe, preferences and confirmation links, with
/// the previous secrets still accepted on links already sent (rotation). New
/// links are always signed with the current one.
#[derive(Clone)]
pub struct Secret {
    current: Vec<u8>,
    previous: Vec<Vec<u8>>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(… and {} previous)", self.previous.len())
    }
}

/// Shortest secret accepted, in bytes.
pub const SECRET_MIN_LEN: usize = 16;

impl Secret {
    pub const ENV: &'static str = "DIGESTIF_SECRET";
    /// Previous secrets, comma- or newline-separated: links they signed still work.
    pub const PREVIOUS_ENV: &'static str = "DIGESTIF_SECRET_PREVIOUS";

    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret {
            current: bytes.into(),
            previous: Vec::new(),
        }
    }

    /// The same current secret, also accepting links signed with `previous`.
    pub fn with_previous<I, B>(mut self, previous: I) -> Secret
    where
        I: IntoIterator<Item = B>,
        B: Into<Vec<u8>>,
    {
        self.previous.extend(previous.into_iter().map(Into::into));
        self
    }

    /// A fresh random secret, for what is never mailed (previews, dry runs, a
    /// demo folder's first run): links it signs work nowhere else.
    pub fn random() -> Secret {
        use rand::RngCore;
        let mut b = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut b);
        Secret::new(hex(&b))
    }

    /// The current secret: what new links are signed with.
    pub fn bytes(&self) -> &[u8] {
        &self.current
    }

    /// The current secret, then the previous ones: what a link is checked against.
    pub fn all(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.current.as_slice()).chain(self.previous.iter().map(Vec::as_slice))
    }

    /// The signing secret of `cfg`: `DIGESTIF_SECRET`, else the first line of
    /// `[secrets] file`; previous secrets from `DIGESTIF_SECRET_PREVIOUS` and the
    /// file's further lines. The error says what to set.
    pub fn load(cfg: &Config) -> Result<Secret, SecretError> {
        Secret::load_with(cfg, |name| std::env::var(name).ok())
    }

    /// [`Secret::load`] with the environment given as a function (tests).
    pub fn load_with(
        cfg: &Config,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Secret, SecretError> {
        let env = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let from_file = match &cfg.secrets.file {
            Some(p) => Some(read_secret_file(&cfg.resolve(p))?),
            None => None,
        };
        let (current, mut previous) = match (env(Self::ENV), from_file) {
            (Some(cur), file) => (cur, file.map(|f| f.1).unwrap_or_default()),
            (None, Some((cur, prev))) => (cur, prev),
            (None, None) => {
                return Err(SecretError(format!(
                    "{} is not set and [secrets] file is not given: the secret signs every \
                     unsubscribe and confirmation link. Set it to a long random string, e.g. \
                     `export {}=$(openssl rand -hex 32)`, or put one in a file readable only by \
                     digestif (chmod 600) named by [secrets] file; keep it the same between runs",
                    Self::ENV,
                    Self::ENV
                )))
            }
        };
        if current.trim().len() < SECRET_MIN_LEN {
            return Err(SecretError(format!(
                "the secret ({} or the first line of [secrets] file) is shorter than {SECRET_MIN_LEN} \
                 characters: use e.g. `openssl rand -hex 32`",
                Self::ENV
            )));
        }
        if let Some(p) = env(Self::PREVIOUS_ENV) {
            previous.extend(split_secrets(&p));
        }
        if let Some(i) = previous.iter().position(|p| p.len() < SECRET_MIN_LEN) {
            return Err(SecretError(format!(
                "previous secret number {} ({} or [secrets] file) is shorter than \
                 {SECRET_MIN_LEN} characters",
                i + 1,
                Self::PREVIOUS_ENV
            )));
        }
        Ok(Secret::new(current.trim().as_bytes().to_vec())
            .with_previous(previous.into_iter().map(String::into_bytes)))
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Secrets in a list written by people: one per line or comma-separated, blanks ignored.
pub fn split_secrets(text: &str) -> Vec<String> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// (current, previous) from a secret file: one secret per line, the first is current.
/// Refused when group or others may read it.
fn read_secret_file(path: &Path) -> Result<(String, Vec<String>), SecretError> {
    let mut lines = read_private_lines(
        path,
        "[secrets] file",
        "Create it with `openssl rand -hex 32 > FILE && chmod 600 FILE`",
    )
    .map_err(|e| SecretError(e.to_string()))?;
    let current = lines.remove(0);
    Ok((current, lines))
}

/// The non-empty lines (trimmed, `#` comments skipped; at least one) of a file
/// holding secrets, named `key` in errors, which add `create` when the file cannot
/// be opened. Refused when group or others may read it.
pub fn read_private_lines(
    path: &Path,
    key: &str,
    create: &str,
) -> Result<Vec<String>, PrivateFileError> {
    let bytes = read_private_file(path, key, create, |mode, _| mode & 0o077 == 0)?;
    let text = String::from_utf8(bytes).map_err(|e| PrivateFileError::Read {
        key: key.to_string(),
        path: path.to_path_buf(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if lines.is_empty() {
        return Err(PrivateFileError::Empty {
            key: key.to_string(),
            path: path.to_path_buf(),
        });
    }
    Ok(lines)
}

/// The bytes of a file holding secrets, named `key` in errors, which add
/// `create` when the file cannot be opened. Refused unless `allowed(mode,
/// owned_by_root)` for its permission bits and owner (on Unix).
pub fn read_private_file(
    path: &Path,
    key: &str,
    create: &str,
    allowed: fn(u32, bool) -> bool,
) -> Result<Vec<u8>, PrivateFileError> {
    let key = || key.to_string();
    let path_buf = || path.to_path_buf();
    let meta = std::fs::metadata(path).map_err(|error| PrivateFileError::Missing {
        key: key(),
        path: path_buf(),
        error,
        create: create.to_string(),
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let (mode, by_root) = (meta.mode() & 0o7777, meta.uid() == 0);
        if !allowed(mode, by_root) {
            return Err(PrivateFileError::Exposed {
                key: key(),
                path: path_buf(),
                mode: mode & 0o777,
                by_root,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (meta, allowed);
    std::fs::read(path).map_err(|error| PrivateFileError::Read {
        key: key(),
        path: path_buf(),
        error,
    })
}

/// Why a file of secrets (named by its config `key`) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    /// Cannot be opened; `create` says how to make it.
    #[error("{key} {}: {error}. {create}", path.display())]
    Missing {
        key: String,
        path: PathBuf,
        error: std::io::Error,
        create: String,
    },
    /// Group or others may read it: refused until `chmod 600`.
    #[error(
        "{key} {} can be read by other users (mode {mode:o}): run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Exposed {
        key: String,
        path: PathBuf,
        mode: u32,
        /// Root owns it (some callers let root's files be read by their group).
        by_root: bool,
    },
    #[error("{key} {}: {error}", path.display())]
    Read {
        key: String,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{key} {} is empty", path.display())]
    Empty { key: String, path: PathBuf },
}

/// Whether `[storage] database` names a PostgreSQL database.
pub fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[newsletter]
name = "L'Essentiel"
tagline = "La newsletter qui vous briefe en 5 min"
locale = "fr"
timezone = "Europe/Paris"
base_url = "https://news.example.com/digestif"

[[sources]]
name = "Monde"
path = "feeds/monde.xml"
category = "Monde"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL, Path::new("/etc/d")).unwrap();
        assert_eq!(c.newsletter.window_hours, 24);
        assert_eq!(c.newsletter.words_per_minute, 230);
        assert_eq!(
            c.newsletter.send_time.0,
            NaiveTime::from_hms_opt(7, 0, 0).unwrap()
        );
        assert_eq!(
            c.sources[0].location(&c.base_dir),
            SourceLocation::Path(PathBuf::from("/etc/d/feeds/monde.xml"))
        );
        assert_eq!(c.database_path(), Some(PathBuf::from("/etc/d/digestif.db")));
        assert_eq!(c.list_id(), "l-essentiel.news.example.com");
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = MINIMAL.replace("tagline", "tagl1ne");
        let e = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tagl1ne"), "{e}");
        assert!(e.contains("line 4"), "{e}");
    }

    #[test]
    fn a_postgresql_url_with_tls_takes_the_ca_file_along_and_sqlite_refuses_one() {
        let text = format!(
            "{MINIMAL}\n[storage]\ndatabase = \"postgres://d@db:5432/news?sslmode=verify-full\"\nca_file = \"ca.pem\"\n"
        );
        let c = Config::parse(&text, Path::new("/etc/d")).unwrap();
        assert_eq!(
            c.database(),
            crate::store::Location::Postgres(
                "postgres://d@db:5432/news?sslmode=verify-full&sslrootcert=%2Fetc%2Fd%2Fca.pem"
                    .into()
            )
        );
        let text =
            format!("{MINIMAL}\n[storage]\ndatabase = \"sqlite://x.db\"\nca_file = \"ca.pem\"\n");
        let e = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("storage.ca_file") && e.contains("line"), "{e}");
        let text =
            format!("{MINIMAL}\n[storage]\ndatabase = \"postgres://d@db/news?sslmode=allow\"\n");
        let e = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslmode=allow"), "{e}");
    }

    #[test]
    fn unknown_time_zone_is_refused() {
        let text = MINIMAL.replace("Europe/Paris", "Europe/Atlantis");
        let e = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Europe/Atlantis"), "{e}");
        assert!(e.contains("line 6"), "{e}");
    }

    #[test]
    fn non_http_base_url_is_refused() {
        let text = MINIMAL.replace("https://news.example.com/digestif", "javascript:alert(1)");
        let e = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("only http and https"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let text = MINIMAL.replace(
            "[[sources]]",
            "[ranking]\nmax_per_category = \"three\"\n[[sources]]",
        );
        let e = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line"), "{e}");
        assert!(e.contains("string") || e.contains("integer"), "{e}");
    }

    #[test]
    fn an_error_names_the_line_of_the_key_in_its_own_table() {
        // `name` is a key of [[sources]] too, and that table comes first here.
        let text = r#"
[[sources]]
name = "Monde"
path = "feeds/monde.xml"

[newsletter]
name = " "
locale = "fr"
timezone = "Europe/Paris"
base_url = "https://news.example.com/digestif"
"#;
        let e = Config::parse(text, Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("newsletter.name must not be empty"), "{e}");
        assert!(e.contains("line 7"), "{e}");
    }

    #[test]
    fn a_key_present_in_two_tables_is_reported_on_the_line_of_the_bad_one() {
        // `timeout_s` is a key of [fetch] and of [smtp]; the bad one comes second.
        let text = format!(
            "{MINIMAL}[fetch]\ntimeout_s = 20\n[smtp]\nca_file = \"relay.pem\"\ntimeout_s = \"soon\"\n"
        );
        let e = Config::parse(&text, Path::new(".")).unwrap_err();
        assert_eq!(e.key(), Some("smtp.timeout_s"), "{e}");
        assert_eq!(e.at().map(|a| a.line), Some(17), "{e}");
        assert!(e.to_string().starts_with("line 17: "), "{e}");
        // `ca_file` is a key of [smtp] and of [storage]; a comment after the
        // [storage] header must not send us to the first `ca_file` of the file.
        let text = format!(
            "{MINIMAL}[smtp]\nca_file = \"relay.pem\"\n\n[storage] # the subscribers\n\
             database = \"sqlite://x.db\"\nca_file = \"ca.pem\"\n"
        );
        let e = Config::parse(&text, Path::new(".")).unwrap_err();
        assert_eq!(e.key(), Some("storage.ca_file"), "{e}");
        assert_eq!(
            e.at(),
            Some(Position {
                line: 18,
                column: 11
            }),
            "{e}"
        );
        assert!(e.to_string().ends_with("(line 18)"), "{e}");
    }

    #[test]
    fn a_key_is_not_mistaken_for_a_longer_one_that_begins_like_it() {
        // `mailbox_password_env` begins like `mailbox` and comes first.
        let text = format!(
            "{MINIMAL}[bounces]\nmailbox_password_env = \"MAILBOX_PASSWORD\"\n\
             mailbox = \"imaps://bounces@mail.example.com/INBOX\"\n"
        );
        let e = Config::parse(&text, Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("needs bounces.return_path"), "{e}");
        assert_eq!(e.key(), Some("bounces.mailbox"), "{e}");
        assert_eq!(e.at().map(|a| a.line), Some(15), "{e}");
    }

    #[test]
    fn a_missing_key_is_reported_at_its_table_and_a_bad_source_at_its_own_entry() {
        let text = format!(
            "{MINIMAL}[[sources]]\nname = \"Sport\"\nurl = \"https://s.example.com/feed\"\nweight = -2.0\n"
        );
        let e = Config::parse(&text, Path::new(".")).unwrap_err();
        assert_eq!(e.key(), Some("sources[1].weight"), "{e}");
        assert_eq!(e.at().map(|a| a.line), Some(16), "{e}");
        assert!(
            e.to_string()
                .contains("sources[1] (\"Sport\"): weight must be"),
            "{e}"
        );
        let text = format!("{MINIMAL}[bounces]\npoll_minutes = 5\nmailbox = \"imaps://b@m.example.com/\"\nreturn_path = \"b@news.example.com\"\n");
        let e = Config::parse(&text, Path::new(".")).unwrap_err();
        assert!(
            e.to_string().contains("bounces.mailbox_password_env"),
            "{e}"
        );
    }

    #[test]
    fn a_scheduler_tick_out_of_range_is_refused_with_its_line() {
        let c = Config::parse(MINIMAL, Path::new(".")).unwrap();
        assert_eq!(
            (c.schedule.tick_seconds, c.schedule.retry_seconds),
            (10, 60)
        );
        let text = format!("{MINIMAL}\n[schedule]\ntick_seconds = 0\n");
        let e = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("schedule.tick_seconds must be between 1 and 59"),
            "{e}"
        );
        assert!(e.contains("line 15"), "{e}");
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn without_a_secret_nothing_signs_whatever_the_transport() {
        // Finding 1: the file transport used to fall back on a secret from the source code.
        for smtp in ["", "[smtp]\ntransport = \"file\"\n"] {
            let c = Config::parse(&format!("{MINIMAL}{smtp}"), Path::new(".")).unwrap();
            let e = Secret::load_with(&c, no_env).unwrap_err().to_string();
            assert!(e.contains("DIGESTIF_SECRET"), "{e}");
            assert!(e.contains("[secrets] file"), "{e}");
        }
        let c = Config::parse(MINIMAL, Path::new(".")).unwrap();
        let short = Secret::load_with(&c, |n| (n == Secret::ENV).then(|| "short".into()));
        assert!(short.unwrap_err().to_string().contains("shorter than 16"));
    }

    #[test]
    fn previous_secrets_come_from_a_comma_or_newline_list_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(
            &file,
            "current-secret-from-file\n\nolder-secret-in-the-file\n",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let text = format!("{MINIMAL}[secrets]\nfile = \"secret\"\n");
        let c = Config::parse(&text, dir.path()).unwrap();
        let s = Secret::load_with(&c, no_env).unwrap();
        assert_eq!(s.bytes(), b"current-secret-from-file");
        assert_eq!(s.all().count(), 2);
        let s = Secret::load_with(&c, |n| match n {
            Secret::ENV => Some("current-secret-from-env".into()),
            Secret::PREVIOUS_ENV => {
                Some(" first-previous-secret ,\nsecond-previous-secret\n".into())
            }
            _ => None,
        })
        .unwrap();
        assert_eq!(s.bytes(), b"current-secret-from-env");
        let all: Vec<&[u8]> = s.all().collect();
        assert_eq!(
            all,
            vec![
                &b"current-secret-from-env"[..],
                b"older-secret-in-the-file",
                b"first-previous-secret",
                b"second-previous-secret"
            ]
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "current-secret-from-file\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!("{MINIMAL}[secrets]\nfile = \"secret\"\n");
        let c = Config::parse(&text, dir.path()).unwrap();
        let e = Secret::load_with(&c, no_env).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn an_explicit_list_id_survives_a_rename_and_the_default_is_unchanged() {
        let c = Config::parse(MINIMAL, Path::new(".")).unwrap();
        assert_eq!(c.list_id(), "l-essentiel.news.example.com");
        let pinned = MINIMAL.replace(
            "locale = \"fr\"",
            "locale = \"fr\"\nlist_id = \"l-essentiel.news.example.com\"",
        );
        let renamed = pinned.replace("L'Essentiel", "Le Matin");
        let c = Config::parse(&renamed, Path::new(".")).unwrap();
        assert_eq!(c.list_id(), "l-essentiel.news.example.com");
        let bad = MINIMAL.replace("locale = \"fr\"", "locale = \"fr\"\nlist_id = \"a b\"");
        let e = Config::parse(&bad, Path::new(".")).unwrap_err().to_string();
        assert!(
            e.contains("newsletter.list_id") && e.contains("line 6"),
            "{e}"
        );
    }

    #[test]
    fn source_needs_exactly_one_location() {
        let text = MINIMAL.replace("path = \"feeds/monde.xml\"", "");
        let e = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a url or a path"), "{e}");
    }
}
