//! `digestif bounces`: returned mail in, subscribers changed, one summary line out.
//!
//! Every message that changed nothing (forged, unsigned, unknown subscriber, not a
//! report) is logged with its source and counted in the summary. Exit codes: 0 every
//! message was read; 75 (EX_TEMPFAIL) when the one message of standard input could not
//! be recorded, so that a Postfix pipe delivers it again later; 1 when messages of a
//! Maildir, mbox or IMAP mailbox are left to read again (or the mailbox could not be
//! read); 2 usage or config.

use std::path::Path;

use std::sync::Arc;

use anyhow::anyhow;
use chrono::{DateTime, NaiveDate, Utc};

use crate::bounces::imap::Protocol;
use crate::bounces::{mailbox, Handler, IssueRates, Summary};
use crate::cli::BouncesArgs;
use crate::config::{Config, Secret};
use crate::store::{BounceStore, Store};

use super::exit::{usage, TryLater};
use super::{load_config, CmdResult};

pub fn bounces(config: Option<&Path>, args: &BouncesArgs) -> CmdResult {
    let cfg = load_config(config)?;
    let Some(return_path) = &cfg.bounces.return_path else {
        return Err(usage(anyhow!(
            "[bounces] return_path is not set: returned mail is matched to subscribers by the \
             signed return path of each message sent. Set it (e.g. return_path = \
             \"bounces@news.example.com\"), send with it, and route that address's mail here"
        )));
    };
    let secret = super::send::secret_for(&cfg)?;
    let store = super::send::open_backend(&cfg)?;
    let now = args
        .now
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(crate::clock::now);
    if args.imap {
        let summary = super::runtime()?.block_on(poll_mailbox(&cfg, &*store, &secret, now))?;
        println!("{summary}");
        return left_to_read(&summary, false);
    }
    let items = match (&args.maildir, &args.mbox) {
        (Some(dir), _) => mailbox::maildir(dir).map_err(usage)?,
        (None, Some(file)) => mailbox::mbox(file).map_err(usage)?,
        (None, None) => mailbox::stdin()?,
    };
    let handler = Handler {
        return_path,
        secret: &secret,
        rules: cfg.bounces.rules(),
        store: &*store,
    };
    let mut summary = Summary::default();
    for item in items {
        // One message that cannot be read is reported; the others are read all the same.
        let item = match item {
            Ok(item) => item,
            Err(e) => {
                tracing::error!("{e:#}");
                summary.failed += 1;
                continue;
            }
        };
        // A message that cannot be moved is read again next time: it counts once.
        if read_one(&handler, &item.raw, &item.source, now, &mut summary) {
            if let Err(e) = item.done() {
                tracing::warn!("{e:#}");
            }
        }
    }
    println!("{summary}");
    let stdin = args.maildir.is_none() && args.mbox.is_none();
    left_to_read(&summary, stdin)
}

/// An error when messages could not be recorded; from a pipe (standard input),
/// one the mail server retries later (exit 75, EX_TEMPFAIL), as the message is
/// not kept anywhere else.
fn left_to_read(summary: &Summary, from_pipe: bool) -> CmdResult {
    if summary.failed > 0 {
        let e = anyhow!(
            "{} message(s) could not be recorded; they are left to read again",
            summary.failed
        );
        return Err(if from_pipe { TryLater(e).into() } else { e });
    }
    Ok(())
}

/// Reads one message: its outcome logged (a warning when it changed nothing for a
/// reason to look at) and counted. Whether it was read: false leaves it for later.
fn read_one(
    handler: &Handler<'_>,
    raw: &[u8],
    source: &str,
    now: DateTime<Utc>,
    summary: &mut Summary,
) -> bool {
    match handler.handle(raw, source, now) {
        Ok(outcome) => {
            if outcome.is_suspect() {
                tracing::warn!(source = %source, "{outcome}");
            } else {
                tracing::info!(source = %source, "{outcome}");
            }
            summary.add(&outcome);
            true
        }
        Err(e) => {
            tracing::error!(source = %source, "cannot record: {e}");
            summary.failed += 1;
            false
        }
    }
}

