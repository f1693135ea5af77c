//! Where messages go: SMTP or a folder of `.eml` files, behind one small trait.
//!
//! The plain-SMTP path is a minimal client of our own on tokio: TCP_NODELAY,
//! PIPELINING (RFC 2920: MAIL, RCPT and DATA in one write) and the whole DATA
//! payload with its final `.` in one write. lettre's pooled transport waits on
//! Nagle's algorithm and the peer's delayed ACK for the final `.` (about 40 ms
//! per message); here a message costs two round trips. TLS modes (`starttls`,
//! `tls`) go through lettre's connection, over a socket we open with TCP_NODELAY.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures::future::BoxFuture;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::config::{Config, Smtp, TlsMode, TransportKind};

use super::message::Outgoing;

/// Why a message was not accepted, shaped for the next decision: retry or give up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub kind: ErrorKind,
    /// The SMTP reply code, when the server gave one.
    pub code: Option<u16>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 4xx, connection lost, timeout: try again later.
    Transient,
    /// 5xx: this message will not go through.
    Permanent,
    /// 550/551/553 on the recipient: the address does not exist; never mail it again.
    HardBounce,
}

impl SendError {
    pub fn transient(message: impl Into<String>) -> SendError {
        SendError {
            kind: ErrorKind::Transient,
            code: None,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> SendError {
        SendError {
            kind: ErrorKind::Permanent,
            code: None,
            message: message.into(),
        }
    }

    /// Classifies a reply to `stage` ("MAIL", "RCPT", "DATA", …).
    pub fn from_reply(stage: &str, reply: &Reply) -> SendError {
        let kind = match reply.code {
            400..=499 => ErrorKind::Transient,
            550 | 551 | 553 if stage == "RCPT" => ErrorKind::HardBounce,
            _ => ErrorKind::Permanent,
        };
        SendError {
            kind,
            code: Some(reply.code),
            message: format!("{stage}: {} {}", reply.code, reply.text()),
        }
    }

    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    pub fn is_permanent(&self) -> bool {
        !self.is_transient()
    }

    pub fn is_hard_bounce(&self) -> bool {
        self.kind == ErrorKind::HardBounce
    }
}

/// One open channel to the destination (an SMTP session, a folder). Each send
/// worker owns one.
pub trait Connection: Send {
    /// Sends `msg`: delivered once this returns Ok.
    fn send<'a>(&'a mut self, msg: &'a Outgoing) -> BoxFuture<'a, Result<(), SendError>>;
    /// Sends everything of `msg` that can go out without delivering it (for SMTP:
    /// the envelope and the data, not the end of the data). The send loop stages
    /// a message, marks its row `sending` in the ledger while the server already
    /// reads it, then calls [`Connection::finish`]. A connection dropped between
    /// the two delivers nothing. By default nothing goes out before `finish`.
    fn stage<'a>(&'a mut self, _msg: &'a Outgoing) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async { Ok(()) })
    }
    /// Delivers `msg`, staged or not. By default [`Connection::send`].
    fn finish<'a>(&'a mut self, msg: &'a Outgoing) -> BoxFuture<'a, Result<(), SendError>> {
        self.send(msg)
    }
    /// After an error: whether this connection can still be used.
    fn is_broken(&self) -> bool;
    /// Ends the session politely (QUIT).
    fn close(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// Opens connections.
pub trait Transport: Send + Sync {
    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, SendError>>;
    /// For logs: "smtp://host:port" or "file://dir".
    fn describe(&self) -> String;
}

/// The transport `[smtp]` asks for.
pub fn from_config(cfg: &Config) -> anyhow::Result<Arc<dyn Transport>> {
    match cfg.smtp.transport {
        TransportKind::File => Ok(Arc::new(FileTransport {
            dir: cfg.resolve(&cfg.smtp.file_dir),
        })),
        TransportKind::Smtp => {
            let password = match (&cfg.smtp.username, &cfg.smtp.password_env) {
                (Some(_), Some(var)) => Some(std::env::var(var).map_err(|_| {
                    anyhow::anyhow!(
                        "smtp.password_env names {var}, but that environment variable is not set"
                    )
                })?),
                (Some(_), None) => {
                    anyhow::bail!("smtp.username is set but smtp.password_env is not: name the environment variable that holds the password")
                }
                _ => None,
            };
            let mut t = SmtpTransport::new(&cfg.smtp, password);
            if let Some(file) = &cfg.smtp.ca_file {
                let path = cfg.resolve(file);
                let pem = std::fs::read(&path).map_err(|e| {
                    anyhow::anyhow!("smtp.ca_file: cannot read {}: {e}", path.display())
                })?;
                t = t
                    .with_roots(pem)
                    .map_err(|e| anyhow::anyhow!("smtp.ca_file: {}: {e}", path.display()))?;
            }
            Ok(Arc::new(t))
        }
    }
}

// ---------------------------------------------------------------- file

/// Writes each message as `<message-id>.eml` into a folder.
#[derive(Debug, Clone)]
pub struct FileTransport {
    pub dir: PathBuf,
}

struct FileConnection {
    dir: PathBuf,
}

impl Transport for FileTransport {
    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, SendError>> {
        Box::pin(async move {
            tokio::fs::create_dir_all(&self.dir).await.map_err(|e| {
                SendError::permanent(format!("cannot create {}: {e}", self.dir.display()))
            })?;
            Ok(Box::new(FileConnection {
                dir: self.dir.clone(),
            }) as Box<dyn Connection>)
        })
    }

    fn describe(&self) -> String {
        format!("file://{}", self.dir.display())
    }
}

impl Connection for FileConnection {
    fn send<'a>(&'a mut self, msg: &'a Outgoing) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let name: String = msg
                .message_id
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "@.-_".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let path = self.dir.join(format!("{name}.eml"));
            let tmp = self.dir.join(format!(".{name}.eml.tmp"));
            tokio::fs::write(&tmp, &msg.bytes).await.map_err(|e| {
                SendError::transient(format!("cannot write {}: {e}", tmp.display()))
            })?;
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(|e| SendError::transient(format!("cannot write {}: {e}", path.display())))
        })
    }

