//! The product on PostgreSQL, as an operator runs it: `[storage] database =
//! "postgres://…"`, the binary, a throwaway cluster of the tests' own and a real
//! SMTP server (aiosmtpd) over TCP; two `serve` processes on one database.

use crate::support;

use std::path::PathBuf;
use std::process::Output;

use support::site::{digestif_cmd, everyone, recipients, show, site_dir, smtp_table, stdout};
use support::site::{DATE, NOW};
use support::{pg_cluster, SmtpServer};

struct Site {
    dir: tempfile::TempDir,
    url: String,
}

impl Site {
    /// A config on a new PostgreSQL database, sending to `server`.
    fn new(server: &SmtpServer) -> Site {
        Site::with(server, 2, "")
    }

    /// The same with `pool` connections per sender and `more` config.
    fn with(server: &SmtpServer, pool: usize, more: &str) -> Site {
        let url = pg_cluster::fresh_database();
        let cfg = format!(
            "{}\n[storage]\ndatabase = \"{url}\"\n\n{}\n{more}",
            support::site::sending_head(),
            smtp_table(server, pool)
        );
        Site {
            dir: site_dir(&cfg),
            url,
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("digestif.toml")
    }

    fn run(&self, args: &[&str]) -> Output {
        digestif_cmd(&self.config(), args).output().unwrap()
    }

    fn send(&self) -> Output {
        self.run(&["send", "--date", DATE, "--now", NOW])
    }

    /// A file of the issue of DATE in this folder's `digests/`.
    fn archived(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join("digests").join(DATE).join(file)).unwrap()
    }

    /// Rewrites the config through `edit`.
    fn edit_config(&self, edit: impl Fn(String) -> String) {
        let cfg = std::fs::read_to_string(self.config()).unwrap();
        std::fs::write(self.config(), edit(cfg)).unwrap();
    }

    /// `send` of the next day's issue (2026-11-28) at 06:30 Paris time.
    fn send_next_day(&self) -> Output {
        self.run(&[
            "send",
            "--date",
            "2026-11-28",
            "--now",
            "2026-11-28T06:30:00+01:00",
        ])
    }

    /// Adds r1..rn@example.com through the binary.
    fn add_readers(&self, n: usize) {
        for i in 1..=n {
            let out = self.run(&["subscribers", "add", &format!("r{i}@example.com")]);
            assert!(out.status.success(), "{}", show(&out));
        }
    }

    /// Another working folder on the same database (another machine): its
    /// config is this one's passed through `edit`, and it has no `digests/`.
    fn elsewhere(&self, edit: impl Fn(String) -> String) -> Site {
        let cfg = std::fs::read_to_string(self.config()).unwrap();
        Site {
            dir: site_dir(&edit(cfg)),
            url: self.url.clone(),
        }
    }
}

/// The test feed with a story for the next day (2026-11-28) too.
fn with_next_day() -> String {
    support::site::FEED.replace(
        "<item>",
        "<item><title>Le lendemain</title><link>https://example.com/demain</link>\
         <description>La suite.</description><pubDate>Sat, 28 Nov 2026 05:00:00 +0100</pubDate></item><item>",
    )
}

/// The http link of a message's List-Unsubscribe header (RFC 8058 one-click).
fn one_click_link(raw: &[u8]) -> String {
    mail_parser::MessageParser::default()
        .parse(raw)
        .unwrap()
        .header_raw("List-Unsubscribe")
        .unwrap()
        .split(['<', '>'])
        .find(|s| s.starts_with("http"))
        .unwrap()
        .to_string()
}

/// The HTML and text bodies and the subject of a message, with the
/// subscriber's own unsubscribe link (from List-Unsubscribe) replaced by a
/// placeholder: what every subscriber of one variant must get byte for byte.
fn shared_content(raw: &[u8]) -> (String, String, String) {
    let msg = mail_parser::MessageParser::default().parse(raw).unwrap();
    let link = one_click_link(raw);
    let strip = |body: &str| {
        assert!(body.contains(&link), "the body carries its own link");
        body.replace(&link, "LINK")
    };
    (
        msg.subject().unwrap().to_string(),
        strip(&msg.body_html(0).unwrap()),
        strip(&msg.body_text(0).unwrap()),
    )
}

#[test]
fn a_send_on_postgresql_reaches_each_subscriber_once_and_a_second_send_sends_nothing() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server);
    let out = site.run(&["migrate"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out).trim(), "database at schema version 7");

    let n = 12;
    site.add_readers(n);
    // One subscriber per address whatever its case, on this backend too.
    let out = site.run(&["subscribers", "add", "R1@EXAMPLE.com"]);
    assert!(out.status.success(), "{}", show(&out));

    let out = site.send();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(recipients(&server), everyone(n));
    assert_eq!(
        stdout(&out).lines().last().unwrap(),
        format!(
            "{DATE}: sent {n}, retried 0, failed 0 (0 bounced), skipped 0, in doubt 0, left pending 0"
        )
    );

    let out = site.send();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(server.count(), n, "the second send sent nothing");

    // The ledger is in PostgreSQL, and no SQLite file was made on the side.
    let mut db = postgres::Client::connect(&site.url, postgres::NoTls).unwrap();
    let sent: i64 = db
        .query_one(
            "SELECT COUNT(*) FROM deliveries WHERE state = 'sent' AND issue_date = $1::text::date",
            &[&DATE],
        )
        .unwrap()
        .get(0);
    assert_eq!(sent, n as i64);
    assert!(!site.dir.path().join("digestif.db").exists());
    let out = site.run(&["ledger", "--date", DATE]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(stdout(&out).contains(&n.to_string()), "{}", show(&out));
}

