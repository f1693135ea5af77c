//! `digestif check`: every part a send needs, tried once, nothing sent. One line
//! per part ("ok" or "FAIL" and what to fix); exit 1 if any part failed.

use std::path::Path;

use crate::config::{Config, TransportKind};
use crate::deliver::message::MessageFactory;
use crate::deliver::transport;
use crate::domain::SubscriberStatus;

use super::send::{open_store, secret_for};
use super::{load_config, runtime, CmdResult};

/// One checked part: its name, and what was found or what is wrong.
struct Line {
    part: String,
    result: Result<String, String>,
}

fn line(part: impl Into<String>, result: Result<String, String>) -> Line {
    Line {
        part: part.into(),
        result,
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
            .map_err(|e| format!("{e:#}")),
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
            .map_err(|e| format!("{e:#}")),
    ));
    lines.push(line(
        "secret",
        // Needed whatever the transport: `.eml` files are mailed by someone too.
        secret_for(&cfg)
            .map(|s| match s.all().count() - 1 {
                0 => "set".to_string(),
                n => format!("set; {n} previous secret(s) still accepted on links"),
            })
            .map_err(|e| format!("{e:#}")),
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
    lines.push(line("database", database(&cfg)));
    lines.push(line("bounce rates", bounce_rates(&cfg)));
    if cfg.bounces.mailbox.is_some() {
        lines.push(line(
            "bounce mailbox",
            mailbox_check(&cfg).map_err(|e| format!("{e:#}")),
        ));
    }
    if let Some(hooks) = webhooks(&cfg) {
        lines.push(line("bounce webhooks", hooks));
    }
    let rt = runtime()?;
    let (_, sources) = rt.block_on(crate::ingest::ingest(&cfg, crate::clock::now()));
    for s in sources {
        lines.push(line(
            format!("source {:?}", s.name),
            match s.error {
                None => Ok(format!("{} item(s)", s.articles)),
                Some(e) => Err(e),
            },
        ));
    }
    lines.push(line("delivery", rt.block_on(delivery(&cfg))));

    let failed = lines.iter().filter(|l| l.result.is_err()).count();
    for l in &lines {
        match &l.result {
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

fn database(cfg: &Config) -> Result<String, String> {
    let store = open_store(cfg).map_err(|e| format!("{e:#}"))?;
    store.ping().map_err(|e| e.to_string())?;
    let counts = store.count_by_status().map_err(|e| e.to_string())?;
    let active = counts
        .iter()
        .find(|(s, _)| *s == SubscriberStatus::Active)
        .map_or(0, |(_, n)| *n);
    Ok(format!("{active} active subscriber(s)"))
}

/// The SES and Postmark webhooks `[bounces]` sets up: certificate read and valid,
/// password set, our Message-IDs short enough for Postmark's metadata. `None` when
/// neither is set.
fn webhooks(cfg: &Config) -> Option<Result<String, String>> {
    let hooks = match crate::http::webhooks::Webhooks::from_config(cfg) {
        Ok(h) => h,
        Err(e) => return Some(Err(e.to_string())),
    };
    let mut parts = Vec::new();
    if let Some(ses) = &hooks.ses {
        match ses.describe(crate::clock::now()) {
            Ok(s) => parts.push(s),
            Err(e) => return Some(Err(e.to_string())),
        }
    }
    if hooks.postmark.is_some() {
        // A Message-ID too long for Postmark's metadata comes back from none of its
        // reports: every bounce and complaint it posts would match nothing, so this
        // fails rather than warns. Without a factory the `sender` line says why.
        if let Ok(f) = MessageFactory::from_config(cfg) {
            if let Err(e) = crate::bounces::postmark::check_metadata(&f.new_message_id()) {
                return Some(Err(e.to_string()));
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

/// The last issue's hard-bounce and complaint rates are within `[bounces]`' limits.
fn bounce_rates(cfg: &Config) -> Result<String, String> {
    let store = open_store(cfg).map_err(|e| format!("{e:#}"))?;
    match super::bounces::last_issue_rates(store.as_ref(), None).map_err(|e| format!("{e:#}"))? {
        None => Ok("no issue sent yet".into()),
        Some(rates) => {
            let over = rates.over_limits(&cfg.bounces);
            if over.is_empty() {
                Ok(format!("last issue {}: {rates}", rates.date))
            } else {
                Err(over.join("; "))
            }
        }
    }
}

/// The outbox folder is writable, or the SMTP server takes a session (TLS and
/// login as configured) that ends with QUIT, no mail.
async fn delivery(cfg: &Config) -> Result<String, String> {
    let t = transport::from_config(cfg).map_err(|e| format!("{e:#}"))?;
    if cfg.smtp.transport == TransportKind::File {
        let dir = cfg.resolve(&cfg.smtp.file_dir);
        let probe = dir.join(".digestif-check");
        std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(&probe, b"check"))
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
        return Ok(format!(
            "{} is writable (file transport: nothing is mailed)",
            t.describe()
        ));
    }
    let c = t
        .connect()
        .await
        .map_err(|e| format!("{}: {}", t.describe(), e.message))?;
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
