//! The sending side of the send loop: one worker per connection. A worker asks
//! the ledger task for a row, stages its message, has the row marked `sending`,
//! and ends the message together with the next one's envelope (one round trip
//! a message where the server pipelines).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Delivery, DeliveryOutcome};

use super::compose::Compose;
use super::rate::RateLimiter;
use super::transport::{Connection, SendError, Transport};

/// One row handed to a worker, with what this run already did to it.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub(super) delivery: Delivery,
    /// Its ledger row is in `sending` already (taken over from a run that died).
    pub(super) marked: bool,
    /// Transient failures so far in this run.
    pub(super) attempts: u32,
}

impl Job {
    pub(super) fn id(&self) -> i64 {
        self.delivery.subscriber.id
    }
}

/// A worker's report on one job.
pub(super) struct Done {
    pub(super) id: i64,
    pub(super) email: String,
    /// What to record in the ledger; None: nothing (the row was never marked
    /// `sending`, or the ledger refused it).
    pub(super) outcome: Option<DeliveryOutcome>,
    /// It needed at least one retry in this run.
    pub(super) retried: bool,
    /// A transient failure: hand it out again after a backoff.
    pub(super) again: Option<Job>,
    /// The whole run must stop (the sender or the login was refused).
    pub(super) fatal: Option<String>,
}

/// What a worker gets when it asks for work.
pub(super) enum Work {
    Job(Job),
    /// Nothing right now: end the held message (if any) and ask again.
    Idle,
    /// Nothing more in this run.
    Stop,
}

/// What workers tell the ledger task, in the order they happen.
pub(super) enum Event {
    /// Give me a row. `holding`: the worker has a message staged that waits for
    /// the next one (so it must not be kept waiting).
    Want {
        holding: bool,
        reply: oneshot::Sender<Work>,
    },
    /// A message is staged on its connection: may its row go to `sending`?
    Mark(i64, oneshot::Sender<bool>),
    Done(Box<Done>),
    /// A worker ended.
    Exit,
}

pub(super) struct Shared {
    pub(super) composer: Arc<dyn Compose>,
    pub(super) transport: Arc<dyn Transport>,
    pub(super) rate: RateLimiter,
    pub(super) max_attempts: u32,
}

/// Asks the ledger task to move row `id` to `sending`; false if it refused.
pub(super) async fn mark(events: &mpsc::UnboundedSender<Event>, id: i64) -> bool {
    let (tx, rx) = oneshot::channel();
    if events.send(Event::Mark(id, tx)).is_err() {
        return false;
    }
    rx.await.unwrap_or(false)
}

pub(super) async fn want(events: &mpsc::UnboundedSender<Event>, holding: bool) -> Work {
    let (reply, rx) = oneshot::channel();
    if events.send(Event::Want { holding, reply }).is_err() {
        return Work::Stop;
    }
    rx.await.unwrap_or(Work::Stop)
}

/// A message staged on the worker's connection, its row marked `sending`: its
/// end goes out with the next message's envelope (or alone).
pub(super) struct Held {
    pub(super) job: Job,
    pub(super) retried: bool,
    pub(super) message_id: String,
}

/// One connection's worth of sending: asks the ledger task for rows, stages
/// each message, has its row marked, and ends it together with the next one's
/// envelope. At most one row of a worker is ever in `sending` unrecorded: the
/// outcome of a message is reported before the next row is marked.
pub(super) struct Worker {
    pub(super) shared: Arc<Shared>,
    pub(super) events: mpsc::UnboundedSender<Event>,
    pub(super) conn: Option<Box<dyn Connection>>,
    pub(super) held: Option<Held>,
    /// Messages the current connection delivered: when it then ends, the
    /// session ended, not the message that was going out on it.
    pub(super) delivered_here: u32,
}

impl Worker {
    pub(super) async fn run(mut self) {
        loop {
            let job = match want(&self.events, self.held.is_some()).await {
                Work::Job(job) => job,
                Work::Idle => {
                    self.end_held().await;
                    continue;
                }
                Work::Stop => break,
            };
            self.deliver(job).await;
        }
        self.end_held().await;
        if let Some(c) = self.conn.take() {
            c.close().await;
        }
        let _ = self.events.send(Event::Exit);
    }

    fn report(&self, done: Done) {
        let _ = self.events.send(Event::Done(Box::new(done)));
    }

    /// The outcome of the held message, from the reply to its end.
    fn report_end(&self, held: Held, ended: Result<(), SendError>) {
        let Held {
            job,
            retried,
            message_id,
        } = held;
        match ended {
            Ok(()) => self.report(Done {
                id: job.id(),
                email: job.delivery.subscriber.email.to_string(),
                outcome: Some(DeliveryOutcome::Sent { message_id }),
                retried,
                again: None,
                fatal: None,
            }),
            Err(e) => {
                let done = self.failure(job, retried, e);
                self.report(done);
            }
        }
    }

    /// Ends the held message alone.
    async fn end_held(&mut self) {
        let Some(held) = self.held.take() else { return };
        let ended = match self.conn.as_mut() {
            Some(c) => c.finish().await,
            None => Err(SendError::transient("connection lost")),
        };
        self.delivered_here += u32::from(ended.is_ok());
        self.drop_if_broken().await;
        self.report_end(held, ended);
    }

