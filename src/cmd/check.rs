//! `digestif check`: every part a send needs, tried once, nothing sent and
//! nothing written: the database is read as it is, never migrated (a check run
//! by a new version before a rolling upgrade must leave the schema to the old
//! binaries still running). One line per part ("ok", "WARN" and what to run, or
//! "FAIL" and what to fix); exit 1 if any part failed, a warning is not one.

use std::path::{Path, PathBuf};

use crate::bounces::postmark::MessageIdTooLong;
use crate::bounces::sns::CertificatesExpired;
use crate::config::{Config, TransportKind};
use crate::deliver::message::MessageFactory;
use crate::deliver::transport::{self, SendError};
use crate::domain::SubscriberStatus;
use crate::http::webhooks::{WebhookSetupError, Webhooks};
use crate::store::{Access, Location, Schema, StoreError};

use super::send::secret_for;
use super::{load_config, runtime, CmdResult};

/// Why a part does not work: what its FAIL line says.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// A part could not be set up (the templates, the sender, the secret, the
    /// database, the transport, the mailbox): its whole chain says why.
    #[error("{0:#}")]
    Setup(anyhow::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Webhooks(#[from] WebhookSetupError),
    #[error(transparent)]
    CertificatesExpired(#[from] CertificatesExpired),
    #[error(transparent)]
    MessageIdTooLong(#[from] MessageIdTooLong),
    /// The last issue's rates over `[bounces]`' limits, each said.
    #[error("{}", .0.join("; "))]
    OverLimits(Vec<String>),
    /// A source could not be read, as the ingest reports it.
    #[error(transparent)]
    Source(#[from] crate::ingest::SourceFailure),
    #[error("cannot write in {}: {error}", dir.display())]
    OutboxNotWritable { dir: PathBuf, error: std::io::Error },
    /// The SMTP server did not take a session (no connection, TLS, login).
    #[error("{server}: {error}")]
    NoSession { server: String, error: SendError },
}

/// What was found when a part works, or why it does not.
type Outcome = Result<String, Failure>;

/// One checked part: its name, and what was found or what is wrong.
#[derive(Debug)]
struct Line {
    part: String,
    outcome: Outcome,
    /// It works, but wants something done (what was found says what).
    warn: bool,
}

fn line(part: impl Into<String>, outcome: Outcome) -> Line {
    Line {
        part: part.into(),
        outcome,
        warn: false,
    }
}

/// A part that works but wants `what` done.
fn warning(part: impl Into<String>, what: String) -> Line {
    Line {
        warn: true,
        ..line(part, Ok(what))
    }
}

pub fn check(config: Option<&Path>) -> CmdResult {
    let cfg = load_config(config)?;
    let mut lines = vec![line(
        "config",
        Ok(format!("{} source(s)", cfg.sources.len())),
    )];
    lines.push(line(
        "templates",
        crate::pipeline::assets(&cfg)
            .map(|_| "theme and words read".to_string())
            .map_err(Failure::Setup),
    ));
    lines.push(line(
        "sender",
        MessageFactory::from_config(&cfg)
            .map(|f| {
                if f.signs() {
                    "From and DKIM key read".to_string()
                } else {
                    "From read; no DKIM signing".to_string()
                }
            })
            .map_err(Failure::Setup),
    ));
    lines.push(line(
        "secret",
        // Needed whatever the transport: `.eml` files are mailed by someone too.
        secret_for(&cfg)
            .map(|s| match s.all().count() - 1 {
                0 => "set".to_string(),
                n => format!("set; {n} previous secret(s) still accepted on links"),
            })
            .map_err(Failure::Setup),
    ));
    lines.push(line(
        "list id",
        Ok(match &cfg.newsletter.list_id {
            Some(id) => format!("{id} (newsletter.list_id)"),
            None => format!(
                "{} (derived from the name and base_url: set newsletter.list_id to keep links \
                 working if either changes)",
                cfg.list_id()
            ),
        }),
    ));
    let at = cfg.database();
    let schema = crate::store::schema_at(&at);
    lines.push(database(&at, &schema));
    lines.push(line("bounce rates", bounce_rates(&cfg, &at, &schema)));
    if cfg.bounces.mailbox.is_some() {
        lines.push(line(
            "bounce mailbox",
            mailbox_check(&cfg).map_err(Failure::Setup),
        ));
    }
    if let Some(hooks) = webhooks(&cfg, |n| std::env::var(n).ok()) {
        lines.push(line("bounce webhooks", hooks));
    }
    let rt = runtime()?;
    let (_, sources) = rt.block_on(crate::ingest::ingest(&cfg, crate::clock::now()));
    for s in sources {
        lines.push(line(
            format!("source {:?}", s.name),
            match s.error {
                None => Ok(format!("{} item(s)", s.articles)),
                Some(e) => Err(Failure::Source(e)),
            },
        ));
    }
    lines.push(line("delivery", rt.block_on(delivery(&cfg))));

    let failed = lines.iter().filter(|l| l.outcome.is_err()).count();
    for l in &lines {
        match &l.outcome {
            Ok(what) if l.warn => println!("WARN  {}: {what}", l.part),
            Ok(what) => println!("ok    {}: {what}", l.part),
            Err(why) => println!("FAIL  {}: {why}", l.part),
        }
    }
    if failed == 0 {
        println!("everything a send needs works");
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{failed} part(s) failed (the FAIL lines above say what to fix)"
        ))
    }
}

/// The database at `at` and its `schema`, read as they are: which database
/// (its password hidden), how it is reached (PostgreSQL: over TLS or in clear),
/// its schema version against this binary's, and its active subscribers. A
/// schema to migrate (or a database to create) is a warning saying what to run;
/// one newer than this binary fails.
fn database(at: &Location, schema: &Result<Schema, StoreError>) -> Line {
    let reached = match at {
        Location::Postgres(url) => format!(", {}", postgres_link(url)),
        _ => String::new(),
    };
    let schema = match schema {
        Ok(s) => s,
        Err(e) => {
            let e = super::send::cannot_open(at, e);
            return line("database", Err(Failure::Setup(e)));
        }
    };
    let found = match schema {
        Schema::Current { version } => {
            return line(
                "database",
                subscribers(at).map(|active| {
                    format!(
                        "{at}{reached}, schema version {version}, up to date; \
                         {active} active subscriber(s)"
                    )
                }),
            );
        }
        Schema::Behind {
            version,
            latest,
            pending,
        } => format!(
            "{at}{reached}, schema version {version}, this binary applies up to {latest}: \
             run `digestif migrate` ({} migration(s) pending: {}); nothing was changed",
            pending.len(),
            pending.join(", ")
        ),
        Schema::NoFile(_) => {
            format!("{at}: no such file yet: `digestif migrate` (or the first send) creates it")
        }
        Schema::Empty => format!(
            "{at}{reached}: no schema yet (an empty database): run `digestif migrate` to create it"
        ),
        Schema::Newer { .. } => {
            let why = schema.require_current().expect_err("newer is not current");
            let e = anyhow::anyhow!("{at}{reached}: {why} before this machine uses it");
            return line("database", Err(Failure::Setup(e)));
        }
    };
    warning("database", found)
}

/// The active subscribers of the database at `at`, its schema current,
/// opened read only.
fn subscribers(at: &Location) -> Result<u64, Failure> {
    let store = crate::store::open_current_at(at, Access::ReadOnly)?;
    store.ping()?;
    let counts = store.count_by_status()?;
    Ok(counts
        .iter()
        .find(|(s, _)| *s == SubscriberStatus::Active)
        .map_or(0, |(_, n)| *n))
}

/// How the connection to the PostgreSQL database at `url` is made, as its
/// URL asks: over TLS, the certificate always checked (the connection is
/// refused rather than made in clear), or in clear.
fn postgres_link(url: &str) -> String {
    match crate::store::pg::tls::rewrite(url) {
        Ok((_, Some(tls))) => {
            let roots = match &tls.root {
                Some(ca) => format!("the system's roots and sslrootcert {ca}"),
                None => "the system's roots".to_string(),
            };
            let client = match &tls.client {
                Some(c) => format!("; client certificate sslcert {}", c.cert),
                None => String::new(),
            };
            format!("over TLS, the server's certificate checked against {roots}{client}")
        }
        Ok((_, None)) => "in clear (the URL asks for no TLS: add sslmode=verify-full \
                          unless the database is on loopback or a private network)"
            .to_string(),
        // The store opened with this URL: not met.
        Err(e) => e.to_string(),
    }
}

/// The SES and Postmark webhooks `[bounces]` sets up: certificate read and valid,
/// password set (read from the environment through `var`), our Message-IDs short
/// enough for Postmark's metadata. `None` when neither is set.
fn webhooks(cfg: &Config, var: impl Fn(&str) -> Option<String>) -> Option<Outcome> {
    let hooks = match Webhooks::from_config_with(cfg, var) {
        Ok(h) => h,
        Err(e) => return Some(Err(e.into())),
    };
    let mut parts = Vec::new();
    if let Some(ses) = &hooks.ses {
        match ses.describe(crate::clock::now()) {
            Ok(s) => parts.push(s),
            Err(e) => return Some(Err(e.into())),
        }
    }
    if hooks.postmark.is_some() {
        // A Message-ID too long for Postmark's metadata comes back from none of its
        // reports: every bounce and complaint it posts would match nothing, so this
        // fails rather than warns. Without a factory the `sender` line says why.
        if let Ok(f) = MessageFactory::from_config(cfg) {
            if let Err(e) = crate::bounces::postmark::check_metadata(&f.new_message_id()) {
                return Some(Err(e.into()));
            }
        }
        parts.push("Postmark: basic-auth password set".to_string());
    }
    (!parts.is_empty()).then(|| Ok(parts.join("; ")))
}

/// `[bounces] mailbox` takes a login and opens its folder; nothing is read.
fn mailbox_check(cfg: &Config) -> anyhow::Result<String> {
    let n = runtime()?.block_on(super::bounces::probe_mailbox(cfg))?;
    Ok(format!("logged in; {n} message(s) waiting"))
}

/// The last issue's hard-bounce and complaint rates are within `[bounces]`'
/// limits. Not read from a database whose schema is not current (the
/// database line says what to run).
fn bounce_rates(cfg: &Config, at: &Location, schema: &Result<Schema, StoreError>) -> Outcome {
    match schema {
        Ok(Schema::Current { .. }) => {}
        Ok(Schema::NoFile(_) | Schema::Empty) => return Ok("no issue sent yet".into()),
        _ => return Ok("not read: the database's schema is not current (see above)".into()),
    }
    let store = crate::store::open_current_at(at, Access::ReadOnly)?;
    let store: &dyn crate::store::Store = store.as_ref();
    match super::bounces::last_issue_rates(store, None).map_err(Failure::Setup)? {
        None => Ok("no issue sent yet".into()),
        Some(rates) => {
            let over = rates.over_limits(&cfg.bounces);
            if over.is_empty() {
                Ok(format!("last issue {}: {rates}", rates.date))
            } else {
                Err(Failure::OverLimits(over))
            }
        }
    }
}

/// The outbox folder is writable, or the SMTP server takes a session (TLS and
/// login as configured) that ends with QUIT, no mail.
async fn delivery(cfg: &Config) -> Outcome {
    let t = transport::from_config(cfg).map_err(Failure::Setup)?;
    if cfg.smtp.transport == TransportKind::File {
        let dir = cfg.resolve(&cfg.smtp.file_dir);
        let probe = dir.join(".digestif-check");
        std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(&probe, b"check"))
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|error| Failure::OutboxNotWritable {
                dir: dir.clone(),
                error,
            })?;
        return Ok(format!(
            "{} is writable (file transport: nothing is mailed)",
            t.describe()
        ));
    }
    let c = t.connect().await.map_err(|error| Failure::NoSession {
        server: t.describe(),
        error,
    })?;
    c.close().await;
    Ok(format!(
        "{} takes a session (tls = {:?}, EHLO {}{})",
        t.describe(),
        cfg.smtp.tls,
        transport::helo_name(cfg),
        if cfg.smtp.username.is_some() {
            ", logged in"
        } else {
            ""
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config with `sender.from` at `domain` and `more` after it.
    fn config(domain: &str, more: &str, dir: &Path) -> Config {
        let text = format!(
            "[newsletter]\nname = \"L'Essentiel\"\nlocale = \"fr\"\ntimezone = \"Europe/Paris\"\n\
             base_url = \"https://news.example.com/digestif\"\n\n[[sources]]\nname = \"Monde\"\n\
             path = \"feeds/monde.xml\"\ncategory = \"Monde\"\n\n[sender]\n\
             from = \"L'Essentiel <briefing@{domain}>\"\n\n{more}"
        );
        Config::parse(&text, dir).unwrap()
    }

    const POSTMARK: &str =
        "[bounces]\npostmark_user = \"postmark\"\npostmark_password_env = \"PM\"\n";

    #[test]
    fn a_from_domain_too_long_for_postmark_metadata_fails_with_the_lengths() {
        let dir = tempfile::tempdir().unwrap();
        let pm = |_: &str| Some("hook-secret-123".to_string());
        let fits = config(&format!("{}.example", "d".repeat(39)), POSTMARK, dir.path());
        assert_eq!(
            webhooks(&fits, pm).unwrap().unwrap(),
            "Postmark: basic-auth password set"
        );
        let over = format!("{}.example", "d".repeat(40));
        match webhooks(&config(&over, POSTMARK, dir.path()), pm).unwrap() {
            Err(Failure::MessageIdTooLong(e)) => {
                assert_eq!((e.length, e.domain, e.room), (81, over, 47));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unset_postmark_password_is_a_webhook_setup_failure_naming_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config("news.example.com", POSTMARK, dir.path());
        match webhooks(&cfg, |_| None).unwrap() {
            Err(Failure::Webhooks(WebhookSetupError::PasswordEnvUnset { env })) => {
                assert_eq!(env, "PM");
            }
            other => panic!("{other:?}"),
        }
        assert!(webhooks(&config("news.example.com", "", dir.path()), |_| None).is_none());
    }

    #[test]
    fn an_outbox_that_cannot_be_made_fails_naming_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plain-file"), "").unwrap();
        let cfg = config(
            "news.example.com",
            "[smtp]\ntransport = \"file\"\nfile_dir = \"plain-file/outbox\"\n",
            dir.path(),
        );
        let rt = runtime().unwrap();
        match rt.block_on(delivery(&cfg)) {
            Err(e @ Failure::OutboxNotWritable { .. }) => {
                let shown = e.to_string();
                let Failure::OutboxNotWritable { dir: outbox, .. } = e else {
                    unreachable!()
                };
                assert_eq!(outbox, dir.path().join("plain-file/outbox"));
                assert!(shown.starts_with("cannot write in "), "{shown}");
            }
            other => panic!("{other:?}"),
        }
        let ok = config(
            "news.example.com",
            "[smtp]\ntransport = \"file\"\nfile_dir = \"outbox\"\n",
            dir.path(),
        );
        let said = rt.block_on(delivery(&ok)).unwrap();
        assert!(said.ends_with("is writable (file transport: nothing is mailed)"));
    }

    #[test]
    fn an_smtp_server_that_is_not_there_fails_with_no_session_naming_it() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            "news.example.com",
            &format!(
                "[smtp]\ntransport = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\n\
                 tls = \"none\"\ntimeout_s = 5\n"
            ),
            dir.path(),
        );
        match runtime().unwrap().block_on(delivery(&cfg)) {
            Err(Failure::NoSession { server, error }) => {
                assert_eq!(server, format!("smtp://127.0.0.1:{port}"));
                assert_eq!(error.kind, transport::ErrorKind::Transient, "{error}");
            }
            other => panic!("{other:?}"),
        }
    }
}
