//! Where returned mail is read from: standard input (a Postfix pipe), a Maildir,
//! an mbox file. Each message comes with a name for the log and the event's source,
//! and, for a Maildir, the move that marks it read.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// One message to read.
#[derive(Debug)]
pub struct Item {
    /// `stdin`, `maildir:<file name>`, `mbox:<file>#<n>`.
    pub source: String,
    pub raw: Vec<u8>,
    /// For a Maildir: the file in `new/`, moved to `cur/` once read.
    file: Option<PathBuf>,
}

impl Item {
    /// Marks the message read: a Maildir file moves from `new/` to `cur/` with the
    /// Seen flag (what a mail client does), so the next run does not see it again.
    pub fn done(&self) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let name = file
            .file_name()
            .context("a Maildir file has a name")?
            .to_string_lossy();
        let cur = file
            .parent()
            .and_then(Path::parent)
            .context("a Maildir file is in new/")?
            .join("cur");
        let seen = match name.split_once(":2,") {
            Some((base, flags)) if flags.contains('S') => format!("{base}:2,{flags}"),
            Some((base, flags)) => format!("{base}:2,{flags}S"),
            None => format!("{name}:2,S"),
        };
        std::fs::rename(file, cur.join(&seen))
            .with_context(|| format!("cannot move {} to {}", file.display(), cur.display()))
    }
}

/// The one message on standard input.
pub fn stdin() -> Result<Items> {
    let mut raw = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut raw)
        .context("cannot read the message from standard input")?;
    Ok(Box::new(std::iter::once(Ok(Item {
        source: "stdin".into(),
        raw,
        file: None,
    }))))
}

/// Messages read one at a time: a mailbox of any size is never held in memory at once.
pub type Items = Box<dyn Iterator<Item = Result<Item>>>;

/// The messages in `dir/new`, oldest name first.
pub fn maildir(dir: &Path) -> Result<Items> {
    let new = dir.join("new");
    if !new.is_dir() || !dir.join("cur").is_dir() {
        bail!(
            "{} is not a Maildir (it needs new/ and cur/ folders)",
            dir.display()
        );
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&new)
        .with_context(|| format!("cannot list {}", new.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(Box::new(files.into_iter().map(|f| {
        let raw = std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
        Ok(Item {
            source: format!(
                "maildir:{}",
                f.file_name().unwrap_or_default().to_string_lossy()
            ),
            raw,
            file: Some(f),
        })
    })))
}

/// The messages of an mbox file (left as it is: a message read again counts once).
pub fn mbox(path: &Path) -> Result<Items> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let name = path.display().to_string();
    Ok(Box::new(
        mail_parser::mailbox::mbox::MessageIterator::new(BufReader::new(file))
            .enumerate()
            .map(move |(i, m)| {
                let m = m.with_context(|| format!("cannot read {name}"))?;
                Ok(Item {
                    source: format!("mbox:{name}#{}", i + 1),
                    raw: m.unwrap_contents(),
                    file: None,
                })
            }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_maildir_message_moves_to_cur_with_the_seen_flag() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        std::fs::write(dir.path().join("new/2.host"), b"Subject: b\n\nb").unwrap();
        std::fs::write(dir.path().join("new/1.host:2,F"), b"Subject: a\n\na").unwrap();
        let items: Vec<Item> = maildir(dir.path()).unwrap().map(Result::unwrap).collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].source, "maildir:1.host:2,F");
        for i in &items {
            i.done().unwrap();
        }
        assert_eq!(maildir(dir.path()).unwrap().count(), 0);
        assert!(dir.path().join("cur/1.host:2,FS").is_file());
        assert!(dir.path().join("cur/2.host:2,S").is_file());
    }

    #[test]
    fn a_folder_that_is_not_a_maildir_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = maildir(dir.path()).err().unwrap().to_string();
        assert!(e.contains("is not a Maildir"), "{e}");
    }

    #[test]
    fn an_mbox_gives_each_message() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bounces.mbox");
        std::fs::write(
            &p,
            "From MAILER-DAEMON Fri Nov 27 06:00:14 2026\nSubject: a\n\na\n\n\
             From MAILER-DAEMON Fri Nov 27 06:00:15 2026\nSubject: b\n\nb\n",
        )
        .unwrap();
        let items: Vec<Item> = mbox(&p).unwrap().map(Result::unwrap).collect();
        assert_eq!(items.len(), 2);
        assert!(String::from_utf8_lossy(&items[1].raw).contains("Subject: b"));
    }
}
