//! Where messages go: SMTP or a folder of `.eml` files, behind one small trait.
//!
//! SMTP is our own client on tokio and rustls ([`smtp`]): one session engine for
//! plain SMTP, STARTTLS and implicit TLS, pipelined across messages, every reply
//! judged by the command it answers ([`reply`]). lettre builds and signs the
//! messages; its SMTP client is not used (it waits on Nagle's algorithm over TLS,
//! does not pipeline across messages and cannot stage a message before its end).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::config::{Config, Smtp, TlsMode, TransportKind};

use super::message::Outgoing;

pub mod reply;
pub mod smtp;
pub mod tls;

pub use reply::{ErrorKind, Reply, SendError, Stage};
pub use smtp::{SmtpSettings, SmtpTransport};

/// What [`Connection::stage_next`] did: the end of the message staged before it
/// (if there was one), and the staging of the new one.
#[derive(Debug)]
pub struct Staged {
    /// The outcome of the message that was staged before, now ended; None if
    /// nothing was staged.
    pub previous: Option<Result<(), SendError>>,
    /// Ok: the new message is staged (the server holds it, undelivered, until
    /// its end is sent by the next `stage_next` or by `finish`).
    pub this: Result<(), SendError>,
}

/// One open channel to the destination (an SMTP session, a folder). Each send
/// worker owns one.
///
/// A message goes out in two steps: [`Connection::stage_next`] does everything
/// for it that can be done without delivering it (for SMTP: the envelope, up to
/// the server's `354`); the send loop then marks its ledger row `sending`, and
/// the next `stage_next` (or [`Connection::finish`]) delivers it (for SMTP: its
/// data and final `.`, in the same write as the next envelope). A connection
/// dropped between the two delivers nothing.
pub trait Connection: Send {
    /// Ends the staged message, if any, and stages `msg`, in as few round trips
    /// as the destination allows (over SMTP with PIPELINING: one).
    fn stage_next<'a>(&'a mut self, msg: &'a Outgoing) -> BoxFuture<'a, Staged>;
    /// Ends the staged message: delivered once this returns Ok.
    fn finish(&mut self) -> BoxFuture<'_, Result<(), SendError>>;
    /// After an error: whether this connection can still be used.
    fn is_broken(&self) -> bool;
    /// Ends the session politely (QUIT); a staged message is dropped undelivered.
    fn close(self: Box<Self>) -> BoxFuture<'static, ()>;
}

impl dyn Connection {
    /// Stages and ends `msg` at once (test copies, confirmation mails).
    pub async fn send(&mut self, msg: &Outgoing) -> Result<(), SendError> {
        let staged = self.stage_next(msg).await;
        if let Some(Err(e)) = staged.previous {
            tracing::warn!(error = %e, "a message staged earlier on this connection failed");
        }
        staged.this?;
        self.finish().await
    }
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
            let pem = match &cfg.smtp.ca_file {
                Some(file) => {
                    let path = cfg.resolve(file);
                    let pem = std::fs::read(&path).map_err(|e| {
                        anyhow::anyhow!("smtp.ca_file: cannot read {}: {e}", path.display())
                    })?;
                    Some((path, pem))
                }
                None => None,
            };
            let mut t = SmtpTransport::from_smtp(
                &cfg.smtp,
                password,
                pem.as_ref().map(|(_, pem)| pem.as_slice()),
            )
            .map_err(|e| match &pem {
                Some((path, _)) if e.is_about_the_ca_file() => {
                    anyhow::anyhow!("{e} ({})", path.display())
                }
                _ => anyhow::Error::new(e),
            })?;
            t.set_helo_name(helo_name(cfg));
            Ok(Arc::new(t))
        }
    }
}

/// Why an SMTP transport cannot be set up from `[smtp]`.
#[derive(Debug, thiserror::Error)]
pub enum SmtpSetupError {
    /// `smtp.ca_file` holds no certificate that can be read.
    #[error("smtp.ca_file: {0}")]
    CaFile(tls::PemError),
    #[error(transparent)]
    Tls(tls::TlsSetupError),
}

impl SmtpSetupError {
    /// Whether the fault is in the file `smtp.ca_file` names (the caller adds its path).
    pub fn is_about_the_ca_file(&self) -> bool {
        matches!(
            self,
            SmtpSetupError::CaFile(_)
                | SmtpSetupError::Tls(tls::TlsSetupError::CertificateRefused { .. })
        )
    }
}

