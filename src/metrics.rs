//! The service's counters and gauges (runs, messages, sign-ups, returned mail),
//! counted by the scheduler and the HTTP side, shown by `GET /metrics` in
//! Prometheus' text format.
//!
//! A handful of atomics is all the service needs; a metrics crate would add a
//! global registry and more dependencies for the same output.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::NaiveDate;

use crate::bounces::webhook::Provider;
use crate::bounces::EventKind;
use crate::domain::SubscriberStatus;
use crate::store::{FailedStep, RunRecord, RunStatus};

/// Counters since the process started, and gauges of the last run.
#[derive(Debug, Default)]
pub struct Metrics {
    issues_built: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    in_doubt: AtomicU64,
    runs_ok: AtomicU64,
    runs_partial: AtomicU64,
    runs_failed: AtomicU64,
    runs_skipped: AtomicU64,
    /// Runs that joined the send of another process (PostgreSQL).
    runs_joined: AtomicU64,
    build_failures: AtomicU64,
    last_run_ts: AtomicI64,
    last_run_ms: AtomicI64,
    signups: AtomicU64,
    confirmations: AtomicU64,
    unsubscribes: AtomicU64,
    /// Webhook requests refused (bad signature or credentials): SES, Postmark.
    webhooks_refused: [AtomicU64; 2],
    last_built: Mutex<Option<NaiveDate>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// An issue was built or read for a send pass (counted once per date per process).
    pub fn issue_built(&self, date: NaiveDate) {
        let mut last = self.last_built.lock().expect("metrics lock");
        if *last != Some(date) {
            *last = Some(date);
            self.issues_built.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn observe_run(&self, r: &RunRecord) {
        self.sent.fetch_add(r.sent, Ordering::Relaxed);
        self.failed.fetch_add(r.failed, Ordering::Relaxed);
        self.retried.fetch_add(r.retried, Ordering::Relaxed);
        self.in_doubt.fetch_add(r.in_doubt, Ordering::Relaxed);
        let c = match r.status {
            RunStatus::Ok => &self.runs_ok,
            RunStatus::Partial(_) => &self.runs_partial,
            RunStatus::Skipped => &self.runs_skipped,
            RunStatus::Failed(_) => &self.runs_failed,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if r.status == RunStatus::Failed(FailedStep::Build) {
            self.build_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.last_run_ts
            .store(r.finished_at.timestamp(), Ordering::Relaxed);
        self.last_run_ms.store(
            (r.finished_at - r.started_at).num_milliseconds(),
            Ordering::Relaxed,
        );
    }

    /// A run joined the send of another process that held the issue's lease.
    pub fn run_joined(&self) {
        self.runs_joined.fetch_add(1, Ordering::Relaxed);
    }

    pub fn signup(&self) {
        self.signups.fetch_add(1, Ordering::Relaxed);
    }
    pub fn confirmation(&self) {
        self.confirmations.fetch_add(1, Ordering::Relaxed);
    }
    pub fn unsubscribe(&self) {
        self.unsubscribes.fetch_add(1, Ordering::Relaxed);
    }
    /// A relay's report refused: forged, or the relay's setup no longer matches ours.
    pub fn webhook_refused(&self, provider: Provider) {
        self.webhooks_refused[provider as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text; `subscribers` comes from the store at scrape time.
    pub fn render(
        &self,
        subscribers: &[(SubscriberStatus, u64)],
        last: Option<&RunRecord>,
    ) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            "digestif_issues_built_total",
            "Issues built or loaded for sending.",
            g(&self.issues_built),
        );
        counter(
            "digestif_issue_build_failures_total",
            "Runs that could not build the issue (no source could be read, or the build errored).",
            g(&self.build_failures),
        );
        counter(
            "digestif_messages_sent_total",
            "Messages accepted by the mail server.",
            g(&self.sent),
        );
        counter(
            "digestif_messages_failed_total",
            "Messages that failed permanently.",
            g(&self.failed),
        );
        counter(
            "digestif_messages_retried_total",
            "Transient failures retried.",
            g(&self.retried),
        );
        counter(
            "digestif_messages_in_doubt_total",
            "Messages in flight when a previous process died.",
            g(&self.in_doubt),
        );
        counter(
            "digestif_signups_total",
            "Sign-up requests accepted.",
            g(&self.signups),
        );
        counter(
            "digestif_confirmations_total",
            "Sign-ups confirmed.",
            g(&self.confirmations),
        );
        counter(
            "digestif_unsubscribes_total",
            "Unsubscribe requests honoured.",
            g(&self.unsubscribes),
        );
        let _ = writeln!(
            out,
            "# HELP digestif_webhook_refused_total Relay reports refused (signature or credentials).\n\
             # TYPE digestif_webhook_refused_total counter"
        );
        for p in [Provider::Ses, Provider::Postmark] {
            let _ = writeln!(
                out,
                "digestif_webhook_refused_total{{provider=\"{}\"}} {}",
                p.as_str(),
                g(&self.webhooks_refused[p as usize])
            );
        }
        let _ = writeln!(out, "# HELP digestif_runs_total Scheduled runs by status.\n# TYPE digestif_runs_total counter");
        for (status, a) in [
            ("ok", &self.runs_ok),
            ("partial", &self.runs_partial),
            ("failed", &self.runs_failed),
            ("skipped", &self.runs_skipped),
        ] {
            let _ = writeln!(out, "digestif_runs_total{{status=\"{status}\"}} {}", g(a));
        }
        let _ = writeln!(
            out,
            "# HELP digestif_runs_joined_total Scheduled runs that joined the send of another process.\n\
             # TYPE digestif_runs_joined_total counter\n\
             digestif_runs_joined_total {}",
            g(&self.runs_joined)
        );
        // The last run may come from another process on the same database: prefer the store's.
        let (ts, ms) = match last {
            Some(r) => (
                r.finished_at.timestamp(),
                (r.finished_at - r.started_at).num_milliseconds(),
            ),
            None => (
                self.last_run_ts.load(Ordering::Relaxed),
                self.last_run_ms.load(Ordering::Relaxed),
            ),
        };
        let _ = writeln!(
            out,
            "# HELP digestif_last_run_timestamp_seconds End of the last run (Unix time).\n# TYPE digestif_last_run_timestamp_seconds gauge\ndigestif_last_run_timestamp_seconds {ts}"
        );
        let _ = writeln!(
            out,
            "# HELP digestif_last_run_duration_seconds Duration of the last run.\n# TYPE digestif_last_run_duration_seconds gauge\ndigestif_last_run_duration_seconds {:.3}",
            ms as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "# HELP digestif_subscribers Subscribers by status.\n# TYPE digestif_subscribers gauge"
        );
        for st in [
            SubscriberStatus::Pending,
            SubscriberStatus::Active,
            SubscriberStatus::Unsubscribed,
            SubscriberStatus::Bounced,
        ] {
            let n = subscribers
                .iter()
                .find(|(s, _)| *s == st)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            let _ = writeln!(out, "digestif_subscribers{{status=\"{st}\"}} {n}");
        }
        out
    }
}

/// Returned mail kept in the store, by kind (every kind listed, 0 included).
pub fn bounce_lines(totals: &[(EventKind, u64)]) -> String {
    let mut out = String::from(
        "# HELP digestif_bounce_events_total Returned mail kept: bounces, complaints, delays.\n\
         # TYPE digestif_bounce_events_total counter\n",
    );
    for kind in [
        EventKind::HardBounce,
        EventKind::SoftBounce,
        EventKind::Complaint,
        EventKind::Delayed,
        EventKind::Delivered,
    ] {
        let n = totals
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "digestif_bounce_events_total{{kind=\"{kind}\"}} {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn a_run_shows_up_in_the_exposition_text() {
        let m = Metrics::new();
        let r = RunRecord {
            date: NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
            started_at: Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap(),
            finished_at: Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 2).unwrap(),
            status: RunStatus::Ok,
            sent: 40,
            failed: 1,
            retried: 3,
            in_doubt: 0,
            message: String::new(),
        };
        m.issue_built(r.date);
        m.issue_built(r.date);
        m.observe_run(&r);
        let text = m.render(&[(SubscriberStatus::Active, 41)], None);
        assert!(text.contains("digestif_issues_built_total 1\n"), "{text}");
        assert!(text.contains("digestif_messages_sent_total 40\n"), "{text}");
        assert!(
            text.contains("digestif_messages_failed_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("digestif_runs_total{status=\"ok\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("digestif_issue_build_failures_total 0\n"),
            "{text}"
        );
        m.observe_run(&RunRecord {
            status: RunStatus::Failed(FailedStep::Build),
            ..r.clone()
        });
        let text = m.render(&[(SubscriberStatus::Active, 41)], None);
        assert!(
            text.contains("digestif_issue_build_failures_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("digestif_runs_total{status=\"failed\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("digestif_last_run_duration_seconds 2.000\n"),
            "{text}"
        );
        assert!(
            text.contains("digestif_subscribers{status=\"active\"} 41\n"),
            "{text}"
        );
        assert!(
            text.contains("digestif_subscribers{status=\"bounced\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn bounce_events_are_counted_by_kind() {
        let text = bounce_lines(&[(EventKind::HardBounce, 2), (EventKind::Complaint, 1)]);
        assert!(
            text.contains("digestif_bounce_events_total{kind=\"hard_bounce\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("digestif_bounce_events_total{kind=\"complaint\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("digestif_bounce_events_total{kind=\"soft_bounce\"} 0\n"),
            "{text}"
        );
    }
}
