//! Any bytes as a feed: parsing and normalisation never panic, and what comes
//! out is clean (a title without control characters, an http(s) link or none).
#![no_main]
use chrono::{TimeZone, Utc};
use digestif::ingest::{normalise, parse_feed, SourceInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(items) = parse_feed(data) else {
        return;
    };
    let src = SourceInfo {
        name: "Fuzz",
        category: Some("Monde"),
        weight: 1.0,
    };
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap();
    for item in &items {
        if let Some(a) = normalise(item, &src, now, 230) {
            assert!(!a.title.is_empty());
            assert!(!a.title.chars().any(char::is_control), "{:?}", a.title);
            if let Some(u) = &a.url {
                assert!(u.starts_with("http://") || u.starts_with("https://"), "{u}");
            }
        }
    }
});
