//! `digestif send`, `lint`, `ledger`, `unsubscribe`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::cli::{DateArgs, LedgerArgs, SendArgs, UnsubscribeArgs};
use crate::config::{Config, Secret};
use crate::deliver::message::MessageFactory;
use crate::deliver::send::{self, Compose, DigestComposer, SendJob};
use crate::deliver::transport;
use crate::domain::{Digest, Subscriber, SubscriberEmail, SubscriberStatus};
use crate::pipeline;
use crate::render::Assets;
use crate::store::Store;

use super::{date_of, load_config, now_of, runtime, CmdResult, Failure};

/// The signing secret: `DIGESTIF_SECRET` or `[secrets] file`, with the previous
/// ones still accepted. Whatever the transport: `.eml` files are mailed by
/// someone too, and their links must not be forgeable.
pub fn secret_for(cfg: &Config) -> Result<Secret, Failure> {
    Secret::load(cfg).map_err(|e| Failure::usage(anyhow::anyhow!(e)))
}

/// Opens the subscriber store of the config.
pub fn open_store(cfg: &Config) -> Result<Arc<dyn Store>, Failure> {
    let store = crate::store::SqliteStore::for_config(cfg).map_err(|e| {
        Failure::job(anyhow::anyhow!(
            "cannot open the database {:?}: {e}",
            cfg.storage.database
        ))
    })?;
    Ok(Arc::new(store))
}

fn issue(
    cfg: &Config,
    assets: &Assets,
    args: &DateArgs,
) -> Result<(Digest, chrono::DateTime<chrono::Utc>), Failure> {
    let now = now_of(args);
    let date = date_of(cfg, args, now);
    let rt = runtime()?;
    let digest = rt
        .block_on(pipeline::issue_for(cfg, assets, date, now))?
        .ok_or_else(|| {
            Failure::job(anyhow::anyhow!(
                "nothing new for {date}: no issue to send (see `digestif articles --date {date}`)"
            ))
        })?;
    Ok((digest, now))
}

fn sample_address() -> SubscriberEmail {
    SubscriberEmail::parse("reader@example.com").expect("valid sample address")
}

/// A stand-in subscriber for test copies and lint: no name, the newsletter's locale.
fn sample_subscriber(email: SubscriberEmail) -> Subscriber {
    Subscriber {
        id: 0,
        link_key: Default::default(),
        email,
        name: None,
        locale: None,
        categories: Vec::new(),
        timezone: None,
        status: SubscriberStatus::Active,
    }
}

/// Checks what the message needs from the config and the disk (sender, DKIM key)
/// before any feed is fetched: a bad key stops the run at once, not at each message.
pub fn check_message_config(cfg: &Config) -> Result<(), Failure> {
    MessageFactory::from_config(cfg)
        .map(drop)
        .map_err(Failure::usage)
}

