//! `digestif serve`: the scheduler and the HTTP server under one process.
//!
//! SIGTERM or SIGINT: the HTTP server stops accepting, the scheduler starts no
//! new run, a run in flight gets [`DRAIN`] to finish its messages; whatever is
//! still in flight after that stays `sending` in the ledger and is reported "in
//! doubt" by the next run, never silently lost. Exit code 0.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::cli::ServeArgs;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Secret};
use crate::http::{self, AppState, Mailer};
use crate::metrics::Metrics;
use crate::schedule::{LivePipeline, Scheduler};
use crate::store::Store;

use super::exit::usage;
use super::{load_config, CmdResult};

/// How long a run in flight may take to finish after a stop signal.
pub const DRAIN: Duration = Duration::from_secs(30);

pub fn serve(config: Option<&Path>, args: &ServeArgs) -> CmdResult {
    let cfg = load_config(config)?;
    let listen = args.listen.as_deref().unwrap_or(&cfg.server.listen);
    let listen: SocketAddr = listen.parse().map_err(|_| {
        usage(anyhow::anyhow!(
            "--listen {listen:?} must be an address and port such as 127.0.0.1:8080"
        ))
    })?;
    // One secret for `send` and `serve`, so the links one writes the other accepts.
    let secret = super::send::secret_for(&cfg)?;
    super::send::check_message_config(&cfg)?;
    // A webhook whose certificate or password is missing stops the service at
    // start, not at the relay's first report.
    let hooks =
        http::webhooks::Webhooks::from_config(&cfg).map_err(|e| usage(anyhow::anyhow!(e)))?;
    if hooks.ses.is_some() {
        tracing::info!("SES notifications read at POST /webhooks/ses");
    }
    if hooks.postmark.is_some() {
        tracing::info!("Postmark webhooks read at POST /webhooks/postmark");
    }
    super::runtime()?.block_on(run(Arc::new(cfg), listen, secret))
}

fn open_store(cfg: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(crate::store::open(cfg)?)
}

/// How long an HTTP request's write waits for the database before the visitor
/// gets 503 + Retry-After (the scheduler's connections keep their own longer wait).
const HTTP_WRITE_WAIT: Duration = Duration::from_secs(5);

/// The HTTP side's own connections (SQLite: one for writes, one for reads;
/// PostgreSQL: a pool of its own whose statements wait at most
/// [`HTTP_WRITE_WAIT`] for a lock), so that a send in progress or another
/// process holding the write lock never makes a page or `/healthz` wait behind it.
fn open_http_store(cfg: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if let crate::store::Location::Postgres(url) = cfg.database() {
        return Ok(Arc::new(crate::store::PgStore::open_with_lock_wait(
            &url,
            HTTP_WRITE_WAIT,
        )?));
    }
    let s = crate::store::SqliteStore::for_config(cfg)?;
    s.set_busy_timeout(HTTP_WRITE_WAIT)?;
    Ok(Arc::new(s))
}

fn mailer(cfg: &Config) -> anyhow::Result<Arc<dyn Mailer>> {
    Ok(Arc::new(crate::http::mail::TransportMailer::from_config(
        cfg,
    )?))
}

async fn run(cfg: Arc<Config>, listen: SocketAddr, secret: Secret) -> CmdResult {
    let store = open_store(&cfg)?;
    // The web archive is read from the database: issues archived before it
    // kept them are added once.
    let assets = crate::pipeline::assets(&cfg)?;
    let added =
        crate::pipeline::freeze_archived(&cfg, &assets, store.issues(), crate::clock::now())?;
    if added > 0 {
        tracing::info!(issues = added, "archived issues now kept in the database");
    }
    let http_store = if cfg.database() != crate::store::Location::SqliteMemory {
        open_http_store(&cfg)?
    } else {
        // An in-memory database exists once: share it.
        store.clone()
    };
    let metrics = Arc::new(Metrics::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = AppState::new(
        cfg.clone(),
        http_store.clone(),
        secret.clone(),
        metrics.clone(),
        clock.clone(),
        mailer(&cfg)?,
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr().map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!(address = %local, "listening on http://{local}");

    if cfg.bounces.mailbox.is_some() {
        tokio::spawn(super::bounces::poll_forever(
            cfg.clone(),
            store.clone(),
            secret.clone(),
        ));
    }
    let scheduler = Arc::new(Scheduler::new(
        cfg.clone(),
        store.clone(),
        Arc::new(LivePipeline::new(cfg.clone(), store.clone(), secret)?),
        metrics,
    ));
    let mut cron = if cfg.schedule.enabled {
        tracing::info!(
            send_time = %cfg.newsletter.send_time.0.format("%H:%M"),
            timezone = cfg.newsletter.timezone.0.name(),
            holder = scheduler.holder(),
            "scheduler started"
        );
        Some(scheduler.clone().start(clock.clone()).await?)
    } else {
        tracing::info!("scheduler disabled ([schedule] enabled = false)");
        None
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limits = http::server::Limits::from_config(&cfg);
    if let Some(addr) = &cfg.server.metrics_listen {
        let ml = tokio::net::TcpListener::bind(addr.as_str())
            .await
            .with_context(|| format!("cannot listen on {addr} (server.metrics_listen)"))?;
        tracing::info!(address = %addr, "metrics and health on http://{addr}");
        let app = http::metrics_router(state.clone());
        let mut rx = stop_rx.clone();
        tokio::spawn(http::server::serve(ml, app, limits, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
    }
    tokio::spawn(purge_signups(http_store, clock.clone()));
    let app = http::router(state);
    let mut stop_rx = stop_rx;
    let mut server = tokio::spawn(async move {
        http::server::serve(listener, app, limits, async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        })
        .await
    });

    let outcome = tokio::select! {
        r = &mut server => Err(match r {
            Ok(Ok(())) => anyhow::anyhow!("the HTTP server stopped unexpectedly"),
            Ok(Err(e)) => anyhow::anyhow!("the HTTP server failed: {e}"),
            Err(e) => anyhow::anyhow!("the HTTP server crashed: {e}"),
        }),
        sig = stop_signal() => {
            tracing::info!(signal = sig, "stopping: no new work, finishing what is in flight");
            Ok(())
        }
    };

    let _ = stop_tx.send(true);
    scheduler.stop();
    if let Some(c) = cron.as_mut() {
        let _ = c.shutdown().await;
    }
    if !scheduler.drain(DRAIN).await {
        tracing::warn!(
            "a run was still in flight after {}s: its messages stay `sending` and the next run reports them in doubt",
            DRAIN.as_secs()
        );
    }
    if outcome.is_ok()
        && tokio::time::timeout(Duration::from_secs(10), &mut server)
            .await
            .is_err()
    {
        tracing::warn!("open HTTP connections did not close in 10s");
    }
    tracing::info!("stopped");
    outcome
}

/// Deletes sign-ups never confirmed within a week, every hour (a sign-up holds
/// an address, a name and a zone: nothing is kept for nothing).
async fn purge_signups(store: Arc<dyn Store>, clock: Arc<dyn Clock>) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        let before = clock.now() - chrono::Duration::days(http::subscribe::SIGNUP_RETENTION_DAYS);
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.purge_signups(before)).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(purged = n, "unconfirmed sign-ups deleted"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not purge old sign-ups"),
            _ => {}
        }
    }
}

/// Resolves on SIGTERM or SIGINT, with the signal's name.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}
