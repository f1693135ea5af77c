//! One subscriber's message: headers (From, To, Subject, Date, Message-ID, the
//! List-* headers of RFC 2369, 2919 and 8058), multipart/alternative text + HTML
//! in quoted-printable (no line over 76 columns), optional DKIM signature.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use base64::Engine;
use chrono::{DateTime, Utc};
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::Message;
use rand::RngCore;
use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
use rsa::pkcs8::DecodePrivateKey;
use rsa::RsaPrivateKey;

use crate::config::Config;
use crate::render::RenderedEmail;

/// A message ready for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Message-ID without the angle brackets.
    pub message_id: String,
    /// Envelope sender (the `From` address).
    pub from: String,
    /// Envelope recipient.
    pub to: String,
    /// The whole message, CRLF line endings, ASCII only.
    pub bytes: Vec<u8>,
}

/// What stays the same for every message of a list; built once per run.
pub struct MessageFactory {
    from: Mailbox,
    reply_to: Option<Mailbox>,
    /// Domain of the `From` address (Message-ID, default unsubscribe mailto).
    domain: String,
    list_id: String,
    base_url: String,
    unsubscribe_mailto: String,
    dkim: Option<DkimConfig>,
}

impl std::fmt::Debug for MessageFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageFactory")
            .field("from", &self.from.to_string())
            .field("list_id", &self.list_id)
            .field("dkim", &self.dkim.is_some())
            .finish()
    }
}

/// The header fields the DKIM signature covers (`h=`): what a forwarder must not
/// change, the List-* headers included so that nobody can swap the unsubscribe link.
/// A field the message lacks (Reply-To without `[sender] reply_to`) is signed as
/// empty (RFC 6376 5.4), so it cannot be added later either. Not Content-Type:
/// lettre writes a multipart message's Content-Type with the body, after the
/// signature, so its signer would hash it as absent and every verifier would fail.
pub const SIGNED_HEADERS: [&str; 10] = [
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Message-ID",
    "MIME-Version",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// Reads the `[dkim] private_key_path` file: an RSA key in PEM (PKCS#1 `BEGIN RSA
/// PRIVATE KEY` or PKCS#8 `BEGIN PRIVATE KEY`, as `openssl genrsa` writes), or an
/// Ed25519 key (RFC 8463) in PKCS#8 PEM or as base64 of its 32 secret bytes.
/// Called once, when the run starts.
pub fn load_dkim_key(path: &Path) -> Result<DkimSigningKey> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "[dkim] private_key_path: cannot read the DKIM key file {shown}: {e}. \
             Point private_key_path at a PEM RSA private key (relative paths start at the config file's folder)."
        )
    })?;
    let pem = text.trim();
    let rsa_pkcs1 = if pem.starts_with("-----BEGIN PRIVATE KEY-----") {
        match ed25519_seed_of_pkcs8(pem) {
            // lettre takes an Ed25519 key as the base64 of its 32 secret bytes.
            Some(seed) => Ok(base64::engine::general_purpose::STANDARD.encode(seed)),
            None => RsaPrivateKey::from_pkcs8_pem(pem)
                .map_err(|e| e.to_string())
                .and_then(|k| k.to_pkcs1_pem(LineEnding::LF).map_err(|e| e.to_string()))
                .map(|p| p.to_string()),
        }
    } else {
        Ok(pem.to_string())
    };
    let parsed = match rsa_pkcs1 {
        Ok(p) if p.starts_with("-----BEGIN") => {
            DkimSigningKey::new(&p, DkimSigningAlgorithm::Rsa).map_err(|e| e.to_string())
        }
        Ok(p) => DkimSigningKey::new(&p, DkimSigningAlgorithm::Ed25519).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    parsed.map_err(|e| {
        anyhow::anyhow!(
            "[dkim] private_key_path: the DKIM key file {shown} holds no usable key ({e}). \
             It must be a PEM private key, RSA (e.g. from `openssl genrsa -out dkim.pem 2048`) \
             or Ed25519 (`openssl genpkey -algorithm ed25519 -out dkim.pem`)."
        )
    })
}

/// The 32 secret bytes of an Ed25519 key in PKCS#8 PEM (RFC 8410, what
/// `openssl genpkey -algorithm ed25519` writes), or `None` for any other key.
fn ed25519_seed_of_pkcs8(pem: &str) -> Option<[u8; 32]> {
    /// SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    let seed = der.strip_prefix(&PREFIX[..])?;
    seed.try_into().ok()
}

/// `List-Id: Name <id>`: the phrase quoted when it holds anything but atoms.
fn list_id_value(name: &str, id: &str) -> String {
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~ ".contains(c);
    let name = name.trim();
    if name.chars().all(atext) || !name.is_ascii() {
        format!("{name} <{id}>")
    } else {
        let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{quoted}\" <{id}>")
    }
}

fn header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

