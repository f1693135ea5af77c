//! The SMTP client end to end, as an operator meets it: `digestif send` and
//! `digestif check` against the scripted server of `tests/support/scripted_smtp.py`
//! in plain, STARTTLS and implicit-TLS modes (a certificate made by the test,
//! trusted through `smtp.ca_file`), for what real relays answer: a sender refused
//! at MAIL FROM, content refused after the data, one unknown recipient, no
//! PIPELINING, a 421 in the middle of a session, a relay refusing everything, bytes
//! injected after the STARTTLS 220, and a kill -9 in the middle of a send.
//! Every message the server accepts is parsed with mail-parser.

use crate::support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use digestif::domain::{SubscriberEmail, SubscriberStatus};
use digestif::store::{SqliteStore, Subscribers};
use mail_parser::MessageParser;
use support::cert::Cert;
use support::site::{digestif_cmd, everyone, sending_head, show, site_dir, subscriber, DATE, NOW};
use support::SmtpServer;

/// The relay's account in the AUTH tests.
const LOGIN: &str = "username = \"briefing\"\npassword_env = \"DIGESTIF_SMTP_PASSWORD\"\n";
const PASSWORD_ENV: &str = "DIGESTIF_SMTP_PASSWORD";
const PASSWORD: &str = "s3cret-relay-password";

/// How the client reaches the scripted server.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Plain,
    Starttls,
    Tls,
}

impl Mode {
    /// `smtp.tls` in the config.
    fn config(self) -> &'static str {
        match self {
            Mode::Plain => "none",
            Mode::Starttls => "starttls",
            Mode::Tls => "tls",
        }
    }

    /// The scripted server's `--mode`.
    fn server_flag(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Starttls => "starttls",
            Mode::Tls => "tls",
        }
    }
}

/// The scripted server in `mode` (with its own certificate) and the test's flags.
struct Relay {
    server: SmtpServer,
    mode: Mode,
    cert: Cert,
}

impl Relay {
    fn start(mode: Mode, flags: &[&str]) -> Relay {
        let cert = Cert::localhost();
        let mut all = vec!["--mode", mode.server_flag()];
        if mode != Mode::Plain {
            all.extend(cert.flags());
        }
        all.extend_from_slice(flags);
        Relay {
            server: SmtpServer::scripted(&all),
            mode,
            cert,
        }
    }

    /// The commands of one kind the server read (`MAIL`, `RCPT`…), on every connection.
    fn commands(&self, verb: &str) -> usize {
        self.server
            .log()
            .lines()
            .filter_map(|l| l.split_once(" > ").map(|(_, c)| c.to_string()))
            .filter(|c| c.to_ascii_uppercase().starts_with(verb))
            .count()
    }

    /// The protocol faults the server saw: commands sent before the reply they had to wait for.
    fn sent_ahead(&self) -> Vec<String> {
        self.server
            .events()
            .into_iter()
            .filter(|e| e.starts_with("ahead"))
            .collect()
    }

    /// Every accepted message parsed with mail-parser, checked against its envelope
    /// (sender, one recipient, TLS as the mode says, a personal unsubscribe link);
    /// returns the recipients, sorted.
    fn recipients(&self) -> Vec<String> {
        let mut out = vec![];
        for m in self.server.messages() {
            assert_eq!(m.tls, self.mode != Mode::Plain, "{:?}: TLS", self.mode);
            assert_eq!(m.mail_from, "briefing@news.example.com");
            let p = MessageParser::default()
                .parse(&m.raw)
                .expect("a parsable message");
            assert_eq!(
                p.from().unwrap().first().unwrap().address(),
                Some("briefing@news.example.com")
            );
            assert_eq!(p.to().unwrap().first().unwrap().address(), Some(m.rcpt()));
            assert!(p.subject().unwrap().contains("L'Essentiel"));
            assert!(p.message_id().is_some());
            let text = p.body_text(0).expect("a text part");
            assert!(text.contains("Budget 2027"), "{text}");
            assert!(
                text.contains("https://news.example.com/digestif/unsubscribe?token="),
                "{text}"
            );
            assert!(p.body_html(0).is_some(), "an HTML part");
            out.push(m.rcpt().to_string());
        }
        out.sort();
        out
    }

