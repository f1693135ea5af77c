//! Delivery end to end: a real SMTP server (aiosmtpd) over TCP, every message
//! parsed with an independent MIME parser (mail-parser).

use crate::support;

use digestif::config::{Smtp, TlsMode};
use digestif::deliver::message::Outgoing;
use digestif::deliver::transport::{SmtpTransport, Transport};
use support::SmtpServer;

fn smtp_to(server: &SmtpServer) -> SmtpTransport {
    let cfg = Smtp {
        timeout_s: 10,
        ..smtp_at(server.port)
    };
    SmtpTransport::from_smtp(&cfg, None, None).unwrap()
}

/// Plain SMTP to `port` on the loopback, otherwise the defaults.
fn smtp_at(port: u16) -> Smtp {
    Smtp {
        host: "127.0.0.1".into(),
        port,
        tls: TlsMode::None,
        ..Smtp::default()
    }
}

/// A loopback port nobody listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

    /// The send loop marks a row `sending` between `stage` and `finish`: a
    /// connection dropped in between must deliver nothing.
    #[test]
    fn a_staged_message_is_delivered_by_finish_and_never_by_a_dropped_connection() {
        for flags in [&[][..], &["--pipelining"][..]] {
            let server = SmtpServer::start(flags);
            let t = smtp_to(&server);
            rt().block_on(async {
                let mut c = t.connect().await.unwrap();
                let first = outgoing("staged@example.com", "line\r\n.dot\r\nend");
                let staged = c.stage_next(&first).await;
                assert!(staged.previous.is_none());
                staged.this.unwrap();
                c.finish().await.unwrap();
                // Staged again on the same session, then the session is dropped.
                c.stage_next(&outgoing("dropped@example.com", "never"))
                    .await
                    .this
                    .unwrap();
                drop(c);
                // A later message on a new session still goes through.
                let mut c = t.connect().await.unwrap();
                c.send(&outgoing("after@example.com", "y")).await.unwrap();
                c.close().await;
            });
            server.wait_for(2, std::time::Duration::from_secs(5));
            std::thread::sleep(std::time::Duration::from_millis(200));
            let got = server.messages();
            let rcpts: Vec<&str> = got.iter().map(|m| m.rcpt()).collect();
            assert_eq!(
                rcpts,
                ["staged@example.com", "after@example.com"],
                "{flags:?}"
            );
            let raw = String::from_utf8(got[0].raw.clone()).unwrap();
            assert!(raw.contains("\r\n.dot\r\nend"), "{raw:?}");
        }
    }

    #[test]
    fn nobody_listening_is_a_transient_error() {
        let cfg = smtp_at(closed_port());
        let t = SmtpTransport::from_smtp(&cfg, None, None).unwrap();
        let e = rt().block_on(t.connect()).err().unwrap();
        assert!(e.is_transient());
    }
}

/// STARTTLS and implicit TLS through lettre's rustls client, against aiosmtpd
/// with a certificate made for the test and trusted through `smtp.ca_file`.
mod tls {
    use super::*;
    use support::cert::Cert;

    fn localhost_cert() -> Cert {
        Cert::localhost()
    }

    fn server(mode: &str, c: &Cert) -> SmtpServer {
        let mut flags = vec![mode];
        flags.extend(c.flags());
        SmtpServer::start(&flags)
    }

    fn transport(port: u16, tls: TlsMode, roots: Option<&Cert>) -> SmtpTransport {
        let cfg = Smtp {
            host: "localhost".into(),
            port,
            tls,
            timeout_s: 10,
            ..Smtp::default()
        };
        let pem = roots.map(|c| std::fs::read(&c.cert).unwrap());
        SmtpTransport::from_smtp(&cfg, None, pem.as_deref()).unwrap()
    }

