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
use crate::http::{self, metrics::Metrics, AppState, Mailer};
use crate::schedule::{LivePipeline, Scheduler};
use crate::store::Store;

use super::{load_config, CmdResult, Failure};

/// How long a run in flight may take to finish after a stop signal.
pub const DRAIN: Duration = Duration::from_secs(30);

pub fn serve(config: Option<&Path>, args: &ServeArgs) -> CmdResult {
    let cfg = load_config(config)?;
    let listen = args.listen.as_deref().unwrap_or(&cfg.server.listen);
    let listen: SocketAddr = listen.parse().map_err(|_| {
        Failure::usage(anyhow::anyhow!(
            "--listen {listen:?} must be an address and port such as 127.0.0.1:8080"
        ))
    })?;
    // One secret for `send` and `serve`, so the links one writes the other accepts.
    let secret = super::send::secret_for(&cfg)?;
    super::send::check_message_config(&cfg)?;
    super::runtime()?.block_on(run(Arc::new(cfg), listen, secret))
}

fn open_store(cfg: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(Arc::new(crate::store::SqliteStore::for_config(cfg)?))
}

fn mailer(cfg: &Config) -> anyhow::Result<Arc<dyn Mailer>> {
    Ok(Arc::new(crate::http::mail::TransportMailer::from_config(
        cfg,
    )?))
}

async fn run(cfg: Arc<Config>, listen: SocketAddr, secret: Secret) -> CmdResult {
    let store = open_store(&cfg).map_err(Failure::job)?;
    let metrics = Arc::new(Metrics::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = AppState::new(
        cfg.clone(),
        store.clone(),
        secret.clone(),
        metrics.clone(),
        clock.clone(),
        mailer(&cfg).map_err(Failure::job)?,
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
        .map_err(Failure::job)?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::job(anyhow::anyhow!(e)))?;
    tracing::info!(address = %local, "listening on http://{local}");

    let scheduler = Arc::new(Scheduler::new(
        cfg.clone(),
        store.clone(),
        Arc::new(LivePipeline::new(cfg.clone(), store.clone(), secret).map_err(Failure::job)?),
        metrics,
    ));
    let mut cron = if cfg.schedule.enabled {
        tracing::info!(
            send_time = %cfg.newsletter.send_time.0.format("%H:%M"),
            timezone = cfg.newsletter.timezone.0.name(),
            holder = scheduler.holder(),
            "scheduler started"
        );
        Some(scheduler.clone().start(clock).await.map_err(Failure::job)?)
    } else {
        tracing::info!("scheduler disabled ([schedule] enabled = false)");
        None
    };

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let app = http::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let mut server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
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
    outcome.map_err(Failure::job)
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
