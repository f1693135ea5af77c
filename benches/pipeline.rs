//! Build and render benchmarks: a digest from 100 local feeds × 50 items (target:
//! < 0.5 s for the whole build), then rendering once per variant and personalising
//! per subscriber (target: microseconds).
//!
//! `cargo bench --bench pipeline`. Under `cargo test`, where criterion runs each
//! benchmark once to see that it works, the fixture has a tenth of the feeds.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};

use digestif::articles;
use digestif::config::Config;
use digestif::domain::{issue_window, Digest};
use digestif::editor::EditorPicks;
use digestif::ingest;
use digestif::pipeline;
use digestif::render::{self, Assets, Personal};
use digestif::select::{self, SelectParams};

const FEEDS: usize = 100;
/// The feeds of the fixture when criterion only tests the benchmarks (no
/// `--bench`, as under `cargo test`): the same code paths in a tenth of the
/// time of a debug build.
const TEST_FEEDS: usize = 10;
const ITEMS: usize = 50;
const CATEGORIES: [&str; 5] = ["Monde", "Économie", "Culture", "Sport", "Sciences"];

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 27).expect("valid date")
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-27T05:30:00Z")
        .expect("valid time")
        .with_timezone(&Utc)
}

const WORDS: [&str; 16] = [
    "le",
    "gouvernement",
    "annonce",
    "une",
    "réforme",
    "des",
    "retraites",
    "après",
    "plusieurs",
    "semaines",
    "de",
    "négociations",
    "avec",
    "les",
    "syndicats",
    "européens",
];

/// How many feeds the fixture has: `FEEDS` when benchmarking, `TEST_FEEDS` otherwise.
fn feeds() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        FEEDS
    } else {
        TEST_FEEDS
    }
}

/// One RSS 2.0 feed of `ITEMS` items spread over the 24 hours before `now`. Every
/// seventh item links to a story other feeds carry too, so dedupe has work to do.
fn feed_xml(feed: usize) -> String {
    let mut xml = String::with_capacity(64 * 1024);
    let _ = write!(
        xml,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel>\
         <title>Source {feed}</title><link>https://source{feed}.example.com/</link>\
         <description>Bench feed {feed}</description>\n"
    );
    for item in 0..ITEMS {
        let shared = item % 7 == 0;
        let link = if shared {
            format!("https://shared.example.com/story/{item}")
        } else {
            format!("https://source{feed}.example.com/{item}")
        };
        let title = if shared {
            format!("Story {item} that many sources carry")
        } else {
            format!(
                "Story {item} of source {feed}: {}",
                WORDS[(feed + item) % 16]
            )
        };
        let published = now() - chrono::Duration::seconds(((item * FEEDS + feed) * 17) as i64);
        let mut body = String::new();
        for w in 0..70 {
            body.push_str(WORDS[(w * 7 + item + feed) % 16]);
            body.push(' ');
        }
        let _ = writeln!(
            xml,
            "<item><title>{title}</title><link>{link}</link><guid>{link}</guid>\
             <pubDate>{}</pubDate><category>{}</category>\
             <description>&lt;p&gt;{body}&lt;/p&gt;</description></item>",
            published.to_rfc2822(),
            CATEGORIES[feed % CATEGORIES.len()],
        );
    }
    xml.push_str("</channel></rss>\n");
    xml
}

