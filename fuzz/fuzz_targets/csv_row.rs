//! One data row (any bytes) under the full header, checked as `subscribers
//! import --dry-run` does: never a panic, and a row is either valid or reported
//! with line 2.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|row: &[u8]| {
    let mut input = b"email,name,locale,categories,timezone,status\n".to_vec();
    input.extend_from_slice(row);
    let mut errors = Vec::new();
    if let Ok(summary) = digestif::subscribers::import(&input[..], None, &mut |e| {
        errors.push(e.clone())
    }) {
        assert_eq!(summary.valid + summary.skipped, summary.rows);
        for e in errors {
            assert!(e.line >= 2, "{e}");
        }
    }
});