    fn two_messages_over(mode: &str, tls: TlsMode) {
        let c = localhost_cert();
        let server = server(mode, &c);
        let t = transport(server.port, tls, Some(&c));
        rt().block_on(async {
            let mut conn = t.connect().await.unwrap();
            for i in 0..2 {
                let body = format!("line\r\n.dot\r\nsecret {i}");
                conn.send(&outgoing(&format!("r{i}@example.com"), &body))
                    .await
                    .unwrap();
            }
            conn.close().await;
        });
        let got = server.messages();
        assert_eq!(got.len(), 2, "{mode}");
        for (i, m) in got.iter().enumerate() {
            assert!(m.tls, "{mode}: message {i} did not come over TLS");
            assert_eq!(m.rcpt(), format!("r{i}@example.com"));
            let parsed = mail_parser::MessageParser::default()
                .parse(&m.raw)
                .expect("a parsable message");
            assert_eq!(parsed.subject(), Some("test"));
            let body = String::from_utf8_lossy(&m.raw).to_string();
            assert!(
                body.contains(&format!("\r\n.dot\r\nsecret {i}")),
                "{body:?}"
            );
        }
    }

    #[test]
    fn starttls_upgrades_the_session_and_delivers() {
        two_messages_over("--starttls", TlsMode::Starttls);
    }

    #[test]
    fn implicit_tls_delivers() {
        two_messages_over("--implicit-tls", TlsMode::Tls);
    }

    #[test]
    fn an_untrusted_certificate_is_refused_and_nothing_is_sent() {
        let c = localhost_cert();
        let server = server("--starttls", &c);
        let t = transport(server.port, TlsMode::Starttls, None);
        let e = rt()
            .block_on(t.connect())
            .err()
            .expect("an untrusted server");
        assert!(
            e.message.to_lowercase().contains("certificate"),
            "the error names the certificate: {e:?}"
        );
        assert_eq!(server.count(), 0);
    }

    #[test]
    fn plain_smtp_to_a_server_that_requires_starttls_sends_nothing_in_clear() {
        let c = localhost_cert();
        let server = server("--starttls", &c);
        let t = transport(server.port, TlsMode::None, None);
        let e = rt()
            .block_on(async {
                let mut conn = t.connect().await?;
                conn.send(&outgoing("r@example.com", "x")).await
            })
            .unwrap_err();
        assert_eq!(e.code, Some(530), "{e:?}");
        assert_eq!(server.count(), 0);
    }

