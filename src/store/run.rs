//! How a scheduled run ended: the typed status the scheduler decides on, kept
//! as text in the `runs` table (`as_str` to write, `parse` to read back).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a run of the issue of one date ended. The scheduler decides what comes
/// next from this alone (never from the run's message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Every subscriber due got the issue: the date is done.
    Ok,
    /// The pass ended with work left for a later pass (see the reason).
    Partial(PartialReason),
    /// The pass could not do its work; retried within `catch_up_hours`.
    Failed(FailedStep),
    /// Nothing is to be sent for the date (no story in the window, or the
    /// catch-up window closed): the date is done, the message says why.
    Skipped,
}

/// Why a pass ended with work left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartialReason {
    /// Messages are left pending (transient failures, in doubt): retried soon.
    Pending,
    /// The service was stopping: the next start goes on at once.
    Stopped,
    /// Every zone due so far was served; the next pass is when the next zone is due.
    WaitingZones,
}

/// Which step of a pass failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailedStep {
    /// No issue could be built: no source could be read, or the build errored.
    Build,
    /// The issue breaks sending rules (lint): nothing was sent.
    Lint,
    /// The issue exists but sending it errored.
    Send,
}

/// A stored run status none of [`RunStatus`] spells.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown run status {0:?} (expected ok, partial:…, failed:… or skipped)")]
pub struct UnknownRunStatus(pub String);

impl RunStatus {
    /// The text stored in the database: the kind, then the reason after a colon.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Partial(PartialReason::Pending) => "partial:pending",
            RunStatus::Partial(PartialReason::Stopped) => "partial:stopped",
            RunStatus::Partial(PartialReason::WaitingZones) => "partial:waiting_zones",
            RunStatus::Failed(FailedStep::Build) => "failed:build",
            RunStatus::Failed(FailedStep::Lint) => "failed:lint",
            RunStatus::Failed(FailedStep::Send) => "failed:send",
            RunStatus::Skipped => "skipped",
        }
    }

    /// What health checks and metrics show: `ok`, `partial`, `failed` or `skipped`.
    pub fn kind(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Partial(_) => "partial",
            RunStatus::Failed(_) => "failed",
            RunStatus::Skipped => "skipped",
        }
    }

    /// Reads the stored text back. Rows written before reasons were stored say
    /// only `partial` or `failed`: they read as the cases that are retried soon.
    pub fn parse(s: &str) -> Result<RunStatus, UnknownRunStatus> {
        let all = [
            RunStatus::Ok,
            RunStatus::Partial(PartialReason::Pending),
            RunStatus::Partial(PartialReason::Stopped),
            RunStatus::Partial(PartialReason::WaitingZones),
            RunStatus::Failed(FailedStep::Build),
            RunStatus::Failed(FailedStep::Lint),
            RunStatus::Failed(FailedStep::Send),
            RunStatus::Skipped,
        ];
        if let Some(st) = all.into_iter().find(|st| st.as_str() == s) {
            return Ok(st);
        }
        match s {
            "partial" => Ok(RunStatus::Partial(PartialReason::Pending)),
            "failed" => Ok(RunStatus::Failed(FailedStep::Send)),
            _ => Err(UnknownRunStatus(s.to_string())),
        }
    }

    /// Whether the date is finished: nothing more is ever tried for it.
    pub fn finishes_the_date(self) -> bool {
        matches!(self, RunStatus::Ok | RunStatus::Skipped)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Shown to people and monitors as its kind (`"ok"`, `"partial"`…).
impl Serialize for RunStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.kind())
    }
}

impl<'de> Deserialize<'de> for RunStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RunStatus, D::Error> {
        let s = String::deserialize(d)?;
        RunStatus::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_as_written() {
        for st in [
            RunStatus::Ok,
            RunStatus::Partial(PartialReason::Pending),
            RunStatus::Partial(PartialReason::Stopped),
            RunStatus::Partial(PartialReason::WaitingZones),
            RunStatus::Failed(FailedStep::Build),
            RunStatus::Failed(FailedStep::Lint),
            RunStatus::Failed(FailedStep::Send),
            RunStatus::Skipped,
        ] {
            assert_eq!(RunStatus::parse(st.as_str()), Ok(st));
        }
    }

    #[test]
    fn rows_without_a_reason_read_as_retried_soon_and_garbage_is_refused() {
        assert_eq!(
            RunStatus::parse("partial"),
            Ok(RunStatus::Partial(PartialReason::Pending))
        );
        assert_eq!(
            RunStatus::parse("failed"),
            Ok(RunStatus::Failed(FailedStep::Send))
        );
        let err = RunStatus::parse("done").unwrap_err();
        assert_eq!(err, UnknownRunStatus("done".into()));
        let err = err.to_string();
        assert!(err.contains("\"done\""), "{err}");
    }

    #[test]
    fn only_ok_and_skipped_finish_a_date() {
        assert!(RunStatus::Ok.finishes_the_date());
        assert!(RunStatus::Skipped.finishes_the_date());
        assert!(!RunStatus::Failed(FailedStep::Build).finishes_the_date());
        assert!(!RunStatus::Partial(PartialReason::Stopped).finishes_the_date());
    }
}