    /// How many copies each recipient got.
    fn copies(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for r in self.recipients() {
            *counts.entry(r).or_insert(0) += 1;
        }
        counts
    }
}

/// A site sending to a relay: config (host `localhost`, the relay's certificate as
/// `ca_file`), feeds, and `n` active subscribers r1..rn@example.com in SQLite.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(relay: &Relay, pool: usize, n: usize) -> Site {
        Site::with(relay, pool, n, "")
    }

    /// With `smtp` keys added to the `[smtp]` table.
    fn with(relay: &Relay, pool: usize, n: usize, smtp: &str) -> Site {
        let cfg = format!(
            "{}\n[smtp]\ntransport = \"smtp\"\nhost = \"localhost\"\nport = {}\ntls = \"{}\"\n\
             ca_file = \"relay-ca.pem\"\npool_size = {pool}\ntimeout_s = 10\n\
             max_attempts = 3\nretry_base_ms = 20\n{smtp}",
            sending_head(),
            relay.server.port,
            relay.mode.config(),
        );
        let site = Site {
            dir: site_dir(&cfg),
        };
        std::fs::copy(&relay.cert.cert, site.dir.path().join("relay-ca.pem")).unwrap();
        let rows: Vec<_> = (1..=n)
            .map(|i| subscriber(&format!("r{i}@example.com"), None))
            .collect();
        site.store().upsert_many(&rows).unwrap();
        site
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("digestif.toml")
    }

    fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.dir.path().join("digestif.db")).unwrap()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = digestif_cmd(&self.config(), args);
        c.env(PASSWORD_ENV, PASSWORD);
        c
    }

    fn send(&self) -> Output {
        self.cmd(&["send", "--date", DATE, "--now", NOW])
            .output()
            .unwrap()
    }

    fn check(&self) -> Output {
        self.cmd(&["check"]).output().unwrap()
    }

    /// `digestif ledger`'s counts line: (pending, sending, sent, failed).
    fn ledger(&self) -> (u64, u64, u64, u64) {
        let out = self.cmd(&["ledger", "--date", DATE]).output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{DATE}: pending ")))
            .unwrap_or_else(|| panic!("no counts in the ledger's output:\n{text}"));
        let n: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter(|w| !w.is_empty())
            .map(|w| w.parse().unwrap())
            .skip(3) // the date
            .collect();
        (n[0], n[1], n[2], n[3])
    }

    fn status(&self, email: &str) -> SubscriberStatus {
        self.store()
            .subscriber_by_email(&SubscriberEmail::parse(email).unwrap())
            .unwrap()
            .unwrap()
            .status
    }

    /// The subscribers r1..rn whose status is Bounced.
    fn bounced(&self, n: usize) -> Vec<String> {
        (1..=n)
            .map(|i| format!("r{i}@example.com"))
            .filter(|a| self.status(a) == SubscriberStatus::Bounced)
            .collect()
    }
}

fn all_output(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The run's report line: "DATE: sent …, left pending N".
fn report(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .rfind(|l| l.starts_with(&format!("{DATE}: sent ")))
        .unwrap_or_else(|| panic!("no report line:\n{}", show(o)))
        .to_string()
}

fn everyone_gets_one_parsable_copy(mode: Mode, flags: &[&str]) -> Relay {
    let relay = Relay::start(mode, flags);
    let site = Site::new(&relay, 2, 7);
    let out = site.send();
    assert!(out.status.success(), "{mode:?}: {}", show(&out));
    assert_eq!(relay.recipients(), everyone(7), "{mode:?}");
    assert_eq!(site.ledger(), (0, 0, 7, 0), "{mode:?}");
    assert_eq!(relay.sent_ahead(), Vec::<String>::new(), "{mode:?}");
    // The EHLO name is a real one, never `localhost` (relays score that as spam).
    let log = relay.server.log();
    let names: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once(" > ").map(|(_, c)| c))
        .filter_map(|c| c.strip_prefix("EHLO "))
        .collect();
    assert!(!names.is_empty(), "{log}");
    for name in names {
        assert!(
            !name.is_empty() && !name.eq_ignore_ascii_case("localhost"),
            "EHLO {name}"
        );
    }
    relay
}

