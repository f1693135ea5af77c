//! Bounces and complaints: the corpus of returned messages read one by one.

use std::path::Path;

use chrono::NaiveDate;
use digestif::bounces::{self, ReturnPath, Tag, TagCheck};
use digestif::config::Secret;

const CORPUS: &str = "tests/fixtures/bounces";

#[derive(serde::Deserialize)]
struct Corpus {
    sample: Vec<Sample>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Sample {
    file: String,
    format: Option<String>,
    kind: String,
    status: Option<String>,
    recipient: Option<String>,
    diagnostic: Option<String>,
    tag: String,
    key: Option<String>,
}

#[test]
fn every_sample_of_the_corpus_reads_as_expected() {
    let text = std::fs::read_to_string(Path::new(CORPUS).join("expected.toml")).unwrap();
    let corpus: Corpus = toml::from_str(&text).unwrap();
    let rp = ReturnPath::try_from("bounces@news.example.com".to_string()).unwrap();
    let secret = Secret::new("corpus-secret-0123456789");
    let mut files: Vec<String> = std::fs::read_dir(CORPUS)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".eml"))
        .collect();
    files.sort();
    let mut listed: Vec<String> = corpus.sample.iter().map(|s| s.file.clone()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "every sample has an expected outcome, and only those"
    );

    let mut failures = Vec::new();
    for s in &corpus.sample {
        let raw = std::fs::read(Path::new(CORPUS).join(&s.file)).unwrap();
        let parsed = bounces::parse(&raw).unwrap_or_else(|e| panic!("{}: {e}", s.file));
        let event = parsed.report.event();
        let got_kind = event.as_ref().map_or("none", |e| e.kind.as_str());
        let mut check = |what: &str, got: Option<String>, want: Option<&str>| {
            if got.as_deref() != want {
                failures.push(format!("{}: {what}: got {got:?}, want {want:?}", s.file));
            }
        };
        check("kind", Some(got_kind.to_string()), Some(&s.kind));
        check(
            "format",
            parsed.format.map(|f| f.as_str().to_string()),
            s.format.as_deref(),
        );
        if s.status.is_some() {
            check(
                "status",
                event.as_ref().and_then(|e| e.status).map(|c| c.to_string()),
                s.status.as_deref(),
            );
        }
        if s.recipient.is_some() {
            check(
                "recipient",
                event.as_ref().and_then(|e| e.recipient.clone()),
                s.recipient.as_deref(),
            );
        }
        if s.diagnostic.is_some() {
            check(
                "diagnostic",
                event.as_ref().and_then(|e| e.diagnostic.clone()),
                s.diagnostic.as_deref(),
            );
        }
        let tag = match rp.find(&secret, &parsed.tag_candidates) {
            TagCheck::Verified(t) => {
                assert_eq!(
                    t,
                    Tag {
                        subscriber_id: 7,
                        issue: NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
                    },
                    "{}",
                    s.file
                );
                "verified"
            }
            TagCheck::Forged => "forged",
            TagCheck::NotOurs => "none",
        };
        check("tag", Some(tag.to_string()), Some(&s.tag));
        let key_kind = parsed.key.split(':').next().unwrap_or("").to_string();
        check(
            "key",
            Some(key_kind),
            Some(s.key.as_deref().unwrap_or("mid")),
        );
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
