//! `digestif build`, `preview`, `articles`: the editor's view of an issue.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::archive;
use crate::cli::{ArticlesArgs, BuildArgs, PreviewArgs, PreviewFormat};
use crate::config::Config;
use crate::pipeline::{self, Built};
use crate::store::{Freeze, Store};

use super::{date_of, load_config, now_of, runtime, CmdResult};

fn report_sources(built: &Built) {
    for s in built.failed_sources() {
        eprintln!(
            "warning: source {:?} skipped: {}",
            s.name,
            s.error.as_ref().map_or(String::new(), |e| e.to_string())
        );
    }
}

/// How many subscribers already got (or may have got) the issue of `date`: the
/// ledger's `sent` and `sending` rows.
fn already_sent(store: &dyn Store, date: chrono::NaiveDate) -> anyhow::Result<u64> {
    let c = store
        .ledger_counts(date)
        .with_context(|| format!("cannot read the ledger of {date}"))?;
    Ok(c.sent + c.sending)
}

/// The issue of `date` as subscribers got it: frozen in the database, else archived.
fn kept_digest(
    cfg: &Config,
    store: Option<&dyn Store>,
    date: chrono::NaiveDate,
) -> anyhow::Result<Option<crate::domain::Digest>> {
    if let Some(issues) = store.map(|s| s.issues()) {
        if let Some(kept) = issues.frozen_issue(date)? {
            return kept.digest().map(Some);
        }
    }
    archive::read_digest(&cfg.archive_dir(), date)
}