#[test]
fn every_subscriber_gets_one_parsable_copy_over_plain_smtp() {
    everyone_gets_one_parsable_copy(Mode::Plain, &[]);
}

#[test]
fn every_subscriber_gets_one_parsable_copy_over_starttls() {
    let relay = everyone_gets_one_parsable_copy(Mode::Starttls, &[]);
    // Each session said EHLO again once TLS was up.
    let events = relay.server.events();
    assert!(events.iter().any(|e| e == "tls"), "{events:?}");
}

#[test]
fn every_subscriber_gets_one_parsable_copy_over_implicit_tls() {
    everyone_gets_one_parsable_copy(Mode::Tls, &[]);
}

#[test]
fn check_takes_a_starttls_session_and_sends_nothing() {
    let relay = Relay::start(Mode::Starttls, &[]);
    let site = Site::new(&relay, 2, 1);
    let out = site.check();
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok    delivery: "),
        "{}",
        show(&out)
    );
    assert_eq!(relay.commands("MAIL"), 0);
    assert_eq!(relay.server.count(), 0);
}

/// Without PIPELINING the client must wait for each reply; the server answers a
/// command only once it has read it and flags any command that came early.
#[test]
fn without_pipelining_everything_is_delivered_one_command_at_a_time_over_plain_smtp() {
    everyone_gets_one_parsable_copy(Mode::Plain, &["--no-pipelining"]);
}

#[test]
fn without_pipelining_everything_is_delivered_one_command_at_a_time_over_starttls() {
    everyone_gets_one_parsable_copy(Mode::Starttls, &["--no-pipelining"]);
}

/// The harness itself: without PIPELINING, a client that writes MAIL, RCPT and
/// DATA at once is caught (so the tests above can fail).
#[test]
fn the_scripted_server_flags_a_client_that_sends_ahead_without_pipelining() {
    use std::io::{BufRead, BufReader, Write};
    let relay = Relay::start(Mode::Plain, &["--no-pipelining"]);
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", relay.server.port)).unwrap();
    let mut replies = BufReader::new(conn.try_clone().unwrap());
    let mut reply = || {
        let mut last = String::new();
        loop {
            let mut line = String::new();
            replies.read_line(&mut line).unwrap();
            if line.as_bytes().get(3) != Some(&b'-') {
                return last + &line;
            }
            last += &line;
        }
    };
    assert!(reply().starts_with("220 "));
    conn.write_all(b"EHLO client.test\r\n").unwrap();
    let ehlo = reply();
    assert!(!ehlo.contains("PIPELINING"), "{ehlo}");
    conn.write_all(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        .unwrap();
    for code in ["250", "250", "354"] {
        assert!(reply().starts_with(code));
    }
    conn.write_all(b"Subject: x\r\n\r\nx\r\n.\r\nQUIT\r\n")
        .unwrap();
    assert!(reply().starts_with("250"));
    assert!(reply().starts_with("221"));
    let ahead = relay.sent_ahead();
    assert!(
        ahead.contains(&"ahead after MAIL".to_string())
            && ahead.contains(&"ahead after RCPT".to_string()),
        "{ahead:?}\n{}",
        relay.server.log()
    );
    assert_eq!(relay.server.count(), 1);
}

/// CVE-2011-0411 class: a reply forged into the clear-text stream after the
/// STARTTLS 220 must never be read as the first reply over TLS.
#[test]
fn bytes_injected_after_the_starttls_220_refuse_the_connection_and_nothing_is_sent() {
    let relay = Relay::start(
        Mode::Starttls,
        &[
            "--inject-after-starttls",
            "250-smtp.test forged\r\n250 PIPELINING",
        ],
    );
    let site = Site::new(&relay, 2, 3);
    let out = site.send();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        all_output(&out).contains("STARTTLS"),
        "the error names STARTTLS: {}",
        show(&out)
    );
    assert_eq!(relay.server.count(), 0, "nothing sent");
    assert_eq!(relay.commands("MAIL"), 0, "no transaction even begun");
    assert_eq!(site.ledger(), (3, 0, 0, 0));
    assert!(site.bounced(3).is_empty());
}

