//! `digestif editor`: pin or drop a story and write the introduction of an issue,
//! without opening `digests/<date>/editor.toml` by hand.

use std::path::Path;

use crate::archive;
use crate::cli::{DateArgs, EditorCmd};
use crate::editor::EditorPicks;

use super::exit::usage;
use super::{load_config, next_issue_of, now_of, CmdResult};

pub fn run(config: Option<&Path>, cmd: EditorCmd) -> CmdResult {
    let cfg = load_config(config)?;
    let when: &DateArgs = match &cmd {
        EditorCmd::Show(w) => w,
        EditorCmd::Pin(a) | EditorCmd::Drop(a) | EditorCmd::Reset(a) => &a.when,
        EditorCmd::Intro(a) => &a.when,
    };
    let date = next_issue_of(&cfg, when, now_of(when));
    let path = archive::editor_file(&cfg.archive_dir(), date);
    let mut picks = EditorPicks::load(&path).map_err(|e| {
        usage(anyhow::anyhow!(
            "{e}\nFix the file (keys: intro, pin, exclude) or remove it to start again."
        ))
    })?;
    let before = picks.clone();
    match &cmd {
        EditorCmd::Show(_) => {}
        EditorCmd::Pin(a) => picks.pin(&a.url).map_err(usage)?,
        EditorCmd::Drop(a) => picks.exclude(&a.url).map_err(usage)?,
        EditorCmd::Reset(a) => {
            if !picks.forget(&a.url).map_err(usage)? {
                eprintln!("{} was neither pinned nor dropped for {date}", a.url);
            }
        }
        EditorCmd::Intro(a) => picks.set_intro(if a.clear { None } else { a.text.as_deref() }),
    }
    if picks != before {
        archive::write_atomic(&path, picks.to_toml().as_bytes())?;
    }
    print!("{}", describe(&picks, date, &path));
    let built = archive::issue_dir(&cfg.archive_dir(), date)
        .join("digest.json")
        .is_file();
    if picks != before && built {
        eprintln!(
            "note: the issue of {date} is already built; `digestif build --date {date}` \
             rebuilds it with these picks (it refuses once the issue has gone out)"
        );
    }
    Ok(())
}

/// The picks as the editor reads them, then how to see the issue.
fn describe(p: &EditorPicks, date: chrono::NaiveDate, path: &Path) -> String {
    let mut out = format!("editor's picks for {date} ({})\n", path.display());
    match &p.intro {
        Some(t) => out.push_str(&format!("intro: {t}\n")),
        None => out.push_str("intro: (none)\n"),
    }
    for (label, urls) in [("pinned", &p.pin), ("dropped", &p.exclude)] {
        if urls.is_empty() {
            out.push_str(&format!("{label}: (none)\n"));
        } else {
            out.push_str(&format!("{label}:\n"));
            for (i, u) in urls.iter().enumerate() {
                out.push_str(&format!("  {}. {u}\n", i + 1));
            }
        }
    }
    out.push_str(&format!(
        "see the issue: digestif preview --date {date} --format text\n"
    ));
    out
}
