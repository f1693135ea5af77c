//! The ledger-driven send loop. Rows are claimed from the store a few at a time
//! (never the whole list in memory) and at most `pool_size` rows are ever in
//! `sending` without their outcome recorded: a process killed at any point
//! leaves at most `pool_size` messages in doubt, and the next run resends those
//! once and names them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::{Config, Secret};
use crate::domain::{Digest, Locale, Subscriber};
use crate::render::{self, Assets, EmailTemplate, Personal, RenderedEmail};
use crate::store::{Delivery, DeliveryOutcome, Store};

use super::message::{MessageFactory, Outgoing, PreEncoded};
use super::rate::{backoff, RateLimiter};
use super::token;
use super::transport::{Connection, SendError, Transport};

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SendReport {
    pub date: Option<NaiveDate>,
    /// Accepted by the server in this run.
    pub sent: u64,
    /// Messages that needed at least one retry in this run (whatever the end).
    pub retried: u64,
    /// Permanent failures recorded in this run.
    pub failed: u64,
    /// Of which hard bounces (the subscriber is now `bounced`).
    pub bounced: u64,
    /// Already sent or failed before this run: not sent again.
    pub skipped: u64,
    /// Addresses found in flight from a previous run that died: resent once,
    /// they may have received two copies.
    pub in_doubt: Vec<String>,
    /// Rows still pending (or sending) after the run: retried next time.
    pub pending_left: u64,
    /// (address, error) of this run's permanent failures.
    pub failures: Vec<(String, String)>,
}

impl SendReport {
    /// Exit code 0 only when nothing is left to send.
    pub fn is_complete(&self) -> bool {
        self.pending_left == 0
    }

    /// One line for people and logs.
    pub fn summary(&self) -> String {
        format!(
            "sent {}, retried {}, failed {} ({} bounced), skipped {}, in doubt {}, left pending {}",
            self.sent,
            self.retried,
            self.failed,
            self.bounced,
            self.skipped,
            self.in_doubt.len(),
            self.pending_left
        )
    }
}

/// Turns a subscriber into a message. The digest composer renders each variant
/// once and personalises per subscriber; tests can hand in anything.
pub trait Compose: Send + Sync {
    fn compose(&self, subscriber: &Subscriber) -> Result<Outgoing>;
}

type VariantKey = (Locale, Vec<String>);

/// A rendered variant and, when messages are not signed, its encoded parts.
struct Variant {
    template: EmailTemplate,
    encoded: Option<PreEncoded>,
}

/// Composes the messages of one issue: variants memoised by (locale, followed categories).
pub struct DigestComposer {
    digest: Digest,
    assets: Assets,
    subject_template: String,
    factory: MessageFactory,
    secret: Secret,
    list_id: String,
    now: DateTime<Utc>,
    variants: Mutex<HashMap<VariantKey, Arc<Variant>>>,
}

impl DigestComposer {
    pub fn new(
        cfg: &Config,
        digest: &Digest,
        assets: &Assets,
        secret: Secret,
        now: DateTime<Utc>,
    ) -> Result<DigestComposer> {
        Ok(DigestComposer {
            digest: digest.clone(),
            assets: assets.clone(),
            subject_template: cfg.sender.subject.clone(),
            factory: MessageFactory::from_config(cfg)?,
            secret,
            list_id: cfg.list_id(),
            now,
            variants: Mutex::new(HashMap::new()),
        })
    }

    fn variant(&self, locale: Locale, follow: &[String]) -> Arc<Variant> {
        let key = (locale, follow.to_vec());
        if let Some(t) = self.variants.lock().expect("variants lock").get(&key) {
            return t.clone();
        }
        let template = render::render_variant(
            &self.digest,
            &self.assets,
            locale,
            follow,
            &self.subject_template,
        );
        let encoded = (!self.factory.signs()).then(|| PreEncoded::new(&template));
        let t = Arc::new(Variant { template, encoded });
        self.variants
            .lock()
            .expect("variants lock")
            .entry(key)
            .or_insert(t)
            .clone()
    }