#[test]
fn check_fails_when_bytes_follow_the_starttls_220() {
    let relay = Relay::start(Mode::Starttls, &["--inject-after-starttls", "250 forged"]);
    let site = Site::new(&relay, 2, 1);
    let out = site.check();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAIL  delivery: "),
        "{}",
        show(&out)
    );
    assert_eq!(relay.commands("MAIL"), 0);
}

/// A sender refused at MAIL FROM is the operator's configuration, not the
/// subscribers': the run stops, nobody bounces, the rows stay pending.
#[test]
fn a_sender_refused_at_mail_from_stops_the_run_bounces_nobody_and_exits_1_with_the_server_s_words()
{
    let relay = Relay::start(
        Mode::Tls,
        &["--reply", "MAIL=553 5.7.1 Sender address rejected"],
    );
    let pool = 2;
    let site = Site::new(&relay, pool, 10);
    let out = site.send();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("553 5.7.1 Sender address rejected"),
        "{}",
        show(&out)
    );
    assert!(site.bounced(10).is_empty(), "nobody bounced");
    assert_eq!(site.ledger(), (10, 0, 0, 0), "everyone left pending");
    assert_eq!(relay.server.count(), 0);
    assert!(
        relay.commands("MAIL") <= pool,
        "the run stopped at the first refusal on each connection:\n{}",
        relay.server.log()
    );
}

/// 5xx after the data refuses that message, not the address.
#[test]
fn content_refused_after_the_data_fails_that_message_and_bounces_nobody() {
    let relay = Relay::start(
        Mode::Starttls,
        &["--reply", "DOT:r2@example.com=550 5.7.1 content rejected"],
    );
    let site = Site::new(&relay, 2, 5);
    let out = site.send();
    let line = report(&out);
    assert!(
        line.contains("failed 1 (0 bounced)") && line.ends_with("left pending 0"),
        "{}",
        show(&out)
    );
    let failed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("failed: r2@example.com: "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("r2 not reported: {}", show(&out)));
    assert!(failed.contains("550 5.7.1 content rejected"), "{failed}");
    assert!(site.bounced(5).is_empty(), "nobody bounced");
    let mut want = everyone(5);
    want.retain(|a| a != "r2@example.com");
    assert_eq!(relay.recipients(), want);
    assert_eq!(site.ledger(), (0, 0, 4, 1));
}

#[test]
fn a_550_on_one_recipient_bounces_that_one_and_delivers_the_rest() {
    let relay = Relay::start(
        Mode::Tls,
        &[
            "--reply",
            "RCPT:r3@example.com=550 5.1.1 <r3@example.com>: Recipient address rejected",
        ],
    );
    let site = Site::new(&relay, 2, 6);
    let out = site.send();
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        report(&out).contains("failed 1 (1 bounced)"),
        "{}",
        show(&out)
    );
    assert_eq!(site.bounced(6), ["r3@example.com"]);
    let mut want = everyone(6);
    want.retain(|a| a != "r3@example.com");
    assert_eq!(relay.recipients(), want);
    assert_eq!(site.ledger(), (0, 0, 5, 1));
}

/// A relay that says 421 and hangs up after a few messages of each session: the
/// client reconnects; nobody is lost and nobody gets two copies.
#[test]
fn a_421_mid_session_reconnects_and_loses_and_doubles_nothing() {
    let relay = Relay::start(Mode::Starttls, &["--close-after", "3"]);
    let site = Site::new(&relay, 2, 14);
    let out = site.send();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(relay.recipients(), everyone(14), "each exactly once");
    assert!(
        relay.server.log().contains("< 421 "),
        "the relay did hang up:\n{}",
        relay.server.log()
    );
    assert_eq!(site.ledger(), (0, 0, 14, 0));
    assert!(site.bounced(14).is_empty());
}

