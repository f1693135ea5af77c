//! A bounce mailbox read over IMAP (`[bounces] mailbox`): every message of the
//! folder is fetched, handed to the caller, and deleted once it has been read, so
//! that the mailbox only ever holds what is still to read. [`MailboxUrl`] and the
//! connection ([`open`]) are shared with [`super::pop3`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures::TryStreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// How long connecting and each exchange may take.
pub(super) const TIMEOUT: Duration = Duration::from_secs(60);

/// How the mailbox is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Imap,
    Pop3,
}

/// `imaps://user@host[:port][/folder]` or `pop3s://user@host[:port]` (or `imap://`,
/// `pop3://` on a trusted network), checked when the config is read. The user may be
/// percent-encoded (`bounces%40example.com`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct MailboxUrl {
    url: String,
    pub protocol: Protocol,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The IMAP folder (POP3 has only the inbox: `INBOX`).
    pub folder: String,
}

/// Why `[bounces] mailbox` cannot be read: the value as written, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bounces.mailbox {url:?} {problem}: write it as \"imaps://user@imap.example.com/INBOX\" \
     or \"pop3s://user@pop.example.com\""
)]
pub struct MailboxUrlError {
    pub url: String,
    pub problem: MailboxUrlProblem,
}

/// What is wrong with a `[bounces] mailbox` URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailboxUrlProblem {
    #[error("{0}")]
    Unparsable(url::ParseError),
    #[error("is not an imaps://, imap://, pop3s:// or pop3:// URL")]
    Scheme,
    #[error("has no host")]
    NoHost,
    #[error("names no user")]
    NoUser,
    #[error("holds a password: put it in the variable named by bounces.mailbox_password_env")]
    Password,
    #[error("names a folder, and POP3 reads only the inbox")]
    Pop3Folder,
}

