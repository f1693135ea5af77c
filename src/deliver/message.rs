//! One subscriber's message: headers (From, To, Subject, Date, Message-ID, the
//! List-* headers of RFC 2369, 2919 and 8058), multipart/alternative text + HTML
//! in quoted-printable (no line over 76 columns), optional DKIM signature.
//!
//! Two builders make the same message. Without DKIM, [`PreEncoded`] encodes a
//! variant's bodies once, cut at the personal slots, and each subscriber's message
//! is those pieces with only the name and unsubscribe link encoded in between
//! (a few µs; the encoding is in [`super::mime`]). With DKIM, lettre builds and
//! signs every message (the key and settings are in [`super::dkim`]).

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use lettre::message::dkim::DkimConfig;
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::Message;
use rand::RngCore;

use super::mime::{
    encoded_words, header_safe, list_id_value, mailbox_value, push_header, EncodedBody,
};
use crate::config::Config;
use crate::render::{EmailTemplate, RenderedEmail, SlotValues};

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
    /// The From and Reply-To values of the pre-encoded builder.
    from_value: String,
    reply_to_value: Option<String>,
    /// Repeat the Message-ID in [`POSTMARK_METADATA`] (`[bounces] postmark_user` set).
    postmark_metadata: bool,
}

/// Postmark replaces the Message-ID of what it relays and reports bounces with its
/// own id; a header with this prefix is kept as metadata (and removed from the
/// message), and its webhooks give it back, so that their reports can be matched
/// to the ledger. Not DKIM-signed: Postmark removes it.
pub const POSTMARK_METADATA: &str = "X-PM-Metadata-message-id";