/// Three `digestif send` processes on one database, as on three machines (each
/// its own host name, so only the heartbeat tells that one is gone), send one
/// issue to 3,000 subscribers through a real SMTP server (20,000 in `.ci/run`,
/// `DIGESTIF_TEST_SENDERS_READERS`). One is killed with SIGKILL mid-send: the
/// two others finish its share; the only readers who got two copies are the
/// ones they report in doubt, at most its `pool_size`.
#[test]
fn three_senders_share_one_issue_and_a_killed_ones_share_is_finished_by_the_others() {
    // Enough for the three to be sending at once when one is killed, and for
    // the killed one to be killed mid-send (it is killed once N/8 went out and
    // it sent some itself). CI runs it once more at the list size of the
    // issue, 20,000 (some 50 CPU seconds of aiosmtpd and three debug builds).
    let n: usize = std::env::var("DIGESTIF_TEST_SENDERS_READERS")
        .ok()
        .map(|v| v.parse().expect("DIGESTIF_TEST_SENDERS_READERS: a number"))
        .unwrap_or(3_000);
    const POOL: usize = 4;
    let server = SmtpServer::start(&["--pipelining"]);
    let site = Site::with(&server, POOL, "[schedule]\nheartbeat_seconds = 3\n");
    let csv = site.dir.path().join("subscribers.csv");
    let rows: String = (1..=n).map(|i| format!("r{i}@example.com\n")).collect();
    std::fs::write(&csv, format!("email\n{rows}")).unwrap();
    let out = site.run(&["subscribers", "import", csv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let out = site.run(&["build", "--date", DATE, "--now", NOW]);
    assert!(out.status.success(), "{}", show(&out));

    let sender = |host: &str| {
        digestif_cmd(&site.config(), &["send", "--date", DATE, "--now", NOW])
            .env("HOSTNAME", host)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = sender("machine-a");
    let mut b = sender("machine-b");
    let c = sender("machine-c");
    server.wait_for(n / 8, std::time::Duration::from_secs(300));
    // Killed once it has sent some of its share.
    let mut db = postgres::Client::connect(&site.url, postgres::NoTls).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while db
        .query_one(
            "SELECT COUNT(*) FROM deliveries
             WHERE issue_date = $1::text::date AND state = 'sent' AND holder LIKE '%machine-b%'",
            &[&DATE],
        )
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(std::time::Instant::now() < deadline, "machine-b never sent");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    b.kill().unwrap();
    let b = b.wait_with_output().unwrap();
    assert_eq!(b.status.code(), None, "killed mid-send: {}", show(&b));
    let (a, c) = (a.wait_with_output().unwrap(), c.wait_with_output().unwrap());
    assert_eq!(a.status.code(), Some(0), "{}", show(&a));
    assert_eq!(c.status.code(), Some(0), "{}", show(&c));

    // Everyone at least once; two copies only for readers reported in doubt.
    let got = recipients(&server);
    let mut copies = std::collections::BTreeMap::<String, usize>::new();
    for r in &got {
        *copies.entry(r.clone()).or_default() += 1;
    }
    assert_eq!(
        copies.keys().cloned().collect::<Vec<_>>(),
        everyone(n),
        "every subscriber reached"
    );
    let twice: Vec<&String> = copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|x| x.0)
        .collect();
    assert!(copies.values().all(|n| *n <= 2), "three copies somewhere");
    let in_doubt: Vec<String> = [&a, &c]
        .iter()
        .flat_map(|o| {
            stdout(o)
                .lines()
                .filter_map(|l| l.strip_prefix("in doubt (may have received two copies): "))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(in_doubt.len() <= POOL, "{in_doubt:?}");
    for r in &twice {
        assert!(
            in_doubt.contains(r),
            "{r} got two copies, not reported in doubt"
        );
    }
    assert_eq!(got.len(), n + twice.len());

    // Each process sent under its own name, the killed one too; nothing is left.
    let by_holder: Vec<(String, i64)> = db
        .query(
            "SELECT holder, COUNT(*) FROM deliveries
             WHERE issue_date = $1::text::date AND state = 'sent' GROUP BY holder",
            &[&DATE],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(by_holder.len(), 3, "{by_holder:?}");
    for host in ["machine-a", "machine-b", "machine-c"] {
        assert!(
            by_holder.iter().any(|(h, n)| h.contains(host) && *n > 0),
            "{host} sent nothing: {by_holder:?}"
        );
    }
    assert_eq!(by_holder.iter().map(|x| x.1).sum::<i64>(), n as i64);
    let left: i64 = db
        .query_one(
            "SELECT COUNT(*) FROM deliveries
             WHERE issue_date = $1::text::date AND state <> 'sent'",
            &[&DATE],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    let senders: i64 = db
        .query_one("SELECT COUNT(*) FROM senders", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        senders, 0,
        "the survivors left; the killed one was taken over"
    );
}

#[test]
fn a_database_migrated_by_a_newer_digestif_is_refused_with_a_clear_error() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server);
    let out = site.run(&["migrate"]);
    assert!(out.status.success(), "{}", show(&out));
    let mut db = postgres::Client::connect(&site.url, postgres::NoTls).unwrap();
    db.batch_execute("INSERT INTO schema_migrations VALUES (99, 'future', now())")
        .unwrap();
    for args in [&["migrate"][..], &["subscribers", "list"][..]] {
        let out = site.run(args);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("newer than this digestif"), "{err}");
    }
}

#[test]
fn a_storage_url_that_is_neither_sqlite_nor_postgres_names_the_key_and_its_line() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server);
    site.edit_config(|cfg| cfg.replace(&site.url, "mysql://x@localhost/db"));
    let out = site.run(&["migrate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("storage.database") && err.contains("postgres://") && err.contains("line"),
        "{err}"
    );
}

#[test]
fn an_install_moved_from_sqlite_by_store_copy_goes_on_on_postgresql() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server);
    let pg_url = site.url.clone();
    // The install as it was: on a SQLite file next to the config.
    site.edit_config(|cfg| cfg.replace(&pg_url, "sqlite://digestif.db"));
    site.add_readers(4);
    let out = site.run(&["unsubscribe", "r4@example.com"]);
    assert!(out.status.success(), "{}", show(&out));

    let file = format!("sqlite://{}", site.dir.path().join("digestif.db").display());
    let out = site.run(&["store", "copy", "--from", &file, "--to", &pg_url]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stdout(&out).starts_with("copied 4 subscribers, 0 sign-ups, 0 suppressions"),
        "{}",
        show(&out)
    );
    // Copying again into the now non-empty database is refused.
    let out = site.run(&["store", "copy", "--from", &file, "--to", &pg_url]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        show(&out)
    );

    // The config now names PostgreSQL: the unsubscribed reader stays out.
    site.edit_config(|cfg| cfg.replace("sqlite://digestif.db", &pg_url));
    let out = site.send();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(recipients(&server), everyone(3));
}

/// A `digestif serve` process; killed when dropped.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request to 127.0.0.1:`port`; the status and the body.
fn http(port: u16, method: &str, target: &str, body: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, out))
}

impl Site {
    /// `serve` on a port of its own choosing (`--listen 127.0.0.1:0`), read
    /// from its log: a port picked free beforehand can be taken by another
    /// test's connection before the instance binds it, and the requests then
    /// reach someone else. The instance and its port, once it answers.
    fn serve(&self) -> (Serve, u16) {
        use std::io::BufRead;
        let mut child = digestif_cmd(&self.config(), &["serve", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let serve = Serve(child);
        let mut log = String::new();
        let port = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!("serve exited before listening:\n{log}")
            };
            log.push_str(&line);
            log.push('\n');
            if let Some(at) = line.split("listening on http://127.0.0.1:").nth(1) {
                let digits: String = at.chars().take_while(char::is_ascii_digit).collect();
                break digits.parse::<u16>().expect("the port it listens on");
            }
        };
        // Keep reading its log so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let start = std::time::Instant::now();
        while !matches!(http(port, "GET", "/healthz", ""), Ok((200, _))) {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "serve on port {port} never answered /healthz"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        (serve, port)
    }
}

#[test]
fn a_one_click_unsubscribe_on_one_serve_instance_is_honoured_by_the_next_send() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server);
    // Links name an address no instance listens on; the scheduler stays off
    // (sends are run by hand here).
    let link_port = free_port();
    let cfg = std::fs::read_to_string(site.config()).unwrap().replace(
        "https://news.example.com/digestif",
        &format!("http://127.0.0.1:{link_port}"),
    );
    std::fs::write(
        site.config(),
        format!("{cfg}\n[schedule]\nenabled = false\n"),
    )
    .unwrap();
    std::fs::write(site.dir.path().join("feeds/monde.xml"), with_next_day()).unwrap();
    site.add_readers(3);
    let out = site.send();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(recipients(&server), everyone(3));
    let to_r2 = server
        .messages()
        .into_iter()
        .find(|m| m.rcpt() == "r2@example.com")
        .unwrap();
    let one_click = one_click_link(&to_r2.raw);
    let target = one_click
        .strip_prefix(&format!("http://127.0.0.1:{link_port}"))
        .unwrap()
        .to_string();

    // Two instances on the one database; the click lands on B, not where the link points.
    let (_a, port_a) = site.serve();
    let (_b, port_b) = site.serve();
    let (status, page) = http(port_b, "POST", &target, "List-Unsubscribe=One-Click").unwrap();
    assert_eq!(status, 200, "{page}");
    let (status, _) = http(port_a, "GET", "/healthz", "").unwrap();
    assert_eq!(status, 200);

    // The next issue, sent by another process, goes to the two others only.
    let out = site.send_next_day();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(server.count(), 5, "{}", show(&out));
    assert_eq!(
        recipients(&server),
        vec![
            "r1@example.com",
            "r1@example.com",
            "r2@example.com",
            "r3@example.com",
            "r3@example.com"
        ]
    );
}

