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
