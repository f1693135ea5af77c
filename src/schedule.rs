//! The daily schedule: when an issue is due, catch-up, per-zone delivery. Its job body only calls the pipeline.
//!
//! Two halves. [`Plan`] is pure: given the config, "now" and what is already done,
//! it says what to do ([`Decision`]) and which subscribers are due ([`DueFilter`]).
//! [`Scheduler::run_once`] does it: lease `issue:<date>` in the store (or, on
//! PostgreSQL, join the send of the process that holds it, as `digestif send`
//! does: [`pipeline::take_or_join`]), build (or read) the frozen issue, run one
//! send pass, record the run, release the lease.
//! The cron job ([`Scheduler::start`]) only calls `run_once(clock.now())`.
//!
//! Per-subscriber time zones: the content of a date is frozen once, at the
//! newsletter's send time (the window ends there; nothing is sent before it
//! exists). A subscriber with a `timezone` is due at `send_time` in their own
//! zone, or at the newsletter's send instant if that is later. The service
//! therefore runs *send passes* for one date across the day: each pass sends to
//! the subscribers whose local send instant is ≤ now, and the date is done when
//! the last known zone has been served (or its catch-up window is over).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use futures::future::BoxFuture;

use crate::clock::Clock;
use crate::config::Config;
use crate::deliver::gate::{Gate, ZoneFilter};
use crate::domain::{local_instant, today_in, Subscriber, SubscriberStatus};
use crate::lease::lease_holder;
use crate::metrics::Metrics;
use crate::pipeline::{self, SendError, SendLease, Sent};
use crate::store::{FailedStep, PartialReason, RunRecord, RunStatus, Store};

/// What the scheduler should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The issue of this date is due (on time, in a later zone, or late within catch-up).
    SendNow(NaiveDate),
    /// Nothing to do before this instant.
    Wait(DateTime<Utc>),
    /// The issue of this date was missed beyond `catch_up_hours`: record it as skipped.
    Skip(NaiveDate, String),
}

/// The schedule of the newsletter: pure, every input handed in.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub send_time: NaiveTime,
    pub timezone: Tz,
    pub catch_up: Duration,
    /// Distinct time zones of subscribers who have one (the newsletter's own is implied).
    pub zones: Vec<Tz>,
}

impl Plan {
    pub fn from_config(cfg: &Config) -> Plan {
        Plan {
            send_time: cfg.newsletter.send_time.0,
            timezone: cfg.newsletter.timezone.0,
            catch_up: Duration::hours(cfg.schedule.catch_up_hours as i64),
            zones: Vec::new(),
        }
    }

    pub fn with_zones(mut self, zones: impl IntoIterator<Item = Tz>) -> Plan {
        let set: BTreeSet<String> = zones.into_iter().map(|z| z.name().to_string()).collect();
        self.zones = set.iter().filter_map(|n| n.parse().ok()).collect();
        self
    }

    /// The instant the issue of `date` is frozen and first sent: `send_time` in the
    /// newsletter's zone (DST gaps move forward, repeated hours take the first).
    pub fn send_instant(&self, date: NaiveDate) -> DateTime<Utc> {
        local_instant(date, self.send_time, self.timezone)
    }

    /// When a subscriber in `zone` (None: the newsletter's) is due for `date`.
    pub fn due_at(&self, date: NaiveDate, zone: Option<Tz>) -> DateTime<Utc> {
        let first = self.send_instant(date);
        match zone {
            Some(z) => local_instant(date, self.send_time, z).max(first),
            None => first,
        }
    }

    /// The last instant anyone is due for `date`.
    pub fn last_due(&self, date: NaiveDate) -> DateTime<Utc> {
        self.zones
            .iter()
            .map(|z| self.due_at(date, Some(*z)))
            .fold(self.send_instant(date), DateTime::max)
    }

    /// Until when a pass for `date` may still start: the last zone's instant + catch-up.
    pub fn closes_at(&self, date: NaiveDate) -> DateTime<Utc> {
        self.last_due(date) + self.catch_up
    }

