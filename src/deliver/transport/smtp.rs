//! The SMTP client: one session engine for plain SMTP, STARTTLS and implicit
//! TLS, on a socket with TCP_NODELAY.
//!
//! Where the server offers PIPELINING (RFC 2920) a message costs about one round
//! trip: the end of one message's data goes out in the same write as the next
//! message's MAIL, RCPT and DATA, and their replies come back together. Without
//! PIPELINING every command waits for its reply.
//!
//! A message is *staged* (its envelope accepted, the server waiting for the data
//! after `354`) and ended later: the send loop marks its ledger row `sending` in
//! between, then its data, its final `.` and the next message's envelope go out
//! in one write. A session that dies before that write delivers nothing, and a
//! process killed at any point leaves at most one message per connection in
//! doubt. One write a message (rather than the envelope and the data apart)
//! halves the packets, and the wake-ups of whatever reads them: over TLS that is
//! most of what the encryption adds on our side.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures::future::BoxFuture;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::TlsMode;

use super::reply::{Line, Reply, ReplyParser, SendError, Stage};
use super::{Connection, Outgoing, Staged, Transport};

/// How to reach and greet the server (from `[smtp]`).
#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Send AUTH over a session that is not encrypted.
    pub allow_plaintext_auth: bool,
    pub timeout: Duration,
    /// The EHLO name.
    pub helo_name: String,
    /// For `starttls` and `tls`.
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
}

/// SMTP to `[smtp] host:port`.
#[derive(Clone)]
pub struct SmtpTransport {
    s: Arc<SmtpSettings>,
}

impl SmtpTransport {
    pub fn new(settings: SmtpSettings) -> SmtpTransport {
        SmtpTransport {
            s: Arc::new(settings),
        }
    }

    /// Greets the server as `name` (EHLO).
    pub fn set_helo_name(&mut self, name: String) {
        Arc::make_mut(&mut self.s).helo_name = name;
    }

    /// Opens a session ready for mail: greeted, encrypted and logged in as
    /// configured.
    pub async fn open(&self) -> Result<SmtpSession, SendError> {
        let s = &self.s;
        let tcp = tokio::time::timeout(s.timeout, TcpStream::connect((s.host.as_str(), s.port)))
            .await
            .map_err(|_| {
                SendError::transient(format!("timed out connecting to {}:{}", s.host, s.port))
            })?
            .map_err(|e| {
                SendError::transient(format!("cannot connect to {}:{}: {e}", s.host, s.port))
            })?;
        // Without it every small write (a command, the end of the data) waits
        // on Nagle's algorithm and the server's delayed ACK.
        tcp.set_nodelay(true)
            .map_err(|e| SendError::transient(format!("cannot set TCP_NODELAY: {e}")))?;
        let stream = match s.tls {
            TlsMode::Tls => Stream::Tls(Box::new(self.handshake(tcp).await?)),
            TlsMode::None | TlsMode::Starttls => Stream::Plain(tcp),
        };
        let mut session = SmtpSession::new(stream, s.timeout);
        let greeting = session.read_reply().await?;
        if greeting.code != 220 {
            return Err(SendError::from_reply(Stage::Greeting, &greeting));
        }
        session.ehlo(&s.helo_name).await?;
        if s.tls == TlsMode::Starttls {
            if !session.caps.starttls {
                return Err(SendError::fatal(format!(
                    "{}:{} does not offer STARTTLS; set smtp.tls = \"none\" only on a trusted network",
                    s.host, s.port
                )));
            }
            let r = session.command(b"STARTTLS\r\n").await?;
            if r.code != 220 {
                return Err(SendError::from_reply(Stage::StartTls, &r));
            }
            // Anything already received was sent before the handshake, in clear,
            // by the server or by someone on the path: taking it as a reply over
            // TLS would let them answer for the server (CVE-2011-0411).
            if !session.io.buffer().is_empty() {
                return Err(SendError::fatal(format!(
                    "{}:{} sent data after its STARTTLS reply, before the TLS handshake \
                     (a response injection): connection refused",
                    s.host, s.port
                )));
            }
            let Stream::Plain(tcp) = session.io.into_inner() else {
                return Err(SendError::fatal("STARTTLS on a session already encrypted"));
            };
            session =
                SmtpSession::new(Stream::Tls(Box::new(self.handshake(tcp).await?)), s.timeout);
            // What the server offered in clear counts for nothing now.
            session.ehlo(&s.helo_name).await?;
        }
        if let (Some(user), Some(pass)) = (&s.username, &s.password) {
            if !session.encrypted() && !s.allow_plaintext_auth {
                return Err(SendError::fatal(format!(
                    "refusing to send the SMTP password to {}:{} without TLS: set smtp.tls = \
                     \"starttls\" or \"tls\", or smtp.allow_plaintext_auth = true on a trusted network",
                    s.host, s.port
                )));
            }
            session.auth(user, pass).await?;
        }
        Ok(session)
    }

