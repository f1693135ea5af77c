//! The frozen issue: once built, an issue's digest, its public rendering and
//! each variant subscribers receive are kept in the database, so that every
//! sender and every `serve` (on any machine, in any working folder) sends and
//! shows the same bytes. The first one stored wins; later builds read it.

use chrono::{DateTime, NaiveDate, Utc};

use super::StoreResult;
use crate::domain::Locale;

/// An issue as it was frozen: what `digests/<date>/` holds, as text.
#[derive(Debug, Clone, PartialEq)]
pub struct FrozenIssue {
    pub date: NaiveDate,
    /// `digest.json`.
    pub digest: String,
    /// `email.html`: the public rendering (the web archive, "view in browser").
    pub html: String,
    /// `email.txt`.
    pub text: String,
    pub frozen_at: DateTime<Utc>,
}

impl FrozenIssue {
    /// Its digest, read back.
    pub fn digest(&self) -> anyhow::Result<crate::domain::Digest> {
        serde_json::from_str(&self.digest).map_err(|e| {
            anyhow::anyhow!(
                "the issue of {} kept in the database holds no valid digest ({e}); \
                 rebuild it with `digestif build --date {} --force`",
                self.date,
                self.date
            )
        })
    }
}

/// One rendered variant of a frozen issue, as `store copy` moves it.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantRow {
    pub issue_date: NaiveDate,
    /// See [`variant_key`].
    pub variant: String,
    /// The rendered variant with its personal slots (JSON).
    pub template: String,
}

/// What freezing does when an issue is already kept for the date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freeze {
    /// The one kept stays (another process froze it first): it is returned.
    KeepFirst,
    /// Replaced, its variants dropped (`build --force`).
    Replace,
}

/// Names a variant: the language and the followed sections, in the subscriber's order.
pub fn variant_key(locale: Locale, follow: &[String]) -> String {
    format!("{}:{}", locale.code(), follow.join(";"))
}

/// The frozen issues of a database.
pub trait IssueStore: Send + Sync {
    /// Keeps `issue` unless one is kept for its date (then, with
    /// [`Freeze::KeepFirst`], that one stays). Returns the issue kept now.
    fn freeze_issue(&self, issue: &FrozenIssue, mode: Freeze) -> StoreResult<FrozenIssue>;
    /// The issue frozen for `date`, if any.
    fn frozen_issue(&self, date: NaiveDate) -> StoreResult<Option<FrozenIssue>>;
    /// Dates with a frozen issue, newest first.
    fn frozen_dates(&self) -> StoreResult<Vec<NaiveDate>>;
    /// Keeps `template` as the variant `key` of the issue of `date` unless one
    /// is kept already; returns the one kept. The issue must be frozen.
    fn freeze_variant(&self, date: NaiveDate, key: &str, template: &str) -> StoreResult<String>;
    /// The variant `key` of the issue of `date` as kept, if one is; writes nothing.
    fn frozen_variant(&self, date: NaiveDate, key: &str) -> StoreResult<Option<String>>;
    /// The (language, followed sections) of the active subscribers, each once:
    /// the variants a send of the issue renders.
    fn variants_in_use(&self) -> StoreResult<Vec<(Option<Locale>, Vec<String>)>>;
}
