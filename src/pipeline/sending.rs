//! One send of an issue, the same for `digestif send` and the service's send
//! passes: the issue's lease (taken, or the send of its holder joined) → the
//! issue (frozen, archived, or built now under the lease and frozen; having
//! joined, the one the holder stores) → the pre-send check (lint) → delivery
//! through the ledger. A dry run or a test copy checks that same issue: read,
//! or built and frozen under the lease, or waited for while another holds it.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::config::{Config, Secret};
use crate::deliver::gate::Gate;
use crate::deliver::lint::LintIssue;
use crate::deliver::message::MessageFactory;
use crate::deliver::send::{self as deliver, Compose, DigestComposer, SendJob, SendReport};
use crate::deliver::transport;
use crate::domain::{Digest, Subscriber, SubscriberEmail, SubscriberStatus};
use crate::lease::{lease_holder, IssueLease};
use crate::render::Assets;
use crate::store::Store;

use super::nothing_new;

/// What a send works with, whatever it delivers.
pub struct Sender<'a> {
    pub cfg: &'a Config,
    pub assets: &'a Assets,
    /// Signs the links of each message.
    pub secret: Secret,
    /// The database the issue is frozen in (for a ledger send, the ledger's):
    /// every sender reads the issue from there. `None`: no database, the
    /// local archive only (a dry run or test copy before the first import).
    pub store: Option<Arc<dyn Store>>,
}

/// What a send does with the issue once it is checked.
pub enum Delivery {
    /// Every active subscriber of `store` not yet served, through the ledger
    /// (at most `limit` messages), as far as `gate` lets it (the service's
    /// passes: the subscribers due now, nothing new once stopping).
    Ledger {
        store: Arc<dyn Store>,
        limit: Option<u64>,
        lease: LeaseStep,
        gate: Gate,
    },
    /// Render and check, send nothing.
    DryRun,
    /// One copy to this address, outside the ledger.
    TestCopy(SubscriberEmail),
}

/// Who takes the issue's lease for a ledger send.
pub enum LeaseStep {
    /// The send takes it or joins the send of its holder ([`take_or_join`], as
    /// `digestif send`), after the check, and releases it at the end.
    Take,
    /// The caller took it already (the service, before deciding to send) and holds it throughout.
    HeldByCaller,
    /// The caller found it held and joined that send ([`take_or_join`]: the
    /// service on PostgreSQL).
    JoinedByCaller(Joined),
}

/// How a process takes part in the send of an issue ([`take_or_join`]).
pub enum SendLease {
    /// It holds the issue's lease (renewed until dropped).
    Held(IssueLease),
    /// Another process holds it and the database lets several processes send
    /// one issue (PostgreSQL): this one sends alongside it, each claiming its
    /// own rows of the ledger.
    Joined(Joined),
}

/// The send of another process, joined ([`take_or_join`]).
#[derive(Debug, Clone)]
pub struct Joined {
    /// Who holds the issue's lease.
    pub holder: String,
    /// The last finding of nothing new for the date, read before the lease
    /// was found held: one made by the holder from then on, however soon, is
    /// news to the joiner ([`nothing_new`]), which then stops as the holder
    /// did instead of reading the sources again.
    pub seen: nothing_new::Seen,
}

/// Takes the lease of the issue of `date` for `holder`; where another process
/// holds it, joins that send when the database shares sending (PostgreSQL),
/// else [`SendError::Busy`] (SQLite: one sender at a time). `digestif send`
/// and the service's send passes decide here, the same way.
pub fn take_or_join(
    cfg: &Config,
    store: Arc<dyn Store>,
    date: NaiveDate,
    holder: String,
    now: DateTime<Utc>,
) -> Result<SendLease, SendError> {
    let shared = cfg.database().shares_sending();
    // Read before the lease is found held: a finding of nothing new made by
    // its holder from then on is news to this process (read after, a finding
    // made in between would look old, and the sources be read again).
    let seen = match shared {
        true => last_nothing_new(store.as_ref(), date)?,
        false => nothing_new::Seen::default(),
    };
    let taken = IssueLease::take(store.clone(), date, holder, now, lease_length(cfg))
        .context("cannot take the send lease")
        .map_err(SendError::Deliver)?;
    if let Some(lease) = taken {
        return Ok(SendLease::Held(lease));
    }
    if !shared {
        return Err(SendError::Busy(date));
    }
    let holder = store
        .lease_holder(&crate::lease::issue_lease(date))
        .context("cannot read who holds the send lease")
        .map_err(SendError::Deliver)?
        .unwrap_or_else(|| "a process that just finished".into());
    tracing::info!(%date, lease_holder = %holder, "the issue is being sent by another process: joining it");
    Ok(SendLease::Joined(Joined { holder, seen }))
}

