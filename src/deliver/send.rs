//! The ledger-driven send loop. Rows are claimed from the store a few at a time
//! (never the whole list in memory) and at most `pool_size` rows are ever in
//! `sending` without their outcome recorded: a process killed at any point
//! leaves at most `pool_size` messages in doubt, and the next run resends those
//! once and names them.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{Config, Secret};
use crate::domain::{Digest, Subscriber};
use crate::render::Assets;
use crate::store::pg::may_block_here;
use crate::store::{Delivery, DeliveryOutcome, Holder, Ledger, Store};

use super::gate::Gate;

pub use super::compose::{header_fields, Compose, DigestComposer};
use super::rate::{backoff, RateLimiter};
use super::transport::Transport;
use super::worker::{Done, Event, Job, Shared, Work, Worker};

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
    /// Why the run stopped before its end (the sender or the login refused,
    /// too many failures in a row); what is left stays pending.
    pub stopped: Option<String>,
}

impl SendReport {
    /// Exit code 0 only when nothing is left to send.
    pub fn is_complete(&self) -> bool {
        self.pending_left == 0 && self.stopped.is_none()
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
        ) + &self
            .stopped
            .as_ref()
            .map(|why| format!("; stopped: {why}"))
            .unwrap_or_default()
    }
}

/// How a run behaves (from `[smtp]`, plus the command line's `--limit`).
#[derive(Debug, Clone)]
pub struct SendOptions {
    pub pool_size: usize,
    pub rate_per_second: f64,
    pub max_attempts: u32,
    pub retry_base: Duration,
    /// Stop after this many messages in a row failed for good.
    pub max_consecutive_failures: u32,
    /// At most this many messages in this run.
    pub limit: Option<u64>,
    /// Show a progress bar (on a terminal) instead of periodic log lines.
    pub progress_bar: bool,
    /// This process as a sender: the rows it claims and marks carry this name.
    pub holder: Holder,
    /// Another sender not heard from for this long is gone: its rows are
    /// taken over (`[schedule] heartbeat_seconds`).
    pub heartbeat_timeout: Duration,
    /// Which rows this run may take (the service's zones and stop flag).
    pub gate: Gate,
}

