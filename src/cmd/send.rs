//! `digestif send`, `lint`, `ledger`, `unsubscribe`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::cli::{DateArgs, LedgerArgs, SendArgs, UnsubscribeArgs};
use crate::config::{Config, Secret};
use crate::deliver::message::MessageFactory;
use crate::deliver::send::{DigestComposer, SendReport};
use crate::domain::{Digest, SubscriberEmail, SubscriberStatus};
use crate::pipeline::{self, Delivery, LeaseStep, Lint, Sender, Sent};
use crate::render::Assets;
use crate::store::{Backend, Store};

use super::exit::usage;
use super::{date_of, load_config, now_of, runtime, CmdResult};

/// The signing secret: `DIGESTIF_SECRET` or `[secrets] file`, with the previous
/// ones still accepted. Whatever the transport: `.eml` files are mailed by
/// someone too, and their links must not be forgeable.
pub fn secret_for(cfg: &Config) -> anyhow::Result<Secret> {
    Ok(Secret::load(cfg)?)
}

/// Opens the subscriber store of the config.
pub fn open_store(cfg: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(open_backend(cfg)?)
}

/// Opens the database of the config, its schema brought up to date; the
/// error names it without its password.
pub fn open_backend(cfg: &Config) -> anyhow::Result<Arc<dyn Backend>> {
    crate::store::open(cfg).map_err(|e| cannot_open(&cfg.database(), e))
}

/// The error of a database that cannot be opened: where it is (its password
/// hidden) and why.
pub fn cannot_open(at: &crate::store::Location, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("cannot open the database {at}: {why}")
}

/// The database of the config if it exists already (a PostgreSQL database, or
/// a SQLite file that is there): `None` rather than a new empty file, for the
/// commands that read or freeze the issue without sending it through the
/// ledger (`build`, `preview`, `lint`, `send --dry-run` and `--to`). They never
/// migrate a schema: one behind this binary is refused, saying to run
/// `digestif migrate`, so that trying a new version against a database older
/// binaries still run on leaves them working. Only a database with no schema
/// at all (nothing can run on it yet) is given one.
pub fn existing_store(cfg: &Config) -> anyhow::Result<Option<Arc<dyn Store>>> {
    use crate::store::{Location, Schema};
    let at = cfg.database();
    if matches!(at, Location::SqliteMemory) {
        return Ok(None);
    }
    let cannot = |e| cannot_open(&at, e);
    Ok(match crate::store::schema_at(&at).map_err(cannot)? {
        Schema::NoFile(_) => None,
        Schema::Empty => Some(open_store(cfg)?),
        schema => {
            schema.require_current().map_err(|e| {
                anyhow::anyhow!(
                    "{}: this command never migrates (`digestif migrate` does)",
                    cannot(e)
                )
            })?;
            Some(
                crate::store::open_current_at(&at, crate::store::Access::ReadWrite)
                    .map_err(cannot)?,
            )
        }
    })
}

fn issue(
    cfg: &Config,
    assets: &Assets,
    args: &DateArgs,
) -> anyhow::Result<(Digest, chrono::DateTime<chrono::Utc>)> {
    let now = now_of(args);
    let date = date_of(cfg, args, now);
    let store = existing_store(cfg)?;
    let rt = runtime()?;
    // Read, or built and frozen under the issue's lease: never frozen here
    // while another process builds it.
    let digest = rt
        .block_on(pipeline::issue_to_check(cfg, assets, store, date, now))?
        .ok_or_else(|| nothing_new(date))?;
    Ok((digest, now))
}

fn nothing_new(date: chrono::NaiveDate) -> anyhow::Error {
    anyhow::anyhow!(
        "nothing new for {date}: no issue to send (see `digestif articles --date {date}`)"
    )
}

/// Checks what the message needs from the config and the disk (sender, DKIM key)
/// before any feed is fetched: a bad key stops the run at once, not at each message.
pub fn check_message_config(cfg: &Config) -> anyhow::Result<()> {
    MessageFactory::from_config(cfg).map(drop).map_err(usage)
}

