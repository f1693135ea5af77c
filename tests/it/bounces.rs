//! Bounces and complaints: the corpus of returned messages read one by one, the
//! VERP envelope sender seen by a real SMTP server, and `digestif bounces` run
//! on returned mail.

use crate::support;

use std::path::Path;

use chrono::NaiveDate;
use digestif::bounces::{self, ReturnPath, Tag, TagCheck};
use digestif::config::Secret;
use support::site::{digestif_cmd, show, site_dir, smtp_table, stdout, DATE, NOW, SECRET};
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
    let e = digestif::config::Config::parse(&text, Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bounces.return_path"), "{e}");
    assert!(e.contains(&format!("line {}", lines + 3)), "{e}");
    let text = format!("{head}\n[bounces]\nmax_complaint_percent = 120\n");
    let e = digestif::config::Config::parse(&text, Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bounces.max_complaint_percent"), "{e}");
    // The webhooks' keys go together.
    for (keys, named, line) in [
        ("ses_certificate = \"sns.pem\"", "bounces.ses_topic_arns", 3),
        (
            "ses_certificate = \"sns.pem\"\nses_topic_arns = [\"my-topic\"]",
            "\"my-topic\" is not a topic ARN",
            4,
        ),
        (
            "postmark_user = \"postmark\"",
            "bounces.postmark_password_env",
            3,
        ),
        (
            "postmark_password_file = \"postmark.secret\"",
            "bounces.postmark_user",
            3,
        ),
        (
            "postmark_user = \"postmark\"\npostmark_password_env = \"PM\"\n\
             postmark_password_file = \"postmark.secret\"",
            "set one, not both",
            4,
        ),
    ] {
        let text = format!("{head}\n[bounces]\n{keys}\n");
        let e = digestif::config::Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains(named), "{keys}: {e}");
        assert!(e.contains(&format!("line {}", lines + line)), "{keys}: {e}");
    }
}

/// The address the corpus samples were returned to.
const CORPUS_VERP: &str = "bounces+7-20261127-6q6ec7f6kar22lgb@news.example.com";

/// A sent site: r1..rn got the issue through `server` with VERP on; their envelope
/// senders by recipient.
struct Sent {
    dir: tempfile::TempDir,
    verp: std::collections::HashMap<String, String>,
    /// The Message-ID each recipient's copy went out with (without brackets).
    message_ids: std::collections::HashMap<String, String>,
    /// Each recipient's copy as the server received it.
    raw: std::collections::HashMap<String, Vec<u8>>,
}

impl Sent {
    fn new(n: usize) -> (SmtpServer, Sent) {
        Sent::with(n, "")
    }

    /// The same with more `[bounces]` keys when sending.
    fn with(n: usize, keys: &str) -> (SmtpServer, Sent) {
        let server = SmtpServer::start(&[]);
        let dir = site(
            &server,
            &format!("return_path = \"bounces@news.example.com\"\n{keys}"),
            n,
        );
        send(&dir);
        let messages = server.messages();
        let verp = messages
            .iter()
            .map(|m| (m.rcpt().to_string(), m.mail_from.clone()))
            .collect();
        let message_ids = messages
            .iter()
            .map(|m| {
                let parsed = mail_parser::MessageParser::default().parse(&m.raw).unwrap();
                (
                    m.rcpt().to_string(),
                    parsed.message_id().unwrap().to_string(),
                )
            })
            .collect();
        let raw = messages
            .iter()
            .map(|m| (m.rcpt().to_string(), m.raw.clone()))
            .collect();
        (
            server,
            Sent {
                dir,
                verp,
                message_ids,
                raw,
            },
        )
    }

    /// A corpus sample as if returned to `who`'s copy, with its own Message-ID.
    fn returned(&self, sample: &str, who: &str, message_id: &str) -> Vec<u8> {
        let text = std::fs::read_to_string(Path::new(CORPUS).join(sample)).unwrap();
        let text = text.replace(CORPUS_VERP, &self.verp[who]);
        let mut done = false;
        text.lines()
            .map(|l| {
                if !done && l.to_ascii_lowercase().starts_with("message-id:") {
                    done = true;
                    format!("Message-ID: <{message_id}>")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes()
    }

    fn cmd(&self, args: &[&str]) -> std::process::Command {
        digestif_cmd(&self.dir.path().join("digestif.toml"), args)
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd(args).output().unwrap()
    }

    /// `digestif bounces` with `raw` on standard input.
    fn pipe(&self, raw: &[u8]) -> std::process::Output {
        self.pipe_at(raw, &[])
    }

    /// The same, with more arguments (`--now`).
    fn pipe_at(&self, raw: &[u8], extra: &[&str]) -> std::process::Output {
        use std::io::Write;
        let mut args = vec!["bounces"];
        args.extend_from_slice(extra);
        let mut child = self
            .cmd(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(raw).unwrap();
        child.wait_with_output().unwrap()
    }

    fn status(&self, who: &str) -> String {
        let out = self.run(&["subscribers", "show", who]);
        assert!(out.status.success(), "{}", show(&out));
        stdout(&out).lines().next().unwrap().to_string()
    }
}

#[test]
fn a_hard_bounce_piped_in_bounces_its_subscriber_once_and_show_lists_it() {
    let (_server, sent) = Sent::new(2);
    let dsn = sent.returned("postfix-user-unknown.eml", "r1@example.com", "dsn-1@mx");
    let out = sent.pipe(&dsn);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).starts_with("read 1: 1 hard bounce(s), 0 soft bounce(s), 0 complaint(s)"),
        "{}",
        show(&out)
    );
    assert!(
        stdout(&out).contains("1 subscriber(s) bounced"),
        "{}",
        show(&out)
    );
    assert_eq!(sent.status("r1@example.com"), "r1@example.com\tbounced");
    assert_eq!(sent.status("r2@example.com"), "r2@example.com\tactive");

    // The same DSN again: counted once.
    let out = sent.pipe(&dsn);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).contains("ignored: 1 duplicate(s)"),
        "{}",
        show(&out)
    );
    let shown = stdout(&sent.run(&["subscribers", "show", "r1@example.com"]));
    let events: Vec<&str> = shown.lines().skip(1).collect();
    assert_eq!(events.len(), 1, "{shown}");
    assert!(
        events[0].contains(&format!("issue {DATE}\thard_bounce\t5.1.1\t550 5.1.1")),
        "{shown}"
    );
    assert!(events[0].ends_with("stdin rfc3464"), "{shown}");
}

