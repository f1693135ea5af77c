//! The archive: `digests/<date>/` holds `digest.json`, `email.html`, `email.txt`
//! (and the editor's `editor.toml`). Written atomically: write, then rename.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::NaiveDate;

use crate::domain::Digest;
use crate::render::RenderedEmail;
use crate::store::FrozenIssue;

/// Folder of the issue of `date`.
pub fn issue_dir(archive_dir: &Path, date: NaiveDate) -> PathBuf {
    archive_dir.join(date.format("%Y-%m-%d").to_string())
}

/// Path of the editor's file for `date`.
pub fn editor_file(archive_dir: &Path, date: NaiveDate) -> PathBuf {
    issue_dir(archive_dir, date).join("editor.toml")
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename,
/// so that a reader never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot move {} into place", path.display())
    })?;
    Ok(())
}

/// Archives an issue: `digest.json`, `email.html`, `email.txt`.
pub fn write_issue(archive_dir: &Path, digest: &Digest, email: &RenderedEmail) -> Result<PathBuf> {
    let dir = issue_dir(archive_dir, digest.date);
    let json = serde_json::to_vec_pretty(digest).context("cannot serialise the digest")?;
    write_atomic(&dir.join("email.html"), email.html.as_bytes())?;
    write_atomic(&dir.join("email.txt"), email.text.as_bytes())?;
    // digest.json last: its presence means the issue is complete.
    write_atomic(&dir.join("digest.json"), &json)?;
    Ok(dir)
}

/// Writes a frozen issue as `write_issue` does, leaving the files that hold
/// what it keeps already as they are.
pub fn write_frozen(archive_dir: &Path, issue: &FrozenIssue) -> Result<PathBuf> {
    let dir = issue_dir(archive_dir, issue.date);
    let write = |name: &str, text: &str| -> Result<()> {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(b) if b == text.as_bytes() => Ok(()),
            _ => write_atomic(&path, text.as_bytes()),
        }
    };
    write("email.html", &issue.html)?;
    write("email.txt", &issue.text)?;
    write("digest.json", &issue.digest)?;
    Ok(dir)
}

/// Reads the archived digest of `date`, if any.
pub fn read_digest(archive_dir: &Path, date: NaiveDate) -> Result<Option<Digest>> {
    let path = issue_dir(archive_dir, date).join("digest.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let d = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not a valid digest; rebuild it with `digestif build --date {date}`",
            path.display()
        )
    })?;
    Ok(Some(d))
}

/// Dates with a complete archived issue, oldest first.
pub fn dates(archive_dir: &Path) -> Result<Vec<NaiveDate>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(archive_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", archive_dir.display())),
    };
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Ok(d) = NaiveDate::parse_from_str(name, "%Y-%m-%d") {
            if entry.path().join("digest.json").is_file() {
                out.push(d);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Canonical URL → date of the earliest issue before `before` that carried it.
pub fn sent_history(archive_dir: &Path, before: NaiveDate) -> Result<BTreeMap<String, NaiveDate>> {
    let mut out = BTreeMap::new();
    for d in dates(archive_dir)? {
        if d >= before {
            break;
        }
        if let Some(digest) = read_digest(archive_dir, d)? {
            for s in &digest.stories {
                if let Some(u) = &s.article.url {
                    out.entry(u.clone()).or_insert(d);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn dates_ignore_incomplete_and_foreign_folders() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("2026-11-26")).unwrap();
        std::fs::write(dir.path().join("2026-11-26/digest.json"), "{}").unwrap();
        std::fs::create_dir_all(dir.path().join("2026-11-27")).unwrap();
        std::fs::create_dir_all(dir.path().join("notes")).unwrap();
        let d = dates(dir.path()).unwrap();
        assert_eq!(d, vec![NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()]);
    }
}
