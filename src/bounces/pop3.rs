//! A bounce mailbox read over POP3 (`[bounces] mailbox = "pop3s://…"`, RFC 1939):
//! USER/PASS, STAT, UIDL, then RETR and DELE for each message, and QUIT, which is
//! when the server removes what was marked. A session cut before QUIT deletes
//! nothing: the messages are read again next time and count once.
//!
//! The protocol is a handful of text commands: the client is these few functions,
//! over the same connection (and TLS setup) as IMAP.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::imap::{open, MailboxUrl, TIMEOUT};

/// Longest line accepted from the server, and largest message.
const MAX_LINE: usize = 64 * 1024;
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// What went wrong in a POP3 session, each naming the mailbox (`at`). Only a
/// `-ERR` answer ([`Pop3Error::Refused`]) means the server said no: a lost
/// connection is not taken for a command the server lacks.
#[derive(Debug, thiserror::Error)]
pub enum Pop3Error {
    #[error("{at}: no answer within 60 s")]
    NoAnswer { at: String },
    #[error("{at}: could not send within 60 s")]
    NotSent { at: String },
    #[error("{at}: connection failed: {error}")]
    Connection { at: String, error: std::io::Error },
    #[error("{at}: the server closed the connection")]
    Closed { at: String },
    #[error("{at}: a line longer than {MAX_LINE} bytes")]
    LongLine { at: String },
    #[error("{at}: a message larger than {MAX_MESSAGE} bytes")]
    LongMessage { at: String },
    #[error("{at}: no POP3 greeting ({greeting:?})")]
    NoGreeting { at: String, greeting: String },
    /// USER or PASS answered `-ERR` (the password is never shown).
    #[error("{at}: login refused: {verb}: {answer}")]
    LoginRefused {
        at: String,
        verb: String,
        answer: String,
    },
    /// A command answered `-ERR`.
    #[error("{at}: {verb}: {answer}")]
    Refused {
        at: String,
        verb: String,
        answer: String,
    },
    #[error("{at}: STAT answered {answer:?}")]
    BadStat { at: String, answer: String },
}

/// Reads every message of the mailbox: `handle(raw, source)` says whether it was
/// read (then it is deleted) or must stay for the next poll. Returns how many
/// messages were handed over.
pub async fn poll(
    mailbox: &MailboxUrl,
    password: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    handle: impl FnMut(&[u8], &str) -> bool,
) -> Result<u64> {
    let stream = open(mailbox, tls).await?;
    Ok(Session::start(mailbox, password, stream)
        .await?
        .read_all(handle)
        .await?)
}