pub fn build(config: Option<&Path>, args: &BuildArgs) -> CmdResult {
    let a = &args.when;
    let cfg = load_config(config)?;
    let now = now_of(a);
    let date = date_of(&cfg, a, now);
    let assets = pipeline::assets(&cfg)?;
    // No database file is created just to ask.
    let store = super::send::existing_store(&cfg)?;
    // The issue is frozen in the database and archived under its lease, held
    // until the end (as a send building it holds it): never while a send
    // builds, freezes or sends it, on this machine or another.
    let _lease = match &store {
        Some(s) => Some(pipeline::lease_to_rebuild(&cfg, s.clone(), date)?),
        None => None,
    };
    let sent = match &store {
        Some(s) => already_sent(s.as_ref(), date)?,
        None => 0,
    };
    let built = runtime()?.block_on(pipeline::build_seeing(&cfg, store.as_deref(), date, now))?;
    built.every_source_failed(date)?;
    report_sources(&built);
    let Some(digest) = built.digest.as_ref() else {
        // The sends waiting for this issue stop too (else they build it again).
        if let Some(Err(e)) = store
            .as_ref()
            .map(|s| pipeline::record_nothing_new(s.as_ref(), date))
        {
            eprintln!("warning: could not record in the database that {date} has nothing new: {e}");
        }
        println!("Nothing new for {date}: no issue written.");
        return Ok(());
    };
    if sent > 0 {
        // Subscribers and the web archive must show the same issue.
        let archived = kept_digest(&cfg, store.as_deref(), date)?;
        if archived.as_ref() == Some(digest) {
            println!(
                "Issue {date} is unchanged (already sent to {sent} subscriber(s)); archive kept as it is."
            );
            return Ok(());
        }
        if !args.force {
            return Err(anyhow::anyhow!(
                "the issue of {date} was already sent to {sent} subscriber(s) (see `digestif ledger --date {date}`), \
                 and building it now gives a different digest: the archive was left as it is, so that it shows \
                 what they received. Use `digestif build --date {date} --force` to overwrite it anyway."
            ));
        }
        eprintln!(
            "warning: the issue of {date} was already sent to {sent} subscriber(s); --force: overwriting its archive with a different digest"
        );
    }
    // Frozen in the database (replacing an issue nobody got yet, or with
    // --force), so that every sender and every `serve` has this one.
    let dir = match store.as_ref().map(|s| s.issues()) {
        Some(issues) => {
            let issue = pipeline::frozen(&cfg, &assets, digest, now)?;
            let kept = issues
                .freeze_issue(&issue, Freeze::Replace)
                .with_context(|| format!("cannot keep the issue of {date} in the database"))?;
            pipeline::archive_frozen(&cfg, &kept)?;
            archive::issue_dir(&cfg.archive_dir(), date)
        }
        None => pipeline::archive_issue(&cfg, &assets, digest)?.0,
    };
    let failed: Vec<&str> = built.failed_sources().map(|s| s.name.as_str()).collect();
    println!(
        "Issue {date}: {} stories ({}), ≈ {} min reading → {}",
        digest.stories.len(),
        digest.categories().join(", "),
        digest.reading_minutes,
        dir.display()
    );
    if failed.is_empty() {
        println!("Sources: {} read, none failed.", built.sources.len());
    } else {
        println!(
            "Sources: {} read, {} failed: {}",
            built.sources.len(),
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

pub fn preview(config: Option<&Path>, a: &PreviewArgs) -> CmdResult {
    let cfg = load_config(config)?;
    let now = now_of(&a.when);
    let date = super::next_issue_of(&cfg, &a.when, now);
    let assets = pipeline::assets(&cfg)?;
    // An issue frozen in the database (or archived) is shown as it is kept
    // (fast, exactly what went out, whatever this folder holds), unless the
    // editor asks for a rebuild. Nothing is written to the database.
    let store = super::send::existing_store(&cfg)?;
    let kept = match store.as_ref().map(|s| s.issues()) {
        Some(issues) if !a.rebuild => issues
            .frozen_issue(date)
            .with_context(|| format!("cannot read the issue of {date} from the database"))?,
        _ => None,
    };
    let archived = match &kept {
        Some(k) => Some(k.digest()?),
        None if a.rebuild => None,
        None => archive::read_digest(&cfg.archive_dir(), date)?,
    };
    let digest = match archived {
        Some(d) => d,
        None => {
            let built =
                runtime()?.block_on(pipeline::build_seeing(&cfg, store.as_deref(), date, now))?;
            built.every_source_failed(date)?;
            report_sources(&built);
            match built.digest {
                Some(d) => d,
                None => {
                    eprintln!("Nothing new for {date}: there would be no issue.");
                    return Err(anyhow::anyhow!("no issue for {date}"));
                }
            }
        }
    };
    // The web version (as kept, when it is), or the email exactly as one
    // subscriber gets it: (html, text).
    let render = || -> anyhow::Result<(String, String)> {
        match (&a.for_reader, &kept) {
            // The reader's variant as kept with the frozen issue: what they got
            // (or will get), whatever this machine's templates say now.
            (Some(who), kept) => {
                let kept_in = kept.as_ref().and(store.clone());
                super::send::email_for(&cfg, &assets, &digest, who, now, kept_in)
                    .map(|e| (e.html, e.text))
            }
            (None, Some(k)) => Ok((k.html.clone(), k.text.clone())),
            (None, None) => {
                let e = pipeline::render_public(&cfg, &assets, &digest);
                Ok((e.html, e.text))
            }
        }
    };
    let body = match a.format {
        PreviewFormat::Json => {
            serde_json::to_string_pretty(&digest).context("serialising the digest")? + "\n"
        }
        PreviewFormat::Html => render()?.0,
        PreviewFormat::Text => render()?.1,
    };
    let out_path = match (&a.out, a.open) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(std::env::temp_dir().join(format!("digestif-preview-{date}.html"))),
        (None, false) => None,
    };
    match &out_path {
        Some(p) => {
            let bytes = if a.open && a.format != PreviewFormat::Html {
                render()?.0
            } else {
                body
            };
            archive::write_atomic(p, bytes.as_bytes())?;
            eprintln!("Preview of {date} written to {}", p.display());
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(body.as_bytes())
                .context("writing to stdout")?;
        }
    }
    if a.open {
        let p = out_path.expect("set above");
        open_in_browser(&p)?;
    }
    Ok(())
}

fn open_in_browser(p: &Path) -> anyhow::Result<()> {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(p)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {opener} to open {}; open it by hand",
                p.display()
            )
        })?;
    Ok(())
}

pub fn articles(config: Option<&Path>, a: &ArticlesArgs) -> CmdResult {
    let cfg = load_config(config)?;
    let now = now_of(&a.when);
    let date = date_of(&cfg, &a.when, now);
    let built = runtime()?.block_on(pipeline::build(&cfg, date, now))?;
    report_sources(&built);
    let mut out = std::io::stdout().lock();
    for c in &built.candidates {
        let line = if a.json {
            serde_json::json!({
                "title": c.article.title,
                "url": c.article.url,
                "source": c.article.source,
                "category": c.article.category,
                "published": c.article.published.to_rfc3339(),
                "score": (c.score * 1000.0).round() / 1000.0,
                "picked": c.picked,
                "reason": c.reason.as_ref().map(|r| r.to_string()),
            })
            .to_string()
        } else {
            format!(
                "{} {:>6.3}  {:<12} {:<14} {}{}",
                if c.picked { "✔" } else { "·" },
                c.score,
                truncate(&c.article.category, 12),
                truncate(&c.article.source, 14),
                c.article.title,
                match &c.reason {
                    Some(r) => format!("  [{r}]"),
                    None => String::new(),
                }
            )
        };
        writeln!(out, "{line}").context("writing to stdout")?;
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}