    /// The whole `send` command over STARTTLS, trusting the relay through
    /// `smtp.ca_file` (relative to the config file); a missing file is a usage error.
    #[test]
    fn send_delivers_over_starttls_with_the_config_s_ca_file() {
        use support::site::{digestif_cmd, sending_head, site_dir, subscriber, DATE, NOW};
        let c = localhost_cert();
        let server = server("--starttls", &c);
        let cfg = format!(
            "{}\n[smtp]\ntransport = \"smtp\"\nhost = \"localhost\"\nport = {}\n\
             tls = \"starttls\"\nca_file = \"relay-ca.pem\"\npool_size = 2\ntimeout_s = 10\n",
            sending_head(),
            server.port
        );
        let dir = site_dir(&cfg);
        let config = dir.path().join("digestif.toml");
        let store = digestif::store::SqliteStore::open(&dir.path().join("digestif.db")).unwrap();
        let rows: Vec<_> = (1..=3)
            .map(|i| subscriber(&format!("r{i}@example.com"), None))
            .collect();
        digestif::store::Subscribers::upsert_many(&store, &rows).unwrap();

        let missing = digestif_cmd(&config, &["send", "--date", DATE, "--now", NOW])
            .output()
            .unwrap();
        assert_eq!(missing.status.code(), Some(2));
        let err = String::from_utf8_lossy(&missing.stderr);
        assert!(
            err.contains("smtp.ca_file") && err.contains("relay-ca.pem"),
            "{err}"
        );
        assert_eq!(server.count(), 0);

        std::fs::copy(&c.cert, dir.path().join("relay-ca.pem")).unwrap();
        let out = digestif_cmd(&config, &["send", "--date", DATE, "--now", NOW])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = server.messages();
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|m| m.tls), "every message over TLS");
        let mut to: Vec<&str> = got.iter().map(|m| m.rcpt()).collect();
        to.sort();
        assert_eq!(to, ["r1@example.com", "r2@example.com", "r3@example.com"]);
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_naming_the_problem() {
        let cfg = Smtp {
            tls: TlsMode::Starttls,
            ..Smtp::default()
        };
        let e = SmtpTransport::from_smtp(&cfg, None, Some(b"not a certificate"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}

/// The send loop against a real SMTP server, with a small in-memory ledger
/// (the SQLite store is exercised through the binary below).
mod send_loop {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use chrono::{DateTime, NaiveDate, TimeZone, Utc};
    use digestif::deliver::send::{deliver_ledger, Compose, SendOptions};
    use digestif::domain::{Subscriber, SubscriberEmail, SubscriberStatus};
    use digestif::store::*;
    use support::site::{everyone, recipients};

    #[derive(Default)]
    struct MemLedger {
        subs: BTreeMap<i64, Subscriber>,
        rows: BTreeMap<i64, (DeliveryState, u32, Option<String>)>,
        /// The sender holding each claimed or marked row.
        held: BTreeMap<i64, String>,
    }

    #[derive(Default, Clone)]
    struct MemStore(Arc<Mutex<MemLedger>>);

    impl MemStore {
        fn with(n: usize) -> MemStore {
            let s = MemStore::default();
            {
                let mut l = s.0.lock().unwrap();
                for i in 1..=n as i64 {
                    l.subs.insert(
                        i,
                        Subscriber {
                            id: i,
                            link_key: Default::default(),
                            email: SubscriberEmail::parse(&format!("r{i}@example.com")).unwrap(),
                            name: None,
                            locale: None,
                            categories: vec![],
                            timezone: None,
                            status: SubscriberStatus::Active,
                        },
                    );
                }
            }
            s
        }
        fn state(&self, id: i64) -> DeliveryState {
            self.0.lock().unwrap().rows[&id].0
        }
        fn subscriber_by_id(&self, id: i64) -> Option<Subscriber> {
            self.0.lock().unwrap().subs.get(&id).cloned()
        }
        fn set_status(&self, id: i64, status: SubscriberStatus) {
            let mut l = self.0.lock().unwrap();
            l.subs.get_mut(&id).unwrap().status = status;
        }
    }

    /// The send loop needs only the ledger.
    impl Ledger for MemStore {
        fn ledger_enqueue(&self, _: NaiveDate, _: Option<i64>) -> StoreResult<u64> {
            let mut l = self.0.lock().unwrap();
            let ids: Vec<i64> = l
                .subs
                .values()
                .filter(|s| s.status == SubscriberStatus::Active)
                .map(|s| s.id)
                .collect();
            let mut n = 0;
            for id in ids {
                if let std::collections::btree_map::Entry::Vacant(e) = l.rows.entry(id) {
                    e.insert((DeliveryState::Pending, 0, None));
                    n += 1;
                }
            }
            Ok(n)
        }
        fn ledger_claim(
            &self,
            date: NaiveDate,
            limit: usize,
            include_in_doubt: bool,
        ) -> StoreResult<Vec<Delivery>> {
            let mut l = self.0.lock().unwrap();
            let mut out = Vec::new();
            let states: &[DeliveryState] = if include_in_doubt {
                &[DeliveryState::Sending, DeliveryState::Pending]
            } else {
                &[DeliveryState::Pending]
            };
            for want in states {
                let ids: Vec<i64> = l
                    .rows
                    .iter()
                    .filter(|(_, r)| r.0 == *want)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    if out.len() >= limit {
                        break;
                    }
                    let sub = l.subs[&id].clone();
                    if sub.status != SubscriberStatus::Active {
                        l.rows.remove(&id);
                        continue;
                    }
                    let row = l.rows.get_mut(&id).unwrap();
                    row.0 = DeliveryState::Sending;
                    out.push(Delivery {
                        date,
                        subscriber: sub,
                        attempts: row.1,
                        in_doubt: *want == DeliveryState::Sending,
                    });
                }
            }
            Ok(out)
        }
        fn ledger_record(
            &self,
            _: NaiveDate,
            outcomes: &[(i64, DeliveryOutcome)],
            _: DateTime<Utc>,
        ) -> StoreResult<()> {
            let mut l = self.0.lock().unwrap();
            for (id, o) in outcomes {
                let row = l.rows.get_mut(id).unwrap();
                row.1 += 1;
                let bounce = match o {
                    DeliveryOutcome::Sent { .. } => {
                        row.0 = DeliveryState::Sent;
                        false
                    }
                    DeliveryOutcome::Retry { error } => {
                        row.0 = DeliveryState::Pending;
                        row.2 = Some(error.clone());
                        false
                    }
                    DeliveryOutcome::Failed { error, hard_bounce } => {
                        row.0 = DeliveryState::Failed;
                        row.2 = Some(error.clone());
                        *hard_bounce
                    }
                };
                if bounce {
                    l.subs.get_mut(id).unwrap().status = SubscriberStatus::Bounced;
                }
            }
            Ok(())
        }
        fn ledger_next(
            &self,
            date: NaiveDate,
            after: i64,
            limit: usize,
        ) -> StoreResult<Vec<Delivery>> {
            let l = self.0.lock().unwrap();
            Ok(l.rows
                .range(after.saturating_add(1)..)
                .filter(|(id, r)| {
                    r.0 == DeliveryState::Pending && l.subs[id].status == SubscriberStatus::Active
                })
                .take(limit)
                .map(|(id, r)| Delivery {
                    date,
                    subscriber: l.subs[id].clone(),
                    attempts: r.1,
                    in_doubt: false,
                })
                .collect())
        }
        fn ledger_record_and_mark(
            &self,
            date: NaiveDate,
            holder: &Holder,
            outcomes: &[(i64, DeliveryOutcome)],
            marks: &[i64],
            at: DateTime<Utc>,
        ) -> StoreResult<Vec<bool>> {
            self.ledger_record(date, outcomes, at)?;
            let mut l = self.0.lock().unwrap();
            let l = &mut *l;
            Ok(marks
                .iter()
                .map(|id| {
                    let row = l.rows.get_mut(id).unwrap();
                    let mine = l.held.get(id).is_none_or(|h| h == holder.as_str());
                    let moved = row.0 == DeliveryState::Pending && mine;
                    if moved {
                        row.0 = DeliveryState::Sending;
                        l.held.insert(*id, holder.to_string());
                    }
                    moved
                })
                .collect())
        }
        fn sender_seen(&self, _: NaiveDate, _: &Holder, _: DateTime<Utc>) -> StoreResult<()> {
            Ok(())
        }
        fn senders(&self, _: NaiveDate) -> StoreResult<Vec<SenderSeen>> {
            Ok(Vec::new())
        }
        fn ledger_claim_for(
            &self,
            date: NaiveDate,
            holder: &Holder,
            limit: usize,
        ) -> StoreResult<Vec<Delivery>> {
            let mut l = self.0.lock().unwrap();
            let l = &mut *l;
            let free: Vec<i64> = l
                .rows
                .iter()
                .filter(|(id, r)| {
                    r.0 == DeliveryState::Pending
                        && !l.held.contains_key(id)
                        && l.subs[id].status == SubscriberStatus::Active
                })
                .map(|(id, _)| *id)
                .take(limit)
                .collect();
            Ok(free
                .into_iter()
                .map(|id| {
                    l.held.insert(id, holder.to_string());
                    Delivery {
                        date,
                        subscriber: l.subs[&id].clone(),
                        attempts: l.rows[&id].1,
                        in_doubt: false,
                    }
                })
                .collect())
        }
        /// One sender in this process: any row in `sending` not its own is a
        /// dead run's.
        fn ledger_take_over(
            &self,
            date: NaiveDate,
            holder: &Holder,
            _: &[Holder],
            _: DateTime<Utc>,
        ) -> StoreResult<TakeOver> {
            let mut l = self.0.lock().unwrap();
            let l = &mut *l;
            let orphans: Vec<i64> = l
                .rows
                .iter()
                .filter(|(id, r)| {
                    r.0 == DeliveryState::Sending
                        && l.held.get(*id).is_none_or(|h| h != holder.as_str())
                })
                .map(|(id, _)| *id)
                .collect();
            let in_doubt = orphans
                .into_iter()
                .map(|id| {
                    l.held.insert(id, holder.to_string());
                    Delivery {
                        date,
                        subscriber: l.subs[&id].clone(),
                        attempts: l.rows[&id].1,
                        in_doubt: true,
                    }
                })
                .collect();
            Ok(TakeOver {
                in_doubt,
                ..TakeOver::default()
            })
        }
        fn ledger_release(&self, _: NaiveDate, _: &Holder) -> StoreResult<()> {
            let mut l = self.0.lock().unwrap();
            let l = &mut *l;
            l.held
                .retain(|id, _| l.rows[id].0 != DeliveryState::Pending);
            Ok(())
        }
        fn sender_left(&self, _: &Holder) -> StoreResult<()> {
            Ok(())
        }
        fn ledger_counts(&self, _: NaiveDate) -> StoreResult<LedgerCounts> {
            let l = self.0.lock().unwrap();
            let mut c = LedgerCounts::default();
            for r in l.rows.values() {
                match r.0 {
                    DeliveryState::Pending => c.pending += 1,
                    DeliveryState::Sending => c.sending += 1,
                    DeliveryState::Sent => c.sent += 1,
                    DeliveryState::Failed => c.failed += 1,
                }
            }
            Ok(c)
        }
    }

    struct Plain;
    impl Compose for Plain {
        fn compose(&self, s: &Subscriber) -> anyhow::Result<Outgoing> {
            Ok(outgoing(s.email.as_str(), &format!("hello {}", s.id)))
        }
    }

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
    }

    fn opts(pool: usize) -> SendOptions {
        SendOptions {
            pool_size: pool,
            rate_per_second: 0.0,
            max_attempts: 4,
            retry_base: std::time::Duration::from_millis(20),
            max_consecutive_failures: 20,
            limit: None,
            progress_bar: false,
            holder: Holder::new("send-here"),
            heartbeat_timeout: std::time::Duration::from_secs(30),
            gate: Default::default(),
        }
    }

    fn run(
        store: &MemStore,
        server: &SmtpServer,
        o: &SendOptions,
    ) -> digestif::deliver::send::SendReport {
        let t: Arc<dyn Transport> = Arc::new(smtp_to(server));
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(deliver_ledger(
                Arc::new(store.clone()),
                date(),
                Arc::new(Plain),
                t,
                o,
                Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap(),
            ))
            .unwrap()
    }

    #[test]
    fn every_active_subscriber_gets_exactly_one_message_and_a_second_run_sends_nothing() {
        let server = SmtpServer::start(&["--pipelining"]);
        let store = MemStore::with(60);
        store.set_status(7, SubscriberStatus::Unsubscribed);
        let r = run(&store, &server, &opts(4));
        assert_eq!(r.sent, 59);
        assert_eq!(r.pending_left, 0);
        assert!(r.in_doubt.is_empty());
        let mut want = everyone(60);
        want.retain(|a| a != "r7@example.com");
        assert_eq!(recipients(&server), want);
        let again = run(&store, &server, &opts(4));
        assert_eq!(again.sent, 0);
        assert_eq!(again.skipped, 59);
        assert_eq!(server.count(), 59);
    }

    #[test]
    fn a_451_then_250_is_retried_and_delivered_once() {
        let server = SmtpServer::start(&["--fail-first-data", "451"]);
        let store = MemStore::with(5);
        let r = run(&store, &server, &opts(2));
        assert_eq!((r.sent, r.retried, r.pending_left), (5, 1, 0));
        assert_eq!(recipients(&server), everyone(5));
    }

    #[test]
    fn a_550_recipient_fails_and_bounces_while_the_others_are_delivered() {
        let server = SmtpServer::start(&["--reject-rcpt", "r3@example.com:550", "--pipelining"]);
        let store = MemStore::with(6);
        let r = run(&store, &server, &opts(3));
        assert_eq!((r.sent, r.failed, r.bounced, r.pending_left), (5, 1, 1, 0));
        assert_eq!(r.failures[0].0, "r3@example.com");
        assert_eq!(store.state(3), DeliveryState::Failed);
        assert_eq!(
            store.subscriber_by_id(3).unwrap().status,
            SubscriberStatus::Bounced
        );
        let mut want = everyone(6);
        want.retain(|a| a != "r3@example.com");
        assert_eq!(recipients(&server), want);
    }

    #[test]
    fn a_server_dropping_the_connection_mid_run_still_gets_everyone_once() {
        let server = SmtpServer::start(&["--drop-after", "10"]);
        let store = MemStore::with(30);
        let r = run(&store, &server, &opts(3));
        assert_eq!((r.sent, r.pending_left), (30, 0));
        assert!(r.retried >= 1);
        assert_eq!(recipients(&server), everyone(30));
    }

    #[test]
    fn rows_left_in_sending_are_resent_once_and_named_in_doubt() {
        let server = SmtpServer::start(&[]);
        let store = MemStore::with(10);
        store.ledger_enqueue(date(), None).unwrap();
        // A previous run died with two rows in flight.
        store.ledger_claim(date(), 2, false).unwrap();
        let r = run(&store, &server, &opts(2));
        assert_eq!(r.in_doubt, vec!["r1@example.com", "r2@example.com"]);
        assert_eq!((r.sent, r.pending_left), (10, 0));
        assert_eq!(recipients(&server), everyone(10));
    }

    #[test]
    fn a_server_that_never_answers_leaves_rows_pending_for_the_next_run() {
        let cfg = smtp_at(closed_port());
        let t: Arc<dyn Transport> = Arc::new(SmtpTransport::from_smtp(&cfg, None, None).unwrap());
        let store = MemStore::with(20);
        let r = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(deliver_ledger(
                Arc::new(store.clone()),
                date(),
                Arc::new(Plain),
                t,
                &opts(2),
                digestif::clock::now(),
            ))
            .unwrap();
        assert_eq!(r.sent, 0);
        assert_eq!(r.pending_left, 20);
        assert!(!r.is_complete());
        let c = store.ledger_counts(date()).unwrap();
        assert_eq!((c.pending, c.sending), (20, 0));
    }

    #[test]
    fn limit_caps_the_messages_of_a_run() {
        let server = SmtpServer::start(&[]);
        let store = MemStore::with(10);
        let mut o = opts(3);
        o.limit = Some(4);
        let r = run(&store, &server, &o);
        assert_eq!((r.sent, r.pending_left), (4, 6));
        assert_eq!(server.count(), 4);
    }
}

