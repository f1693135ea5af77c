//! One returned message → a typed [`Parsed`] report, without I/O.
//!
//! MIME is parsed by `mail-parser`; this module reads what is inside: the
//! `message/delivery-status` part of a DSN (RFC 3464, as Postfix, Gmail, Outlook and
//! Exim write it), the `message/feedback-report` part of a complaint (ARF, RFC 5965),
//! and the plain-text forms some MTAs still send without a report part (Exim's
//! classic bounce, qmail, Yahoo). What a report says about *whom* it concerns is kept
//! for the record only: the subscriber is named by the signed VERP tag, which the
//! report carries in [`Parsed::tag_candidates`].

use std::fmt;

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};
use sha2::{Digest, Sha256};

/// Longest diagnostic kept from a report.
const MAX_DIAGNOSTIC: usize = 500;

/// An enhanced status code (RFC 3463): `5.1.1`, `4.2.2`, `5.1.10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl StatusCode {
    /// Reads exactly one code (`2`, `4` or `5`, then two numbers of one to three digits).
    pub fn parse(s: &str) -> Option<StatusCode> {
        let mut it = s.trim().split('.');
        let (class, subject, detail) = (it.next()?, it.next()?, it.next()?);
        if it.next().is_some() {
            return None;
        }
        let number = |p: &str| {
            (!p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u16>().ok())
                .flatten()
        };
        let class = match class {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return None,
        };
        Some(StatusCode {
            class,
            subject: number(subject)?,
            detail: number(detail)?,
        })
    }

    /// The first failure code (class 4 or 5) written in free text: a Diagnostic-Code,
    /// a bounce's prose (`550 5.1.1 <x@y>: …`, `(#5.1.1)`). IP addresses and version
    /// numbers are not taken for codes.
    pub fn find_failure(text: &str) -> Option<StatusCode> {
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let starts = matches!(b[i], b'4' | b'5')
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.'));
            let end = b[i..]
                .iter()
                .position(|c| !(c.is_ascii_digit() || *c == b'.'))
                .map_or(b.len(), |p| i + p);
            if starts && (end == b.len() || !b[end].is_ascii_alphabetic()) {
                if let Some(code) = StatusCode::parse(text[i..end].trim_end_matches('.')) {
                    return Some(code);
                }
            }
            i = end.max(i + 1);
        }
        None
    }

    /// The class of the first basic SMTP reply code (`550`, `421-`) in free text,
    /// as `5.0.0` / `4.0.0`: for MTAs that write no enhanced code.
    pub fn find_reply(text: &str) -> Option<StatusCode> {
        let b = text.as_bytes();
        (0..b.len().saturating_sub(2)).find_map(|i| {
            let before_ok = i == 0 || matches!(b[i - 1], b' ' | b'\t' | b'\n' | b':' | b'(');
            let after_ok = b.get(i + 3).is_none_or(|c| matches!(c, b' ' | b'-' | b':'));
            let digits = matches!(b[i], b'4' | b'5')
                && b[i + 1].is_ascii_digit()
                && b[i + 2].is_ascii_digit();
            (before_ok && after_ok && digits).then(|| StatusCode {
                class: b[i] - b'0',
                subject: 0,
                detail: 0,
            })
        })
    }

    pub fn is_permanent(self) -> bool {
        self.class == 5
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// What the reporting MTA did for one recipient (RFC 3464 section 2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        let word = s.split_whitespace().next()?.to_ascii_lowercase();
        Some(match word.as_str() {
            "failed" => Action::Failed,
            "delayed" => Action::Delayed,
            "delivered" => Action::Delivered,
            "relayed" => Action::Relayed,
            "expanded" => Action::Expanded,
            _ => return None,
        })
    }
}

/// One per-recipient group of a delivery report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    pub final_recipient: Option<String>,
    pub original_recipient: Option<String>,
    pub action: Action,
    pub status: Option<StatusCode>,
    pub diagnostic: Option<String>,
}

