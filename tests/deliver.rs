//! Delivery end to end: a real SMTP server (aiosmtpd) over TCP, every message
//! parsed with an independent MIME parser (mail-parser).

mod support;

use digestif::config::{Smtp, TlsMode};
use digestif::deliver::message::Outgoing;
use digestif::deliver::transport::{SmtpTransport, Transport};
use support::SmtpServer;

fn smtp_to(server: &SmtpServer) -> SmtpTransport {
    let cfg = Smtp {
        host: "127.0.0.1".into(),
        port: server.port,
        tls: TlsMode::None,
        timeout_s: 10,
        ..Smtp::default()
    };
    SmtpTransport::new(&cfg, None)
}

fn outgoing(to: &str, body: &str) -> Outgoing {
    Outgoing {
        message_id: format!("{to}.test"),
        from: "briefing@news.example.com".into(),
        to: to.into(),
        bytes: format!(
            "From: briefing@news.example.com\r\nTo: {to}\r\nSubject: test\r\n\r\n{body}\r\n"
        )
        .into_bytes(),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

mod smtp_transport {
    use super::*;

    fn sends_three_messages_on_one_connection(flags: &[&str]) {
        let server = SmtpServer::start(flags);
        let t = smtp_to(&server);
        rt().block_on(async {
            let mut c = t.connect().await.unwrap();
            for i in 0..3 {
                let body = format!("line one\r\n.starts with a dot\r\nmessage {i}");
                c.send(&outgoing(&format!("r{i}@example.com"), &body))
                    .await
                    .unwrap();
            }
            c.close().await;
        });
        let got = server.messages();
        assert_eq!(got.len(), 3);
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m.rcpt(), format!("r{i}@example.com"));
            assert_eq!(m.mail_from, "briefing@news.example.com");
            let raw = String::from_utf8(m.raw.clone()).unwrap();
            assert!(
                raw.contains("\r\n.starts with a dot\r\n"),
                "dot-stuffing undone by the server: {raw:?}"
            );
            assert!(raw.contains(&format!("message {i}")));
        }
    }

    #[test]
    fn messages_arrive_intact_without_pipelining() {
        sends_three_messages_on_one_connection(&[]);
    }

    #[test]
    fn messages_arrive_intact_with_pipelining() {
        sends_three_messages_on_one_connection(&["--pipelining"]);
    }

    #[test]
    fn a_451_on_data_is_transient_and_the_connection_stays_usable() {
        let server = SmtpServer::start(&["--fail-first-data", "451", "--pipelining"]);
        let t = smtp_to(&server);
        rt().block_on(async {
            let mut c = t.connect().await.unwrap();
            let e = c.send(&outgoing("a@example.com", "x")).await.unwrap_err();
            assert!(e.is_transient(), "{e:?}");
            assert_eq!(e.code, Some(451));
            assert!(!c.is_broken());
            c.send(&outgoing("a@example.com", "x")).await.unwrap();
        });
        assert_eq!(server.count(), 1);
    }

    #[test]
    fn a_550_on_the_recipient_is_a_hard_bounce_and_the_next_message_goes_through() {
        for flags in [&[][..], &["--pipelining"][..]] {
            let mut args = vec!["--reject-rcpt", "gone@example.com:550"];
            args.extend_from_slice(flags);
            let server = SmtpServer::start(&args);
            let t = smtp_to(&server);
            rt().block_on(async {
                let mut c = t.connect().await.unwrap();
                let e = c
                    .send(&outgoing("gone@example.com", "x"))
                    .await
                    .unwrap_err();
                assert!(e.is_hard_bounce(), "{e:?}");
                assert_eq!(e.code, Some(550));
                c.send(&outgoing("here@example.com", "y")).await.unwrap();
            });
            let got = server.messages();
            assert_eq!(got.len(), 1, "{flags:?}");
            assert_eq!(got[0].rcpt(), "here@example.com");
        }
    }

    #[test]
    fn a_dropped_connection_is_transient_and_marks_the_connection_broken() {
        let server = SmtpServer::start(&["--drop-after", "1"]);
        let t = smtp_to(&server);
        rt().block_on(async {
            let mut c = t.connect().await.unwrap();
            c.send(&outgoing("a@example.com", "1")).await.unwrap();
            let e = c.send(&outgoing("b@example.com", "2")).await.unwrap_err();
            assert!(e.is_transient(), "{e:?}");
            assert!(c.is_broken());
            let mut c = t.connect().await.unwrap();
            c.send(&outgoing("b@example.com", "2")).await.unwrap();
        });
        assert_eq!(server.count(), 2);
    }

    #[test]
    fn nobody_listening_is_a_transient_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = Smtp {
            host: "127.0.0.1".into(),
            port,
            tls: TlsMode::None,
            ..Smtp::default()
        };
        let t = SmtpTransport::new(&cfg, None);
        let e = rt().block_on(t.connect()).err().unwrap();
        assert!(e.is_transient());
    }
}