impl TryFrom<String> for MailboxUrl {
    type Error = MailboxUrlError;
    fn try_from(s: String) -> Result<MailboxUrl, MailboxUrlError> {
        let bad = |problem: MailboxUrlProblem| MailboxUrlError {
            url: s.clone(),
            problem,
        };
        let u = url::Url::parse(&s).map_err(|e| bad(MailboxUrlProblem::Unparsable(e)))?;
        let (protocol, tls, port) = match u.scheme() {
            "imaps" => (Protocol::Imap, true, 993),
            "imap" => (Protocol::Imap, false, 143),
            "pop3s" => (Protocol::Pop3, true, 995),
            "pop3" => (Protocol::Pop3, false, 110),
            _ => return Err(bad(MailboxUrlProblem::Scheme)),
        };
        let host = u
            .host_str()
            .ok_or_else(|| bad(MailboxUrlProblem::NoHost))?
            .to_string();
        let user = url::form_urlencoded::parse(format!("u={}", u.username()).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if user.is_empty() {
            return Err(bad(MailboxUrlProblem::NoUser));
        }
        if u.password().is_some() {
            return Err(bad(MailboxUrlProblem::Password));
        }
        let folder = u.path().trim_start_matches('/');
        if protocol == Protocol::Pop3 && !folder.is_empty() {
            return Err(bad(MailboxUrlProblem::Pop3Folder));
        }
        Ok(MailboxUrl {
            url: s.clone(),
            protocol,
            tls,
            port: u.port().unwrap_or(port),
            host,
            user,
            folder: if folder.is_empty() {
                "INBOX".into()
            } else {
                folder.to_string()
            },
        })
    }
}

impl From<MailboxUrl> for String {
    fn from(m: MailboxUrl) -> String {
        m.url
    }
}

impl MailboxUrl {
    /// For logs and event sources: `imap:user@host/folder`, `pop3:user@host`.
    pub fn describe(&self) -> String {
        match self.protocol {
            Protocol::Imap => format!("imap:{}@{}/{}", self.user, self.host, self.folder),
            Protocol::Pop3 => format!("pop3:{}@{}", self.user, self.host),
        }
    }
}

/// A connection to the mailbox's server, in clear or TLS.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Stream for T {}

/// Connects to the mailbox's server, with TLS (`tls`, checked against its roots)
/// for `imaps://` and `pop3s://`.
pub(super) async fn open(
    mailbox: &MailboxUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Box<dyn Stream>> {
    let addr = (mailbox.host.as_str(), mailbox.port);
    let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("{}: no connection within 60 s", mailbox.describe()))?
        .with_context(|| format!("cannot connect to {}", mailbox.describe()))?;
    if !mailbox.tls {
        return Ok(Box::new(tcp));
    }
    let config = tls.ok_or_else(|| anyhow!("no TLS configuration for {}", mailbox.describe()))?;
    let name = rustls::pki_types::ServerName::try_from(mailbox.host.clone())
        .map_err(|e| anyhow!("{}: {e}", mailbox.describe()))?;
    let stream = tokio::time::timeout(
        TIMEOUT,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| anyhow!("{}: no TLS handshake within 60 s", mailbox.describe()))?
    .with_context(|| format!("TLS with {}", mailbox.describe()))?;
    Ok(Box::new(stream))
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
    connect(mailbox, password, tls, Some(handle)).await
}

/// Connects, logs in and opens the folder, reading nothing (what `check` tries).
/// Returns how many messages wait there.
pub async fn probe(
    mailbox: &MailboxUrl,
    password: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<u64> {
    connect(mailbox, password, tls, None::<fn(&[u8], &str) -> bool>).await
}

async fn connect(
    mailbox: &MailboxUrl,
    password: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    handle: Option<impl FnMut(&[u8], &str) -> bool>,
) -> Result<u64> {
    let stream = open(mailbox, tls).await?;
    session(mailbox, password, stream, handle).await
}

async fn session<T>(
    mailbox: &MailboxUrl,
    password: &str,
    stream: T,
    handle: Option<impl FnMut(&[u8], &str) -> bool>,
) -> Result<u64>
where
    T: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    let at = mailbox.describe();
    let mut client = async_imap::Client::new(stream);
    match tokio::time::timeout(TIMEOUT, client.read_response()).await {
        Ok(Some(Ok(_))) => {}
        _ => bail!("{at}: no IMAP greeting"),
    }
    let mut s = client
        .login(&mailbox.user, password)
        .await
        .map_err(|(e, _)| anyhow!("{at}: login refused: {e}"))?;
    let folder = s
        .select(&mailbox.folder)
        .await
        .with_context(|| format!("{at}: cannot open the folder"))?;
    let Some(mut handle) = handle else {
        let _ = s.logout().await;
        return Ok(u64::from(folder.exists));
    };
    let mut uids: Vec<u32> = s
        .uid_search("ALL")
        .await
        .with_context(|| format!("{at}: SEARCH failed"))?
        .into_iter()
        .collect();
    uids.sort_unstable();
    let mut read = 0;
    let mut deleted = 0;
    for uid in uids {
        let fetches: Vec<_> = s
            .uid_fetch(uid.to_string(), "BODY.PEEK[]")
            .await
            .with_context(|| format!("{at}: FETCH {uid} failed"))?
            .try_collect()
            .await
            .with_context(|| format!("{at}: FETCH {uid} failed"))?;
        let Some(body) = fetches.iter().find_map(|f| f.body()) else {
            continue;
        };
        read += 1;
        if handle(body, &format!("{at}#{uid}")) {
            let _: Vec<_> = s
                .uid_store(uid.to_string(), "+FLAGS.SILENT (\\Deleted)")
                .await
                .with_context(|| format!("{at}: STORE {uid} failed"))?
                .try_collect()
                .await
                .with_context(|| format!("{at}: STORE {uid} failed"))?;
            deleted += 1;
        }
    }
    if deleted > 0 {
        let _: Vec<_> = s
            .expunge()
            .await
            .with_context(|| format!("{at}: EXPUNGE failed"))?
            .try_collect()
            .await
            .with_context(|| format!("{at}: EXPUNGE failed"))?;
    }
    let _ = s.logout().await;
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mailbox_url_is_read_with_its_defaults() {
        let m =
            MailboxUrl::try_from("imaps://bounces%40news.example.com@mail.example.com".to_string())
                .unwrap();
        assert_eq!(
            (
                m.tls,
                m.host.as_str(),
                m.port,
                m.user.as_str(),
                m.folder.as_str()
            ),
            (
                true,
                "mail.example.com",
                993,
                "bounces@news.example.com",
                "INBOX"
            )
        );
        let m = MailboxUrl::try_from("imap://b@127.0.0.1:1143/Bounces".to_string()).unwrap();
        assert_eq!((m.tls, m.port, m.folder.as_str()), (false, 1143, "Bounces"));
        let m = MailboxUrl::try_from("pop3s://b@pop.example.com".to_string()).unwrap();
        assert_eq!(
            (m.protocol, m.tls, m.port, m.describe().as_str()),
            (Protocol::Pop3, true, 995, "pop3:b@pop.example.com")
        );
        let m = MailboxUrl::try_from("pop3://b@127.0.0.1:1110".to_string()).unwrap();
        assert_eq!((m.protocol, m.tls, m.port), (Protocol::Pop3, false, 1110));
        for bad in [
            "https://b@mail.example.com",
            "pop3s://b@pop.example.com/Bounces",
            "imaps://mail.example.com",
            "imaps://b:secret@mail.example.com",
        ] {
            assert!(MailboxUrl::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_mailbox_url_gives_the_problem_it_has_and_the_shape_to_write() {
        let problem = |url: &str| MailboxUrl::try_from(url.to_string()).unwrap_err().problem;
        assert_eq!(
            problem("mail.example.com"),
            MailboxUrlProblem::Unparsable(url::ParseError::RelativeUrlWithoutBase)
        );
        assert_eq!(
            problem("https://b@mail.example.com"),
            MailboxUrlProblem::Scheme
        );
        assert_eq!(problem("imaps://"), MailboxUrlProblem::NoHost);
        assert_eq!(
            problem("imaps://mail.example.com"),
            MailboxUrlProblem::NoUser
        );
        assert_eq!(
            problem("imaps://b:secret@mail.example.com"),
            MailboxUrlProblem::Password
        );
        assert_eq!(
            problem("pop3s://b@pop.example.com/Bounces"),
            MailboxUrlProblem::Pop3Folder
        );
        let e = MailboxUrl::try_from("imaps://b:secret@mail.example.com".to_string())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "bounces.mailbox \"imaps://b:secret@mail.example.com\" holds a password: put it \
                 in the variable named by bounces.mailbox_password_env: write it as"
            ),
            "{e}"
        );
    }
}
