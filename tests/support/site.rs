//! What the end-to-end tests of the binary share: the secret and the issue's date,
//! a two-story feed, the head of a site's config, subscriber rows, and running
//! `digestif` on a config.

use std::path::Path;
use std::process::{Command, Output};

use digestif::config::Secret;
use digestif::domain::{SubscriberEmail, SubscriberStatus};
use digestif::store::NewSubscriber;

use super::SmtpServer;

pub const SECRET: &str = "test-secret-0123456789abcdef";
pub const DATE: &str = "2026-11-27";
pub const NOW: &str = "2026-11-27T06:30:00+01:00";

pub const FEED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Monde</title><link>https://example.com/</link>
<item><title>Budget 2027 : ce qui change</title><link>https://example.com/budget</link>
<description>Le gouvernement présente ses recettes pour 2027.</description>
<pubDate>Fri, 27 Nov 2026 05:00:00 +0100</pubDate></item>
<item><title>Sommet sur le climat à Nairobi</title><link>https://example.com/climat</link>
<description>Les négociations reprennent ce matin.</description>
<pubDate>Thu, 26 Nov 2026 20:00:00 +0100</pubDate></item>
</channel></rss>"#;

/// The `[newsletter]` table (with a tagline when given), the one source,
/// `feeds/monde.xml`, and the `[sender]` table (more keys may follow).
pub fn config_head(tagline: Option<&str>) -> String {
    let tagline = tagline
        .map(|t| format!("tagline = \"{t}\"\n"))
        .unwrap_or_default();
    format!(
        r#"[newsletter]
name = "L'Essentiel"
{tagline}locale = "fr"
timezone = "Europe/Paris"
base_url = "https://news.example.com/digestif"

[[sources]]
name = "Monde"
path = "feeds/monde.xml"
category = "Monde"

[sender]
from = "L'Essentiel <briefing@news.example.com>"
"#
    )
}

/// The head every sending test uses: with the tagline.
pub fn sending_head() -> String {
    config_head(Some("La newsletter qui vous briefe en 5 min"))
}

/// The `[smtp]` table for `server` over plain TCP; more keys may follow.
pub fn smtp_table(server: &SmtpServer, pool: usize) -> String {
    format!(
        "[smtp]\ntransport = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         pool_size = {pool}\ntimeout_s = 10\n",
        server.port
    )
}

/// A fresh folder holding `feeds/monde.xml` (FEED) and `digestif.toml` (`config`).
pub fn site_dir(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("feeds")).unwrap();
    std::fs::write(dir.path().join("feeds/monde.xml"), FEED).unwrap();
    std::fs::write(dir.path().join("digestif.toml"), config).unwrap();
    dir
}

/// The binary on `config`, with no config from the environment.
pub fn digestif_at(config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_digestif"));
    c.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("DIGESTIF_CONFIG");
    c
}

/// The binary on `config`, with the test secret and quiet logs.
pub fn digestif_cmd(config: &Path, args: &[&str]) -> Command {
    let mut c = digestif_at(config, args);
    c.env(Secret::ENV, SECRET).env("RUST_LOG", "warn");
    c
}

/// An active subscriber with no locale, category or timezone of their own.
pub fn subscriber(email: &str, name: Option<String>) -> NewSubscriber {
    NewSubscriber {
        email: SubscriberEmail::parse(email).unwrap(),
        name,
        locale: None,
        categories: vec![],
        timezone: None,
        status: SubscriberStatus::Active,
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit status, stdout and stderr, for an assertion message.
pub fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The envelope recipients the server got, sorted.
pub fn recipients(server: &SmtpServer) -> Vec<String> {
    let mut r: Vec<String> = server
        .messages()
        .iter()
        .map(|m| m.rcpt().to_string())
        .collect();
    r.sort();
    r
}

/// r1..rn@example.com, sorted as `recipients` sorts.
pub fn everyone(n: usize) -> Vec<String> {
    let mut r: Vec<String> = (1..=n).map(|i| format!("r{i}@example.com")).collect();
    r.sort();
    r
}

/// The migrations of a backend (`""`: SQLite, `"pg"`: PostgreSQL) as the
/// source holds them, in order: (version, name as `0007_name`, SQL). The
/// tests of an older schema apply all but the last, as an older binary did.
pub fn migrations(backend: &str) -> Vec<(i32, String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/store/migrations")
        .join(backend);
    let mut found: Vec<(i32, String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let version = name[..4].parse().unwrap();
            (version, name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    found.sort();
    found
}

/// The SQL that applies `migration` and records it, on a `schema_migrations`
/// table made as `digestif migrate` makes it (its time column of type `time`).
pub fn apply_migration(migration: &(i32, String, String), time: &str) -> String {
    let (version, name, sql) = migration;
    format!(
        "{sql};\nCREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, \
         name TEXT NOT NULL, applied_at {time} NOT NULL);\n\
         INSERT INTO schema_migrations VALUES ({version}, '{}', '2026-11-01T00:00:00Z');",
        &name[5..]
    )
}

/// The database line of `check`'s output.
pub fn database_line(out: &Output) -> String {
    stdout(out)
        .lines()
        .find(|l| l.contains(" database: "))
        .unwrap_or_else(|| panic!("no database line: {}", show(out)))
        .to_string()
}

/// `check` on a database that lacks only the migration `last`: a warning
/// (exit 0) naming it and `digestif migrate`.
pub fn assert_check_says_to_apply(out: &Output, last: &(i32, String, String)) {
    let line = database_line(out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a pending migration is a warning: {line}"
    );
    assert!(line.starts_with("WARN  database: "), "{line}");
    assert!(
        line.ends_with(&format!(
            ", schema version {}, this binary applies up to {}: run `digestif migrate` \
             (1 migration(s) pending: {}); nothing was changed",
            last.0 - 1,
            last.0,
            last.1
        )),
        "{line}"
    );
}

/// A command that must not migrate, refused on a database that lacks `last`.
pub fn assert_refused_to_migrate(out: &Output, last: &(i32, String, String)) {
    assert_eq!(out.status.code(), Some(1), "{}", show(out));
    let err = stderr(out);
    assert!(
        err.contains("this command never migrates (`digestif migrate` does)")
            && err.contains(&last.1),
        "{err}"
    );
}