/// Another machine, whose working folder has no `digests/`, whose feeds are
/// gone and whose subject line differs, sends the issue frozen in the database
/// by the first: byte for byte what the first sent.
#[test]
fn a_sender_without_the_issue_in_its_folder_sends_the_frozen_issue_byte_for_byte() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server);
    let out = site.run(&["subscribers", "add", "r1@example.com"]);
    assert!(out.status.success(), "{}", show(&out));
    let out = site.send();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = site.run(&["subscribers", "add", "r2@example.com"]);
    assert!(out.status.success(), "{}", show(&out));

    let other = site.elsewhere(|cfg| {
        cfg.replace(
            "from = \"L'Essentiel <briefing@news.example.com>\"\n",
            "from = \"L'Essentiel <briefing@news.example.com>\"\nsubject = \"Autre chose {date}\"\n",
        )
    });
    std::fs::remove_file(other.dir.path().join("feeds/monde.xml")).unwrap();
    assert!(!other.dir.path().join("digests").exists());
    // The editor's preview there shows the issue as kept, without building it.
    let out = other.run(&["preview", "--date", DATE, "--format", "html"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(out.stdout, site.archived("email.html"));
    assert!(
        !other.dir.path().join("digests").exists(),
        "a preview writes nothing"
    );
    let out = other.send();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(recipients(&server), everyone(2));

    let messages = server.messages();
    let by = |to: &str| messages.iter().find(|m| m.rcpt() == to).unwrap();
    let first = shared_content(&by("r1@example.com").raw);
    let second = shared_content(&by("r2@example.com").raw);
    assert!(first.0.contains("L'Essentiel"), "{first:?}");
    assert!(first.1.contains("Budget 2027"), "{}", first.1);
    assert_eq!(
        second, first,
        "subject, HTML and text as the first machine sent them"
    );
    assert_ne!(by("r1@example.com").raw, by("r2@example.com").raw);

    // The other folder now holds the issue as kept, for its editors.
    for f in ["digest.json", "email.html", "email.txt"] {
        assert_eq!(other.archived(f), site.archived(f), "{f}");
    }
}

/// Two `serve` instances in different working folders (two machines), one of
/// them without the issue in its folder and with other feeds: the archive
/// pages come from the database, the same on both.
#[test]
fn two_serve_instances_in_different_folders_show_the_same_archive() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server);
    let out = site.run(&["build", "--date", DATE, "--now", NOW]);
    assert!(out.status.success(), "{}", show(&out));
    let other = site.elsewhere(|cfg| cfg);
    std::fs::write(
        other.dir.path().join("feeds/monde.xml"),
        support::site::FEED.replace("Budget 2027", "Autre titre"),
    )
    .unwrap();
    let (_a, port_a) = site.serve();
    let (_b, port_b) = other.serve();
    for target in [
        format!("/archive/{DATE}"),
        "/archive".into(),
        "/archive/feed.xml".into(),
    ] {
        let (status_a, page_a) = http(port_a, "GET", &target, "").unwrap();
        let (status_b, page_b) = http(port_b, "GET", &target, "").unwrap();
        assert_eq!(
            (status_a, status_b),
            (200, 200),
            "{target}: {page_a}\n{page_b}"
        );
        let body = |p: &str| p.split_once("\r\n\r\n").unwrap().1.to_string();
        assert_eq!(body(&page_b), body(&page_a), "{target}");
        assert!(body(&page_a).contains("Budget 2027"), "{target}: {page_a}");
    }
    let kept = String::from_utf8(site.archived("email.html")).unwrap();
    let (_, page) = http(port_b, "GET", &format!("/archive/{DATE}"), "").unwrap();
    assert!(page.ends_with(&kept), "the page is the archived email");
}

/// `?sslmode=verify-full` and `[storage] ca_file`: every connection of every
/// command is made over TLS, the server's certificate checked against the file
/// (the server refuses this database in clear, so the send proves it).
#[test]
fn a_send_over_tls_checks_the_database_certificate_against_the_ca_file_of_the_config() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server);
    let cluster = pg_cluster::cluster();
    cluster.require_tls_for(site.url.rsplit('/').next().unwrap());
    let out = site.run(&["migrate"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "in clear: refused\n{}",
        show(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "no encryption: the server takes this database over TLS only: \
             add sslmode=verify-full to the URL, and sslrootcert=PATH (or [storage] ca_file)"
        ),
        "{}",
        show(&out)
    );

    std::fs::copy(&cluster.ca_file, site.dir.path().join("db-ca.pem")).unwrap();
    let cfg = std::fs::read_to_string(site.config()).unwrap().replace(
        &format!("database = \"{}\"", site.url),
        &format!(
            "database = \"{}?sslmode=verify-full\"\nca_file = \"db-ca.pem\"",
            site.url
        ),
    );
    std::fs::write(site.config(), cfg).unwrap();
    site.add_readers(3);
    let out = site.send();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(recipients(&server), everyone(3));

    // Another CA: the certificate is refused, nothing is done in clear instead.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    std::fs::write(site.dir.path().join("db-ca.pem"), other.cert.pem()).unwrap();
    let out = site.run(&["subscribers", "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let ca_file = site.dir.path().join("db-ca.pem");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "the server's certificate is not signed by the CA in sslrootcert {} or a system root: name the CA that signed \
             it in sslrootcert=PATH (or [storage] ca_file) (checked in every sslmode but \
             disable, require too)",
            ca_file.display()
        )),
        "{}",
        show(&out)
    );

    // The right CA, but a host name the certificate does not carry, in the
    // mode where libpq would not check it.
    std::fs::copy(&cluster.ca_file, &ca_file).unwrap();
    site.edit_config(|cfg| {
        cfg.replace("@127.0.0.1:", "@localhost:")
            .replace("sslmode=verify-full", "sslmode=require")
    });
    let out = site.run(&["subscribers", "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "certificate not valid for name \"localhost\"; certificate is only valid for \
             IpAddress(127.0.0.1): the server's certificate is not for the host of the URL: \
             write the host as the certificate names it, or have the certificate made for \
             this host (checked in every sslmode but disable, require too)"
        ),
        "{}",
        show(&out)
    );
}