impl SendOptions {
    pub fn from_config(cfg: &Config, limit: Option<u64>) -> SendOptions {
        SendOptions {
            pool_size: cfg.smtp.pool_size.max(1),
            rate_per_second: cfg.smtp.rate_per_second,
            max_attempts: cfg.smtp.max_attempts.max(1),
            retry_base: Duration::from_millis(cfg.smtp.retry_base_ms),
            max_consecutive_failures: cfg.smtp.max_consecutive_failures.max(1),
            limit,
            progress_bar: std::io::stderr().is_terminal(),
            holder: Holder::new(crate::lease::lease_holder("sender")),
            heartbeat_timeout: Duration::from_secs(cfg.schedule.heartbeat_seconds.max(3)),
            gate: Gate::default(),
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
    pub gate: Gate,
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

/// Sends the issue `job.digest`, frozen in `job.store`, to every active
/// subscriber not yet served.
pub async fn send_issue(job: SendJob<'_>) -> Result<SendReport> {
    // The variants as frozen in the database: the same bytes from every sender.
    let composer = Arc::new(
        DigestComposer::new(job.cfg, job.digest, job.assets, job.secret, job.now)?
            .frozen_in(job.store.clone())
            .with_variants_in_use()?,
    );
    let opts = SendOptions {
        gate: job.gate,
        ..SendOptions::from_config(job.cfg, job.limit)
    };
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

/// Whether a worker task ended without reporting (it panicked): its rows stay
/// in `sending` and are in doubt for the next run.
fn lost_task(r: std::result::Result<(), tokio::task::JoinError>) -> bool {
    match r {
        Ok(()) => false,
        Err(e) => {
            tracing::error!(error = %e, "a delivery worker failed; its row is left in doubt");
            true
        }
    }
}

/// Adds recorded outcomes to the run's totals.
fn count_outcomes(totals: &mut SendReport, recorded: &[Done]) {
    for d in recorded {
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

/// Runs a call to `store`. On a single-threaded runtime (the `send` command) a
/// store in this process (SQLite) runs it in place: a ledger transaction takes
/// tens of microseconds, less than handing it to another thread and waking this
/// one again. A store across a connection (PostgreSQL) waits a round trip to
/// its server: the call goes to the blocking pool, where it blocks in place
/// ([`may_block_here`]), and the SMTP connections go on meanwhile. On a
/// multi-threaded runtime (the service) every call goes to the blocking pool
/// so the HTTP side is never stalled.
async fn blocking<T: Send + 'static>(
    store: &dyn Ledger,
    f: impl FnOnce() -> crate::store::StoreResult<T> + Send + 'static,
) -> Result<T> {
    let flavor = tokio::runtime::Handle::current().runtime_flavor();
    let r =
        if flavor == tokio::runtime::RuntimeFlavor::CurrentThread && !store.across_a_connection() {
            f()
        } else {
            tokio::task::spawn_blocking(move || may_block_here(f))
                .await
                .context("store task panicked")?
        };
    r.map_err(|e| anyhow::anyhow!("{e}"))
}

/// The longest a staged message waits for other marks to share its store call.
const GATHER: Duration = Duration::from_micros(500);

/// The store idle this many times as long as its last call took: it is not what
/// the run waits on, so a mark is made at once (across a network each
/// connection waits a round trip per message and marks come one at a time;
/// gathering them would only add to every round trip).
const STORE_IDLE_RATIO: u32 = 4;

/// Rows waiting to be handed out again after a transient failure.
#[derive(Default)]
struct Retries {
    base: Duration,
    waiting: Vec<(Instant, Job)>,
}

impl Retries {
    /// After a transient failure (or at once, for a message whose session
    /// ended before it: no attempt used).
    fn push(&mut self, job: Job) {
        let wait = if job.attempts == 0 {
            Duration::ZERO
        } else {
            backoff(self.base, job.attempts)
        };
        let due = Instant::now() + wait;
        self.waiting.push((due, job));
    }

    fn take_due(&mut self, now: Instant) -> Option<Job> {
        let i = self.waiting.iter().position(|(due, _)| *due <= now)?;
        Some(self.waiting.swap_remove(i).1)
    }

    fn next_due(&self) -> Option<Instant> {
        self.waiting.iter().map(|(due, _)| *due).min()
    }
}

/// What the ledger task knows of the workers between two store calls.
#[derive(Default)]
struct Tally {
    /// Reported outcomes not yet recorded.
    finished: Vec<Done>,
    /// Rows to mark `sending`, each with the worker waiting for the answer.
    marks: Vec<(i64, oneshot::Sender<bool>)>,
    /// Workers asking for a row: (holding a staged message, reply).
    wants: Vec<(bool, oneshot::Sender<Work>)>,
    retries: Retries,
    /// Workers still running.
    alive: usize,
    /// Jobs handed out and not yet reported on, and jobs waiting for a retry.
    out: usize,
    consecutive_failed: u32,
    consecutive_gave_up: u32,
    /// Why the run stops early.
    stopped: Option<String>,
    totals: SendReport,
}

impl Tally {
    fn take(&mut self, ev: Event) {
        match ev {
            Event::Want { holding, reply } => self.wants.push((holding, reply)),
            Event::Mark(id, reply) => self.marks.push((id, reply)),
            Event::Exit => self.alive -= 1,
            Event::Done(mut d) => {
                self.out -= 1;
                match &d.outcome {
                    Some(DeliveryOutcome::Sent { .. }) => {
                        self.consecutive_failed = 0;
                        self.consecutive_gave_up = 0;
                    }
                    Some(DeliveryOutcome::Failed { .. }) => self.consecutive_failed += 1,
                    Some(DeliveryOutcome::Retry { .. }) if d.again.is_none() => {
                        self.consecutive_gave_up += 1
                    }
                    _ => {}
                }
                match d.again.take() {
                    Some(job) => {
                        self.out += 1;
                        self.retries.push(job);
                    }
                    None => self.totals.retried += u64::from(d.retried),
                }
                if let Some(why) = d.fatal.take() {
                    tracing::error!(error = %why, "stopping the run");
                    self.stopped.get_or_insert(why);
                }
                if d.outcome.is_some() {
                    self.finished.push(*d);
                }
            }
        }
    }
}

/// Why a run stops before its end.
fn stop_reason(
    consecutive_failed: u32,
    consecutive_gave_up: u32,
    opts: &SendOptions,
) -> Option<String> {
    if consecutive_failed >= opts.max_consecutive_failures {
        return Some(format!(
            "{consecutive_failed} messages in a row failed for good (smtp.max_consecutive_failures): \
             the relay or the configuration is probably wrong; the rest is left pending"
        ));
    }
    let unreachable = (opts.pool_size as u32).max(4);
    if consecutive_gave_up >= unreachable {
        return Some(format!(
            "the server kept failing for {consecutive_gave_up} messages in a row: stopping this run, the rest stays pending"
        ));
    }
    None
}

/// What the feed has for a worker.
enum Next {
    Job(Job),
    /// Nothing free now, but other senders still hold rows of the issue: ask
    /// again at [`Feed::look_again`] (one of them may be gone by then).
    Later,
    /// Nothing is left to send (or `--limit` is reached).
    Done,
}

/// How often a sender with nothing left to claim looks whether the others are
/// done or gone.
const LOOK_AROUND: Duration = Duration::from_secs(1);

/// Where the rows handed to workers come from: rows taken over from senders
/// that are gone (in `sending` already) first, then pending rows claimed for
/// this sender in batches (still pending in the ledger until a worker's mark),
/// up to `--limit`. Once nothing is free, it waits for the other senders of
/// the issue, taking over the rows of any that is gone.
struct Feed {
    store: Arc<dyn Ledger>,
    gate: Gate,
    date: NaiveDate,
    holder: Holder,
    heartbeat_timeout: Duration,
    /// Taken over from a sender that is gone: in `sending` already.
    in_doubt: VecDeque<Delivery>,
    /// Addresses taken over in doubt.
    taken_over: Vec<String>,
    ahead: VecDeque<Delivery>,
    read_ahead: usize,
    /// A claim returned fewer rows than asked: nothing free is left.
    exhausted: bool,
    /// When to look at the other senders again.
    look_again: Option<Instant>,
    /// Nothing free, nothing held elsewhere: the issue is done.
    finished: bool,
    given_out: u64,
    limit: Option<u64>,
    store_calls: u64,
}

impl Feed {
    /// The next row to hand out, claiming ahead when needed.
    async fn next(&mut self) -> Result<Next> {
        if self.limit.is_some_and(|l| self.given_out >= l) || self.finished {
            return Ok(Next::Done);
        }
        loop {
            if let Some(d) = self.in_doubt.pop_front() {
                self.given_out += 1;
                return Ok(Next::Job(Job {
                    delivery: d,
                    marked: true,
                    attempts: 0,
                }));
            }
            if self.ahead.is_empty() && !self.exhausted {
                let (s, gate, date, holder, n) = (
                    self.store.clone(),
                    self.gate.clone(),
                    self.date,
                    self.holder.clone(),
                    self.read_ahead,
                );
                let rows = blocking(&*self.store, move || gate.claim_for(&*s, date, &holder, n))
                    .await
                    .context("cannot claim the next rows of the ledger")?;
                self.store_calls += 1;
                self.exhausted = rows.len() < self.read_ahead;
                self.ahead.extend(rows);
            }
            if let Some(d) = self.ahead.pop_front() {
                self.given_out += 1;
                return Ok(Next::Job(Job {
                    delivery: d,
                    marked: false,
                    attempts: 0,
                }));
            }
            if self.look_again.is_some_and(|at| Instant::now() < at) {
                return Ok(Next::Later);
            }
            let found = self.take_over().await?;
            if found.released > 0 {
                self.exhausted = false;
            }
            if !self.in_doubt.is_empty() || found.released > 0 {
                continue;
            }
            if found.held_elsewhere == 0 {
                self.finished = true;
                return Ok(Next::Done);
            }
            self.look_again = Some(Instant::now() + LOOK_AROUND);
            return Ok(Next::Later);
        }
    }

    /// Takes over the rows of the senders that are gone: their rows in
    /// `sending` are resent from here (in doubt), their pending rows are free
    /// again.
    async fn take_over(&mut self) -> Result<crate::store::TakeOver> {
        let (s, gate, date, holder) = (
            self.store.clone(),
            self.gate.clone(),
            self.date,
            self.holder.clone(),
        );
        let timeout = chrono::Duration::from_std(self.heartbeat_timeout).unwrap_or_default();
        let found = blocking(&*self.store, move || {
            let now = crate::clock::now();
            let gone: Vec<Holder> = s
                .senders(date)?
                .into_iter()
                .filter(|seen| {
                    seen.holder != holder && crate::lease::sender_is_gone(seen, now, timeout)
                })
                .map(|seen| seen.holder)
                .collect();
            for g in &gone {
                tracing::warn!(%date, sender = %g, "a sender of this issue is gone: taking over its rows");
            }
            gate.take_over(&*s, date, &holder, &gone, now)
        })
        .await
        .context("cannot take over the rows of senders that are gone")?;
        self.store_calls += 1;
        if !found.in_doubt.is_empty() {
            let addresses: Vec<String> = found
                .in_doubt
                .iter()
                .map(|d| d.subscriber.email.to_string())
                .collect();
            tracing::warn!(count = addresses.len(), addresses = ?addresses,
                "in doubt: in flight when their sender stopped; resending once");
            self.taken_over.extend(addresses);
            self.in_doubt.extend(found.in_doubt.iter().cloned());
        }
        Ok(found)
    }

    /// A row was refused at its mark (unsubscribed, taken by another sender, or
    /// the service is stopping): what was claimed ahead may be stale too. It
    /// is released and claimed again rather than staged for nothing.
    async fn forget_read_ahead(&mut self) -> Result<()> {
        self.ahead.clear();
        self.exhausted = false;
        let (s, date, holder) = (self.store.clone(), self.date, self.holder.clone());
        blocking(&*self.store, move || s.ledger_release(date, &holder))
            .await
            .context("cannot release the rows claimed ahead")?;
        self.store_calls += 1;
        Ok(())
    }
}

/// Progress for people: a bar on a terminal, else a log line every 5 s.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    started: Instant,
    last_log: Instant,
}

impl Progress {
    fn new(total: u64, bar: bool) -> Progress {
        let bar = bar.then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} {per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        Progress {
            bar,
            total,
            started: Instant::now(),
            last_log: Instant::now(),
        }
    }

    fn recorded(&mut self, n: usize, totals: &SendReport) {
        if let Some(b) = &self.bar {
            b.inc(n as u64);
        } else if self.last_log.elapsed() >= Duration::from_secs(5) {
            self.last_log = Instant::now();
            let done = totals.sent + totals.failed;
            let per_second = done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            let eta_s = (self.total.saturating_sub(done) as f64 / per_second.max(1e-3)).round();
            tracing::info!(
                sent = totals.sent,
                failed = totals.failed,
                retried = totals.retried,
                of = self.total,
                per_second = per_second.round(),
                eta_s,
                "progress"
            );
        }
    }
}

/// The loop: enqueue, then hand rows to `pool_size` workers (one connection
/// each), marking and recording in batched ledger transactions.
pub async fn deliver_ledger(
    store: Arc<dyn Ledger>,
    date: NaiveDate,
    composer: Arc<dyn Compose>,
    transport: Arc<dyn Transport>,
    opts: &SendOptions,
    now: DateTime<Utc>,
) -> Result<SendReport> {
    SendLoop::start(store, date, composer, transport, opts, now)
        .await?
        .run()
        .await
}

/// One run of the send loop: the task that owns the ledger while sending.
///
/// Rows are read ahead in id order without being changed and handed to
/// workers; a worker stages its message (the server reads it), asks this task
/// to mark the row `sending`, and ends the message only after that, with the
/// next message's envelope. Each store call records every outcome reported so
/// far and marks every row asked for, in one transaction. A worker reports a
/// message's outcome before it asks for its next row's mark, so after every
/// store call at most one row per worker is in `sending`: rows in doubt after a
/// crash never exceed `pool_size`.
///
/// The steps, in the order [`SendLoop::run`] takes them: [`start`](Self::start)
/// (enqueue, heartbeat, take over), then round after round
/// [`gather`](Self::gather) the workers' news, [`hand_out`](Self::hand_out)
/// rows, [`commit`](Self::commit) to the ledger when [`commit_due`](Self::commit_due),
/// else [`wait_for_news`](Self::wait_for_news); and [`finish`](Self::finish).
struct SendLoop<'a> {
    store: Arc<dyn Ledger>,
    date: NaiveDate,
    holder: Holder,
    opts: &'a SendOptions,
    /// The run's "now" and when it started: outcomes are stamped `now` plus
    /// the time elapsed since.
    now: DateTime<Utc>,
    started: Instant,
    /// Already sent or failed when the run began.
    skipped: u64,
    heartbeat: crate::lease::Heartbeat,
    feed: Feed,
    tally: Tally,
    progress: Progress,
    events: mpsc::UnboundedReceiver<Event>,
    workers: tokio::task::JoinSet<()>,
    /// Workers with nothing to do for now: answered when a row comes back for
    /// a retry, or told to stop once every other worker is done.
    parked: Vec<oneshot::Sender<Work>>,
    /// Since when the oldest mark not yet committed has waited.
    first_mark: Option<Instant>,
    last_commit: Instant,
    last_commit_took: Duration,
}

impl<'a> SendLoop<'a> {
    /// Enqueues the issue's subscribers, starts this sender's heartbeat, takes
    /// over the rows of senders that are gone and starts `pool_size` workers.
    async fn start(
        store: Arc<dyn Ledger>,
        date: NaiveDate,
        composer: Arc<dyn Compose>,
        transport: Arc<dyn Transport>,
        opts: &'a SendOptions,
        now: DateTime<Utc>,
    ) -> Result<SendLoop<'a>> {
        let started = Instant::now();
        let pool = opts.pool_size.max(1);

        let (s, gate) = (store.clone(), opts.gate.clone());
        let enqueued = blocking(&*store, move || gate.enqueue(&*s, date)).await?;
        let s = store.clone();
        let before = blocking(&*store, move || s.ledger_counts(date)).await?;
        let holder = opts.holder.clone();
        tracing::info!(%date, enqueued, pending = before.pending, sending = before.sending,
            %holder, transport = %transport.describe(), "sending");
        // Beats while this sender works: the other senders of the issue take
        // over its rows only once it stops beating.
        let heartbeat = {
            let (s, h) = (store.clone(), holder.clone());
            let timeout = chrono::Duration::from_std(opts.heartbeat_timeout).unwrap_or_default();
            blocking(&*store, move || {
                crate::lease::Heartbeat::start(s, date, h, timeout)
            })
            .await
            .context("cannot record this sender's heartbeat")?
        };

        let mut feed = Feed {
            store: store.clone(),
            gate: opts.gate.clone(),
            date,
            holder: holder.clone(),
            heartbeat_timeout: opts.heartbeat_timeout,
            in_doubt: VecDeque::new(),
            taken_over: Vec::new(),
            ahead: VecDeque::new(),
            read_ahead: (pool * 8).clamp(64, 1024),
            exhausted: false,
            look_again: None,
            finished: false,
            given_out: 0,
            limit: opts.limit,
            store_calls: 0,
        };
        // Rows left in `sending` by a sender that is gone: handed out first.
        feed.take_over().await?;
        let total = (before.pending + before.sending).min(opts.limit.unwrap_or(u64::MAX));
        let progress = Progress::new(total, opts.progress_bar);

        let shared = Arc::new(Shared {
            composer,
            transport,
            rate: RateLimiter::new(opts.rate_per_second),
            max_attempts: opts.max_attempts,
        });
        let (events_tx, events) = mpsc::unbounded_channel::<Event>();
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..pool {
            let worker = Worker {
                shared: shared.clone(),
                events: events_tx.clone(),
                conn: None,
                held: None,
                delivered_here: 0,
            };
            workers.spawn(worker.run());
        }
        drop(events_tx);

        Ok(SendLoop {
            store,
            date,
            holder,
            opts,
            now,
            started,
            skipped: before.sent + before.failed,
            heartbeat,
            feed,
            tally: Tally {
                alive: pool,
                retries: Retries {
                    base: opts.retry_base,
                    waiting: Vec::new(),
                },
                ..Tally::default()
            },
            progress,
            events,
            workers,
            parked: Vec::new(),
            first_mark: None,
            last_commit: Instant::now(),
            last_commit_took: GATHER,
        })
    }

    /// Round after round until every worker has stopped and everything they
    /// reported is recorded.
    async fn run(mut self) -> Result<SendReport> {
        loop {
            self.gather();
            self.hand_out().await?;
            if self.commit_due() {
                self.commit().await?;
                continue;
            }
            if self.is_over() {
                break;
            }
            self.wait_for_news().await;
        }
        self.finish().await
    }

    /// Takes in what the workers reported since the last round (without
    /// waiting), counts the workers that ended, and decides whether the run
    /// stops early.
    fn gather(&mut self) {
        let t = &mut self.tally;
        while let Ok(ev) = self.events.try_recv() {
            t.take(ev);
        }
        while let Some(r) = self.workers.try_join_next() {
            if lost_task(r) {
                t.alive -= 1;
            }
        }
        if t.stopped.is_none() {
            t.stopped = stop_reason(t.consecutive_failed, t.consecutive_gave_up, self.opts);
            if let Some(why) = &t.stopped {
                tracing::error!("{why}");
            }
        }
        if t.stopped.is_some() {
            // Rows waiting for a retry stay pending in the ledger.
            t.out -= t.retries.waiting.len();
            t.retries.waiting.clear();
        }
    }

    /// Answers every worker that asked for a row (parked ones again): a row
    /// due for a retry, else the feed's next row; idle, parked or stopped when
    /// there is none.
    async fn hand_out(&mut self) -> Result<()> {
        let t = &mut self.tally;
        let mut asking: Vec<(bool, oneshot::Sender<Work>)> =
            self.parked.drain(..).map(|r| (false, r)).collect();
        asking.append(&mut t.wants);
        for (holding, reply) in asking {
            // A row back for a retry is counted in `t.out` already.
            let job = if t.stopped.is_some() {
                None
            } else if let Some(job) = t.retries.take_due(Instant::now()) {
                Some(job)
            } else {
                match self.feed.next().await? {
                    Next::Job(job) => {
                        t.out += 1;
                        Some(job)
                    }
                    Next::Later => {
                        // Other senders still hold rows: wait for them (or
                        // their takeover), holding nothing.
                        if holding {
                            let _ = reply.send(Work::Idle);
                        } else {
                            self.parked.push(reply);
                        }
                        continue;
                    }
                    Next::Done => None,
                }
            };
            match job {
                Some(job) => {
                    let _ = reply.send(Work::Job(job));
                }
                None if holding => {
                    let _ = reply.send(Work::Idle);
                }
                // Others are still busy (their rows may come back for a
                // retry): wait.
                None if t.stopped.is_none() && t.out > 0 => self.parked.push(reply),
                None => {
                    let _ = reply.send(Work::Stop);
                }
            }
        }
        Ok(())
    }

    /// Whether to go to the store now: once half the workers wait for a mark
    /// (the servers are still reading their messages), at once if every
    /// worker waits, after `GATHER` at the latest, and without waiting for
    /// company when commits are rare (the connections wait on the network, not
    /// on the store); outcomes alone when nothing else is coming.
    fn commit_due(&mut self) -> bool {
        let t = &self.tally;
        if t.marks.is_empty() {
            self.first_mark = None;
        } else if self.first_mark.is_none() {
            self.first_mark = Some(Instant::now());
        }
        let waiting = t.marks.len() + self.parked.len();
        self.first_mark.is_some_and(|since| {
            t.marks.len() >= t.alive.div_ceil(2)
                || waiting >= t.alive
                || since.elapsed() >= GATHER
                || self.last_commit.elapsed() >= self.last_commit_took * STORE_IDLE_RATIO
        }) || t.finished.len() >= 256
            || (!t.finished.is_empty() && (waiting >= t.alive || t.alive == 0))
    }

    /// One ledger transaction: records every outcome reported so far and marks
    /// every row asked for, then answers the workers waiting for their mark.
    async fn commit(&mut self) -> Result<()> {
        let t = &mut self.tally;
        let outcomes: Vec<(i64, DeliveryOutcome)> = t
            .finished
            .iter()
            .filter_map(|d| d.outcome.clone().map(|o| (d.id, o)))
            .collect();
        let ids: Vec<i64> = t.marks.iter().map(|(id, _)| *id).collect();
        let (s, h, date) = (self.store.clone(), self.holder.clone(), self.date);
        let gate = self.opts.gate.clone();
        let when = self.at();
        self.feed.store_calls += 1;
        let commit_started = Instant::now();
        let marked = blocking(&*self.store, move || {
            gate.record_and_mark(&*s, date, &h, &outcomes, &ids, when)
        })
        .await
        .context("cannot record outcomes and mark rows in the ledger")?;
        self.last_commit = Instant::now();
        self.last_commit_took = self.last_commit - commit_started;
        if marked.iter().any(|ok| !ok) {
            self.feed.forget_read_ahead().await?;
        }
        let t = &mut self.tally;
        for ((_, reply), ok) in t.marks.drain(..).zip(marked) {
            let _ = reply.send(ok);
        }
        count_outcomes(&mut t.totals, &t.finished);
        self.progress.recorded(t.finished.len(), &t.totals);
        t.finished.clear();
        Ok(())
    }

    /// Every worker has stopped and all they reported is recorded.
    fn is_over(&self) -> bool {
        let t = &self.tally;
        t.alive == 0 && t.finished.is_empty() && t.marks.is_empty()
    }

    /// Waits for news: an event, a worker that ended, the gather deadline, the
    /// next retry, or the time to look at the other senders again.
    async fn wait_for_news(&mut self) {
        let until = [
            self.first_mark.map(|since| since + GATHER),
            self.tally.retries.next_due(),
            self.feed.look_again.filter(|_| !self.parked.is_empty()),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            ev = tokio::time::timeout_at(until, self.events.recv()) => {
                if let Ok(Some(ev)) = ev {
                    self.tally.take(ev);
                }
            }
            Some(r) = self.workers.join_next() => {
                if lost_task(r) {
                    self.tally.alive -= 1;
                }
            }
        }
    }

    /// Gives back what this sender holds and did not send, stops its
    /// heartbeat and says what the run did.
    async fn finish(self) -> Result<SendReport> {
        let at = self.at();
        let SendLoop {
            store,
            date,
            holder,
            started,
            skipped,
            heartbeat,
            feed,
            tally,
            progress,
            ..
        } = self;
        if let Some(b) = progress.bar {
            b.finish_and_clear();
        }
        // Rows taken over from a dead run but not handed out (--limit) go back
        // to pending.
        if !feed.in_doubt.is_empty() {
            let outcomes: Vec<(i64, DeliveryOutcome)> = feed
                .in_doubt
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
            blocking(&*store, move || s.ledger_record(date, &outcomes, at)).await?;
        }
        // What this sender claimed and did not send is free for the others (or
        // the next run); then it stops beating and says so.
        drop(heartbeat);
        let (s, h) = (store.clone(), holder.clone());
        blocking(&*store, move || {
            s.ledger_release(date, &h)?;
            s.sender_left(&h)
        })
        .await
        .context("cannot release this sender's rows")?;

        let s = store.clone();
        let after = blocking(&*store, move || s.ledger_counts(date)).await?;
        let report = SendReport {
            date: Some(date),
            sent: tally.totals.sent,
            retried: tally.totals.retried,
            failed: tally.totals.failed,
            bounced: tally.totals.bounced,
            skipped,
            in_doubt: feed.taken_over,
            pending_left: after.pending + after.sending,
            failures: tally.totals.failures,
            stopped: tally.stopped,
        };
        tracing::info!(%date, elapsed = ?started.elapsed(), store_calls = feed.store_calls,
            "{}", report.summary());
        Ok(report)
    }

    /// The time to stamp on the ledger: the run's "now" plus the time elapsed
    /// since it started.
    fn at(&self) -> DateTime<Utc> {
        self.now + chrono::Duration::from_std(self.started.elapsed()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::message::Outgoing;
    use crate::deliver::transport::{Connection, SendError, Staged};
    use crate::domain::{SubscriberEmail, SubscriberStatus};
    use crate::store::StoreResult;
    use crate::store::{NewSubscriber, SqliteStore, Subscribers};
    use futures::future::BoxFuture;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

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
        /// The staged message's recipient.
        held: Option<String>,
        failed_once: Arc<Mutex<std::collections::HashSet<String>>>,
    }
    impl Watching {
        async fn deliver(&self, to: &str) -> Result<(), SendError> {
            let sending = self.store.ledger_counts(self.date).unwrap().sending;
            self.most_sending.fetch_max(sending, Ordering::SeqCst);
            self.sends.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            if to.starts_with("refused") {
                return Err(SendError::permanent("554 refused"));
            }
            // Every 7th reader's first attempt fails for a while.
            let n: u64 = to
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .split('@')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if n % 7 == 3 && self.failed_once.lock().unwrap().insert(to.to_string()) {
                return Err(SendError::transient("421 try again"));
            }
            Ok(())
        }
    }
    impl Connection for Watching {
        fn stage_next<'a>(&'a mut self, msg: &'a Outgoing) -> BoxFuture<'a, Staged> {
            Box::pin(async move {
                let previous = match self.held.take() {
                    Some(to) => Some(self.deliver(&to).await),
                    None => None,
                };
                self.held = Some(msg.to.clone());
                Staged {
                    previous,
                    this: Ok(()),
                }
            })
        }
        fn finish(&mut self) -> BoxFuture<'_, Result<(), SendError>> {
            Box::pin(async move {
                let to = self.held.take().expect("a staged message");
                self.deliver(&to).await
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
            max_consecutive_failures: 20,
            limit,
            progress_bar: false,
            holder: Holder::new("send-here"),
            heartbeat_timeout: Duration::from_secs(30),
            gate: Gate::default(),
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
            held: None,
            failed_once: Arc::default(),
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
            sends: Arc::new(AtomicU64::new(0)),
            held: None,
            failed_once: Arc::default(),
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

    /// A ledger in SQLite that says it is across a connection or not, and notes
    /// the threads the send loop's calls run on. Across a connection, its first
    /// claim waits until another task of the runtime has run meanwhile, as an
    /// SMTP connection must go on during a round trip to a server (it gives up
    /// after a while: a call in place would wait for ever).
    struct Noting {
        store: Arc<SqliteStore>,
        across: bool,
        threads: Mutex<Vec<std::thread::ThreadId>>,
        claim_started: Mutex<Option<oneshot::Sender<()>>>,
        others_ran: Mutex<std::sync::mpsc::Receiver<()>>,
    }
    impl Noting {
        fn note(&self) {
            self.threads
                .lock()
                .unwrap()
                .push(std::thread::current().id());
        }
    }
    impl Ledger for Noting {
        fn across_a_connection(&self) -> bool {
            self.across
        }
        fn ledger_enqueue(&self, date: NaiveDate, max_id: Option<i64>) -> StoreResult<u64> {
            self.note();
            self.store.ledger_enqueue(date, max_id)
        }
        fn ledger_claim(
            &self,
            date: NaiveDate,
            limit: usize,
            include_in_doubt: bool,
        ) -> StoreResult<Vec<Delivery>> {
            self.store.ledger_claim(date, limit, include_in_doubt)
        }
        fn ledger_record(
            &self,
            date: NaiveDate,
            outcomes: &[(i64, DeliveryOutcome)],
            at: DateTime<Utc>,
        ) -> StoreResult<()> {
            self.note();
            self.store.ledger_record(date, outcomes, at)
        }
        fn ledger_next(
            &self,
            date: NaiveDate,
            after: i64,
            limit: usize,
        ) -> StoreResult<Vec<Delivery>> {
            self.store.ledger_next(date, after, limit)
        }
        fn ledger_record_and_mark(
            &self,
            date: NaiveDate,
            holder: &Holder,
            outcomes: &[(i64, DeliveryOutcome)],
            marks: &[i64],
            at: DateTime<Utc>,
        ) -> StoreResult<Vec<bool>> {
            self.note();
            self.store
                .ledger_record_and_mark(date, holder, outcomes, marks, at)
        }
        fn sender_seen(
            &self,
            date: NaiveDate,
            holder: &Holder,
            now: DateTime<Utc>,
        ) -> StoreResult<()> {
            self.store.sender_seen(date, holder, now)
        }
        fn senders(&self, date: NaiveDate) -> StoreResult<Vec<crate::store::SenderSeen>> {
            self.store.senders(date)
        }
        fn ledger_claim_for(
            &self,
            date: NaiveDate,
            holder: &Holder,
            limit: usize,
        ) -> StoreResult<Vec<Delivery>> {
            self.note();
            let first = self.claim_started.lock().unwrap().take();
            if let Some(started) = first.filter(|_| self.across) {
                let _ = started.send(());
                let others = self.others_ran.lock().unwrap();
                if others.recv_timeout(Duration::from_secs(20)).is_err() {
                    return Err(crate::store::StoreError::Invalid(
                        "no other task of the send's runtime ran during the claim".into(),
                    ));
                }
            }
            self.store.ledger_claim_for(date, holder, limit)
        }
        fn ledger_take_over(
            &self,
            date: NaiveDate,
            holder: &Holder,
            gone: &[Holder],
            now: DateTime<Utc>,
        ) -> StoreResult<crate::store::TakeOver> {
            self.note();
            self.store.ledger_take_over(date, holder, gone, now)
        }
        fn ledger_release(&self, date: NaiveDate, holder: &Holder) -> StoreResult<()> {
            self.note();
            self.store.ledger_release(date, holder)
        }
        fn sender_left(&self, holder: &Holder) -> StoreResult<()> {
            self.store.sender_left(holder)
        }
        fn ledger_counts(&self, date: NaiveDate) -> StoreResult<crate::store::LedgerCounts> {
            self.note();
            self.store.ledger_counts(date)
        }
    }

    /// Sends 30 messages over 3 connections on the runtime of `send` through
    /// a [`Noting`] ledger, with another task on the runtime answering the
    /// first claim. The threads of the loop's store calls and the runtime's.
    fn send_noting(across: bool) -> (Vec<std::thread::ThreadId>, std::thread::ThreadId) {
        let (_dir, store) = store_with((0..30).map(|i| format!("r{i}@example.com")));
        let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let (started_tx, started_rx) = oneshot::channel();
        let (ran_tx, ran_rx) = std::sync::mpsc::channel();
        let ledger = Arc::new(Noting {
            store: store.clone(),
            across,
            threads: Mutex::default(),
            claim_started: Mutex::new(Some(started_tx)),
            others_ran: Mutex::new(ran_rx),
        });
        let transport = Arc::new(Cloning(Watching {
            store: store.clone(),
            date,
            most_sending: Arc::new(AtomicU64::new(0)),
            sends: Arc::new(AtomicU64::new(0)),
            held: None,
            failed_once: Arc::default(),
        }));
        let rt = single_thread_runtime().unwrap();
        let runtime_thread = std::thread::current().id();
        let report = rt.block_on(async {
            tokio::spawn(async move {
                if started_rx.await.is_ok() {
                    let _ = ran_tx.send(());
                }
            });
            deliver_ledger(
                ledger.clone(),
                date,
                Arc::new(Plain),
                transport,
                &options(3, None),
                crate::clock::now(),
            )
            .await
        });
        let report = report.unwrap();
        assert_eq!((report.sent, report.pending_left), (30, 0), "{report:?}");
        let counts = store.ledger_counts(date).unwrap();
        assert_eq!((counts.sent, counts.sending), (30, 0));
        let threads = ledger.threads.lock().unwrap().clone();
        (threads, runtime_thread)
    }

    /// A ledger across a connection (PostgreSQL): the send's calls leave the
    /// runtime's thread, whose other tasks (the connections) run meanwhile.
    #[test]
    fn across_a_connection_the_connections_go_on_during_a_store_call() {
        let (threads, runtime) = send_noting(true);
        assert!(threads.len() >= 5, "{threads:?}");
        assert!(
            threads.iter().all(|t| *t != runtime),
            "a store call ran on the runtime's thread: {threads:?}"
        );
    }

    /// A ledger in this process (SQLite): the send's calls run in place on the
    /// runtime's thread (faster than a hand-off).
    #[test]
    fn in_this_process_the_store_calls_run_in_place() {
        let (threads, runtime) = send_noting(false);
        assert!(threads.len() >= 5, "{threads:?}");
        assert!(threads.iter().all(|t| *t == runtime), "{threads:?}");
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
        /// The staged message's subscriber.
        held: Option<i64>,
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
    impl Staging {
        async fn stage_one(&mut self, msg: &Outgoing) {
            let id = Staging::id(msg);
            if self.is_pending(id) {
                self.pending_at_stage.fetch_add(1, Ordering::SeqCst);
            }
            let first_time = !self.staged.lock().unwrap().contains(&id);
            self.staged.lock().unwrap().push(id);
            if let Some((n, flag)) = &self.raise {
                if self.staged.lock().unwrap().len() >= *n {
                    flag.store(true, Ordering::SeqCst);
                }
            }
            if self.steal == Some(id) && first_time {
                // As when this sender was thought gone: its claims are freed
                // and another one marks the row, then falls silent (its last
                // heartbeat a second short of the 30 s timeout).
                let here = Holder::new("send-here");
                self.store.ledger_release(self.date, &here).unwrap();
                let other = Holder::new("send-other");
                let now = crate::clock::now();
                self.store
                    .sender_seen(self.date, &other, now - chrono::Duration::seconds(29))
                    .unwrap();
                let took = self
                    .store
                    .ledger_record_and_mark(self.date, &other, &[], &[id], now)
                    .unwrap();
                assert_eq!(took, vec![true]);
            }
            self.held = Some(id);
            tokio::task::yield_now().await;
        }
        async fn end(&mut self) -> Result<(), SendError> {
            let id = self.held.take().expect("a staged message");
            if self.is_pending(id) {
                self.pending_at_finish.fetch_add(1, Ordering::SeqCst);
            }
            let sending = self.store.ledger_counts(self.date).unwrap().sending;
            self.most_sending.fetch_max(sending, Ordering::SeqCst);
            self.finished.lock().unwrap().push(id);
            tokio::task::yield_now().await;
            Ok(())
        }
    }
    impl Connection for Staging {
        fn stage_next<'a>(&'a mut self, msg: &'a Outgoing) -> BoxFuture<'a, Staged> {
            Box::pin(async move {
                let previous = match self.held {
                    Some(_) => Some(self.end().await),
                    None => None,
                };
                self.stage_one(msg).await;
                Staged {
                    previous,
                    this: Ok(()),
                }
            })
        }
        fn finish(&mut self) -> BoxFuture<'_, Result<(), SendError>> {
            Box::pin(self.end())
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
            held: None,
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

    /// The row goes back to this sender only once the other one is gone, and
    /// then in doubt.
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
        let times = |list: &Mutex<Vec<i64>>| {
            list.lock()
                .unwrap()
                .iter()
                .filter(|id| **id == victim)
                .count()
        };
        assert_eq!(times(&t.staged), 2, "staged, dropped, then taken over");
        assert_eq!(
            times(&t.finished),
            1,
            "the other sender's row was delivered here while it held it"
        );
        assert_eq!(report.sent, 10, "{report:?}");
        assert_eq!(report.in_doubt, vec![format!("r3@example.com")]);
        let counts = store.ledger_counts(date).unwrap();
        assert_eq!((counts.sent, counts.sending, counts.pending), (10, 0, 0));
    }

    /// The service stops while a pass runs (its gate refuses every mark from
    /// then on): the loop reads again, gets nothing, and stages no more messages
    /// than were already under way.
    #[test]
    fn once_the_gate_stops_nothing_more_is_staged() {
        use crate::schedule::Plan;
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
        let gate = plan
            .due_filter(date, crate::clock::now())
            .gate(stop.clone());
        let t = Staging {
            raise: Some((5, stop.clone())),
            ..staging(&store, date, None)
        };
        let report = single_thread_runtime()
            .unwrap()
            .block_on(deliver_ledger(
                store.clone(),
                date,
                Arc::new(Plain),
                Arc::new(Cloning(t.clone())),
                &SendOptions {
                    gate,
                    ..options(2, None)
                },
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

    /// A relay that takes three messages a session and then hangs up (421) on
    /// the envelope of the fourth.
    #[derive(Clone, Default)]
    struct HangsUp {
        here: u32,
        held: Option<String>,
        broken: bool,
        delivered: Arc<Mutex<Vec<String>>>,
    }
    impl Connection for HangsUp {
        fn stage_next<'a>(&'a mut self, msg: &'a Outgoing) -> BoxFuture<'a, Staged> {
            Box::pin(async move {
                let previous = self.held.take().map(|to| {
                    self.delivered.lock().unwrap().push(to);
                    Ok(())
                });
                tokio::task::yield_now().await;
                if self.here == 3 {
                    self.broken = true;
                    return Staged {
                        previous,
                        this: Err(SendError::transient("MAIL: 421 closing")),
                    };
                }
                self.here += 1;
                self.held = Some(msg.to.clone());
                Staged {
                    previous,
                    this: Ok(()),
                }
            })
        }
        fn finish(&mut self) -> BoxFuture<'_, Result<(), SendError>> {
            Box::pin(async move {
                let to = self.held.take().expect("a staged message");
                self.delivered.lock().unwrap().push(to);
                Ok(())
            })
        }
        fn is_broken(&self) -> bool {
            self.broken
        }
        fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
            Box::pin(async {})
        }
    }

    /// Regression: the message going out when a session ended used up one of
    /// its attempts each time, and with unlucky timing was given up for the run.
    #[test]
    fn a_message_whose_session_ends_before_it_goes_again_without_using_an_attempt() {
        let (_dir, store) = store_with((0..20).map(|i| format!("r{i}@example.com")));
        let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let t = HangsUp::default();
        let opts = SendOptions {
            max_attempts: 1,
            ..options(2, None)
        };
        let report = single_thread_runtime()
            .unwrap()
            .block_on(deliver_ledger(
                store.clone(),
                date,
                Arc::new(Plain),
                Arc::new(Cloning(t.clone())),
                &opts,
                crate::clock::now(),
            ))
            .unwrap();
        assert_eq!((report.sent, report.pending_left), (20, 0), "{report:?}");
        let mut got = t.delivered.lock().unwrap().clone();
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 20, "each once");
        assert_eq!(t.delivered.lock().unwrap().len(), 20, "nobody twice");
    }
}
