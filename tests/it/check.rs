//! `digestif check` against real parts: an SMTP server that takes the session
//! (and receives no mail), one that is not there, a broken feed next to a good one.

use crate::support;

use support::site::{apply_migration, assert_check_says_to_apply, assert_refused_to_migrate};
use support::site::{digestif_cmd, migrations, sending_head, show, site_dir, smtp_table, stdout};
use support::SmtpServer;

/// `check` of `config` on a database `digestif migrate` made: exit code and output.
fn check(config: &str) -> (Option<i32>, String) {
    let dir = site_dir(config);
    std::fs::write(dir.path().join("feeds/broken.xml"), "<rss><channel><item>").unwrap();
    let config = dir.path().join("digestif.toml");
    let out = digestif_cmd(&config, &["migrate"]).output().unwrap();
    assert!(out.status.success(), "{}", support::site::show(&out));
    let out = digestif_cmd(&dir.path().join("digestif.toml"), &["check"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_working_setup_passes_every_part_and_mails_nobody() {
    let server = SmtpServer::start(&["--pipelining"]);
    let (code, out) = check(&format!("{}\n{}", sending_head(), smtp_table(&server, 2)));
    assert_eq!(code, Some(0), "{out}");
    for part in [
        "config",
        "templates",
        "sender",
        "secret",
        "database",
        "source \"Monde\"",
        "delivery",
    ] {
        assert!(out.contains(&format!("ok    {part}: ")), "{part}: {out}");
    }
    assert!(out.contains("source \"Monde\": 2 item(s)"), "{out}");
    assert!(
        out.contains(&format!("smtp://127.0.0.1:{} takes a session", server.port)),
        "{out}"
    );
    assert!(out.contains(", EHLO "), "the EHLO name is shown: {out}");
    assert!(!out.contains("EHLO localhost"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    assert_eq!(server.count(), 0, "a check sends nothing");
}

#[test]
fn a_missing_server_and_a_broken_feed_are_named_and_the_rest_still_checked() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = format!(
        "{}\n[[sources]]\nname = \"Cassé\"\npath = \"feeds/broken.xml\"\ncategory = \"Monde\"\n\n\
         [smtp]\ntransport = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout_s = 5\n",
        sending_head()
    );
    let (code, out) = check(&cfg);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("ok    source \"Monde\": 2 item(s)"), "{out}");
    assert!(out.contains("FAIL  source \"Cassé\": "), "{out}");
    assert!(
        out.contains(&format!("FAIL  delivery: smtp://127.0.0.1:{port}: ")),
        "{out}"
    );
    assert!(out.contains("ok    database: "), "{out}");
}

/// A site that writes its mail to `outbox/`, on the SQLite file `digestif.db`.
fn outbox_site() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = site_dir(&format!(
        "{}\n[smtp]\ntransport = \"file\"\nfile_dir = \"outbox\"\n",
        sending_head()
    ));
    let config = dir.path().join("digestif.toml");
    (dir, config)
}

/// The versions recorded in the SQLite file at `db`.
fn applied(db: &std::path::Path) -> Vec<i32> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .unwrap();
    let versions = st.query_map([], |r| r.get(0)).unwrap();
    versions.map(Result::unwrap).collect()
}

/// Running a new version's `check` before a rolling upgrade must not migrate
/// the database the older binaries still run on (they refuse a newer schema).
#[test]
fn check_leaves_a_sqlite_database_of_an_older_schema_as_it_is_and_says_to_migrate() {
    let (dir, config) = outbox_site();
    let db = dir.path().join("digestif.db");
    let all = migrations("");
    let (last, older) = all.split_last().unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    for m in older {
        c.execute_batch(&apply_migration(m, "TEXT")).unwrap();
    }
    drop(c);
    let before: Vec<i32> = older.iter().map(|m| m.0).collect();

    let out = digestif_cmd(&config, &["check"]).output().unwrap();
    assert_check_says_to_apply(&out, last);
    assert_eq!(applied(&db), before, "check migrated the database");

    // A dry run freezes the issue it checks: it needs the schema current, and says so.
    let out = digestif_cmd(&config, &["send", "--dry-run", "--now", support::site::NOW])
        .output()
        .unwrap();
    assert_refused_to_migrate(&out, last);
    assert_eq!(applied(&db), before, "the dry run migrated the database");

    let out = digestif_cmd(&config, &["migrate"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let out = digestif_cmd(&config, &["check"]).output().unwrap();
    assert!(
        stdout(&out).contains(&format!(
            ", schema version {}, up to date; 0 active subscriber(s)",
            last.0
        )),
        "{}",
        show(&out)
    );
}

#[test]
fn check_does_not_create_a_missing_sqlite_file_and_says_what_will() {
    let (dir, config) = outbox_site();
    let out = digestif_cmd(&config, &["check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let said = stdout(&out);
    assert!(
        said.lines().any(|l| l.starts_with("WARN  database: sqlite://")
            && l.ends_with("digestif.db: no such file yet: `digestif migrate` (or the first send) creates it")),
        "{said}"
    );
    assert!(
        said.contains("ok    bounce rates: no issue sent yet"),
        "{said}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("digestif.db"))
        .collect();
    assert!(left.is_empty(), "check created {left:?}");
}

/// `check` of `config` (a site of its own, `files` written next to it, `env` set):
/// exit code and output.
fn check_with(
    config: &str,
    files: &[(&str, String)],
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let dir = site_dir(config);
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let out = digestif_cmd(&dir.path().join("digestif.toml"), &["check"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A self-signed certificate of an RSA key (made by openssl, as SNS's are RSA),
/// valid between the two dates.
fn rsa_certificate(from: (i32, u8, u8), until: (i32, u8, u8)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .output()
        .expect("openssl (scripts/test.sh installs it)");
    assert!(out.status.success(), "{}", support::site::show(&out));
    let pem = std::fs::read_to_string(&key).unwrap();
    let key = rcgen::KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["sns.eu-west-1.amazonaws.com".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    params.self_signed(&key).unwrap().pem()
}

#[test]
fn check_fails_once_every_pinned_sns_certificate_has_expired() {
    let config = format!(
        "{}\n[smtp]\ntransport = \"file\"\n\n[bounces]\nses_certificate = \"sns.pem\"\n\
         ses_topic_arns = [\"arn:aws:sns:eu-west-1:123456789012:digestif-bounces\"]\n",
        sending_head()
    );
    let expired = rsa_certificate((2019, 1, 1), (2020, 1, 1));
    let (code, out) = check_with(&config, &[("sns.pem", expired.clone())], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "FAIL  bounce webhooks: every certificate of bounces.ses_certificate has expired, \
             valid until 2020-01-01: save the one SNS signs with now"
        ),
        "{out}"
    );
    // One still valid next to it (AWS rotated, the operator added the new one): ok.
    let valid = rsa_certificate((2020, 1, 1), (2999, 1, 1));
    let (code, out) = check_with(&config, &[("sns.pem", format!("{expired}{valid}"))], &[]);
    assert!(
        out.contains("ok    bounce webhooks: SES: 2 certificate(s) pinned, valid until 2999-01-01"),
        "{out}"
    );
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn check_fails_when_the_from_domain_makes_our_message_id_too_long_for_postmark_metadata() {
    let with_domain = |domain: &str| {
        format!(
            "{}\n[smtp]\ntransport = \"file\"\n\n[bounces]\npostmark_user = \"postmark\"\n\
             postmark_password_env = \"PM\"\n",
            sending_head().replace("briefing@news.example.com", &format!("briefing@{domain}"))
        )
    };
    let env = [("PM", "hook-secret-123")];
    // 47 characters of domain: 32 + "@" + 47 = 80, Postmark's limit.
    let fits = format!("{}.example", "d".repeat(39));
    let (code, out) = check_with(&with_domain(&fits), &[], &env);
    assert!(
        out.contains("ok    bounce webhooks: Postmark: basic-auth password set"),
        "{out}"
    );
    assert_eq!(code, Some(0), "{out}");
    let over = format!("{}.example", "d".repeat(40));
    let (code, out) = check_with(&with_domain(&over), &[], &env);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "FAIL  bounce webhooks: Postmark: our Message-IDs, sent as X-PM-Metadata-message-id, \
             are 81 characters long with the From domain \"{over}\""
        )),
        "{out}"
    );
    assert!(out.contains("at most 47 characters (sender.from)"), "{out}");
}