    async fn drop_if_broken(&mut self) {
        if self.conn.as_ref().is_some_and(|c| c.is_broken()) {
            if let Some(c) = self.conn.take() {
                c.close().await;
            }
        }
    }

    /// What to report for `job` after `err`; the row is marked or not (`job.marked`).
    fn failure(&self, mut job: Job, retried: bool, err: SendError) -> Done {
        let id = job.id();
        let email = job.delivery.subscriber.email.to_string();
        let base = |outcome: Option<DeliveryOutcome>| Done {
            id,
            email: email.clone(),
            outcome,
            retried,
            again: None,
            fatal: None,
        };
        // A marked row gets its outcome recorded; an unmarked one needs nothing
        // (still pending) unless it fails for good, see `settle`.
        let recorded = |outcome: DeliveryOutcome| job.marked.then_some(outcome);
        if err.is_fatal() {
            let outcome = recorded(DeliveryOutcome::Retry {
                error: err.message.clone(),
            });
            return Done {
                fatal: Some(err.message),
                ..base(outcome)
            };
        }
        if err.is_transient() {
            job.attempts += 1;
            if job.attempts < self.shared.max_attempts {
                tracing::info!(to = %email, error = %err, attempt = job.attempts, "transient failure, retrying");
                let outcome = recorded(DeliveryOutcome::Retry {
                    error: err.message.clone(),
                });
                job.marked = false;
                return Done {
                    retried: true,
                    again: Some(job),
                    ..base(outcome)
                };
            }
            tracing::warn!(to = %email, error = %err, attempts = job.attempts, "giving up for this run");
            return base(Some(DeliveryOutcome::Retry { error: err.message }));
        }
        tracing::warn!(to = %email, error = %err, "permanent failure");
        base(Some(DeliveryOutcome::Failed {
            hard_bounce: err.is_hard_bounce(),
            error: err.message,
        }))
    }

    /// Reports `done` for `job`: an outcome for a row not yet in `sending` is
    /// recorded only once the ledger has marked it (else it belongs to someone
    /// else now: nothing is recorded).
    async fn settle(&mut self, job: &Job, mut done: Done) {
        if done.outcome.is_some() && !job.marked && !mark(&self.events, job.id()).await {
            done.outcome = None;
        }
        self.report(done);
    }

    async fn deliver(&mut self, job: Job) {
        let retried = job.attempts > 0;
        if self.shared.rate.is_limited() {
            // Not worth holding a message on the server while waiting for a slot.
            self.end_held().await;
        }
        self.shared.rate.acquire().await;
        let msg = match self.shared.composer.compose(&job.delivery.subscriber) {
            Ok(m) => m,
            Err(e) => {
                let done = self.failure(
                    job.clone(),
                    retried,
                    SendError::permanent(format!("cannot build the message: {e:#}")),
                );
                self.settle(&job, done).await;
                return;
            }
        };
        self.drop_if_broken().await;
        if self.conn.is_none() {
            match self.shared.transport.connect().await {
                Ok(c) => {
                    self.conn = Some(c);
                    self.delivered_here = 0;
                }
                Err(e) => {
                    self.end_held().await;
                    let done = self.failure(job.clone(), retried, e);
                    self.settle(&job, done).await;
                    return;
                }
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let staged = conn.stage_next(&msg).await;
        // The held message's outcome goes to the ledger before this row is marked.
        if let Some(held) = self.held.take() {
            let ended = staged
                .previous
                .unwrap_or_else(|| Err(SendError::transient("its end was never sent")));
            self.delivered_here += u32::from(ended.is_ok());
            self.report_end(held, ended);
        }
        if let Err(e) = staged.this {
            // A session that delivered messages and then ended (421, closed)
            // before this one's data: nothing of it went out, and it is not its
            // fault. It goes again at once on a new connection, without using
            // up one of its attempts (a server that never takes a message still
            // uses them: a fresh session counts).
            let session_ended = e.is_transient()
                && !job.marked
                && self.delivered_here > 0
                && self.conn.as_ref().is_some_and(|c| c.is_broken());
            self.drop_if_broken().await;
            if session_ended {
                tracing::debug!(to = %job.delivery.subscriber.email, error = %e,
                    "the session ended before this message: again on a new one");
                self.report(Done {
                    id: job.id(),
                    email: job.delivery.subscriber.email.to_string(),
                    outcome: None,
                    retried: true,
                    again: Some(job),
                    fatal: None,
                });
                return;
            }
            let done = self.failure(job.clone(), retried, e);
            self.settle(&job, done).await;
            return;
        }
        let mut job = job;
        if !job.marked {
            // The server holds the message while the ledger marks its row.
            if !mark(&self.events, job.id()).await {
                // Unsubscribed or taken by another sender meanwhile: dropped
                // before the end of its data, so not delivered.
                if let Some(c) = self.conn.take() {
                    c.close().await;
                }
                self.report(Done {
                    id: job.id(),
                    email: job.delivery.subscriber.email.to_string(),
                    outcome: None,
                    retried,
                    again: None,
                    fatal: None,
                });
                return;
            }
            job.marked = true;
        }
        self.held = Some(Held {
            job,
            retried,
            message_id: msg.message_id,
        });
    }
}
