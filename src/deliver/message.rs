//! One subscriber's message: headers (From, To, Subject, Date, Message-ID, the
//! List-* headers of RFC 2369, 2919 and 8058), multipart/alternative text + HTML
//! in quoted-printable (no line over 76 columns), optional DKIM signature.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::Message;
use rand::RngCore;

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
                let path = cfg.resolve(&d.private_key_path);
                let pem = std::fs::read_to_string(&path).with_context(|| {
                    format!(
                        "cannot read the DKIM key {} (dkim.private_key_path)",
                        path.display()
                    )
                })?;
                let key = DkimSigningKey::new(&pem, DkimSigningAlgorithm::Rsa)
                    .or_else(|_| DkimSigningKey::new(pem.trim(), DkimSigningAlgorithm::Ed25519))
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "the DKIM key {} is neither a PKCS#1 PEM RSA key nor a base64 Ed25519 key: {e:?}",
                            path.display()
                        )
                    })?;
                let signed = [
                    "From",
                    "Subject",
                    "Date",
                    "To",
                    "Message-ID",
                    "List-Id",
                    "List-Unsubscribe",
                    "List-Unsubscribe-Post",
                ]
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
    use std::path::Path;

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
