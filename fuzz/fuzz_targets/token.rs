//! Any string as an unsubscribe or confirmation token: verification never
//! panics and never accepts what the secret did not sign.
#![no_main]
use chrono::{TimeZone, Utc};
use digestif::config::Secret;
use digestif::deliver::token::{verify_confirm, verify_unsubscribe};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let secret = Secret::new("fuzzing-secret-0123456789");
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap();
    assert!(verify_unsubscribe(&secret, "list.example.com", text).is_err());
    assert!(verify_confirm(&secret, text, now).is_err());
});
