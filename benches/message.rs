//! Per-subscriber message cost: personalising the rendered variant, signing the
//! unsubscribe token and building the MIME message (what the send loop does for
//! every subscriber, before the wire): from the variant's pre-encoded parts (the
//! path without DKIM) and through lettre (the path with DKIM, signing excluded).
//!
//! `cargo bench --bench message`

use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use digestif::config::{Config, Secret};
use digestif::deliver::send::{Compose, DigestComposer};
use digestif::domain::{Locale, Subscriber, SubscriberEmail, SubscriberStatus};
use digestif::pipeline;

fn example_config() -> Config {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text =
        std::fs::read_to_string(root.join("digestif.example.toml")).expect("digestif.example.toml");
    Config::parse(&text, root).expect("example config is valid")
}

fn subscriber(id: i64) -> Subscriber {
    Subscriber {
        id,
        link_key: Default::default(),
        email: SubscriberEmail::parse(&format!("reader{id}@bench.example.com"))
            .expect("valid address"),
        name: Some(format!("Reader {id}")),
        locale: Some(Locale::Fr),
        categories: vec!["Sport".into()],
        timezone: None,
        status: SubscriberStatus::Active,
    }
}

fn bench_message(c: &mut Criterion) {
    let cfg = example_config();
    let date = NaiveDate::from_ymd_opt(2026, 11, 27).expect("date");
    let now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-27T05:30:00Z")
        .expect("time")
        .with_timezone(&Utc);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let digest = rt
        .block_on(pipeline::build(&cfg, date, now))
        .expect("build")
        .digest
        .expect("the example feeds yield a digest for 2026-11-27");
    let assets = pipeline::assets(&cfg).expect("assets");
    let composer = DigestComposer::new(
        &cfg,
        &digest,
        &assets,
        Secret::new("bench-secret-0123456789abcdef"),
        now,
    )
    .expect("composer");
    let one = composer.compose(&subscriber(1)).expect("compose");
    eprintln!("one message: {} bytes", one.bytes.len());

    let mut g = c.benchmark_group("message");
    g.throughput(Throughput::Elements(1));
    let mut id = 0;
    g.bench_function("render_for (personalise + token)", |b| {
        b.iter(|| {
            id += 1;
            composer.render_for(black_box(&subscriber(id)))
        })
    });
    g.bench_function("compose (token + pre-encoded variant, no DKIM)", |b| {
        b.iter(|| {
            id += 1;
            composer
                .compose(black_box(&subscriber(id)))
                .expect("compose")
        })
    });
    g.bench_function(
        "compose_with_lettre (render_for + lettre MIME build)",
        |b| {
            b.iter(|| {
                id += 1;
                composer
                    .compose_with_lettre(black_box(&subscriber(id)))
                    .expect("compose")
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench_message);
criterion_main!(benches);
