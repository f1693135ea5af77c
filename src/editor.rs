//! The editor's say on one issue: `digests/<date>/editor.toml` (intro, pin, exclude).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Picks that cannot be read or a link that cannot be picked: the message names
/// the file and line, or the link.
#[derive(Debug, thiserror::Error)]
pub enum EditorError {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Not the TOML of an `editor.toml`: the problem names the line.
    #[error("{problem}")]
    Invalid { problem: String },
    #[error("{}: {problem}", path.display())]
    InFile { path: PathBuf, problem: String },
    #[error(
        "{0:?} is not a story link: give the article's full http(s) URL, \
         as `digestif articles` lists it"
    )]
    NotAStoryLink(String),
}

/// What the editor asked for. URLs are compared after canonicalisation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditorPicks {
    #[serde(default)]
    pub intro: Option<String>,
    /// Always in, at the top, in this order.
    #[serde(default)]
    pub pin: Vec<String>,
    /// Never in.
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl EditorPicks {
    /// Reads `path`; a missing file means no picks. Errors name the file and line.
    pub fn load(path: &Path) -> Result<EditorPicks, EditorError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(EditorPicks::default()),
            Err(error) => {
                return Err(EditorError::Read {
                    path: path.to_path_buf(),
                    error,
                })
            }
        };
        EditorPicks::parse(&text).map_err(|e| EditorError::InFile {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })
    }

    pub fn parse(text: &str) -> Result<EditorPicks, EditorError> {
        toml::from_str(text).map_err(|e| EditorError::Invalid {
            problem: crate::config::describe_toml_error(text, &e),
        })
    }

    /// The file's text: what `load` reads back.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("editor picks serialise")
    }

    /// Pins `url` (appended after the pins already there); takes it out of the exclusions.
    pub fn pin(&mut self, url: &str) -> Result<(), EditorError> {
        let url = checked(url)?;
        self.exclude.retain(|u| !same(u, &url));
        if !self.pin.iter().any(|u| same(u, &url)) {
            self.pin.push(url);
        }
        Ok(())
    }

    /// Drops `url` from the issue; takes it out of the pins.
    pub fn exclude(&mut self, url: &str) -> Result<(), EditorError> {
        let url = checked(url)?;
        self.pin.retain(|u| !same(u, &url));
        if !self.exclude.iter().any(|u| same(u, &url)) {
            self.exclude.push(url);
        }
        Ok(())
    }

    /// Forgets `url` in the pins and the exclusions; whether it was in either.
    pub fn forget(&mut self, url: &str) -> Result<bool, EditorError> {
        let url = checked(url)?;
        let before = self.pin.len() + self.exclude.len();
        self.pin.retain(|u| !same(u, &url));
        self.exclude.retain(|u| !same(u, &url));
        Ok(self.pin.len() + self.exclude.len() < before)
    }

    /// Sets (or, with None or blank text, removes) the introduction.
    pub fn set_intro(&mut self, text: Option<&str>) {
        self.intro = text
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
    }
}

/// A story URL as the editor gave it, once checked: http(s), no control characters.
fn checked(url: &str) -> Result<String, EditorError> {
    let url = url.trim();
    match crate::articles::canonical_url(url) {
        Some(_) => Ok(url.to_string()),
        None => Err(EditorError::NotAStoryLink(url.to_string())),
    }
}

/// Whether two URLs name the same story (after canonicalisation).
fn same(a: &str, b: &str) -> bool {
    match (
        crate::articles::canonical_url(a),
        crate::articles::canonical_url(b),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_compare_links_after_canonicalisation_and_round_trip_through_the_file() {
        let mut p = EditorPicks::default();
        p.pin("https://ex.com/a?utm_source=x").unwrap();
        p.pin("https://ex.com/a#top").unwrap();
        p.pin("https://ex.com/b").unwrap();
        assert_eq!(p.pin, ["https://ex.com/a?utm_source=x", "https://ex.com/b"]);
        p.exclude("https://ex.com/a").unwrap();
        assert_eq!(p.pin, ["https://ex.com/b"]);
        assert_eq!(p.exclude, ["https://ex.com/a"]);
        p.pin("https://ex.com/a").unwrap();
        assert!(p.exclude.is_empty());
        assert!(p.forget("https://ex.com/b").unwrap());
        assert!(!p.forget("https://ex.com/zzz").unwrap());
        p.set_intro(Some("  Bonjour\nà tous  "));
        assert_eq!(p.intro.as_deref(), Some("Bonjour\nà tous"));
        assert_eq!(EditorPicks::parse(&p.to_toml()).unwrap(), p);
        p.set_intro(Some("   "));
        assert_eq!(p.intro, None);
    }

    #[test]
    fn links_that_are_not_stories_are_refused() {
        let mut p = EditorPicks::default();
        for bad in [
            "javascript:alert(1)",
            "",
            "ftp://ex.com/a",
            "https://ex.com/\u{7}",
        ] {
            assert!(p.pin(bad).is_err(), "{bad:?}");
            assert!(p.exclude(bad).is_err(), "{bad:?}");
        }
        assert_eq!(p, EditorPicks::default());
    }
}
