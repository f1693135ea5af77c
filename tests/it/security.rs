//! End-to-end tests of what an attacker (or an accident) could do to the
//! readers: forged or misdirected links, secrets, identities, suppressions.
//! Real binary, real SQLite file, the HTTP service through a real client.

use crate::on_each_backend;
use crate::support;
use crate::support::app;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use app::{App, Db, Mail};
use digestif::config::Secret;
use digestif::deliver::token;
use digestif::domain::{Subscriber, SubscriberEmail, SubscriberStatus};
use digestif::store::{NewSubscriber, Store};
use support::site::{config_head, digestif_at, site_dir, stderr, stdout, subscriber, DATE, NOW};

// The HTTP side under abuse behaves the same on either database.
on_each_backend!(
    a_link_mailed_to_a_removed_reader_never_unsubscribes_the_next_one,
    one_address_gets_one_confirmation_per_cooldown_and_the_same_answer_each_time,
    forwarded_for_counts_only_from_a_trusted_proxy_and_ipv6_is_limited_per_64,
    a_filled_honeypot_is_dropped_silently,
    unconfirmed_sign_ups_are_deleted_after_seven_days,
    every_page_but_the_sign_up_form_refuses_frames_and_carries_a_csp,
    metrics_are_not_public,
);

fn email(s: &str) -> SubscriberEmail {
    SubscriberEmail::parse(s).unwrap()
}

fn add(store: &dyn Store, addr: &str) -> Subscriber {
    store
        .upsert_subscriber(&NewSubscriber {
            status: SubscriberStatus::Active,
            ..subscriber(addr, None)
        })
        .unwrap();
    store.subscriber_by_email(&email(addr)).unwrap().unwrap()
}

fn status_of(app: &App, addr: &str) -> SubscriberStatus {
    app.store
        .subscriber_by_email(&email(addr))
        .unwrap()
        .unwrap()
        .status
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn one_click(app: &App, token: &str) -> reqwest::Response {
    client()
        .post(app.url(&format!("/unsubscribe?token={token}")))
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap()
}

/// A site mailing through the file transport (no server needed).
fn file_site() -> tempfile::TempDir {
    site_dir(&format!(
        "{}\n[smtp]\ntransport = \"file\"\nfile_dir = \"outbox\"\n",
        config_head(None)
    ))
}

/// The binary on `dir`'s config with no secret in the environment.
fn without_secret(dir: &Path, args: &[&str]) -> Command {
    let mut c = digestif_at(&dir.join("digestif.toml"), args);
    c.env_remove(Secret::ENV)
        .env_remove(Secret::PREVIOUS_ENV)
        .env("RUST_LOG", "warn");
    c
}

/// Waits for the child to exit (killing it after `within`): its exit code (None
/// if it had to be killed) and stderr.
fn exit_within(mut child: std::process::Child, within: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + within;
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, err)
}

// ---- finding 1: no secret from the source code, ever

