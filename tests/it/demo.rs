//! The README's first command, `digestif demo`, on a fresh folder: the example
//! issue is built and archived, and every active example subscriber gets one
//! complete message in the outbox, once, even when the demo is run again.

use crate::support::app;

use std::path::Path;
use std::process::Command;

use mail_parser::{MessageParser, MimeHeaders};

const CSV: &str = include_str!("../../subscribers.example.csv");

/// The active addresses of the shipped example list.
fn active_readers() -> Vec<String> {
    let mut r = csv::Reader::from_reader(CSV.as_bytes());
    let headers = r.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (email, status) = (col("email"), col("status"));
    let mut out: Vec<String> = r
        .records()
        .map(|rec| rec.unwrap())
        .filter(|rec| rec.get(status).unwrap_or("active") != "unsubscribed")
        .map(|rec| rec[email].to_lowercase())
        .collect();
    out.sort();
    out
}

fn demo(cwd: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_digestif"))
        .arg("demo")
        .current_dir(cwd)
        .env_remove("DIGESTIF_CONFIG")
        .env_remove("DIGESTIF_SECRET")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn outbox(cwd: &Path) -> Vec<Vec<u8>> {
    app::eml_files(&cwd.join("digestif-demo/outbox"))
}

#[test]
fn the_demo_builds_the_example_issue_and_mails_each_active_reader_once() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path());
    let issue = dir.path().join("digestif-demo/digests/2026-11-27");
    for f in ["digest.json", "email.html", "email.txt"] {
        assert!(issue.join(f).is_file(), "{f} not archived");
    }

    let readers = active_readers();
    assert!(
        readers.len() >= 3,
        "the example list has readers: {readers:?}"
    );
    let mails = outbox(dir.path());
    let mut to: Vec<String> = Vec::new();
    for raw in &mails {
        let m = MessageParser::default()
            .parse(raw)
            .expect("a parsable message");
        to.push(
            m.to()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .unwrap()
                .to_lowercase(),
        );
        assert!(
            m.body_text(0).is_some_and(|t| t.contains("2026")),
            "no text part"
        );
        assert!(
            m.body_html(0).is_some_and(|h| h.contains("<html")),
            "no HTML part"
        );
        let unsub = m.header_raw("List-Unsubscribe").expect("List-Unsubscribe");
        assert!(unsub.contains("/unsubscribe?token="), "{unsub}");
        assert!(m
            .content_type()
            .is_some_and(|c| c.subtype() == Some("alternative")));
    }
    to.sort();
    assert_eq!(to, readers, "one message per active reader");

    // Run again: nobody gets the issue twice.
    demo(dir.path());
    assert_eq!(outbox(dir.path()).len(), mails.len());
}

/// The repository's `digests/2026-11-27/` shows newcomers an archived issue: it
/// must be exactly what `build` writes today for the shipped example feeds and
/// editor's picks (the demo's build), byte for byte.
#[test]
fn the_committed_example_issue_is_what_build_writes_for_the_example_feeds() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path());
    let built = dir.path().join("digestif-demo/digests/2026-11-27");
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("digests/2026-11-27");
    for f in ["editor.toml", "digest.json", "email.html", "email.txt"] {
        let want = std::fs::read(built.join(f)).unwrap();
        let have = std::fs::read(committed.join(f))
            .unwrap_or_else(|e| panic!("digests/2026-11-27/{f}: {e}"));
        assert!(
            have == want,
            "digests/2026-11-27/{f} is out of date: from the repository's top folder, run \
             `digestif --config digestif.example.toml build --date 2026-11-27 --now 2026-11-27T06:00:00+00:00 --force` \
             and commit the result"
        );
    }
}
