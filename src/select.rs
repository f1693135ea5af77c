//! Pure selection: window, editor picks, already-sent stories, score, diversity,
//! the reading budget and `max_articles`. Same inputs, same digest; ties broken by URL.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};

use crate::config::Ranking;
use crate::domain::{Article, Candidate, Story};
use crate::editor::EditorPicks;

/// Everything the selection depends on besides the pool.
#[derive(Debug, Clone)]
pub struct SelectParams<'a> {
    pub date: NaiveDate,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// Items dated after `now` are ignored.
    pub now: DateTime<Utc>,
    pub budget_minutes: u32,
    pub words_per_minute: u32,
    pub max_articles: usize,
    pub ranking: &'a Ranking,
    pub editor: &'a EditorPicks,
    /// Canonical URL → date of the earlier issue that carried it.
    pub already_sent: &'a BTreeMap<String, NaiveDate>,
}

/// The selection's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub stories: Vec<Story>,
    /// Every article of the pool (duplicates included) with its verdict, best first.
    pub candidates: Vec<Candidate>,
    /// Estimated minutes to read the digest text (intro + stories).
    pub reading_minutes: u32,
}

/// Picks the day's stories.
pub fn select(
    pool: Vec<Article>,
    duplicates: Vec<(Article, String)>,
    p: &SelectParams<'_>,
) -> Selection {
    let _ = (pool, duplicates, p);
    todo!("select")
}
