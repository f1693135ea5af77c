//! Bounces and complaints: what comes back after a message left.
//!
//! A relay accepts almost every message and reports failures later, by mail, to the
//! envelope sender: delivery status notifications (RFC 3464) and feedback-loop
//! complaints (RFC 5965). This module reads one such message ([`report`], pure),
//! names the subscriber and issue it is about from the signed VERP return path
//! ([`verp`], never from the report's own contents), and decides what it changes
//! ([`rules`], pure). [`apply`] runs one message through them and the store;
//! [`mailbox`] reads standard input, a Maildir or an mbox, [`imap`] an IMAP mailbox,
//! [`pop3`] a POP3 one; [`webhook`] takes the reports relays post over HTTP
//! ([`ses`] through [`sns`], [`postmark`]).

pub mod apply;
pub mod imap;
pub mod mailbox;
pub mod pop3;
pub mod postmark;
pub mod report;
pub mod rules;
pub mod ses;
pub mod sns;
pub mod verp;
pub mod webhook;

pub use apply::{Handler, Outcome, Summary};
pub use report::{parse, Action, EventKind, Parsed, Report, StatusCode};
pub use rules::{Decision, IssueRates, Rules};
pub use verp::{ReturnPath, Tag, TagCheck};