fn system_time(t: DateTime<Utc>) -> SystemTime {
    let secs = t.timestamp().max(0) as u64;
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

impl MessageFactory {
    /// Reads `[sender]`, `[newsletter]` and `[dkim]` (the key file is read here).
    pub fn from_config(cfg: &Config) -> Result<MessageFactory> {
        let from: Mailbox = cfg
            .sender
            .from
            .parse()
            .with_context(|| format!("sender.from {:?} is not a mailbox", cfg.sender.from))?;
        let reply_to = match &cfg.sender.reply_to {
            Some(r) => Some(
                r.parse::<Mailbox>()
                    .with_context(|| format!("sender.reply_to {r:?} is not a mailbox"))?,
            ),
            None => None,
        };
        let domain = from.email.domain().to_string();
        let unsubscribe_mailto = cfg
            .sender
            .unsubscribe_mailto
            .clone()
            .unwrap_or_else(|| format!("unsubscribe@{domain}"));
        let dkim = match &cfg.dkim {
            Some(d) => {
                let key = load_dkim_key(&cfg.resolve(&d.private_key_path))?;
                let signed = SIGNED_HEADERS
                    .into_iter()
                    .map(HeaderName::new_from_ascii_str)
                    .collect();
                Some(DkimConfig::new(
                    d.selector.clone(),
                    d.domain.clone(),
                    key,
                    signed,
                    DkimCanonicalization {
                        header: DkimCanonicalizationType::Relaxed,
                        body: DkimCanonicalizationType::Relaxed,
                    },
                ))
            }
            None => None,
        };
        Ok(MessageFactory {
            from,
            reply_to,
            domain,
            list_id: list_id_value(&cfg.newsletter.name, &cfg.list_id()),
            base_url: cfg.newsletter.base_url.trimmed().to_string(),
            unsubscribe_mailto,
            dkim,
        })
    }

    /// `{base_url}/unsubscribe?token=…`: the link in the bodies and List-Unsubscribe.
    pub fn unsubscribe_url(&self, token: &str) -> String {
        format!("{}/unsubscribe?token={token}", self.base_url)
    }

    /// The envelope sender.
    pub fn from_address(&self) -> String {
        self.from.email.to_string()
    }

    /// A fresh `random@domain` Message-ID (without brackets).
    pub fn new_message_id(&self) -> String {
        let mut bytes = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut bytes);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}@{}", self.domain)
    }

    /// Builds the message to `to` (with the display `name` when known).
    pub fn build(
        &self,
        to: &str,
        name: Option<&str>,
        email: &RenderedEmail,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Outgoing> {
        let address = to
            .parse::<lettre::Address>()
            .with_context(|| format!("{to:?} is not a valid address"))?;
        let to_box = Mailbox::new(name.map(|n| n.trim().to_string()), address);
        let message_id = self.new_message_id();
        let mut b = Message::builder()
            .from(self.from.clone())
            .to(to_box)
            .subject(email.subject.clone())
            .date(system_time(now))
            .message_id(Some(format!("<{message_id}>")))
            .raw_header(header("List-Id", self.list_id.clone()))
            .raw_header(header(
                "List-Unsubscribe",
                format!(
                    "<{}>, <mailto:{}?subject=unsubscribe%20{token}>",
                    self.unsubscribe_url(token),
                    self.unsubscribe_mailto
                ),
            ))
            .raw_header(header(
                "List-Unsubscribe-Post",
                "List-Unsubscribe=One-Click".into(),
            ));
        if let Some(r) = &self.reply_to {
            b = b.reply_to(r.clone());
        }
        let part = |ct: ContentType, body: &str| {
            let body =
                Body::new_with_encoding(body.to_string(), ContentTransferEncoding::QuotedPrintable)
                    .expect("quoted-printable can encode any text");
            SinglePart::builder().header(ct).body(body)
        };
        let mut msg = b
            .multipart(
                MultiPart::alternative()
                    .singlepart(part(ContentType::TEXT_PLAIN, &email.text))
                    .singlepart(part(ContentType::TEXT_HTML, &email.html)),
            )
            .context("cannot build the message")?;
        if let Some(dkim) = &self.dkim {
            msg.sign(dkim);
        }
        Ok(Outgoing {
            message_id,
            from: self.from_address(),
            to: to.to_string(),
            bytes: msg.formatted(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use mail_parser::{MessageParser, MimeHeaders};

    const CONFIG: &str = r#"
[newsletter]
name = "L'Essentiel"
timezone = "Europe/Paris"
base_url = "https://news.example.com/digestif/"

[sender]
from = "L'Essentiel <briefing@news.example.com>"
reply_to = "Rédaction <redaction@news.example.com>"
"#;

    fn email() -> RenderedEmail {
        let long_line = "mot ".repeat(400);
        RenderedEmail {
            subject: "L'Essentiel · vendredi 27 novembre · Budget : ce qui change".into(),
            preheader: "≈ 5 min".into(),
            html: format!(
                "<html lang=\"fr\"><body><p>{long_line}</p>\n<p>.point</p><a href=\"https://news.example.com/digestif/unsubscribe?token=TOK\">Se désabonner</a></body></html>"
            ),
            text: "Bonjour Jean,\n\nÉdition du jour.\n.ligne qui commence par un point\n\nSe désabonner : https://news.example.com/digestif/unsubscribe?token=TOK\n".into(),
        }
    }

    fn factory(cfg: &str) -> MessageFactory {
        MessageFactory::from_config(&Config::parse(cfg, Path::new(".")).unwrap()).unwrap()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap()
    }

    #[test]
    fn message_carries_every_header_a_mailbox_provider_wants() {
        let f = factory(CONFIG);
        let out = f
            .build(
                "jean@example.com",
                Some("Jean Dupont"),
                &email(),
                "TOK",
                now(),
            )
            .unwrap();
        let raw = String::from_utf8(out.bytes.clone()).unwrap();
        assert!(raw.is_ascii());
        let m = MessageParser::default().parse(&out.bytes).unwrap();
        assert_eq!(
            m.from().unwrap().first().unwrap().address(),
            Some("briefing@news.example.com")
        );
        assert_eq!(
            m.reply_to().unwrap().first().unwrap().address(),
            Some("redaction@news.example.com")
        );
        let to = m.to().unwrap().first().unwrap();
        assert_eq!(to.address(), Some("jean@example.com"));
        assert_eq!(to.name(), Some("Jean Dupont"));
        assert_eq!(
            m.subject(),
            Some("L'Essentiel · vendredi 27 novembre · Budget : ce qui change")
        );
        assert_eq!(m.date().unwrap().to_timestamp(), now().timestamp());
        assert_eq!(m.message_id(), Some(out.message_id.as_str()));
        assert!(out.message_id.ends_with("@news.example.com"));
        let h = |n: &str| {
            m.header_raw(n)
                .unwrap_or_else(|| panic!("no {n}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(h("List-Id"), "L'Essentiel <l-essentiel.news.example.com>");
        assert_eq!(
            h("List-Unsubscribe"),
            "<https://news.example.com/digestif/unsubscribe?token=TOK>, <mailto:unsubscribe@news.example.com?subject=unsubscribe%20TOK>"
        );
        assert_eq!(h("List-Unsubscribe-Post"), "List-Unsubscribe=One-Click");
        assert_eq!(out.from, "briefing@news.example.com");
        assert_eq!(out.to, "jean@example.com");
    }

    #[test]
    fn body_is_multipart_alternative_text_first_and_no_line_exceeds_998() {
        let f = factory(CONFIG);
        let out = f
            .build("jean@example.com", None, &email(), "TOK", now())
            .unwrap();
        let raw = String::from_utf8(out.bytes.clone()).unwrap();
        assert!(raw.split("\r\n").all(|l| l.len() <= 998));
        let m = MessageParser::default().parse(&out.bytes).unwrap();
        let ct = m.content_type().unwrap();
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("alternative"));
        assert_eq!(m.text_body.len(), 1);
        assert_eq!(m.html_body.len(), 1);
        assert!(m.text_body[0] < m.html_body[0], "text part comes first");
        let text = m.body_text(0).unwrap();
        assert!(text.contains("Édition du jour."));
        assert!(text.contains("\n.ligne qui commence par un point"));
        let html = m.body_html(0).unwrap();
        assert!(html.contains(&"mot ".repeat(400)));
    }

    #[test]
    fn unsubscribe_mailto_can_be_configured_and_the_url_has_no_double_slash() {
        let cfg = format!("{CONFIG}unsubscribe_mailto = \"leave@lists.example.com\"\n");
        let f = factory(&cfg);
        assert_eq!(
            f.unsubscribe_url("abc"),
            "https://news.example.com/digestif/unsubscribe?token=abc"
        );
        let out = f
            .build("jean@example.com", None, &email(), "abc", now())
            .unwrap();
        let m = MessageParser::default().parse(&out.bytes).unwrap();
        assert!(m
            .header_raw("List-Unsubscribe")
            .unwrap()
            .contains("mailto:leave@lists.example.com?subject=unsubscribe%20abc"));
    }

    #[test]
    fn list_id_phrase_is_quoted_when_it_holds_specials() {
        assert_eq!(list_id_value("Le Matin", "x.y"), "Le Matin <x.y>");
        assert_eq!(list_id_value("News, Daily", "x.y"), "\"News, Daily\" <x.y>");
    }

    #[test]
    fn each_message_gets_its_own_message_id() {
        let f = factory(CONFIG);
        let a = f
            .build("a@example.com", None, &email(), "T", now())
            .unwrap();
        let b = f
            .build("a@example.com", None, &email(), "T", now())
            .unwrap();
        assert_ne!(a.message_id, b.message_id);
    }

    #[test]
    fn a_bad_recipient_is_an_error_not_a_panic() {
        let f = factory(CONFIG);
        assert!(f
            .build("not an address", None, &email(), "T", now())
            .is_err());
    }
}
