//! End-to-end tests of what an attacker (or an accident) could do to the
//! readers: forged or misdirected links, secrets, identities, suppressions.
//! Real binary, real SQLite file, the HTTP service through a real client.

#[path = "support/app.rs"]
mod app;
mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use app::{App, Mail};
use digestif::config::Secret;
use digestif::deliver::token;
use digestif::domain::{Subscriber, SubscriberEmail, SubscriberStatus};
use digestif::store::{NewSubscriber, Store};
use support::site::{config_head, digestif_at, site_dir, stderr, stdout, subscriber, DATE, NOW};

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

#[tokio::test(flavor = "multi_thread")]
async fn a_link_mailed_to_a_removed_reader_never_unsubscribes_the_next_one() {
    let app = app::start(Mail::File, "07:00").await;
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