    /// What to do at `now`, when every date up to `last_done` is finished (sent or skipped).
    ///
    /// Dates are looked at oldest first, from the day before yesterday (in the
    /// newsletter's zone) at the earliest: older misses are beyond any sane catch-up.
    pub fn due_issue(&self, now: DateTime<Utc>, last_done: Option<NaiveDate>) -> Decision {
        let today = today_in(now, self.timezone);
        let mut date = match last_done {
            Some(done) => (today - Duration::days(2)).max(done + Duration::days(1)),
            None => today - Duration::days(1),
        };
        loop {
            let opens = self.send_instant(date);
            if now < opens {
                return Decision::Wait(opens);
            }
            let closes = self.closes_at(date);
            if now <= closes {
                return Decision::SendNow(date);
            }
            // A first start (nothing ever done) does not report the days before it.
            if last_done.is_some() {
                return Decision::Skip(
                    date,
                    format!(
                        "the issue of {date} was due at {} and the catch-up window ({} h) closed at {}; \
                         it is not sent late so that nobody gets old news",
                        opens.to_rfc3339(),
                        self.catch_up.num_hours(),
                        closes.to_rfc3339()
                    ),
                );
            }
            date += Duration::days(1);
        }
    }

    /// Which subscribers a pass for `date` at `now` may send to.
    pub fn due_filter(&self, date: NaiveDate, now: DateTime<Utc>) -> DueFilter {
        DueFilter {
            date,
            now,
            plan: self.clone(),
        }
    }
}

/// The subscribers a send pass may reach: those whose local send instant is ≤ now.
#[derive(Debug, Clone, PartialEq)]
pub struct DueFilter {
    pub date: NaiveDate,
    pub now: DateTime<Utc>,
    pub plan: Plan,
}

impl DueFilter {
    pub fn is_due(&self, subscriber: &Subscriber) -> bool {
        self.plan.due_at(self.date, subscriber.timezone) <= self.now
    }

    /// The subscriber zones due at `now` (IANA names), and whether those without
    /// a zone are due (always, once the issue is frozen).
    pub fn due_zones(&self) -> (Vec<String>, bool) {
        let zones = self
            .plan
            .zones
            .iter()
            .filter(|z| self.plan.due_at(self.date, Some(**z)) <= self.now)
            .map(|z| z.name().to_string())
            .collect();
        (zones, self.plan.send_instant(self.date) <= self.now)
    }

    /// What the send loop of this pass may take: the subscribers due now
    /// (a zone filter when the plan follows zones), nothing new once `stop` is set.
    pub fn gate(&self, stop: Arc<std::sync::atomic::AtomicBool>) -> Gate {
        let zones = (!self.plan.zones.is_empty()).then(|| {
            let (zones, with_unzoned) = self.due_zones();
            ZoneFilter {
                date: self.date,
                zones,
                with_unzoned,
            }
        });
        Gate { zones, stop }
    }

    /// The next instant a zone becomes due for this date, if any is still to come.
    pub fn next_zone_due(&self) -> Option<DateTime<Utc>> {
        self.plan
            .zones
            .iter()
            .map(|z| self.plan.due_at(self.date, Some(*z)))
            .filter(|t| *t > self.now)
            .min()
    }

    /// Whether every known zone is due: a pass then serves everyone.
    pub fn everyone(&self) -> bool {
        self.plan.last_due(self.date) <= self.now
    }
}

/// The counts of one send pass, as the scheduler records them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    pub sent: u64,
    pub failed: u64,
    pub retried: u64,
    pub in_doubt: u64,
    /// Subscribers still pending for the date after the pass (due ones only).
    pub pending: u64,
}

/// What a send pass came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    /// The sources were read and hold no story for the date: there is no issue.
    NothingNew,
    /// The issue was sent to the subscribers due.
    Sent(PassReport),
}