/// Whether a broken sending rule stops the send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lint {
    /// Any broken rule stops the issue before anyone gets it.
    Enforce,
    /// Broken rules are logged and the send goes on (`send --no-lint`).
    WarnOnly,
}

/// What a send came to.
#[derive(Debug)]
pub enum Sent {
    /// The sources were read and hold no story for the date: there is no issue.
    NothingNew,
    /// The ledger pass ran.
    Ledger { digest: Digest, report: SendReport },
    /// Checked, nothing sent; the size of a sample message.
    DryRun { digest: Digest, bytes: usize },
    /// The test copy went out with this Message-ID.
    TestCopy { digest: Digest, message_id: String },
}

/// Why a send did not happen (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The configuration cannot make a message or a connection (sender, DKIM
    /// key, transport): fix the config.
    #[error(transparent)]
    Setup(anyhow::Error),
    /// No issue could be built: no source could be read, or the build errored.
    #[error(transparent)]
    Build(anyhow::Error),
    /// The message breaks sending rules: nothing was sent.
    #[error(
        "the message of {date} breaks {} sending rule(s) ({}): nothing was sent. See `digestif lint --date {date}`",
        issues.len(),
        issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Lint {
        date: NaiveDate,
        issues: Vec<LintIssue>,
    },
    /// Another process holds the issue's lease.
    #[error(
        "the issue of {0} is being sent by another process (`digestif serve` or another \
         `digestif send`), or built by one (`digestif build`, a dry run, a test copy, \
         `digestif lint`): nothing done here. Who holds it, and the send's progress: \
         `digestif ledger --date {0}`"
    )]
    Busy(NaiveDate),
    /// Delivery failed as a whole (the store, the transport).
    #[error(transparent)]
    Deliver(anyhow::Error),
}

/// Sends the issue of `date` as of `now`: built (or read from the database or
/// the archive), checked against the sending rules, then delivered as
/// `delivery` says. A ledger send builds under the issue's lease, taken first;
/// one that joined another's send waits for the issue that one stores.
pub async fn send(
    sender: Sender<'_>,
    date: NaiveDate,
    now: DateTime<Utc>,
    lint: Lint,
    delivery: Delivery,
) -> Result<Sent, SendError> {
    let Sender {
        cfg,
        assets,
        secret,
        store: issues,
    } = sender;
    // A bad sender or DKIM key stops the send before any feed is fetched.
    MessageFactory::from_config(cfg).map_err(SendError::Setup)?;
    // A ledger send takes the issue's lease first: the issue is built,
    // archived and frozen under it, by one process. On SQLite one process at a
    // time sends an issue; on PostgreSQL any number share it: a process that
    // finds the lease held joins the send (each claims its own rows, see
    // `deliver::send`) and sends the issue its holder stores.
    let (digest, _lease) = match &delivery {
        Delivery::Ledger {
            store,
            lease: LeaseStep::Take,
            ..
        } => {
            match take_or_join(
                cfg,
                store.clone(),
                date,
                lease_holder("send"),
                crate::clock::now(),
            )? {
                SendLease::Held(lease) => (
                    built_holding_the_lease(cfg, assets, store.as_ref(), date, now).await?,
                    Some(lease),
                ),
                SendLease::Joined(joined) => {
                    issue_of_the_builder(cfg, assets, store.clone(), date, now, "send", joined.seen)
                        .await?
                }
            }
        }
        Delivery::Ledger {
            store,
            lease: LeaseStep::HeldByCaller,
            ..
        } => (
            built_holding_the_lease(cfg, assets, store.as_ref(), date, now).await?,
            None,
        ),
        Delivery::Ledger {
            store,
            lease: LeaseStep::JoinedByCaller(joined),
            ..
        } => {
            let seen = joined.seen.clone();
            issue_of_the_builder(cfg, assets, store.clone(), date, now, "serve", seen).await?
        }
        // A check sends nothing through the ledger, but the issue it reads is
        // the one subscribers get, frozen under the lease: it holds the lease
        // only while it builds.
        Delivery::DryRun | Delivery::TestCopy(_) => (
            issue_to_check(cfg, assets, issues.clone(), date, now).await?,
            None,
        ),
    };
    let Some(digest) = digest else {
        return Ok(Sent::NothingNew);
    };
    let mut composer =
        DigestComposer::new(cfg, &digest, assets, secret.clone(), now).map_err(SendError::Setup)?;
    if let Some(issues) = issues {
        // The sample's variant is read (or kept) from the database: what is
        // checked is what goes out.
        composer = composer.frozen_in(issues);
    }
    let issues = composer
        .lint_for(&sample_subscriber(sample_address()))
        .map_err(SendError::Build)?;
    if !issues.is_empty() {
        match lint {
            Lint::Enforce => return Err(SendError::Lint { date, issues }),
            Lint::WarnOnly => {
                for i in &issues {
                    tracing::warn!(%date, rule = %i, "sending rule broken; sent anyway (--no-lint)");
                }
            }
        }
    }
    match delivery {
        Delivery::DryRun => {
            let msg = composer
                .compose(&sample_subscriber(sample_address()))
                .map_err(SendError::Build)?;
            Ok(Sent::DryRun {
                digest,
                bytes: msg.bytes.len(),
            })
        }
        Delivery::TestCopy(to) => {
            let transport = transport::from_config(cfg).map_err(SendError::Setup)?;
            let message_id =
                deliver::send_test_copy(&composer, transport.as_ref(), &sample_subscriber(to))
                    .await
                    .map_err(SendError::Deliver)?;
            Ok(Sent::TestCopy { digest, message_id })
        }
        Delivery::Ledger {
            store, limit, gate, ..
        } => {
            let transport = transport::from_config(cfg).map_err(SendError::Setup)?;
            let report = deliver::send_issue(SendJob {
                cfg,
                store,
                digest: &digest,
                assets,
                transport,
                now,
                limit,
                secret,
                gate,
            })
            .await
            .map_err(SendError::Deliver)?;
            Ok(Sent::Ledger { digest, report })
        }
    }
}

