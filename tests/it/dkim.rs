//! DKIM signing end to end: a key made by `openssl`, `digestif send` to a
//! real SMTP server (aiosmtpd), and every received message checked by an
//! independent verifier (Python's dkimpy) against the public key.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use digestif::store::{Ledger, SqliteStore, Subscribers};
use support::site::{digestif_cmd, show, site_dir, smtp_table, subscriber, DATE, NOW};
use support::SmtpServer;

/// Verifies messages with dkimpy (PyNaCl for Ed25519), all in one Python
/// process (each start costs a few tenths of a second); the DNS lookup answers
/// with the public key given with each message.
/// Reads a JSON list of `[message file, public key, key type]`; prints a JSON
/// list with, for each, an object: `valid`, the `h` tag's header names, `d`
/// and `s`.
const VERIFY: &str = r#"
import json, sys, dkim
out = []
for path, pub, kind in json.load(open(sys.argv[1])):
    msg = open(path, "rb").read()
    asked = []
    def dns(name, timeout=5, pub=pub.encode(), kind=kind.encode()):
        asked.append(name.decode() if isinstance(name, bytes) else name)
        return b"v=DKIM1; k=" + kind + b"; p=" + pub
    valid = dkim.verify(msg, dnsfunc=dns)
    sig = None
    for line in dkim.rfc822_parse(msg)[0]:
        if line[0].lower() == b"dkim-signature":
            sig = dkim.util.parse_tag_value(line[1])
    h = [x.strip().decode() for x in sig[b"h"].split(b":")] if sig else []
    out.append({"valid": bool(valid), "h": h, "asked": asked,
                "d": sig[b"d"].decode() if sig else None,
                "s": sig[b"s"].decode() if sig else None})
print(json.dumps(out))
"#;

fn ensure_dkimpy() {
    support::ensure_python("import dkim, nacl", &["dkimpy", "pynacl"], "DKIM");
}

#[derive(Debug, serde::Deserialize)]
struct Verdict {
    valid: bool,
    h: Vec<String>,
    asked: Vec<String>,
    d: Option<String>,
    s: Option<String>,
}

fn verify(raw: &[u8], key: &PublicKey) -> Verdict {
    verify_all(&[(raw, key)]).remove(0)
}

/// One verdict per message, in order.
fn verify_all(messages: &[(&[u8], &PublicKey)]) -> Vec<Verdict> {
    ensure_dkimpy();
    let dir = tempfile::tempdir().unwrap();
    let mut jobs = Vec::new();
    for (i, (raw, key)) in messages.iter().enumerate() {
        let path = dir.path().join(format!("m{i}.eml"));
        std::fs::write(&path, raw).unwrap();
        jobs.push((path, key.b64.clone(), key.kind.dns_k()));
    }
    let list = dir.path().join("messages.json");
    std::fs::write(&list, serde_json::to_vec(&jobs).unwrap()).unwrap();
    let out = Command::new(support::python())
        .args(["-c", VERIFY])
        .arg(&list)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verifier crashed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<Verdict> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdicts.len(), messages.len(), "one verdict per message");
    verdicts
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    /// `openssl genrsa`: PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    RsaPkcs8,
    /// `openssl genrsa -traditional`: PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`).
    RsaPkcs1,
    /// `openssl genpkey -algorithm ed25519` (RFC 8463).
    Ed25519,
}

impl KeyKind {
    fn dns_k(self) -> &'static str {
        match self {
            KeyKind::Ed25519 => "ed25519",
            _ => "rsa",
        }
    }
}

struct PublicKey {
    kind: KeyKind,
    /// What the DNS record's `p=` holds.
    b64: String,
}

fn openssl(args: &[&str], path: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .arg(path)
        .stderr(Stdio::inherit())
        .output()
        .expect("the openssl command is needed for the DKIM tests");
    assert!(out.status.success(), "openssl {args:?} failed");
    out.stdout
}

