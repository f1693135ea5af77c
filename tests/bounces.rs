//! Bounces and complaints: the corpus of returned messages read one by one, the
//! VERP envelope sender seen by a real SMTP server, and `digestif bounces` run
//! on returned mail.

mod support;

use std::path::Path;

use chrono::NaiveDate;
use digestif::bounces::{self, ReturnPath, Tag, TagCheck};
use digestif::config::Secret;
use support::site::{digestif_cmd, show, site_dir, smtp_table, DATE, NOW, SECRET};
use support::SmtpServer;

const CORPUS: &str = "tests/fixtures/bounces";

#[derive(serde::Deserialize)]
struct Corpus {
    sample: Vec<Sample>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Sample {
    file: String,
    format: Option<String>,
    kind: String,
    status: Option<String>,
    recipient: Option<String>,
    diagnostic: Option<String>,
    tag: String,
    key: Option<String>,
}

#[test]
fn every_sample_of_the_corpus_reads_as_expected() {
    let text = std::fs::read_to_string(Path::new(CORPUS).join("expected.toml")).unwrap();
    let corpus: Corpus = toml::from_str(&text).unwrap();
    let rp = ReturnPath::try_from("bounces@news.example.com".to_string()).unwrap();
    let secret = Secret::new("corpus-secret-0123456789");
    let mut files: Vec<String> = std::fs::read_dir(CORPUS)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".eml"))
        .collect();
    files.sort();
    let mut listed: Vec<String> = corpus.sample.iter().map(|s| s.file.clone()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "every sample has an expected outcome, and only those"
    );

    let mut failures = Vec::new();
    for s in &corpus.sample {
        let raw = std::fs::read(Path::new(CORPUS).join(&s.file)).unwrap();
        let parsed = bounces::parse(&raw).unwrap_or_else(|e| panic!("{}: {e}", s.file));
        let event = parsed.report.event();
        let got_kind = event.as_ref().map_or("none", |e| e.kind.as_str());
        let mut check = |what: &str, got: Option<String>, want: Option<&str>| {
            if got.as_deref() != want {
                failures.push(format!("{}: {what}: got {got:?}, want {want:?}", s.file));
            }
        };
        check("kind", Some(got_kind.to_string()), Some(&s.kind));
        check(
            "format",
            parsed.format.map(|f| f.as_str().to_string()),
            s.format.as_deref(),
        );
        if s.status.is_some() {
            check(
                "status",
                event.as_ref().and_then(|e| e.status).map(|c| c.to_string()),
                s.status.as_deref(),
            );
        }
        if s.recipient.is_some() {
            check(
                "recipient",
                event.as_ref().and_then(|e| e.recipient.clone()),
                s.recipient.as_deref(),
            );
        }
        if s.diagnostic.is_some() {
            check(
                "diagnostic",
                event.as_ref().and_then(|e| e.diagnostic.clone()),
                s.diagnostic.as_deref(),
            );
        }
        let tag = match rp.find(&secret, &parsed.tag_candidates) {
            TagCheck::Verified(t) => {
                assert_eq!(
                    t,
                    Tag {
                        subscriber_id: 7,
                        issue: NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
                    },
                    "{}",
                    s.file
                );
                "verified"
            }
            TagCheck::Forged => "forged",
            TagCheck::NotOurs => "none",
        };
        check("tag", Some(tag.to_string()), Some(&s.tag));
        let key_kind = parsed.key.split(':').next().unwrap_or("").to_string();
        check(
            "key",
            Some(key_kind),
            Some(s.key.as_deref().unwrap_or("mid")),
        );
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// A site sending to `server` with `bounces` keys, and subscribers r1..rn.
fn site(server: &SmtpServer, bounces: &str, n: usize) -> tempfile::TempDir {
    let cfg = format!(
        "{}\n{}\n[bounces]\n{bounces}\n",
        support::site::sending_head(),
        smtp_table(server, 1)
    );
    let dir = site_dir(&cfg);
    for i in 1..=n {
        let out = digestif_cmd(
            &dir.path().join("digestif.toml"),
            &["subscribers", "add", &format!("r{i}@example.com")],
        )
        .output()
        .unwrap();
        assert!(out.status.success(), "{}", show(&out));
    }
    dir
}

fn send(dir: &tempfile::TempDir) {
    let out = digestif_cmd(
        &dir.path().join("digestif.toml"),
        &["send", "--date", DATE, "--now", NOW],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn with_a_return_path_each_message_s_envelope_sender_is_its_signed_verp_address() {
    let server = SmtpServer::start(&[]);
    let dir = site(&server, "return_path = \"bounces@news.example.com\"", 2);
    send(&dir);
    let rp = ReturnPath::try_from("bounces@news.example.com".to_string()).unwrap();
    let mut seen = Vec::new();
    for m in server.messages() {
        let id = m
            .rcpt()
            .trim_start_matches('r')
            .trim_end_matches("@example.com");
        match rp.check(&Secret::new(SECRET), &m.mail_from) {
            TagCheck::Verified(tag) => {
                assert_eq!(tag.subscriber_id.to_string(), id, "{}", m.mail_from);
                assert_eq!(tag.issue.to_string(), DATE);
            }
            other => panic!("{}: {other:?}", m.mail_from),
        }
        // The header From is untouched.
        let msg = mail_parser::MessageParser::default().parse(&m.raw).unwrap();
        let from = msg.from().unwrap().first().unwrap().address().unwrap();
        assert_eq!(from, "briefing@news.example.com");
        seen.push(m.mail_from);
    }
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0], seen[1]);
}

#[test]
fn without_a_return_path_the_envelope_sender_is_the_from_address() {
    let server = SmtpServer::start(&[]);
    let dir = site(&server, "", 1);
    send(&dir);
    let m = &server.messages()[0];
    assert_eq!(m.mail_from, "briefing@news.example.com");
}

#[test]
fn a_bad_bounces_key_is_refused_naming_the_key_and_its_line() {
    let head = support::site::sending_head();
    let lines = head.lines().count();
    let text = format!("{head}\n[bounces]\nreturn_path = \"bounces+x@news.example.com\"\n");
    let e = digestif::config::Config::parse(&text, Path::new(".")).unwrap_err();
    assert!(e.contains("bounces.return_path"), "{e}");
    assert!(e.contains(&format!("line {}", lines + 3)), "{e}");
    let text = format!("{head}\n[bounces]\nmax_complaint_percent = 120\n");
    let e = digestif::config::Config::parse(&text, Path::new(".")).unwrap_err();
    assert!(e.contains("bounces.max_complaint_percent"), "{e}");
}