    fn is_broken(&self) -> bool {
        false
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

// ---------------------------------------------------------------- SMTP

/// SMTP to `[smtp] host:port`.
#[derive(Debug, Clone)]
pub struct SmtpTransport {
    host: String,
    port: u16,
    tls: TlsMode,
    username: Option<String>,
    password: Option<String>,
    timeout: Duration,
    hello_name: String,
    /// Extra root certificates (PEM) for TLS.
    roots: Option<Vec<u8>>,
}

impl SmtpTransport {
    pub fn new(smtp: &Smtp, password: Option<String>) -> SmtpTransport {
        SmtpTransport {
            host: smtp.host.clone(),
            port: smtp.port,
            tls: smtp.tls,
            username: smtp.username.clone(),
            password,
            timeout: Duration::from_secs(smtp.timeout_s.max(1)),
            hello_name: "localhost".into(),
            roots: None,
        }
    }

    /// Also trusts the root certificates of `pem` for TLS (one or more PEM
    /// blocks). Fails when the file holds no certificate.
    pub fn with_roots(mut self, pem: Vec<u8>) -> Result<SmtpTransport, String> {
        let n = pem_certificates(&pem).len();
        if n == 0 {
            return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
        }
        for c in pem_certificates(&pem) {
            lettre::transport::smtp::client::Certificate::from_pem(c.as_bytes())
                .map_err(|e| format!("not a readable certificate: {e}"))?;
        }
        self.roots = Some(pem);
        Ok(self)
    }

    fn tls_parameters(&self) -> Result<lettre::transport::smtp::client::TlsParameters, SendError> {
        use lettre::transport::smtp::client::{Certificate, TlsParameters};
        let mut b = TlsParameters::builder(self.host.clone());
        for c in self
            .roots
            .as_deref()
            .map(pem_certificates)
            .unwrap_or_default()
        {
            let cert = Certificate::from_pem(c.as_bytes())
                .map_err(|e| SendError::permanent(format!("smtp.ca_file: {e}")))?;
            b = b.add_root_certificate(cert);
        }
        b.build_rustls()
            .map_err(|e| SendError::permanent(format!("TLS setup for {}: {e}", self.host)))
    }

    async fn tcp(&self) -> Result<TcpStream, SendError> {
        let stream = tokio::time::timeout(
            self.timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| {
            SendError::transient(format!(
                "timed out connecting to {}:{}",
                self.host, self.port
            ))
        })?
        .map_err(|e| {
            SendError::transient(format!(
                "cannot connect to {}:{}: {e}",
                self.host, self.port
            ))
        })?;
        stream
            .set_nodelay(true)
            .map_err(|e| SendError::transient(format!("cannot set TCP_NODELAY: {e}")))?;
        Ok(stream)
    }

    async fn connect_plain(&self) -> Result<Box<dyn Connection>, SendError> {
        let stream = self.tcp().await?;
        let mut c = PlainSmtp::new(stream, self.timeout);
        let greeting = c.read_reply().await?;
        if greeting.code != 220 {
            return Err(SendError::from_reply("greeting", &greeting));
        }
        c.ehlo(&self.hello_name).await?;
        if let (Some(user), Some(pass)) = (&self.username, &self.password) {
            c.auth(user, pass).await?;
        }
        Ok(Box::new(c))
    }

    async fn connect_tls(&self) -> Result<Box<dyn Connection>, SendError> {
        use lettre::transport::smtp::authentication::{Credentials, Mechanism};
        use lettre::transport::smtp::client::AsyncSmtpConnection;
        use lettre::transport::smtp::extension::ClientId;

        let hello = ClientId::Domain(self.hello_name.clone());
        let tls = self.tls_parameters()?;
        let lettre_err = |e: lettre::transport::smtp::Error| lettre_error("connect", &e);
        let mut conn = match self.tls {
            TlsMode::Tls => AsyncSmtpConnection::connect_tokio1(
                (self.host.as_str(), self.port),
                Some(self.timeout),
                &hello,
                Some(tls),
                None,
            )
            .await
            .map_err(lettre_err)?,
            _ => {
                let stream = self.tcp().await?;
                let mut conn =
                    AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello)
                        .await
                        .map_err(lettre_err)?;
                if !conn.can_starttls() {
                    return Err(SendError::permanent(format!(
                        "{}:{} does not offer STARTTLS; set smtp.tls = \"none\" only on a trusted network",
                        self.host, self.port
                    )));
                }
                conn.starttls(tls, &hello).await.map_err(lettre_err)?;
                conn
            }
        };
        if let (Some(user), Some(pass)) = (&self.username, &self.password) {
            conn.auth(
                &[Mechanism::Plain, Mechanism::Login],
                &Credentials::new(user.clone(), pass.clone()),
            )
            .await
            .map_err(|e| lettre_error("AUTH", &e))?;
        }
        Ok(Box::new(LettreSmtp {
            conn,
            broken: false,
        }))
    }
}

impl Transport for SmtpTransport {
    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, SendError>> {
        Box::pin(async move {
            match self.tls {
                TlsMode::None => self.connect_plain().await,
                TlsMode::Starttls | TlsMode::Tls => self.connect_tls().await,
            }
        })
    }