#[test]
fn serve_with_the_file_transport_refuses_to_start_without_a_secret() {
    let dir = file_site();
    let child = without_secret(dir.path(), &["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, err) = exit_within(child, Duration::from_secs(20));
    assert_eq!(code, Some(2), "serve must not start: {err}");
    assert!(err.contains("DIGESTIF_SECRET"), "{err}");
}

#[test]
fn send_with_the_file_transport_refuses_to_sign_links_without_a_secret() {
    let dir = file_site();
    let add = without_secret(dir.path(), &["subscribers", "add", "jo@example.com"])
        .output()
        .unwrap();
    assert!(add.status.success(), "{}", stderr(&add));
    let out = without_secret(dir.path(), &["send", "--date", DATE, "--now", NOW])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("DIGESTIF_SECRET"), "{}", stderr(&out));
    assert!(app::eml_files(&dir.path().join("outbox")).is_empty());
    // A dry run mails nothing, so it still works without one.
    let dry = without_secret(
        dir.path(),
        &["send", "--date", DATE, "--now", NOW, "--dry-run"],
    )
    .output()
    .unwrap();
    assert!(dry.status.success(), "{}", stderr(&dry));
}

#[test]
fn check_fails_without_a_secret_even_with_the_file_transport() {
    let dir = file_site();
    let out = without_secret(dir.path(), &["check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("FAIL  secret: DIGESTIF_SECRET is not set"),
        "{}",
        stdout(&out)
    );
}

fn run_demo(cwd: &Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_digestif"))
        .arg("demo")
        .current_dir(cwd)
        .env_remove("DIGESTIF_CONFIG")
        .env_remove(Secret::ENV)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

#[test]
fn each_demo_folder_gets_its_own_random_secret_and_a_rerun_keeps_it() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run_demo(a.path());
    run_demo(b.path());
    let secret_of =
        |d: &Path| std::fs::read_to_string(d.join("digestif-demo/demo.secret")).unwrap();
    let first = secret_of(a.path());
    assert!(first.trim().len() >= 32, "{first:?}");
    assert_ne!(
        first,
        secret_of(b.path()),
        "two demo folders share a secret"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(a.path().join("digestif-demo/demo.secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    }
    run_demo(a.path());
    assert_eq!(
        secret_of(a.path()),
        first,
        "a rerun keeps the folder's links working"
    );
    // The links the demo wrote verify with the folder's secret, not another's.
    let cfg =
        digestif::config::Config::from_file(&a.path().join("digestif-demo/digestif.toml")).unwrap();
    let mails = app::eml_files(&a.path().join("digestif-demo/outbox"));
    let link = app::link_in(&mails[0], "unsubscribe");
    let tok = link.split("token=").nth(1).unwrap();
    let tok = tok.split('&').next().unwrap();
    assert!(token::verify_unsubscribe(&Secret::new(first.trim()), &cfg.list_id(), tok).is_ok());
    assert!(token::verify_unsubscribe(
        &Secret::new(secret_of(b.path()).trim()),
        &cfg.list_id(),
        tok
    )
    .is_err());
}

// ---- finding 2: links never name a reusable row id

async fn a_link_mailed_to_a_removed_reader_never_unsubscribes_the_next_one(db: Db) {
    let app = app::start_on(db, Mail::File, "07:00", "").await;
    add(app.store.as_ref(), "first@example.org");
    let gone = add(app.store.as_ref(), "gone@example.org");
    let secret = Secret::new(app::SECRET);
    let list = app.cfg.list_id();
    let mailed = token::unsubscribe_token(&secret, &list, &gone.link_key);
    assert!(app.store.remove_subscriber(&gone.email).unwrap());
    let next = add(app.store.as_ref(), "next@example.org");
    assert_ne!(next.id, gone.id, "the removed reader's id was given again");
    // Neither the current link nor one in the old format (naming the row id)
    // reaches the next reader.
    let old_format = token::legacy_unsubscribe_token(&secret, &list, gone.id);
    let next_id_old_format = token::legacy_unsubscribe_token(&secret, &list, next.id);
    for t in [&mailed, &old_format, &next_id_old_format] {
        let res = one_click(&app, t).await;
        assert_eq!(res.status(), 200, "{t}");
    }
    assert_eq!(
        status_of(&app, "next@example.org"),
        SubscriberStatus::Active
    );
    assert_eq!(
        status_of(&app, "first@example.org"),
        SubscriberStatus::Active
    );
    // Their own link works.
    let own = token::unsubscribe_token(&secret, &list, &next.link_key);
    assert_eq!(one_click(&app, &own).await.status(), 200);
    assert_eq!(
        status_of(&app, "next@example.org"),
        SubscriberStatus::Unsubscribed
    );
}

// ---- findings 3 and 4: suppression and one identity per address, from the command line

struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        Cli { dir: file_site() }
    }
    fn run(&self, args: &[&str]) -> Output {
        without_secret(self.dir.path(), args).output().unwrap()
    }
    fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }
    fn list(&self) -> String {
        stdout(&self.run(&["subscribers", "list"]))
    }
}

#[test]
fn unsubscribe_then_remove_then_import_leaves_the_address_out() {
    let cli = Cli::new();
    assert!(cli
        .run(&["subscribers", "add", "Reader@example.com"])
        .status
        .success());
    assert!(cli
        .run(&["unsubscribe", "reader@example.com"])
        .status
        .success());
    assert!(cli
        .run(&["subscribers", "remove", "READER@example.com"])
        .status
        .success());
    let csv = cli.write("back.csv", "email\nreader@example.com\nother@example.com\n");
    let out = cli.run(&["subscribers", "import", &csv]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 imported") && stdout(&out).contains("1 left out"),
        "{}",
        stdout(&out)
    );
    let add = cli.run(&["subscribers", "add", "reader@EXAMPLE.com"]);
    assert_eq!(add.status.code(), Some(1));
    assert!(
        stderr(&add).contains("was unsubscribed on"),
        "{}",
        stderr(&add)
    );
    assert!(
        !cli.list().to_lowercase().contains("reader@"),
        "{}",
        cli.list()
    );
}

#[test]
fn forget_erases_the_address_and_no_import_brings_it_back() {
    let cli = Cli::new();
    assert!(cli
        .run(&["subscribers", "add", "Anna@example.com", "--name", "Anna"])
        .status
        .success());
    let out = cli.run(&["subscribers", "forget", "anna@example.com"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("erased"), "{}", stdout(&out));
    assert!(!cli.list().contains("Anna"));
    let csv = cli.write("again.csv", "email,name\nanna@example.com,Anna\n");
    let out = cli.run(&["subscribers", "import", &csv]);
    assert!(stdout(&out).contains("1 left out"), "{}", stdout(&out));
    assert!(cli.list().is_empty(), "{}", cli.list());
}

#[test]
fn addresses_are_one_identity_whatever_the_case() {
    let cli = Cli::new();
    let csv = cli.write(
        "pairs.csv",
        "email,name\nReader0082@example.com,A\nother@example.com,B\nreader0082@EXAMPLE.com,C\n",
    );
    let out = cli.run(&["subscribers", "import", &csv]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "line 4: email: reader0082@example.com already appears on line 2 (letter case does not count)"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(cli.list().lines().count(), 2, "{}", cli.list());
    // `add` with another spelling is the same subscriber.
    let out = cli.run(&["subscribers", "add", "READER0082@example.com"]);
    assert!(
        stdout(&out).contains("already subscribed"),
        "{}",
        stdout(&out)
    );
    // The unsubscribe command finds it whatever the case; the spelling given first is kept.
    let out = cli.run(&["unsubscribe", "reader0082@example.com"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        cli.list().contains("Reader0082@example.com\tunsubscribed"),
        "{}",
        cli.list()
    );
    // An unknown address is an error (exit 1), not a silent success.
    let out = cli.run(&["unsubscribe", "nobody@example.com"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("not a subscriber"),
        "{}",
        stderr(&out)
    );
}

// ---- findings 5, 6, 8, 11, 12: the HTTP side under abuse

/// The service as `serve` runs it, `[server]` keys added from `extra`.
async fn serve_app(db: Db, extra: &str) -> App {
    app::start_on(db, Mail::File, "07:00", extra).await
}

async fn sign_up(app: &App, addr: &str, forwarded_for: Option<&str>) -> (u16, String) {
    let mut req = client()
        .post(app.url("/subscribe"))
        .form(&[("email", addr), ("locale", "fr")]);
    if let Some(f) = forwarded_for {
        req = req.header("X-Forwarded-For", f);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn one_address_gets_one_confirmation_per_cooldown_and_the_same_answer_each_time(db: Db) {
    let app = serve_app(db, "").await;
    let first = sign_up(&app, "victim@example.org", None).await;
    assert_eq!(first.0, 200);
    for _ in 0..2 {
        assert_eq!(sign_up(&app, "VICTIM@example.org", None).await, first);
    }
    assert_eq!(
        app::eml_files(&app.outbox()).len(),
        1,
        "one mail, not three"
    );
    // An active address gets none at all, with the same page.
    add(app.store.as_ref(), "reader@example.org");
    app.clock
        .set(digestif::clock::now() + chrono::Duration::minutes(2));
    assert_eq!(sign_up(&app, "reader@example.org", None).await, first);
    assert_eq!(app::eml_files(&app.outbox()).len(), 1);
    // After the cooldown (24 h by default), one more.
    app.clock
        .set(digestif::clock::now() + chrono::Duration::hours(25));
    assert_eq!(sign_up(&app, "victim@example.org", None).await, first);
    assert_eq!(app::eml_files(&app.outbox()).len(), 2);
}

async fn forwarded_for_counts_only_from_a_trusted_proxy_and_ipv6_is_limited_per_64(db: Db) {
    // Not trusted: every visitor is the proxy, whatever the header says.
    let app = serve_app(db, "").await;
    for i in 0..3 {
        let ip = format!("198.51.100.{i}");
        assert_eq!(
            sign_up(&app, &format!("a{i}@example.org"), Some(&ip))
                .await
                .0,
            200
        );
    }
    assert_eq!(
        sign_up(&app, "a9@example.org", Some("198.51.100.9"))
            .await
            .0,
        429
    );

    let app = serve_app(db, "trusted_proxies = [\"127.0.0.1\"]").await;
    for i in 0..3 {
        assert_eq!(
            sign_up(
                &app,
                &format!("b{i}@example.org"),
                Some("6.6.6.6, 198.51.100.1")
            )
            .await
            .0,
            200
        );
    }
    assert_eq!(
        sign_up(&app, "b9@example.org", Some("198.51.100.1"))
            .await
            .0,
        429,
        "the left-most entry is the client's own word"
    );
    assert_eq!(
        sign_up(&app, "c0@example.org", Some("198.51.100.2"))
            .await
            .0,
        200,
        "another visitor behind the proxy has their own quota"
    );
    for i in 1..=3 {
        let ip = format!("2001:db8:1:2::{i}");
        assert_eq!(
            sign_up(&app, &format!("d{i}@example.org"), Some(&ip))
                .await
                .0,
            200
        );
    }
    assert_eq!(
        sign_up(&app, "d9@example.org", Some("2001:db8:1:2:ffff::9"))
            .await
            .0,
        429,
        "one /64 is one client"
    );
    assert_eq!(
        sign_up(&app, "e0@example.org", Some("2001:db8:1:3::1"))
            .await
            .0,
        200
    );
}

async fn a_filled_honeypot_is_dropped_silently(db: Db) {
    let app = serve_app(db, "").await;
    let person = sign_up(&app, "person@example.org", None).await;
    let res = client()
        .post(app.url("/subscribe"))
        .form(&[
            ("email", "bot@example.org"),
            ("locale", "fr"),
            ("website", "http://spam.example"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), person.1, "the same page");
    assert_eq!(
        app::eml_files(&app.outbox()).len(),
        1,
        "no mail to the bot's address"
    );
    assert!(app
        .store
        .take_signup(&email("bot@example.org"))
        .unwrap()
        .is_none());
    // The field is in the form, out of people's sight.
    let form = client().get(app.url("/subscribe")).send().await.unwrap();
    let html = form.text().await.unwrap();
    assert!(html.contains("name=\"website\"") && html.contains("left:-10000px"));
}

async fn unconfirmed_sign_ups_are_deleted_after_seven_days(db: Db) {
    let app = serve_app(db, "").await;
    let old = digestif::store::PendingSignup {
        subscriber: NewSubscriber {
            status: SubscriberStatus::Pending,
            ..subscriber("old@example.org", Some("Old".into()))
        },
        requested_at: digestif::clock::now() - chrono::Duration::days(8),
    };
    let recent = digestif::store::PendingSignup {
        requested_at: digestif::clock::now() - chrono::Duration::days(6),
        subscriber: NewSubscriber {
            email: email("recent@example.org"),
            ..old.subscriber.clone()
        },
    };
    app.store.put_signup(&old).unwrap();
    app.store.put_signup(&recent).unwrap();
    // Any sign-up (and `serve` every hour) purges.
    sign_up(&app, "new@example.org", None).await;
    assert!(app
        .store
        .take_signup(&email("old@example.org"))
        .unwrap()
        .is_none());
    assert!(app
        .store
        .take_signup(&email("recent@example.org"))
        .unwrap()
        .is_some());
}

/// Opens `n` connections that each send half a request's headers and stop.
async fn half_open(base: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let addr = base.trim_start_matches("http://").to_string();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        out.push(s);
    }
    out
}

/// Whether the server closed `s` (EOF, or a reset), reading whatever it sent first.
async fn closed_by_server(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hundreds_of_half_open_requests_neither_block_others_nor_stay_open() {
    let app = serve_app(Db::Sqlite, "header_timeout_s = 2\nrequest_timeout_s = 4").await;
    let mut slow = half_open(&app.base, 300).await;
    // Others are still served meanwhile (a client that gives up after 3 s never has to).
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    for _ in 0..5 {
        let res = quick.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
    // And the slow ones are closed once the header time is up (generous margin:
    // the point is that they do not stay open, as they did for 45 s and more).
    let mut closed = 0;
    for s in &mut slow {
        if closed_by_server(s, Duration::from_secs(15)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, slow.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_body_is_refused_at_once_and_a_trickled_one_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = serve_app(Db::Sqlite, "header_timeout_s = 2\nrequest_timeout_s = 3").await;
    let addr = app.base.trim_start_matches("http://").to_string();
    // A body announced at 1 MB: answered 413 before it is sent.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        b"POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
          Content-Length: 1000000\r\n\r\nemail=a",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer, not a wait for the body")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // A small body sent one byte a second: the request's time runs out.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        b"POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
          Content-Length: 100\r\n\r\n",
    )
    .await
    .unwrap();
    let (mut rd, mut wr) = s.into_split();
    tokio::spawn(async move {
        for _ in 0..60 {
            if wr.write_all(b"e").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_another_process_holding_the_write_lock_unsubscribe_gets_503_then_happens_and_health_answers(
) {
    let app = serve_app(Db::Sqlite, "").await;
    let reader = add(app.store.as_ref(), "busy@example.org");
    let tok = token::unsubscribe_token(
        &Secret::new(app::SECRET),
        &app.cfg.list_id(),
        &reader.link_key,
    );
    // Another process takes the write lock and keeps it until told to let go
    // (a line on its stdin), once the busy answers have been checked.
    let db = app.dir.path().join("digestif.db");
    let mut holder = Command::new(support::python())
        .args([
            "-c",
            "import sqlite3,sys\n\
             c=sqlite3.connect(sys.argv[1],isolation_level=None)\n\
             c.execute('BEGIN IMMEDIATE')\n\
             print('locked',flush=True)\n\
             sys.stdin.readline()\n\
             c.execute('COMMIT')",
        ])
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
    }
    busy_then_unsubscribed(&app, &tok, async move {
        use std::io::Write;
        let mut release = holder.stdin.take().unwrap();
        writeln!(release, "release").unwrap();
        drop(release);
        let st = holder.wait().unwrap();
        assert!(st.success(), "the lock holder failed: {st}");
    })
    .await;
}

/// While another connection holds what busy@example.org's unsubscribe must
/// write: health answers at once, the one-click gets 503 + Retry-After (not
/// 500), the page still shows (reads do not wait); once `released` is done,
/// the unsubscribe is recorded: it was not lost.
async fn busy_then_unsubscribed(
    app: &App,
    tok: &str,
    released: impl std::future::Future<Output = ()>,
) {
    // A client that gives up after 3 s never has to.
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let health = quick.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let res = one_click(app, tok).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let page = quick
        .get(app.url(&format!("/unsubscribe?token={tok}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    released.await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while status_of(app, "busy@example.org") != SubscriberStatus::Unsubscribed {
        assert!(Instant::now() < deadline, "the unsubscribe was lost");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The same on PostgreSQL: another connection holds the reader's row (a
/// send, another instance, an operator's transaction) past the HTTP side's
/// lock wait; the visitor gets 503 + Retry-After, never a 500 or a hang.
#[tokio::test(flavor = "multi_thread")]
async fn with_another_connection_holding_the_readers_row_on_postgresql_unsubscribe_gets_503_then_happens(
) {
    let app = serve_app(Db::Postgres, "").await;
    let reader = add(app.store.as_ref(), "busy@example.org");
    let tok = token::unsubscribe_token(
        &Secret::new(app::SECRET),
        &app.cfg.list_id(),
        &reader.link_key,
    );
    let url = app.cfg.storage.database.clone();
    let (locked, is_locked) = std::sync::mpsc::channel();
    // Held until the busy answers have been checked, however long they take.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut tx = c.transaction().unwrap();
        tx.execute(
            "SELECT 1 FROM subscribers WHERE id = $1 FOR UPDATE",
            &[&reader.id],
        )
        .unwrap();
        locked.send(()).unwrap();
        released.recv().unwrap();
        tx.commit().unwrap();
    });
    is_locked.recv().unwrap();
    busy_then_unsubscribed(&app, &tok, async move {
        release.send(()).unwrap();
        tokio::task::spawn_blocking(move || holder.join().unwrap())
            .await
            .unwrap();
    })
    .await;
}

async fn every_page_but_the_sign_up_form_refuses_frames_and_carries_a_csp(db: Db) {
    let app = serve_app(db, "").await;
    let reader = add(app.store.as_ref(), "csp@example.org");
    let tok = token::unsubscribe_token(
        &Secret::new(app::SECRET),
        &app.cfg.list_id(),
        &reader.link_key,
    );
    for path in [
        format!("/unsubscribe?token={tok}"),
        format!("/preferences?token={tok}"),
        "/confirm?token=x".to_string(),
        "/archive".to_string(),
        "/nowhere".to_string(),
        "/healthz".to_string(),
    ] {
        let res = client().get(app.url(&path)).send().await.unwrap();
        let csp = res.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert_eq!(res.headers()["x-frame-options"], "DENY", "{path}");
    }
    // The embeddable form, and the page its button leads to, may be framed;
    // the form's own script is allowed by its hash.
    let form = client().get(app.url("/subscribe")).send().await.unwrap();
    let csp = form.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(!csp.contains("frame-ancestors"), "{csp}");
    assert!(form.headers().get("x-frame-options").is_none());
    let html = form.text().await.unwrap();
    let script = html
        .split("<script>")
        .nth(1)
        .unwrap()
        .split("</script>")
        .next()
        .unwrap();
    use base64::Engine;
    use sha2::Digest;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
    assert!(csp.contains(&format!("'sha256-{hash}'")), "{csp}");
    let posted = client()
        .post(app.url("/subscribe"))
        .form(&[("email", "framed@example.org")])
        .send()
        .await
        .unwrap();
    assert!(posted.headers().get("x-frame-options").is_none());
}

async fn metrics_are_not_public(db: Db) {
    use digestif::http::MetricsAccess;
    let app = serve_app(db, "").await;
    let get = |path: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let url = app.url(path);
        async move {
            let mut r = client().get(url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.send().await.unwrap().status().as_u16()
        }
    };
    // Default: a client on this machine only, never one a proxy forwards.
    assert_eq!(get("/metrics", &[]).await, 200);
    assert_eq!(
        get("/metrics", &[("X-Forwarded-For", "203.0.113.7")]).await,
        404
    );
    assert_eq!(
        get("/metrics", &[("Forwarded", "for=203.0.113.7")]).await,
        404
    );

    // With a token: only with it.
    let mut state = app.state.clone();
    state.metrics_access = MetricsAccess::Token("s3cret-metrics-token".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(digestif::http::server::serve(
        listener,
        digestif::http::router(state),
        digestif::http::server::Limits::from_config(&app.cfg),
        std::future::pending(),
    ));
    let status = |auth: Option<&'static str>| {
        let url = format!("{base}/metrics");
        async move {
            let mut r = client().get(url);
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(status(None).await, 404);
    assert_eq!(status(Some("Bearer wrong")).await, 404);
    assert_eq!(status(Some("Bearer s3cret-metrics-token")).await, 200);

    // With metrics_listen: not on the public listener at all.
    let app = serve_app(db, "metrics_listen = \"127.0.0.1:0\"").await;
    assert_eq!(app.state.metrics_access, MetricsAccess::Elsewhere);
    assert_eq!(
        client()
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}
