//! SMTP replies (RFC 5321 §4.2) and what each one means for the send, judged by
//! the command it answers: the sender refused stops the run, a dead recipient is
//! a bounce, refused content is one failed message, 4xx is "later".

/// The command a reply answers: the same code means different things after each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Greeting,
    Ehlo,
    StartTls,
    Auth,
    Rset,
    Mail,
    Rcpt,
    Data,
    /// The reply to the end of the data: the server took the message, or not.
    EndOfData,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Greeting => "greeting",
            Stage::Ehlo => "EHLO",
            Stage::StartTls => "STARTTLS",
            Stage::Auth => "AUTH",
            Stage::Rset => "RSET",
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Data => "DATA",
            Stage::EndOfData => "end of DATA",
        }
    }
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

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// The enhanced status code (RFC 3463) opening the first line, e.g. (5, 1, 1).
    pub fn enhanced(&self) -> Option<(u8, u16, u16)> {
        let first = self.lines.first()?;
        let word = first.split_whitespace().next()?;
        let mut parts = word.split('.');
        let class: u8 = parts.next()?.parse().ok()?;
        let subject: u16 = parts.next()?.parse().ok()?;
        let detail: u16 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some((class, subject, detail))
    }
}

/// Reads replies out of bytes as they come: one line at a time.
#[derive(Debug, Default)]
pub struct ReplyParser {
    lines: Vec<String>,
}

/// What one line did to the reply being read.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A continuation line (`250-…`): read on.
    More,
    /// The last line: the whole reply.
    Done(Reply),
}

/// A line that is not an SMTP reply line: the session is out of step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GarbledReply {
    #[error("garbled SMTP reply {line:?}: it does not start with a reply code (200 to 599)")]
    NoCode { line: String },
    #[error("garbled SMTP reply {line:?}: its code is followed by neither a space nor '-'")]
    BadSeparator { line: String },
}

impl ReplyParser {
    /// Takes one line (with or without its CRLF). A line that is not an SMTP
    /// reply line is an error naming it.
    pub fn line(&mut self, raw: &[u8]) -> Result<Line, GarbledReply> {
        let text = String::from_utf8_lossy(raw);
        let l = text.trim_end_matches(['\r', '\n']);
        let code = l
            .get(..3)
            .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (200..600).contains(c))
            .ok_or_else(|| GarbledReply::NoCode {
                line: l.to_string(),
            })?;
        let sep = l.as_bytes().get(3).copied();
        if !matches!(sep, None | Some(b' ') | Some(b'-')) {
            return Err(GarbledReply::BadSeparator {
                line: l.to_string(),
            });
        }
        self.lines.push(l.get(4..).unwrap_or("").to_string());
        if sep == Some(b'-') {
            return Ok(Line::More);
        }
        Ok(Line::Done(Reply {
            code,
            lines: std::mem::take(&mut self.lines),
        }))
    }
}