pub fn send(config: Option<&Path>, args: &SendArgs) -> CmdResult {
    if args.limit == Some(0) {
        return Err(Failure::usage(anyhow::anyhow!(
            "--limit 0 would send nothing: give at least 1 (or --dry-run to check the issue)"
        )));
    }
    let cfg = load_config(config)?;
    // A dry run sends nothing, so it can check an issue before the secret is set.
    let secret = match secret_for(&cfg) {
        Err(_) if args.dry_run => Secret::random(),
        other => other?,
    };
    check_message_config(&cfg)?;
    let assets = pipeline::assets(&cfg).map_err(Failure::usage)?;
    let (digest, now) = issue(&cfg, &assets, &args.when)?;
    let composer =
        DigestComposer::new(&cfg, &digest, &assets, secret.clone(), now).map_err(Failure::usage)?;

    // The pre-send check: any broken rule stops the issue before anyone gets it.
    let issues = composer.lint_for(&sample_subscriber(sample_address()))?;
    if !issues.is_empty() {
        for i in &issues {
            eprintln!("lint: {i}");
        }
        return Err(Failure::job(anyhow::anyhow!(
            "the message of {} breaks {} sending rule(s) (listed above): nothing was sent. \
             See `digestif lint --date {}`.",
            digest.date,
            issues.len(),
            digest.date
        )));
    }
    if args.dry_run {
        let msg = composer.compose(&sample_subscriber(sample_address()))?;
        println!(
            "dry run: issue {} rendered and checked ({} bytes for a sample subscriber); nothing sent",
            digest.date,
            msg.bytes.len()
        );
        return Ok(());
    }

    let transport = transport::from_config(&cfg).map_err(Failure::usage)?;
    let rt = send::single_thread_runtime()?;

    if let Some(to) = &args.to {
        let email =
            SubscriberEmail::parse(to).map_err(|e| Failure::usage(anyhow::anyhow!("--to: {e}")))?;
        let id = rt.block_on(send::send_test_copy(
            &composer,
            transport.as_ref(),
            &sample_subscriber(email),
        ))?;
        println!(
            "test copy of {} sent to {to} (Message-ID <{id}>)",
            digest.date
        );
        return Ok(());
    }

    let store = open_store(&cfg)?;
    super::bounces::warn_on_last_issue(&cfg, store.as_ref(), digest.date);
    // One sender per issue across processes: the scheduler of `serve` takes the
    // same lease. Rows in flight in another process must not look "in doubt" here.
    let _lease = IssueLease::take(&cfg, store.clone(), digest.date)?;
    let report = rt.block_on(send::send_issue(SendJob {
        cfg: &cfg,
        store,
        digest: &digest,
        assets: &assets,
        transport,
        now,
        limit: args.limit,
        secret,
    }))?;
    for a in &report.in_doubt {
        println!("in doubt (may have received two copies): {a}");
    }
    for (a, e) in &report.failures {
        println!("failed: {a}: {e}");
    }
    // Every message this run handed out ended as sent or failed, and the run
    // stopped at --limit: what is left pending was held back on purpose.
    let held_back_by_limit = args
        .limit
        .is_some_and(|l| report.sent + report.failed >= l && report.pending_left > 0);
    if held_back_by_limit {
        println!(
            "held back by --limit: {} message(s), sent by the next `digestif send --date {}`",
            report.pending_left, digest.date
        );
    }
    // The report is the last line of the output.
    println!("{}: {}", digest.date, report.summary());
    if let Some(why) = &report.stopped {
        Err(Failure::job(anyhow::anyhow!(
            "the run stopped: {why}; {} message(s) left pending: fix that, then run `digestif send --date {}` again",
            report.pending_left,
            digest.date
        )))
    } else if report.is_complete() || held_back_by_limit {
        Ok(())
    } else {
        Err(Failure::job(anyhow::anyhow!(
            "{} message(s) left pending: run `digestif send --date {}` again",
            report.pending_left,
            digest.date
        )))
    }
}

/// The message body `subscriber` gets for `digest`, as `send` would build it.
/// Without DIGESTIF_SECRET the links are signed with a placeholder secret.
pub fn email_for(
    cfg: &Config,
    assets: &Assets,
    digest: &Digest,
    email: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<crate::render::RenderedEmail, Failure> {
    let address =
        SubscriberEmail::parse(email).map_err(|e| Failure::usage(anyhow::anyhow!("--for: {e}")))?;
    let store = open_store(cfg)?;
    let subscriber = store
        .subscriber_by_email(&address)
        .map_err(|e| Failure::job(anyhow::anyhow!("cannot read the subscribers: {e}")))?
        .ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "--for: {email} is not a subscriber (see `digestif subscribers list`)"
            ))
        })?;
    let secret = secret_for(cfg).unwrap_or_else(|_| {
        eprintln!("note: no secret is set: the links carry a one-off signature that works nowhere");
        Secret::random()
    });
    let composer = DigestComposer::new(cfg, digest, assets, secret, now).map_err(Failure::usage)?;
    Ok(composer.render_for(&subscriber).0)
}

/// `issue:<date>` held while `send` runs, renewed from its own thread every third
/// of `[schedule] lease_seconds` (a killed process loses it after that), released
/// when dropped.
struct IssueLease {
    store: Arc<dyn Store>,
    name: String,
    holder: String,
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    renew: Option<std::thread::JoinHandle<()>>,
}