    fn describe(&self) -> String {
        format!("smtp://{}:{}", self.host, self.port)
    }
}

fn lettre_error(stage: &str, e: &lettre::transport::smtp::Error) -> SendError {
    match e.status() {
        Some(code) => {
            let code: u16 = code.to_string().parse().unwrap_or(0);
            let reply = Reply {
                code,
                lines: vec![e.to_string()],
            };
            SendError::from_reply(stage, &reply)
        }
        None if e.is_permanent() => SendError::permanent(format!("{stage}: {e}")),
        None => SendError::transient(format!("{stage}: {e}")),
    }
}

/// The PEM blocks of certificates in `pem`, each whole (BEGIN to END line).
fn pem_certificates(pem: &[u8]) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(b) = rest.find(BEGIN) {
        let Some(e) = rest[b..].find(END) else { break };
        out.push(rest[b..b + e + END.len()].to_string());
        rest = &rest[b + e + END.len()..];
    }
    out
}

/// An SMTP reply: code and text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
    fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
}

/// Our own SMTP session over plain TCP.
struct PlainSmtp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    timeout: Duration,
    pipelining: bool,
    auth: Vec<String>,
    broken: bool,
    /// A failed transaction left state on the server: send RSET first.
    needs_rset: bool,
    /// A message's data is out but not its end (see `stage_data`).
    staged: bool,
    line: String,
    buf: Vec<u8>,
}

