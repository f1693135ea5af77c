#![allow(dead_code)] // each test binary uses part of it
//! The service on a random loopback port, with a real SQLite file (or a
//! PostgreSQL database of the tests' own cluster), a real
//! transport (SMTP to the test server, or `.eml` files) and a clock the test moves.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use digestif::clock::Clock;
use digestif::config::{Config, Secret};
use digestif::domain::{Article, Digest, Locale, Story};
use digestif::http::{self, mail::TransportMailer, AppState};
use digestif::metrics::Metrics;
use digestif::store::{PgStore, SqliteStore, Store};

pub const SECRET: &str = "a-test-secret-of-more-than-16-bytes";

/// The wall clock shifted by an offset the test sets: the server runs in real
/// time while the test decides what time it is.
pub struct ShiftClock(Mutex<Duration>);

impl ShiftClock {
    pub fn new() -> ShiftClock {
        ShiftClock(Mutex::new(Duration::zero()))
    }
    /// From now on, `now()` is `at` (and moves on from there).
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap() = at - digestif::clock::now();
    }
}

impl Clock for ShiftClock {
    fn now(&self) -> DateTime<Utc> {
        digestif::clock::now() + *self.0.lock().unwrap()
    }
}

pub enum Mail {
    Smtp(u16),
    File,
}

pub fn config_text(base: &str, mail: &Mail, send_time: &str) -> String {
    let smtp = match mail {
        Mail::Smtp(port) => format!(
            "transport = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\npool_size = 2\nretry_base_ms = 10\nmax_attempts = 2\ntimeout_s = 10"
        ),
        Mail::File => "transport = \"file\"\nfile_dir = \"outbox\"".to_string(),
    };
    format!(
        r#"[newsletter]
name = "L'Essentiel"
tagline = "La newsletter qui vous briefe en 5 min"
locale = "fr"
timezone = "Europe/Paris"
base_url = "{base}"
send_time = "{send_time}"
categories = ["Monde", "Économie", "Culture"]

[[sources]]
name = "Monde"
path = "feeds/monde.xml"
category = "Monde"

[storage]
database = "sqlite://digestif.db"

[sender]
from = "L'Essentiel <briefing@news.example.com>"

[smtp]
{smtp}

[server]
listen = "127.0.0.1:0"
subscribe_per_minute = 3

[schedule]
catch_up_hours = 3
lease_seconds = 30
tick_seconds = 1
retry_seconds = 1
"#
    )
}

pub struct App {
    pub dir: tempfile::TempDir,
    pub cfg: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub base: String,
    pub clock: Arc<ShiftClock>,
    pub metrics: Arc<Metrics>,
    pub state: AppState,
}

impl App {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
    pub fn outbox(&self) -> PathBuf {
        self.dir.path().join("outbox")
    }
}

/// The database an app runs on: the HTTP tests run on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A SQLite file in the app's folder.
    Sqlite,
    /// A new database in the test binary's PostgreSQL cluster.
    Postgres,
}

/// One `#[tokio::test]` per backend for each `async fn NAME(db: Db)` listed:
/// `NAME::sqlite` and `NAME::postgres`.
#[macro_export]
macro_rules! on_each_backend {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread")]
                async fn sqlite() {
                    super::$name($crate::support::app::Db::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread")]
                async fn postgres() {
                    super::$name($crate::support::app::Db::Postgres).await
                }
            }
        )*
    };
}

/// How long the app's writes wait for a lock another connection holds
/// before the visitor gets 503.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves the router on 127.0.0.1:0 with the peer address known (rate limit).
pub async fn start(mail: Mail, send_time: &str) -> App {
    start_with(mail, send_time, "").await
}

/// Like [`start`], with `[server]` keys added from `server_keys`; served as
/// `digestif serve` serves it (its listener loop and limits, the HTTP side's
/// short wait for a locked database).
pub async fn start_with(mail: Mail, send_time: &str, server_keys: &str) -> App {
    start_on(Db::Sqlite, mail, send_time, server_keys).await
}

