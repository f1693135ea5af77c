//! The single wiring point: build (ingest → dedupe → select → digest), archive,
//! and send ([`send`]: lease → issue → lint → deliver). The CLI and the
//! scheduler both call these functions.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, Utc};

use crate::archive;
use crate::articles;
use crate::config::Config;
use crate::domain::{issue_window, Candidate, Digest};
use crate::editor::EditorPicks;
use crate::ingest::{self, SourceReport};
use crate::render::{self, Assets, RenderedEmail};
use crate::select::{self, SelectParams};
use crate::store::{Freeze, FrozenIssue, IssueStore, Store};

mod nothing_new;
mod sending;

pub use nothing_new::record as record_nothing_new;
pub use sending::{
    issue_to_check, lease_length, lease_to_rebuild, lint, send, take_or_join, Delivery, IssueHeld,
    Joined, LeaseStep, Lint, SendError, SendLease, Sender, Sent,
};

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    /// `None` when nothing new was found for the date.
    pub digest: Option<Digest>,
    pub candidates: Vec<Candidate>,
    pub sources: Vec<SourceReport>,
}

impl Built {
    /// Sources that failed, with their error.
    pub fn failed_sources(&self) -> impl Iterator<Item = &SourceReport> {
        self.sources.iter().filter(|s| s.error.is_some())
    }

    /// An error when no source could be read: the issue could not be built,
    /// which is not the same as "nothing new" (the feeds may be back soon).
    pub fn every_source_failed(&self, date: NaiveDate) -> Result<(), EverySourceFailed> {
        if self.sources.is_empty() || self.sources.iter().any(|s| s.error.is_none()) {
            return Ok(());
        }
        Err(EverySourceFailed {
            date,
            errors: self
                .failed_sources()
                .map(|s| {
                    format!(
                        "{}: {}",
                        s.name,
                        s.error.as_ref().map_or(String::new(), |e| e.to_string())
                    )
                })
                .collect(),
        })
    }
}

/// No source of the config could be read, so no issue could be built.
#[derive(Debug, thiserror::Error)]
#[error(
    "every source failed, so no issue could be built for {date} ({}). \
     Check the URLs and paths in [[sources]]",
    errors.join("; ")
)]
pub struct EverySourceFailed {
    pub date: NaiveDate,
    pub errors: Vec<String>,
}

/// The theme and words: from `newsletter.templates_dir` if set, else built in.
pub fn assets(cfg: &Config) -> Result<Assets> {
    match &cfg.newsletter.templates_dir {
        Some(dir) => Ok(Assets::load(&cfg.resolve(dir))?),
        None => Ok(Assets::builtin()),
    }
}

/// Builds the issue of `date` as of `now`. Archives nothing. The stories
/// already sent are those of the issues archived in `digests/`.
pub async fn build(cfg: &Config, date: NaiveDate, now: DateTime<Utc>) -> Result<Built> {
    build_seeing(cfg, None, date, now).await
}

