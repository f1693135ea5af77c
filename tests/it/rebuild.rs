//! `digestif build` for a date whose issue already went out: the archive (the web
//! version, "view in browser") must keep showing what subscribers received.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::site::{config_head, digestif_cmd, show, DATE, NOW};

const ITEM_BUDGET: &str = r#"<item><title>Budget 2027 : ce qui change</title><link>https://example.com/budget</link>
<description>Le gouvernement présente ses recettes pour 2027.</description>
<pubDate>Fri, 27 Nov 2026 05:00:00 +0100</pubDate></item>"#;
const ITEM_CLIMAT: &str = r#"<item><title>Sommet sur le climat à Nairobi</title><link>https://example.com/climat</link>
<description>Les négociations reprennent ce matin.</description>
<pubDate>Thu, 26 Nov 2026 20:00:00 +0100</pubDate></item>"#;
/// Published after the first build: a rebuild picks it up.
const ITEM_LATE: &str = r#"<item><title>Grève des contrôleurs aériens levée</title><link>https://example.com/greve</link>
<description>Les vols reprennent normalement dès ce matin.</description>
<pubDate>Fri, 27 Nov 2026 06:10:00 +0100</pubDate></item>"#;

fn feed(items: &[&str]) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Monde</title><link>https://example.com/</link>
{}
</channel></rss>"#,
        items.join("\n")
    )
}

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("feeds")).unwrap();
        let cfg = format!(
            "{}\n[smtp]\ntransport = \"file\"\nfile_dir = \"outbox\"\n",
            config_head(None)
        );
        std::fs::write(dir.path().join("digestif.toml"), cfg).unwrap();
        let site = Site { dir };
        site.set_feed(&[ITEM_BUDGET, ITEM_CLIMAT]);
        site
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn set_feed(&self, items: &[&str]) {
        std::fs::write(self.path().join("feeds/monde.xml"), feed(items)).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        digestif_cmd(&self.path().join("digestif.toml"), args)
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    }

    fn build(&self, extra: &[&str]) -> Output {
        let mut args = vec!["build", "--date", DATE, "--now", NOW];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn send(&self, extra: &[&str]) -> Output {
        let mut args = vec!["send", "--date", DATE, "--now", NOW];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn add_subscribers(&self, n: usize) {
        for i in 1..=n {
            let out = self.run(&["subscribers", "add", &format!("r{i}@example.com")]);
            assert!(out.status.success(), "{}", show(&out));
        }
    }

    fn issue_dir(&self) -> PathBuf {
        self.path().join("digests").join(DATE)
    }

    /// The archive's three files, byte for byte.
    fn archive(&self) -> Vec<Vec<u8>> {
        ["digest.json", "email.html", "email.txt"]
            .iter()
            .map(|f| std::fs::read(self.issue_dir().join(f)).unwrap())
            .collect()
    }

    fn digest_json(&self) -> String {
        std::fs::read_to_string(self.issue_dir().join("digest.json")).unwrap()
    }

    fn outbox(&self) -> Vec<String> {
        let dir = self.path().join("outbox");
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|r| {
                r.flatten()
                    .map(|e| std::fs::read_to_string(e.path()).unwrap())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

#[test]
fn rebuilding_a_partly_sent_issue_into_a_different_digest_is_refused_and_the_archive_kept() {
    let site = Site::new();
    site.add_subscribers(3);
    let out = site.build(&[]);
    assert!(out.status.success(), "{}", show(&out));
    let out = site.send(&["--limit", "1"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(site.outbox().len(), 1);
    let before = site.archive();

    site.set_feed(&[ITEM_LATE, ITEM_BUDGET, ITEM_CLIMAT]);
    let out = site.build(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already sent to 1 subscriber"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(site.archive(), before, "the archive was overwritten");

    // The rest of the issue goes out as the first reader got it.
    let out = site.send(&[]);
    assert!(out.status.success(), "{}", show(&out));
    let sent = site.outbox();
    assert_eq!(sent.len(), 3);
    for m in &sent {
        let p = mail_parser::MessageParser::default()
            .parse(m.as_bytes())
            .unwrap();
        for body in [p.body_text(0).unwrap(), p.body_html(0).unwrap()] {
            assert!(body.contains("Budget 2027"), "a message lacks the story");
            assert!(!body.contains("Grève"), "a message has the rebuilt issue");
        }
    }
}

#[test]
fn force_overwrites_the_archive_of_a_sent_issue() {
    let site = Site::new();
    site.add_subscribers(1);
    let out = site.send(&[]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(!site.digest_json().contains("https://example.com/greve"));

    site.set_feed(&[ITEM_LATE, ITEM_BUDGET, ITEM_CLIMAT]);
    let out = site.build(&["--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert!(site.digest_json().contains("https://example.com/greve"));
}

#[test]
fn rebuilding_a_sent_issue_that_comes_out_the_same_succeeds_and_changes_nothing() {
    let site = Site::new();
    site.add_subscribers(2);
    let out = site.send(&[]);
    assert!(out.status.success(), "{}", show(&out));
    let before = site.archive();
    let out = site.build(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("unchanged"));
    assert_eq!(site.archive(), before);
}

#[test]
fn an_issue_never_sent_is_rebuilt_freely_and_no_database_is_created() {
    let site = Site::new();
    let out = site.build(&[]);
    assert!(out.status.success(), "{}", show(&out));
    site.set_feed(&[ITEM_LATE, ITEM_BUDGET, ITEM_CLIMAT]);
    let out = site.build(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(site.digest_json().contains("https://example.com/greve"));
    assert!(!site.path().join("digestif.db").exists());
}

#[test]
fn an_issue_sent_to_nobody_yet_is_rebuilt_freely_even_with_subscribers() {
    let site = Site::new();
    let out = site.build(&[]);
    assert!(out.status.success(), "{}", show(&out));
    // Subscribers exist (the database too), but nothing of this date went out.
    site.add_subscribers(2);
    site.set_feed(&[ITEM_LATE, ITEM_BUDGET, ITEM_CLIMAT]);
    let out = site.build(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(site.digest_json().contains("https://example.com/greve"));
}

/// While another process holds the issue's lease (a send building or sending
/// it, here on another machine), `build` is refused, names that process, says
/// what to do and writes nothing, even with `--force`; once the lease is free
/// it builds, and releases the lease it took meanwhile.
#[test]
fn build_is_refused_while_another_process_holds_the_issues_lease_and_releases_its_own() {
    use digestif::store::{Leases, SqliteStore};
    let site = Site::new();
    site.add_subscribers(1);
    let store = SqliteStore::open(&site.path().join("digestif.db")).unwrap();
    let lease = format!("issue:{DATE}");
    let holder = "send-elsewhere.example-4242-0000abcd";
    let now = digestif::clock::now();
    assert!(store
        .try_lease(&lease, holder, now, now + chrono::Duration::hours(1))
        .unwrap());
    for extra in [&[][..], &["--force"][..]] {
        let out = site.build(extra);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(holder), "{err}");
        assert!(err.contains("run `digestif build"), "{err}");
        assert!(!site.issue_dir().exists(), "nothing archived");
    }

    store.release_lease(&lease, holder).unwrap();
    let out = site.build(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(site.digest_json().contains("https://example.com/budget"));
    assert_eq!(store.lease_holder(&lease).unwrap(), None, "released");
}