/// What the scheduler needs from the pipeline. The binary uses [`LivePipeline`];
/// tests hand in their own to drive the schedule alone.
pub trait IssuePipeline: Send + Sync {
    /// One send pass of the issue of `due.date` as of `due.now` over the
    /// subscribers due, the scheduler holding the issue's lease: the issue
    /// (archived, or built and archived), its check, the ledger-driven send.
    /// An error is a failed run, retried within catch-up.
    fn pass<'a>(&'a self, due: &'a DueFilter) -> BoxFuture<'a, Result<Pass, SendError>>;
    /// The same pass, joining the send of another process that holds the
    /// issue's lease (PostgreSQL: several processes send one issue, each
    /// claiming its own rows), as [`pipeline::take_or_join`] found it.
    fn join<'a>(
        &'a self,
        due: &'a DueFilter,
        _joined: &'a pipeline::Joined,
    ) -> BoxFuture<'a, Result<Pass, SendError>> {
        self.pass(due)
    }
    /// The service is stopping: a pass in flight finishes its messages and takes no new ones.
    fn stop(&self) {}
}

/// The production pipeline: [`pipeline::send`] (the same as `digestif send`),
/// its send loop gated by the pass's [`DueFilter::gate`].
pub struct LivePipeline {
    cfg: Arc<Config>,
    store: Arc<dyn Store>,
    assets: crate::render::Assets,
    secret: crate::config::Secret,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl LivePipeline {
    /// Checks the theme and the transport once, at start.
    pub fn new(
        cfg: Arc<Config>,
        store: Arc<dyn Store>,
        secret: crate::config::Secret,
    ) -> Result<LivePipeline> {
        let assets = pipeline::assets(&cfg)?;
        crate::deliver::transport::from_config(&cfg)?;
        Ok(LivePipeline {
            cfg,
            store,
            assets,
            secret,
            stop: Arc::default(),
        })
    }
}

impl IssuePipeline for LivePipeline {
    fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn pass<'a>(&'a self, due: &'a DueFilter) -> BoxFuture<'a, Result<Pass, SendError>> {
        self.send_pass(due, pipeline::LeaseStep::HeldByCaller)
    }

    fn join<'a>(
        &'a self,
        due: &'a DueFilter,
        joined: &'a pipeline::Joined,
    ) -> BoxFuture<'a, Result<Pass, SendError>> {
        self.send_pass(due, pipeline::LeaseStep::JoinedByCaller(joined.clone()))
    }
}

impl LivePipeline {
    fn send_pass<'a>(
        &'a self,
        due: &'a DueFilter,
        lease: pipeline::LeaseStep,
    ) -> BoxFuture<'a, Result<Pass, SendError>> {
        let store = self.store.clone();
        let gate = due.gate(self.stop.clone());
        let (cfg, assets, secret) = (self.cfg.clone(), self.assets.clone(), self.secret.clone());
        let (date, now) = (due.date, due.now);
        Box::pin(async move {
            // The pass runs on its own thread with a single-threaded runtime, as
            // `digestif send` does: one thread drives the connections and the
            // ledger with no hand-off per message, and the HTTP side keeps its own.
            let sent = tokio::task::spawn_blocking(move || {
                let sender = pipeline::Sender {
                    cfg: &cfg,
                    assets: &assets,
                    secret,
                    store: Some(store.clone()),
                };
                let delivery = pipeline::Delivery::Ledger {
                    store,
                    limit: None,
                    lease,
                    gate,
                };
                crate::deliver::send::single_thread_runtime()
                    .map_err(SendError::Deliver)?
                    .block_on(pipeline::send(
                        sender,
                        date,
                        now,
                        pipeline::Lint::Enforce,
                        delivery,
                    ))
            })
            .await
            .map_err(|e| SendError::Deliver(anyhow::anyhow!("the send pass panicked: {e}")))??;
            let report = match sent {
                Sent::Ledger { report, .. } => report,
                Sent::NothingNew => return Ok(Pass::NothingNew),
                Sent::DryRun { .. } | Sent::TestCopy { .. } => {
                    unreachable!("a ledger delivery reports a ledger pass")
                }
            };
            tracing::info!(%date, report = %report.summary(), "send pass");
            for (addr, err) in &report.failures {
                tracing::warn!(%addr, error = %err, "delivery failed");
            }
            Ok(Pass::Sent(PassReport {
                sent: report.sent,
                failed: report.failed,
                retried: report.retried,
                in_doubt: report.in_doubt.len() as u64,
                pending: report.pending_left,
            }))
        })
    }
}

