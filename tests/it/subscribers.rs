//! End-to-end: `digestif subscribers …` run as a binary against a SQLite file.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::site::{digestif_at, stderr, stdout};

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("digestif.toml"),
            "[newsletter]\nname = \"L'Essentiel\"\ntimezone = \"Europe/Paris\"\n\
             base_url = \"https://news.example.com\"\n\n\
             [storage]\ndatabase = \"sqlite://subs.db\"\n",
        )
        .unwrap();
        Site { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn run(&self, args: &[&str]) -> Output {
        digestif_at(
            &self.path("digestif.toml"),
            &[&["subscribers"], args].concat(),
        )
        // Relative paths in the config resolve against its folder, not here.
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap()
    }

    fn list(&self, args: &[&str]) -> Vec<String> {
        let out = self.run(&[&["list"], args].concat());
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).lines().map(String::from).collect()
    }
}

fn example() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/subscribers.example.csv"
    ))
}

#[test]
fn the_example_csv_imports_cleanly_and_lists_one_line_per_subscriber() {
    let site = Site::new();
    let out = site.run(&["import", example().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "8 rows: 8 imported, 0 updated, 0 unchanged, 0 skipped"
    );
    assert!(
        site.path("subs.db").exists(),
        "the database is created next to the config"
    );
    let all = site.list(&[]);
    assert_eq!(all.len(), 8);
    assert_eq!(
        all[0],
        "claire.martin@example.com\tactive\tClaire Martin\tfr\tpolitique;économie"
    );
    let unsubscribed = site.list(&["--status", "unsubscribed"]);
    assert_eq!(
        unsubscribed,
        vec!["olivia.brown@example.org\tunsubscribed\tOlivia Brown\ten\tscience"]
    );
    // Importing the same file again changes nothing.
    let again = site.run(&["import", example().to_str().unwrap()]);
    assert_eq!(
        stdout(&again).trim(),
        "8 rows: 0 imported, 0 updated, 8 unchanged, 0 skipped"
    );
}

#[test]
fn a_hostile_csv_exits_1_names_each_bad_line_and_imports_the_rest() {
    let site = Site::new();
    let csv = site.write(
        "hostile.csv",
        "\u{feff}email,name,locale,timezone\r\n\
         ok@example.com,Ok,fr,Europe/Paris\r\n\
         x@,X,,\r\n\
         \"crlf@example.com\",\"Eve\r\nBcc: victim@example.org\",en,\r\n\
         ok@EXAMPLE.com,Dup,,\r\n\
         \r\n\
         de@example.com,De,de,\r\n\
         tz@example.com,Tz,,Moon/Base\r\n\
         last@example.org,=HYPERLINK(\"http://x\"),en,\r\n",
    );
    let out = site.run(&["import", csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "7 rows: 2 imported, 0 updated, 0 unchanged, 5 skipped (lines 3, 4, 6, 8, 9)"
    );
    let err = stderr(&out);
    let file = csv.display().to_string();
    for expected in [
        format!("{file}: line 3: email: \"x@\": bad domain \"\""),
        format!("{file}: line 4: name: contains a line break (CR/LF)"),
        format!("{file}: line 6: email: ok@example.com already appears on line 2"),
        format!("{file}: line 8: locale: unknown locale \"de\""),
        format!("{file}: line 9: timezone: unknown time zone \"Moon/Base\""),
        "5 of 7 rows skipped".to_string(),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
    let all = site.list(&[]);
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all[1].starts_with("last@example.org\tactive\t=HYPERLINK"));
}

#[test]
fn a_dry_run_reports_and_writes_nothing() {
    let site = Site::new();
    let csv = site.write("s.csv", "email\na@example.com\nnot-an-address\n");
    let out = site.run(&["import", "--dry-run", csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out).trim(),
        "dry run: 2 rows, 1 valid, 1 skipped; nothing written (lines 3)"
    );
    assert!(site.list(&[]).is_empty());
}

#[test]
fn an_unknown_column_stops_the_import_before_any_row() {
    let site = Site::new();
    let csv = site.write("s.csv", "email,phone\na@example.com,0600\n");
    let out = site.run(&["import", csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("line 1: unknown column \"phone\" in the header"),
        "{}",
        stderr(&out)
    );
    assert!(site.list(&[]).is_empty());
}

#[test]
fn an_export_neutralises_formulas_and_imports_back_unchanged() {
    let site = Site::new();
    let csv = site.write(
        "s.csv",
        "email,name,categories\n=x@example.com,=cmd|' /C calc'!A0,+tech\na@example.org,Ana,\n",
    );
    let out = site.run(&["import", csv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = site.path("out.csv");
    let out = site.run(&["export", exported.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&exported).unwrap();
    assert_eq!(
        text,
        "email,name,locale,categories,timezone,status\n\
         '=x@example.com,'=cmd|' /C calc'!A0,,'+tech,,active\n\
         a@example.org,Ana,,,,active\n"
    );
    // To stdout too.
    let out = site.run(&["export"]);
    assert_eq!(stdout(&out), text);
    // Into a fresh database: the same export comes out.
    let other = Site::new();
    let out = other.run(&["import", exported.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&other.run(&["export"])), text);
}

#[test]
fn an_unsubscribed_address_stays_unsubscribed_whatever_a_later_import_or_add_says() {
    let site = Site::new();
    let first = site.write("a.csv", "email,status\nleft@example.com,unsubscribed\n");
    assert!(site
        .run(&["import", first.to_str().unwrap()])
        .status
        .success());
    let second = site.write("b.csv", "email,status,name\nleft@EXAMPLE.com,active,Left\n");
    let out = site.run(&["import", second.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "1 rows: 0 imported, 1 updated, 0 unchanged, 0 skipped"
    );
    assert_eq!(
        site.list(&[]),
        vec!["left@example.com\tunsubscribed\tLeft\t-\t-"]
    );
    let out = site.run(&["add", "left@EXAMPLE.COM"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unsubscribed earlier and stays unsubscribed"));
    assert_eq!(site.list(&["--status", "active"]).len(), 0);
}

#[test]
fn add_then_remove_one_subscriber() {
    let site = Site::new();
    let out = site.run(&[
        "add",
        "Nina@Example.COM",
        "--name",
        "Nina",
        "--locale",
        "en",
        "--categories",
        "tech; science",
        "--timezone",
        "America/Montreal",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "Nina@example.com: added");
    assert_eq!(
        site.list(&[]),
        vec!["Nina@example.com\tactive\tNina\ten\ttech;science"]
    );
    let bad = site.run(&["add", "z@example.com", "--timezone", "Europe/Atlantis"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("unknown time zone \"Europe/Atlantis\""));
    // One address whatever its letter case.
    let out = site.run(&["remove", "nina@example.com"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(site.list(&[]).is_empty());
    let out = site.run(&["remove", "Nina@example.com"]);
    assert_eq!(out.status.code(), Some(1), "already removed");
    let bad = site.run(&["list", "--status", "gone"]);
    assert_eq!(bad.status.code(), Some(2));
}