#[test]
fn forged_unsigned_and_unknown_reports_change_nothing_and_are_reported() {
    let (_server, sent) = Sent::new(1);
    let good = sent.verp["r1@example.com"].clone();
    // The tag of r1 pointed at another id, then a tag with a broken signature.
    let (local, domain) = good.split_once('@').unwrap();
    let mut parts: Vec<&str> = local.split('-').collect();
    let forged_id = parts[0].replace("+1", "+2");
    parts[0] = &forged_id;
    let other_id = format!("{}@{domain}", parts.join("-"));
    let broken_mac = format!("{}aaaa@{domain}", &local[..local.len() - 4]);
    for (n, addr) in [other_id, broken_mac].into_iter().enumerate() {
        let text = String::from_utf8(sent.returned(
            "postfix-user-unknown.eml",
            "r1@example.com",
            &format!("forged-{n}@mx"),
        ))
        .unwrap()
        .replace(&good, &addr);
        let out = sent.pipe(text.as_bytes());
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        assert!(stdout(&out).contains("1 forged"), "{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("does not verify"),
            "{}",
            show(&out)
        );
    }
    let unsigned = std::fs::read(Path::new(CORPUS).join("unsigned.eml")).unwrap();
    let out = sent.pipe(&unsigned);
    assert!(stdout(&out).contains("1 unsigned"), "{}", show(&out));
    // A valid tag of a subscriber removed since.
    let dsn = sent.returned("postfix-user-unknown.eml", "r1@example.com", "late@mx");
    let out = sent.run(&["subscribers", "remove", "r1@example.com"]);
    assert!(out.status.success(), "{}", show(&out));
    let out = sent.pipe(&dsn);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).contains("1 unknown subscriber(s)"),
        "{}",
        show(&out)
    );
}

