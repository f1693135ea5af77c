//! `digestif send`, `ledger` and `unsubscribe` as an operator runs them: the
//! binary, subscribers in SQLite, a real SMTP server (aiosmtpd) over TCP.

use crate::support;

use std::path::PathBuf;
use std::process::Output;

use digestif::config::Secret;
use mail_parser::MessageParser;
use support::site::{
    digestif_cmd, recipients, show, site_dir, smtp_table, stderr, stdout, DATE, NOW,
};
use support::SmtpServer;

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    /// A config sending to `server`, with `extra` keys in `[sender]`, and `n` subscribers
    /// r1..rn@example.com added through the binary.
    fn new(server: &SmtpServer, extra: &str, n: usize) -> Site {
        let cfg = format!(
            "{}{extra}\n\n{}max_attempts = 3\nretry_base_ms = 20\n",
            support::site::sending_head(),
            smtp_table(server, 2)
        );
        let site = Site {
            dir: site_dir(&cfg),
        };
        for i in 1..=n {
            let out = site.run(&["subscribers", "add", &format!("r{i}@example.com")]);
            assert!(out.status.success(), "{}", show(&out));
        }
        site
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("digestif.toml")
    }

    fn run(&self, args: &[&str]) -> Output {
        digestif_cmd(&self.config(), args).output().unwrap()
    }

    fn send(&self, extra: &[&str]) -> Output {
        let mut args = vec!["send", "--date", DATE, "--now", NOW];
        args.extend_from_slice(extra);
        self.run(&args)
    }
}

#[test]
fn limit_sends_that_many_exits_0_and_the_next_run_sends_the_rest_once() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server, "", 5);
    let out = site.send(&["--limit", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(server.count(), 2);
    let text = stdout(&out);
    assert!(
        text.contains("held back by --limit: 3 message(s)"),
        "{}",
        show(&out)
    );
    let last = text.lines().last().unwrap();
    assert_eq!(
        last,
        format!(
            "{DATE}: sent 2, retried 0, failed 0 (0 bounced), skipped 0, in doubt 0, left pending 3"
        )
    );

    let out = site.send(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        stdout(&out).lines().last().unwrap(),
        format!(
            "{DATE}: sent 3, retried 0, failed 0 (0 bounced), skipped 2, in doubt 0, left pending 0"
        )
    );
    let want: Vec<String> = (1..=5).map(|i| format!("r{i}@example.com")).collect();
    assert_eq!(recipients(&server), want);
}

#[test]
fn limit_zero_is_a_usage_error_and_sends_nothing() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server, "", 2);
    let out = site.send(&["--limit", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--limit"));
    assert_eq!(server.count(), 0);
}

#[test]
fn a_run_that_leaves_messages_pending_exits_1_even_with_a_limit() {
    // The server answers 451 to the only recipient on every attempt: it stays pending.
    let server = SmtpServer::start(&["--reject-rcpt", "r1@example.com:451"]);
    let site = Site::new(&server, "", 1);
    let out = site.send(&["--limit", "5"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stdout(&out)
        .lines()
        .last()
        .unwrap()
        .ends_with("left pending 1"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("left pending"));
}

#[test]
fn unsubscribing_mid_issue_is_idempotent_and_the_rest_of_that_issue_skips_them() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server, "", 4);
    // r1 and r2 get the issue; r3 and r4 are still pending in the ledger.
    let out = site.send(&["--limit", "2"]);
    assert!(out.status.success(), "{}", show(&out));
    for expected in ["r4@example.com unsubscribed", "already unsubscribed"] {
        let out = site.run(&["unsubscribe", "r4@Example.COM"]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        assert!(stdout(&out).contains(expected), "{}", show(&out));
    }
    // An unknown address is an error the mail route can see (exit 1), not a silent success.
    let out = site.run(&["unsubscribe", "nobody@example.com"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("not a subscriber"), "{}", show(&out));

    let out = site.send(&[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        recipients(&server),
        vec!["r1@example.com", "r2@example.com", "r3@example.com"]
    );
    // They stay unsubscribed for the issues to come.
    let out = site.run(&["subscribers", "list", "--status", "unsubscribed"]);
    assert!(stdout(&out).contains("r4@example.com"), "{}", show(&out));
}

#[test]
fn ledger_lists_each_failure_with_its_address_and_the_servers_answer() {
    let server = SmtpServer::start(&["--reject-rcpt", "r2@example.com:550"]);
    let site = Site::new(&server, "", 3);
    let out = site.send(&[]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(stdout(&out)
        .lines()
        .last()
        .unwrap()
        .contains("failed 1 (1 bounced)"));
    let out = site.run(&["ledger", "--date", DATE]);
    assert!(out.status.success(), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{DATE}: pending 0, sending 0, sent 2, failed 1")),
        "{text}"
    );
    let failure = text
        .lines()
        .find(|l| l.starts_with("failed: r2@example.com: "))
        .unwrap_or_else(|| panic!("no failure line: {text}"));
    assert!(failure.contains("550"), "{failure}");
    assert!(failure.contains("no such user"), "{failure}");
    // Without --date: the latest issue.
    let out = site.run(&["ledger"]);
    assert!(stdout(&out).contains("sent 2, failed 1"), "{}", show(&out));
}

#[test]
fn the_default_subject_is_the_name_the_date_and_the_top_story() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server, "", 1);
    let out = site.send(&[]);
    assert!(out.status.success(), "{}", show(&out));
    let m = &server.messages()[0];
    let p = MessageParser::default().parse(&m.raw).unwrap();
    assert_eq!(
        p.subject(),
        Some("L'Essentiel · vendredi 27 novembre 2026 · Budget 2027 : ce qui change")
    );
}

#[test]
fn a_subject_template_in_the_config_is_used() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server, "subject = \"{top_title} | {name}\"", 1);
    let out = site.send(&[]);
    assert!(out.status.success(), "{}", show(&out));
    let got = server.messages();
    let p = MessageParser::default().parse(&got[0].raw).unwrap();
    assert_eq!(
        p.subject(),
        Some("Budget 2027 : ce qui change | L'Essentiel")
    );
}

#[test]
fn a_dry_run_checks_the_issue_without_a_secret_but_a_real_send_needs_one() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server, "", 2);
    let mut dry = digestif_cmd(
        &site.config(),
        &["send", "--date", DATE, "--now", NOW, "--dry-run"],
    );
    dry.env_remove(Secret::ENV);
    let out = dry.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).contains("nothing sent"), "{}", show(&out));
    let mut real = digestif_cmd(&site.config(), &["send", "--date", DATE, "--now", NOW]);
    real.env_remove(Secret::ENV);
    let out = real.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(server.count(), 0);
}