impl PlainSmtp {
    fn new(stream: TcpStream, timeout: Duration) -> PlainSmtp {
        let (r, w) = stream.into_split();
        PlainSmtp {
            reader: BufReader::with_capacity(16 * 1024, r),
            writer: w,
            timeout,
            pipelining: false,
            auth: Vec::new(),
            broken: false,
            needs_rset: false,
            staged: false,
            line: String::new(),
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    fn lost(&mut self, what: String) -> SendError {
        self.broken = true;
        SendError::transient(what)
    }

    async fn read_reply(&mut self) -> Result<Reply, SendError> {
        let mut lines = Vec::new();
        loop {
            self.line.clear();
            let n = match tokio::time::timeout(self.timeout, self.reader.read_line(&mut self.line))
                .await
            {
                Err(_) => return Err(self.lost("timed out waiting for the SMTP server".into())),
                Ok(Err(e)) => return Err(self.lost(format!("connection lost: {e}"))),
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                return Err(self.lost("connection closed by the SMTP server".into()));
            }
            let l = self.line.trim_end_matches(['\r', '\n']);
            let code = l.get(..3).and_then(|c| c.parse::<u16>().ok());
            let Some(code) = code else {
                return Err(self.lost(format!("garbled SMTP reply {l:?}")));
            };
            lines.push(l.get(4..).unwrap_or("").to_string());
            if l.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code, lines });
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        match tokio::time::timeout(self.timeout, self.writer.write_all(bytes)).await {
            Err(_) => Err(self.lost("timed out writing to the SMTP server".into())),
            Ok(Err(e)) => Err(self.lost(format!("connection lost: {e}"))),
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn command(&mut self, line: &str) -> Result<Reply, SendError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.write(&bytes).await?;
        self.read_reply().await
    }

    async fn ehlo(&mut self, name: &str) -> Result<(), SendError> {
        let r = self.command(&format!("EHLO {name}")).await?;
        if r.code != 250 {
            let r = self.command(&format!("HELO {name}")).await?;
            if r.code != 250 {
                return Err(SendError::from_reply("HELO", &r));
            }
            return Ok(());
        }
        for l in r.lines.iter().skip(1) {
            let mut words = l.split_whitespace();
            match words.next().map(|w| w.to_ascii_uppercase()).as_deref() {
                Some("PIPELINING") => self.pipelining = true,
                Some("AUTH") => self.auth = words.map(|w| w.to_ascii_uppercase()).collect(),
                _ => {}
            }
        }
        Ok(())
    }

    async fn auth(&mut self, user: &str, pass: &str) -> Result<(), SendError> {
        let fail = |r: &Reply| {
            let mut e = SendError::from_reply("AUTH", r);
            if e.kind != ErrorKind::Transient {
                e.message
                    .push_str(" (check smtp.username and the password variable)");
            }
            e
        };
        if self.auth.iter().any(|m| m == "PLAIN") || self.auth.is_empty() {
            let creds = B64.encode(format!("\0{user}\0{pass}"));
            let r = self.command(&format!("AUTH PLAIN {creds}")).await?;
            if r.code != 235 {
                return Err(fail(&r));
            }
            return Ok(());
        }
        if self.auth.iter().any(|m| m == "LOGIN") {
            let r = self.command("AUTH LOGIN").await?;
            if r.code != 334 {
                return Err(fail(&r));
            }
            let r = self.command(&B64.encode(user)).await?;
            if r.code != 334 {
                return Err(fail(&r));
            }
            let r = self.command(&B64.encode(pass)).await?;
            if r.code != 235 {
                return Err(fail(&r));
            }
            return Ok(());
        }
        Err(SendError::permanent(format!(
            "the SMTP server offers no AUTH mechanism we speak (PLAIN, LOGIN): {:?}",
            self.auth
        )))
    }

    /// The envelope, then the data of `msg` without its end: the server holds
    /// the message and delivers nothing until [`PlainSmtp::end_data`]. A session
    /// that ends before that (closed, dropped, process killed) delivers nothing.
    async fn stage_data(&mut self, msg: &Outgoing) -> Result<(), SendError> {
        if self.staged {
            return Err(self.lost("a message is already staged on this connection".into()));
        }
        let rset = std::mem::take(&mut self.needs_rset);
        let mut head = String::with_capacity(128);
        if rset {
            head.push_str("RSET\r\n");
        }
        head.push_str(&format!(
            "MAIL FROM:<{}>\r\nRCPT TO:<{}>\r\n",
            msg.from, msg.to
        ));
        if self.pipelining {
            head.push_str("DATA\r\n");
            self.write(head.as_bytes()).await?;
            if rset {
                self.read_reply().await?;
            }
            let mail = self.read_reply().await?;
            let rcpt = self.read_reply().await?;
            let data = self.read_reply().await?;
            if !mail.is_positive() {
                self.abort_after_data(&data).await?;
                return Err(SendError::from_reply("MAIL", &mail));
            }
            if !rcpt.is_positive() {
                self.abort_after_data(&data).await?;
                return Err(SendError::from_reply("RCPT", &rcpt));
            }
            if data.code != 354 {
                self.needs_rset = true;
                return Err(SendError::from_reply("DATA", &data));
            }
        } else {
            if rset {
                self.command("RSET").await?;
            }
            let mail = self.command(&format!("MAIL FROM:<{}>", msg.from)).await?;
            if !mail.is_positive() {
                self.needs_rset = true;
                return Err(SendError::from_reply("MAIL", &mail));
            }
            let rcpt = self.command(&format!("RCPT TO:<{}>", msg.to)).await?;
            if !rcpt.is_positive() {
                self.needs_rset = true;
                return Err(SendError::from_reply("RCPT", &rcpt));
            }
            let data = self.command("DATA").await?;
            if data.code != 354 {
                self.needs_rset = true;
                return Err(SendError::from_reply("DATA", &data));
            }
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        dot_stuff_body_into(&msg.bytes, &mut buf);
        let written = self.write(&buf).await;
        self.buf = buf;
        written?;
        self.staged = true;
        Ok(())
    }

    /// Ends the staged data: the server's reply says whether it took the message.
    async fn end_data(&mut self) -> Result<(), SendError> {
        if !self.staged {
            return Err(self.lost("no message staged on this connection".into()));
        }
        self.staged = false;
        self.write(b".\r\n").await?;
        let done = self.read_reply().await?;
        if done.code != 250 {
            self.needs_rset = true;
            return Err(SendError::from_reply("DATA", &done));
        }
        Ok(())
    }

    /// The DATA of a pipelined batch whose MAIL or RCPT failed: if the server
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

/// Copies `msg` into `out` with SMTP dot-stuffing (RFC 5321 §4.5.2), CRLF line
/// ends, and the terminating `.` line.
pub fn dot_stuff_into(msg: &[u8], out: &mut Vec<u8>) {
    dot_stuff_body_into(msg, out);
    out.extend_from_slice(b".\r\n");
}

/// [`dot_stuff_into`] without the final `.` line: the data of a staged message.
fn dot_stuff_body_into(msg: &[u8], out: &mut Vec<u8>) {
    out.reserve(msg.len() + 16);
    // Only the line ends that need a change are visited: a vectorised search for
    // LF, then whole runs copied at once. A message without bare LFs and without
    // a line starting with "." (what the composer writes) is one copy.
    if msg.first() == Some(&b'.') {
        out.push(b'.');
    }
    let mut copied = 0;
    for nl in memchr::memchr_iter(b'\n', msg) {
        let bare = nl == 0 || msg[nl - 1] != b'\r';
        let dot = msg.get(nl + 1) == Some(&b'.');
        if bare || dot {
            out.extend_from_slice(&msg[copied..nl]);
            if bare {
                out.push(b'\r');
            }
            out.push(b'\n');
            if dot {
                out.push(b'.');
            }
            copied = nl + 1;
        }
    }
    out.extend_from_slice(&msg[copied..]);
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
}

impl Connection for PlainSmtp {
    fn send<'a>(&'a mut self, msg: &'a Outgoing) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            if self.broken {
                return Err(SendError::transient("connection already lost"));
            }
            self.stage_data(msg).await?;
            self.end_data().await
        })
    }

