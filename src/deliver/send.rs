//! The ledger-driven send loop. Rows are claimed from the store a few at a time
//! (never the whole list in memory) and at most `pool_size` rows are ever in
//! `sending` without their outcome recorded: a process killed at any point
//! leaves at most `pool_size` messages in doubt, and the next run resends those
//! once and names them.

use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
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
        let token = token::unsubscribe_token(&self.secret, &self.list_id, &subscriber.link_key);
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
                let token =
                    token::unsubscribe_token(&self.secret, &self.list_id, &subscriber.link_key);
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

/// The runtime a send runs on: one thread drives every connection and the
/// ledger, with no hand-off between threads on the way of each message (on a
/// small machine the SMTP server needs the other cores). Store calls run in
/// place on it (see `blocking`).
pub fn single_thread_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the send runtime")
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
    /// None: the row was never marked `sending` (the ledger refused it), nothing to record.
    outcome: Option<DeliveryOutcome>,
    retried: bool,
}

/// What delivery tasks tell the ledger task, in the order they happen.
enum Event {
    /// A message is staged on its connection: may its row go to `sending`?
    Mark(i64, oneshot::Sender<bool>),
    Done(Done),
}

/// Takes in one finished delivery: counts consecutive give-ups.
fn absorb(d: Done, finished: &mut Vec<Done>, consecutive: &mut usize) {
    match &d.outcome {
        Some(DeliveryOutcome::Retry { .. }) => *consecutive += 1,
        Some(DeliveryOutcome::Sent { .. }) => *consecutive = 0,
        Some(DeliveryOutcome::Failed { .. }) | None => {}
    }
    if d.outcome.is_some() {
        finished.push(d);
    }
}

/// Whether a delivery task ended without reporting (it panicked): its row stays
/// in `sending` and is in doubt for the next run.
fn lost_task(r: std::result::Result<(), tokio::task::JoinError>) -> bool {
    match r {
        Ok(()) => false,
        Err(e) => {
            tracing::error!(error = %e, "a delivery task failed; its row is left in doubt");
            true
        }
    }
}

/// Adds recorded outcomes to the run's totals.
fn count_outcomes(totals: &mut SendReport, recorded: &[Done]) {
    for d in recorded {
        if d.retried {
            totals.retried += 1;
        }
        match &d.outcome {
            Some(DeliveryOutcome::Sent { .. }) => totals.sent += 1,
            Some(DeliveryOutcome::Failed { error, hard_bounce }) => {
                totals.failed += 1;
                totals.bounced += u64::from(*hard_bounce);
                totals.failures.push((d.email.clone(), error.clone()));
            }
            Some(DeliveryOutcome::Retry { .. }) | None => {}
        }
    }
}

/// Runs a store call. On a single-threaded runtime (the `send` command) it runs
/// in place: a ledger transaction takes tens of microseconds, less than handing
/// it to another thread and waking this one again. On a multi-threaded runtime
/// (the service) it goes to the blocking pool so the HTTP side is never stalled.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::store::StoreResult<T> + Send + 'static,
) -> Result<T> {
    let flavor = tokio::runtime::Handle::current().runtime_flavor();
    let r = if flavor == tokio::runtime::RuntimeFlavor::CurrentThread {
        f()
    } else {
        tokio::task::spawn_blocking(f)
            .await
            .context("store task panicked")?
    };
    r.map_err(|e| anyhow::anyhow!("{e}"))
}

/// The longest a staged message waits for other marks to share its store call.
const GATHER: Duration = Duration::from_micros(500);

/// Asks the ledger task to move row `id` to `sending`; false if it refused.
async fn mark(events: &mpsc::UnboundedSender<Event>, id: i64) -> bool {
    let (tx, rx) = oneshot::channel();
    if events.send(Event::Mark(id, tx)).is_err() {
        return false;
    }
    rx.await.unwrap_or(false)
}