/// What one `run_once` did.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// Nothing due; next look at this instant.
    Idle(DateTime<Utc>),
    /// Another process holds the lease of this date.
    Busy(NaiveDate),
    /// A pass ran (or the date was skipped); the record was stored.
    Ran(RunRecord),
}

/// Runs the schedule: one `run_once` at a time in this process, one holder of
/// `issue:<date>` across processes.
pub struct Scheduler {
    cfg: Arc<Config>,
    store: Arc<dyn Store>,
    pipeline: Arc<dyn IssuePipeline>,
    metrics: Arc<Metrics>,
    holder: String,
    busy: tokio::sync::Mutex<()>,
    stopping: std::sync::atomic::AtomicBool,
    zones: Mutex<Option<(DateTime<Utc>, Vec<Tz>)>>,
}

impl Scheduler {
    pub fn new(
        cfg: Arc<Config>,
        store: Arc<dyn Store>,
        pipeline: Arc<dyn IssuePipeline>,
        metrics: Arc<Metrics>,
    ) -> Scheduler {
        let holder = lease_holder("serve");
        Scheduler {
            cfg,
            store,
            pipeline,
            metrics,
            holder,
            busy: tokio::sync::Mutex::new(()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            zones: Mutex::new(None),
        }
    }

    /// No new run starts after this (a run in flight goes on).
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.pipeline.stop();
    }

    /// Waits up to `limit` for a run in flight to finish; false if it did not.
    pub async fn drain(&self, limit: StdDuration) -> bool {
        tokio::time::timeout(limit, self.busy.lock()).await.is_ok()
    }

    /// The name this process uses in leases.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Distinct subscriber time zones, re-read at most every 10 minutes.
    async fn zones(&self, now: DateTime<Utc>) -> Result<Vec<Tz>> {
        if let Some((at, z)) = self.zones.lock().expect("zones lock").as_ref() {
            if now - *at < Duration::minutes(10) && now >= *at {
                return Ok(z.clone());
            }
        }
        let store = self.store.clone();
        let zones = tokio::task::spawn_blocking(move || -> Result<Vec<Tz>> {
            let mut set = BTreeSet::new();
            let mut after = 0;
            loop {
                let page = store.subscribers_page(Some(SubscriberStatus::Active), after, 5000)?;
                let Some(last) = page.last() else { break };
                after = last.id;
                set.extend(page.iter().filter_map(|s| s.timezone.map(|z| z.name())));
            }
            Ok(set.into_iter().filter_map(|n| n.parse().ok()).collect())
        })
        .await
        .context("zone scan panicked")??;
        *self.zones.lock().expect("zones lock") = Some((now, zones.clone()));
        Ok(zones)
    }

