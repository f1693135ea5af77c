//! What ingestion remembers between runs, in one JSON file (`fetch.cache_file`):
//! the validators (ETag, Last-Modified) and body of each HTTP feed, for
//! conditional GETs, and when each undated item was first seen, so that its date
//! stays the same from one run to the next.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// How long a first-seen date is remembered after the item was first seen.
const FIRST_SEEN_DAYS: i64 = 60;

/// A feed body kept for a 304 answer, with the validators that came with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CachedFeed {
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub last_modified: Option<String>,
    /// The body, base64 (feeds in ISO-8859-1 are not UTF-8).
    pub body: String,
}

impl CachedFeed {
    pub fn new(etag: Option<String>, last_modified: Option<String>, body: &[u8]) -> CachedFeed {
        CachedFeed {
            etag,
            last_modified,
            body: base64::engine::general_purpose::STANDARD.encode(body),
        }
    }

    pub fn body_bytes(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.body)
            .ok()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cache {
    /// By feed URL.
    #[serde(default)]
    pub feeds: BTreeMap<String, CachedFeed>,
    /// By item key (source name + link or title).
    #[serde(default)]
    pub first_seen: BTreeMap<String, DateTime<Utc>>,
}

impl Cache {
    /// Reads the cache; a missing file is an empty cache, and so is a damaged one
    /// (with a warning: the cache only saves work, it is never needed).
    pub fn load(path: &Path) -> Cache {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(
                    "ignoring the fetch cache {}: {e}; it will be rewritten",
                    path.display()
                );
                Cache::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Cache::default(),
            Err(e) => {
                tracing::warn!("cannot read the fetch cache {}: {e}", path.display());
                Cache::default()
            }
        }
    }

    /// Writes the cache atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    /// The date an undated item counts as published: when it was first seen,
    /// recorded now if it is new. A record later than `now` (a run replayed in the
    /// past with `--now`) yields `now`, so the item is never "in the future".
    pub fn first_seen(&mut self, key: &str, now: DateTime<Utc>) -> DateTime<Utc> {
        let seen = self.first_seen.entry(key.to_string()).or_insert(now);
        if *seen > now {
            *seen = now;
        }
        *seen
    }

    /// Forgets old first-seen dates and the bodies of feeds no longer configured.
    pub fn prune(&mut self, now: DateTime<Utc>, urls: &BTreeSet<String>) {
        let horizon = now - Duration::days(FIRST_SEEN_DAYS);
        self.first_seen.retain(|_, t| *t >= horizon);
        self.feeds.retain(|u, _| urls.contains(u));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn first_seen_is_stable_across_runs_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let t1 = Utc.with_ymd_and_hms(2026, 11, 26, 8, 0, 0).unwrap();
        let t2 = Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap();
        let mut c = Cache::load(&path);
        assert_eq!(c.first_seen("Monde\u{1f}x", t1), t1);
        c.save(&path).unwrap();
        let mut c = Cache::load(&path);
        assert_eq!(c.first_seen("Monde\u{1f}x", t2), t1);
        // Replaying an earlier "now" never puts the item in the future.
        let t0 = Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 0).unwrap();
        assert_eq!(c.first_seen("Monde\u{1f}x", t0), t0);
    }

    #[test]
    fn a_damaged_cache_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(Cache::load(&path), Cache::default());
    }

    #[test]
    fn bodies_round_trip_as_bytes_and_prune_forgets_old_entries() {
        let f = CachedFeed::new(Some("\"v1\"".into()), None, b"caf\xe9");
        assert_eq!(f.body_bytes().unwrap(), b"caf\xe9");
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap();
        let mut c = Cache::default();
        c.feeds.insert("https://a/".into(), f.clone());
        c.feeds.insert("https://gone/".into(), f);
        c.first_seen.insert("old".into(), now - Duration::days(90));
        c.first_seen.insert("new".into(), now - Duration::days(1));
        c.prune(now, &BTreeSet::from(["https://a/".to_string()]));
        assert_eq!(c.feeds.keys().collect::<Vec<_>>(), vec!["https://a/"]);
        assert_eq!(c.first_seen.keys().collect::<Vec<_>>(), vec!["new"]);
    }
}
