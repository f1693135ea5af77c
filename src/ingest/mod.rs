//! Reading the sources: fetch at the edge (files, HTTP with conditional GET),
//! pure `parse_feed(&[u8])` for RSS, Atom and JSON Feed, then normalisation into
//! [`Article`]s. One broken source never stops the others.

mod cache;
mod fetch;
mod parse;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

use crate::articles::{self, SourceInfo};
use crate::config::{Config, Source, SourceLocation};
use crate::domain::Article;

pub use cache::{Cache, CachedFeed};
pub use fetch::{fetch_url, read_file, Fetched};
pub use parse::{parse_feed, RawItem};

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
///
/// Articles come out in source order, then feed order. Undated items are dated
/// when first seen (remembered in `fetch.cache_file`, as are the ETag and
/// Last-Modified of HTTP feeds).
pub async fn ingest(cfg: &Config, now: DateTime<Utc>) -> (Vec<Article>, Vec<SourceReport>) {
    let cache_path = cfg.resolve(&cfg.fetch.cache_file);
    let mut cache = Cache::load(&cache_path);
    let before = cache.clone();
    let client = fetch::client(&cfg.fetch);

    let fetched: Vec<Result<Fetched, String>> = futures::stream::iter(cfg.sources.iter())
        .map(|s| {
            let cached = match s.location(&cfg.base_dir) {
                SourceLocation::Url(u) => cache.feeds.get(u.as_str()).cloned(),
                SourceLocation::Path(_) => None,
            };
            let client = client.as_ref();
            async move {
                match s.location(&cfg.base_dir) {
                    SourceLocation::Path(p) => read_file(&p, cfg.fetch.max_bytes)
                        .await
                        .map(|bytes| Fetched::Body { bytes, cache: None }),
                    SourceLocation::Url(u) => {
                        let client = client.map_err(Clone::clone)?;
                        fetch_url(client, u.as_str(), cached.as_ref(), &cfg.fetch).await
                    }
                }
            }
        })
        .buffered(cfg.fetch.concurrency.max(1))
        .collect()
        .await;

    let mut articles = Vec::new();
    let mut reports = Vec::new();
    let mut urls = BTreeSet::new();
    for (source, result) in cfg.sources.iter().zip(fetched) {
        let location = match source.location(&cfg.base_dir) {
            SourceLocation::Url(u) => {
                urls.insert(u.to_string());
                u.to_string()
            }
            SourceLocation::Path(p) => p.display().to_string(),
        };
        let outcome = result.and_then(|f| {
            let items = parse_feed(f.bytes())?;
            if let (SourceLocation::Url(u), Fetched::Body { cache: c, .. }) =
                (source.location(&cfg.base_dir), &f)
            {
                match c {
                    Some(c) => cache.feeds.insert(u.to_string(), c.clone()),
                    None => cache.feeds.remove(u.as_str()),
                };
            }
            Ok(items)
        });
        match outcome {
            Ok(items) => {
                let got = articles_of(source, &items, &mut cache, now, cfg);
                reports.push(SourceReport {
                    name: source.name.clone(),
                    articles: got.len(),
                    error: None,
                });
                articles.extend(got);
            }
            Err(cause) => {
                tracing::debug!(source = %source.name, "{location}: {cause}");
                reports.push(SourceReport {
                    name: source.name.clone(),
                    articles: 0,
                    error: Some(format!("source {:?} ({location}): {cause}", source.name)),
                });
            }
        }
    }

    cache.prune(now, &urls);
    if cache != before {
        if let Err(e) = cache.save(&cache_path) {
            tracing::warn!(
                "cannot write the fetch cache {}: {e}; undated items may get a new date next run",
                cache_path.display()
            );
        }
    }
    (articles, reports)
}

/// Normalises the items of one source; undated ones take their first-seen date.
fn articles_of(
    source: &Source,
    items: &[RawItem],
    cache: &mut Cache,
    now: DateTime<Utc>,
    cfg: &Config,
) -> Vec<Article> {
    let info = SourceInfo {
        name: &source.name,
        category: source.category.as_deref(),
        weight: source.weight,
    };
    items
        .iter()
        .filter_map(|item| {
            let published = match item.published {
                Some(t) => t,
                None => cache.first_seen(&item_key(&source.name, item), now),
            };
            articles::normalise(item, &info, published, cfg.newsletter.words_per_minute)
        })
        .collect()
}

/// Identifies an item across runs: its source and its link, else its title.
fn item_key(source: &str, item: &RawItem) -> String {
    let what = item
        .link
        .as_deref()
        .and_then(articles::canonical_url)
        .or_else(|| item.title.as_deref().map(articles::clean_text))
        .or_else(|| item.summary.as_deref().map(articles::clean_text))
        .unwrap_or_default();
    format!("{source}\u{1f}{what}")
}
