//! Reading the sources: fetch at the edge (files, HTTP with conditional GET),
//! pure `parse_feed(&[u8])` for RSS, Atom and JSON Feed, then normalisation into
//! [`Article`]s. One broken source never stops the others.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::domain::Article;

/// How one source fared in a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceReport {
    pub name: String,
    /// Articles taken from it.
    pub articles: usize,
    /// Why it failed, if it did: names the source and what to fix.
    pub error: Option<String>,
}

/// Reads every source of `cfg` (concurrently), returns the normalised articles
/// (not yet deduplicated, not yet windowed) and a report per source.
pub async fn ingest(cfg: &Config, now: DateTime<Utc>) -> (Vec<Article>, Vec<SourceReport>) {
    let _ = (cfg, now);
    todo!("ingest")
}