/// Another machine, without the past issues in its folder, builds the next
/// one: the stories they carried are known from the database and not sent again.
#[test]
fn a_machine_without_past_issues_in_its_folder_does_not_send_their_stories_again() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server);
    // 48-hour windows: the next day's window holds this day's stories too.
    site.edit_config(|cfg| cfg.replace("[newsletter]\n", "[newsletter]\nwindow_hours = 48\n"));
    std::fs::write(site.dir.path().join("feeds/monde.xml"), with_next_day()).unwrap();
    site.add_readers(1);
    let out = site.send();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    let other = site.elsewhere(|cfg| cfg);
    std::fs::write(other.dir.path().join("feeds/monde.xml"), with_next_day()).unwrap();
    let out = other.send_next_day();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let messages = server.messages();
    assert_eq!(messages.len(), 2);
    let text = |raw: &[u8]| {
        mail_parser::MessageParser::default()
            .parse(raw)
            .unwrap()
            .body_text(0)
            .unwrap()
            .to_string()
    };
    let (first, next) = (text(&messages[0].raw), text(&messages[1].raw));
    assert!(first.contains("Budget 2027"), "{first}");
    assert!(next.contains("Le lendemain"), "{next}");
    assert!(
        !next.contains("Budget 2027"),
        "sent again the next day:\n{next}"
    );
}