/// A feedback-loop report (ARF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complaint {
    /// `abuse`, `fraud`, `virus`, `other`, `not-spam`, `auth-failure`… (lowercased).
    pub feedback_type: String,
    pub user_agent: Option<String>,
    pub original_mail_from: Option<String>,
    pub original_rcpt_to: Option<String>,
}

impl Complaint {
    /// Whether the report is a person (or their provider) calling the message unwanted;
    /// `not-spam` and authentication-failure reports are not.
    pub fn is_complaint(&self) -> bool {
        matches!(
            self.feedback_type.as_str(),
            "abuse" | "fraud" | "virus" | "other"
        )
    }
}

/// What a returned message reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Delivery(Vec<RecipientReport>),
    Complaint(Complaint),
    /// Neither a delivery report nor a complaint (an auto-reply, a person writing back).
    NotAReport,
}

/// Which form the report was read from (recorded with each event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `message/delivery-status` (RFC 3464).
    DeliveryStatus,
    /// `message/feedback-report` (RFC 5965).
    FeedbackReport,
    /// Exim's plain-text bounce or delay warning.
    Exim,
    /// qmail's plain-text bounce (QSBMF).
    Qmail,
    /// Yahoo's plain-text bounce.
    Yahoo,
    /// Another MAILER-DAEMON prose bounce.
    Text,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::DeliveryStatus => "rfc3464",
            Format::FeedbackReport => "arf",
            Format::Exim => "exim",
            Format::Qmail => "qmail",
            Format::Yahoo => "yahoo",
            Format::Text => "text",
        }
    }
}

/// What one report amounts to for the subscriber it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    Delivered,
    Delayed,
    /// A failure with a 4.x.x status (or none): counted.
    SoftBounce,
    /// A failure with a 5.x.x status: final.
    HardBounce,
    Complaint,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Delivered => "delivered",
            EventKind::Delayed => "delayed",
            EventKind::SoftBounce => "soft_bounce",
            EventKind::HardBounce => "hard_bounce",
            EventKind::Complaint => "complaint",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        [
            EventKind::Delivered,
            EventKind::Delayed,
            EventKind::SoftBounce,
            EventKind::HardBounce,
            EventKind::Complaint,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The event a report amounts to: its kind and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub status: Option<StatusCode>,
    pub diagnostic: Option<String>,
    /// The address the report names (for the record; never used to find the subscriber).
    pub recipient: Option<String>,
}

impl Report {
    /// The event of the report; for several recipients, the gravest. `None` for a
    /// message that reports nothing (or a feedback report that is not a complaint).
    pub fn event(&self) -> Option<Event> {
        match self {
            Report::NotAReport => None,
            Report::Complaint(c) => c.is_complaint().then(|| Event {
                kind: EventKind::Complaint,
                status: None,
                diagnostic: Some(format!("feedback-type {}", c.feedback_type)).map(|d| {
                    match &c.user_agent {
                        Some(ua) => format!("{d} from {ua}"),
                        None => d,
                    }
                }),
                recipient: c.original_rcpt_to.clone(),
            }),
            Report::Delivery(rs) => rs.iter().map(recipient_event).max_by_key(|e| e.kind),
        }
    }
}

fn recipient_event(r: &RecipientReport) -> Event {
    let diagnostic = r.diagnostic.as_deref().unwrap_or("");
    let kind;
    let mut status = r.status;
    match r.action {
        Action::Failed => {
            // The Status field is required; some MTAs write 5.0.0 there and the
            // real code in the Diagnostic-Code, others leave it out.
            let from_diagnostic =
                StatusCode::find_failure(diagnostic).or_else(|| StatusCode::find_reply(diagnostic));
            status = match status {
                Some(s) if s.class != 2 => Some(s),
                _ => from_diagnostic,
            };
            kind = match status {
                Some(s) if s.is_permanent() => EventKind::HardBounce,
                _ => EventKind::SoftBounce,
            };
        }
        Action::Delayed => kind = EventKind::Delayed,
        Action::Delivered | Action::Relayed | Action::Expanded => kind = EventKind::Delivered,
    }
    Event {
        kind,
        status,
        diagnostic: r.diagnostic.clone(),
        recipient: r
            .original_recipient
            .clone()
            .or_else(|| r.final_recipient.clone()),
    }
}