/// Writes the feeds and a config naming them into `dir`.
fn fixture(dir: &Path) -> Config {
    let mut toml = String::from(
        "[newsletter]\nname = \"Bench\"\ntagline = \"Bench\"\nlocale = \"fr\"\n\
         timezone = \"Europe/Paris\"\nbase_url = \"https://news.example.com\"\n\
         send_time = \"07:00\"\nwindow_hours = 24\nmax_articles = 10\n\n",
    );
    std::fs::create_dir_all(dir.join("feeds")).expect("feeds folder");
    for f in 0..feeds() {
        let path = dir.join("feeds").join(format!("feed{f}.xml"));
        std::fs::write(&path, feed_xml(f)).expect("write feed");
        let _ = write!(
            toml,
            "[[sources]]\nname = \"Source {f}\"\npath = \"feeds/feed{f}.xml\"\ncategory = \"{}\"\nweight = {}\n\n",
            CATEGORIES[f % CATEGORIES.len()],
            0.5 + (f % 10) as f64 / 10.0,
        );
    }
    Config::parse(&toml, dir).expect("bench config is valid")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn build_digest(cfg: &Config, rt: &tokio::runtime::Runtime) -> Digest {
    let built = rt
        .block_on(pipeline::build(cfg, date(), now()))
        .expect("build");
    assert!(
        built.failed_sources().next().is_none(),
        "every bench feed must parse"
    );
    built.digest.expect("the bench feeds yield a digest")
}

fn bench_build(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = fixture(dir.path());
    let rt = runtime();
    let digest = build_digest(&cfg, &rt);
    assert!(!digest.stories.is_empty());

    let mut g = c.benchmark_group("build");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let count = feeds();
    g.bench_function(
        format!("pipeline::build {count} feeds x {ITEMS} items"),
        |b| {
            b.iter(|| {
                rt.block_on(pipeline::build(&cfg, date(), now()))
                    .expect("build")
            })
        },
    );
    g.bench_function(format!("ingest {count} feeds x {ITEMS} items"), |b| {
        b.iter(|| rt.block_on(ingest::ingest(&cfg, now())))
    });
    let (pool, _) = rt.block_on(ingest::ingest(&cfg, now()));
    g.bench_function(format!("dedupe {} articles", count * ITEMS), |b| {
        b.iter_batched(|| pool.clone(), articles::dedupe, BatchSize::LargeInput)
    });
    let (kept, dups) = articles::dedupe(pool.clone());
    let n = &cfg.newsletter;
    let (window_start, window_end) =
        issue_window(date(), n.send_time.0, n.timezone.0, n.window_hours);
    let editor = EditorPicks::default();
    let already_sent = Default::default();
    let params = SelectParams {
        date: date(),
        window_start,
        window_end,
        now: now(),
        budget_minutes: n.reading_budget_minutes,
        words_per_minute: n.words_per_minute,
        max_articles: n.max_articles,
        ranking: &cfg.ranking,
        editor: &editor,
        already_sent: &already_sent,
    };
    g.bench_function("select from the deduplicated pool", |b| {
        b.iter_batched(
            || (kept.clone(), dups.clone()),
            |(k, d)| select::select(k, d, &params),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_render(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = fixture(dir.path());
    let rt = runtime();
    let digest = build_digest(&cfg, &rt);
    let assets = Assets::builtin();
    let subject = cfg.sender.subject.clone();
    let follow = vec!["Sport".to_string(), "Culture".to_string()];

    let mut g = c.benchmark_group("render");
    g.bench_function("render_variant (once per locale x categories)", |b| {
        b.iter(|| {
            render::render_variant(
                black_box(&digest),
                &assets,
                digest.locale,
                &follow,
                &subject,
            )
        })
    });
    let template = render::render_variant(&digest, &assets, digest.locale, &follow, &subject);
    let personal = Personal {
        name: Some("Camille Dupont".into()),
        unsubscribe_url: "https://news.example.com/unsubscribe?token=AbCdEf0123456789".into(),
    };
    let sample = template.personalise(&personal);
    eprintln!(
        "one personalised message: html {} bytes, text {} bytes",
        sample.html.len(),
        sample.text.len()
    );
    g.bench_function("personalise (per subscriber)", |b| {
        b.iter(|| template.personalise(black_box(&personal)))
    });
    g.bench_function("render_public (archive, preview)", |b| {
        b.iter(|| render::render_public(black_box(&digest), &assets, &subject))
    });
    g.finish();
}

criterion_group!(benches, bench_build, bench_render);
criterion_main!(benches);