/// One sender per issue across processes: a second `send` while the first runs
/// (or while `serve` holds the issue) does nothing, and says so; nobody gets two
/// copies; the lease is released at the end.
#[test]
fn a_second_send_of_the_same_issue_while_one_runs_does_nothing_and_says_so() {
    let server = SmtpServer::start(&["--delay-ms", "40"]);
    let site = Site::new(&server, "", 20);
    let first = digestif_cmd(&site.config(), &["send", "--date", DATE, "--now", NOW])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    server.wait_for(1, std::time::Duration::from_secs(30));
    let second = site.send(&[]);
    assert_eq!(second.status.code(), Some(1), "{}", show(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("being sent by another process"),
        "{}",
        show(&second)
    );
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", show(&first));
    let mut want: Vec<String> = (1..=20).map(|i| format!("r{i}@example.com")).collect();
    want.sort();
    let mut got = recipients(&server);
    got.sort();
    assert_eq!(got, want, "each reader exactly once");

    // Released: the next send runs (and has nothing left to send).
    let again = site.send(&[]);
    assert_eq!(again.status.code(), Some(0), "{}", show(&again));
    assert_eq!(server.count(), 20);
}

#[test]
fn a_send_waits_for_nobody_when_serve_holds_the_issue_and_leaves_the_ledger_alone() {
    use digestif::store::{Leases, Ledger, SqliteStore};
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server, "", 3);
    let store = SqliteStore::open(&site.dir.path().join("digestif.db")).unwrap();
    let now = digestif::clock::now();
    let lease = format!("issue:{DATE}");
    assert!(store
        .try_lease(
            &lease,
            "serve-elsewhere",
            now,
            now + chrono::Duration::hours(1)
        )
        .unwrap());
    let out = site.send(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(server.count(), 0);
    let ledger = stdout(&site.run(&["ledger", "--date", DATE]));
    assert!(ledger.contains("being sent by serve-elsewhere"), "{ledger}");
    let date = chrono::NaiveDate::parse_from_str(DATE, "%Y-%m-%d").unwrap();
    assert_eq!(store.ledger_counts(date).unwrap().sending, 0);
    store.release_lease(&lease, "serve-elsewhere").unwrap();
    let out = site.send(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(server.count(), 3);
    let ledger = stdout(&site.run(&["ledger", "--date", DATE]));
    assert!(
        !ledger.contains("being sent"),
        "released at the end: {ledger}"
    );
}

/// An archived issue too large for Gmail (it would clip the unsubscribe link):
/// `send` refuses it and sends nothing; `--no-lint` sends it anyway.
#[test]
fn an_issue_that_breaks_a_sending_rule_is_sent_only_with_no_lint() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server, "", 2);
    let built = site.run(&["build", "--date", DATE, "--now", NOW]);
    assert!(built.status.success(), "{}", show(&built));
    let path = site
        .dir
        .path()
        .join("digests")
        .join(DATE)
        .join("digest.json");
    let mut digest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let story = digest["stories"][0].clone();
    digest["stories"] = (0..300)
        .map(|i| {
            let mut s = story.clone();
            s["article"]["url"] = format!("https://example.com/long/{i}").into();
            s["article"]["summary"] = "Un très long résumé. ".repeat(100).into();
            s
        })
        .collect();
    std::fs::write(&path, serde_json::to_vec(&digest).unwrap()).unwrap();
    // Senders read the issue frozen in the database: the edited one goes there.
    let cfg = digestif::config::Config::from_file(&site.config()).unwrap();
    let edited: digestif::domain::Digest = serde_json::from_value(digest).unwrap();
    let assets = digestif::pipeline::assets(&cfg).unwrap();
    let issue = digestif::pipeline::frozen(&cfg, &assets, &edited, edited.built_at).unwrap();
    digestif::store::IssueStore::freeze_issue(
        &digestif::store::SqliteStore::for_config(&cfg).unwrap(),
        &issue,
        digestif::store::Freeze::Replace,
    )
    .unwrap();

    let refused = site.send(&[]);
    assert_eq!(refused.status.code(), Some(1), "{}", show(&refused));
    assert!(
        stderr(&refused).contains("breaks 1 sending rule(s) (too-large"),
        "{}",
        show(&refused)
    );
    assert_eq!(server.count(), 0);

    let forced = site.send(&["--no-lint"]);
    assert_eq!(forced.status.code(), Some(0), "{}", show(&forced));
    assert_eq!(server.count(), 2);
}