/// Through the binary: config and feeds in a temp dir, subscribers in SQLite,
/// SMTP to the test server. Needs the render and store stages.
mod binary {
    use super::*;
    use std::path::PathBuf;
    use std::process::{Command, Output, Stdio};
    use std::time::Duration;

    use digestif::config::Secret;
    use digestif::deliver::token;
    use digestif::domain::{SubscriberEmail, SubscriberStatus};
    use digestif::store::{Ledger, SqliteStore, Subscribers};
    use mail_parser::{MessageParser, MimeHeaders};
    use support::site::{
        digestif_cmd, everyone, recipients, sending_head, show, site_dir, smtp_table, subscriber,
        DATE, NOW, SECRET,
    };

    struct Site {
        dir: tempfile::TempDir,
    }

    impl Site {
        fn new(server: &SmtpServer, pool: usize, subscribers: usize) -> Site {
            let cfg = format!(
                "{}\n{}max_attempts = 5\nretry_base_ms = 20\n",
                sending_head(),
                smtp_table(server, pool)
            );
            let site = Site {
                dir: site_dir(&cfg),
            };
            let rows: Vec<_> = (1..=subscribers)
                .map(|i| {
                    let name = (i % 2 == 0).then(|| format!("Lecteur {i}"));
                    subscriber(&format!("r{i}@example.com"), name)
                })
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
            digestif_cmd(&self.config(), args)
        }