pub fn send(config: Option<&Path>, args: &SendArgs) -> CmdResult {
    if args.limit == Some(0) {
        return Err(usage(anyhow::anyhow!(
            "--limit 0 would send nothing: give at least 1 (or --dry-run to check the issue)"
        )));
    }
    let cfg = load_config(config)?;
    // A dry run sends nothing, so it can check an issue before the secret is set.
    let secret = match secret_for(&cfg) {
        Err(_) if args.dry_run => Secret::random(),
        other => other?,
    };
    let assets = pipeline::assets(&cfg)?;
    let now = now_of(&args.when);
    let date = date_of(&cfg, &args.when, now);
    let (delivery, store) = match (&args.to, args.dry_run) {
        (_, true) => (Delivery::DryRun, existing_store(&cfg)?),
        (Some(to), false) => (
            Delivery::TestCopy(
                SubscriberEmail::parse(to).map_err(|e| usage(anyhow::anyhow!("--to: {e}")))?,
            ),
            existing_store(&cfg)?,
        ),
        (None, false) => {
            let store = open_store(&cfg)?;
            super::bounces::warn_on_last_issue(&cfg, store.as_ref(), date);
            let delivery = Delivery::Ledger {
                store: store.clone(),
                limit: args.limit,
                lease: LeaseStep::Take,
                gate: Default::default(),
            };
            (delivery, Some(store))
        }
    };
    let lint = if args.no_lint {
        Lint::WarnOnly
    } else {
        Lint::Enforce
    };
    let sender = Sender {
        cfg: &cfg,
        assets: &assets,
        secret,
        store,
    };
    let sent = crate::deliver::send::single_thread_runtime()?
        .block_on(pipeline::send(sender, date, now, lint, delivery))?;
    match sent {
        Sent::NothingNew => Err(nothing_new(date)),
        Sent::DryRun { digest, bytes } => {
            println!(
                "dry run: issue {} rendered and checked ({bytes} bytes for a sample subscriber); nothing sent",
                digest.date
            );
            Ok(())
        }
        Sent::TestCopy { digest, message_id } => {
            println!(
                "test copy of {} sent to {} (Message-ID <{message_id}>)",
                digest.date,
                args.to.as_deref().unwrap_or_default()
            );
            Ok(())
        }
        Sent::Ledger { digest, report } => print_report(&digest, &report, args.limit),
    }
}

/// The run's report for people; exit 0 only when nothing is left pending (but
/// what `--limit` held back on purpose).
fn print_report(digest: &Digest, report: &SendReport, limit: Option<u64>) -> CmdResult {
    for a in &report.in_doubt {
        println!("in doubt (may have received two copies): {a}");
    }
    for (a, e) in &report.failures {
        println!("failed: {a}: {e}");
    }
    // Every message this run handed out ended as sent or failed, and the run
    // stopped at --limit: what is left pending was held back on purpose.
    let held_back_by_limit =
        limit.is_some_and(|l| report.sent + report.failed >= l && report.pending_left > 0);
    if held_back_by_limit {
        println!(
            "held back by --limit: {} message(s), sent by the next `digestif send --date {}`",
            report.pending_left, digest.date
        );
    }
    // The report is the last line of the output.
    println!("{}: {}", digest.date, report.summary());
    if let Some(why) = &report.stopped {
        Err(anyhow::anyhow!(
            "the run stopped: {why}; {} message(s) left pending: fix that, then run `digestif send --date {}` again",
            report.pending_left,
            digest.date
        ))
    } else if report.is_complete() || held_back_by_limit {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{} message(s) left pending: run `digestif send --date {}` again",
            report.pending_left,
            digest.date
        ))
    }
}

/// The message body `subscriber` gets for `digest`, as `send` would build it.
/// With `kept_in` (the database the issue is frozen in) their variant is the
/// one kept there, the bytes every sender sends, once a sender kept it (until
/// then it is rendered here, and said so); nothing is written. Without
/// DIGESTIF_SECRET the links are signed with a placeholder secret.
pub fn email_for(
    cfg: &Config,
    assets: &Assets,
    digest: &Digest,
    email: &str,
    now: chrono::DateTime<chrono::Utc>,
    kept_in: Option<Arc<dyn Store>>,
) -> anyhow::Result<crate::render::RenderedEmail> {
    let address =
        SubscriberEmail::parse(email).map_err(|e| usage(anyhow::anyhow!("--for: {e}")))?;
    // Only read: the database as it is, never migrated (see `existing_store`).
    let at = cfg.database();
    let store = crate::store::open_current_at(&at, crate::store::Access::ReadOnly)
        .map_err(|e| cannot_open(&at, e))?;
    let subscriber = store
        .subscriber_by_email(&address)
        .map_err(|e| anyhow::anyhow!("cannot read the subscribers: {e}"))?
        .ok_or_else(|| {
            usage(anyhow::anyhow!(
                "--for: {email} is not a subscriber (see `digestif subscribers list`)"
            ))
        })?;
    let secret = secret_for(cfg).unwrap_or_else(|_| {
        eprintln!("note: no secret is set: the links carry a one-off signature that works nowhere");
        Secret::random()
    });
    let mut composer = DigestComposer::new(cfg, digest, assets, secret, now).map_err(usage)?;
    if let Some(kept_in) = kept_in {
        let locale = subscriber.locale.unwrap_or(digest.locale);
        let key = crate::store::issues::variant_key(locale, &subscriber.categories);
        let kept = kept_in
            .issues()
            .frozen_variant(digest.date, &key)
            .context("cannot read the kept variants")?;
        if kept.is_none() {
            eprintln!(
                "note: no sender kept the variant {key:?} of the issue of {} yet: \
                 rendered here, as this machine would send it",
                digest.date
            );
        }
        composer = composer.as_kept_in(kept_in);
    }
    Ok(composer.render_for(&subscriber)?.0)
}