    async fn handshake(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, SendError> {
        let s = &self.s;
        let config = s
            .tls_config
            .clone()
            .ok_or_else(|| SendError::fatal("TLS asked for but not set up"))?;
        let name = ServerName::try_from(s.host.clone()).map_err(|e| {
            SendError::fatal(format!(
                "smtp.host {:?} is not a TLS server name: {e}",
                s.host
            ))
        })?;
        let connecting = TlsConnector::from(config).connect(name, tcp);
        match tokio::time::timeout(s.timeout, connecting).await {
            Err(_) => Err(SendError::transient(format!(
                "timed out in the TLS handshake with {}:{}",
                s.host, s.port
            ))),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => Err(SendError::fatal(
                format!("TLS with {}:{} refused: {e}", s.host, s.port),
            )),
            Ok(Err(e)) => Err(SendError::transient(format!(
                "TLS with {}:{} failed: {e}",
                s.host, s.port
            ))),
            Ok(Ok(tls)) => Ok(tls),
        }
    }
}

impl Transport for SmtpTransport {
    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, SendError>> {
        Box::pin(async move { Ok(Box::new(self.open().await?) as Box<dyn Connection>) })
    }

    fn describe(&self) -> String {
        let scheme = match self.s.tls {
            TlsMode::None => "smtp",
            TlsMode::Starttls => "smtp+starttls",
            TlsMode::Tls => "smtps",
        };
        format!("{scheme}://{}:{}", self.s.host, self.s.port)
    }
}

/// The socket, in clear or encrypted.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What the server said it can do (its EHLO reply).
#[derive(Debug, Default, Clone)]
struct Capabilities {
    pipelining: bool,
    starttls: bool,
    auth: Vec<String>,
}

/// One SMTP session.
pub struct SmtpSession {
    io: BufReader<Stream>,
    timeout: Duration,
    caps: Capabilities,
    broken: bool,
    /// A failed transaction left state on the server: send RSET first.
    needs_rset: bool,
    /// A message's envelope is accepted; its data, dot-stuffed in `buf`, goes
    /// out with its end.
    staged: bool,
    line: Vec<u8>,
    buf: Vec<u8>,
}

impl SmtpSession {
    fn new(stream: Stream, timeout: Duration) -> SmtpSession {
        SmtpSession {
            io: BufReader::with_capacity(16 * 1024, stream),
            timeout,
            caps: Capabilities::default(),
            broken: false,
            needs_rset: false,
            staged: false,
            line: Vec::with_capacity(512),
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    fn encrypted(&self) -> bool {
        matches!(self.io.get_ref(), Stream::Tls(_))
    }

    fn lost(&mut self, what: String) -> SendError {
        self.broken = true;
        SendError::transient(what)
    }

    async fn read_reply(&mut self) -> Result<Reply, SendError> {
        let mut parser = ReplyParser::default();
        loop {
            self.line.clear();
            let read =
                tokio::time::timeout(self.timeout, self.io.read_until(b'\n', &mut self.line));
            let n = match read.await {
                Err(_) => return Err(self.lost("timed out waiting for the SMTP server".into())),
                Ok(Err(e)) => return Err(self.lost(format!("connection lost: {e}"))),
                Ok(Ok(n)) => n,
            };
            if n == 0 || !self.line.ends_with(b"\n") {
                return Err(self.lost("connection closed by the SMTP server".into()));
            }
            match parser.line(&self.line) {
                Err(e) => return Err(self.lost(e.to_string())),
                Ok(Line::More) => {}
                Ok(Line::Done(r)) => {
                    if r.code == 421 {
                        // The server is closing the session: reconnect.
                        self.broken = true;
                    }
                    return Ok(r);
                }
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        let io = self.io.get_mut();
        let written = async {
            io.write_all(bytes).await?;
            io.flush().await
        };
        match tokio::time::timeout(self.timeout, written).await {
            Err(_) => Err(self.lost("timed out writing to the SMTP server".into())),
            Ok(Err(e)) => Err(self.lost(format!("connection lost: {e}"))),
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn command(&mut self, line: &[u8]) -> Result<Reply, SendError> {
        self.write(line).await?;
        self.read_reply().await
    }

    async fn ehlo(&mut self, name: &str) -> Result<(), SendError> {
        self.caps = Capabilities::default();
        let r = self.command(format!("EHLO {name}\r\n").as_bytes()).await?;
        if r.code != 250 {
            let r = self.command(format!("HELO {name}\r\n").as_bytes()).await?;
            if r.code != 250 {
                return Err(SendError::from_reply(Stage::Ehlo, &r));
            }
            return Ok(());
        }
        for l in r.lines.iter().skip(1) {
            let mut words = l.split_whitespace();
            match words.next().map(|w| w.to_ascii_uppercase()).as_deref() {
                Some("PIPELINING") => self.caps.pipelining = true,
                Some("STARTTLS") => self.caps.starttls = true,
                Some("AUTH") => {
                    self.caps.auth = words.map(|w| w.to_ascii_uppercase()).collect();
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn auth(&mut self, user: &str, pass: &str) -> Result<(), SendError> {
        let fail = |r: &Reply| {
            let mut e = SendError::from_reply(Stage::Auth, r);
            if !e.is_transient() {
                e.message
                    .push_str(" (check smtp.username and the password variable)");
            }
            e
        };
        if self.caps.auth.iter().any(|m| m == "PLAIN") {
            let creds = B64.encode(format!("\0{user}\0{pass}"));
            let r = self
                .command(format!("AUTH PLAIN {creds}\r\n").as_bytes())
                .await?;
            if r.code != 235 {
                return Err(fail(&r));
            }
            return Ok(());
        }
        if self.caps.auth.iter().any(|m| m == "LOGIN") {
            for (line, want) in [
                ("AUTH LOGIN".to_string(), 334),
                (B64.encode(user), 334),
                (B64.encode(pass), 235),
            ] {
                let r = self.command(format!("{line}\r\n").as_bytes()).await?;
                if r.code != want {
                    return Err(fail(&r));
                }
            }
            return Ok(());
        }
        Err(SendError::fatal(if self.caps.auth.is_empty() {
            "smtp.username is set but the SMTP server offers no AUTH here".to_string()
        } else {
            format!(
                "the SMTP server offers no AUTH mechanism we speak (PLAIN, LOGIN): {:?}",
                self.caps.auth
            )
        }))
    }

    /// Ends the staged message, if any, and stages `msg` (see [`Connection::stage_next`]).
    async fn stage_after(&mut self, msg: &Outgoing) -> Staged {
        let had_staged = self.staged;
        if self.broken {
            self.staged = false;
            let lost = SendError::transient("connection already lost");
            return Staged {
                previous: had_staged.then(|| Err(lost.clone())),
                this: Err(lost),
            };
        }
        if !self.caps.pipelining {
            let previous = if had_staged {
                Some(self.end_data().await)
            } else {
                None
            };
            let this = if self.broken {
                Err(SendError::transient("connection lost"))
            } else {
                self.envelope_one_by_one(msg).await
            };
            return Staged { previous, this };
        }
        self.staged = false;
        let rset = std::mem::take(&mut self.needs_rset);
        // The staged message's data and end, then this message's envelope.
        let mut out = std::mem::take(&mut self.buf);
        if had_staged {
            out.extend_from_slice(b".\r\n");
        } else {
            out.clear();
        }
        if rset {
            out.extend_from_slice(b"RSET\r\n");
        }
        out.extend_from_slice(format!("MAIL FROM:<{}>\r\n", msg.from).as_bytes());
        out.extend_from_slice(format!("RCPT TO:<{}>\r\n", msg.to).as_bytes());
        out.extend_from_slice(b"DATA\r\n");
        let written = self.write(&out).await;
        out.clear();
        self.buf = out;
        if let Err(e) = written {
            return Staged {
                previous: had_staged.then(|| Err(e.clone())),
                this: Err(e),
            };
        }
        let previous = if had_staged {
            Some(self.read_end_reply().await)
        } else {
            None
        };
        if self.broken {
            let e = match &previous {
                Some(Err(e)) if e.is_transient() => e.clone(),
                _ => SendError::transient("connection lost"),
            };
            return Staged {
                previous,
                this: Err(e),
            };
        }
        let this = self.pipelined_envelope_replies(rset).await;
        if this.is_ok() {
            self.hold_data(msg);
        }
        Staged { previous, this }
    }

    /// Reads the replies to a pipelined [RSET] MAIL RCPT DATA.
    async fn pipelined_envelope_replies(&mut self, rset: bool) -> Result<(), SendError> {
        if rset {
            let r = self.read_reply().await?;
            if !r.is_positive() {
                return Err(SendError::from_reply(Stage::Rset, &r));
            }
        }
        let mail = self.read_reply().await?;
        let rcpt = self.read_reply().await?;
        let data = self.read_reply().await?;
        if !mail.is_positive() {
            self.abort_after_data(&data).await?;
            return Err(SendError::from_reply(Stage::Mail, &mail));
        }
        if !rcpt.is_positive() {
            self.abort_after_data(&data).await?;
            return Err(SendError::from_reply(Stage::Rcpt, &rcpt));
        }
        if data.code != 354 {
            self.needs_rset = true;
            return Err(SendError::from_reply(Stage::Data, &data));
        }
        Ok(())
    }

    /// MAIL, RCPT and DATA each waiting for its reply (no PIPELINING), then the data.
    async fn envelope_one_by_one(&mut self, msg: &Outgoing) -> Result<(), SendError> {
        if std::mem::take(&mut self.needs_rset) {
            let r = self.command(b"RSET\r\n").await?;
            if !r.is_positive() {
                return Err(SendError::from_reply(Stage::Rset, &r));
            }
        }
        let steps = [
            (format!("MAIL FROM:<{}>\r\n", msg.from), Stage::Mail),
            (format!("RCPT TO:<{}>\r\n", msg.to), Stage::Rcpt),
            ("DATA\r\n".to_string(), Stage::Data),
        ];
        for (line, stage) in steps {
            let r = self.command(line.as_bytes()).await?;
            let ok = if stage == Stage::Data {
                r.code == 354
            } else {
                r.is_positive()
            };
            if !ok {
                self.needs_rset = true;
                return Err(SendError::from_reply(stage, &r));
            }
        }
        self.hold_data(msg);
        Ok(())
    }

    /// Stages `msg` once the server said 354: its data waits in `buf` and goes
    /// out with its end.
    fn hold_data(&mut self, msg: &Outgoing) {
        self.buf.clear();
        super::dot_stuff_body_into(&msg.bytes, &mut self.buf);
        self.staged = true;
    }

    async fn read_end_reply(&mut self) -> Result<(), SendError> {
        let done = self.read_reply().await?;
        if done.code != 250 {
            return Err(SendError::from_reply(Stage::EndOfData, &done));
        }
        Ok(())
    }

    /// Ends the staged data alone: the server's reply says whether it took the message.
    async fn end_data(&mut self) -> Result<(), SendError> {
        if !std::mem::take(&mut self.staged) {
            return Err(self.lost("no message staged on this connection".into()));
        }
        let mut out = std::mem::take(&mut self.buf);
        out.extend_from_slice(b".\r\n");
        let written = self.write(&out).await;
        out.clear();
        self.buf = out;
        written?;
        self.read_end_reply().await
    }

    /// The DATA of a pipelined envelope whose MAIL or RCPT failed: if the server
    /// still said 354, end the (empty) data so that the session stays in step.
    async fn abort_after_data(&mut self, data: &Reply) -> Result<(), SendError> {
        if data.code == 354 {
            self.write(b".\r\n").await?;
            self.read_reply().await?;
        }
        self.needs_rset = true;
        Ok(())
    }
}

impl Connection for SmtpSession {
    fn stage_next<'a>(&'a mut self, msg: &'a Outgoing) -> BoxFuture<'a, Staged> {
        Box::pin(self.stage_after(msg))
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<(), SendError>> {
        Box::pin(async move {
            if self.broken {
                self.staged = false;
                return Err(SendError::transient("connection already lost"));
            }
            self.end_data().await
        })
    }

    fn is_broken(&self) -> bool {
        self.broken
    }

    fn close(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if !self.broken && !self.staged {
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), self.command(b"QUIT\r\n")).await;
            }
            let _ =
                tokio::time::timeout(Duration::from_secs(2), self.io.get_mut().shutdown()).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// A server that greets, offers PIPELINING and accepts one envelope, then
    /// reports on the channel: the envelope, every read after its 354 as it
    /// comes, and the end of the connection.
    async fn watching_server() -> (u16, mpsc::UnboundedReceiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            sock.write_all(b"220 watching\r\n").await.unwrap();
            let mut seen = Vec::new();
            let mut chunk = [0u8; 65536];
            let mut replied_ehlo = false;
            let mut replied_data = false;
            loop {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    let _ = tx.send(b"<closed>".to_vec());
                    return;
                }
                if replied_data {
                    // After the 354: every read as it comes.
                    let _ = tx.send(chunk[..n].to_vec());
                }
                seen.extend_from_slice(&chunk[..n]);
                if !replied_ehlo && seen.ends_with(b"\r\n") {
                    replied_ehlo = true;
                    seen.clear();
                    sock.write_all(b"250-watching\r\n250 PIPELINING\r\n")
                        .await
                        .unwrap();
                    continue;
                }
                if !replied_data && seen.ends_with(b"DATA\r\n") {
                    replied_data = true;
                    let _ = tx.send(std::mem::take(&mut seen));
                    sock.write_all(b"250 ok\r\n250 ok\r\n354 go ahead\r\n")
                        .await
                        .unwrap();
                    continue;
                }
                if replied_data && seen.ends_with(b"\r\n.\r\n") {
                    seen.clear();
                    sock.write_all(b"250 queued\r\n").await.unwrap();
                }
            }
        });
        (port, rx)
    }

    fn transport(port: u16) -> SmtpTransport {
        SmtpTransport::new(SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            tls: TlsMode::None,
            username: None,
            password: None,
            allow_plaintext_auth: false,
            timeout: Duration::from_secs(5),
            helo_name: "sender.example.com".into(),
            tls_config: None,
        })
    }

    fn message() -> Outgoing {
        Outgoing {
            message_id: "1@example.com".into(),
            from: "news@example.com".into(),
            to: "reader@example.org".into(),
            bytes: b"Subject: hi\r\n\r\nbody line\r\n.starts with a dot\r\n".to_vec(),
        }
    }

    #[tokio::test]
    async fn a_staged_message_sends_no_data_until_it_is_ended_then_data_and_end_in_one_write() {
        let (port, mut seen) = watching_server().await;
        let mut session = transport(port).open().await.unwrap();
        let staged = session.stage_after(&message()).await;
        assert!(staged.previous.is_none());
        staged.this.unwrap();
        let envelope = seen.recv().await.unwrap();
        assert_eq!(
            envelope,
            b"MAIL FROM:<news@example.com>\r\nRCPT TO:<reader@example.org>\r\nDATA\r\n"
        );
        // Staged: the server holds the envelope and nothing of the data.
        let early = tokio::time::timeout(Duration::from_millis(200), seen.recv()).await;
        assert!(early.is_err(), "data sent before the end: {early:?}");
        session.end_data().await.unwrap();
        let data = seen.recv().await.unwrap();
        assert_eq!(
            data,
            b"Subject: hi\r\n\r\nbody line\r\n..starts with a dot\r\n.\r\n".to_vec()
        );
    }

    #[tokio::test]
    async fn a_session_closed_while_a_message_is_staged_delivers_none_of_it() {
        let (port, mut seen) = watching_server().await;
        let mut session = transport(port).open().await.unwrap();
        session.stage_after(&message()).await.this.unwrap();
        let _envelope = seen.recv().await.unwrap();
        Box::new(session).close().await;
        let after = seen.recv().await.unwrap();
        assert_eq!(
            after,
            b"<closed>".to_vec(),
            "the server got part of the message"
        );
    }
}