    /// The latest date whose runs are finished (ok or skipped); a date whose last
    /// run was partial or failed is still open.
    async fn last_run(&self) -> Result<Option<RunRecord>> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.last_run())
            .await
            .context("store task panicked")?
            .map_err(Into::into)
    }

    async fn last_done(&self) -> Result<Option<NaiveDate>> {
        Ok(self.last_run().await?.as_ref().map(done_through))
    }

    /// One look at the schedule at `now`: does what is due, if anything.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<RunOutcome> {
        let Ok(_guard) = self.busy.try_lock() else {
            return Ok(RunOutcome::Idle(now));
        };
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(RunOutcome::Idle(now));
        }
        let plan = Plan::from_config(&self.cfg).with_zones(self.zones(now).await?);
        let last = self.last_run().await?;
        let decision = plan.due_issue(now, last.as_ref().map(done_through));
        let (date, skip) = match decision {
            Decision::Wait(until) => return Ok(RunOutcome::Idle(until)),
            Decision::SendNow(d) => (d, None),
            Decision::Skip(d, why) => (d, Some(why)),
        };
        if let (Some(r), None) = (&last, &skip) {
            let retry_after = Duration::seconds(self.cfg.schedule.retry_seconds as i64);
            if let Some(next) = next_pass(&plan, r, date, retry_after) {
                if now < next {
                    return Ok(RunOutcome::Idle(next));
                }
            }
        }
        let (cfg, store, holder) = (self.cfg.clone(), self.store.clone(), self.holder.clone());
        // Held until the run is recorded: no other process starts the date
        // meanwhile. Found held on PostgreSQL, the pass joins that send, as
        // `digestif send` does.
        let taken = tokio::task::spawn_blocking(move || {
            pipeline::take_or_join(&cfg, store, date, holder, now)
        })
        .await
        .context("store task panicked")?;
        let lease = match taken {
            Ok(lease) => lease,
            Err(SendError::Busy(_)) => return Ok(RunOutcome::Busy(date)),
            Err(e) => return Err(e.into()),
        };
        let joined = match &lease {
            SendLease::Held(_) => None,
            // A date to skip is left to the process that holds it.
            SendLease::Joined(_) if skip.is_some() => return Ok(RunOutcome::Busy(date)),
            SendLease::Joined(joined) => Some(joined),
        };
        let result = self.run_leased(&plan, date, now, skip, joined).await;
        let record = match result {
            Ok(Some(record)) => {
                let (store, to_store) = (self.store.clone(), record.clone());
                tokio::task::spawn_blocking(move || store.record_run(&to_store))
                    .await
                    .context("store task panicked")?
                    .map(|()| Some(record))
                    .map_err(anyhow::Error::from)
            }
            other => other,
        };
        // Dropping the guard stops its renewal thread and releases the lease (store I/O).
        let _ = tokio::task::spawn_blocking(move || drop(lease)).await;
        let Some(record) = record? else {
            return Ok(RunOutcome::Idle(now));
        };
        self.metrics.observe_run(&record);
        tracing::info!(
            date = %record.date,
            status = %record.status,
            sent = record.sent,
            failed = record.failed,
            retried = record.retried,
            in_doubt = record.in_doubt,
            message = %record.message,
            "run finished"
        );
        Ok(RunOutcome::Ran(record))
    }

    /// The run of `date`, the lease held: the skip or the send pass, as the
    /// record to store; `None` when another process finished the date meanwhile.
    async fn run_leased(
        &self,
        plan: &Plan,
        date: NaiveDate,
        now: DateTime<Utc>,
        skip: Option<String>,
        joined: Option<&pipeline::Joined>,
    ) -> Result<Option<RunRecord>> {
        // Another process may have finished the date while we waited for the lease.
        if self.last_done().await?.is_some_and(|d| d >= date) {
            return Ok(None);
        }
        if let Some(why) = skip {
            tracing::warn!(%date, reason = %why, "issue skipped");
            return Ok(Some(self.record(
                date,
                now,
                now,
                RunStatus::Skipped,
                PassReport::default(),
                why,
            )));
        }
        let mut record = self.send_pass(plan, date, now, joined).await;
        if let Some(pipeline::Joined { holder, .. }) = joined {
            self.metrics.run_joined();
            let joined = format!("joined the send of {holder}");
            record.message = match record.message.as_str() {
                "" => joined,
                why => format!("{joined}; {why}"),
            };
        }
        Ok(Some(record))
    }

    /// One send pass over the subscribers due; `joined`: the send of the
    /// holder of the issue's lease that this pass joins (PostgreSQL).
    async fn send_pass(
        &self,
        plan: &Plan,
        date: NaiveDate,
        now: DateTime<Utc>,
        joined: Option<&pipeline::Joined>,
    ) -> RunRecord {
        let started = std::time::Instant::now();
        let due = plan.due_filter(date, now);
        let pass = match joined {
            None => self.pipeline.pass(&due).await,
            Some(joined) => self.pipeline.join(&due, joined).await,
        };
        let report = match pass {
            Ok(Pass::Sent(report)) => report,
            Ok(Pass::NothingNew) => {
                return self.record(
                    date,
                    now,
                    now,
                    RunStatus::Skipped,
                    PassReport::default(),
                    "nothing new for this date: the sources were read and no story is in \
                     the issue's window, so there is no issue to send"
                        .into(),
                )
            }
            Err(e) => {
                let step = match e {
                    SendError::Build(_) => FailedStep::Build,
                    SendError::Lint { .. } => FailedStep::Lint,
                    SendError::Setup(_) | SendError::Busy(_) | SendError::Deliver(_) => {
                        FailedStep::Send
                    }
                };
                let what = match step {
                    FailedStep::Build => "the issue could not be built; retried within catch-up",
                    FailedStep::Lint => {
                        "the issue breaks sending rules: nothing sent; retried within catch-up"
                    }
                    FailedStep::Send => "the send pass failed; retried within catch-up",
                };
                tracing::error!(%date, error = %format!("{e:#}"), "{what}");
                let finished = now + Duration::from_std(started.elapsed()).unwrap_or_default();
                return self.record(
                    date,
                    now,
                    finished,
                    RunStatus::Failed(step),
                    PassReport::default(),
                    format!("{e:#}"),
                );
            }
        };
        self.metrics.issue_built(date);
        let finished = now + Duration::from_std(started.elapsed()).unwrap_or_default();
        let stopped = self.stopping.load(std::sync::atomic::Ordering::SeqCst);
        let (status, message) = if stopped && report.pending > 0 {
            (
                RunStatus::Partial(PartialReason::Stopped),
                format!(
                    "stopped by a shutdown; {} left pending for the next start",
                    report.pending
                ),
            )
        } else if report.pending > 0 || report.in_doubt > 0 {
            (
                RunStatus::Partial(PartialReason::Pending),
                format!("{} left pending; retried within catch-up", report.pending),
            )
        } else if !due.everyone() {
            (
                RunStatus::Partial(PartialReason::WaitingZones),
                format!(
                    "sent to the zones due so far; last zone due at {}",
                    plan.last_due(date).to_rfc3339()
                ),
            )
        } else {
            (RunStatus::Ok, String::new())
        };
        self.record(date, now, finished, status, report, message)
    }

    fn record(
        &self,
        date: NaiveDate,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        status: RunStatus,
        r: PassReport,
        message: String,
    ) -> RunRecord {
        RunRecord {
            date,
            started_at,
            finished_at,
            status,
            sent: r.sent,
            failed: r.failed,
            retried: r.retried,
            in_doubt: r.in_doubt,
            message,
        }
    }

    /// Starts the cron job: every `[schedule] tick_seconds` it calls `run_once(clock.now())`.
    pub async fn start(
        self: Arc<Self>,
        clock: Arc<dyn Clock>,
    ) -> Result<tokio_cron_scheduler::JobScheduler> {
        use tokio_cron_scheduler::{Job, JobScheduler};
        let sched = JobScheduler::new()
            .await
            .context("cannot start the scheduler")?;
        let expr = format!("*/{} * * * * *", self.cfg.schedule.tick_seconds);
        let job = Job::new_async(expr.as_str(), move |_id, _l| {
            let me = self.clone();
            let clock = clock.clone();
            Box::pin(async move {
                match me.run_once(clock.now()).await {
                    Ok(RunOutcome::Idle(next)) => {
                        tracing::debug!(next = %next.to_rfc3339(), "schedule looked at: nothing due")
                    }
                    Ok(RunOutcome::Busy(date)) => tracing::debug!(
                        %date,
                        "schedule looked at: another process is sending this issue"
                    ),
                    Ok(RunOutcome::Ran(_)) => {}
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "scheduled run failed"),
                }
            })
        })
        .context("bad cron expression")?;
        sched.add(job).await.context("cannot add the daily job")?;
        sched.start().await.context("cannot start the scheduler")?;
        Ok(sched)
    }
}