/// A fresh key: the path of its private PEM and its public half.
fn new_key(dir: &Path, kind: KeyKind) -> (PathBuf, PublicKey) {
    use base64::Engine;
    let n = std::fs::read_dir(dir).unwrap().count();
    let key = dir.join(format!("key{n}.pem"));
    match kind {
        KeyKind::RsaPkcs8 => openssl(&["genrsa", "-out"], &key),
        KeyKind::RsaPkcs1 => openssl(&["genrsa", "-traditional", "-out"], &key),
        KeyKind::Ed25519 => openssl(&["genpkey", "-algorithm", "ed25519", "-out"], &key),
    };
    let der = openssl(&["pkey", "-pubout", "-outform", "DER", "-in"], &key);
    // RSA: p= is the DER SubjectPublicKeyInfo; Ed25519 (RFC 8463): the 32 raw bytes.
    let public = match kind {
        KeyKind::Ed25519 => &der[der.len() - 32..],
        _ => &der[..],
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(public);
    (key, PublicKey { kind, b64 })
}

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(server: &SmtpServer, dkim_key_path: &str, subscribers: &[(&str, Option<&str>)]) -> Site {
        Site::with_reply_to(server, dkim_key_path, subscribers, true)
    }

    fn with_reply_to(
        server: &SmtpServer,
        dkim_key_path: &str,
        subscribers: &[(&str, Option<&str>)],
        reply_to: bool,
    ) -> Site {
        let reply_to = if reply_to {
            "reply_to = \"Rédaction <redaction@news.example.com>\"\n"
        } else {
            ""
        };
        let cfg = format!(
            r#"{head}{reply_to}
{smtp}
[dkim]
domain = "news.example.com"
selector = "brief2026"
private_key_path = "{dkim_key_path}"
"#,
            head = support::site::sending_head(),
            smtp = smtp_table(server, 2),
        );
        let dir = site_dir(&cfg);
        let store = SqliteStore::open(&dir.path().join("digestif.db")).unwrap();
        let rows: Vec<_> = subscribers
            .iter()
            .map(|(email, name)| subscriber(email, name.map(str::to_string)))
            .collect();
        store.upsert_many(&rows).unwrap();
        Site { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn send(&self) -> Output {
        digestif_cmd(
            &self.dir.path().join("digestif.toml"),
            &["send", "--date", DATE, "--now", NOW],
        )
        .output()
        .unwrap()
    }
}

/// Replaces the first `from` after the header named `header` (case-insensitive
/// start of line), keeping everything else byte for byte.
fn tamper(raw: &[u8], header: &str, from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(raw.to_vec()).unwrap();
    let start = format!("\r\n{}", text.to_ascii_lowercase())
        .find(&format!("\r\n{}:", header.to_ascii_lowercase()))
        .unwrap_or_else(|| panic!("no {header} header"));
    let at = start
        + text[start..]
            .find(from)
            .unwrap_or_else(|| panic!("{from:?} not in {header}"));
    let mut out = text[..at].to_string();
    out.push_str(to);
    out.push_str(&text[at + from.len()..]);
    out.into_bytes()
}

const COVERED: [&str; 10] = [
    "from",
    "reply-to",
    "mime-version",
    "subject",
    "date",
    "to",
    "message-id",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
];

fn sends_messages_whose_signature_an_independent_verifier_accepts(kind: KeyKind, reply_to: bool) {
    let server = SmtpServer::start(&["--pipelining"]);
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = new_key(keys.path(), kind);
    let (_, other) = new_key(keys.path(), kind);
    let site = Site::with_reply_to(
        &server,
        key.to_str().unwrap(),
        &[
            ("jean@example.com", Some("Jean Dupont")),
            ("amelie@example.org", Some("Amélie Poulain, « la vraie »")),
            ("anon@example.net", None),
        ],
        reply_to,
    );
    let out = site.send();
    assert!(out.status.success(), "{}", show(&out));
    let got = server.messages();
    assert_eq!(got.len(), 3);

    // The check can fail: a change to a covered header or to the body breaks
    // it. Every message is checked by one run of the verifier.
    let m = got
        .iter()
        .find(|m| m.rcpt() == "jean@example.com")
        .expect("jean's copy");
    let forgeries = [
        ("List-Unsubscribe", "https://", "https://evil."),
        ("List-Unsubscribe-Post", "One-Click", "One-Click, Two-Click"),
        ("List-Id", "<", "<x"),
        ("Subject", "Subject:", "Subject: RE:"),
        ("From", "briefing@", "phishing@"),
        ("To", "jean@", "eve@"),
        ("Date", "2026", "2027"),
        ("Message-ID", "@", "x@"),
    ];
    let forged: Vec<Vec<u8>> = forgeries
        .iter()
        .map(|(header, from, to)| {
            let forged = tamper(&m.raw, header, from, to);
            assert_ne!(forged, m.raw);
            forged
        })
        .collect();
    let raw = String::from_utf8(m.raw.clone()).unwrap();
    let at = raw.find("Budget 2027").expect("story in the body");
    let mut body = m.raw.clone();
    body[at] = b'X';
    // Adding a Reply-To the sender did not set breaks it too (signed as absent).
    let added = (!reply_to).then(|| {
        let added = raw.replacen(
            "\r\nSubject:",
            "\r\nReply-To: attacker@evil.example\r\nSubject:",
            1,
        );
        assert_ne!(added, raw);
        added
    });

    let mut checks: Vec<(&[u8], &PublicKey)> = got.iter().map(|m| (&m.raw[..], &public)).collect();
    checks.extend(forged.iter().map(|f| (&f[..], &public)));
    checks.push((&body, &public));
    // Another key does not verify it either.
    checks.push((&m.raw, &other));
    if let Some(added) = &added {
        checks.push((added.as_bytes(), &public));
    }
    let mut verdicts = verify_all(&checks).into_iter();

    for m in &got {
        let raw = String::from_utf8(m.raw.clone()).unwrap();
        assert!(raw.starts_with("DKIM-Signature:") || raw.contains("\r\nDKIM-Signature:"));
        let v = verdicts.next().unwrap();
        assert!(v.valid, "dkimpy rejects the signature of:\n{raw}");
        assert_eq!(v.d.as_deref(), Some("news.example.com"));
        assert_eq!(v.s.as_deref(), Some("brief2026"));
        assert_eq!(v.asked, vec!["brief2026._domainkey.news.example.com."]);
        let algorithm = match kind {
            KeyKind::Ed25519 => "a=ed25519-sha256;",
            _ => "a=rsa-sha256;",
        };
        assert!(raw.contains(algorithm), "{raw}");
        let h: Vec<String> = v.h.iter().map(|x| x.to_ascii_lowercase()).collect();
        for name in COVERED {
            assert!(h.iter().any(|x| x == name), "h= lacks {name}: {h:?}");
        }
    }
    for (header, _, _) in forgeries {
        assert!(!verdicts.next().unwrap().valid, "forged {header} verifies");
    }
    assert!(!verdicts.next().unwrap().valid, "forged body verifies");
    assert!(!verdicts.next().unwrap().valid, "verified with another key");
    if added.is_some() {
        assert!(!verdicts.next().unwrap().valid, "added Reply-To verifies");
    }
    assert!(verdicts.next().is_none());
}

#[test]
fn messages_signed_with_a_pkcs8_rsa_key_verify_and_the_signature_covers_the_list_headers() {
    sends_messages_whose_signature_an_independent_verifier_accepts(KeyKind::RsaPkcs8, true);
}

#[test]
fn messages_signed_with_a_pkcs1_rsa_key_and_no_reply_to_verify_too() {
    sends_messages_whose_signature_an_independent_verifier_accepts(KeyKind::RsaPkcs1, false);
}

#[test]
fn messages_signed_with_an_ed25519_key_verify_too() {
    sends_messages_whose_signature_an_independent_verifier_accepts(KeyKind::Ed25519, false);
}

fn refuses_at_startup(key_path: &str, site_setup: impl FnOnce(&Path)) {
    let server = SmtpServer::start(&[]);
    let site = Site::new(&server, key_path, &[("jean@example.com", None)]);
    site_setup(site.path());
    let out = site.send();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[dkim] private_key_path"), "{}", show(&out));
    assert!(stderr.contains(key_path), "the path is not named: {stderr}");
    assert_eq!(server.count(), 0);
    // Refused before the issue was built: no archive, no ledger row.
    assert!(!site.path().join("digests").join(DATE).exists());
    let c = SqliteStore::open(&site.path().join("digestif.db"))
        .unwrap()
        .ledger_counts(chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap())
        .unwrap();
    assert_eq!(c.pending + c.sending + c.sent + c.failed, 0);
}

#[test]
fn a_missing_key_file_is_a_config_error_naming_the_key_and_the_path() {
    refuses_at_startup("keys/missing.pem", |_| {});
}

#[test]
fn a_key_file_that_is_not_a_key_is_a_config_error_naming_the_key_and_the_path() {
    refuses_at_startup("keys/garbage.pem", |dir| {
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        std::fs::write(
            dir.join("keys/garbage.pem"),
            "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sign_up_confirmation_is_signed_like_the_digest() {
    // Finding 9: the digest was signed, the confirmation mail of the same outbox was not.
    use digestif::http::Mailer;
    let server = SmtpServer::start(&[]);
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = new_key(keys.path(), KeyKind::RsaPkcs8);
    let site = Site::new(&server, key.to_str().unwrap(), &[]);
    let cfg = digestif::config::Config::from_file(&site.path().join("digestif.toml")).unwrap();
    let mailer = digestif::http::mail::TransportMailer::from_config(&cfg).unwrap();
    let to = digestif::domain::SubscriberEmail::parse("zoe@example.org").unwrap();
    mailer
        .send(
            &to,
            "Confirmez votre inscription à L'Essentiel",
            "Bonjour,\n\nConfirmez : https://news.example.com/digestif/confirm?token=x\n",
        )
        .await
        .unwrap();
    let got = server.messages();
    assert_eq!(got.len(), 1);
    let v = verify(&got[0].raw, &public);
    assert!(v.valid, "{}", String::from_utf8_lossy(&got[0].raw));
    assert_eq!(v.d.as_deref(), Some("news.example.com"));
    let h: Vec<String> = v.h.iter().map(|x| x.to_ascii_lowercase()).collect();
    for name in ["from", "to", "subject", "date", "message-id"] {
        assert!(h.iter().any(|x| x == name), "h= lacks {name}: {h:?}");
    }
}