    fn stage<'a>(&'a mut self, msg: &'a Outgoing) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            if self.broken {
                return Err(SendError::transient("connection already lost"));
            }
            self.stage_data(msg).await
        })
    }

    fn finish<'a>(&'a mut self, msg: &'a Outgoing) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            if self.broken {
                return Err(SendError::transient("connection already lost"));
            }
            if !self.staged {
                self.stage_data(msg).await?;
            }
            self.end_data().await
        })
    }

    fn is_broken(&self) -> bool {
        self.broken
    }

    fn close(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if !self.broken {
                let _ = tokio::time::timeout(Duration::from_secs(2), self.command("QUIT")).await;
            }
        })
    }
}

/// lettre's connection, for the TLS modes.
struct LettreSmtp {
    conn: lettre::transport::smtp::client::AsyncSmtpConnection,
    broken: bool,
}

impl Connection for LettreSmtp {
    fn send<'a>(&'a mut self, msg: &'a Outgoing) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let from = msg
                .from
                .parse()
                .map_err(|e| SendError::permanent(format!("bad sender {}: {e}", msg.from)))?;
            let to = msg
                .to
                .parse()
                .map_err(|e| SendError::permanent(format!("bad recipient {}: {e}", msg.to)))?;
            let env = lettre::address::Envelope::new(Some(from), vec![to])
                .map_err(|e| SendError::permanent(format!("bad envelope: {e}")))?;
            match self.conn.send(&env, &msg.bytes).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    self.broken = self.conn.has_broken() || e.status().is_none();
                    // lettre does not say which command failed; a 550/551/553 before
                    // DATA is the recipient in practice (one recipient per message).
                    Err(lettre_error("RCPT", &e))
                }
            }
        })
    }

    fn is_broken(&self) -> bool {
        self.broken
    }

    fn close(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.quit()).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuffed(s: &str) -> String {
        let mut out = Vec::new();
        dot_stuff_into(s.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    /// The byte-at-a-time definition the line-wise copy must agree with.
    fn stuffed_bytewise(msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at_line_start = true;
        let mut prev = 0u8;
        for &b in msg {
            if b == b'\n' && prev != b'\r' {
                out.push(b'\r');
            }
            if at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            at_line_start = b == b'\n';
            prev = b;
        }
        if !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    #[test]
    fn dot_stuffing_line_by_line_matches_the_bytewise_definition() {
        for msg in [
            "",
            ".",
            "\n",
            "\r\n",
            "\r",
            ".\n.",
            "a\r\n.b\n..c\r\n",
            "x\r\r\n.\r",
            "\n\n.\n",
            "end.\r\n",
            "a\nb\r\n\r\n.\r\n",
        ] {
            let mut out = Vec::new();
            dot_stuff_into(msg.as_bytes(), &mut out);
            assert_eq!(out, stuffed_bytewise(msg.as_bytes()), "for {msg:?}");
        }
    }

    #[test]
    fn dot_stuffing_agrees_with_the_bytewise_definition_on_every_short_input() {
        // Every string of up to 6 bytes over ".", CR, LF and a letter.
        let alphabet = [b'.', b'\r', b'\n', b'a'];
        for len in 0..=6u32 {
            for mut n in 0..4usize.pow(len) {
                let mut msg = Vec::new();
                for _ in 0..len {
                    msg.push(alphabet[n % 4]);
                    n /= 4;
                }
                let mut out = Vec::new();
                dot_stuff_into(&msg, &mut out);
                assert_eq!(out, stuffed_bytewise(&msg), "for {msg:?}");
            }
        }
    }

    #[test]
    fn lines_starting_with_a_dot_are_doubled_and_the_end_marker_added() {
        assert_eq!(stuffed("a\r\n.b\r\n..\r\n"), "a\r\n..b\r\n...\r\n.\r\n");
        assert_eq!(stuffed(".first"), "..first\r\n.\r\n");
        assert_eq!(stuffed("bare\nlf\n.x"), "bare\r\nlf\r\n..x\r\n.\r\n");
    }

    #[test]
    fn replies_are_classified_for_the_retry_decision() {
        let r = |code| Reply {
            code,
            lines: vec!["x".into()],
        };
        assert!(SendError::from_reply("DATA", &r(451)).is_transient());
        assert!(SendError::from_reply("RCPT", &r(450)).is_transient());
        let e = SendError::from_reply("RCPT", &r(550));
        assert!(e.is_permanent() && e.is_hard_bounce());
        assert!(SendError::from_reply("RCPT", &r(553)).is_hard_bounce());
        assert!(SendError::from_reply("RCPT", &r(551)).is_hard_bounce());
        let e = SendError::from_reply("RCPT", &r(552));
        assert!(e.is_permanent() && !e.is_hard_bounce());
        let e = SendError::from_reply("DATA", &r(550));
        assert!(e.is_permanent() && !e.is_hard_bounce());
        assert_eq!(e.code, Some(550));
        assert!(SendError::transient("connection lost").is_transient());
    }
}