/// Why a message was not accepted, shaped for the next decision: retry, give up
/// on this message, or stop the whole run.
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
    /// 5xx on this message (its content, a policy on this recipient): this
    /// message will not go through; the subscriber stays as they are.
    Permanent,
    /// 550/551/553 on the recipient (mailbox unknown, disabled): the address
    /// does not exist; never mail it again.
    HardBounce,
    /// The sender, the login or the TLS setup was refused: no message of this run
    /// can go through. The run stops; nobody is marked.
    Fatal,
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

    pub fn fatal(message: impl Into<String>) -> SendError {
        SendError {
            kind: ErrorKind::Fatal,
            code: None,
            message: message.into(),
        }
    }

    /// Judges a negative reply by the command it answers.
    pub fn from_reply(stage: Stage, reply: &Reply) -> SendError {
        let kind = match (reply.code, stage) {
            (400..=499, _) => ErrorKind::Transient,
            // Before any message: the server will take none from us.
            (_, Stage::Greeting | Stage::Ehlo | Stage::StartTls | Stage::Auth | Stage::Rset) => {
                ErrorKind::Fatal
            }
            // The sender is refused: every message of the run would be.
            (_, Stage::Mail) => ErrorKind::Fatal,
            (550 | 551 | 553, Stage::Rcpt) => match reply.enhanced() {
                // 5.7.x is policy (relaying denied, authentication required),
                // 5.2.2 a full mailbox: the address itself may well be fine.
                Some((_, 7, _)) | Some((_, 2, 2)) | Some((_, 3, _)) | Some((_, 4, _)) => {
                    ErrorKind::Permanent
                }
                _ => ErrorKind::HardBounce,
            },
            _ => ErrorKind::Permanent,
        };
        let mut message = format!("{}: {} {}", stage.as_str(), reply.code, reply.text());
        if kind == ErrorKind::Fatal && stage == Stage::Mail {
            message.push_str(
                " (the server refuses the sender: check sender.from and the relay's settings)",
            );
        }
        SendError {
            kind,
            code: Some(reply.code),
            message,
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

    pub fn is_fatal(&self) -> bool {
        self.kind == ErrorKind::Fatal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, text: &str) -> Reply {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    #[test]
    fn multi_line_replies_are_read_to_their_last_line() {
        let mut p = ReplyParser::default();
        assert_eq!(p.line(b"250-mx.example.com\r\n"), Ok(Line::More));
        assert_eq!(p.line(b"250-PIPELINING\r\n"), Ok(Line::More));
        let Ok(Line::Done(r)) = p.line(b"250 SIZE 1000\r\n") else {
            panic!("not done")
        };
        assert_eq!(r.code, 250);
        assert_eq!(r.lines, ["mx.example.com", "PIPELINING", "SIZE 1000"]);
        // The next reply starts afresh.
        assert_eq!(
            p.line(b"354"),
            Ok(Line::Done(Reply {
                code: 354,
                lines: vec![String::new()]
            }))
        );
    }

    #[test]
    fn lines_that_are_not_replies_are_refused() {
        for bad in [
            &b"hello\r\n"[..],
            b"25",
            b"2500 x",
            b"250x",
            b"999 no",
            b"\xff\xfe",
        ] {
            assert!(
                ReplyParser::default().line(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_garbled_line_says_whether_the_code_or_what_follows_it_is_wrong() {
        let no_code = |l: &str| GarbledReply::NoCode { line: l.into() };
        let bad_sep = |l: &str| GarbledReply::BadSeparator { line: l.into() };
        let line = |raw: &[u8]| ReplyParser::default().line(raw).unwrap_err();
        assert_eq!(line(b"hello\r\n"), no_code("hello"));
        assert_eq!(line(b"25"), no_code("25"));
        assert_eq!(line(b"999 no"), no_code("999 no"));
        assert_eq!(line(b"2500 x"), bad_sep("2500 x"));
        assert_eq!(line(b"250x\r\n"), bad_sep("250x"));
        assert!(line(b"hello")
            .to_string()
            .starts_with("garbled SMTP reply \"hello\""));
    }

    #[test]
    fn replies_are_judged_by_the_command_they_answer() {
        // The sender refused: the run stops, nobody is a bounce.
        let e = SendError::from_reply(Stage::Mail, &reply(553, "5.7.1 Sender address rejected"));
        assert!(e.is_fatal() && !e.is_hard_bounce(), "{e:?}");
        assert!(e.message.contains("Sender address rejected"));
        // An unknown recipient: that subscriber bounced.
        let e = SendError::from_reply(Stage::Rcpt, &reply(550, "5.1.1 User unknown"));
        assert!(e.is_hard_bounce());
        assert!(SendError::from_reply(Stage::Rcpt, &reply(551, "x")).is_hard_bounce());
        assert!(SendError::from_reply(Stage::Rcpt, &reply(553, "x")).is_hard_bounce());
        // A policy refusal on the recipient is not the recipient's fault.
        let e = SendError::from_reply(Stage::Rcpt, &reply(550, "5.7.1 Relaying denied"));
        assert_eq!(e.kind, ErrorKind::Permanent);
        let e = SendError::from_reply(Stage::Rcpt, &reply(552, "5.2.2 Mailbox full"));
        assert_eq!(e.kind, ErrorKind::Permanent);
        // Content refused after the data: that message failed, the reader did not bounce.
        let e = SendError::from_reply(Stage::EndOfData, &reply(550, "5.7.1 content rejected"));
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert_eq!(e.code, Some(550));
        // 4xx anywhere is "later".
        for stage in [Stage::Mail, Stage::Rcpt, Stage::Data, Stage::EndOfData] {
            assert!(SendError::from_reply(stage, &reply(451, "4.3.0 later")).is_transient());
            assert!(SendError::from_reply(stage, &reply(421, "closing")).is_transient());
        }
        // A refused login stops the run.
        assert!(SendError::from_reply(Stage::Auth, &reply(535, "5.7.8 bad")).is_fatal());
    }

    #[test]
    fn enhanced_status_codes_are_read_from_the_first_line() {
        assert_eq!(reply(550, "5.1.1 <x> unknown").enhanced(), Some((5, 1, 1)));
        assert_eq!(reply(550, "User unknown").enhanced(), None);
        assert_eq!(reply(550, "5.1 x").enhanced(), None);
        assert_eq!(reply(550, "9.1.1 x").enhanced(), None);
    }
}
