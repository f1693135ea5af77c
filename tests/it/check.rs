//! `digestif check` against real parts: an SMTP server that takes the session
//! (and receives no mail), one that is not there, a broken feed next to a good one.

use crate::support;

use support::site::{digestif_cmd, sending_head, site_dir, smtp_table};
use support::SmtpServer;

fn check(config: &str) -> (Option<i32>, String) {
    let dir = site_dir(config);
    std::fs::write(dir.path().join("feeds/broken.xml"), "<rss><channel><item>").unwrap();
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