/// Many consecutive permanent failures (20 by default) stop the run, so a
/// misconfigured relay cannot burn through the list.
fn the_circuit_breaker_stops_a_relay_that_refuses_everything(reply: &str) {
    let n = 60;
    let pool = 2;
    let relay = Relay::start(Mode::Starttls, &["--reply", reply]);
    let site = Site::new(&relay, pool, n);
    let out = site.send();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        all_output(&out).to_lowercase().contains("consecutive"),
        "the run says why it stopped: {}",
        show(&out)
    );
    let (pending, sending, sent, failed) = site.ledger();
    assert_eq!((sending, sent), (0, 0), "{}", show(&out));
    // 20 in a row, plus what was already on the wire when the breaker tripped:
    // on each connection, one message ending and the next one staged behind it.
    assert!(
        (20..=20 + 2 * pool as u64).contains(&failed),
        "about 20 failed, not the whole list: failed {failed}\n{}",
        show(&out)
    );
    assert_eq!(pending + failed, n as u64, "the rest left pending");
    assert_eq!(relay.server.count(), 0);
}

#[test]
fn the_circuit_breaker_stops_a_relay_that_refuses_every_recipient_with_552() {
    the_circuit_breaker_stops_a_relay_that_refuses_everything("RCPT=552 5.2.2 mailbox full");
}

#[test]
fn the_circuit_breaker_stops_a_relay_that_refuses_every_message_after_the_data() {
    the_circuit_breaker_stops_a_relay_that_refuses_everything(
        "DOT=554 5.7.1 message refused by policy",
    );
}

/// The ledger's bound over TLS: kill -9 in the middle of a send, run again, and
/// nobody is missing; at most `pool_size` got two copies, each named in doubt.
#[test]
fn killed_mid_send_over_starttls_then_rerun_leaves_nobody_missing_and_names_the_doubles() {
    let pool = 3;
    let n = 40;
    let relay = Relay::start(Mode::Starttls, &["--delay-ms", "60"]);
    let site = Site::new(&relay, pool, n);
    let mut child = site
        .cmd(&["send", "--date", DATE, "--now", NOW])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    relay.server.wait_for(8, Duration::from_secs(60));
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let before = relay.server.count();
    assert!(before < n, "the run finished before it was killed");
    let (_, in_flight, _, _) = site.ledger();
    assert!(in_flight <= pool as u64, "{in_flight} rows in sending");

    let out = site.send();
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let in_doubt: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("in doubt (may have received two copies): "))
        .map(str::to_string)
        .collect();
    assert!(in_doubt.len() <= pool, "{stdout}");
    let copies = relay.copies();
    let mut doubled = 0;
    for a in everyone(n) {
        let c = copies.get(&a).copied().unwrap_or(0);
        assert!(c >= 1, "{a} was skipped");
        if c > 1 {
            doubled += 1;
            assert_eq!(c, 2, "{a}");
            assert!(
                in_doubt.contains(&a),
                "{a} got two copies but is not named: {stdout}"
            );
        }
    }
    assert!(doubled <= pool);
    assert_eq!(site.ledger(), (0, 0, n as u64, 0));
}

/// The lines of the server's log for each connection, in order.
fn sessions(log: &str) -> BTreeMap<u32, Vec<String>> {
    let mut out: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for l in log.lines() {
        let (conn, rest) = l.split_once(' ').unwrap();
        out.entry(conn.parse().unwrap())
            .or_default()
            .push(rest.to_string());
    }
    out
}

#[test]
fn auth_logs_in_over_tls_with_an_advertised_mechanism_and_delivers() {
    let account = format!("briefing:{PASSWORD}");
    for mech in ["PLAIN", "LOGIN"] {
        let relay = Relay::start(Mode::Starttls, &["--auth", mech, "--auth-user", &account]);
        let site = Site::with(&relay, 2, 4, LOGIN);
        let out = site.send();
        assert!(out.status.success(), "{mech}: {}", show(&out));
        assert_eq!(relay.recipients(), everyone(4), "{mech}");
        let log = relay.server.log();
        for (conn, lines) in sessions(&log) {
            let Some(auth) = lines.iter().position(|l| l.starts_with("> AUTH ")) else {
                continue;
            };
            assert!(lines[auth].starts_with(&format!("> AUTH {mech} ")), "{log}");
            let tls = lines.iter().position(|l| l == "! tls");
            assert!(
                tls.is_some_and(|t| t < auth),
                "connection {conn}: AUTH before TLS:\n{log}"
            );
            assert!(lines.contains(&"! auth ok briefing".to_string()), "{log}");
        }
        assert!(!log.contains(PASSWORD), "the log never holds the password");
    }
}