/// The issue of `date` built (or read) by the process that holds its lease,
/// or whose caller holds it, in `store` ([`super::issue_for`]). When the
/// sources hold nothing new, that is recorded ([`nothing_new::record`])
/// before the lease is released, so that the processes waiting for this issue
/// stop too rather than build it again in turn.
async fn built_holding_the_lease(
    cfg: &Config,
    assets: &Assets,
    store: &dyn Store,
    date: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Option<Digest>, SendError> {
    let digest = super::issue_for(cfg, assets, Some(store), date, now)
        .await
        .map_err(SendError::Build)?;
    if digest.is_none() {
        if let Err(e) = nothing_new::record(store, date) {
            // The processes waiting for this issue build it again, as before.
            tracing::warn!(%date, error = %e, "could not record in the database that there is nothing new");
        }
    }
    Ok(digest)
}

/// The last finding of nothing new for `date` ([`nothing_new`]), read before waiting.
fn last_nothing_new(store: &dyn Store, date: NaiveDate) -> Result<nothing_new::Seen, SendError> {
    nothing_new::last(store, date)
        .context("cannot read the leases")
        .map_err(SendError::Deliver)
}

/// The issue of `date` for a check that sends nothing through the ledger (a
/// dry run, a test copy, `digestif lint`): the one subscribers get. With a
/// database, as a joined send gets it ([`issue_of_the_builder`]): the issue
/// frozen there; else, the lease free, built and frozen under it (released
/// once built); else the issue the lease's holder stores, waited for. Without
/// a database, the archived issue or one built and archived now.
pub async fn issue_to_check(
    cfg: &Config,
    assets: &Assets,
    store: Option<Arc<dyn Store>>,
    date: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Option<Digest>, SendError> {
    let Some(store) = store else {
        return super::issue_for(cfg, assets, None, date, now)
            .await
            .map_err(SendError::Build);
    };
    let seen = last_nothing_new(store.as_ref(), date)?;
    let (digest, lease) =
        issue_of_the_builder(cfg, assets, store, date, now, "check", seen).await?;
    drop(lease);
    Ok(digest)
}

/// The issue of `date` for a process that found its lease held (a send that
/// joined another's, a check): the one the holder stores, waited for (looking
/// every second, at most `[schedule] build_wait_seconds`). Should the lease
/// come free first, this process takes it: if somebody found nothing new
/// since `seen` was read (before the lease was found held), there is no issue
/// ([`nothing_new`]); else (the holder's build failed, or it is gone) this
/// process builds the issue itself, holding the lease (returned) while it sends.
async fn issue_of_the_builder(
    cfg: &Config,
    assets: &Assets,
    store: Arc<dyn Store>,
    date: NaiveDate,
    now: DateTime<Utc>,
    kind: &str,
    seen: nothing_new::Seen,
) -> Result<(Option<Digest>, Option<IssueLease>), SendError> {
    let issues = store.issues();
    let wait = std::time::Duration::from_secs(cfg.schedule.build_wait_seconds);
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        let kept = issues
            .frozen_issue(date)
            .with_context(|| format!("cannot read the issue of {date} from the database"))
            .map_err(SendError::Build)?;
        if let Some(kept) = kept {
            let digest = super::archive_frozen(cfg, &kept).map_err(SendError::Build)?;
            return Ok((Some(digest), None));
        }
        let taken = IssueLease::take(
            store.clone(),
            date,
            lease_holder(kind),
            crate::clock::now(),
            lease_length(cfg),
        )
        .context("cannot take the send lease")
        .map_err(SendError::Deliver)?;
        if let Some(lease) = taken {
            // Its holder released the lease: recorded first, a finding of
            // nothing new is visible now.
            let found = nothing_new::found_since(store.as_ref(), date, &seen)
                .context("cannot read the leases")
                .map_err(SendError::Deliver)?;
            if found {
                tracing::info!(%date, "the process that held the issue's lease found nothing new: nothing to send");
                return Ok((None, None));
            }
            let digest = built_holding_the_lease(cfg, assets, store.as_ref(), date, now).await?;
            return Ok((digest, Some(lease)));
        }
        let builder = store
            .lease_holder(&crate::lease::issue_lease(date))
            .ok()
            .flatten()
            .unwrap_or_default();
        if started.elapsed() >= wait {
            return Err(SendError::Build(anyhow::anyhow!(
                "the issue of {date} is being built by {builder}, and it was not stored within \
                 {} s ([schedule] build_wait_seconds): nothing done here; run it again",
                wait.as_secs()
            )));
        }
        if !said {
            tracing::info!(%date, %builder, wait_seconds = wait.as_secs(),
                "waiting for the issue being built by the process that holds its lease");
            said = true;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Another process holds the issue's lease: it is building or sending the
/// issue, which `digestif build` must not replace meanwhile.
#[derive(Debug, thiserror::Error)]
#[error(
    "the issue of {date} is being built or sent by {holder}, which holds its lease: nothing was \
     built here, so that every machine sends the same issue. Wait until it is done (`digestif \
     ledger --date {date}` shows who holds the lease; one left by a process that is gone \
     expires after [schedule] lease_seconds), then run `digestif build --date {date}` again; \
     once subscribers got the issue, replacing it takes `--force`, as for any issue already sent"
)]
pub struct IssueHeld {
    pub date: NaiveDate,
    pub holder: String,
}

/// The lease of the issue of `date` for `digestif build`, which freezes and
/// archives it (replacing an issue nobody got yet): held while it builds, as
/// a send building the issue holds it, so that no send builds, freezes or
/// sends meanwhile, and it replaces no issue under a sender's feet.
/// [`IssueHeld`] when another process holds it.
pub fn lease_to_rebuild(
    cfg: &Config,
    store: Arc<dyn Store>,
    date: NaiveDate,
) -> anyhow::Result<IssueLease> {
    let taken = IssueLease::take(
        store.clone(),
        date,
        lease_holder("build"),
        crate::clock::now(),
        lease_length(cfg),
    )
    .context("cannot take the issue's lease")?;
    match taken {
        Some(lease) => Ok(lease),
        None => {
            let holder = store
                .lease_holder(&crate::lease::issue_lease(date))
                .context("cannot read who holds the issue's lease")?
                .unwrap_or_else(|| "a process that just finished".into());
            Err(IssueHeld { date, holder }.into())
        }
    }
}

/// How long the issue's lease lasts without renewal (`[schedule] lease_seconds`, at least 5 s).
pub fn lease_length(cfg: &Config) -> Duration {
    Duration::seconds(cfg.schedule.lease_seconds.max(5) as i64)
}

/// The message of `digest` for a sample subscriber, checked against the sending rules.
pub fn lint(
    cfg: &Config,
    assets: &Assets,
    digest: &Digest,
    secret: Secret,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<LintIssue>> {
    DigestComposer::new(cfg, digest, assets, secret, now)?
        .lint_for(&sample_subscriber(sample_address()))
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