/// Like [`build`], the stories of every issue frozen in `store` (built on any
/// machine) counting as already sent too.
pub async fn build_seeing(
    cfg: &Config,
    store: Option<&dyn Store>,
    date: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Built> {
    let n = &cfg.newsletter;
    let (window_start, window_end) =
        issue_window(date, n.send_time.0, n.timezone.0, n.window_hours);
    let archive_dir = cfg.archive_dir();
    let editor = EditorPicks::load(&archive::editor_file(&archive_dir, date))
        .map_err(|e| anyhow::anyhow!("editor file: {e}"))?;
    let already_sent = sent_history(cfg, store, date)?;

    let (pool, sources) = ingest::ingest(cfg, now).await;
    let (pool, duplicates) = articles::dedupe(pool);
    let params = SelectParams {
        date,
        window_start,
        window_end,
        now,
        budget_minutes: n.reading_budget_minutes,
        words_per_minute: n.words_per_minute,
        max_articles: n.max_articles,
        ranking: &cfg.ranking,
        editor: &editor,
        already_sent: &already_sent,
    };
    let selection = select::select(pool, duplicates, &params);
    let digest = if selection.stories.is_empty() {
        None
    } else {
        Some(Digest {
            date,
            name: n.name.clone(),
            tagline: n.tagline.clone(),
            locale: n.locale,
            base_url: n.base_url.trimmed().to_string(),
            intro: editor.intro.clone().filter(|s| !s.trim().is_empty()),
            stories: selection.stories,
            reading_minutes: selection.reading_minutes,
            built_at: now,
            window_start,
            window_end,
        })
    };
    Ok(Built {
        digest,
        candidates: selection.candidates,
        sources,
    })
}

/// Canonical URL → date of the earliest issue before `before` that carried it:
/// the issues archived in `digests/` and those frozen in the database.
fn sent_history(
    cfg: &Config,
    store: Option<&dyn Store>,
    before: NaiveDate,
) -> Result<std::collections::BTreeMap<String, NaiveDate>> {
    let mut out = archive::sent_history(&cfg.archive_dir(), before)?;
    let Some(issues) = store.map(|s| s.issues()) else {
        return Ok(out);
    };
    let dates = issues
        .frozen_dates()
        .context("cannot read which issues the database keeps")?;
    for date in dates.into_iter().filter(|d| *d < before) {
        let Some(kept) = issues.frozen_issue(date)? else {
            continue;
        };
        for url in kept
            .digest()?
            .stories
            .iter()
            .filter_map(|s| s.article.url.clone())
        {
            let first = out.entry(url).or_insert(date);
            *first = (*first).min(date);
        }
    }
    Ok(out)
}

/// Renders the public version of a digest (archive, preview, web).
pub fn render_public(cfg: &Config, assets: &Assets, digest: &Digest) -> RenderedEmail {
    render::render_public(digest, assets, &cfg.sender.subject)
}

/// Writes the issue under `digests/<date>/`.
pub fn archive_issue(
    cfg: &Config,
    assets: &Assets,
    digest: &Digest,
) -> Result<(PathBuf, RenderedEmail)> {
    let email = render_public(cfg, assets, digest);
    let dir = archive::write_issue(&cfg.archive_dir(), digest, &email)?;
    Ok((dir, email))
}

/// The issue of `date`. With a database (`store`): the one frozen there if any,
/// so that every machine sends and shows the same issue; else the one archived
/// in `digests/<date>/` (by a version that did not freeze issues); else built
/// now. Either of the last two is frozen then, and the first process to freeze
/// it wins: whatever this process built, the issue kept is the one returned,
/// and written to `digests/<date>/` for editors. Without a database, the
/// archived issue or one built now and archived.
/// `None` when the sources were read and there is nothing new; an error when
/// the build failed, e.g. no source could be read ([`EverySourceFailed`]).
pub async fn issue_for(
    cfg: &Config,
    assets: &Assets,
    store: Option<&dyn Store>,
    date: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Option<Digest>> {
    let issues = store.map(|s| s.issues());
    if let Some(issues) = issues {
        if let Some(kept) = issues
            .frozen_issue(date)
            .with_context(|| format!("cannot read the issue of {date} from the database"))?
        {
            return archive_frozen(cfg, &kept).map(Some);
        }
    }
    let archived = archive::read_digest(&cfg.archive_dir(), date)?;
    let digest = match archived {
        Some(d) => d,
        None => {
            let built = build_seeing(cfg, store, date, now).await?;
            built.every_source_failed(date)?;
            match built.digest {
                Some(d) => d,
                None => return Ok(None),
            }
        }
    };
    match issues {
        Some(issues) => {
            let kept = issues
                .freeze_issue(&frozen(cfg, assets, &digest, now)?, Freeze::KeepFirst)
                .with_context(|| format!("cannot keep the issue of {date} in the database"))?;
            archive_frozen(cfg, &kept).map(Some)
        }
        None => {
            archive_issue(cfg, assets, &digest)?;
            Ok(Some(digest))
        }
    }
}

/// Freezes the issues archived in `digests/` that the database does not keep
/// (archived by a version that did not freeze issues), so that the web archive,
/// read from the database, still shows them. How many were frozen.
pub fn freeze_archived(
    cfg: &Config,
    assets: &Assets,
    issues: &dyn IssueStore,
    now: DateTime<Utc>,
) -> Result<usize> {
    let kept: std::collections::HashSet<NaiveDate> = issues.frozen_dates()?.into_iter().collect();
    let mut frozen_now = 0;
    for date in archive::dates(&cfg.archive_dir())? {
        if kept.contains(&date) {
            continue;
        }
        if let Some(digest) = archive::read_digest(&cfg.archive_dir(), date)? {
            issues
                .freeze_issue(&frozen(cfg, assets, &digest, now)?, Freeze::KeepFirst)
                .with_context(|| format!("cannot keep the issue of {date} in the database"))?;
            frozen_now += 1;
        }
    }
    Ok(frozen_now)
}

/// `digest` as the database keeps it: what `digests/<date>/` holds, the
/// archived files if they are there (what the web archive showed so far).
pub fn frozen(
    cfg: &Config,
    assets: &Assets,
    digest: &Digest,
    now: DateTime<Utc>,
) -> Result<FrozenIssue> {
    let dir = archive::issue_dir(&cfg.archive_dir(), digest.date);
    let json = serde_json::to_string_pretty(digest).context("cannot serialise the digest")?;
    let on_disk = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let archived_json = on_disk("digest.json");
    let (html, text) = match (
        archived_json == Some(json.clone()),
        on_disk("email.html"),
        on_disk("email.txt"),
    ) {
        (true, Some(html), Some(text)) => (html, text),
        _ => {
            let email = render_public(cfg, assets, digest);
            (email.html, email.text)
        }
    };
    Ok(FrozenIssue {
        date: digest.date,
        digest: json,
        html,
        text,
        frozen_at: now,
    })
}

/// The digest of a frozen issue, its files written to `digests/<date>/` if
/// they are not there as they are kept.
pub fn archive_frozen(cfg: &Config, kept: &FrozenIssue) -> Result<Digest> {
    let digest = kept.digest()?;
    archive::write_frozen(&cfg.archive_dir(), kept)?;
    Ok(digest)
}