#[test]
fn a_password_is_never_sent_in_clear_without_allow_plaintext_auth() {
    let relay = Relay::start(Mode::Plain, &["--auth", "PLAIN LOGIN"]);
    let site = Site::with(&relay, 2, 3, LOGIN);
    let out = site.send();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        all_output(&out).contains("allow_plaintext_auth"),
        "the error says how to allow it: {}",
        show(&out)
    );
    assert_eq!(relay.commands("AUTH"), 0, "{}", relay.server.log());
    assert_eq!(relay.server.count(), 0);
    assert_eq!(site.ledger(), (3, 0, 0, 0));
    assert!(site.bounced(3).is_empty());
}

#[test]
fn allow_plaintext_auth_logs_in_on_a_trusted_network() {
    let account = format!("briefing:{PASSWORD}");
    let relay = Relay::start(Mode::Plain, &["--auth", "PLAIN", "--auth-user", &account]);
    let site = Site::with(
        &relay,
        2,
        3,
        &format!("{LOGIN}allow_plaintext_auth = true\n"),
    );
    let out = site.send();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(relay.recipients(), everyone(3));
    assert!(relay
        .server
        .events()
        .contains(&"auth ok briefing".to_string()));
}

#[test]
fn a_relay_offering_no_mechanism_we_speak_gets_no_credentials() {
    let relay = Relay::start(Mode::Tls, &["--auth", "CRAM-MD5 XOAUTH2"]);
    let site = Site::with(&relay, 2, 3, LOGIN);
    let out = site.send();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(all_output(&out).contains("CRAM-MD5"), "{}", show(&out));
    assert_eq!(relay.commands("AUTH"), 0, "{}", relay.server.log());
    assert_eq!(relay.server.count(), 0);
    assert_eq!(site.ledger(), (3, 0, 0, 0));
}

/// A refused login is the operator's to fix: the run stops at once, nobody
/// bounces, the server's words are shown.
#[test]
fn a_refused_login_stops_the_run_and_bounces_nobody() {
    let relay = Relay::start(
        Mode::Tls,
        &["--auth", "PLAIN LOGIN", "--auth-user", "briefing:another"],
    );
    let pool = 2;
    let site = Site::with(&relay, pool, 6, LOGIN);
    let out = site.send();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        all_output(&out).contains("535 5.7.8"),
        "the server's words: {}",
        show(&out)
    );
    assert!(
        relay.commands("AUTH") <= pool,
        "not retried:\n{}",
        relay.server.log()
    );
    assert_eq!(relay.server.count(), 0);
    assert_eq!(site.ledger(), (6, 0, 0, 0));
    assert!(site.bounced(6).is_empty());
}

#[test]
fn a_pool_of_100_connections_delivers_everyone_once() {
    let relay = Relay::start(Mode::Starttls, &[]);
    let site = Site::new(&relay, 100, 150);
    let out = site.send();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(relay.recipients(), everyone(150));
    assert_eq!(site.ledger(), (0, 0, 150, 0));
}

/// 4xx at any stage is tried again later: each subscriber still gets one copy.
#[test]
fn transient_replies_at_every_stage_are_retried_and_each_subscriber_served_once() {
    let relay = Relay::start(
        Mode::Starttls,
        &[
            "--reply",
            "MAIL#1=451 4.3.0 try again later",
            "--reply",
            "RCPT:r2@example.com#1=450 4.2.1 mailbox busy",
            "--reply",
            "DATA#1=451 4.3.0 queue full",
            "--reply",
            "DOT:r4@example.com#1=452 4.3.1 insufficient system storage",
        ],
    );
    let site = Site::new(&relay, 2, 6);
    let out = site.send();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(relay.recipients(), everyone(6), "each exactly once");
    for reply in [
        "< 451 4.3.0 try again",
        "< 450 4.2.1",
        "< 451 4.3.0 queue",
        "< 452 4.3.1",
    ] {
        assert!(
            relay.server.log().contains(reply),
            "{reply} was never given:\n{}",
            relay.server.log()
        );
    }
    let line = report(&out);
    assert!(line.contains("failed 0 (0 bounced)"), "{line}");
    assert!(!line.contains("retried 0"), "{line}");
    assert_eq!(site.ledger(), (0, 0, 6, 0));
}