/// A site whose schedule sends today's issue now (send time a minute ago, in
/// Paris), on a new PostgreSQL database, sending to `server`; `readers`
/// subscribers r1..rN imported; the issue archived in its folder. Its folder,
/// config, URL and date.
fn scheduled_site(
    server: &SmtpServer,
    readers: usize,
) -> (tempfile::TempDir, PathBuf, String, chrono::NaiveDate) {
    use support::app;
    let now = digestif::clock::now() - chrono::Duration::minutes(1);
    let local = now.with_timezone(&chrono_tz::Europe::Paris);
    let url = pg_cluster::fresh_database();
    let text = app::config_text(
        "http://127.0.0.1:9",
        &app::Mail::Smtp(server.port),
        &local.format("%H:%M").to_string(),
    )
    .replace("sqlite://digestif.db", &url);
    let dir = site_dir(&text);
    let config = dir.path().join("digestif.toml");
    let cfg = digestif::config::Config::from_file(&config).unwrap();
    app::archive_in_folder(&cfg, local.date_naive());
    let csv = dir.path().join("subscribers.csv");
    let rows: String = (1..=readers)
        .map(|i| format!("r{i}@example.com\n"))
        .collect();
    std::fs::write(&csv, format!("email\n{rows}")).unwrap();
    let out = digestif_cmd(&config, &["subscribers", "import", csv.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    (dir, config, url, local.date_naive())
}

/// The rows of the issue of `date` sent, by the sender that sent them.
fn sent_by_holder(url: &str, date: chrono::NaiveDate) -> Vec<(String, i64)> {
    let mut db = postgres::Client::connect(url, postgres::NoTls).unwrap();
    db.query(
        "SELECT holder, COUNT(*) FROM deliveries
         WHERE issue_date = $1 AND state = 'sent' GROUP BY holder ORDER BY holder",
        &[&date],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// `send --date DAY` as machine-send, then, once `ready` returned, `serve` as
/// machine-serve (its log in `dir`/serve.log): how the send ended, and the
/// service (stopped when dropped).
fn send_then_serve(
    config: &std::path::Path,
    dir: &std::path::Path,
    day: &str,
    ready: impl FnOnce(),
) -> (Output, Serve) {
    let send = digestif_cmd(config, &["send", "--date", day])
        .env("HOSTNAME", "machine-send")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    ready();
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let serve = Serve(
        digestif_cmd(config, &["serve", "--listen", "127.0.0.1:0"])
            .env("HOSTNAME", "machine-serve")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    (send.wait_with_output().unwrap(), serve)
}

/// The first run recorded for `date` (status, message), waited for (60 s at
/// most), and the service's log in `dir`/serve.log.
fn first_run(
    url: &str,
    date: chrono::NaiveDate,
    dir: &std::path::Path,
) -> ((String, String), String) {
    let mut db = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let start = std::time::Instant::now();
    let run = loop {
        let runs = db
            .query(
                "SELECT status, message FROM runs WHERE issue_date = $1",
                &[&date],
            )
            .unwrap();
        if let Some(r) = runs.first() {
            break (r.get::<_, String>(0), r.get::<_, String>(1));
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the service recorded no run: {}",
            std::fs::read_to_string(dir.join("serve.log")).unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    (run, std::fs::read_to_string(dir.join("serve.log")).unwrap())
}

/// The scheduler of `serve`, finding the issue's lease held by a `digestif
/// send` (another machine), joins that send instead of waiting for the lease:
/// both send rows of the ledger, each reader gets the issue once, and the
/// service's run says it joined.
#[test]
fn a_scheduled_serve_that_finds_a_send_under_way_joins_it_and_each_reader_gets_one_copy() {
    const N: usize = 300;
    let server = SmtpServer::start(&["--delay-ms", "40"]);
    let (dir, config, url, date) = scheduled_site(&server, N);
    let day = date.to_string();
    let (send, _serve) = send_then_serve(&config, dir.path(), &day, || {
        server.wait_for(10, std::time::Duration::from_secs(60))
    });
    assert_eq!(send.status.code(), Some(0), "{}", show(&send));

    let (run, log) = first_run(&url, date, dir.path());
    assert_eq!(run.0, "ok", "{run:?}\n{log}");
    assert!(
        run.1.starts_with("joined the send of send-machine-send-"),
        "{run:?}"
    );
    assert!(log.contains("joining it"), "{log}");

    assert_eq!(recipients(&server), everyone(N), "each reader exactly once");
    let by_holder = sent_by_holder(&url, date);
    assert_eq!(by_holder.len(), 2, "{by_holder:?}");
    for host in ["machine-send", "machine-serve"] {
        assert!(
            by_holder.iter().any(|(h, n)| h.contains(host) && *n > 0),
            "{host} sent nothing: {by_holder:?}\n{log}"
        );
    }
}

/// Three `digestif send` started at once on an issue nobody built yet: one
/// builds it under the issue's lease (the feed is fetched once), the two
/// others wait for the issue it stores and send it with it; each reader once.
#[test]
fn three_sends_started_at_once_on_an_unbuilt_issue_build_it_once_and_share_the_send() {
    const N: usize = 30;
    let server = SmtpServer::start(&[]);
    let feed = support::feed_server::FeedServer::start(
        support::site::FEED,
        std::time::Duration::from_secs(3),
    );
    let site = Site::new(&server);
    site.edit_config(|cfg| {
        cfg.replace(
            "path = \"feeds/monde.xml\"",
            &format!("url = \"{}\"", feed.url()),
        )
    });
    site.add_readers(N);
    let outs = three_sends_at_once(&site);
    for out in &outs {
        assert_eq!(out.status.code(), Some(0), "{}", show(out));
    }
    assert_eq!(feed.fetches(), 1, "the feed is fetched by one builder only");
    let waited = outs
        .iter()
        .filter(|o| support::site::stderr(o).contains("waiting for the issue being built"))
        .count();
    assert!(
        waited >= 1,
        "{}",
        outs.iter().map(show).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(recipients(&server), everyone(N), "each reader exactly once");
    assert!(site.archived("email.html").starts_with(b"<!DOCTYPE"));
}

/// `digestif ledger` names each sender of an issue: the rows it holds (claimed,
/// in flight) and those it sent, and its last heartbeat, so that an operator
/// sees who is sending.
#[test]
fn the_ledger_lists_each_sender_with_the_rows_it_holds_and_sent_and_its_last_heartbeat() {
    use digestif::store::{Holder, Ledger};
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server);
    site.add_readers(5);
    let out = digestif_cmd(&site.config(), &["send", "--date", DATE, "--now", NOW])
        .env("HOSTNAME", "machine-a")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    // Another sender, mid-send: of three new readers it claimed two and has
    // one of them in flight.
    for r in ["r6@example.com", "r7@example.com", "r8@example.com"] {
        let out = site.run(&["subscribers", "add", r]);
        assert!(out.status.success(), "{}", show(&out));
    }
    let store = digestif::store::PgStore::open(&site.url).unwrap();
    let date = chrono::NaiveDate::parse_from_str(DATE, "%Y-%m-%d").unwrap();
    let now = digestif::clock::now();
    assert_eq!(store.ledger_enqueue(date, None).unwrap(), 3);
    let b = Holder::new("sender-machine-b-4242-0000beef");
    store.sender_seen(date, &b, now).unwrap();
    let claimed = store.ledger_claim_for(date, &b, 2).unwrap();
    assert_eq!(claimed.len(), 2);
    let marked = store
        .ledger_record_and_mark(date, &b, &[], &[claimed[0].subscriber.id], now)
        .unwrap();
    assert_eq!(marked, vec![true]);

    let out = site.run(&["ledger", "--date", DATE]);
    assert!(out.status.success(), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{DATE}: pending 2, sending 1, sent 5, failed 0")),
        "{text}"
    );
    let senders: Vec<&str> = text.lines().filter(|l| l.starts_with("sender ")).collect();
    assert_eq!(senders.len(), 2, "{text}");
    assert!(
        senders[0].starts_with("sender sender-machine-a-")
            && senders[0].ends_with(
                ": holds 0 (0 claimed, 0 sending), sent 5, failed 0, \
                 no heartbeat (finished, or gone and taken over)"
            ),
        "{text}"
    );
    assert!(
        senders[1].starts_with(
            "sender sender-machine-b-4242-0000beef: holds 2 (1 claimed, 1 sending), \
             sent 0, failed 0, last heartbeat "
        ) && senders[1].ends_with(" s ago)"),
        "{text}"
    );
}

/// `preview --for` on an issue frozen in the database shows the reader's
/// variant as it was kept and sent, not a rendering of this machine's
/// templates and subject as they are now.
#[test]
fn preview_for_a_reader_shows_the_variant_kept_in_the_database_not_a_new_rendering() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server);
    site.add_readers(1);
    let out = site.send();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let sent = mail_parser::MessageParser::default()
        .parse(&server.messages()[0].raw)
        .unwrap()
        .body_text(0)
        .unwrap()
        .replace("\r\n", "\n");
    assert!(sent.contains("Bonjour,"), "{sent}");

    // The words and the subject change here afterwards.
    let theme = site.dir.path().join("theme");
    std::fs::create_dir_all(&theme).unwrap();
    let templates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates");
    for f in ["theme.toml", "fr.toml", "en.toml"] {
        std::fs::copy(templates.join(f), theme.join(f)).unwrap();
    }
    let fr = std::fs::read_to_string(theme.join("fr.toml")).unwrap();
    std::fs::write(
        theme.join("fr.toml"),
        fr.replace("greeting = \"Bonjour,\"", "greeting = \"Salut,\""),
    )
    .unwrap();
    site.edit_config(|cfg| {
        cfg.replace(
            "[newsletter]\n",
            "[newsletter]\ntemplates_dir = \"theme\"\n",
        )
        .replace(
            "from = \"L'Essentiel <briefing@news.example.com>\"\n",
            "from = \"L'Essentiel <briefing@news.example.com>\"\nsubject = \"Autre chose {date}\"\n",
        )
    });
    let preview = |format: &str| {
        let out = site.run(&[
            "preview",
            "--date",
            DATE,
            "--for",
            "r1@example.com",
            "--format",
            format,
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        stdout(&out)
    };
    let text = preview("text");
    assert!(!text.contains("Salut,"), "{text}");
    assert_eq!(text.replace("\r\n", "\n").trim_end(), sent.trim_end());
    let html = preview("html");
    assert!(
        html.contains("Bonjour,") && !html.contains("Salut,"),
        "{html}"
    );
    assert!(!html.contains("Autre chose"), "{html}");
    // A rebuild of the preview still shows what this machine would render now.
    let out = site.run(&[
        "preview",
        "--date",
        DATE,
        "--rebuild",
        "--for",
        "r1@example.com",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).contains("Salut,"), "{}", show(&out));
}

/// The test feed with its stories two weeks older: nothing new for DATE (nor
/// for today).
fn stale_feed() -> String {
    support::site::FEED
        .replace("27 Nov 2026", "13 Nov 2026")
        .replace("26 Nov 2026", "12 Nov 2026")
}

/// A site whose one feed is `body` served over HTTP, each answer 2 s late (the
/// issue takes that long to build), with readers r1..r`readers`; and the feed's
/// server, which counts how many times it was read.
fn slow_feed_site(
    server: &SmtpServer,
    body: &str,
    readers: usize,
) -> (Site, support::feed_server::FeedServer) {
    let feed = support::feed_server::FeedServer::start(body, std::time::Duration::from_secs(2));
    let site = Site::new(server);
    site.edit_config(|cfg| {
        cfg.replace(
            "path = \"feeds/monde.xml\"",
            &format!("url = \"{}\"", feed.url()),
        )
    });
    site.add_readers(readers);
    (site, feed)
}

/// `digestif ARGS --date DATE --now NOW` on `site`'s config, as host `host`,
/// started and left running.
fn start_on(site: &Site, host: &str, args: &[&str]) -> std::process::Child {
    let mut all = args.to_vec();
    all.extend(["--date", DATE, "--now", NOW]);
    digestif_cmd(&site.config(), &all)
        .env("HOSTNAME", host)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// `send` started at once on machine-a, machine-b and machine-c: how each ended.
fn three_sends_at_once(site: &Site) -> Vec<Output> {
    let senders: Vec<_> = ["machine-a", "machine-b", "machine-c"]
        .into_iter()
        .map(|host| start_on(site, host, &["send"]))
        .collect();
    senders
        .into_iter()
        .map(|s| s.wait_with_output().unwrap())
        .collect()
}

/// Waits until the feed was asked for: the process that holds the issue's
/// lease is building the issue.
fn wait_for_a_fetch(feed: &support::feed_server::FeedServer) {
    let start = std::time::Instant::now();
    while feed.fetches() == 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "nobody fetched the feed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Another machine on the same database whose feed (a local file, read at
/// once) has other news: whatever it builds differs from `site`'s issue.
fn machine_with_other_news(site: &Site, feed: &support::feed_server::FeedServer) -> Site {
    let url = feed.url();
    let other = site
        .elsewhere(|cfg| cfg.replace(&format!("url = \"{url}\""), "path = \"feeds/monde.xml\""));
    std::fs::write(
        other.dir.path().join("feeds/monde.xml"),
        support::site::FEED.replace("Budget 2027", "Autre titre"),
    )
    .unwrap();
    other
}

/// A `send` on machine-a of a site with readers, under way and building the
/// issue (its feed answers 2 s late), and another machine with other news.
struct DuringASendsBuild {
    server: SmtpServer,
    feed: support::feed_server::FeedServer,
    send: std::process::Child,
    /// Its folder holds the sender's config.
    _site: Site,
    other: Site,
}

fn during_a_sends_build(readers: usize) -> DuringASendsBuild {
    let server = SmtpServer::start(&[]);
    let (site, feed) = slow_feed_site(&server, support::site::FEED, readers);
    let send = start_on(&site, "machine-a", &["send"]);
    wait_for_a_fetch(&feed);
    let other = machine_with_other_news(&site, &feed);
    DuringASendsBuild {
        server,
        feed,
        send,
        _site: site,
        other,
    }
}

/// The message carries the issue machine-a built, not the other machine's.
fn assert_the_senders_issue(raw: &[u8]) {
    let text = mail_parser::MessageParser::default()
        .parse(raw)
        .unwrap()
        .body_text(0)
        .unwrap()
        .to_string();
    assert!(
        text.contains("Budget 2027") && !text.contains("Autre titre"),
        "{text}"
    );
}

/// `digestif build` on another machine while a `send` builds the issue (it
/// holds the issue's lease): the build is refused, naming the holder and what
/// to do, and replaces nothing, so every reader gets the issue the sender
/// built. Once the send is over the lease is free again, and a build of the
/// issue now sent is judged as before (refused without `--force`).
#[test]
fn a_build_on_another_machine_while_a_send_builds_the_issue_is_refused_and_replaces_nothing() {
    const N: usize = 3;
    let during = during_a_sends_build(N);
    let build = start_on(&during.other, "machine-b", &["build"])
        .wait_with_output()
        .unwrap();
    assert_eq!(build.status.code(), Some(1), "{}", show(&build));
    let said = support::site::stderr(&build);
    assert!(
        said.contains("send-machine-a-") && said.contains("--force"),
        "names the holder and what to do: {said}"
    );
    assert!(
        !during.other.dir.path().join("digests").exists(),
        "a refused build writes nothing"
    );

    let send = during.send.wait_with_output().unwrap();
    assert_eq!(send.status.code(), Some(0), "{}", show(&send));
    assert_eq!(recipients(&during.server), everyone(N));
    for m in during.server.messages() {
        assert_the_senders_issue(&m.raw);
    }
    // What the other machine shows is what the readers got.
    let out = during
        .other
        .run(&["preview", "--date", DATE, "--format", "text"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).contains("Budget 2027"), "{}", show(&out));

    // The send released the lease: a build now meets the issue already sent.
    let out = during.other.run(&["build", "--date", DATE, "--now", NOW]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        support::site::stderr(&out).contains(&format!("already sent to {N} subscriber(s)")),
        "{}",
        show(&out)
    );
}

/// While a `send` builds the issue, a dry run, a test copy and `digestif lint`
/// on another machine (whose feed says something else) freeze nothing of
/// their own: they wait for the issue the sender stores and check that one, so
/// the test copy shows what the readers get, and the readers get the sender's
/// issue.
#[test]
fn a_dry_run_a_test_copy_and_lint_during_a_sends_build_check_the_senders_issue() {
    const N: usize = 3;
    let during = during_a_sends_build(N);
    let checks: Vec<_> = [
        vec!["send", "--dry-run"],
        vec!["send", "--to", "editor@example.com"],
        vec!["lint"],
    ]
    .iter()
    .map(|args| start_on(&during.other, "machine-b", args))
    .collect();
    for check in checks {
        let out = check.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    }
    let send = during.send.wait_with_output().unwrap();
    assert_eq!(send.status.code(), Some(0), "{}", show(&send));
    assert_eq!(
        during.feed.fetches(),
        1,
        "the issue is built once, by the sender"
    );

    let messages = during.server.messages();
    let copy = messages
        .iter()
        .find(|m| m.rcpt() == "editor@example.com")
        .expect("the test copy");
    assert_the_senders_issue(&copy.raw);
    let readers: Vec<_> = messages
        .iter()
        .filter(|m| m.rcpt() != "editor@example.com")
        .collect();
    assert_eq!(readers.len(), N);
    for m in readers {
        assert_the_senders_issue(&m.raw);
    }
}

/// Three sends started at once when the feed holds nothing for the date: the
/// one that holds the lease reads the feed and finds nothing new; the two
/// waiting for its issue learn that and stop as it does, instead of each
/// taking the lease and reading the feed again in turn. A send started
/// afterwards looks again.
#[test]
fn three_sends_started_at_once_with_nothing_new_read_the_feed_once_and_all_say_so() {
    let server = SmtpServer::start(&[]);
    let stale = stale_feed();
    let (site, feed) = slow_feed_site(&server, &stale, 2);
    let outs = three_sends_at_once(&site);
    let all = outs.iter().map(show).collect::<Vec<_>>().join("\n");
    for out in &outs {
        assert_eq!(out.status.code(), Some(1), "{all}");
        assert!(
            support::site::stderr(out).contains(&format!("nothing new for {DATE}")),
            "{all}"
        );
    }
    assert_eq!(feed.fetches(), 1, "read once, by the lease's holder: {all}");
    assert_eq!(server.count(), 0);

    let later = site.send();
    assert_eq!(later.status.code(), Some(1), "{}", show(&later));
    assert_eq!(feed.fetches(), 2, "a later send reads the feed again");
}

/// A scheduled pass decides to join the send of the lease's holder, and right
/// then the holder finds nothing new, records it and releases the lease: the
/// pass learns it too, rather than take the lease and read the feed again. It
/// looked for a finding before deciding to join, so the holder's is news to it
/// however soon it comes.
#[test]
fn a_scheduled_pass_joining_a_send_that_finds_nothing_new_right_after_reads_no_feed() {
    use digestif::pipeline::{self, SendLease};
    use digestif::schedule::{IssuePipeline, LivePipeline, Pass, Plan};
    use std::sync::Arc;
    let server = SmtpServer::start(&[]);
    let (site, feed) = slow_feed_site(&server, &stale_feed(), 1);
    let cfg = Arc::new(digestif::config::Config::from_file(&site.config()).unwrap());
    let store: Arc<dyn digestif::store::Store> =
        Arc::new(digestif::store::PgStore::open(&site.url).unwrap());
    let date: chrono::NaiveDate = DATE.parse().unwrap();
    let now = chrono::DateTime::parse_from_rfc3339(NOW).unwrap().to_utc();
    let clock = digestif::clock::now();
    let lease_len = chrono::Duration::minutes(5);
    // A send holds the issue's lease: it is building the issue.
    let holder = "send-machine-a".to_string();
    let held = digestif::lease::IssueLease::take(store.clone(), date, holder, clock, lease_len)
        .unwrap()
        .expect("the lease is free");
    // The scheduler's pass finds it held and joins that send.
    let serve = "serve-machine-b".to_string();
    let SendLease::Joined(joined) =
        pipeline::take_or_join(&cfg, store.clone(), date, serve, clock).unwrap()
    else {
        panic!("the lease is held: the pass joins its send")
    };
    // Before the pass goes on, the send finds nothing new and is done.
    pipeline::record_nothing_new(store.as_ref(), date).unwrap();
    drop(held);

    let live = LivePipeline::new(
        cfg.clone(),
        store.clone(),
        digestif::config::Secret::new(support::site::SECRET),
    )
    .unwrap();
    let due = Plan::from_config(&cfg).due_filter(date, now);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let pass = runtime.block_on(live.join(&due, &joined)).unwrap();
    assert_eq!(pass, Pass::NothingNew);
    assert_eq!(feed.fetches(), 0, "the holder's finding is the pass's");
    assert_eq!(server.count(), 0);
}

/// A scheduled `serve` that joins a `send` still building the issue, when the
/// feed holds nothing for the date: the send's build finds nothing new, and
/// the service learns it rather than read the feed again. Its run is recorded
/// skipped with the reason (nothing to send: not retried), saying it joined.
#[test]
fn a_scheduled_serve_that_joins_a_build_finding_nothing_new_records_the_date_skipped() {
    use support::app;
    let server = SmtpServer::start(&[]);
    let stale = stale_feed();
    // Long enough for the service to start and join while the send builds.
    let feed = support::feed_server::FeedServer::start(&stale, std::time::Duration::from_secs(6));
    let now = digestif::clock::now() - chrono::Duration::minutes(1);
    let local = now.with_timezone(&chrono_tz::Europe::Paris);
    let (date, day) = (local.date_naive(), local.date_naive().to_string());
    let url = pg_cluster::fresh_database();
    let text = app::config_text(
        "http://127.0.0.1:9",
        &app::Mail::Smtp(server.port),
        &local.format("%H:%M").to_string(),
    )
    .replace("sqlite://digestif.db", &url)
    .replace(
        "path = \"feeds/monde.xml\"",
        &format!("url = \"{}\"", feed.url()),
    );
    let dir = site_dir(&text);
    let config = dir.path().join("digestif.toml");
    let out = digestif_cmd(&config, &["subscribers", "add", "r1@example.com"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));

    let (send, _serve) = send_then_serve(&config, dir.path(), &day, || wait_for_a_fetch(&feed));
    assert_eq!(send.status.code(), Some(1), "{}", show(&send));
    assert!(
        support::site::stderr(&send).contains(&format!("nothing new for {day}")),
        "{}",
        show(&send)
    );

    let (run, log) = first_run(&url, date, dir.path());
    assert_eq!(run.0, "skipped", "{run:?}\n{log}");
    assert!(
        run.1.starts_with("joined the send of send-machine-send-") && run.1.contains("nothing new"),
        "{run:?}"
    );
    assert_eq!(
        feed.fetches(),
        1,
        "the service did not read the feed again\n{log}"
    );
    assert_eq!(server.count(), 0);
}

/// Three sends started at once when no source can be read: a failed build
/// is not "nothing new". The holder's build fails and records nothing, so each
/// waiting send builds the issue again in turn (the sources may be back), and
/// each says that every source failed.
#[test]
fn three_sends_started_at_once_when_no_source_can_be_read_each_try_to_build_in_turn() {
    let server = SmtpServer::start(&[]);
    let (site, feed) = slow_feed_site(&server, "this is not a feed", 1);
    let outs = three_sends_at_once(&site);
    let all = outs.iter().map(show).collect::<Vec<_>>().join("\n");
    for out in &outs {
        assert_eq!(out.status.code(), Some(1), "{all}");
        let said = support::site::stderr(out);
        assert!(
            said.contains("every source failed") && !said.contains("nothing new"),
            "{all}"
        );
    }
    assert_eq!(feed.fetches(), 3, "{all}");
    assert_eq!(server.count(), 0);
}

/// `digestif check` names the PostgreSQL database (its password hidden), says
/// whether it is reached over TLS and against which CA, and gives its schema
/// version, the one `digestif migrate` brought it to.
#[test]
fn check_names_the_database_how_it_is_reached_and_its_schema_version() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server);
    let out = site.run(&["migrate"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let version = stdout(&out)
        .trim()
        .strip_prefix("database at schema version ")
        .expect("migrate says the version")
        .to_string();
    let database_line = || {
        let out = site.run(&["check"]);
        let all = stdout(&out);
        all.lines()
            .find(|l| l.contains(" database: "))
            .unwrap_or_else(|| panic!("no database line: {}", show(&out)))
            .to_string()
    };
    assert_eq!(
        database_line(),
        format!(
            "ok    database: {}, in clear (the URL asks for no TLS: add sslmode=verify-full \
             unless the database is on loopback or a private network), schema version \
             {version}, up to date; 0 active subscriber(s)",
            site.url
        )
    );

    std::fs::copy(
        &pg_cluster::cluster().ca_file,
        site.dir.path().join("db-ca.pem"),
    )
    .unwrap();
    let with_password = site.url.replace("postgres@", "postgres:s3cret@");
    site.edit_config(|cfg| {
        cfg.replace(
            &format!("database = \"{}\"", site.url),
            &format!("database = \"{with_password}?sslmode=verify-full\"\nca_file = \"db-ca.pem\""),
        )
    });
    site.add_readers(2);
    let ca = site.dir.path().join("db-ca.pem").display().to_string();
    let line = database_line();
    assert!(
        line.starts_with(&format!(
            "ok    database: {}",
            site.url.replace("postgres@", "postgres:***@")
        )),
        "the password hidden: {line}"
    );
    assert!(
        line.ends_with(&format!(
            ", over TLS, the server's certificate checked against the system's roots and \
             sslrootcert {ca}, schema version {version}, up to date; 2 active subscriber(s)"
        )),
        "{line}"
    );
}

/// The versions recorded in the database at `url` (none: no schema table).
fn applied(url: &str) -> Option<Vec<i32>> {
    let mut db = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let table: bool = db
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    table.then(|| {
        db.query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    })
}

/// The database line of `check` on `site`, and its exit code.
fn check_database_line(site: &Site) -> (Option<i32>, String) {
    let out = site.run(&["check"]);
    (out.status.code(), support::site::database_line(&out))
}

/// Running a new version's `check` before a rolling upgrade must not migrate
/// the database the older binaries still run on (they refuse a newer schema).
#[test]
fn check_leaves_a_database_of_an_older_schema_as_it_is_and_says_to_migrate() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server);
    let all = support::site::migrations("pg");
    let (last, older) = all.split_last().unwrap();
    let mut db = postgres::Client::connect(&site.url, postgres::NoTls).unwrap();
    for m in older {
        db.batch_execute(&support::site::apply_migration(m, "TIMESTAMPTZ"))
            .unwrap();
    }
    let before: Vec<i32> = older.iter().map(|m| m.0).collect();

    support::site::assert_check_says_to_apply(&site.run(&["check"]), last);
    assert_eq!(applied(&site.url), Some(before.clone()), "check migrated");

    let out = site.run(&["send", "--dry-run", "--now", NOW]);
    support::site::assert_refused_to_migrate(&out, last);
    assert_eq!(applied(&site.url), Some(before), "the dry run migrated");

    let out = site.run(&["migrate"]);
    assert!(out.status.success(), "{}", show(&out));
    let (code, line) = check_database_line(&site);
    assert_eq!(code, Some(0), "{line}");
    assert!(
        line.starts_with("ok    database: ")
            && line.contains(&format!(", schema version {}, up to date; ", last.0)),
        "{line}"
    );
}

/// The store `check` reads through is a read-only session: a write through it
/// fails, and nothing is written; opened read-write as it is, it writes.
#[test]
fn a_database_opened_read_only_as_it_is_refuses_every_write() {
    use digestif::store::{open_current_at, Access, Location};
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server);
    let at = Location::Postgres(site.url.clone());
    let err = open_current_at(&at, Access::ReadOnly)
        .err()
        .expect("no schema yet");
    assert!(err.to_string().contains("run `digestif migrate`"), "{err}");
    assert!(site.run(&["migrate"]).status.success());
    let reader = open_current_at(&at, Access::ReadOnly).unwrap();
    let new = support::site::subscriber("a@example.com", None);
    let err = reader.upsert_subscriber(&new).unwrap_err();
    assert!(err.to_string().contains("read-only transaction"), "{err}");
    assert_eq!(reader.count_by_status().unwrap(), vec![]);
    let writer = open_current_at(&at, Access::ReadWrite).unwrap();
    writer.upsert_subscriber(&new).unwrap();
    assert_eq!(reader.count_by_status().unwrap().len(), 1);
}

/// An empty database is named as such, and `check` creates no table in it.
#[test]
fn check_of_an_empty_database_says_to_migrate_and_creates_nothing() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server);
    let (code, line) = check_database_line(&site);
    assert_eq!(code, Some(0), "{line}");
    assert!(
        line.starts_with("WARN  database: ")
            && line.ends_with(
                ": no schema yet (an empty database): run `digestif migrate` to create it"
            ),
        "{line}"
    );
    assert_eq!(applied(&site.url), None, "check created the schema table");
}

/// A schema newer than this binary fails the check, saying what to do.
#[test]
fn check_fails_on_a_database_migrated_by_a_newer_digestif() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server);
    assert!(site.run(&["migrate"]).status.success());
    let mut db = postgres::Client::connect(&site.url, postgres::NoTls).unwrap();
    db.batch_execute("INSERT INTO schema_migrations VALUES (99, 'future', now())")
        .unwrap();
    let (code, line) = check_database_line(&site);
    assert_eq!(code, Some(1), "{line}");
    assert!(
        line.starts_with("FAIL  database: ")
            && line.contains("schema version 99, newer than this digestif knows")
            && line.ends_with("upgrade digestif before this machine uses it"),
        "{line}"
    );
}

/// A database that cannot be opened is named in the error of every command
/// that opens it, its password never shown.
#[test]
fn a_database_that_cannot_be_opened_is_named_without_its_password() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    site.edit_config(|cfg| {
        cfg.replace(
            &site.url,
            &format!("postgres://reader:s3cret@127.0.0.1:{port}/news"),
        )
    });
    for args in [
        vec!["migrate"],
        vec!["subscribers", "list"],
        vec!["send"],
        vec!["check"],
    ] {
        let out = site.run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", show(&out));
        let said = show(&out);
        assert!(
            said.contains(&format!("reader:***@127.0.0.1:{port}/news")),
            "{args:?}: {said}"
        );
        assert!(!said.contains("s3cret"), "{args:?}: {said}");
    }
}

/// A certificate authority of the test's own; a certificate it signs for `cn`
/// (certificate and key, PEM).
struct TestCa {
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
}

impl TestCa {
    fn new() -> TestCa {
        TestCa::named("digestif test CA")
    }

    fn named(cn: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        TestCa { key, cert }
    }

    fn sign_client(&self, cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// From now on the test cluster takes database `db` only over TLS and only
/// from a client presenting a certificate `ca` signed whose CN is the user
/// (`hostssl db all 127.0.0.1/32 cert`, and `ssl_ca_file`).
fn require_client_certificates_for(db: &str, ca: &TestCa) {
    let admin_url = pg_cluster::cluster().url("postgres");
    let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls).unwrap();
    let show = |c: &mut postgres::Client, what: &str| -> String {
        c.query_one(&format!("SHOW {what}"), &[]).unwrap().get(0)
    };
    let ca_file = PathBuf::from(show(&mut admin, "data_directory")).join("client-ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    pg_cluster::cluster().put_first_in_hba(&format!(
        "hostssl {db} all 127.0.0.1/32 cert\nhost {db} all 127.0.0.1/32 reject\n"
    ));
    let set = format!("ALTER SYSTEM SET ssl_ca_file = '{}'", ca_file.display());
    admin.batch_execute(&set).unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    // The reload is a signal: wait until new connections see it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut c = postgres::Client::connect(&admin_url, postgres::NoTls).unwrap();
        if show(&mut c, "ssl_ca_file") == ca_file.display().to_string() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cluster did not reload"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `sslcert` and `sslkey`: a server that authenticates by client certificate
/// (`hostssl … cert` in pg_hba.conf) lets in digestif presenting a certificate
/// for the database user; without one, with one for another user, or with one
/// signed by a CA it does not trust, it is refused, with the server's reason
/// and what to do.
#[test]
fn a_server_that_authenticates_by_certificate_takes_the_client_certificate_of_the_url() {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server);
    let ca = TestCa::new();
    require_client_certificates_for(site.url.rsplit('/').next().unwrap(), &ca);
    let dir = site.dir.path();
    std::fs::copy(&pg_cluster::cluster().ca_file, dir.join("db-ca.pem")).unwrap();
    // client.crt and client.key (0600): a certificate `ca` signed for user `cn`.
    let present_from = |ca: &TestCa, cn: &str| {
        use std::os::unix::fs::PermissionsExt;
        let (cert, key) = ca.sign_client(cn);
        std::fs::write(dir.join("client.crt"), cert).unwrap();
        std::fs::write(dir.join("client.key"), key).unwrap();
        let private = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(dir.join("client.key"), private).unwrap();
    };
    let present = |cn: &str| present_from(&ca, cn);
    // `args` fail (exit 1) with the server's `reason` in the message.
    let refused = |args: &[&str], reason: &str| {
        let out = site.run(args);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(reason), "{}", show(&out));
    };
    let use_url = |query: &str| {
        site.edit_config(|cfg| {
            let start = cfg.find("database = \"").unwrap();
            let end = start + cfg[start..].find('\n').unwrap();
            format!(
                "{}database = \"{}?sslmode=verify-full&sslrootcert={}{query}\"{}",
                &cfg[..start],
                site.url,
                dir.join("db-ca.pem").display(),
                &cfg[end..]
            )
        })
    };

    // Over TLS but without a certificate: the server's refusal, as it says
    // it, and what to add.
    use_url("");
    refused(
        &["migrate"],
        "FATAL: connection requires a valid client certificate: the server \
         authenticates by certificate: add sslcert=PATH&sslkey=PATH to the URL, a \
         certificate signed by a CA in the server's ssl_ca_file whose CN is the \
         database user `postgres`",
    );

    let files = format!(
        "&sslcert={}&sslkey={}",
        dir.join("client.crt").display(),
        dir.join("client.key").display()
    );
    use_url(&files);
    present("postgres");
    let out = site.run(&["migrate"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    site.add_readers(2);
    let out = site.run(&["subscribers", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let listed = stdout(&out);
    assert!(listed.contains("r2@example.com"), "{listed}");
    let out = site.send();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(recipients(&server), everyone(2));

    // A certificate for another user: refused by the server, which says why.
    present("someone_else");
    let cert = dir.join("client.crt").display().to_string();
    refused(
        &["subscribers", "list"],
        &format!(
            "FATAL: certificate authentication failed for user \"postgres\": the \
             certificate in sslcert {cert} is not for the database user `postgres`: its \
             CN must be `postgres`"
        ),
    );

    // Signed by a CA the server does not trust: refused at the handshake.
    present_from(&TestCa::named("another CA"), "postgres");
    refused(
        &["subscribers", "list"],
        &format!(
            "received fatal alert: UnknownCA: the server does not trust the certificate \
             in sslcert {cert}: sign it with a CA in the server's ssl_ca_file"
        ),
    );
}