impl std::fmt::Debug for MessageFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageFactory")
            .field("from", &self.from.to_string())
            .field("list_id", &self.list_id)
            .field("dkim", &self.dkim.is_some())
            .finish()
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
        let dkim = super::dkim::signing_config(cfg)?;
        Ok(MessageFactory {
            from_value: mailbox_value(from.name.as_deref(), from.email.as_ref()),
            reply_to_value: reply_to
                .as_ref()
                .map(|r| mailbox_value(r.name.as_deref(), r.email.as_ref())),
            from,
            reply_to,
            domain,
            list_id: list_id_value(&cfg.newsletter.name, &cfg.list_id()),
            base_url: cfg.newsletter.base_url.trimmed().to_string(),
            unsubscribe_mailto,
            dkim,
            postmark_metadata: cfg.bounces.postmark_user.is_some(),
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
        format!("{}@{}", hex(&bytes), self.domain)
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
        if self.postmark_metadata {
            b = b.raw_header(header(POSTMARK_METADATA, message_id.clone()));
        }
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

impl MessageFactory {
    /// A plain-text mail of the service itself (the sign-up confirmation) to
    /// `to`: From, Date and Message-ID like the digest, no list headers, signed
    /// with the same DKIM key when `[dkim]` is set.
    pub fn build_service_mail(
        &self,
        to: &str,
        subject: &str,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<Outgoing> {
        let address = to
            .parse::<lettre::Address>()
            .with_context(|| format!("{to:?} is not a valid address"))?;
        let message_id = self.new_message_id();
        let body =
            Body::new_with_encoding(text.to_string(), ContentTransferEncoding::QuotedPrintable)
                .expect("quoted-printable can encode any text");
        let mut msg = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, address))
            .subject(subject)
            .date(system_time(now))
            .message_id(Some(format!("<{message_id}>")))
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(body),
            )
            .context("cannot build the mail")?;
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

/// One variant's message parts, encoded once for every subscriber who gets it
/// (the fast path, used without DKIM).
#[derive(Debug, Clone)]
pub struct PreEncoded {
    /// `Subject: …` CRLF, encoded and folded.
    subject: Vec<u8>,
    /// From MIME-Version to the text part's blank line, after `List-*`.
    mime_head: Vec<u8>,
    /// Between the text and the HTML bodies.
    middle: Vec<u8>,
    /// After the HTML body.
    tail: Vec<u8>,
    text: EncodedBody,
    html: EncodedBody,
}

impl PreEncoded {
    /// Encodes `template`'s subject and bodies; `boundary` must not start with
    /// anything but `=_` (quoted-printable never writes `=_`, so no body line can
    /// look like a boundary).
    pub fn new(template: &EmailTemplate) -> PreEncoded {
        let mut random = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut random);
        let boundary = format!("=_{}", hex(&random));
        let mut subject_value = String::new();
        if header_safe(template.subject()) {
            subject_value.push_str(template.subject());
        } else {
            encoded_words(template.subject(), &mut subject_value);
        }
        let mut subject = Vec::new();
        push_header(&mut subject, "Subject", &subject_value);
        let part = |ct: &str| {
            format!(
                "--{boundary}\r\nContent-Type: {ct}; charset=utf-8\r\n\
                 Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            )
        };
        PreEncoded {
            subject,
            mime_head: format!(
                "MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n \
                 boundary=\"{boundary}\"\r\n\r\n{}",
                part("text/plain")
            )
            .into_bytes(),
            middle: part("text/html").into_bytes(),
            tail: format!("--{boundary}--\r\n").into_bytes(),
            text: EncodedBody::new(template.text_parts()),
            html: EncodedBody::new(template.html_parts()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

impl MessageFactory {
    /// True when messages are signed: [`MessageFactory::build`] is then the only builder.
    pub fn signs(&self) -> bool {
        self.dkim.is_some()
    }

    /// The same message as [`MessageFactory::build`] without a DKIM signature,
    /// from a variant encoded once and this subscriber's slot values (what
    /// [`EmailTemplate::slot_values`] gives for the token's unsubscribe URL).
    pub fn build_pre_encoded(
        &self,
        to: &str,
        name: Option<&str>,
        variant: &PreEncoded,
        values: &SlotValues,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Outgoing> {
        let address = to
            .parse::<lettre::Address>()
            .with_context(|| format!("{to:?} is not a valid address"))?;
        let address = address.to_string();
        if !address.is_ascii() {
            anyhow::bail!("{to:?} is not an ASCII address: it needs the lettre builder");
        }
        let message_id = self.new_message_id();
        let mut out = Vec::with_capacity(
            1024 + variant.text.len + variant.html.len + 4 * values.text_unsubscribe.len(),
        );
        push_header(&mut out, "From", &self.from_value);
        if let Some(v) = &self.reply_to_value {
            push_header(&mut out, "Reply-To", v);
        }
        push_header(&mut out, "To", &mailbox_value(name, &address));
        out.extend_from_slice(&variant.subject);
        push_header(&mut out, "Date", &now.to_rfc2822());
        push_header(&mut out, "Message-ID", &format!("<{message_id}>"));
        push_header(&mut out, "List-Id", &self.list_id);
        push_header(
            &mut out,
            "List-Unsubscribe",
            &format!(
                "<{}>, <mailto:{}?subject=unsubscribe%20{token}>",
                self.unsubscribe_url(token),
                self.unsubscribe_mailto
            ),
        );
        out.extend_from_slice(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
        if self.postmark_metadata {
            push_header(&mut out, POSTMARK_METADATA, &message_id);
        }
        out.extend_from_slice(&variant.mime_head);
        variant.text.write(
            values.text_greeting.as_bytes(),
            values.text_unsubscribe.as_bytes(),
            &mut out,
        );
        out.extend_from_slice(&variant.middle);
        variant.html.write(
            values.html_greeting.as_bytes(),
            values.html_unsubscribe.as_bytes(),
            &mut out,
        );
        out.extend_from_slice(&variant.tail);
        Ok(Outgoing {
            message_id,
            from: self.from_address(),
            to: to.to_string(),
            bytes: out,
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
    fn both_builders_encode_every_header_when_the_names_have_accents() {
        // Finding 10: the fast builder wrote `List-Id: Le Caf\xc3\xa9 <…>` raw.
        use crate::render::{render_variant, Assets, Personal};
        let cfg = CONFIG
            .replace("name = \"L'Essentiel\"", "name = \"Le Café du Matin\"")
            .replace(
                "from = \"L'Essentiel <briefing@news.example.com>\"",
                "from = \"Équipe du Café <briefing@news.example.com>\"",
            );
        let f = factory(&cfg);
        let mut d = digest();
        d.name = "Le Café du Matin".into();
        let template = render_variant(
            &d,
            &Assets::builtin(),
            crate::domain::Locale::Fr,
            &[],
            "{name} · {date} · {top_title}",
        );
        let pre = PreEncoded::new(&template);
        let p = Personal {
            name: Some("Zoë Dupré".into()),
            unsubscribe_url: f.unsubscribe_url("tok"),
        };
        let fast = f
            .build_pre_encoded(
                "zoe@example.com",
                Some("Zoë Dupré"),
                &pre,
                &template.slot_values(&p),
                "tok",
                now(),
            )
            .unwrap();
        let slow = f
            .build(
                "zoe@example.com",
                Some("Zoë Dupré"),
                &template.personalise(&p),
                "tok",
                now(),
            )
            .unwrap();
        for (which, out) in [("fast", &fast), ("lettre", &slow)] {
            let raw = &out.bytes;
            let head = &raw[..raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap()];
            assert!(
                head.is_ascii(),
                "{which}: {}",
                String::from_utf8_lossy(head)
            );
            let m = MessageParser::default().parse(raw).unwrap();
            let list = m.header("List-Id").unwrap().as_address().unwrap();
            let list = list.first().unwrap();
            assert_eq!(list.name(), Some("Le Café du Matin"), "{which}");
            assert_eq!(
                list.address(),
                Some("le-cafe-du-matin.news.example.com"),
                "{which}"
            );
            let from = m.from().unwrap().first().unwrap();
            assert_eq!(from.name(), Some("Équipe du Café"), "{which}");
            let reply = m.reply_to().unwrap().first().unwrap();
            assert_eq!(reply.name(), Some("Rédaction"), "{which}");
            assert_eq!(
                m.to().unwrap().first().unwrap().name(),
                Some("Zoë Dupré"),
                "{which}"
            );
            assert!(
                m.subject().unwrap().starts_with("Le Café du Matin · "),
                "{which}"
            );
        }
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

    fn digest() -> crate::domain::Digest {
        use crate::domain::{Article, Digest, Locale, Story};
        let at = now();
        let story = |title: &str, url: &str, category: &str, summary: &str| Story {
            article: Article {
                title: title.into(),
                url: Some(url.into()),
                source: "Le Quotidien".into(),
                category: category.into(),
                published: at,
                summary: summary.into(),
                reading_minutes: 3,
                source_weight: 1.0,
                also_in: vec![],
            },
            score: 1.0,
            pinned: false,
        };
        Digest {
            date: chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
            name: "L'Essentiel".into(),
            tagline: "La newsletter qui vous briefe en 5 min".into(),
            locale: Locale::Fr,
            base_url: "https://news.example.com/digestif".into(),
            intro: Some("Ce matin : 2 + 2 = 4, « guillemets » et 100 % d’essentiel.".into()),
            stories: vec![
                story(
                    "Budget 2027 : le gouvernement dévoile ses recettes",
                    "https://news.example.com/eco/budget?a=1&b=2",
                    "Économie",
                    &"Le projet de loi de finances prévoit 12 milliards d’euros. ".repeat(8),
                ),
                story(
                    "Salt Lake City, hôte des Jeux olympiques d’hiver 2034",
                    "https://news.example.com/sport/slc",
                    "Sport",
                    "Le CIO a attribué l’organisation des Jeux à Salt Lake City.",
                ),
            ],
            reading_minutes: 4,
            built_at: at,
            window_start: at - chrono::Duration::days(1),
            window_end: at,
        }
    }

    fn names() -> Vec<Option<String>> {
        let mut v: Vec<Option<String>> = [
            "Jean Dupont",
            "Zoë Ğüñ",
            "O'Brien, \"Bob\" Jr.",
            "back\\slash",
            "=?utf-8?b?Zm9v?=",
            "  spaced   out  ",
            "日本語の名前",
            "🙂",
            "a",
        ]
        .into_iter()
        .map(|n| Some(n.to_string()))
        .collect();
        v.push(None);
        v.push(Some(String::new()));
        v.push(Some("Marie-Éloïse ".repeat(12)));
        v.push(Some("X".repeat(120)));
        v.push(Some(format!("{} é", "Long ".repeat(30))));
        v
    }

    #[test]
    fn with_postmark_webhooks_both_builders_repeat_the_message_id_as_postmark_metadata() {
        use crate::render::{render_variant, Assets, Personal};
        for (extra, wanted) in [
            ("", false),
            (
                "\n[bounces]\npostmark_user = \"postmark\"\npostmark_password_env = \"PM\"\n",
                true,
            ),
        ] {
            let f = factory(&format!("{CONFIG}{extra}"));
            let template = render_variant(
                &digest(),
                &Assets::builtin(),
                crate::domain::Locale::Fr,
                &[],
                "{name} · {date} · {top_title}",
            );
            let p = Personal {
                name: None,
                unsubscribe_url: f.unsubscribe_url("TOK"),
            };
            let fast = f
                .build_pre_encoded(
                    "jean@example.com",
                    None,
                    &PreEncoded::new(&template),
                    &template.slot_values(&p),
                    "TOK",
                    now(),
                )
                .unwrap();
            let slow = f
                .build(
                    "jean@example.com",
                    None,
                    &template.personalise(&p),
                    "TOK",
                    now(),
                )
                .unwrap();
            for out in [fast, slow] {
                let m = MessageParser::default().parse(&out.bytes).unwrap();
                let got = m.header_raw(POSTMARK_METADATA).map(str::trim);
                match wanted {
                    true => assert_eq!(got, Some(out.message_id.as_str())),
                    false => assert_eq!(got, None),
                }
            }
        }
    }

    #[test]
    fn pre_encoded_message_reads_like_the_lettre_one_for_every_kind_of_name() {
        use crate::render::{render_variant, Assets, Personal};
        let f = factory(CONFIG);
        let template = render_variant(
            &digest(),
            &Assets::builtin(),
            crate::domain::Locale::Fr,
            &[],
            "{name} · {date} · {top_title}",
        );
        let pre = PreEncoded::new(&template);
        for (i, name) in names().into_iter().enumerate() {
            let token = format!("tok{i}-{}", "Ab9_".repeat(i));
            let p = Personal {
                name: name.clone(),
                unsubscribe_url: f.unsubscribe_url(&token),
            };
            let email = template.personalise(&p);
            let to = format!("reader{i}@example.com");
            let fast = f
                .build_pre_encoded(
                    &to,
                    name.as_deref(),
                    &pre,
                    &template.slot_values(&p),
                    &token,
                    now(),
                )
                .unwrap();
            let slow = f
                .build(&to, name.as_deref(), &email, &token, now())
                .unwrap();
            assert_eq!((&fast.from, &fast.to), (&slow.from, &slow.to));

            let raw = std::str::from_utf8(&fast.bytes).unwrap();
            assert!(raw.is_ascii());
            let (head, body) = raw.split_once("\r\n\r\n").unwrap();
            assert!(head.split("\r\n").all(|l| l.len() <= 998));
            for line in head.split("\r\n") {
                let short = ["To:", "Subject:", "From:", "Reply-To:"]
                    .iter()
                    .any(|h| line.starts_with(h));
                if short || line.starts_with([' ', '\t']) && !line.contains('<') {
                    assert!(line.len() <= 78, "header line too long: {line:?}");
                }
                assert!(!line.trim().is_empty() || line.is_empty(), "blank fold");
            }
            for line in body.split("\r\n") {
                assert!(line.len() <= 76, "body line too long: {line:?}");
            }

            let a = MessageParser::default().parse(&fast.bytes).unwrap();
            let b = MessageParser::default().parse(&slow.bytes).unwrap();
            let mb = |m: &mail_parser::Message, which: &str| {
                let addr = match which {
                    "from" => m.from(),
                    "to" => m.to(),
                    _ => m.reply_to(),
                }
                .unwrap()
                .first()
                .unwrap()
                .clone();
                (
                    addr.name().map(str::to_string).filter(|n| !n.is_empty()),
                    addr.address().map(str::to_string),
                )
            };
            for which in ["from", "to", "reply_to"] {
                assert_eq!(mb(&a, which), mb(&b, which), "{which} for {name:?}");
            }
            let expected_name = name
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(String::from);
            assert_eq!(mb(&a, "to").0, expected_name);
            assert_eq!(a.subject(), b.subject());
            assert_eq!(a.subject(), Some(email.subject.as_str()));
            assert_eq!(a.date().unwrap().to_timestamp(), now().timestamp());
            assert_eq!(a.message_id(), Some(fast.message_id.as_str()));
            let h = |m: &mail_parser::Message, n: &str| {
                m.header_raw(n)
                    .unwrap_or_else(|| panic!("no {n}"))
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            for n in [
                "List-Id",
                "List-Unsubscribe",
                "List-Unsubscribe-Post",
                "MIME-Version",
            ] {
                assert_eq!(h(&a, n), h(&b, n), "{n}");
            }
            let ct = a.content_type().unwrap();
            assert_eq!(
                (ct.ctype(), ct.subtype()),
                (b.content_type().unwrap().ctype(), Some("alternative"))
            );
            assert_eq!(a.parts.len(), b.parts.len());
            for (pa, pb) in a.parts.iter().zip(&b.parts).skip(1) {
                let (ca, cb) = (pa.content_type().unwrap(), pb.content_type().unwrap());
                assert_eq!((ca.ctype(), ca.subtype()), (cb.ctype(), cb.subtype()));
                assert_eq!(ca.attribute("charset"), Some("utf-8"));
                assert_eq!(pa.content_transfer_encoding(), Some("quoted-printable"));
            }
            let lf = |s: std::borrow::Cow<str>| s.replace("\r\n", "\n");
            assert_eq!(lf(a.body_text(0).unwrap()), email.text);
            assert_eq!(lf(a.body_html(0).unwrap()), email.html);
            assert_eq!(lf(a.body_text(0).unwrap()), lf(b.body_text(0).unwrap()));
            assert_eq!(lf(a.body_html(0).unwrap()), lf(b.body_html(0).unwrap()));
        }
    }
}
