//! Delivery: message building (headers, MIME, DKIM), unsubscribe tokens, the
//! SMTP and file transports, retry policy, and the ledger-driven send loop.

pub mod compose;
pub mod dkim;
pub mod gate;
pub mod lint;
pub mod message;
mod mime;
pub mod rate;
pub mod send;
pub mod token;
pub mod transport;
mod worker;
