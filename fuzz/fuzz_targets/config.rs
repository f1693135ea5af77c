//! Any text as digestif.toml: accepted or refused with a message, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cfg) = digestif::config::Config::parse(text, std::path::Path::new("/nonexistent")) {
            let _ = cfg.list_id();
            let _ = cfg.categories();
            let _ = cfg.database_path();
        }
    }
});
