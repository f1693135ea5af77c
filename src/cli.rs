//! Command-line arguments (clap). Each command's body lives in `cmd/`.

use std::path::PathBuf;

use chrono::{DateTime, FixedOffset, NaiveDate};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "digestif", version, about = "Daily newsletter digest builder and mailer", long_about = None)]
pub struct Cli {
    /// Config file (default: $DIGESTIF_CONFIG, else ./digestif.toml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log format: text on a terminal, json for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the issue of a date and archive it under digests/<date>/.
    Build(BuildArgs),
    /// Show the issue of a date (HTML, text or JSON) without archiving anything.
    /// Without --date: the next issue (tomorrow's once today's has gone out).
    Preview(PreviewArgs),
    /// List the candidate pool with scores and why each was (not) picked.
    Articles(ArticlesArgs),
    /// Build and "send" the example issue with the built-in example config, feeds and
    /// subscribers, writing .eml files instead of mailing: no server needed.
    Demo(DemoArgs),
    /// The editor's picks for an issue: pin or drop a story, write a word of introduction.
    /// Without --date: the next issue (tomorrow's once today's has gone out).
    #[command(subcommand)]
    Editor(EditorCmd),
    /// Manage subscribers.
    #[command(subcommand)]
    Subscribers(SubscribersCmd),
    /// Send the issue of a date to every active subscriber.
    Send(SendArgs),
    /// Check the message of an issue against the sending rules.
    Lint(DateArgs),
    /// Show the delivery ledger of a date: counts by state and failures.
    Ledger(LedgerArgs),
    /// Read returned mail (bounces, complaints) and apply it to the subscribers: one
    /// message on standard input (a Postfix pipe), or every new message of a Maildir,
    /// or an mbox file. Needs `[bounces] return_path`.
    Bounces(BouncesArgs),
    /// Unsubscribe an address (for the List-Unsubscribe mailto route).
    Unsubscribe(UnsubscribeArgs),
    /// Run the service: daily schedule and HTTP (unsubscribe, sign-up, archive, health, metrics).
    Serve(ServeArgs),
    /// Check a setup without sending anything: config, templates, sender and DKIM key,
    /// secret, database, every source, and the SMTP server (connect, TLS, login).
    Check,
    /// Bring the database's schema up to date, then exit (every command does it
    /// at start; this one does nothing else). Refuses a database newer than digestif.
    Migrate,
    /// Move a whole database to another one (e.g. SQLite to PostgreSQL).
    #[command(subcommand)]
    Store(StoreCmd),
}

#[derive(Debug, Clone, Args)]
pub struct DateArgs {
    /// Issue date, YYYY-MM-DD (default: today in the newsletter's time zone).
    #[arg(long, value_parser = parse_date)]
    pub date: Option<NaiveDate>,
    /// Fix "now" (RFC 3339) for reproducible runs; items dated after it are ignored.
    #[arg(long, value_parser = parse_now)]
    pub now: Option<DateTime<FixedOffset>>,
}