impl SmtpTransport {
    /// The transport `smtp` describes, trusting the certificates of `extra_pem`
    /// (the contents of `smtp.ca_file`) besides the system's.
    pub fn from_smtp(
        smtp: &Smtp,
        password: Option<String>,
        extra_pem: Option<&[u8]>,
    ) -> Result<SmtpTransport, SmtpSetupError> {
        let extra = match extra_pem {
            Some(pem) => tls::pem_certificates(pem).map_err(SmtpSetupError::CaFile)?,
            None => Vec::new(),
        };
        let tls_config = match smtp.tls {
            TlsMode::None => None,
            TlsMode::Starttls | TlsMode::Tls => {
                Some(tls::client_config(&extra, tls::Peer::Smtp).map_err(SmtpSetupError::Tls)?)
            }
        };
        Ok(SmtpTransport::new(SmtpSettings {
            host: smtp.host.clone(),
            port: smtp.port,
            tls: smtp.tls,
            username: smtp.username.clone(),
            password,
            allow_plaintext_auth: smtp.allow_plaintext_auth,
            timeout: Duration::from_secs(smtp.timeout_s.max(1)),
            helo_name: smtp
                .helo_name
                .clone()
                .unwrap_or_else(|| pick_helo_name(&machine_name(), "")),
            tls_config,
        }))
    }
}

fn machine_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// The EHLO name: `[smtp] helo_name`, else this machine's name when it is fully
/// qualified, else the sender's domain. Never `localhost`: many relays score a
/// client that greets as localhost as spam.
pub fn helo_name(cfg: &Config) -> String {
    if let Some(name) = &cfg.smtp.helo_name {
        return name.clone();
    }
    let host = machine_name();
    let sender_domain = cfg
        .sender
        .from
        .parse::<lettre::message::Mailbox>()
        .map(|m| m.email.domain().to_string())
        .unwrap_or_default();
    pick_helo_name(&host, &sender_domain)
}

fn pick_helo_name(host: &str, sender_domain: &str) -> String {
    let usable = |n: &str| {
        n.contains('.')
            && !n.eq_ignore_ascii_case("localhost")
            && !n.to_ascii_lowercase().starts_with("localhost.")
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    if usable(host) {
        host.to_string()
    } else if usable(sender_domain) {
        sender_domain.to_string()
    } else {
        // An address literal is always acceptable (RFC 5321 §4.1.3).
        "[127.0.0.1]".to_string()
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
    /// Written to a temporary name, renamed into place at its end.
    staged: Option<(PathBuf, PathBuf)>,
}

impl Transport for FileTransport {
    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, SendError>> {
        Box::pin(async move {
            tokio::fs::create_dir_all(&self.dir).await.map_err(|e| {
                SendError::permanent(format!("cannot create {}: {e}", self.dir.display()))
            })?;
            Ok(Box::new(FileConnection {
                dir: self.dir.clone(),
                staged: None,
            }) as Box<dyn Connection>)
        })
    }

    fn describe(&self) -> String {
        format!("file://{}", self.dir.display())
    }
}

impl FileConnection {
    async fn end(&mut self) -> Result<(), SendError> {
        let Some((tmp, path)) = self.staged.take() else {
            return Err(SendError::transient("no message staged"));
        };
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| SendError::transient(format!("cannot write {}: {e}", path.display())))
    }
}

impl Connection for FileConnection {
    fn stage_next<'a>(&'a mut self, msg: &'a Outgoing) -> BoxFuture<'a, Staged> {
        Box::pin(async move {
            let previous = if self.staged.is_some() {
                Some(self.end().await)
            } else {
                None
            };
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
            let this = tokio::fs::write(&tmp, &msg.bytes)
                .await
                .map_err(|e| SendError::transient(format!("cannot write {}: {e}", tmp.display())));
            if this.is_ok() {
                self.staged = Some((tmp, path));
            }
            Staged { previous, this }
        })
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<(), SendError>> {
        Box::pin(self.end())
    }

    fn is_broken(&self) -> bool {
        false
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Some((tmp, _)) = self.staged {
                let _ = tokio::fs::remove_file(tmp).await;
            }
        })
    }
}

// ---------------------------------------------------------------- dot-stuffing

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_a_certificate_is_a_ca_file_error_named_by_its_key() {
        let Err(e) = SmtpTransport::from_smtp(&Smtp::default(), None, Some(b"no cert")) else {
            panic!("a CA file without a certificate was taken");
        };
        assert!(
            matches!(e, SmtpSetupError::CaFile(tls::PemError::NoCertificate)),
            "{e:?}"
        );
        assert!(e.is_about_the_ca_file());
        assert_eq!(
            e.to_string(),
            "smtp.ca_file: no PEM certificate (-----BEGIN CERTIFICATE-----) in it"
        );
        let no_roots = SmtpSetupError::Tls(tls::TlsSetupError::NoRoots {
            peer: tls::Peer::Smtp,
        });
        assert!(!no_roots.is_about_the_ca_file());
    }

    #[test]
    fn the_ehlo_name_is_never_localhost() {
        assert_eq!(
            pick_helo_name("mail.example.org", "news.example.com"),
            "mail.example.org"
        );
        assert_eq!(
            pick_helo_name("box", "news.example.com"),
            "news.example.com"
        );
        assert_eq!(
            pick_helo_name("localhost", "news.example.com"),
            "news.example.com"
        );
        assert_eq!(
            pick_helo_name("localhost.localdomain", "example.com"),
            "example.com"
        );
        assert_eq!(pick_helo_name("box", "localhost"), "[127.0.0.1]");
    }

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
}