/// Like [`start_with`], on the database `db`.
pub async fn start_on(db: Db, mail: Mail, send_time: &str, server_keys: &str) -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("feeds")).unwrap();
    let path = dir.path().join("digestif.toml");
    let mut text = config_text(&base, &mail, send_time)
        .replace("[server]\n", &format!("[server]\n{server_keys}\n"));
    // The cluster's sync client blocks: not on the runtime's thread.
    let pg_url = (db == Db::Postgres)
        .then(|| tokio::task::block_in_place(crate::support::pg_cluster::fresh_database));
    if let Some(url) = &pg_url {
        text = text.replace("sqlite://digestif.db", url);
    }
    std::fs::write(&path, text).unwrap();
    let cfg = Arc::new(Config::from_file(&path).unwrap());
    let store: Arc<dyn Store> = match &pg_url {
        Some(url) => Arc::new(PgStore::open_with_lock_wait(url, LOCK_WAIT).unwrap()),
        None => {
            let sqlite = SqliteStore::for_config(&cfg).unwrap();
            sqlite.set_busy_timeout(LOCK_WAIT).unwrap();
            Arc::new(sqlite)
        }
    };
    let clock = Arc::new(ShiftClock::new());
    let metrics = Arc::new(Metrics::new());
    let state = AppState::new(
        cfg.clone(),
        store.clone(),
        Secret::new(SECRET),
        metrics.clone(),
        clock.clone(),
        Arc::new(TransportMailer::from_config(&cfg).unwrap()),
    );
    let limits = http::server::Limits::from_config(&cfg);
    tokio::spawn(http::server::serve(
        listener,
        http::router(state.clone()),
        limits,
        std::future::pending(),
    ));
    App {
        dir,
        cfg,
        store,
        base,
        clock,
        metrics,
        state,
    }
}

/// A small issue of `date`.
pub fn digest(cfg: &Config, date: NaiveDate) -> Digest {
    let (start, end) = digestif::domain::issue_window(
        date,
        cfg.newsletter.send_time.0,
        cfg.newsletter.timezone.0,
        24,
    );
    let story = |i: u32, cat: &str, title: &str| Story {
        article: Article {
            title: title.to_string(),
            url: Some(format!("https://news.example.com/{date}/{i}")),
            source: "Monde".into(),
            category: cat.into(),
            published: end - Duration::hours(i as i64 + 1),
            summary: "Un résumé court de l’article, pour le test.".into(),
            reading_minutes: 3,
            source_weight: 1.0,
            also_in: vec![],
        },
        score: 1.0 / (i as f64 + 1.0),
        pinned: false,
    };
    Digest {
        date,
        name: cfg.newsletter.name.clone(),
        tagline: cfg.newsletter.tagline.clone(),
        locale: Locale::Fr,
        base_url: cfg.newsletter.base_url.trimmed().to_string(),
        intro: None,
        stories: vec![
            story(0, "Monde", &format!("Titre principal du {date}")),
            story(1, "Économie", "Le budget 2027 en débat"),
        ],
        reading_minutes: 2,
        built_at: end,
        window_start: start,
        window_end: end,
    }
}

/// Archives the issue of `date` in `digests/<date>/` only, as a version that
/// did not freeze issues did (`serve` freezes it when it starts).
pub fn archive_in_folder(cfg: &Config, date: NaiveDate) -> Digest {
    let d = digest(cfg, date);
    let assets = digestif::pipeline::assets(cfg).unwrap();
    digestif::pipeline::archive_issue(cfg, &assets, &d).unwrap();
    d
}

/// Archives the issue of `date` as `digestif build` would: frozen in the
/// app's database and written to `digests/<date>/`.
pub fn archive(app: &App, date: NaiveDate) -> Digest {
    let cfg = &app.cfg;
    let d = digest(cfg, date);
    let assets = digestif::pipeline::assets(cfg).unwrap();
    let issue = digestif::pipeline::frozen(cfg, &assets, &d, d.built_at).unwrap();
    let kept = app
        .store
        .issues()
        .freeze_issue(&issue, digestif::store::Freeze::Replace)
        .unwrap();
    digestif::pipeline::archive_frozen(cfg, &kept).unwrap();
    d
}

/// The `.eml` files written by the file transport.
pub fn eml_files(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out: Vec<(PathBuf, Vec<u8>)> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, b)| b).collect()
}

/// The first `{base}/{path}?token=…` link in a message body (quoted-printable decoded).
pub fn link_in(raw: &[u8], path: &str) -> String {
    let msg = mail_parser::MessageParser::default().parse(raw).unwrap();
    let text = msg.body_text(0).unwrap().to_string();
    let start = text
        .find(&format!("/{path}?token="))
        .unwrap_or_else(|| panic!("no /{path} link in:\n{text}"));
    let begin = text[..start].rfind("http").unwrap();
    let end = text[start..]
        .find(|c: char| c.is_whitespace() || c == '>' || c == ']')
        .map(|e| start + e)
        .unwrap_or(text.len());
    text[begin..end].to_string()
}