    /// The personalised bodies of `subscriber`, and their unsubscribe token.
    pub fn render_for(&self, subscriber: &Subscriber) -> (RenderedEmail, String) {
        let locale = subscriber.locale.unwrap_or(self.digest.locale);
        let variant = self.variant(locale, &subscriber.categories);
        let token = token::unsubscribe_token(&self.secret, &self.list_id, subscriber.id);
        let email = variant.template.personalise(&Personal {
            name: subscriber.name.clone(),
            unsubscribe_url: self.factory.unsubscribe_url(&token),
        });
        (email, token)
    }
}

impl DigestComposer {
    /// Builds `subscriber`'s message and checks it against the sending rules.
    pub fn lint_for(&self, subscriber: &Subscriber) -> Result<Vec<super::lint::LintIssue>> {
        let (email, _) = self.render_for(subscriber);
        let msg = self.compose(subscriber)?;
        Ok(super::lint::lint_message(
            &email.html,
            &email.text,
            &header_fields(&msg.bytes),
            msg.bytes.len(),
        ))
    }
}

/// The header fields of a raw message, unfolded: (name, value).
pub fn header_fields(raw: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            out.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

impl DigestComposer {
    /// `subscriber`'s message through lettre's builder (the one that signs), whatever
    /// the configuration: what the pre-encoded path is checked against.
    pub fn compose_with_lettre(&self, subscriber: &Subscriber) -> Result<Outgoing> {
        let (email, token) = self.render_for(subscriber);
        self.factory.build(
            subscriber.email.as_str(),
            subscriber.name.as_deref(),
            &email,
            &token,
            self.now,
        )
    }
}

impl Compose for DigestComposer {
    /// Without DKIM, from the variant's pre-encoded parts (a few µs); with DKIM,
    /// built and signed by lettre. Non-ASCII addresses always go through lettre.
    fn compose(&self, subscriber: &Subscriber) -> Result<Outgoing> {
        let locale = subscriber.locale.unwrap_or(self.digest.locale);
        let variant = self.variant(locale, &subscriber.categories);
        let address = subscriber.email.as_str();
        match &variant.encoded {
            Some(encoded) if address.is_ascii() => {
                let token = token::unsubscribe_token(&self.secret, &self.list_id, subscriber.id);
                let values = variant.template.slot_values(&Personal {
                    name: subscriber.name.clone(),
                    unsubscribe_url: self.factory.unsubscribe_url(&token),
                });
                self.factory.build_pre_encoded(
                    address,
                    subscriber.name.as_deref(),
                    encoded,
                    &values,
                    &token,
                    self.now,
                )
            }
            _ => self.compose_with_lettre(subscriber),
        }
    }
}

/// How a run behaves (from `[smtp]`, plus the command line's `--limit`).
#[derive(Debug, Clone)]
pub struct SendOptions {
    pub pool_size: usize,
    pub rate_per_second: f64,
    pub max_attempts: u32,
    pub retry_base: Duration,
    /// At most this many messages in this run.
    pub limit: Option<u64>,
    /// Show a progress bar (on a terminal) instead of periodic log lines.
    pub progress_bar: bool,
}

impl SendOptions {
    pub fn from_config(cfg: &Config, limit: Option<u64>) -> SendOptions {
        SendOptions {
            pool_size: cfg.smtp.pool_size.max(1),
            rate_per_second: cfg.smtp.rate_per_second,
            max_attempts: cfg.smtp.max_attempts.max(1),
            retry_base: Duration::from_millis(cfg.smtp.retry_base_ms),
            limit,
            progress_bar: std::io::stderr().is_terminal(),
        }
    }
}

/// Everything `send_issue` needs, as plain values.
pub struct SendJob<'a> {
    pub cfg: &'a Config,
    pub store: Arc<dyn Store>,
    pub digest: &'a Digest,
    pub assets: &'a Assets,
    pub transport: Arc<dyn Transport>,
    pub now: DateTime<Utc>,
    pub limit: Option<u64>,
    pub secret: Secret,
}