pub fn lint(config: Option<&Path>, args: &DateArgs) -> CmdResult {
    let cfg = load_config(config)?;
    check_message_config(&cfg)?;
    let secret = secret_for(&cfg).unwrap_or_else(|_| Secret::random());
    let assets = pipeline::assets(&cfg)?;
    let (digest, now) = issue(&cfg, &assets, args)?;
    let issues = pipeline::lint(&cfg, &assets, &digest, secret, now)?;
    if issues.is_empty() {
        println!("{}: the message passes every sending rule", digest.date);
        return Ok(());
    }
    for i in &issues {
        println!("{i}");
    }
    Err(anyhow::anyhow!(
        "the message of {} breaks {} sending rule(s)",
        digest.date,
        issues.len()
    ))
}

pub fn ledger(config: Option<&Path>, args: &LedgerArgs) -> CmdResult {
    let cfg = load_config(config)?;
    let store = open_store(&cfg)?;
    let date = match args.date {
        Some(d) => d,
        None => match store
            .ledger_dates()
            .context("cannot read the ledger")?
            .first()
        {
            Some(d) => *d,
            None => {
                println!("the ledger is empty: nothing was sent yet");
                return Ok(());
            }
        },
    };
    let c = store
        .ledger_counts(date)
        .context("cannot read the ledger")?;
    println!(
        "{date}: pending {}, sending {}, sent {}, failed {}",
        c.pending, c.sending, c.sent, c.failed
    );
    let rates =
        super::bounces::issue_rates(store.as_ref(), date).context("cannot read the bounces")?;
    if rates.sent > 0 {
        println!("{rates}");
    }
    if let Some(holder) = store
        .lease_holder(&crate::lease::issue_lease(date))
        .context("cannot read the leases")?
    {
        println!("being sent by {holder}");
    }
    for line in sender_lines(store.as_ref(), date, crate::clock::now())? {
        println!("{line}");
    }
    for (a, e) in store
        .ledger_failures(date)
        .context("cannot read the ledger")?
    {
        println!("failed: {a}: {e}");
    }
    Ok(())
}

/// One line per sender of the issue of `date`, as of `now`: the rows it holds
/// (claimed, in flight) and those it sent or failed, and its last heartbeat
/// (none once it finished, or was taken over).
fn sender_lines(
    store: &dyn Store,
    date: chrono::NaiveDate,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Vec<String>> {
    let rows = store
        .ledger_by_sender(date)
        .context("cannot read the ledger by sender")?;
    let seen = store
        .senders(date)
        .context("cannot read the senders' heartbeats")?;
    let mut names: Vec<&crate::store::Holder> = rows.iter().map(|r| &r.holder).collect();
    names.extend(seen.iter().map(|s| &s.holder));
    names.sort_by_key(|h| h.as_str());
    names.dedup();
    Ok(names
        .into_iter()
        .map(|holder| {
            let c = rows
                .iter()
                .find(|r| &r.holder == holder)
                .map(|r| r.rows.clone())
                .unwrap_or_default();
            let heartbeat = match seen.iter().find(|s| &s.holder == holder) {
                Some(s) => format!(
                    "last heartbeat {} ({} s ago)",
                    s.last_seen.format("%Y-%m-%d %H:%M:%S UTC"),
                    (now - s.last_seen).num_seconds().max(0)
                ),
                None => "no heartbeat (finished, or gone and taken over)".into(),
            };
            format!(
                "sender {holder}: holds {} ({} claimed, {} sending), sent {}, failed {}, {heartbeat}",
                c.pending + c.sending,
                c.pending,
                c.sending,
                c.sent,
                c.failed
            )
        })
        .collect())
}

pub fn unsubscribe(config: Option<&Path>, args: &UnsubscribeArgs) -> CmdResult {
    let cfg = load_config(config)?;
    let email = SubscriberEmail::parse(&args.email).map_err(|e| usage(anyhow::anyhow!(e)))?;
    let store = open_store(&cfg)?;
    let sub = store
        .subscriber_by_email(&email)
        .context("cannot read subscribers")?;
    match sub {
        None => {
            return Err(anyhow::anyhow!(
                "{email} is not a subscriber (letter case does not count): nothing to do"
            ));
        }
        Some(s) if s.status == SubscriberStatus::Unsubscribed => {
            println!("{email} was already unsubscribed");
        }
        Some(s) => {
            store
                .set_status(
                    s.id,
                    SubscriberStatus::Unsubscribed,
                    "unsubscribe command",
                    crate::clock::now(),
                )
                .context("cannot update the subscriber")?;
            println!("{email} unsubscribed");
        }
    }
    Ok(())
}