/// The password of `[bounces] mailbox` and the TLS setup it needs.
fn mailbox_access(
    cfg: &Config,
    mailbox: &crate::bounces::imap::MailboxUrl,
) -> anyhow::Result<(String, Option<Arc<rustls::ClientConfig>>)> {
    let var = cfg.bounces.mailbox_password_env.as_deref().unwrap_or("");
    let password = std::env::var(var)
        .map_err(|_| anyhow!("{var} is not set: it holds the password of bounces.mailbox"))?;
    let tls = if mailbox.tls {
        use crate::deliver::transport::tls;
        let extra = match &cfg.bounces.mailbox_ca_file {
            Some(p) => {
                let path = cfg.resolve(p);
                let pem = std::fs::read(&path)
                    .map_err(|e| anyhow!("bounces.mailbox_ca_file {}: {e}", path.display()))?;
                tls::pem_certificates(&pem)
                    .map_err(|e| anyhow!("bounces.mailbox_ca_file {}: {e}", path.display()))?
            }
            None => Vec::new(),
        };
        Some(tls::client_config(&extra, tls::Peer::Mailbox)?)
    } else {
        None
    };
    Ok((password, tls))
}

/// Logs in to `[bounces] mailbox` and counts what waits there, reading nothing.
pub async fn probe_mailbox(cfg: &Config) -> anyhow::Result<u64> {
    let mailbox = cfg
        .bounces
        .mailbox
        .as_ref()
        .ok_or_else(|| anyhow!("[bounces] mailbox is not set"))?;
    let (password, tls) = mailbox_access(cfg, mailbox)?;
    match mailbox.protocol {
        Protocol::Imap => crate::bounces::imap::probe(mailbox, &password, tls).await,
        Protocol::Pop3 => crate::bounces::pop3::probe(mailbox, &password, tls).await,
    }
}

/// Reads `[bounces] mailbox` once; read messages are deleted there.
pub async fn poll_mailbox(
    cfg: &Config,
    store: &dyn BounceStore,
    secret: &Secret,
    now: DateTime<Utc>,
) -> anyhow::Result<Summary> {
    let (Some(mailbox), Some(return_path)) = (&cfg.bounces.mailbox, &cfg.bounces.return_path)
    else {
        anyhow::bail!("[bounces] mailbox and return_path must be set to read a mailbox");
    };
    let (password, tls) = mailbox_access(cfg, mailbox)?;
    let handler = Handler {
        return_path,
        secret,
        rules: cfg.bounces.rules(),
        store,
    };
    let mut summary = Summary::default();
    let read = |raw: &[u8], source: &str| read_one(&handler, raw, source, now, &mut summary);
    match mailbox.protocol {
        Protocol::Imap => crate::bounces::imap::poll(mailbox, &password, tls, read).await?,
        Protocol::Pop3 => crate::bounces::pop3::poll(mailbox, &password, tls, read).await?,
    };
    Ok(summary)
}

/// `serve`'s mailbox poller: `[bounces] mailbox` read at start and every
/// `poll_minutes`; a failed poll is logged and tried again next time.
pub async fn poll_forever(cfg: Arc<Config>, store: Arc<dyn Store>, secret: Secret) {
    let minutes = u64::from(cfg.bounces.poll_minutes);
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60 * minutes));
    loop {
        every.tick().await;
        match poll_mailbox(&cfg, store.bounces(), &secret, crate::clock::now()).await {
            Ok(s) if s.read > 0 => tracing::info!("bounce mailbox: {s}"),
            Ok(_) => {}
            Err(e) => tracing::warn!("bounce mailbox: {e:#}"),
        }
    }
}

/// The rates of the issue of `date`.
pub fn issue_rates(store: &dyn Store, date: NaiveDate) -> anyhow::Result<IssueRates> {
    let sent = store.ledger_counts(date)?.sent;
    let counts = store.bounces().bounce_counts(date)?;
    Ok(IssueRates { date, sent, counts })
}

/// The rates of the last issue that went out before `before` (any date when `None`).
pub fn last_issue_rates(
    store: &dyn Store,
    before: Option<NaiveDate>,
) -> anyhow::Result<Option<IssueRates>> {
    for date in store.ledger_dates()? {
        if before.is_some_and(|b| date >= b) {
            continue;
        }
        let r = issue_rates(store, date)?;
        if r.sent > 0 {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// `send`'s warning: the last issue before `date` bounced or drew complaints above
/// the `[bounces]` limits. Sending goes on; `check` fails on the same condition.
pub fn warn_on_last_issue(cfg: &crate::config::Config, store: &dyn Store, date: NaiveDate) {
    match last_issue_rates(store, Some(date)) {
        Ok(Some(rates)) => {
            for w in rates.over_limits(&cfg.bounces) {
                tracing::warn!("{w}");
                eprintln!("warning: {w}");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("cannot read the bounce rates of the last issue: {e:#}"),
    }
}
