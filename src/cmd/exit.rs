//! The exit code of a command, decided here and only here: commands return
//! errors, and the kind of error in the chain (a config or a command line that
//! cannot be used, mail left to read from a pipe) says which code it is. The
//! leaves return typed errors (`ConfigError`, `AssetsError`, `CsvError`,
//! `SendError`…); a command adds [`usage`] only where the fault is in its own
//! arguments.

use crate::config::{ConfigError, SecretError};
use crate::pipeline::SendError;
use crate::render::AssetsError;
use crate::subscribers::CsvError;

/// What the process ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Done,
    /// 1: the job failed (a source, the store, the mail server, a row).
    Failed,
    /// 2: the command line or the configuration cannot be used: fix it.
    Usage,
    /// 75 (EX_TEMPFAIL): try again later; what a mail server's pipe retries.
    TryLater,
}

impl Exit {
    pub fn code(self) -> i32 {
        match self {
            Exit::Done => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::TryLater => 75,
        }
    }

    /// The exit of a command that ended with `result`.
    pub fn of(result: &anyhow::Result<()>) -> Exit {
        match result {
            Ok(()) => Exit::Done,
            Err(e) => e.chain().find_map(kind_of).unwrap_or(Exit::Failed),
        }
    }
}

/// The exit that one error of a chain decides, if it decides one (the outermost that does wins).
fn kind_of(e: &(dyn std::error::Error + 'static)) -> Option<Exit> {
    if e.is::<Usage>() || e.is::<ConfigError>() || e.is::<SecretError>() || e.is::<AssetsError>() {
        return Some(Exit::Usage);
    }
    if e.is::<TryLater>() {
        return Some(Exit::TryLater);
    }
    if let Some(e) = e.downcast_ref::<SendError>() {
        return Some(match e {
            SendError::Setup(_) => Exit::Usage,
            _ => Exit::Failed,
        });
    }
    if let Some(e) = e.downcast_ref::<CsvError>() {
        return Some(match e {
            CsvError::Header(_) | CsvError::Read(_) => Exit::Usage,
            CsvError::Write(_) | CsvError::Store(_) => Exit::Failed,
        });
    }
    None
}

/// The command line (an argument, a file it names) or the config cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Usage(anyhow::Error);

/// `e` as a usage error (exit 2).
pub fn usage(e: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(Usage(e.into()))
}

/// Nothing is lost, but the work is not done: run again later (exit 75).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct TryLater(pub anyhow::Error);

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::{anyhow, Context};

    #[test]
    fn the_exit_code_comes_from_the_kind_of_error_wherever_it_sits_in_the_chain() {
        assert_eq!(Exit::of(&Ok(())).code(), 0);
        assert_eq!(Exit::of(&Err(anyhow!("the server said no"))).code(), 1);
        let bad_flag = Err(usage(anyhow!("--date: not a date")).context("digestif send"));
        assert_eq!(Exit::of(&bad_flag).code(), 2);
        let config: anyhow::Result<()> = Err(ConfigError::Invalid {
            path: "digestif.toml".into(),
            problem: crate::config::ConfigProblem::Value {
                key: "newsletter.name".into(),
                message: "newsletter.name must not be empty".into(),
                at: Some(crate::config::Position { line: 2, column: 8 }),
            },
        }
        .into());
        assert_eq!(Exit::of(&config).code(), 2);
        let pipe = Err(TryLater(anyhow!("database busy")).into());
        assert_eq!(Exit::of(&pipe).code(), 75);
        let header = Err(CsvError::Header("no email column".into())).context("subscribers.csv");
        assert_eq!(Exit::of(&header).code(), 2);
        let setup = Err(SendError::Setup(anyhow!("no DKIM key")).into());
        assert_eq!(Exit::of(&setup).code(), 2);
        // The message people read is the error's own, whatever its kind.
        let e = usage(anyhow!("--to: not an address"));
        assert_eq!(format!("{e:#}"), "--to: not an address");
    }
}
