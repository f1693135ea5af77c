//! One send of an issue, the same for `digestif send` and the service's send
//! passes: the issue (archived, or built now and archived) → the pre-send check
//! (lint) → the issue's lease → delivery through the ledger.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::config::{Config, Secret};
use crate::deliver::lint::LintIssue;
use crate::deliver::message::MessageFactory;
use crate::deliver::send::{self as deliver, Compose, DigestComposer, SendJob, SendReport};
use crate::deliver::transport;
use crate::domain::{Digest, Subscriber, SubscriberEmail, SubscriberStatus};
use crate::lease::{lease_holder, IssueLease};
use crate::render::Assets;
use crate::store::Store;

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
    /// (at most `limit` messages). The service hands in its store filtered to
    /// the subscribers due now.
    Ledger {
        store: Arc<dyn Store>,
        limit: Option<u64>,
        lease: LeaseStep,
    },
    /// Render and check, send nothing.
    DryRun,
    /// One copy to this address, outside the ledger.
    TestCopy(SubscriberEmail),
}

/// Who takes the issue's lease for a ledger send.
pub enum LeaseStep {
    /// The send takes it (as `digestif send`), after the check, and releases it at the end.
    Take,
    /// The caller took it already (the service, before deciding to send) and holds it throughout.
    HeldByCaller,
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
         `digestif send`): nothing done here. Its progress: `digestif ledger --date {0}`"
    )]
    Busy(NaiveDate),
    /// Delivery failed as a whole (the store, the transport).
    #[error(transparent)]
    Deliver(anyhow::Error),
}

/// Sends the issue of `date` as of `now`: built (or read from the archive),
/// checked against the sending rules, then delivered as `delivery` says.
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
    let Some(digest) = super::issue_for(cfg, assets, issues.as_deref(), date, now)
        .await
        .map_err(SendError::Build)?
    else {
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
            store,
            limit,
            lease,
        } => {
            let transport = transport::from_config(cfg).map_err(SendError::Setup)?;
            // On SQLite one process at a time sends an issue. On PostgreSQL any
            // number share it: a process that finds the lease held joins the
            // send (each claims its own rows, see `deliver::send`).
            let _lease = match lease {
                LeaseStep::HeldByCaller => None,
                LeaseStep::Take => match take_issue_lease(cfg, store.clone(), date) {
                    Err(SendError::Busy(_)) if cfg.database().shares_sending() => {
                        tracing::info!(%date, "the issue is being sent by another process: joining it");
                        None
                    }
                    taken => Some(taken?),
                },
            };
            let report = deliver::send_issue(SendJob {
                cfg,
                store,
                digest: &digest,
                assets,
                transport,
                now,
                limit,
                secret,
            })
            .await
            .map_err(SendError::Deliver)?;
            Ok(Sent::Ledger { digest, report })
        }
    }
}

/// How long the issue's lease lasts without renewal (`[schedule] lease_seconds`, at least 5 s).
pub fn lease_length(cfg: &Config) -> Duration {
    Duration::seconds(cfg.schedule.lease_seconds.max(5) as i64)
}

fn take_issue_lease(
    cfg: &Config,
    store: Arc<dyn Store>,
    date: NaiveDate,
) -> Result<IssueLease, SendError> {
    IssueLease::take(
        store,
        date,
        lease_holder("send"),
        crate::clock::now(),
        lease_length(cfg),
    )
    .context("cannot take the send lease")
    .map_err(SendError::Deliver)?
    .ok_or(SendError::Busy(date))
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