impl IssueLease {
    fn take(
        cfg: &Config,
        store: Arc<dyn Store>,
        date: chrono::NaiveDate,
    ) -> Result<IssueLease, Failure> {
        let name = crate::schedule::issue_lease(date);
        let holder = crate::schedule::lease_holder("send");
        let len = chrono::Duration::seconds(cfg.schedule.lease_seconds.max(5) as i64);
        let now = crate::clock::now();
        let taken = crate::schedule::take_lease(store.as_ref(), &name, &holder, now, now + len)
            .map_err(|e| Failure::job(anyhow::anyhow!("cannot take the send lease: {e}")))?;
        if !taken {
            return Err(Failure::job(anyhow::anyhow!(
                "the issue of {date} is being sent by another process (`digestif serve` or \
                 another `digestif send`): nothing done here. Its progress: `digestif ledger --date {date}`"
            )));
        }
        let stop = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let renew = {
            let (store, name, holder, stop) =
                (store.clone(), name.clone(), holder.clone(), stop.clone());
            let every = len.to_std().unwrap_or_default() / 3;
            std::thread::spawn(move || {
                let (lock, cv) = &*stop;
                let mut stopped = lock.lock().expect("lease lock");
                // The flag is checked before each wait: a stop that came before
                // this thread first waited is not missed.
                while !*stopped {
                    let (guard, waited) = cv.wait_timeout(stopped, every).expect("lease lock");
                    stopped = guard;
                    if *stopped || !waited.timed_out() {
                        continue;
                    }
                    let now = crate::clock::now();
                    if !matches!(store.try_lease(&name, &holder, now, now + len), Ok(true)) {
                        tracing::error!(lease = %name, "could not renew the send lease");
                    }
                }
            })
        };
        Ok(IssueLease {
            store,
            name,
            holder,
            stop,
            renew: Some(renew),
        })
    }
}

impl Drop for IssueLease {
    fn drop(&mut self) {
        *self.stop.0.lock().expect("lease lock") = true;
        self.stop.1.notify_all();
        if let Some(t) = self.renew.take() {
            let _ = t.join();
        }
        if self.store.release_lease(&self.name, &self.holder).is_err() {
            tracing::warn!("could not release the send lease; it expires on its own");
        }
    }
}

pub fn lint(config: Option<&Path>, args: &DateArgs) -> CmdResult {
    let cfg = load_config(config)?;
    check_message_config(&cfg)?;
    let secret = secret_for(&cfg).unwrap_or_else(|_| Secret::random());
    let assets = pipeline::assets(&cfg).map_err(Failure::usage)?;
    let (digest, now) = issue(&cfg, &assets, args)?;
    let composer =
        DigestComposer::new(&cfg, &digest, &assets, secret, now).map_err(Failure::usage)?;
    let issues = composer.lint_for(&sample_subscriber(sample_address()))?;
    if issues.is_empty() {
        println!("{}: the message passes every sending rule", digest.date);
        return Ok(());
    }
    for i in &issues {
        println!("{i}");
    }
    Err(Failure::job(anyhow::anyhow!(
        "the message of {} breaks {} sending rule(s)",
        digest.date,
        issues.len()
    )))
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
    if let Some(rates) = super::bounces::issue_rates(store.as_ref(), date)
        .context("cannot read the bounces")?
        .filter(|r| r.sent > 0)
    {
        println!("{rates}");
    }
    if let Some(holder) = store
        .lease_holder(&crate::schedule::issue_lease(date))
        .context("cannot read the leases")?
    {
        println!("being sent by {holder}");
    }
    for (a, e) in store
        .ledger_failures(date)
        .context("cannot read the ledger")?
    {
        println!("failed: {a}: {e}");
    }
    Ok(())
}

pub fn unsubscribe(config: Option<&Path>, args: &UnsubscribeArgs) -> CmdResult {
    let cfg = load_config(config)?;
    let email =
        SubscriberEmail::parse(&args.email).map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
    let store = open_store(&cfg)?;
    let sub = store
        .subscriber_by_email(&email)
        .context("cannot read subscribers")?;
    match sub {
        None => {
            return Err(Failure::job(anyhow::anyhow!(
                "{email} is not a subscriber (letter case does not count): nothing to do"
            )));
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