#[test]
fn a_maildir_is_read_once_each_message_moved_to_cur() {
    let (_server, sent) = Sent::new(4);
    let md = sent.dir.path().join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).unwrap();
    }
    let mail = [
        ("1.a", "gmail-no-such-user.eml", "r1@example.com"),
        ("2.b", "arf-yahoo-complaint.eml", "r2@example.com"),
        ("3.c", "postfix-delayed.eml", "r3@example.com"),
        ("4.d", "vacation-auto-reply.eml", "r4@example.com"),
    ];
    for (file, sample, who) in mail {
        let raw = sent.returned(sample, who, &format!("{file}@mx"));
        std::fs::write(md.join("new").join(file), raw).unwrap();
    }
    let out = sent.run(&["bounces", "--maildir", md.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        stdout(&out).trim(),
        "read 4: 1 hard bounce(s), 0 soft bounce(s), 1 complaint(s), 1 delay or success \
         report(s); 1 subscriber(s) bounced, 1 unsubscribed; ignored: 0 duplicate(s), \
         1 not a report, 0 unsigned, 0 forged, 0 unknown subscriber(s), 0 unreadable"
    );
    assert_eq!(sent.status("r1@example.com"), "r1@example.com\tbounced");
    assert_eq!(
        sent.status("r2@example.com"),
        "r2@example.com\tunsubscribed"
    );
    assert_eq!(sent.status("r3@example.com"), "r3@example.com\tactive");
    assert_eq!(sent.status("r4@example.com"), "r4@example.com\tactive");
    assert_eq!(std::fs::read_dir(md.join("new")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(md.join("cur")).unwrap().count(), 4);
    let out = sent.run(&["bounces", "--maildir", md.to_str().unwrap()]);
    assert!(stdout(&out).starts_with("read 0:"), "{}", show(&out));
}

#[test]
fn soft_bounces_bounce_at_the_third_within_fifteen_days_and_not_when_spread_wider() {
    let (_server, sent) = Sent::new(2);
    let soft = |who: &str, n: u32, day: u32| {
        let dsn = sent.returned(
            "postfix-mailbox-full-expired.eml",
            who,
            &format!("soft-{who}-{n}@mx"),
        );
        let now = format!("2026-12-{day:02}T08:00:00Z");
        let out = sent.pipe_at(&dsn, &["--now", &now]);
        assert!(out.status.success(), "{}", show(&out));
        stdout(&out)
    };
    // r1: days 1, 8, 15: the third is within 15 days of the first.
    soft("r1@example.com", 1, 1);
    soft("r1@example.com", 2, 8);
    assert_eq!(sent.status("r1@example.com"), "r1@example.com\tactive");
    let line = soft("r1@example.com", 3, 15);
    assert!(
        line.contains("1 soft bounce(s)") && line.contains("1 subscriber(s) bounced"),
        "{line}"
    );
    assert_eq!(sent.status("r1@example.com"), "r1@example.com\tbounced");
    // r2: days 1, 10, 17: the first has left the window when the third comes.
    for (n, day) in [(1, 1), (2, 10), (3, 17)] {
        soft("r2@example.com", n, day);
    }
    assert_eq!(sent.status("r2@example.com"), "r2@example.com\tactive");
}

#[test]
fn an_mbox_is_read_whole_and_read_again_counts_nothing_twice() {
    let (_server, sent) = Sent::new(2);
    let mut mbox = Vec::new();
    for (sample, who) in [
        ("outlook-recipient-not-found.eml", "r1@example.com"),
        ("arf-microsoft-jmrp.eml", "r2@example.com"),
    ] {
        mbox.extend_from_slice(b"From MAILER-DAEMON Fri Nov 27 06:00:14 2026\n");
        mbox.extend_from_slice(&sent.returned(sample, who, &format!("mbox-{who}@mx")));
        mbox.extend_from_slice(b"\n\n");
    }
    let file = sent.dir.path().join("bounces.mbox");
    std::fs::write(&file, mbox).unwrap();
    let out = sent.run(&["bounces", "--mbox", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).starts_with("read 2: 1 hard bounce(s), 0 soft bounce(s), 1 complaint(s)"),
        "{}",
        show(&out)
    );
    assert_eq!(sent.status("r1@example.com"), "r1@example.com\tbounced");
    assert_eq!(
        sent.status("r2@example.com"),
        "r2@example.com\tunsubscribed"
    );
    let out = sent.run(&["bounces", "--mbox", file.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("ignored: 2 duplicate(s)"),
        "{}",
        show(&out)
    );
}

#[test]
fn without_a_return_path_bounces_is_a_usage_error_naming_the_key() {
    let server = SmtpServer::start(&[]);
    let dir = site(&server, "", 0);
    let out = digestif_cmd(&dir.path().join("digestif.toml"), &["bounces"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("[bounces] return_path is not set"),
        "{}",
        show(&out)
    );
}

#[test]
fn above_the_limits_ledger_shows_the_rates_check_fails_and_the_next_send_warns() {
    let (_server, sent) = Sent::new(2);
    let out = sent.run(&["ledger", "--date", DATE]);
    assert!(
        stdout(&out).contains("bounces: 0 hard (0.0 % of 2 sent), 0 soft; complaints: 0 (0.00 %)"),
        "{}",
        show(&out)
    );
    let out = sent.run(&["check"]);
    assert!(
        stdout(&out).contains("ok    bounce rates: last issue"),
        "{}",
        show(&out)
    );

    let dsn = sent.returned("postfix-user-unknown.eml", "r1@example.com", "rate-1@mx");
    assert!(sent.pipe(&dsn).status.success());
    let out = sent.run(&["ledger", "--date", DATE]);
    assert!(
        stdout(&out).contains("bounces: 1 hard (50.0 % of 2 sent), 0 soft; complaints: 0 (0.00 %)"),
        "{}",
        show(&out)
    );
    let out = sent.run(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stdout(&out).contains(&format!(
            "FAIL  bounce rates: the issue of {DATE} hard-bounced for 50.0 % of its 2 message(s)"
        )),
        "{}",
        show(&out)
    );
    // The next day's issue, with a story of its own.
    let feed = sent.dir.path().join("feeds/monde.xml");
    let text = std::fs::read_to_string(&feed).unwrap().replace(
        "</channel>",
        "<item><title>Neige en plaine</title><link>https://example.com/neige</link>\
         <description>Dix centimètres attendus.</description>\
         <pubDate>Sat, 28 Nov 2026 05:00:00 +0100</pubDate></item></channel>",
    );
    std::fs::write(&feed, text).unwrap();
    let out = sent.run(&[
        "send",
        "--date",
        "2026-11-28",
        "--now",
        "2026-11-28T06:30:00+01:00",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "warning: the issue of {DATE} hard-bounced for 50.0 %"
        )),
        "{}",
        show(&out)
    );
}

/// A Postfix instance of the test's own (its folder, its loopback port), relaying
/// everything to `relay_port` and delivering mail for news.example.com to a Maildir.
/// Stopped when dropped.
struct Postfix {
    dir: tempfile::TempDir,
    port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One Postfix test at a time: each picks its ports before its server binds them.
static POSTFIX_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Postfix {
    /// `None` (the test says why) where Postfix cannot run: not installed, not root.
    /// With `pipe`, mail for bounces@news.example.com goes to `digestif bounces` on
    /// that config (the README's route), run as `nobody`; else to the Maildir.
    fn start(relay_port: u16, port: u16, pipe: Option<&Path>) -> Option<Postfix> {
        use std::os::unix::fs::PermissionsExt;
        use std::process::Command;
        let installed = Path::new("/usr/sbin/postfix").exists();
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if !installed || !root {
            // On a developer's machine the test is skipped; under CI it must run.
            assert!(
                std::env::var_os("CI").is_none(),
                "Postfix is not installed or this is not root, and CI is set: run the tests \
                 as root with Debian's postfix (`apt-get install postfix`, as scripts/test.sh does)"
            );
            eprintln!(
                "skipped: needs Debian's postfix and root to start it (scripts/test.sh installs it)"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Postfix's daemons run as the postfix user and as the mailbox owner.
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in [
            "etc",
            "queue",
            "data",
            "mail/Maildir/new",
            "mail/Maildir/cur",
            "mail/Maildir/tmp",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        for sub in [
            "mail",
            "mail/Maildir",
            "mail/Maildir/new",
            "mail/Maildir/cur",
            "mail/Maildir/tmp",
        ] {
            std::fs::set_permissions(d.join(sub), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let st = Command::new("chown")
            .arg("postfix")
            .arg(d.join("data"))
            .status()
            .unwrap();
        assert!(st.success());
        let mut pipe_map = String::new();
        let mut pipe_service = String::new();
        if let Some(config) = pipe {
            // The binary where `nobody` can run it.
            let bin = d.join("digestif");
            let built = env!("CARGO_BIN_EXE_digestif");
            if std::fs::hard_link(built, &bin).is_err() {
                std::fs::copy(built, &bin).unwrap();
            }
            pipe_map =
                "transport_maps = inline:{ bounces@news.example.com=digestif-bounces: }\n".into();
            pipe_service = format!(
                "digestif-bounces unix - n n - - pipe\n  flags=DOq user=nobody argv={} --config {} bounces\n",
                bin.display(),
                config.display()
            );
        }
        let d = d.display();
        std::fs::write(
            dir.path().join("etc/main.cf"),
            format!(
                "compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
maillog_file_prefixes = {d}
maillog_file = {d}/maillog
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.news.example.com
mydomain = news.example.com
myorigin = news.example.com
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{relay_port}
smtp_tls_security_level = none
smtpd_tls_security_level = none
recipient_delimiter = +
virtual_mailbox_domains = news.example.com
virtual_mailbox_base = {d}/mail
virtual_mailbox_maps = static:Maildir/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtputf8_enable = no
{pipe_map}"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/master.cf"),
            format!(
                "127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
showq     unix  n       -       n       -       -       showq
postlog   unix-dgram n  -       n       -       1       postlogd
{pipe_service}"
            ),
        )
        .unwrap();
        let pf = Postfix { dir, port };
        let out = pf.postfix("start");
        assert!(
            out.status.success(),
            "postfix start: {}\n{}",
            show(&out),
            pf.log()
        );
        // Wait until smtpd takes connections.
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed().as_secs() < 20,
                "postfix does not listen\n{}",
                pf.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Some(pf)
    }

    fn postfix(&self, what: &str) -> std::process::Output {
        std::process::Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(self.dir.path().join("etc"))
            .arg(what)
            .output()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    fn maildir(&self) -> std::path::PathBuf {
        self.dir.path().join("mail/Maildir")
    }

    /// Waits for `n` messages in the Maildir's new/.
    fn wait_for_mail(&self, n: usize) {
        let t0 = std::time::Instant::now();
        loop {
            let have = std::fs::read_dir(self.maildir().join("new"))
                .unwrap()
                .count();
            if have >= n {
                return;
            }
            assert!(
                t0.elapsed().as_secs() < 60,
                "{have} of {n} message(s) delivered in 60 s\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.postfix("stop");
    }
}

#[test]
fn a_real_postfix_returns_a_refused_message_to_its_verp_address_and_the_subscriber_is_bounced() {
    // The destination refuses r1 (550 5.1.1 on RCPT) and takes r2.
    let _one = POSTFIX_TESTS.lock().unwrap_or_else(|p| p.into_inner());
    let destination = SmtpServer::start(&["--reject-rcpt", "r1@example.com:550"]);
    let Some(postfix) = Postfix::start(destination.port, free_port(), None) else {
        return;
    };
    let cfg = format!(
        "{}\n[smtp]\ntransport = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         pool_size = 1\ntimeout_s = 10\n\n[bounces]\nreturn_path = \"bounces@news.example.com\"\n",
        support::site::sending_head(),
        postfix.port
    );
    let dir = site_dir(&cfg);
    let config = dir.path().join("digestif.toml");
    for who in ["r1@example.com", "r2@example.com"] {
        let out = digestif_cmd(&config, &["subscribers", "add", who])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
    }
    // Postfix takes both; the refusal comes later, as a DSN to r1's VERP address.
    send(&dir);
    postfix.wait_for_mail(1);
    destination.wait_for(1, std::time::Duration::from_secs(30));
    assert_eq!(destination.messages()[0].rcpt(), "r2@example.com");

    let md = postfix.maildir();
    let out = digestif_cmd(&config, &["bounces", "--maildir", md.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        show(&out),
        postfix.log()
    );
    assert!(
        stdout(&out).starts_with("read 1: 1 hard bounce(s)"),
        "{}\n{}",
        show(&out),
        postfix.log()
    );
    let shown = |who: &str| {
        let out = digestif_cmd(&config, &["subscribers", "show", who])
            .output()
            .unwrap();
        stdout(&out)
    };
    let r1 = shown("r1@example.com");
    assert!(r1.starts_with("r1@example.com\tbounced\n"), "{r1}");
    assert!(
        r1.contains(&format!("issue {DATE}\thard_bounce\t5.1.1\t550 5.1.1")),
        "{r1}"
    );
    assert!(r1.trim_end().ends_with("rfc3464"), "{r1}");
    assert!(shown("r2@example.com").starts_with("r2@example.com\tactive\n"));
    assert_eq!(std::fs::read_dir(md.join("new")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(md.join("cur")).unwrap().count(), 1);
}

#[test]
fn through_the_readme_s_postfix_pipe_a_refused_message_bounces_its_subscriber() {
    use std::os::unix::fs::PermissionsExt;
    let _one = POSTFIX_TESTS.lock().unwrap_or_else(|p| p.into_inner());
    let destination = SmtpServer::start(&["--reject-rcpt", "r1@example.com:550"]);
    let port = free_port();
    let cfg = format!(
        "{}\n[smtp]\ntransport = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         pool_size = 1\ntimeout_s = 10\n\n[secrets]\nfile = \"secret\"\n\n\
         [bounces]\nreturn_path = \"bounces@news.example.com\"\n",
        support::site::sending_head(),
    );
    let dir = site_dir(&cfg);
    let config = dir.path().join("digestif.toml");
    let Some(postfix) = Postfix::start(destination.port, port, Some(&config)) else {
        return;
    };
    // A pipe passes no environment: the secret comes from [secrets] file. The site
    // (database, secret) belongs to the user the pipe runs as, and every command
    // runs as that user, as on a server where digestif has a user of its own.
    std::fs::write(dir.path().join("secret"), format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(
        dir.path().join("secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let st = std::process::Command::new("chown")
        .args(["-R", "nobody"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    let as_nobody = |args: &[&str]| {
        use std::os::unix::process::CommandExt;
        let out = std::process::Command::new(postfix.dir.path().join("digestif"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("DIGESTIF_CONFIG")
            .env_remove(Secret::ENV)
            .env("RUST_LOG", "warn")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        stdout(&out)
    };
    for who in ["r1@example.com", "r2@example.com"] {
        as_nobody(&["subscribers", "add", who]);
    }
    as_nobody(&["send", "--date", DATE, "--now", NOW]);
    // Wait for Postfix to hand the DSN to the pipe.
    let t0 = std::time::Instant::now();
    while !postfix
        .log()
        .lines()
        .any(|l| l.contains("relay=digestif-bounces") && l.contains("status="))
    {
        assert!(
            t0.elapsed().as_secs() < 60,
            "no delivery to the pipe in 60 s\n{}",
            postfix.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let log = postfix.log();
    assert!(
        log.lines()
            .any(|l| l.contains("relay=digestif-bounces") && l.contains("status=sent")),
        "{log}"
    );
    let r1 = as_nobody(&["subscribers", "show", "r1@example.com"]);
    assert!(r1.starts_with("r1@example.com\tbounced\n"), "{r1}\n{log}");
    assert!(r1.contains("hard_bounce\t5.1.1"), "{r1}");
    assert!(r1.trim_end().ends_with("stdin rfc3464"), "{r1}");
    let r2 = as_nobody(&["subscribers", "show", "r2@example.com"]);
    assert!(r2.starts_with("r2@example.com\tactive\n"), "{r2}");
    assert_eq!(
        std::fs::read_dir(postfix.maildir().join("new"))
            .unwrap()
            .count(),
        0
    );
}

/// A Dovecot IMAP and POP3 server of the test's own (its folder, loopback ports),
/// with the mailbox of user `bounces` (password `imap-secret`). Plain, or with `tls`
/// only implicit TLS (`imaps`, `pop3s`) with that certificate and `ssl = required`.
/// Killed when dropped.
struct Dovecot {
    dir: tempfile::TempDir,
    child: std::process::Child,
    /// IMAP (imaps with TLS) and POP3 (pop3s with TLS).
    port: u16,
    pop3_port: u16,
}

impl Dovecot {
    /// `None` (the test says why) where Dovecot cannot run: not installed, not root.
    fn start() -> Option<Dovecot> {
        Dovecot::start_with(None)
    }

    fn start_with(tls: Option<&support::cert::Cert>) -> Option<Dovecot> {
        use std::os::unix::fs::PermissionsExt;
        let installed =
            Path::new("/usr/sbin/dovecot").exists() && Path::new("/usr/lib/dovecot/pop3").exists();
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if !installed || !root {
            assert!(
                std::env::var_os("CI").is_none(),
                "Dovecot is not installed or this is not root, and CI is set: run the tests \
                 as root with Debian's dovecot-imapd and dovecot-pop3d (as scripts/test.sh \
                 installs them)"
            );
            eprintln!(
                "skipped: needs Debian's dovecot-imapd, dovecot-pop3d and root to start them"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in [
            "run",
            "state",
            "mail/bounces/Maildir/new",
            "mail/bounces/Maildir/cur",
            "mail/bounces/Maildir/tmp",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let (port, pop3_port) = (free_port(), free_port());
        let d = d.display();
        let (ssl, plain, secure) = match tls {
            None => ("ssl = no\n".to_string(), (port, pop3_port), (0, 0)),
            Some(c) => (
                format!(
                    "ssl = required\nssl_cert = <{}\nssl_key = <{}\n",
                    c.cert.display(),
                    c.key.display()
                ),
                (0, 0),
                (port, pop3_port),
            ),
        };
        std::fs::write(
            dir.path().join("dovecot.conf"),
            format!(
                "base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
{ssl}disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{d}/mail/%u/Maildir
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
passdb {{
  driver = static
  args = password=imap-secret
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={d}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {}
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {}
  }}
}}
",
                plain.0, secure.0, plain.1, secure.1
            ),
        )
        .unwrap();
        let child = std::process::Command::new("/usr/sbin/dovecot")
            .arg("-F")
            .arg("-c")
            .arg(dir.path().join("dovecot.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let dovecot = Dovecot {
            dir,
            child,
            port,
            pop3_port,
        };
        let t0 = std::time::Instant::now();
        for p in [port, pop3_port] {
            while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
                assert!(
                    t0.elapsed().as_secs() < 20,
                    "dovecot does not listen\n{}",
                    dovecot.log()
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        Some(dovecot)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    fn maildir(&self) -> std::path::PathBuf {
        self.dir.path().join("mail/bounces/Maildir")
    }

    /// Puts a message in the mailbox, as its owner.
    fn deliver(&self, name: &str, raw: &[u8]) {
        let file = self.maildir().join("new").join(name);
        std::fs::write(&file, raw).unwrap();
        let st = std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(self.dir.path().join("mail"))
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Messages left in the mailbox (new and cur).
    fn count(&self) -> usize {
        ["new", "cur"]
            .iter()
            .map(|d| std::fs::read_dir(self.maildir().join(d)).unwrap().count())
            .sum()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_imap_mailbox_is_read_by_serve_and_by_bounces_imap_and_emptied() {
    let (_server, sent) = Sent::new(3);
    let Some(dovecot) = Dovecot::start() else {
        return;
    };
    dovecot.deliver(
        "1.a",
        &sent.returned("gmail-no-such-user.eml", "r1@example.com", "imap-1@mx"),
    );
    dovecot.deliver(
        "2.b",
        &sent.returned("arf-yahoo-complaint.eml", "r2@example.com", "imap-2@mx"),
    );
    let config = sent.dir.path().join("digestif.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "mailbox = \"imap://bounces@127.0.0.1:{}/INBOX\"\nmailbox_password_env = \"BOUNCES_IMAP_PASSWORD\"\n\
         poll_minutes = 1\n\n[schedule]\nenabled = false\n",
        dovecot.port
    ));
    std::fs::write(&config, text).unwrap();

    // check logs in and reads nothing.
    let out = sent
        .cmd(&["check"])
        .env("BOUNCES_IMAP_PASSWORD", "imap-secret")
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("ok    bounce mailbox: logged in; 2 message(s) waiting"),
        "{}\n{}",
        show(&out),
        dovecot.log()
    );
    assert_eq!(dovecot.count(), 2);

    // serve reads the mailbox at start.
    let listen = format!("127.0.0.1:{}", free_port());
    let mut serve = sent
        .cmd(&["serve", "--listen", &listen])
        .env("BOUNCES_IMAP_PASSWORD", "imap-secret")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !(sent.status("r1@example.com") == "r1@example.com\tbounced"
        && sent.status("r2@example.com") == "r2@example.com\tunsubscribed")
    {
        if t0.elapsed().as_secs() > 30 {
            let _ = serve.kill();
            let out = serve.wait_with_output().unwrap();
            panic!(
                "serve did not read the mailbox in 30 s: {}\n{}",
                show(&out),
                dovecot.log()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let t0 = std::time::Instant::now();
    while dovecot.count() > 0 {
        assert!(t0.elapsed().as_secs() < 10, "read messages are not deleted");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = serve.kill();
    let _ = serve.wait();

    // The command reads it once, on demand.
    dovecot.deliver(
        "3.c",
        &sent.returned("postfix-delayed.eml", "r3@example.com", "imap-3@mx"),
    );
    let out = sent
        .cmd(&["bounces", "--imap"])
        .env("BOUNCES_IMAP_PASSWORD", "imap-secret")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        show(&out),
        dovecot.log()
    );
    assert!(
        stdout(&out)
            .starts_with("read 1: 0 hard bounce(s), 0 soft bounce(s), 0 complaint(s), 1 delay"),
        "{}",
        show(&out)
    );
    assert_eq!(dovecot.count(), 0);
    assert_eq!(sent.status("r3@example.com"), "r3@example.com\tactive");
    let out = sent
        .cmd(&["bounces", "--imap"])
        .env("BOUNCES_IMAP_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("login refused"),
        "{}",
        show(&out)
    );
}

/// `digestif serve` of a sent site, with `extra` appended to its `[bounces]` table;
/// its log goes to a file. Killed when dropped.
struct Serve {
    child: std::process::Child,
    base: String,
    log: std::path::PathBuf,
}

impl Serve {
    fn start(sent: &Sent, extra: &str, env: &[(&str, &str)]) -> Serve {
        let config = sent.dir.path().join("digestif.toml");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&format!("{extra}\n\n[schedule]\nenabled = false\n"));
        std::fs::write(&config, text).unwrap();
        let port = free_port();
        let log = sent.dir.path().join("serve.log");
        let mut cmd = sent.cmd(&["serve", "--listen", &format!("127.0.0.1:{port}")]);
        cmd.envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut serve = Serve {
            child: cmd.spawn().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = serve.child.try_wait().unwrap() {
                panic!("serve stopped ({status}): {}", serve.log());
            }
            assert!(
                t0.elapsed().as_secs() < 30,
                "serve does not listen: {}",
                serve.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        serve
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GETs `path`: the answer's text.
    fn get(&self, path: &str) -> String {
        let url = format!("{}{path}", self.base);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move { reqwest::get(url).await.unwrap().text().await.unwrap() })
    }

    /// POSTs `body` to `path` (with basic auth when given): (status, answer).
    fn post(&self, path: &str, body: &str, auth: Option<(&str, &str)>) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let body = body.to_string();
        let auth = auth.map(|(u, p)| (u.to_string(), p.to_string()));
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let mut req = reqwest::Client::new()
                    .post(url)
                    .header("content-type", "text/plain; charset=UTF-8")
                    .body(body);
                if let Some((u, p)) = auth {
                    req = req.basic_auth(u, Some(p));
                }
                let res = req.send().await.unwrap();
                (res.status().as_u16(), res.text().await.unwrap())
            })
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const WEBHOOKS: &str = "tests/fixtures/webhooks";

/// A provider's documented payload, for `who`'s copy, as event number `event`.
fn payload(file: &str, sent: &Sent, who: &str, event: u32) -> String {
    std::fs::read_to_string(Path::new(WEBHOOKS).join(file))
        .unwrap()
        .replace("{{MESSAGE_ID}}", &sent.message_ids[who])
        .replace("{{RECIPIENT}}", who)
        .replace("{{EVENT}}", &event.to_string())
}

/// `subscribers show`'s event lines for `who`.
fn events_of(sent: &Sent, who: &str) -> Vec<String> {
    let shown = stdout(&sent.run(&["subscribers", "show", who]));
    shown
        .lines()
        .skip(1)
        .filter(|l| *l != "no bounce or complaint")
        .map(String::from)
        .collect()
}

#[test]
fn postmark_webhooks_change_subscribers_only_with_credentials_and_once_per_event() {
    let (_server, sent) = Sent::with(
        3,
        "postmark_user = \"postmark\"\npostmark_password_env = \"POSTMARK_HOOK_PASSWORD\"",
    );
    // Postmark reports with its own MessageID: each message carries ours as metadata.
    for (who, raw) in &sent.raw {
        let m = mail_parser::MessageParser::default().parse(raw).unwrap();
        assert_eq!(
            m.header_raw("X-PM-Metadata-message-id").map(str::trim),
            Some(sent.message_ids[who].as_str())
        );
    }
    let serve = Serve::start(&sent, "", &[("POSTMARK_HOOK_PASSWORD", "hook-secret-123")]);
    let good = Some(("postmark", "hook-secret-123"));
    let hard = payload("postmark-hard-bounce.json", &sent, "r1@example.com", 101);

    // Without credentials, or with wrong ones: refused, nothing changes.
    for auth in [
        None,
        Some(("postmark", "wrong")),
        Some(("other", "hook-secret-123")),
    ] {
        let (status, _) = serve.post("/webhooks/postmark", &hard, auth);
        assert_eq!(status, 401, "{auth:?}");
    }
    assert_eq!(sent.status("r1@example.com"), "r1@example.com\tactive");
    assert!(events_of(&sent, "r1@example.com").is_empty());
    let metrics = serve.get("/metrics");
    assert!(
        metrics.contains("digestif_webhook_refused_total{provider=\"postmark\"} 3\n"),
        "{metrics}"
    );

    // With them: the hard bounce bounces r1; delivered again (a retry), counted once.
    let (status, answer) = serve.post("/webhooks/postmark", &hard, good);
    assert_eq!(status, 200, "{answer}\n{}", serve.log());
    assert!(answer.contains("marked bounced"), "{answer}");
    let (status, answer) = serve.post("/webhooks/postmark", &hard, good);
    assert_eq!(
        (status, answer.as_str()),
        (200, "already read: counted once\n")
    );
    assert_eq!(sent.status("r1@example.com"), "r1@example.com\tbounced");
    let events = events_of(&sent, "r1@example.com");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].contains(&format!("issue {DATE}\thard_bounce\t5.1.1\tsmtp;550 5.1.1")),
        "{events:?}"
    );
    assert!(events[0].ends_with("\tpostmark"), "{events:?}");

    // A spam complaint unsubscribes r2.
    let complaint = payload("postmark-spam-complaint.json", &sent, "r2@example.com", 102);
    let (status, answer) = serve.post("/webhooks/postmark", &complaint, good);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        sent.status("r2@example.com"),
        "r2@example.com\tunsubscribed"
    );

    // r1's message reported for r3, and r3 with a message never sent: nothing changes.
    let crossed = hard
        .replace("r1@example.com", "r3@example.com")
        .replace("101", "103");
    let (status, answer) = serve.post("/webhooks/postmark", &crossed, good);
    assert_eq!(status, 200);
    assert!(
        answer.contains("was sent to \"r3@example.com\""),
        "{answer}"
    );
    let unknown = payload("postmark-hard-bounce.json", &sent, "r3@example.com", 104).replace(
        &sent.message_ids["r3@example.com"],
        "nobody-sent-this@news.example.com",
    );
    let (_, answer) = serve.post("/webhooks/postmark", &unknown, good);
    assert!(
        answer.contains("matches no subscriber, ignored"),
        "{answer}"
    );
    // A soft bounce is kept and changes nothing yet.
    let soft = payload("postmark-soft-bounce.json", &sent, "r3@example.com", 105);
    let (status, _) = serve.post("/webhooks/postmark", &soft, good);
    assert_eq!(status, 200);
    assert_eq!(sent.status("r3@example.com"), "r3@example.com\tactive");
    let events = events_of(&sent, "r3@example.com");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].contains("soft_bounce\t4.2.2"), "{events:?}");
    assert!(
        serve
            .log()
            .contains("no message \"nobody-sent-this@news.example.com\""),
        "{}",
        serve.log()
    );
    // Not JSON: a clear 400.
    let (status, answer) = serve.post("/webhooks/postmark", "hello", good);
    assert_eq!(status, 400, "{answer}");
}

/// An RSA key and a self-signed certificate made by openssl in `dir`, standing in
/// for SNS's signing certificate.
struct Signer {
    key: std::path::PathBuf,
    cert: std::path::PathBuf,
}

impl Signer {
    fn new(dir: &Path, name: &str) -> Signer {
        let key = dir.join(format!("{name}.key"));
        let cert = dir.join(format!("{name}.pem"));
        let out = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
            ])
            .args(["-subj", "/CN=sns.eu-west-1.amazonaws.com", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl (scripts/test.sh installs it)");
        assert!(out.status.success(), "{}", show(&out));
        Signer { key, cert }
    }

    /// Base64 of openssl's signature of `text` with `digest` (sha1 or sha256).
    fn sign(&self, text: &str, digest: &str) -> String {
        use base64::Engine;
        let dir = self.key.parent().unwrap();
        let input = dir.join("canonical.txt");
        std::fs::write(&input, text).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["dgst", &format!("-{digest}"), "-sign"])
            .arg(&self.key)
            .arg(&input)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        base64::engine::general_purpose::STANDARD.encode(out.stdout)
    }
}

const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:digestif-bounces";
const CERT_URL: &str = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem";

/// An SNS message as SNS posts it now: its fields, the canonical string it signs
/// (written out here after AWS's documentation, independently of the code), and
/// the signature by `signer`.
fn sns_message(
    signer: &Signer,
    kind: &str,
    message: &str,
    id: u32,
    version: &str,
    topic: &str,
) -> serde_json::Value {
    sns_message_at(
        signer,
        kind,
        message,
        id,
        version,
        topic,
        digestif::clock::now(),
    )
}

/// [`sns_message`] published by SNS at `at`.
fn sns_message_at(
    signer: &Signer,
    kind: &str,
    message: &str,
    id: u32,
    version: &str,
    topic: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> serde_json::Value {
    let message_id = format!("7a1f2b3c-0000-4000-8000-{id:012}");
    let timestamp = &at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let token = "2336412f37fb687f5d51e6e2425c464de1f2d3b4a0e8b3a9f8d1c4e5a7b2c1d0";
    let subscribe = format!("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={topic}&Token={token}");
    let canonical = if kind == "Notification" {
        format!(
            "Message\n{message}\nMessageId\n{message_id}\nSubject\nAmazon SES Email Event Notification\n\
             Timestamp\n{timestamp}\nTopicArn\n{topic}\nType\n{kind}\n"
        )
    } else {
        format!(
            "Message\n{message}\nMessageId\n{message_id}\nSubscribeURL\n{subscribe}\n\
             Timestamp\n{timestamp}\nToken\n{token}\nTopicArn\n{topic}\nType\n{kind}\n"
        )
    };
    let digest = if version == "1" { "sha1" } else { "sha256" };
    let mut v = serde_json::json!({
        "Type": kind,
        "MessageId": message_id,
        "TopicArn": topic,
        "Message": message,
        "Timestamp": timestamp,
        "SignatureVersion": version,
        "Signature": signer.sign(&canonical, digest),
        "SigningCertURL": CERT_URL,
        "UnsubscribeURL": format!("https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={topic}:1"),
    });
    if kind == "Notification" {
        v["Subject"] = "Amazon SES Email Event Notification".into();
    } else {
        v["Token"] = token.into();
        v["SubscribeURL"] = subscribe.into();
    }
    v
}

#[test]
fn ses_notifications_change_subscribers_only_when_sns_signed_them_with_the_pinned_certificate() {
    let (_server, sent) = Sent::new(3);
    let keys = tempfile::tempdir().unwrap();
    let sns = Signer::new(keys.path(), "sns");
    let other = Signer::new(keys.path(), "other");
    let serve = Serve::start(
        &sent,
        &format!(
            "ses_certificate = {:?}\nses_topic_arns = [\"{TOPIC}\"]",
            sns.cert.display().to_string()
        ),
        &[],
    );
    let out = sent.run(&["check"]);
    let checked = stdout(&out)
        .lines()
        .find(|l| l.contains("bounce webhooks"))
        .unwrap_or_default()
        .to_string();
    assert!(
        checked.starts_with("ok    bounce webhooks: SES: 1 certificate(s) pinned, valid until 20")
            && checked.ends_with(&format!("; topic(s) {TOPIC}")),
        "{}",
        show(&out)
    );
    let post = |v: &serde_json::Value| serve.post("/webhooks/ses", &v.to_string(), None);
    let bounce = payload("ses-bounce-permanent.json", &sent, "r1@example.com", 201);

    // The subscription is verified and its address logged for the operator.
    let (status, answer) = post(&sns_message(
        &sns,
        "SubscriptionConfirmation",
        "You have chosen to subscribe to the topic.",
        1,
        "1",
        TOPIC,
    ));
    assert_eq!(status, 200, "{answer}\n{}", serve.log());
    assert!(
        serve
            .log()
            .contains("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"),
        "{}",
        serve.log()
    );

    // Refused, and nothing changes: another certificate, a message changed after
    // signing, no signature, a certificate address not SNS's, a topic not ours.
    let forged = sns_message(&other, "Notification", &bounce, 2, "1", TOPIC);
    let mut tampered = sns_message(&sns, "Notification", &bounce, 3, "1", TOPIC);
    tampered["Message"] = bounce.replace("r1@example.com", "r2@example.com").into();
    let mut unsigned = sns_message(&sns, "Notification", &bounce, 4, "1", TOPIC);
    unsigned.as_object_mut().unwrap().remove("Signature");
    let mut elsewhere = sns_message(&sns, "Notification", &bounce, 5, "1", TOPIC);
    elsewhere["SigningCertURL"] =
        "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem".into();
    let other_topic = sns_message(
        &sns,
        "Notification",
        &bounce,
        6,
        "2",
        "arn:aws:sns:eu-west-1:999999999999:theirs",
    );
    // Signed by SNS, but two hours ago (a replay) or an hour ahead of the clock.
    let now = digestif::clock::now();
    let hour = chrono::TimeDelta::hours(1);
    let replayed = sns_message_at(
        &sns,
        "Notification",
        &bounce,
        12,
        "2",
        TOPIC,
        now - hour * 2,
    );
    let ahead = sns_message_at(&sns, "Notification", &bounce, 13, "2", TOPIC, now + hour);
    for (what, v) in [
        ("other certificate", &forged),
        ("tampered", &tampered),
        ("unsigned", &unsigned),
        ("certificate address", &elsewhere),
        ("other topic", &other_topic),
        ("two hours old", &replayed),
        ("an hour ahead", &ahead),
    ] {
        let (status, answer) = post(v);
        assert_eq!(status, 403, "{what}: {answer}");
    }
    assert!(
        serve.log().contains("is more than 1 hour(s) old: a replay"),
        "{}",
        serve.log()
    );
    for who in ["r1@example.com", "r2@example.com"] {
        assert_eq!(sent.status(who), format!("{who}\tactive"));
        assert!(events_of(&sent, who).is_empty());
    }
    assert!(
        serve
            .get("/metrics")
            .contains("digestif_webhook_refused_total{provider=\"ses\"} 7\n"),
        "{}",
        serve.get("/metrics")
    );

    // Signed by SNS (SignatureVersion 1): r1 bounced; the retry counts once.
    let good = sns_message(&sns, "Notification", &bounce, 7, "1", TOPIC);
    let (status, answer) = post(&good);
    assert_eq!(status, 200, "{answer}\n{}", serve.log());
    assert!(answer.contains("marked bounced"), "{answer}");
    let (_, answer) = post(&good);
    assert_eq!(answer, "already read: counted once\n");
    assert_eq!(sent.status("r1@example.com"), "r1@example.com\tbounced");
    let events = events_of(&sent, "r1@example.com");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].contains("hard_bounce\t5.1.1\tsmtp; 550 5.1.1"),
        "{events:?}"
    );
    assert!(events[0].ends_with("\tses"), "{events:?}");

    // SignatureVersion 2: a complaint unsubscribes r2; a transient bounce is counted for r3.
    let complaint = payload("ses-complaint.json", &sent, "r2@example.com", 202);
    let (status, answer) = post(&sns_message(
        &sns,
        "Notification",
        &complaint,
        8,
        "2",
        TOPIC,
    ));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        sent.status("r2@example.com"),
        "r2@example.com\tunsubscribed"
    );
    let soft = payload("ses-bounce-transient.json", &sent, "r3@example.com", 203);
    let (status, _) = post(&sns_message(&sns, "Notification", &soft, 9, "2", TOPIC));
    assert_eq!(status, 200);
    assert_eq!(sent.status("r3@example.com"), "r3@example.com\tactive");
    assert!(events_of(&sent, "r3@example.com")[0].contains("soft_bounce\t4.2.2"));

    // Signed, but without the original headers: said, and nothing changes.
    let mut bare: serde_json::Value = serde_json::from_str(&payload(
        "ses-bounce-permanent.json",
        &sent,
        "r3@example.com",
        205,
    ))
    .unwrap();
    for h in ["headers", "commonHeaders"] {
        bare["mail"].as_object_mut().unwrap().remove(h);
    }
    let (status, answer) = post(&sns_message(
        &sns,
        "Notification",
        &bare.to_string(),
        11,
        "2",
        TOPIC,
    ));
    assert_eq!(status, 200);
    assert!(
        answer.contains("Include original email headers"),
        "{answer}"
    );
    assert!(
        serve.log().contains("Include original email headers"),
        "{}",
        serve.log()
    );

    // Signed, but about r1's message for r3: matches no one.
    let crossed = bounce
        .replace("<r1@example.com>", "<r3@example.com>")
        .replace(
            "\"emailAddress\": \"r1@example.com\"",
            "\"emailAddress\": \"r3@example.com\"",
        );
    assert!(crossed.contains("\"emailAddress\": \"r3@example.com\""));
    let (status, answer) = post(&sns_message(
        &sns,
        "Notification",
        &crossed.replace("-201-", "-204-"),
        10,
        "1",
        TOPIC,
    ));
    assert_eq!(status, 200);
    assert!(
        answer.contains("matches no subscriber, ignored"),
        "{answer}"
    );
    assert_eq!(events_of(&sent, "r3@example.com").len(), 1);
}

/// Appends `keys` to the sent site's `[bounces]` table.
fn add_bounces_keys(sent: &Sent, keys: &str) {
    let config = sent.dir.path().join("digestif.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(keys);
    text.push('\n');
    std::fs::write(&config, text).unwrap();
}

#[test]
fn a_real_pop3_mailbox_is_read_by_serve_and_by_bounces_mailbox_and_emptied() {
    let (_server, sent) = Sent::new(3);
    let Some(dovecot) = Dovecot::start() else {
        return;
    };
    dovecot.deliver(
        "1.a",
        &sent.returned("gmail-no-such-user.eml", "r1@example.com", "pop-1@mx"),
    );
    dovecot.deliver(
        "2.b",
        &sent.returned("arf-yahoo-complaint.eml", "r2@example.com", "pop-2@mx"),
    );
    add_bounces_keys(
        &sent,
        &format!(
            "mailbox = \"pop3://bounces@127.0.0.1:{}\"\nmailbox_password_env = \"BOUNCES_PASSWORD\"\npoll_minutes = 1",
            dovecot.pop3_port
        ),
    );
    let out = sent
        .cmd(&["check"])
        .env("BOUNCES_PASSWORD", "imap-secret")
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("ok    bounce mailbox: logged in; 2 message(s) waiting"),
        "{}\n{}",
        show(&out),
        dovecot.log()
    );
    assert_eq!(dovecot.count(), 2);

    let serve = Serve::start(&sent, "", &[("BOUNCES_PASSWORD", "imap-secret")]);
    let t0 = std::time::Instant::now();
    while !(sent.status("r1@example.com") == "r1@example.com\tbounced"
        && sent.status("r2@example.com") == "r2@example.com\tunsubscribed")
    {
        assert!(
            t0.elapsed().as_secs() < 30,
            "serve did not read the POP3 mailbox in 30 s: {}\n{}",
            serve.log(),
            dovecot.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let t0 = std::time::Instant::now();
    while dovecot.count() > 0 {
        assert!(t0.elapsed().as_secs() < 10, "read messages are not deleted");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(serve);
    let events = events_of(&sent, "r1@example.com");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].contains("\tpop3:bounces@127.0.0.1#"),
        "{events:?}"
    );

    dovecot.deliver(
        "3.c",
        &sent.returned("postfix-delayed.eml", "r3@example.com", "pop-3@mx"),
    );
    let out = sent
        .cmd(&["bounces", "--mailbox"])
        .env("BOUNCES_PASSWORD", "imap-secret")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        show(&out),
        dovecot.log()
    );
    assert!(
        stdout(&out)
            .starts_with("read 1: 0 hard bounce(s), 0 soft bounce(s), 0 complaint(s), 1 delay"),
        "{}",
        show(&out)
    );
    assert_eq!(dovecot.count(), 0);
    let out = sent
        .cmd(&["bounces", "--mailbox"])
        .env("BOUNCES_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("login refused"), "{}", show(&out));
    assert!(
        !err.contains("wrong"),
        "the password is shown: {}",
        show(&out)
    );
}

#[test]
fn imaps_and_pop3s_mailboxes_are_read_over_tls_trusting_the_config_s_ca_file_only() {
    let cert = support::cert::Cert::localhost();
    let Some(dovecot) = Dovecot::start_with(Some(&cert)) else {
        return;
    };
    for (scheme, port, who) in [
        ("imaps", dovecot.port, "r1@example.com"),
        ("pop3s", dovecot.pop3_port, "r1@example.com"),
    ] {
        let (_server, sent) = Sent::new(1);
        dovecot.deliver(
            &format!("{scheme}.a"),
            &sent.returned("gmail-no-such-user.eml", who, &format!("{scheme}-1@mx")),
        );
        add_bounces_keys(
            &sent,
            &format!(
                "mailbox = \"{scheme}://bounces@localhost:{port}\"\nmailbox_password_env = \"BOUNCES_PASSWORD\""
            ),
        );
        // Without the CA file the server's certificate is not trusted: nothing is read.
        let out = sent
            .cmd(&["bounces", "--mailbox"])
            .env("BOUNCES_PASSWORD", "imap-secret")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{scheme}: {}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("TLS with"),
            "{scheme}: {}",
            show(&out)
        );
        assert_eq!(dovecot.count(), 1);
        assert_eq!(sent.status(who), format!("{who}\tactive"));

        add_bounces_keys(
            &sent,
            &format!("mailbox_ca_file = {:?}", cert.cert.display().to_string()),
        );
        let out = sent
            .cmd(&["bounces", "--mailbox"])
            .env("BOUNCES_PASSWORD", "imap-secret")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{scheme}: {}\n{}",
            show(&out),
            dovecot.log()
        );
        assert_eq!(sent.status(who), format!("{who}\tbounced"), "{scheme}");
        assert_eq!(dovecot.count(), 0, "{scheme}");
    }
    // Each login was made over TLS (the server requires it, and logs it).
    let log = dovecot.log();
    for service in ["imap-login", "pop3-login"] {
        let logins: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("{service}: Info: Login: user=<bounces>")))
            .collect();
        assert!(!logins.is_empty(), "no {service} login: {log}");
        assert!(logins.iter().all(|l| l.contains(", TLS")), "{log}");
    }
}
