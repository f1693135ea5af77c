// End-to-end tests through the binary (SQLite store + render); to be included from
// tests/deliver.rs with `#[path = "support/binary_e2e.rs"] mod binary_e2e;` once the
// SQLite store (SqliteStore::open) is merged. Not compiled before that.

/// Through the binary: config and feeds in a temp dir, subscribers in SQLite,
/// SMTP to the test server. Needs the render and store stages.
mod binary {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output, Stdio};
    use std::time::Duration;

    use digestif::config::Secret;
    use digestif::deliver::token;
    use digestif::domain::{SubscriberEmail, SubscriberStatus};
    use digestif::store::{NewSubscriber, SqliteStore, Store};
    use mail_parser::{MessageParser, MimeHeaders};

    const SECRET: &str = "test-secret-0123456789abcdef";
    const DATE: &str = "2026-11-27";
    const NOW: &str = "2026-11-27T06:30:00+01:00";

    const FEED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Monde</title><link>https://example.com/</link>
<item><title>Budget 2027 : ce qui change</title><link>https://example.com/budget</link>
<description>Le gouvernement présente ses recettes pour 2027.</description>
<pubDate>Fri, 27 Nov 2026 05:00:00 +0100</pubDate></item>
<item><title>Sommet sur le climat à Nairobi</title><link>https://example.com/climat</link>
<description>Les négociations reprennent ce matin.</description>
<pubDate>Thu, 26 Nov 2026 20:00:00 +0100</pubDate></item>
</channel></rss>"#;

    struct Site {
        dir: tempfile::TempDir,
    }

    impl Site {
        fn new(server: &SmtpServer, pool: usize, subscribers: usize) -> Site {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("feeds")).unwrap();
            std::fs::write(dir.path().join("feeds/monde.xml"), FEED).unwrap();
            let cfg = format!(
                r#"[newsletter]
name = "L'Essentiel"
tagline = "La newsletter qui vous briefe en 5 min"
locale = "fr"
timezone = "Europe/Paris"
base_url = "https://news.example.com/digestif"

[[sources]]
name = "Monde"
path = "feeds/monde.xml"
category = "Monde"

[sender]
from = "L'Essentiel <briefing@news.example.com>"

[smtp]
transport = "smtp"
host = "127.0.0.1"
port = {port}
tls = "none"
pool_size = {pool}
timeout_s = 10
max_attempts = 5
retry_base_ms = 20
"#,
                port = server.port
            );
            std::fs::write(dir.path().join("digestif.toml"), cfg).unwrap();
            let site = Site { dir };
            let store = site.store();
            let rows: Vec<NewSubscriber> = (1..=subscribers)
                .map(|i| NewSubscriber {
                    email: SubscriberEmail::parse(&format!("r{i}@example.com")).unwrap(),
                    name: (i % 2 == 0).then(|| format!("Lecteur {i}")),
                    locale: None,
                    categories: vec![],
                    timezone: None,
                    status: SubscriberStatus::Active,
                })
                .collect();
            store.upsert_many(&rows).unwrap();
            site
        }

        fn config(&self) -> PathBuf {
            self.dir.path().join("digestif.toml")
        }

        fn store(&self) -> SqliteStore {
            SqliteStore::open(&self.dir.path().join("digestif.db")).unwrap()
        }

        fn cmd(&self, args: &[&str]) -> Command {
            let mut c = Command::new(env!("CARGO_BIN_EXE_digestif"));
            c.arg("--config")
                .arg(self.config())
                .args(args)
                .env(Secret::ENV, SECRET)
                .env("RUST_LOG", "warn");
            c
        }

        fn send(&self) -> Output {
            self.cmd(&["send", "--date", DATE, "--now", NOW])
                .output()
                .unwrap()
        }
    }

    fn everyone(n: usize) -> Vec<String> {
        let mut r: Vec<String> = (1..=n).map(|i| format!("r{i}@example.com")).collect();
        r.sort();
        r
    }

    fn recipients(server: &SmtpServer) -> Vec<String> {
        let mut r: Vec<String> = server
            .messages()
            .iter()
            .map(|m| m.rcpt().to_string())
            .collect();
        r.sort();
        r
    }

    fn show(o: &Output) -> String {
        format!(
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    #[test]
    fn every_active_subscriber_gets_one_complete_personal_message() {
        let server = SmtpServer::start(&["--pipelining"]);
        let site = Site::new(&server, 4, 12);
        let store = site.store();
        let gone = store
            .subscriber_by_email(&SubscriberEmail::parse("r5@example.com").unwrap())
            .unwrap()
            .unwrap();
        let out = site.cmd(&["unsubscribe", "r5@example.com"]).output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
        // Idempotent.
        let out = site.cmd(&["unsubscribe", "r5@example.com"]).output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(
            store.subscriber_by_id(gone.id).unwrap().unwrap().status,
            SubscriberStatus::Unsubscribed
        );

        let out = site.send();
        assert!(out.status.success(), "{}", show(&out));
        let mut want = everyone(12);
        want.retain(|a| a != "r5@example.com");
        assert_eq!(recipients(&server), want);

        let secret = Secret::new(SECRET);
        let list_id = "l-essentiel.news.example.com";
        for m in server.messages() {
            assert_eq!(m.mail_from, "briefing@news.example.com");
            let raw = String::from_utf8(m.raw.clone()).expect("ASCII message");
            assert!(raw.split("\r\n").all(|l| l.len() <= 998));
            let p = MessageParser::default().parse(&m.raw).unwrap();
            assert_eq!(
                p.from().unwrap().first().unwrap().address(),
                Some("briefing@news.example.com")
            );
            assert_eq!(p.to().unwrap().first().unwrap().address(), Some(m.rcpt()));
            let subject = p.subject().unwrap();
            assert!(subject.contains("L'Essentiel"), "{subject}");
            assert!(p.date().is_some());
            assert!(p.message_id().unwrap().ends_with("@news.example.com"));
            let flat = |n: &str| {
                p.header_raw(n)
                    .unwrap_or_else(|| panic!("no {n} header"))
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            assert_eq!(flat("List-Id"), format!("L'Essentiel <{list_id}>"));
            assert_eq!(flat("List-Unsubscribe-Post"), "List-Unsubscribe=One-Click");
            let lu = flat("List-Unsubscribe");
            let tok = lu
                .split("token=")
                .nth(1)
                .unwrap()
                .split('>')
                .next()
                .unwrap()
                .to_string();
            assert!(lu.starts_with(&format!(
                "<https://news.example.com/digestif/unsubscribe?token={tok}>"
            )));
            assert!(lu.contains(&format!(
                "<mailto:unsubscribe@news.example.com?subject=unsubscribe%20{tok}>"
            )));
            // The token names this subscriber and shows nothing of the address.
            let id = token::verify_unsubscribe(&secret, list_id, &tok).unwrap();
            let sub = store.subscriber_by_id(id).unwrap().unwrap();
            assert_eq!(sub.email.as_str(), m.rcpt());
            assert!(!tok.contains(m.rcpt().split('@').next().unwrap()));

            let ct = p.content_type().unwrap();
            assert_eq!(
                (ct.ctype(), ct.subtype()),
                ("multipart", Some("alternative"))
            );
            let text = p.body_text(0).unwrap();
            let html = p.body_html(0).unwrap();
            let link = format!("https://news.example.com/digestif/unsubscribe?token={tok}");
            assert!(text.contains(&link), "text lacks the personal link");
            assert!(html.contains(&link), "HTML lacks the personal link");
            let view = format!("https://news.example.com/digestif/archive/{DATE}");
            assert!(text.contains(&view), "text lacks the view-in-browser link");
            assert!(html.contains(&view), "HTML lacks the view-in-browser link");
            assert!(html.contains("Budget 2027"));
            if let Some(name) = &sub.name {
                assert!(text.contains(name.as_str()), "greeting without the name");
            }
        }

        // A second send sends nothing new.
        let out = site.send();
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(server.count(), 11);
        let out = site.cmd(&["ledger", "--date", DATE]).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("sent 11"), "{}", show(&out));
    }

    #[test]
    fn a_451_then_250_is_retried_and_each_subscriber_served_once() {
        let server = SmtpServer::start(&["--fail-first-data", "451"]);
        let site = Site::new(&server, 2, 6);
        let out = site.send();
        assert!(out.status.success(), "{}", show(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("retried 1"), "{}", show(&out));
        assert_eq!(recipients(&server), everyone(6));
    }

    #[test]
    fn a_550_recipient_is_failed_bounced_and_skipped_next_time() {
        let server = SmtpServer::start(&["--reject-rcpt", "r2@example.com:550", "--pipelining"]);
        let site = Site::new(&server, 2, 5);
        let out = site.send();
        assert!(out.status.success(), "{}", show(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(stdout.contains("failed: r2@example.com"), "{stdout}");
        let mut want = everyone(5);
        want.retain(|a| a != "r2@example.com");
        assert_eq!(recipients(&server), want);
        let sub = site
            .store()
            .subscriber_by_email(&SubscriberEmail::parse("r2@example.com").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(sub.status, SubscriberStatus::Bounced);
        let out = site.cmd(&["ledger", "--date", DATE]).output().unwrap();
        let ledger = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(ledger.contains("failed 1") && ledger.contains("r2@example.com"), "{ledger}");
        // Next issue: the bounced address is not even enqueued.
        let out = site
            .cmd(&["send", "--date", "2026-11-28", "--now", "2026-11-28T06:30:00+01:00"])
            .output()
            .unwrap();
        let _ = out; // nothing new may be found for that date; either way r2 gets nothing
        assert!(!recipients(&server)[4..].contains(&"r2@example.com".to_string()));
    }

    #[test]
    fn a_server_dropping_the_connection_mid_run_still_serves_everyone_once() {
        let server = SmtpServer::start(&["--drop-after", "7"]);
        let site = Site::new(&server, 3, 20);
        let out = site.send();
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(recipients(&server), everyone(20));
    }

    #[test]
    fn killed_mid_send_and_restarted_everyone_gets_one_copy_but_the_named_in_doubt() {
        let pool = 3;
        let n = 40;
        let server = SmtpServer::start(&["--delay-ms", "60"]);
        let site = Site::new(&server, pool, n);
        let mut child = site
            .cmd(&["send", "--date", DATE, "--now", NOW])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        server.wait_for(8, Duration::from_secs(60));
        // SIGKILL: no chance to clean up.
        child.kill().unwrap();
        child.wait().unwrap();
        let before = server.count();
        assert!(before < n, "the run finished before it was killed");

        let out = site.send();
        assert!(out.status.success(), "{}", show(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let in_doubt: Vec<String> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("in doubt (may have received two copies): "))
            .map(str::to_string)
            .collect();
        assert!(in_doubt.len() <= pool, "{stdout}");

        let mut counts = std::collections::BTreeMap::new();
        for r in recipients(&server) {
            *counts.entry(r).or_insert(0) += 1;
        }
        for a in everyone(n) {
            let c = counts.get(&a).copied().unwrap_or(0);
            assert!(c >= 1, "{a} was skipped");
            if c > 1 {
                assert_eq!(c, 2, "{a}");
                assert!(in_doubt.contains(&a), "{a} got two copies but is not named: {stdout}");
            }
        }
    }

    #[test]
    fn send_refuses_to_run_without_a_secret_on_smtp() {
        let server = SmtpServer::start(&[]);
        let site = Site::new(&server, 1, 2);
        let out = site
            .cmd(&["send", "--date", DATE, "--now", NOW])
            .env_remove(Secret::ENV)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("DIGESTIF_SECRET"));
        assert_eq!(server.count(), 0);
    }

    #[test]
    fn dry_run_sends_nothing_and_to_sends_one_copy_outside_the_ledger() {
        let server = SmtpServer::start(&[]);
        let site = Site::new(&server, 1, 3);
        let out = site
            .cmd(&["send", "--date", DATE, "--now", NOW, "--dry-run"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(server.count(), 0);
        let out = site
            .cmd(&["send", "--date", DATE, "--now", NOW, "--to", "editor@example.org"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(recipients(&server), vec!["editor@example.org".to_string()]);
        let c = site.store().ledger_counts(chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()).unwrap();
        assert_eq!(c.sent, 0);
    }

    #[allow(dead_code)]
    fn _path(_: &Path) {}
}