        fn send(&self) -> Output {
            self.cmd(&["send", "--date", DATE, "--now", NOW])
                .output()
                .unwrap()
        }
    }

    #[test]
    fn every_active_subscriber_gets_one_complete_personal_message() {
        let server = SmtpServer::start(&["--pipelining"]);
        let site = Site::new(&server, 4, 12);
        let store = site.store();
        let gone = store
            .subscriber_by_email(&SubscriberEmail::parse("r5@example.com").unwrap())
            .unwrap()
            .unwrap();
        let out = site
            .cmd(&["unsubscribe", "r5@example.com"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        // Idempotent.
        let out = site
            .cmd(&["unsubscribe", "r5@example.com"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(
            store.subscriber_by_id(gone.id).unwrap().unwrap().status,
            SubscriberStatus::Unsubscribed
        );

        let out = site.send();
        assert!(out.status.success(), "{}", show(&out));
        let mut want = everyone(12);
        want.retain(|a| a != "r5@example.com");
        assert_eq!(recipients(&server), want);

        let secret = Secret::new(SECRET);
        let list_id = "l-essentiel.news.example.com";
        for m in server.messages() {
            assert_eq!(m.mail_from, "briefing@news.example.com");
            let raw = String::from_utf8(m.raw.clone()).expect("ASCII message");
            assert!(raw.split("\r\n").all(|l| l.len() <= 998));
            let p = MessageParser::default().parse(&m.raw).unwrap();
            assert_eq!(
                p.from().unwrap().first().unwrap().address(),
                Some("briefing@news.example.com")
            );
            assert_eq!(p.to().unwrap().first().unwrap().address(), Some(m.rcpt()));
            let subject = p.subject().unwrap();
            assert!(subject.contains("L'Essentiel"), "{subject}");
            assert!(p.date().is_some());
            assert!(p.message_id().unwrap().ends_with("@news.example.com"));
            let flat = |n: &str| {
                p.header_raw(n)
                    .unwrap_or_else(|| panic!("no {n} header"))
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            assert_eq!(flat("List-Id"), format!("L'Essentiel <{list_id}>"));
            assert_eq!(flat("List-Unsubscribe-Post"), "List-Unsubscribe=One-Click");
            let lu = flat("List-Unsubscribe");
            let tok = lu
                .split("token=")
                .nth(1)
                .unwrap()
                .split('>')
                .next()
                .unwrap()
                .to_string();
            assert!(lu.starts_with(&format!(
                "<https://news.example.com/digestif/unsubscribe?token={tok}>"
            )));
            assert!(lu.contains(&format!(
                "<mailto:unsubscribe@news.example.com?subject=unsubscribe%20{tok}>"
            )));
            // The token names this subscriber and shows nothing of the address.
            let token::LinkSubject::Key(key) =
                token::verify_unsubscribe(&secret, list_id, &tok).unwrap()
            else {
                panic!("new links name the subscriber's key")
            };
            let sub = store.subscriber_by_link_key(&key).unwrap().unwrap();
            assert_eq!(sub.email.as_str(), m.rcpt());
            // (Not a search for the two-letter local part in the text: a random
            // token contains "r5" now and then.)
            let raw =
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &tok)
                    .unwrap();
            for shown in [raw.as_slice(), tok.as_bytes()] {
                assert!(!shown
                    .windows(m.rcpt().len())
                    .any(|w| w.eq_ignore_ascii_case(m.rcpt().as_bytes())));
            }

            let ct = p.content_type().unwrap();
            assert_eq!(
                (ct.ctype(), ct.subtype()),
                ("multipart", Some("alternative"))
            );
            let text = p.body_text(0).unwrap();
            let html = p.body_html(0).unwrap();
            let link = format!("https://news.example.com/digestif/unsubscribe?token={tok}");
            assert!(text.contains(&link), "text lacks the personal link");
            assert!(html.contains(&link), "HTML lacks the personal link");
            let view = format!("https://news.example.com/digestif/archive/{DATE}");
            assert!(text.contains(&view), "text lacks the view-in-browser link");
            assert!(html.contains(&view), "HTML lacks the view-in-browser link");
            assert!(html.contains("Budget 2027"));
            if let Some(name) = &sub.name {
                assert!(text.contains(name.as_str()), "greeting without the name");
            }
        }

        // A second send sends nothing new.
        let out = site.send();
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(server.count(), 11);
        let out = site.cmd(&["ledger", "--date", DATE]).output().unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("sent 11"),
            "{}",
            show(&out)
        );
    }

    #[test]
    fn a_451_then_250_is_retried_and_each_subscriber_served_once() {
        let server = SmtpServer::start(&["--fail-first-data", "451"]);
        let site = Site::new(&server, 2, 6);
        let out = site.send();
        assert!(out.status.success(), "{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("retried 1"),
            "{}",
            show(&out)
        );
        assert_eq!(recipients(&server), everyone(6));
    }

    #[test]
    fn a_550_recipient_is_failed_bounced_and_skipped_next_time() {
        let server = SmtpServer::start(&["--reject-rcpt", "r2@example.com:550", "--pipelining"]);
        let site = Site::new(&server, 2, 5);
        let out = site.send();
        assert!(out.status.success(), "{}", show(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(stdout.contains("failed: r2@example.com"), "{stdout}");
        let mut want = everyone(5);
        want.retain(|a| a != "r2@example.com");
        assert_eq!(recipients(&server), want);
        let sub = site
            .store()
            .subscriber_by_email(&SubscriberEmail::parse("r2@example.com").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(sub.status, SubscriberStatus::Bounced);
        let out = site.cmd(&["ledger", "--date", DATE]).output().unwrap();
        let ledger = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            ledger.contains("failed 1") && ledger.contains("r2@example.com"),
            "{ledger}"
        );
        // Next issue: the bounced address is not even enqueued.
        let out = site
            .cmd(&[
                "send",
                "--date",
                "2026-11-28",
                "--now",
                "2026-11-28T06:30:00+01:00",
            ])
            .output()
            .unwrap();
        let _ = out; // nothing new may be found for that date; either way r2 gets nothing
        assert!(!recipients(&server)[4..].contains(&"r2@example.com".to_string()));
    }

    #[test]
    fn a_server_dropping_the_connection_mid_run_still_serves_everyone_once() {
        let server = SmtpServer::start(&["--drop-after", "7"]);
        let site = Site::new(&server, 3, 20);
        let out = site.send();
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(recipients(&server), everyone(20));
    }

    #[test]
    fn killed_mid_send_and_restarted_everyone_gets_one_copy_but_the_named_in_doubt() {
        let pool = 3;
        let n = 40;
        let server = SmtpServer::start(&["--delay-ms", "60"]);
        let site = Site::new(&server, pool, n);
        let mut child = site
            .cmd(&["send", "--date", DATE, "--now", NOW])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        server.wait_for(8, Duration::from_secs(60));
        // SIGKILL: no chance to clean up.
        child.kill().unwrap();
        child.wait().unwrap();
        let before = server.count();
        assert!(before < n, "the run finished before it was killed");

        let out = site.send();
        assert!(out.status.success(), "{}", show(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let in_doubt: Vec<String> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("in doubt (may have received two copies): "))
            .map(str::to_string)
            .collect();
        assert!(in_doubt.len() <= pool, "{stdout}");

        let mut counts = std::collections::BTreeMap::new();
        for r in recipients(&server) {
            *counts.entry(r).or_insert(0) += 1;
        }
        for a in everyone(n) {
            let c = counts.get(&a).copied().unwrap_or(0);
            assert!(c >= 1, "{a} was skipped");
            if c > 1 {
                assert_eq!(c, 2, "{a}");
                assert!(
                    in_doubt.contains(&a),
                    "{a} got two copies but is not named: {stdout}"
                );
            }
        }
    }

    #[test]
    fn send_refuses_to_run_without_a_secret_on_smtp() {
        let server = SmtpServer::start(&[]);
        let site = Site::new(&server, 1, 2);
        let out = site
            .cmd(&["send", "--date", DATE, "--now", NOW])
            .env_remove(Secret::ENV)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("DIGESTIF_SECRET"));
        assert_eq!(server.count(), 0);
    }

    #[test]
    fn dry_run_sends_nothing_and_to_sends_one_copy_outside_the_ledger() {
        let server = SmtpServer::start(&[]);
        let site = Site::new(&server, 1, 3);
        let out = site
            .cmd(&["send", "--date", DATE, "--now", NOW, "--dry-run"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(server.count(), 0);
        let out = site
            .cmd(&[
                "send",
                "--date",
                DATE,
                "--now",
                NOW,
                "--to",
                "editor@example.org",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(recipients(&server), vec!["editor@example.org".to_string()]);
        let c = site
            .store()
            .ledger_counts(chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap())
            .unwrap();
        assert_eq!(c.sent, 0);
    }
}