/// `tls = "starttls"` never falls back to clear text: not offered, or refused.
fn starttls_unavailable_sends_nothing_in_clear(relay: Relay) {
    let site = Site::new(&relay, 2, 3);
    let out = site.send();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(all_output(&out).contains("STARTTLS"), "{}", show(&out));
    assert_eq!(relay.commands("MAIL"), 0, "{}", relay.server.log());
    assert_eq!(relay.commands("AUTH"), 0);
    assert_eq!(relay.server.count(), 0);
    assert_eq!(site.ledger(), (3, 0, 0, 0));
    let out = site.check();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAIL  delivery: "),
        "{}",
        show(&out)
    );
}

#[test]
fn a_relay_that_does_not_offer_starttls_gets_nothing_in_clear() {
    let mut relay = Relay::start(Mode::Plain, &[]);
    relay.mode = Mode::Starttls; // what the config asks for
    starttls_unavailable_sends_nothing_in_clear(relay);
}

#[test]
fn a_relay_refusing_starttls_gets_nothing_in_clear() {
    starttls_unavailable_sends_nothing_in_clear(Relay::start(
        Mode::Starttls,
        &[
            "--reply",
            "STARTTLS=454 4.7.0 TLS not available due to local problem",
        ],
    ));
}

/// 550 on RCPT bounces only when it says the address is bad: a policy refusal
/// (5.7.x) or a full mailbox (5.2.2) fails that message and keeps the subscriber.
#[test]
fn a_policy_refusal_or_a_full_mailbox_on_rcpt_fails_the_message_without_bouncing() {
    let relay = Relay::start(
        Mode::Tls,
        &[
            "--reply",
            "RCPT:r2@example.com=550 5.7.1 <r2@example.com>: Recipient address rejected: Access denied",
            "--reply",
            "RCPT:r3@example.com=550 5.2.2 <r3@example.com>: mailbox full",
            "--reply",
            "RCPT:r4@example.com=550 5.1.1 <r4@example.com>: no such user",
        ],
    );
    let site = Site::new(&relay, 2, 5);
    let out = site.send();
    assert!(
        report(&out).contains("failed 3 (1 bounced)"),
        "{}",
        show(&out)
    );
    assert_eq!(site.bounced(5), ["r4@example.com"]);
    assert_eq!(relay.recipients(), ["r1@example.com", "r5@example.com"]);
    assert_eq!(site.ledger(), (0, 0, 2, 3));
}

#[test]
fn a_relay_refusing_ehlo_stops_the_run_and_marks_nobody() {
    let relay = Relay::start(
        Mode::Starttls,
        &["--reply", "EHLO=554 5.7.1 you are not welcome here"],
    );
    let site = Site::new(&relay, 2, 4);
    let out = site.send();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        all_output(&out).contains("554 5.7.1 you are not welcome here"),
        "{}",
        show(&out)
    );
    assert_eq!(relay.commands("MAIL"), 0);
    assert_eq!(site.ledger(), (4, 0, 0, 0));
    assert!(site.bounced(4).is_empty());
}

/// A 421 in answer to the end of the data: that message was not taken; it goes
/// again on a new connection, once.
#[test]
fn a_421_after_the_data_is_sent_again_on_a_new_connection_and_delivered_once() {
    let relay = Relay::start(
        Mode::Tls,
        &[
            "--reply",
            "DOT:r3@example.com#1=421 4.3.2 service shutting down",
        ],
    );
    let site = Site::new(&relay, 2, 6);
    let out = site.send();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(relay.recipients(), everyone(6), "each exactly once");
    assert!(relay
        .server
        .log()
        .contains("< 421 4.3.2 service shutting down"));
    assert_eq!(site.ledger(), (0, 0, 6, 0));
}