/// Every date up to the returned one is finished (sent or skipped).
fn done_through(r: &RunRecord) -> NaiveDate {
    if r.status.finishes_the_date() {
        r.date
    } else {
        r.date - Duration::days(1)
    }
}

/// When the next pass for `date` may start, given the last run: after a failure
/// or pending messages, `retry_after` later; after a pass that served the zones
/// due, when the next zone is due.
fn next_pass(
    plan: &Plan,
    last: &RunRecord,
    date: NaiveDate,
    retry_after: Duration,
) -> Option<DateTime<Utc>> {
    if last.date != date {
        return None;
    }
    match last.status {
        // Nothing failed: the next process goes on at once.
        RunStatus::Partial(PartialReason::Stopped) => None,
        RunStatus::Partial(PartialReason::WaitingZones) => {
            plan.due_filter(date, last.started_at).next_zone_due()
        }
        RunStatus::Partial(PartialReason::Pending) | RunStatus::Failed(_) => {
            Some(last.finished_at + retry_after)
        }
        RunStatus::Ok | RunStatus::Skipped => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono_tz::{America, Asia, Europe};

    fn plan(time: &str) -> Plan {
        Plan {
            send_time: NaiveTime::parse_from_str(time, "%H:%M").unwrap(),
            timezone: Europe::Paris,
            catch_up: Duration::hours(3),
            zones: vec![],
        }
    }
    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }
    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    /// Steps a clock minute by minute over [from, to) and collects the dates sent,
    /// marking each as done like the scheduler does.
    fn simulate(
        p: &Plan,
        from: &str,
        to: &str,
        mut done: Option<NaiveDate>,
    ) -> Vec<(NaiveDate, DateTime<Utc>)> {
        let mut sent = vec![];
        let mut t = utc(from);
        while t < utc(to) {
            match p.due_issue(t, done) {
                Decision::SendNow(date) => {
                    sent.push((date, t));
                    done = Some(date);
                }
                Decision::Skip(date, _) => done = Some(date),
                Decision::Wait(_) => {}
            }
            t += Duration::minutes(1);
        }
        sent
    }

    #[test]
    fn an_ordinary_day_sends_once_at_send_time() {
        let p = plan("07:00");
        let sent = simulate(
            &p,
            "2026-11-26T12:00:00Z",
            "2026-11-28T12:00:00Z",
            Some(d("2026-11-26")),
        );
        assert_eq!(
            sent,
            vec![
                (d("2026-11-27"), utc("2026-11-27T06:00:00Z")),
                (d("2026-11-28"), utc("2026-11-28T06:00:00Z"))
            ]
        );
    }

    #[test]
    fn spring_forward_day_sends_one_issue_on_time() {
        // 2026-03-29: Paris jumps from 02:00 to 03:00 (UTC+1 → UTC+2).
        let p = plan("07:00");
        let sent = simulate(
            &p,
            "2026-03-28T12:00:00Z",
            "2026-03-30T00:00:00Z",
            Some(d("2026-03-28")),
        );
        assert_eq!(sent, vec![(d("2026-03-29"), utc("2026-03-29T05:00:00Z"))]);
    }

    #[test]
    fn send_time_inside_the_spring_gap_sends_once_at_the_first_valid_minute() {
        let p = plan("02:30");
        let sent = simulate(
            &p,
            "2026-03-28T12:00:00Z",
            "2026-03-30T00:00:00Z",
            Some(d("2026-03-28")),
        );
        // 02:30 does not exist; 03:00 CEST = 01:00 UTC is the first instant after it.
        assert_eq!(sent, vec![(d("2026-03-29"), utc("2026-03-29T01:00:00Z"))]);
    }

    #[test]
    fn fall_back_day_sends_one_issue_on_time() {
        // 2026-10-25: Paris goes back from 03:00 to 02:00 (UTC+2 → UTC+1).
        let p = plan("07:00");
        let sent = simulate(
            &p,
            "2026-10-24T12:00:00Z",
            "2026-10-26T00:00:00Z",
            Some(d("2026-10-24")),
        );
        assert_eq!(sent, vec![(d("2026-10-25"), utc("2026-10-25T06:00:00Z"))]);
    }

    #[test]
    fn send_time_inside_the_repeated_hour_sends_once_at_its_first_occurrence() {
        let p = plan("02:30");
        let sent = simulate(
            &p,
            "2026-10-24T12:00:00Z",
            "2026-10-26T00:00:00Z",
            Some(d("2026-10-24")),
        );
        // 02:30 happens twice: 00:30 UTC (CEST) and 01:30 UTC (CET). Only the first sends.
        assert_eq!(sent, vec![(d("2026-10-25"), utc("2026-10-25T00:30:00Z"))]);
        // And at the second occurrence, with the date done, nothing is due.
        assert_eq!(
            p.due_issue(utc("2026-10-25T01:30:00Z"), Some(d("2026-10-25"))),
            Decision::Wait(utc("2026-10-26T01:30:00Z"))
        );
    }

    #[test]
    fn a_service_back_within_catch_up_sends_late() {
        let p = plan("07:00");
        // Down from 05:00 to 08:30 Paris (06:00 UTC send missed), back at 07:30 UTC.
        assert_eq!(
            p.due_issue(utc("2026-11-27T07:30:00Z"), Some(d("2026-11-26"))),
            Decision::SendNow(d("2026-11-27"))
        );
        // Exactly at the end of the window it still sends.
        assert_eq!(
            p.due_issue(utc("2026-11-27T09:00:00Z"), Some(d("2026-11-26"))),
            Decision::SendNow(d("2026-11-27"))
        );
    }

    #[test]
    fn a_service_back_after_catch_up_skips_and_says_why() {
        let p = plan("07:00");
        match p.due_issue(utc("2026-11-27T09:01:00Z"), Some(d("2026-11-26"))) {
            Decision::Skip(date, why) => {
                assert_eq!(date, d("2026-11-27"));
                assert!(why.contains("catch-up window (3 h)"), "{why}");
            }
            other => panic!("expected a skip, got {other:?}"),
        }
        // Once skipped, the next issue is awaited.
        assert_eq!(
            p.due_issue(utc("2026-11-27T09:01:00Z"), Some(d("2026-11-27"))),
            Decision::Wait(utc("2026-11-28T06:00:00Z"))
        );
    }

    #[test]
    fn a_long_outage_skips_the_missed_days_then_waits() {
        let p = plan("07:00");
        let sent = simulate(
            &p,
            "2026-11-27T18:00:00Z",
            "2026-11-28T07:00:00Z",
            Some(d("2026-11-20")),
        );
        assert_eq!(sent, vec![(d("2026-11-28"), utc("2026-11-28T06:00:00Z"))]);
    }

    #[test]
    fn a_first_start_in_the_evening_waits_for_tomorrow() {
        let p = plan("07:00");
        assert_eq!(
            p.due_issue(utc("2026-11-27T19:00:00Z"), None),
            Decision::Wait(utc("2026-11-28T06:00:00Z"))
        );
    }

    #[test]
    fn a_subscriber_in_a_later_zone_is_due_at_their_own_send_time() {
        let p = plan("07:00").with_zones([America::New_York]);
        let date = d("2026-11-27");
        let ny = Subscriber {
            id: 1,
            link_key: Default::default(),
            email: crate::domain::SubscriberEmail::parse("a@example.com").unwrap(),
            name: None,
            locale: None,
            categories: vec![],
            timezone: Some(America::New_York),
            status: SubscriberStatus::Active,
        };
        let paris = Subscriber {
            timezone: None,
            id: 2,
            ..ny.clone()
        };
        let at_paris_time = p.due_filter(date, utc("2026-11-27T06:00:00Z"));
        assert!(at_paris_time.is_due(&paris));
        assert!(!at_paris_time.is_due(&ny));
        assert!(!at_paris_time.everyone());
        let at_ny_time = p.due_filter(date, utc("2026-11-27T12:00:00Z"));
        assert!(at_ny_time.is_due(&ny));
        assert!(at_ny_time.everyone());
        // The date stays open until New York's 07:00 + catch-up.
        assert_eq!(p.closes_at(date), utc("2026-11-27T15:00:00Z"));
        assert_eq!(
            p.due_issue(utc("2026-11-27T11:00:00Z"), None),
            Decision::SendNow(date)
        );
    }

    #[test]
    fn a_subscriber_in_an_earlier_zone_gets_the_issue_when_it_is_frozen() {
        let p = plan("07:00").with_zones([Asia::Tokyo]);
        let date = d("2026-11-27");
        // 07:00 in Tokyo is 22:00 UTC the day before: the issue does not exist yet.
        assert_eq!(p.due_at(date, Some(Asia::Tokyo)), p.send_instant(date));
        assert_eq!(
            p.last_due(date),
            Europe::Paris
                .with_ymd_and_hms(2026, 11, 27, 7, 0, 0)
                .unwrap()
                .with_timezone(&Utc)
        );
    }
}
