//! One thin function per command; they load the config, call the pipeline, print.

use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};

use crate::cli::{Cli, Command, DateArgs, LogFormat};
use crate::config::{self, Config};
use crate::domain::today_in;

pub mod bounces;
pub mod build;
pub mod check;
pub mod demo;
pub mod editor;
pub mod exit;
pub mod send;
pub mod serve;
mod store;
pub mod subscribers;

/// A command's outcome: its error is for people (`main` prints the whole chain)
/// and its kind decides the exit code ([`exit::Exit`]).
pub type CmdResult = anyhow::Result<()>;

/// Logs go to stderr: text by default, JSON lines with `--log-format json`.
/// `RUST_LOG` sets the level (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_cron_scheduler=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}

/// Loads the config named on the command line (or by the environment).
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let p = config::locate(path);
    Ok(Config::from_file(&p)?)
}

/// The `--now` of a command, else the wall clock.
pub fn now_of(args: &DateArgs) -> DateTime<Utc> {
    args.now
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(crate::clock::now)
}

/// The `--date` of a command, else today in the newsletter's zone at `now`.
pub fn date_of(cfg: &Config, args: &DateArgs, now: DateTime<Utc>) -> NaiveDate {
    args.date
        .unwrap_or_else(|| today_in(now, cfg.newsletter.timezone.0))
}

/// The `--date` of a command, else the next issue: today in the newsletter's zone
/// until today's send time, tomorrow after it. What an editor works on.
pub fn next_issue_of(cfg: &Config, args: &DateArgs, now: DateTime<Utc>) -> NaiveDate {
    args.date.unwrap_or_else(|| next_issue(cfg, now))
}

fn next_issue(cfg: &Config, now: DateTime<Utc>) -> NaiveDate {
    let n = &cfg.newsletter;
    let today = today_in(now, n.timezone.0);
    if crate::domain::local_instant(today, n.send_time.0, n.timezone.0) > now {
        today
    } else {
        today.succ_opt().unwrap_or(today)
    }
}

/// A multi-threaded runtime for the commands that do I/O.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> CmdResult {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Build(a) => build::build(config, &a),
        Command::Preview(a) => build::preview(config, &a),
        Command::Articles(a) => build::articles(config, &a),
        Command::Demo(a) => demo::demo(&a),
        Command::Editor(c) => editor::run(config, c),
        Command::Subscribers(c) => subscribers::run(config, c),
        Command::Send(a) => send::send(config, &a),
        Command::Lint(a) => send::lint(config, &a),
        Command::Ledger(a) => send::ledger(config, &a),
        Command::Bounces(a) => bounces::bounces(config, &a),
        Command::Unsubscribe(a) => send::unsubscribe(config, &a),
        Command::Serve(a) => serve::serve(config, &a),
        Command::Check => check::check(config),
        Command::Migrate => store::migrate(config),
        Command::Store(c) => store::run(c),
    }
}
