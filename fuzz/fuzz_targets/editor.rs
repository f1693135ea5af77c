//! Any text as an issue's editor.toml: accepted or refused, never a panic; what
//! is accepted writes back to a file that reads the same.
#![no_main]
use digestif::editor::EditorPicks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(picks) = EditorPicks::parse(text) {
            let again = EditorPicks::parse(&picks.to_toml()).expect("what we write, we read");
            assert_eq!(again.to_toml(), picks.to_toml());
        }
    }
});