#[derive(Debug, Clone, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub when: DateArgs,
    /// Overwrite the archive even if the issue was already sent and the new digest differs
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum PreviewFormat {
    Html,
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct PreviewArgs {
    #[command(flatten)]
    pub when: DateArgs,
    #[arg(long, value_enum, default_value_t = PreviewFormat::Text)]
    pub format: PreviewFormat,
    /// Write to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Open the HTML in the browser.
    #[arg(long)]
    pub open: bool,
    /// Build afresh even if the date is archived.
    #[arg(long)]
    pub rebuild: bool,
    /// Show the email exactly as this subscriber gets it (their language, their
    /// sections first, their name, their unsubscribe link) instead of the web version.
    #[arg(long = "for", value_name = "EMAIL")]
    pub for_reader: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ArticlesArgs {
    #[command(flatten)]
    pub when: DateArgs,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Folder for the demo's config, archive, database and outbox.
    #[arg(long, default_value = "digestif-demo")]
    pub out: PathBuf,
}

/// Each edit changes `digests/<date>/editor.toml`, read when the issue is built or previewed.
#[derive(Debug, Subcommand)]
pub enum EditorCmd {
    /// Show the picks of an issue.
    Show(DateArgs),
    /// Always put this story in, at the top (after the stories pinned before it).
    Pin(EditorUrlArgs),
    /// Keep this story out of the issue.
    Drop(EditorUrlArgs),
    /// Forget a pin or a drop.
    Reset(EditorUrlArgs),
    /// Set the word of introduction shown first; --clear removes it.
    Intro(EditorIntroArgs),
}

#[derive(Debug, Clone, Args)]
pub struct EditorUrlArgs {
    #[command(flatten)]
    pub when: DateArgs,
    /// The story's link, as `digestif articles` lists it (tracking parameters are ignored).
    pub url: String,
}

#[derive(Debug, Clone, Args)]
pub struct EditorIntroArgs {
    #[command(flatten)]
    pub when: DateArgs,
    /// The introduction (a few sentences).
    #[arg(required_unless_present = "clear")]
    pub text: Option<String>,
    #[arg(long, conflicts_with = "text")]
    pub clear: bool,
}

#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Copy subscribers, sign-ups, suppressions, the ledger, runs and returned mail,
    /// ids and keys as they are, into an empty database (refused if it is not).
    Copy {
        /// The database to read: sqlite://PATH or postgres://user@host:port/database.
        #[arg(long)]
        from: String,
        /// The empty database to write (created and migrated if needed).
        #[arg(long)]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SubscribersCmd {
    /// Import a CSV file (header row; email required; name,locale,categories,timezone,status optional).
    Import {
        file: PathBuf,
        /// Check every row and report, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Export all subscribers as CSV (to FILE or stdout).
    Export { file: Option<PathBuf> },
    /// List subscribers.
    List {
        /// active, pending, unsubscribed or bounced.
        #[arg(long)]
        status: Option<String>,
    },
    /// Add (or update) one subscriber as active.
    Add {
        email: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        locale: Option<String>,
        /// `;`-separated.
        #[arg(long)]
        categories: Option<String>,
        #[arg(long)]
        timezone: Option<String>,
    },
    /// Show one subscriber and what came back from their mail (bounces, complaints).
    Show { email: String },
    /// Remove a subscriber and their ledger rows; a keyed hash of the address is
    /// kept so that no import or `add` brings it back.
    Remove { email: String },
    /// Erase everything about an address (on the person's request); only a keyed
    /// hash is kept, so that no import brings it back.
    Forget { email: String },
}

#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub when: DateArgs,
    /// Render and check everything, send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Send one test copy to this address, outside the ledger.
    #[arg(long, value_name = "EMAIL")]
    pub to: Option<String>,
    /// Send at most N messages in this run.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Send even if the message breaks a sending rule (each broken rule is still logged).
    #[arg(long)]
    pub no_lint: bool,
}

#[derive(Debug, Clone, Args)]
pub struct LedgerArgs {
    #[arg(long, value_parser = parse_date)]
    pub date: Option<NaiveDate>,
}

#[derive(Debug, Clone, Args)]
pub struct BouncesArgs {
    /// Read the new messages of this Maildir (each moved to cur/ once read).
    #[arg(long, value_name = "DIR", conflicts_with = "mbox")]
    pub maildir: Option<PathBuf>,
    /// Read the messages of this mbox file (left in place; one read again counts once).
    #[arg(long, value_name = "FILE", conflicts_with = "imap")]
    pub mbox: Option<PathBuf>,
    /// Read the mailbox of `[bounces] mailbox` (IMAP or POP3) once (read messages are
    /// deleted there).
    #[arg(long, visible_alias = "mailbox", conflicts_with = "maildir")]
    pub imap: bool,
    /// Fix "now" (RFC 3339): the time recorded, and the end of the soft-bounce window.
    #[arg(long, value_parser = parse_now)]
    pub now: Option<DateTime<FixedOffset>>,
}

#[derive(Debug, Clone, Args)]
pub struct UnsubscribeArgs {
    pub email: String,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Override `[server] listen`.
    #[arg(long)]
    pub listen: Option<String>,
}

/// A value given on the command line that cannot be read; clap shows it after
/// the argument's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("{given:?} is not a date: write YYYY-MM-DD")]
    NotADate { given: String },
    #[error("{given:?} is not an RFC 3339 time: write e.g. 2026-11-27T06:30:00+01:00")]
    NotATime { given: String },
}

fn parse_date(s: &str) -> Result<NaiveDate, ArgError> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| ArgError::NotADate {
        given: s.to_string(),
    })
}

fn parse_now(s: &str) -> Result<DateTime<FixedOffset>, ArgError> {
    DateTime::parse_from_rfc3339(s).map_err(|_| ArgError::NotATime {
        given: s.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_or_a_time_that_cannot_be_read_is_named_with_the_shape_to_write() {
        assert_eq!(
            parse_date("2026-11-27"),
            Ok(NaiveDate::from_ymd_opt(2026, 11, 27).unwrap())
        );
        for bad in ["27/11/2026", "2026-13-01", "2026-11-27T06:30:00Z"] {
            assert_eq!(
                parse_date(bad),
                Err(ArgError::NotADate { given: bad.into() })
            );
        }
        assert!(parse_now("2026-11-27T06:30:00+01:00").is_ok());
        for bad in ["2026-11-27", "2026-11-27 06:30"] {
            assert_eq!(
                parse_now(bad),
                Err(ArgError::NotATime { given: bad.into() })
            );
        }
        // clap shows the error after the argument's name.
        for (args, said) in [
            (
                ["build", "--date", "27/11/2026"],
                "\"27/11/2026\" is not a date: write YYYY-MM-DD",
            ),
            (
                ["bounces", "--now", "tomorrow"],
                "\"tomorrow\" is not an RFC 3339 time: write e.g.",
            ),
        ] {
            let e = Cli::try_parse_from(std::iter::once("digestif").chain(args))
                .unwrap_err()
                .to_string();
            assert!(e.contains(said), "{e}");
        }
    }
}