/// Logs in and counts the messages, reading nothing (what `check` tries).
pub async fn probe(
    mailbox: &MailboxUrl,
    password: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<u64> {
    let stream = open(mailbox, tls).await?;
    let mut s = Session::start(mailbox, password, stream).await?;
    let count = s.stat().await?;
    s.quit().await?;
    Ok(count)
}

/// `io` within [`TIMEOUT`] (else the error `late` makes); an I/O error is a
/// connection that failed.
async fn timed<R>(
    at: &str,
    io: impl std::future::Future<Output = std::io::Result<R>>,
    late: fn(String) -> Pop3Error,
) -> Result<R, Pop3Error> {
    tokio::time::timeout(TIMEOUT, io)
        .await
        .map_err(|_| late(at.to_string()))?
        .map_err(|error| Pop3Error::Connection {
            at: at.to_string(),
            error,
        })
}

struct Session<T> {
    io: BufReader<T>,
    at: String,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Session<T> {
    /// Reads the greeting and logs in.
    async fn start(
        mailbox: &MailboxUrl,
        password: &str,
        stream: T,
    ) -> Result<Session<T>, Pop3Error> {
        let mut s = Session {
            io: BufReader::new(stream),
            at: mailbox.describe(),
        };
        let greeting = s.line().await?;
        if !greeting.starts_with("+OK") {
            return Err(Pop3Error::NoGreeting { at: s.at, greeting });
        }
        let login = |e| match e {
            Pop3Error::Refused { at, verb, answer } => Pop3Error::LoginRefused { at, verb, answer },
            other => other,
        };
        s.command(&format!("USER {}", mailbox.user))
            .await
            .map_err(login)?;
        s.command(&format!("PASS {password}"))
            .await
            .map_err(login)?;
        Ok(s)
    }

    /// One line from the server as sent, with its line end (none: the connection
    /// closed).
    async fn raw_line(&mut self) -> Result<Vec<u8>, Pop3Error> {
        let mut buf = Vec::new();
        let mut limited = (&mut self.io).take(MAX_LINE as u64);
        let reading = limited.read_until(b'\n', &mut buf);
        let read = timed(&self.at, reading, |at| Pop3Error::NoAnswer { at }).await?;
        if read == 0 {
            return Err(Pop3Error::Closed {
                at: self.at.clone(),
            });
        }
        if buf.last() != Some(&b'\n') {
            return Err(Pop3Error::LongLine {
                at: self.at.clone(),
            });
        }
        Ok(buf)
    }

    /// One line from the server, without its CRLF.
    async fn line(&mut self) -> Result<String, Pop3Error> {
        let buf = self.raw_line().await?;
        Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
    }

    /// Sends `cmd`; the answer's text after `+OK`, or the server's `-ERR` as
    /// [`Pop3Error::Refused`].
    async fn command(&mut self, cmd: &str) -> Result<String, Pop3Error> {
        let io = self.io.get_mut();
        let sending = async {
            io.write_all(cmd.as_bytes()).await?;
            io.write_all(b"\r\n").await?;
            io.flush().await
        };
        timed(&self.at, sending, |at| Pop3Error::NotSent { at }).await?;
        let answer = self.line().await?;
        match answer.strip_prefix("+OK") {
            Some(rest) => Ok(rest.trim().to_string()),
            None => Err(Pop3Error::Refused {
                at: self.at.clone(),
                // Never echo the password.
                verb: cmd.split(' ').next().unwrap_or(cmd).to_string(),
                answer,
            }),
        }
    }

    /// The lines of a multi-line answer up to its lone `.`, dot-unstuffed, joined
    /// with CRLF.
    async fn multiline(&mut self) -> Result<Vec<u8>, Pop3Error> {
        let mut out = Vec::new();
        loop {
            let buf = self.raw_line().await?;
            let line = buf
                .strip_suffix(b"\r\n")
                .or_else(|| buf.strip_suffix(b"\n"))
                .unwrap_or(&buf);
            if line == b"." {
                return Ok(out);
            }
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            out.extend_from_slice(b"\r\n");
            if out.len() > MAX_MESSAGE {
                return Err(Pop3Error::LongMessage {
                    at: self.at.clone(),
                });
            }
        }
    }

    /// How many messages wait.
    async fn stat(&mut self) -> Result<u64, Pop3Error> {
        let answer = self.command("STAT").await?;
        answer
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Pop3Error::BadStat {
                at: self.at.clone(),
                answer,
            })
    }

    /// The unique id of each message by number (empty when the server answers
    /// UIDL with `-ERR`: it has none).
    async fn uidl(&mut self) -> Result<HashMap<u64, String>, Pop3Error> {
        match self.command("UIDL").await {
            Ok(_) => {}
            Err(Pop3Error::Refused { .. }) => return Ok(HashMap::new()),
            Err(e) => return Err(e),
        }
        let list = self.multiline().await?;
        Ok(String::from_utf8_lossy(&list)
            .lines()
            .filter_map(|l| {
                let (n, uid) = l.trim().split_once(' ')?;
                Some((n.parse().ok()?, uid.trim().to_string()))
            })
            .collect())
    }

    async fn quit(&mut self) -> Result<(), Pop3Error> {
        self.command("QUIT").await.map(drop)
    }

    /// RETR each message, hand it over, DELE the ones read, QUIT.
    async fn read_all(
        mut self,
        mut handle: impl FnMut(&[u8], &str) -> bool,
    ) -> Result<u64, Pop3Error> {
        let count = self.stat().await?;
        let uids = self.uidl().await?;
        let mut read = 0;
        for n in 1..=count {
            self.command(&format!("RETR {n}")).await?;
            let raw = self.multiline().await?;
            read += 1;
            let name = uids.get(&n).cloned().unwrap_or_else(|| n.to_string());
            if handle(&raw, &format!("{}#{name}", self.at)) {
                self.command(&format!("DELE {n}")).await?;
            }
        }
        self.quit().await?;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A scripted server on one end of a pipe: it answers each command in turn and
    /// records what it was sent.
    async fn scripted(
        answers: &'static [&'static str],
        client_side: impl FnOnce(tokio::io::DuplexStream) -> tokio::task::JoinHandle<Result<u64>>,
    ) -> (Result<u64>, String) {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let task = client_side(client);
        let mut heard = String::new();
        for a in answers {
            server.write_all(a.as_bytes()).await.unwrap();
            let mut buf = [0u8; 512];
            let n = server.read(&mut buf).await.unwrap_or(0);
            heard.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        drop(server);
        (task.await.unwrap(), heard)
    }

    fn url() -> MailboxUrl {
        MailboxUrl::try_from("pop3://bounces@127.0.0.1:1110".to_string()).unwrap()
    }

    #[tokio::test]
    async fn messages_are_read_unstuffed_and_only_the_read_ones_deleted() {
        let answers: &[&str] = &[
            "+OK ready\r\n",
            "+OK\r\n",
            "+OK logged in\r\n",
            "+OK 2 300\r\n",
            "+OK\r\n1 aaa\r\n2 bbb\r\n.\r\n",
            "+OK 10 octets\r\nSubject: one\r\n\r\n..dot\r\n.\r\n",
            "+OK deleted\r\n",
            "+OK\r\nSubject: two\r\n\r\nkeep\r\n.\r\n",
            "+OK bye\r\n",
        ];
        let (result, heard) = scripted(answers, |client| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let s = Session::start(&url(), "pw", client).await?;
                let n = s
                    .read_all(|raw, source| {
                        got.push((
                            String::from_utf8_lossy(raw).into_owned(),
                            source.to_string(),
                        ));
                        got.len() == 1
                    })
                    .await?;
                assert_eq!(got[0].0, "Subject: one\r\n\r\n.dot\r\n");
                assert_eq!(got[0].1, "pop3:bounces@127.0.0.1#aaa");
                assert_eq!(got[1].1, "pop3:bounces@127.0.0.1#bbb");
                Ok(n)
            })
        })
        .await;
        assert_eq!(result.unwrap(), 2);
        assert_eq!(
            heard,
            "USER bounces\r\nPASS pw\r\nSTAT\r\nUIDL\r\nRETR 1\r\nDELE 1\r\nRETR 2\r\nQUIT\r\n"
        );
    }

    #[tokio::test]
    async fn a_refused_login_is_said_without_the_password() {
        let answers: &[&str] = &[
            "+OK ready\r\n",
            "+OK\r\n",
            "-ERR [AUTH] Authentication failed.\r\n",
        ];
        let (result, _) = scripted(answers, |client| {
            tokio::spawn(async move {
                Ok(Session::start(&url(), "secret-pw", client)
                    .await
                    .map(|_| 0)?)
            })
        })
        .await;
        let e = result.unwrap_err();
        assert!(
            matches!(
                e.downcast_ref::<Pop3Error>(),
                Some(Pop3Error::LoginRefused { verb, .. }) if verb == "PASS"
            ),
            "{e:?}"
        );
        let e = format!("{e:#}");
        assert!(e.contains("login refused: PASS: -ERR [AUTH]"), "{e}");
        assert!(!e.contains("secret-pw"), "{e}");
    }

    /// Reads the whole mailbox over `client`, handing each message's source out.
    fn read_everything(client: tokio::io::DuplexStream) -> tokio::task::JoinHandle<Result<u64>> {
        tokio::spawn(async move {
            let s = Session::start(&url(), "pw", client).await?;
            let mut sources = Vec::new();
            let n = s
                .read_all(|_, source| {
                    sources.push(source.to_string());
                    true
                })
                .await?;
            assert_eq!(sources, ["pop3:bounces@127.0.0.1#1"]);
            Ok(n)
        })
    }

    #[tokio::test]
    async fn a_server_refusing_uidl_has_its_messages_named_by_number() {
        let answers: &[&str] = &[
            "+OK ready\r\n",
            "+OK\r\n",
            "+OK logged in\r\n",
            "+OK 1 100\r\n",
            "-ERR unknown command\r\n",
            "+OK\r\nSubject: one\r\n\r\nbody\r\n.\r\n",
            "+OK deleted\r\n",
            "+OK bye\r\n",
        ];
        let (result, heard) = scripted(answers, read_everything).await;
        assert_eq!(result.unwrap(), 1);
        assert!(
            heard.ends_with("UIDL\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n"),
            "{heard}"
        );
    }

    #[tokio::test]
    async fn a_connection_lost_at_uidl_is_an_error_not_a_server_without_uidl() {
        let answers: &[&str] = &[
            "+OK ready\r\n",
            "+OK\r\n",
            "+OK logged in\r\n",
            "+OK 1 100\r\n",
        ];
        let (result, heard) = scripted(answers, read_everything).await;
        let e = result.unwrap_err();
        assert!(
            matches!(
                e.downcast_ref::<Pop3Error>(),
                Some(Pop3Error::Closed { .. })
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "pop3:bounces@127.0.0.1: the server closed the connection"
        );
        assert!(heard.ends_with("STAT\r\nUIDL\r\n"), "{heard}");
    }
}