/// A returned message, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Names this message whoever delivers it again: `mid:<Message-ID>`, else
    /// `sha256:<hash of the bytes>`. The same report read twice has the same key.
    pub key: String,
    pub subject: Option<String>,
    /// Where a VERP tag may be, most trusted first: the envelope recipient as the
    /// delivering MTA recorded it (Delivered-To, X-Original-To, Envelope-To, To), then
    /// the returned message's envelope sender (an ARF report's Original-Mail-From, the
    /// Return-Path of the returned copy).
    pub tag_candidates: Vec<String>,
    pub format: Option<Format>,
    pub report: Report,
}

/// Why a message could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("not an email message (no header fields)")]
    NotAMessage,
}

/// Reads one returned message.
pub fn parse(raw: &[u8]) -> Result<Parsed, ReportError> {
    let msg = MessageParser::default()
        .parse(raw)
        .filter(|m| !m.headers().is_empty())
        .ok_or(ReportError::NotAMessage)?;
    let key = match msg.message_id().map(str::trim).filter(|m| !m.is_empty()) {
        Some(id) => format!("mid:{id}"),
        None => format!("sha256:{}", hex(&Sha256::digest(raw))),
    };
    let mut tag_candidates = Vec::new();
    for name in [
        "Delivered-To",
        "X-Original-To",
        "Envelope-To",
        "X-Envelope-To",
        "To",
    ] {
        for (n, v) in msg.headers_raw() {
            if n.eq_ignore_ascii_case(name) {
                tag_candidates.extend(addresses_in(v));
            }
        }
    }

    let mut delivery_status = None;
    let mut feedback = None;
    let mut returned_headers: Vec<(String, String)> = Vec::new();
    for part in &msg.parts {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let ctype = ct.ctype().to_ascii_lowercase();
        let sub = ct.subtype().unwrap_or("").to_ascii_lowercase();
        match (ctype.as_str(), sub.as_str()) {
            ("message", "delivery-status" | "global-delivery-status") => {
                delivery_status.get_or_insert_with(|| part_text(&part.body));
            }
            ("message", "feedback-report") => {
                feedback.get_or_insert_with(|| part_text(&part.body));
            }
            ("message", "rfc822" | "global") if returned_headers.is_empty() => {
                if let PartType::Message(m) = &part.body {
                    returned_headers = m
                        .headers_raw()
                        .map(|(n, v)| (n.to_ascii_lowercase(), unfold(v)))
                        .collect();
                }
            }
            ("text", "rfc822-headers") | ("message", "global-headers")
                if returned_headers.is_empty() =>
            {
                returned_headers = field_groups(&part_text(&part.body))
                    .into_iter()
                    .next()
                    .unwrap_or_default();
            }
            _ => {}
        }
    }

    let (format, report) = if let Some(text) = feedback {
        let fields = field_groups(&text)
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
        let get = |name: &str| field(&fields, name).map(str::to_string);
        let complaint = Complaint {
            feedback_type: get("feedback-type")
                .map(|t| t.trim().to_ascii_lowercase())
                .unwrap_or_else(|| "abuse".into()),
            user_agent: get("user-agent"),
            original_mail_from: get("original-mail-from").map(|a| bare_address(&a)),
            original_rcpt_to: get("original-rcpt-to").map(|a| bare_address(&a)),
        };
        tag_candidates.extend(complaint.original_mail_from.clone());
        (Some(Format::FeedbackReport), Report::Complaint(complaint))
    } else if let Some(text) = delivery_status {
        let recipients = field_groups(&text)
            .iter()
            .filter_map(|g| recipient_group(g))
            .collect::<Vec<_>>();
        (Some(Format::DeliveryStatus), Report::Delivery(recipients))
    } else if let Some((format, r)) = text_form(&msg) {
        (Some(format), Report::Delivery(vec![r]))
    } else {
        (None, Report::NotAReport)
    };
    tag_candidates.extend(
        returned_headers
            .iter()
            .filter(|(n, _)| n == "return-path")
            .flat_map(|(_, v)| addresses_in(v)),
    );
    Ok(Parsed {
        key,
        subject: msg.subject().map(str::to_string),
        tag_candidates,
        format,
        report,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn part_text(body: &PartType<'_>) -> String {
    match body {
        PartType::Text(t) | PartType::Html(t) => t.to_string(),
        PartType::Binary(b) | PartType::InlineBinary(b) => String::from_utf8_lossy(b).into_owned(),
        PartType::Message(m) => String::from_utf8_lossy(m.raw_message()).into_owned(),
        PartType::Multipart(_) => String::new(),
    }
}

fn unfold(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Header-style fields in groups separated by blank lines (RFC 3464's per-message and
/// per-recipient groups); names lowercased, folded lines joined.
fn field_groups(text: &str) -> Vec<Vec<(String, String)>> {
    let mut groups = Vec::new();
    let mut group: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !group.is_empty() {
                groups.push(std::mem::take(&mut group));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = group.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            group.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `rfc822; user@example.com` → `user@example.com`.
fn bare_address(v: &str) -> String {
    let v = match v.split_once(';') {
        Some((_, a)) => a,
        None => v,
    };
    v.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_string()
}

/// `smtp; 550 5.1.1 …` → `550 5.1.1 …`, whitespace collapsed, length bounded.
fn diagnostic_text(v: &str) -> String {
    let v = match v.split_once(';') {
        Some((kind, rest)) if !kind.trim().contains(' ') => rest,
        _ => v,
    };
    bounded(&unfold(v))
}

fn bounded(s: &str) -> String {
    match s.char_indices().nth(MAX_DIAGNOSTIC) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The addresses in a header value: `"Name" <a@b>, c@d` → `a@b`, `c@d`.
fn addresses_in(v: &str) -> Vec<String> {
    v.split(',')
        .filter_map(|item| {
            let a = match (item.find('<'), item.rfind('>')) {
                (Some(s), Some(e)) if s < e => &item[s + 1..e],
                _ => item,
            };
            let a = a.trim();
            a.contains('@').then(|| a.to_string())
        })
        .collect()
}

fn recipient_group(g: &[(String, String)]) -> Option<RecipientReport> {
    let action = Action::parse(field(g, "action")?)?;
    Some(RecipientReport {
        final_recipient: field(g, "final-recipient").map(bare_address),
        original_recipient: field(g, "original-recipient").map(bare_address),
        action,
        status: field(g, "status")
            .and_then(|s| StatusCode::parse(s.split_whitespace().next().unwrap_or(""))),
        diagnostic: field(g, "diagnostic-code").map(diagnostic_text),
    })
}

/// Bounces written as prose, without a report part.
fn text_form(msg: &Message<'_>) -> Option<(Format, RecipientReport)> {
    let body: String = msg
        .text_bodies()
        .map(|p| part_text(&p.body))
        .collect::<Vec<_>>()
        .join("\n");
    let subject = msg.subject().unwrap_or("").to_ascii_lowercase();
    let from = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or("")
        .to_ascii_lowercase();
    let failed_header = msg.header_raw("X-Failed-Recipients").map(addresses_in);
    let format = if body.contains("This is the qmail-send program") {
        Format::Qmail
    } else if body.contains("Sorry, we were unable to deliver your message") {
        Format::Yahoo
    } else if failed_header.is_some()
        || body.contains("created automatically by mail delivery software")
    {
        Format::Exim
    } else if (from.starts_with("mailer-daemon@") || from.starts_with("postmaster@"))
        && [
            "undeliver",
            "delivery status",
            "returned mail",
            "failure",
            "delayed",
        ]
        .iter()
        .any(|w| subject.contains(w))
    {
        Format::Text
    } else {
        return None;
    };
    let delayed = body.contains("has not yet been delivered")
        || subject.starts_with("warning: message")
        || (format == Format::Text && subject.contains("delayed"));
    // The code and the line it is on (the remote server's answer).
    let line = body
        .lines()
        .map(str::trim)
        .find(|l| StatusCode::find_failure(l).is_some() || StatusCode::find_reply(l).is_some());
    let mut status =
        line.and_then(|l| StatusCode::find_failure(l).or_else(|| StatusCode::find_reply(l)));
    if status.is_none() && format == Format::Exim && body.contains("This is a permanent error") {
        status = Some(StatusCode {
            class: 5,
            subject: 0,
            detail: 0,
        });
    }
    let recipient = failed_header
        .and_then(|a| a.into_iter().next())
        .or_else(|| {
            // qmail and Yahoo write `<a@b>:`, Exim an indented bare address.
            body.lines()
                .map(|l| l.trim().trim_end_matches(':').trim_matches(['<', '>']))
                .find(|l| l.contains('@') && !l.contains([' ', '\t', '<', '>']))
                .map(str::to_string)
        });
    Some((
        format,
        RecipientReport {
            final_recipient: recipient,
            original_recipient: None,
            action: if delayed {
                Action::Delayed
            } else {
                Action::Failed
            },
            status,
            diagnostic: line.map(bounded),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> Option<String> {
        StatusCode::find_failure(s).map(|c| c.to_string())
    }

    #[test]
    fn status_codes_are_read_exactly() {
        assert_eq!(
            StatusCode::parse("5.1.1").map(|c| c.to_string()),
            Some("5.1.1".into())
        );
        assert_eq!(StatusCode::parse("5.1.10").map(|c| c.detail), Some(10));
        for bad in ["5.1", "6.1.1", "5.1.1.1", "5.a.1", "5.1.1000", ""] {
            assert_eq!(StatusCode::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn failure_codes_are_found_in_prose_but_not_in_addresses() {
        assert_eq!(
            code("550 5.1.1 <a@b>: Recipient address rejected"),
            Some("5.1.1".into())
        );
        assert_eq!(
            code("Sorry, no mailbox here by that name. (#5.1.1)"),
            Some("5.1.1".into())
        );
        assert_eq!(
            code("host 192.0.2.25 said: 452 4.2.2 Mailbox full."),
            Some("4.2.2".into())
        );
        assert_eq!(code("mx 10.4.5.1 and v5.2.3b"), None);
        assert_eq!(code("250 2.0.0 Ok"), None);
        assert_eq!(
            StatusCode::find_reply("Remote host said: 554 delivery error").map(|c| c.class),
            Some(5)
        );
        assert_eq!(StatusCode::find_reply("mta1554.mail 4500 things"), None);
    }

    #[test]
    fn a_failed_recipient_without_status_takes_the_diagnostic_code() {
        let r = RecipientReport {
            final_recipient: None,
            original_recipient: None,
            action: Action::Failed,
            status: None,
            diagnostic: Some("550 Requested action not taken: mailbox unavailable".into()),
        };
        let e = Report::Delivery(vec![r]).event().unwrap();
        assert_eq!(e.kind, EventKind::HardBounce);
        assert_eq!(e.status.map(|s| s.to_string()), Some("5.0.0".into()));
    }

    #[test]
    fn the_gravest_recipient_decides() {
        let r = |action, status: &str| RecipientReport {
            final_recipient: None,
            original_recipient: None,
            action,
            status: StatusCode::parse(status),
            diagnostic: None,
        };
        let rep = Report::Delivery(vec![
            r(Action::Delivered, "2.0.0"),
            r(Action::Failed, "5.1.1"),
            r(Action::Delayed, "4.4.1"),
        ]);
        assert_eq!(rep.event().unwrap().kind, EventKind::HardBounce);
    }

    #[test]
    fn a_text_without_headers_is_not_a_message() {
        assert_eq!(parse(b"").unwrap_err(), ReportError::NotAMessage);
    }
}