/// One delivery: compose, stage the message on a connection, have its row
/// marked `sending` (unless it already is: `marked`), end the message, with
/// retries. Never fails: the outcome says (None: the ledger refused the row and
/// the staged message was dropped undelivered). The connection comes back for
/// the caller to return to the pool once the outcome is reported.
async fn deliver_one(
    shared: &Shared,
    d: &Delivery,
    mut marked: bool,
    events: &mpsc::UnboundedSender<Event>,
) -> (Option<DeliveryOutcome>, bool, Option<Box<dyn Connection>>) {
    // Every outcome is recorded against a row in `sending`: a row not yet
    // marked is marked first (refused: nothing is recorded, it stays as it is).
    let settle = |outcome: DeliveryOutcome, retried: bool, marked: bool| async move {
        if marked || mark(events, d.subscriber.id).await {
            (Some(outcome), retried, None)
        } else {
            (None, retried, None)
        }
    };
    let msg = match shared.composer.compose(&d.subscriber) {
        Ok(m) => m,
        Err(e) => {
            let outcome = DeliveryOutcome::Failed {
                error: format!("cannot build the message: {e:#}"),
                hard_bounce: false,
            };
            return settle(outcome, false, marked).await;
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
            Ok(mut c) => {
                let sent = match c.stage(&msg).await {
                    Err(e) => Err(e),
                    Ok(()) => {
                        if !marked {
                            // The server is reading the message while the ledger
                            // marks its row: the end of the data waits for the mark.
                            if !mark(events, d.subscriber.id).await {
                                // Dropped before the end of its data: not delivered.
                                return (None, retried, None);
                            }
                            marked = true;
                        }
                        c.finish(&msg).await
                    }
                };
                match sent {
                    Ok(()) => {
                        return (
                            Some(DeliveryOutcome::Sent {
                                message_id: msg.message_id,
                            }),
                            retried,
                            Some(c),
                        );
                    }
                    Err(e) => {
                        if !c.is_broken() {
                            shared.idle.lock().expect("pool lock").push(c);
                        }
                        e
                    }
                }
            }
        };
        if err.is_permanent() {
            tracing::warn!(to = %msg.to, error = %err, "permanent failure");
            let outcome = DeliveryOutcome::Failed {
                hard_bounce: err.is_hard_bounce(),
                error: err.message,
            };
            return settle(outcome, retried, marked).await;
        }
        attempt += 1;
        if attempt >= shared.max_attempts {
            tracing::warn!(to = %msg.to, error = %err, attempts = attempt, "giving up for this run");
            let outcome = DeliveryOutcome::Retry { error: err.message };
            return settle(outcome, retried, marked).await;
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
    // One task (this one) owns the ledger while sending. Rows are read ahead in
    // id order without being changed; a delivery task stages its message on a
    // connection (the server reads it), then asks this task to mark the row
    // `sending`, and only then ends the message. Each store call records every
    // outcome reported so far and marks every row asked for, in one transaction,
    // while the servers are busy reading. A row is in `sending` only from just
    // before the end of its message until its outcome is recorded, and at most
    // `pool` delivery tasks exist: rows in doubt after a crash never exceed `pool`.
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<Event>();
    let mut totals = SendReport::default();
    let mut last_log = Instant::now();
    let mut finished: Vec<Done> = Vec::new();
    let mut marks: Vec<(i64, oneshot::Sender<bool>)> = Vec::new();
    let mut in_flight: usize = 0;
    let mut given_out: u64 = 0;
    let mut tasks = tokio::task::JoinSet::new();
    let breaker = pool.max(4);
    let mut consecutive: usize = 0;
    let mut stopping = false;
    // Rows read ahead (pending, unchanged), and the id they were read up to.
    let mut ahead: VecDeque<Delivery> = VecDeque::new();
    let mut after = i64::MIN;
    let read_ahead = (pool * 8).clamp(64, 1024);
    // Set once a read returns fewer rows than asked: nothing left to read.
    let mut exhausted = false;
    let gather_target = pool.div_ceil(2);
    let mut first_mark: Option<Instant> = None;
    let mut store_calls: u64 = 0;
    loop {
        while let Ok(ev) = events_rx.try_recv() {
            match ev {
                Event::Mark(id, reply) => marks.push((id, reply)),
                Event::Done(d) => {
                    in_flight -= 1;
                    absorb(d, &mut finished, &mut consecutive);
                }
            }
        }
        while let Some(r) = tasks.try_join_next() {
            in_flight -= usize::from(lost_task(r));
        }
        if consecutive >= breaker && !stopping {
            tracing::error!("the server keeps failing: stopping this run, the rest stays pending");
            stopping = true;
        }
        let remaining = opts.limit.map_or(u64::MAX, |l| l.saturating_sub(given_out));
        let slots = if stopping {
            0
        } else {
            (pool.saturating_sub(in_flight) as u64).min(remaining) as usize
        };
        if queue.len() + ahead.len() < slots && !exhausted {
            let s = store.clone();
            let rows = blocking(move || s.ledger_next(date, after, read_ahead))
                .await
                .context("cannot read the next rows of the ledger")?;
            exhausted = rows.len() < read_ahead;
            if let Some(last) = rows.last() {
                after = last.subscriber.id;
            }
            ahead.extend(rows);
        }
        // Rows taken from a dead run are in `sending` already; the others are not.
        let mut batch: Vec<(Delivery, bool)> = Vec::with_capacity(slots);
        while batch.len() < slots {
            match queue.pop_front() {
                Some(d) => batch.push((d, true)),
                None => match ahead.pop_front() {
                    Some(d) => batch.push((d, false)),
                    None => break,
                },
            }
        }
        // When to go to the store: once half the connections wait for a mark (the
        // servers are still reading their messages), at once if every task waits,
        // after GATHER at the latest; outcomes alone when nothing else is coming.
        if marks.is_empty() {
            first_mark = None;
        } else if first_mark.is_none() {
            first_mark = Some(Instant::now());
        }
        let commit = first_mark.is_some_and(|since| {
            marks.len() >= gather_target || marks.len() >= in_flight || since.elapsed() >= GATHER
        }) || (!finished.is_empty() && (in_flight == 0 || finished.len() >= 256));
        if !commit && batch.is_empty() {
            if in_flight == 0 && finished.is_empty() && marks.is_empty() {
                break;
            }
            // Every slot is busy (or nothing is left): wait for news.
            let until = first_mark.map_or_else(
                || Instant::now() + Duration::from_secs(3600),
                |since| since + GATHER,
            );
            tokio::select! {
                ev = tokio::time::timeout_at(until, events_rx.recv()) => match ev {
                    Ok(Some(Event::Mark(id, reply))) => marks.push((id, reply)),
                    Ok(Some(Event::Done(d))) => {
                        in_flight -= 1;
                        absorb(d, &mut finished, &mut consecutive);
                    }
                    Ok(None) | Err(_) => {}
                },
                Some(r) = tasks.join_next() => {
                    in_flight -= usize::from(lost_task(r));
                }
            }
            continue;
        }

        if commit {
            let outcomes: Vec<(i64, DeliveryOutcome)> = finished
                .iter()
                .filter_map(|d| d.outcome.clone().map(|o| (d.id, o)))
                .collect();
            let ids: Vec<i64> = marks.iter().map(|(id, _)| *id).collect();
            let s = store.clone();
            let when = at();
            store_calls += 1;
            let marked = blocking(move || s.ledger_record_and_mark(date, &outcomes, &ids, when))
                .await
                .context("cannot record outcomes and mark rows in the ledger")?;
            let refused = marked.iter().any(|ok| !ok);
            for ((_, reply), ok) in marks.drain(..).zip(marked) {
                let _ = reply.send(ok);
            }
            if refused {
                // A row was refused (unsubscribed, taken by another sender, or the
                // service is stopping): what was read ahead may be stale too. Read
                // it again from the same place rather than stage it for nothing.
                if let Some(first) = ahead.front() {
                    after = first.subscriber.id - 1;
                }
                ahead.clear();
                exhausted = false;
            }
            count_outcomes(&mut totals, &finished);
            if let Some(b) = &bar {
                b.inc(finished.len() as u64);
            } else if last_log.elapsed() >= Duration::from_secs(5) {
                last_log = Instant::now();
                let done = totals.sent + totals.failed;
                let per_second = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
                let eta_s = (total.saturating_sub(done) as f64 / per_second.max(1e-3)).round();
                tracing::info!(
                    sent = totals.sent,
                    failed = totals.failed,
                    retried = totals.retried,
                    of = total,
                    per_second = per_second.round(),
                    eta_s,
                    "progress"
                );
            }
            finished.clear();
        }
        given_out += batch.len() as u64;
        in_flight += batch.len();
        for (d, marked) in batch {
            let shared = shared.clone();
            let events = events_tx.clone();
            tasks.spawn(async move {
                let (outcome, retried, conn) = deliver_one(&shared, &d, marked, &events).await;
                // The outcome is on its way to the ledger before the connection
                // serves anyone else.
                let _ = events.send(Event::Done(Done {
                    id: d.subscriber.id,
                    email: d.subscriber.email.to_string(),
                    outcome,
                    retried,
                }));
                if let Some(c) = conn {
                    shared.idle.lock().expect("pool lock").push(c);
                }
            });
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }

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
    tracing::info!(%date, elapsed = ?started.elapsed(), store_calls, "{}", report.summary());
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{SubscriberEmail, SubscriberStatus};
    use crate::store::{NewSubscriber, SqliteStore};
    use futures::future::BoxFuture;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Plain;
    impl Compose for Plain {
        fn compose(&self, s: &Subscriber) -> Result<Outgoing> {
            Ok(Outgoing {
                message_id: format!("{}.test", s.id),
                from: "news@example.com".into(),
                to: s.email.to_string(),
                bytes: b"Subject: x\r\n\r\nbody\r\n".to_vec(),
            })
        }
    }

    /// A transport whose connections are clones of one test connection.
    struct Cloning<C>(C);
    impl<C: Connection + Clone + Sync + 'static> Transport for Cloning<C> {
        fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, SendError>> {
            let conn = self.0.clone();
            Box::pin(async move { Ok(Box::new(conn) as Box<dyn Connection>) })
        }
        fn describe(&self) -> String {
            "test connections".into()
        }
    }

    /// Looks at the ledger at every message: how many rows are in `sending`.
    #[derive(Clone)]
    struct Watching {
        store: Arc<SqliteStore>,
        date: NaiveDate,
        most_sending: Arc<AtomicU64>,
        sends: Arc<AtomicU64>,
    }
    impl Connection for Watching {
        fn send<'a>(&'a mut self, msg: &'a Outgoing) -> BoxFuture<'a, Result<(), SendError>> {
            Box::pin(async move {
                let sending = self.store.ledger_counts(self.date).unwrap().sending;
                self.most_sending.fetch_max(sending, Ordering::SeqCst);
                let n = self.sends.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                if msg.to.starts_with("refused") {
                    return Err(SendError::permanent("554 refused"));
                }
                if n % 7 == 3 {
                    return Err(SendError::transient("421 try again"));
                }
                Ok(())
            })
        }
        fn is_broken(&self) -> bool {
            false
        }
        fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
            Box::pin(async {})
        }
    }

    fn store_with(
        addresses: impl IntoIterator<Item = String>,
    ) -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("d.sqlite")).unwrap());
        for a in addresses {
            store
                .upsert_subscriber(&NewSubscriber {
                    email: SubscriberEmail::parse(&a).unwrap(),
                    name: None,
                    locale: None,
                    categories: vec![],
                    timezone: None,
                    status: SubscriberStatus::Active,
                })
                .unwrap();
        }
        (dir, store)
    }

    fn options(pool_size: usize, limit: Option<u64>) -> SendOptions {
        SendOptions {
            pool_size,
            rate_per_second: 0.0,
            max_attempts: 3,
            retry_base: Duration::from_millis(1),
            limit,
            progress_bar: false,
        }
    }

    /// Store calls go to the blocking pool on a multi-threaded runtime.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_rows_in_sending_than_connections_and_every_row_ends_recorded() {
        bounded_and_recorded().await;
    }

    /// Store calls run in place on the single-threaded runtime of `send`.
    #[test]
    fn on_the_send_runtime_too_never_more_rows_in_sending_than_connections() {
        single_thread_runtime()
            .unwrap()
            .block_on(bounded_and_recorded());
    }

    async fn bounded_and_recorded() {
        let (_dir, store) = store_with((0..60).map(|i| {
            let who = if i % 20 == 5 { "refused" } else { "r" };
            format!("{who}{i}@example.com")
        }));
        let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let most_sending = Arc::new(AtomicU64::new(0));
        let transport = Arc::new(Cloning(Watching {
            store: store.clone(),
            date,
            most_sending: most_sending.clone(),
            sends: Arc::new(AtomicU64::new(0)),
        }));
        let report = deliver_ledger(
            store.clone(),
            date,
            Arc::new(Plain),
            transport,
            &options(3, None),
            crate::clock::now(),
        )
        .await
        .unwrap();
        assert_eq!((report.sent, report.failed), (57, 3), "{report:?}");
        assert!(report.retried > 0, "{report:?}");
        assert_eq!(report.pending_left, 0);
        let most = most_sending.load(Ordering::SeqCst);
        assert!(
            (1..=3).contains(&most),
            "{most} rows were in sending at once"
        );
        let counts = store.ledger_counts(date).unwrap();
        assert_eq!((counts.sent, counts.failed, counts.sending), (57, 3, 0));
    }

    #[tokio::test]
    async fn a_limit_stops_after_that_many_messages_and_leaves_the_rest_pending() {
        let (_dir, store) = store_with((0..10).map(|i| format!("r{i}@example.com")));
        let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let transport = Arc::new(Cloning(Watching {
            store: store.clone(),
            date,
            most_sending: Arc::new(AtomicU64::new(0)),
            // Away from the transient failure of every 7th message.
            sends: Arc::new(AtomicU64::new(4)),
        }));
        let report = deliver_ledger(
            store.clone(),
            date,
            Arc::new(Plain),
            transport,
            &options(2, Some(4)),
            crate::clock::now(),
        )
        .await
        .unwrap();
        assert_eq!(report.sent, 4);
        assert_eq!(report.pending_left, 6);
        let counts = store.ledger_counts(date).unwrap();
        assert_eq!((counts.sent, counts.pending, counts.sending), (4, 6, 0));
    }

    /// A two-step connection: stages, then finishes; looks at the ledger at each
    /// step. `steal` names a subscriber whose row "another sender" marks while
    /// its message is staged here.
    #[derive(Clone)]
    struct Staging {
        store: Arc<SqliteStore>,
        date: NaiveDate,
        steal: Option<i64>,
        staged: Arc<Mutex<Vec<i64>>>,
        finished: Arc<Mutex<Vec<i64>>>,
        pending_at_stage: Arc<AtomicU64>,
        pending_at_finish: Arc<AtomicU64>,
        most_sending: Arc<AtomicU64>,
        /// Raise this flag once this many messages are staged.
        raise: Option<(usize, Arc<std::sync::atomic::AtomicBool>)>,
    }
    impl Staging {
        fn id(msg: &Outgoing) -> i64 {
            msg.message_id.trim_end_matches(".test").parse().unwrap()
        }
        fn is_pending(&self, id: i64) -> bool {
            let next = self.store.ledger_next(self.date, id - 1, 1).unwrap();
            next.first().is_some_and(|d| d.subscriber.id == id)
        }
    }
    impl Connection for Staging {
        fn send<'a>(&'a mut self, _: &'a Outgoing) -> BoxFuture<'a, Result<(), SendError>> {
            panic!("the send loop stages and finishes");
        }
        fn stage<'a>(&'a mut self, msg: &'a Outgoing) -> BoxFuture<'a, Result<(), SendError>> {
            Box::pin(async move {
                let id = Staging::id(msg);
                if self.is_pending(id) {
                    self.pending_at_stage.fetch_add(1, Ordering::SeqCst);
                }
                self.staged.lock().unwrap().push(id);
                if let Some((n, flag)) = &self.raise {
                    if self.staged.lock().unwrap().len() >= *n {
                        flag.store(true, Ordering::SeqCst);
                    }
                }
                if self.steal == Some(id) {
                    let took = self
                        .store
                        .ledger_record_and_mark(self.date, &[], &[id], crate::clock::now())
                        .unwrap();
                    assert_eq!(took, vec![true]);
                }
                tokio::task::yield_now().await;
                Ok(())
            })
        }
        fn finish<'a>(&'a mut self, msg: &'a Outgoing) -> BoxFuture<'a, Result<(), SendError>> {
            Box::pin(async move {
                let id = Staging::id(msg);
                if self.is_pending(id) {
                    self.pending_at_finish.fetch_add(1, Ordering::SeqCst);
                }
                let sending = self.store.ledger_counts(self.date).unwrap().sending;
                self.most_sending.fetch_max(sending, Ordering::SeqCst);
                self.finished.lock().unwrap().push(id);
                tokio::task::yield_now().await;
                Ok(())
            })
        }
        fn is_broken(&self) -> bool {
            false
        }
        fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
            Box::pin(async {})
        }
    }

    fn staging(store: &Arc<SqliteStore>, date: NaiveDate, steal: Option<i64>) -> Staging {
        Staging {
            store: store.clone(),
            date,
            steal,
            staged: Arc::default(),
            finished: Arc::default(),
            pending_at_stage: Arc::default(),
            pending_at_finish: Arc::default(),
            most_sending: Arc::default(),
            raise: None,
        }
    }

    /// A whole run through `t` with `pool` connections, on the runtime of `send`.
    fn send_staged(
        store: &Arc<SqliteStore>,
        date: NaiveDate,
        t: &Staging,
        pool: usize,
    ) -> SendReport {
        single_thread_runtime()
            .unwrap()
            .block_on(deliver_ledger(
                store.clone(),
                date,
                Arc::new(Plain),
                Arc::new(Cloning(t.clone())),
                &options(pool, None),
                crate::clock::now(),
            ))
            .unwrap()
    }

    #[test]
    fn rows_go_to_sending_between_stage_and_finish_never_before() {
        let (_dir, store) = store_with((0..40).map(|i| format!("r{i}@example.com")));
        let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let t = staging(&store, date, None);
        let report = send_staged(&store, date, &t, 4);
        assert_eq!(report.sent, 40, "{report:?}");
        assert_eq!(t.pending_at_stage.load(Ordering::SeqCst), 40);
        assert_eq!(t.pending_at_finish.load(Ordering::SeqCst), 0);
        let most = t.most_sending.load(Ordering::SeqCst);
        assert!((1..=4).contains(&most), "{most} rows in sending at once");
        assert_eq!(store.ledger_counts(date).unwrap().sent, 40);
    }

    #[test]
    fn a_row_taken_by_another_sender_meanwhile_is_dropped_before_its_end() {
        let (_dir, store) = store_with((0..10).map(|i| format!("r{i}@example.com")));
        let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        store.ledger_enqueue(date, None).unwrap();
        let victim = store.ledger_next(date, i64::MIN, 4).unwrap()[3]
            .subscriber
            .id;
        let t = staging(&store, date, Some(victim));
        let report = send_staged(&store, date, &t, 2);
        assert!(t.staged.lock().unwrap().contains(&victim));
        assert!(
            !t.finished.lock().unwrap().contains(&victim),
            "the other sender's row was delivered here too"
        );
        assert_eq!(report.sent, 9, "{report:?}");
        // Still the other sender's: in `sending`, not recorded by this run.
        let counts = store.ledger_counts(date).unwrap();
        assert_eq!((counts.sent, counts.sending, counts.pending), (9, 1, 0));
    }

    /// The service stops while a pass runs (its store gate refuses every mark from
    /// then on): the loop reads again, gets nothing, and stages no more messages
    /// than were already under way.
    #[test]
    fn once_the_gate_stops_nothing_more_is_staged() {
        use crate::schedule::{gate::ZoneGate, Plan};
        use std::sync::atomic::AtomicBool;
        let (_dir, store) = store_with((0..40).map(|i| format!("r{i}@example.com")));
        let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let plan = Plan {
            send_time: chrono::NaiveTime::from_hms_opt(7, 0, 0).unwrap(),
            timezone: chrono_tz::Europe::Paris,
            catch_up: chrono::Duration::hours(3),
            zones: vec![],
        };
        let gate: Arc<dyn Store> = Arc::new(ZoneGate {
            inner: store.clone(),
            due: plan.due_filter(date, crate::clock::now()),
            stop: stop.clone(),
        });
        let t = Staging {
            raise: Some((5, stop.clone())),
            ..staging(&store, date, None)
        };
        let report = single_thread_runtime()
            .unwrap()
            .block_on(deliver_ledger(
                gate,
                date,
                Arc::new(Plain),
                Arc::new(Cloning(t.clone())),
                &options(2, None),
                crate::clock::now(),
            ))
            .unwrap();
        let staged = t.staged.lock().unwrap().len();
        assert!(staged < 20, "{staged} messages staged after the stop");
        let counts = store.ledger_counts(date).unwrap();
        assert_eq!(counts.sending, 0, "nothing left in sending");
        assert_eq!(counts.sent, report.sent);
        assert_eq!(counts.pending + counts.sent, 40);
    }
}
