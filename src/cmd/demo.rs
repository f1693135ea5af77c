//! `digestif demo`: the whole job on the built-in example, no server needed.
//!
//! Lays the example config, feeds, editor's picks and subscribers into a
//! folder, builds the example issue (2026-11-27, the date the example feeds
//! were written for, so it works on whatever day it is run; the same issue as
//! the repository's `digests/2026-11-27/`), imports the subscribers and sends the
//! issue through the file transport: one `.eml` per subscriber in `outbox/`.

use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, FixedOffset, NaiveDate};

use crate::archive::write_atomic;
use crate::cli::{BuildArgs, DateArgs, DemoArgs, SendArgs, SubscribersCmd};

use super::CmdResult;

/// The date and "now" the example feeds were written for.
pub const DEMO_DATE: &str = "2026-11-27";
pub const DEMO_NOW: &str = "2026-11-27T06:00:00+00:00";

const FILES: &[(&str, &str)] = &[
    (
        "subscribers.example.csv",
        include_str!("../../subscribers.example.csv"),
    ),
    ("digestif.toml", include_str!("../../digestif.example.toml")),
    (
        "examples/feeds/monde.xml",
        include_str!("../../examples/feeds/monde.xml"),
    ),
    (
        "examples/feeds/economie.xml",
        include_str!("../../examples/feeds/economie.xml"),
    ),
    (
        "examples/feeds/culture.json",
        include_str!("../../examples/feeds/culture.json"),
    ),
    (
        "examples/feeds/sport.xml",
        include_str!("../../examples/feeds/sport.xml"),
    ),
    (
        "digests/2026-11-27/editor.toml",
        include_str!("../../digests/2026-11-27/editor.toml"),
    ),
];

/// The demo folder's own signing secret, named by its config.
pub const SECRET_FILE: &str = "demo.secret";

/// Writes the example files under `dir` (overwriting earlier demo files), and
/// a random secret for this folder unless it has one: a rerun keeps the links
/// of earlier runs working, and no two demo folders share a secret.
pub fn lay_out(dir: &Path) -> anyhow::Result<()> {
    for (name, body) in FILES {
        let body = if *name == "digestif.toml" {
            format!(
                "{body}\n# Written by `digestif demo`: a random secret for this folder only.\n\
                 [secrets]\nfile = \"{SECRET_FILE}\"\n"
            )
        } else {
            body.to_string()
        };
        write_atomic(&dir.join(name), body.as_bytes())
            .with_context(|| format!("cannot write the demo file {name}"))?;
    }
    write_secret(&dir.join(SECRET_FILE))
}

/// Creates `path` with a random secret, readable by its owner only, if it does not exist.
fn write_secret(path: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(mut f) => {
            let secret = crate::config::Secret::random();
            f.write_all(secret.bytes())
                .and_then(|_| f.write_all(b"\n"))
                .with_context(|| format!("cannot write {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

pub fn demo(args: &DemoArgs) -> CmdResult {
    let dir = &args.out;
    lay_out(dir)?;
    let config = dir.join("digestif.toml");
    let when = DateArgs {
        date: Some(NaiveDate::parse_from_str(DEMO_DATE, "%Y-%m-%d").expect("valid")),
        now: Some(DateTime::<FixedOffset>::parse_from_rfc3339(DEMO_NOW).expect("valid")),
    };
    println!("Demo folder: {}", dir.display());
    super::build::build(
        Some(&config),
        &BuildArgs {
            when: when.clone(),
            force: false,
        },
    )?;
    super::subscribers::run(
        Some(&config),
        SubscribersCmd::Import {
            file: dir.join("subscribers.example.csv"),
            dry_run: false,
        },
    )?;
    super::send::send(
        Some(&config),
        &SendArgs {
            when: when.clone(),
            dry_run: false,
            to: None,
            limit: None,
            no_lint: false,
        },
    )?;
    println!("Messages as sent: {}", dir.join("outbox").display());
    println!(
        "Open {} to see the issue, or run: digestif --config {} preview --date {DEMO_DATE}",
        dir.join("digests")
            .join(DEMO_DATE)
            .join("email.html")
            .display(),
        config.display()
    );
    Ok(())
}