/// Sends the issue `job.digest` to every active subscriber not yet served.
pub async fn send_issue(job: SendJob<'_>) -> Result<SendReport> {
    let composer = Arc::new(DigestComposer::new(
        job.cfg, job.digest, job.assets, job.secret, job.now,
    )?);
    let opts = SendOptions::from_config(job.cfg, job.limit);
    deliver_ledger(
        job.store,
        job.digest.date,
        composer,
        job.transport,
        &opts,
        job.now,
    )
    .await
}

/// Sends one copy to `to`, outside the ledger (`send --to`).
pub async fn send_test_copy(
    composer: &dyn Compose,
    transport: &dyn Transport,
    subscriber: &Subscriber,
) -> Result<String> {
    let msg = composer.compose(subscriber)?;
    let mut c = transport
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", transport.describe()))?;
    c.send(&msg)
        .await
        .with_context(|| format!("{} refused the message", transport.describe()))?;
    c.close().await;
    Ok(msg.message_id)
}

struct Shared {
    composer: Arc<dyn Compose>,
    transport: Arc<dyn Transport>,
    idle: Mutex<Vec<Box<dyn Connection>>>,
    rate: RateLimiter,
    max_attempts: u32,
    retry_base: Duration,
}

struct Done {
    id: i64,
    email: String,
    outcome: DeliveryOutcome,
    retried: bool,
    _permit: Vec<OwnedSemaphorePermit>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::store::StoreResult<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("store task panicked")?
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// One delivery: compose, then send with retries. Never fails: the outcome says.
async fn deliver_one(shared: Arc<Shared>, d: &Delivery) -> (DeliveryOutcome, bool) {
    let msg = match shared.composer.compose(&d.subscriber) {
        Ok(m) => m,
        Err(e) => {
            return (
                DeliveryOutcome::Failed {
                    error: format!("cannot build the message: {e:#}"),
                    hard_bounce: false,
                },
                false,
            )
        }
    };
    let mut attempt = 0;
    let mut retried = false;
    loop {
        shared.rate.acquire().await;
        let conn = shared.idle.lock().expect("pool lock").pop();
        let conn = match conn {
            Some(c) => Ok(c),
            None => shared.transport.connect().await,
        };
        let err: SendError = match conn {
            Err(e) => e,
            Ok(mut c) => match c.send(&msg).await {
                Ok(()) => {
                    shared.idle.lock().expect("pool lock").push(c);
                    return (
                        DeliveryOutcome::Sent {
                            message_id: msg.message_id,
                        },
                        retried,
                    );
                }
                Err(e) => {
                    if !c.is_broken() {
                        shared.idle.lock().expect("pool lock").push(c);
                    }
                    e
                }
            },
        };
        if err.is_permanent() {
            tracing::warn!(to = %msg.to, error = %err, "permanent failure");
            return (
                DeliveryOutcome::Failed {
                    hard_bounce: err.is_hard_bounce(),
                    error: err.message,
                },
                retried,
            );
        }
        attempt += 1;
        if attempt >= shared.max_attempts {
            tracing::warn!(to = %msg.to, error = %err, attempts = attempt, "giving up for this run");
            return (DeliveryOutcome::Retry { error: err.message }, retried);
        }
        retried = true;
        let wait = backoff(shared.retry_base, attempt);
        tracing::info!(to = %msg.to, error = %err, ?wait, "transient failure, retrying");
        tokio::time::sleep(wait).await;
    }
}

/// The loop: enqueue, claim, send through at most `pool_size` connections,
/// record each outcome as soon as it is known.
pub async fn deliver_ledger(
    store: Arc<dyn Store>,
    date: NaiveDate,
    composer: Arc<dyn Compose>,
    transport: Arc<dyn Transport>,
    opts: &SendOptions,
    now: DateTime<Utc>,
) -> Result<SendReport> {
    let started = Instant::now();
    let at = move || now + chrono::Duration::from_std(started.elapsed()).unwrap_or_default();
    let pool = opts.pool_size.max(1);

    let s = store.clone();
    let enqueued = blocking(move || s.ledger_enqueue(date, None)).await?;
    let s = store.clone();
    let before = blocking(move || s.ledger_counts(date)).await?;
    let mut report = SendReport {
        date: Some(date),
        skipped: before.sent + before.failed,
        ..SendReport::default()
    };
    tracing::info!(%date, enqueued, pending = before.pending, in_doubt = before.sending,
        transport = %transport.describe(), "sending");

    // Rows left in `sending` by a run that died: claimed first, all at once.
    let mut queue: VecDeque<Delivery> = VecDeque::new();
    if before.sending > 0 {
        let s = store.clone();
        let n = before.sending as usize;
        let rows = blocking(move || s.ledger_claim(date, n, true)).await?;
        for d in rows {
            if d.in_doubt {
                report.in_doubt.push(d.subscriber.email.to_string());
            }
            queue.push_back(d);
        }
        if !report.in_doubt.is_empty() {
            tracing::warn!(count = report.in_doubt.len(), addresses = ?report.in_doubt,
                "in doubt: in flight when the previous run stopped; resending once");
        }
    }

    let total = (before.pending + before.sending).min(opts.limit.unwrap_or(u64::MAX));
    let bar = if opts.progress_bar {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} {per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };

    let shared = Arc::new(Shared {
        composer,
        transport,
        idle: Mutex::new(Vec::new()),
        rate: RateLimiter::new(opts.rate_per_second),
        max_attempts: opts.max_attempts,
        retry_base: opts.retry_base,
    });
    // One permit per row claimed and not yet recorded: the in-doubt bound.
    let sem = Arc::new(Semaphore::new(pool));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();

    // The recorder: group commit of whatever finished meanwhile.
    let rec_store = store.clone();
    let rec_sem = sem.clone();
    let recorder = tokio::spawn(async move {
        let mut totals = SendReport::default();
        let mut last_log = Instant::now();
        while let Some(first) = done_rx.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = done_rx.try_recv() {
                batch.push(more);
            }
            let outcomes: Vec<(i64, DeliveryOutcome)> =
                batch.iter().map(|d| (d.id, d.outcome.clone())).collect();
            let s = rec_store.clone();
            let when = at();
            let res = blocking(move || s.ledger_record(date, &outcomes, when)).await;
            if let Err(e) = res {
                // Nothing more is claimed: the dispatcher stops at its next slot.
                rec_sem.close();
                return Err(e.context("cannot record outcomes in the ledger"));
            }
            for d in &batch {
                if d.retried {
                    totals.retried += 1;
                }
                match &d.outcome {
                    DeliveryOutcome::Sent { .. } => totals.sent += 1,
                    DeliveryOutcome::Failed { error, hard_bounce } => {
                        totals.failed += 1;
                        totals.bounced += u64::from(*hard_bounce);
                        totals.failures.push((d.email.clone(), error.clone()));
                    }
                    DeliveryOutcome::Retry { .. } => {}
                }
            }
            if let Some(b) = &bar {
                b.inc(batch.len() as u64);
            } else if last_log.elapsed() >= Duration::from_secs(5) {
                last_log = Instant::now();
                tracing::info!(
                    sent = totals.sent,
                    failed = totals.failed,
                    retried = totals.retried,
                    "progress"
                );
            }
            drop(batch); // releases the permits
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        Ok(totals)
    });

    let mut given_out: u64 = 0;
    let mut given_up: HashSet<i64> = HashSet::new();
    let (gave_up_tx, mut gave_up_rx) = mpsc::unbounded_channel::<i64>();
    let mut tasks = tokio::task::JoinSet::new();
    let breaker = pool.max(4);
    let consecutive = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        while let Ok(id) = gave_up_rx.try_recv() {
            given_up.insert(id);
        }
        if consecutive.load(std::sync::atomic::Ordering::Relaxed) >= breaker {
            tracing::error!("the server keeps failing: stopping this run, the rest stays pending");
            break;
        }
        let remaining = opts.limit.map(|l| l.saturating_sub(given_out));
        if remaining == Some(0) {
            break;
        }
        // Wait for one free slot, then take every other free one (up to a batch).
        let Ok(first) = sem.clone().acquire_owned().await else {
            break; // the recorder failed; its error is returned below
        };
        let mut permits = vec![first];
        let cap = remaining.unwrap_or(u64::MAX).min(256) as usize;
        while permits.len() < cap {
            match sem.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let mut batch: Vec<Delivery> = Vec::new();
        while batch.len() < permits.len() {
            match queue.pop_front() {
                Some(d) => batch.push(d),
                None => break,
            }
        }
        if batch.len() < permits.len() {
            let want = permits.len() - batch.len() + given_up.len().min(1024);
            let s = store.clone();
            let rows = blocking(move || s.ledger_claim(date, want, false)).await?;
            let mut back = Vec::new();
            for d in rows {
                if given_up.contains(&d.subscriber.id) || batch.len() >= permits.len() {
                    back.push(d);
                } else {
                    batch.push(d);
                }
            }
            if !back.is_empty() {
                // Claimed only to reach past them: put back untouched for the next run.
                let outcomes: Vec<(i64, DeliveryOutcome)> = back
                    .iter()
                    .map(|d| {
                        (
                            d.subscriber.id,
                            DeliveryOutcome::Retry {
                                error: "left for the next run".into(),
                            },
                        )
                    })
                    .collect();
                let s = store.clone();
                let when = at();
                blocking(move || s.ledger_record(date, &outcomes, when)).await?;
            }
        }
        if batch.is_empty() {
            drop(permits);
            if tasks.is_empty() {
                break;
            }
            // Wait for in-flight work: a retry given up may free rows to skip.
            tasks.join_next().await;
            continue;
        }
        permits.truncate(batch.len());
        given_out += batch.len() as u64;
        for (d, permit) in batch.into_iter().zip(permits) {
            let shared = shared.clone();
            let done_tx = done_tx.clone();
            let gave_up_tx = gave_up_tx.clone();
            let consecutive = consecutive.clone();
            tasks.spawn(async move {
                let (outcome, retried) = deliver_one(shared, &d).await;
                match &outcome {
                    DeliveryOutcome::Retry { .. } => {
                        consecutive.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let _ = gave_up_tx.send(d.subscriber.id);
                    }
                    DeliveryOutcome::Sent { .. } => {
                        consecutive.store(0, std::sync::atomic::Ordering::Relaxed);
                    }
                    DeliveryOutcome::Failed { .. } => {}
                }
                let _ = done_tx.send(Done {
                    id: d.subscriber.id,
                    email: d.subscriber.email.to_string(),
                    outcome,
                    retried,
                    _permit: vec![permit],
                });
            });
        }
        // Reap finished tasks without waiting.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    drop(done_tx);
    let totals = recorder.await.context("recorder panicked")??;

    // Rows still queued (in doubt beyond a --limit) go back to pending.
    if !queue.is_empty() {
        let outcomes: Vec<(i64, DeliveryOutcome)> = queue
            .iter()
            .map(|d| {
                (
                    d.subscriber.id,
                    DeliveryOutcome::Retry {
                        error: "not sent in this run (--limit)".into(),
                    },
                )
            })
            .collect();
        let s = store.clone();
        let when = at();
        blocking(move || s.ledger_record(date, &outcomes, when)).await?;
    }
    let idle: Vec<Box<dyn Connection>> = std::mem::take(&mut *shared.idle.lock().expect("pool"));
    for c in idle {
        c.close().await;
    }

    let s = store.clone();
    let after = blocking(move || s.ledger_counts(date)).await?;
    report.sent = totals.sent;
    report.retried = totals.retried;
    report.failed = totals.failed;
    report.bounced = totals.bounced;
    report.failures = totals.failures;
    report.pending_left = after.pending + after.sending;
    tracing::info!(%date, elapsed = ?started.elapsed(), "{}", report.summary());
    Ok(report)
}
