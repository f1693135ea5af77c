//! Subscribers in and out of CSV: a streaming import that checks every row and
//! reports each bad one by line number, and an export safe to open in a spreadsheet.
//!
//! Memory stays flat whatever the file's size: rows go to the store in batches,
//! and duplicates within the file are found through a 64-bit hash per address
//! (16 bytes a row), not a copy of the list.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::rc::Rc;
use std::str::FromStr;

use crate::domain::{Locale, SubscriberEmail, SubscriberStatus};
use crate::store::{NewSubscriber, StoreError, Subscribers, Upserted};

/// The columns a subscribers CSV may have; only `email` is required.
pub const COLUMNS: [&str; 6] = [
    "email",
    "name",
    "locale",
    "categories",
    "timezone",
    "status",
];

/// Rows written to the store per transaction.
pub const BATCH: usize = 20_000;

/// Longest name accepted (characters).
const MAX_NAME: usize = 200;

/// How many skipped line numbers the summary line names.
const SUMMARY_LINES: usize = 20;

/// A bad row: its line in the file (1 = the header), the column, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub field: String,
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.field, self.message)
    }
}

/// What stops an import or export as a whole (a bad row does not).
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The header row is missing, lacks `email`, or names unknown columns.
    #[error("{0}")]
    Header(String),
    #[error("cannot read the CSV: {0}")]
    Read(String),
    #[error("cannot write the CSV: {0}")]
    Write(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The counts of an import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Data rows read (blank lines are not rows).
    pub rows: u64,
    /// Rows that passed every check.
    pub valid: u64,
    /// New subscribers.
    pub inserted: u64,
    /// Known subscribers whose fields changed.
    pub updated: u64,
    /// Known subscribers left as they were (including unsubscribed addresses an
    /// import tried to re-activate: they stay unsubscribed).
    pub unchanged: u64,
    /// Addresses removed or forgotten earlier: left out, whatever the row says.
    pub suppressed: u64,
    /// Rows refused; each error went to the error callback.
    pub skipped: u64,
    /// The first skipped lines, for the summary line.
    pub skipped_lines: Vec<u64>,
    /// Nothing was written (`--dry-run`).
    pub dry_run: bool,
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            write!(
                f,
                "dry run: {} rows, {} valid, {} skipped; nothing written",
                self.rows, self.valid, self.skipped
            )?;
        } else {
            write!(
                f,
                "{} rows: {} imported, {} updated, {} unchanged, {} skipped",
                self.rows, self.inserted, self.updated, self.unchanged, self.skipped
            )?;
            if self.suppressed > 0 {
                write!(
                    f,
                    ", {} left out (removed or unsubscribed earlier)",
                    self.suppressed
                )?;
            }
        }
        if !self.skipped_lines.is_empty() {
            let lines: Vec<String> = self.skipped_lines.iter().map(u64::to_string).collect();
            let more = if self.skipped as usize > self.skipped_lines.len() {
                ", …"
            } else {
                ""
            };
            write!(f, " (lines {}{more})", lines.join(", "))?;
        }
        Ok(())
    }
}

/// Where each known column sits in the file.
#[derive(Debug, Clone)]
struct Layout {
    names: Vec<String>,
    email: usize,
    name: Option<usize>,
    locale: Option<usize>,
    categories: Option<usize>,
    timezone: Option<usize>,
    status: Option<usize>,
}

impl Layout {
    fn from_header(header: &csv::StringRecord, line: u64) -> Result<Layout, CsvError> {
        let names: Vec<String> = header
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let h = if i == 0 {
                    h.trim_start_matches('\u{feff}')
                } else {
                    h
                };
                h.trim().to_ascii_lowercase()
            })
            .collect();
        if names.iter().all(|n| n.is_empty()) {
            return Err(CsvError::Header(
                "the CSV has no header row: the first line must name the columns, e.g. \
                 email,name,locale,categories,timezone,status"
                    .into(),
            ));
        }
        let unknown: Vec<String> = names
            .iter()
            .filter(|n| !COLUMNS.contains(&n.as_str()))
            .map(|n| format!("{n:?}"))
            .collect();
        if !unknown.is_empty() {
            return Err(CsvError::Header(format!(
                "line {line}: unknown column{} {} in the header: the columns are {} (only email is \
                 required)",
                if unknown.len() > 1 { "s" } else { "" },
                unknown.join(", "),
                COLUMNS.join(", ")
            )));
        }
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(CsvError::Header(format!(
                    "line {line}: the column {n:?} appears twice in the header"
                )));
            }
        }
        let pos = |c: &str| names.iter().position(|n| n == c);
        let email = pos("email").ok_or_else(|| {
            CsvError::Header(format!(
                "line {line}: the header has no \"email\" column (found: {})",
                names.join(", ")
            ))
        })?;
        Ok(Layout {
            email,
            name: pos("name"),
            locale: pos("locale"),
            categories: pos("categories"),
            timezone: pos("timezone"),
            status: pos("status"),
            names,
        })
    }
}

/// Undoes the export's formula neutralisation (`'=x` → `=x`), so that an
/// export imports back unchanged.
fn unneutralise(s: &str) -> &str {
    match s.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@']) => rest,
        _ => s,
    }
}

/// Prefixes a cell a spreadsheet would run as a formula with a single quote.
pub fn neutralise(s: &str) -> Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{s}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn categories_of(raw: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in raw.split(';').map(str::trim).filter(|c| !c.is_empty()) {
        if !out.iter().any(|o| o == c) {
            out.push(c.to_string());
        }
    }
    out
}

/// Checks one data row: every problem becomes a [`RowError`] with the row's line.
fn parse_row(
    rec: &csv::StringRecord,
    layout: &Layout,
    line: u64,
) -> Result<NewSubscriber, Vec<RowError>> {
    let mut errors = Vec::new();
    let err = |errors: &mut Vec<RowError>, field: &str, message: String| {
        errors.push(RowError {
            line,
            field: field.to_string(),
            message,
        })
    };
    if rec.len() != layout.names.len() {
        err(
            &mut errors,
            "row",
            format!(
                "has {} fields, the header has {}",
                rec.len(),
                layout.names.len()
            ),
        );
        return Err(errors);
    }
    // CR/LF (or any control character) is refused in every field: names end up in
    // greetings and headers.
    let mut clean = vec![true; rec.len()];
    for (i, v) in rec.iter().enumerate() {
        if v.contains(['\r', '\n']) {
            err(
                &mut errors,
                &layout.names[i],
                "contains a line break (CR/LF)".into(),
            );
            clean[i] = false;
        } else if v.chars().any(char::is_control) {
            err(
                &mut errors,
                &layout.names[i],
                "contains a control character".into(),
            );
            clean[i] = false;
        }
    }
    let cell = |i: Option<usize>| -> Option<&str> {
        let i = i?;
        if !clean[i] {
            return None;
        }
        let v = unneutralise(rec.get(i)?.trim()).trim();
        (!v.is_empty()).then_some(v)
    };

    let email = if clean[layout.email] {
        match SubscriberEmail::parse(unneutralise(rec.get(layout.email).unwrap_or("").trim())) {
            Ok(e) => Some(e),
            Err(e) => {
                err(&mut errors, "email", e.to_string());
                None
            }
        }
    } else {
        None
    };
    let name = cell(layout.name).map(String::from);
    if let Some(n) = &name {
        if n.chars().count() > MAX_NAME {
            err(
                &mut errors,
                "name",
                format!("is longer than {MAX_NAME} characters"),
            );
        }
    }
    let locale = cell(layout.locale).and_then(|l| match Locale::from_str(l) {
        Ok(l) => Some(l),
        Err(_) => {
            let known: Vec<&str> = Locale::ALL.iter().map(|l| l.code()).collect();
            err(
                &mut errors,
                "locale",
                format!("unknown locale {l:?}: use {}", known.join(" or ")),
            );
            None
        }
    });
    let timezone = cell(layout.timezone).and_then(|t| match chrono_tz::Tz::from_str(t) {
        Ok(t) => Some(t),
        Err(_) => {
            err(
                &mut errors,
                "timezone",
                format!("unknown time zone {t:?}: use an IANA name such as Europe/Paris"),
            );
            None
        }
    });
    let status = match cell(layout.status).map(str::to_ascii_lowercase).as_deref() {
        None | Some("active") => SubscriberStatus::Active,
        Some("unsubscribed") => SubscriberStatus::Unsubscribed,
        Some(other) => {
            err(
                &mut errors,
                "status",
                format!("unknown status {other:?}: an import takes active or unsubscribed"),
            );
            SubscriberStatus::Active
        }
    };
    let categories = cell(layout.categories)
        .map(categories_of)
        .unwrap_or_default();
    match email {
        Some(email) if errors.is_empty() => Ok(NewSubscriber {
            email,
            name,
            locale,
            categories,
            timezone,
            status,
        }),
        _ => Err(errors),
    }
}

/// Where csv-core's state machine is, as far as record boundaries go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    StartRecord,
    StartField,
    InField,
    InQuoted,
    QuoteInQuoted,
}

/// Passes the input through unchanged while noting the line each CSV record starts
/// on. The csv crate's own record positions count a CRLF's LF and skipped blank
/// lines into the next record, so its line numbers drift; this follows the same
/// rules as csv-core (quotes open only at a field's start, `""` escapes, blank
/// lines are not records) and counts every LF.
struct LineTracker<R> {
    inner: R,
    state: Scan,
    line: u64,
    starts: Rc<RefCell<VecDeque<u64>>>,
}

impl<R: Read> LineTracker<R> {
    fn scan(&mut self, bytes: &[u8]) {
        let mut starts = self.starts.borrow_mut();
        for &b in bytes {
            let eol = b == b'\r' || b == b'\n';
            self.state = match self.state {
                Scan::StartRecord if eol => Scan::StartRecord,
                Scan::StartRecord => {
                    starts.push_back(self.line);
                    match b {
                        b'"' => Scan::InQuoted,
                        b',' => Scan::StartField,
                        _ => Scan::InField,
                    }
                }
                Scan::StartField | Scan::InField | Scan::QuoteInQuoted if eol => Scan::StartRecord,
                Scan::StartField | Scan::InField | Scan::QuoteInQuoted if b == b',' => {
                    Scan::StartField
                }
                Scan::StartField if b == b'"' => Scan::InQuoted,
                Scan::QuoteInQuoted if b == b'"' => Scan::InQuoted,
                Scan::StartField | Scan::InField | Scan::QuoteInQuoted => Scan::InField,
                Scan::InQuoted if b == b'"' => Scan::QuoteInQuoted,
                Scan::InQuoted => Scan::InQuoted,
            };
            if b == b'\n' {
                self.line += 1;
            }
        }
    }
}

impl<R: Read> Read for LineTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.scan(&buf[..n]);
        Ok(n)
    }
}

fn key_hash(e: &SubscriberEmail) -> u64 {
    // SipHash with fixed keys: the same address always hashes the same. Two different
    // addresses share a hash with a probability of about 3·10⁻⁸ in a million rows.
    let mut h = std::hash::DefaultHasher::new();
    e.key().hash(&mut h);
    h.finish()
}

/// Reads a subscribers CSV from `input` and upserts its valid rows into `store` in
/// batches of [`BATCH`] (`store: None` checks only: a dry run). Each bad row is
/// handed to `on_error` (one call per problem) and skipped; the rest is imported.
pub fn import(
    input: impl Read,
    store: Option<&dyn Subscribers>,
    on_error: &mut dyn FnMut(&RowError),
) -> Result<ImportSummary, CsvError> {
    import_in_batches(input, store, on_error, BATCH)
}

fn import_in_batches(
    input: impl Read,
    store: Option<&dyn Subscribers>,
    on_error: &mut dyn FnMut(&RowError),
    batch_size: usize,
) -> Result<ImportSummary, CsvError> {
    let Some(store) = store else {
        let mut summary = check_rows(input, on_error, batch_size, &mut |_| true)?;
        summary.dry_run = true;
        return Ok(summary);
    };
    // Checking rows and writing them overlap: one thread reads and checks, the other
    // writes the previous batch. At most three batches are in memory.
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<NewSubscriber>>(1);
        let writer = scope.spawn(move || -> Result<[u64; 4], StoreError> {
            let mut counts = [0; 4];
            for batch in rx {
                for outcome in store.upsert_many(&batch)? {
                    counts[match outcome {
                        Upserted::Inserted => 0,
                        Upserted::Updated => 1,
                        Upserted::Unchanged => 2,
                        Upserted::Suppressed => 3,
                    }] += 1;
                }
            }
            Ok(counts)
        });
        let read = check_rows(input, on_error, batch_size, &mut |batch| {
            tx.send(batch).is_ok()
        });
        drop(tx);
        let [inserted, updated, unchanged, suppressed] = writer
            .join()
            .map_err(|_| StoreError::Db("the import's writer thread panicked".into()))??;
        let summary = read?;
        Ok(ImportSummary {
            inserted,
            updated,
            unchanged,
            suppressed,
            ..summary
        })
    })
}

/// Reads and checks every row, handing valid ones to `emit` in batches of
/// `batch_size` (`emit` returns false to stop: the writer failed).
fn check_rows(
    input: impl Read,
    on_error: &mut dyn FnMut(&RowError),
    batch_size: usize,
    emit: &mut dyn FnMut(Vec<NewSubscriber>) -> bool,
) -> Result<ImportSummary, CsvError> {
    let starts = Rc::new(RefCell::new(VecDeque::new()));
    let tracker = LineTracker {
        inner: input,
        state: Scan::StartRecord,
        line: 1,
        starts: starts.clone(),
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(tracker);
    let header = rdr
        .headers()
        .map_err(|e| CsvError::Read(format!("line 1: {e}")))?
        .clone();
    // The line a record read from `rdr` starts on (falling back on the csv crate's
    // count if the two parsers ever disagree).
    let line_of = |pos: Option<&csv::Position>| {
        starts
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| pos.map(|p| p.line()).unwrap_or(0))
    };
    let header_line = line_of(header.position());
    let layout = Layout::from_header(&header, header_line)?;
    let mut summary = ImportSummary::default();
    let mut seen: HashMap<u64, u64> = HashMap::new();
    let mut batch: Vec<NewSubscriber> = Vec::with_capacity(batch_size);
    let mut rec = csv::StringRecord::new();
    let skip = |summary: &mut ImportSummary, line: u64| {
        summary.skipped += 1;
        if summary.skipped_lines.len() < SUMMARY_LINES {
            summary.skipped_lines.push(line);
        }
    };
    loop {
        match rdr.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = line_of(e.position());
                if let csv::ErrorKind::Utf8 { err, .. } = e.kind() {
                    summary.rows += 1;
                    on_error(&RowError {
                        line,
                        field: layout
                            .names
                            .get(err.field())
                            .cloned()
                            .unwrap_or_else(|| "row".into()),
                        message: "is not valid UTF-8 (save the file as UTF-8)".into(),
                    });
                    skip(&mut summary, line);
                    continue;
                }
                return Err(CsvError::Read(format!("line {line}: {e}")));
            }
        }
        summary.rows += 1;
        let line = line_of(rec.position());
        let row = parse_row(&rec, &layout, line).and_then(|row| {
            match seen.insert(key_hash(&row.email), line) {
                None => Ok(row),
                Some(first) => {
                    seen.insert(key_hash(&row.email), first);
                    Err(vec![RowError {
                        line,
                        field: "email".into(),
                        message: format!(
                            "{} already appears on line {first} (letter case does not count)",
                            row.email
                        ),
                    }])
                }
            }
        });
        match row {
            Ok(row) => {
                summary.valid += 1;
                batch.push(row);
            }
            Err(errors) => {
                for e in &errors {
                    on_error(e);
                }
                skip(&mut summary, line);
            }
        }
        if batch.len() >= batch_size
            && !emit(std::mem::replace(
                &mut batch,
                Vec::with_capacity(batch_size),
            ))
        {
            return Ok(summary);
        }
    }
    if !batch.is_empty() {
        emit(batch);
    }
    Ok(summary)
}

/// Writes every subscriber as CSV (header first), page by page, cells that a
/// spreadsheet would evaluate prefixed with `'`. Returns how many were written.
pub fn export(store: &dyn Subscribers, output: impl Write) -> Result<u64, CsvError> {
    let mut w = csv::Writer::from_writer(output);
    let werr = |e: csv::Error| CsvError::Write(e.into());
    w.write_record(COLUMNS).map_err(werr)?;
    let mut after = 0;
    let mut n = 0;
    loop {
        let page = store.subscribers_page(None, after, 5_000)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for s in &page {
            let categories = s.categories.join(";");
            let cells = [
                neutralise(s.email.as_str()),
                neutralise(s.name.as_deref().unwrap_or("")),
                Cow::Borrowed(s.locale.map(|l| l.code()).unwrap_or("")),
                neutralise(&categories),
                Cow::Borrowed(s.timezone.map(|t| t.name()).unwrap_or("")),
                Cow::Borrowed(s.status.as_str()),
            ];
            w.write_record(cells.iter().map(|c| c.as_bytes()))
                .map_err(werr)?;
            n += 1;
        }
    }
    w.flush().map_err(CsvError::Write)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    /// Runs an import, returning the summary and every error as a line of text.
    fn run(csv: &str, store: Option<&dyn Subscribers>) -> (ImportSummary, Vec<String>) {
        let mut errors = vec![];
        let summary = import_in_batches(
            csv.as_bytes(),
            store,
            &mut |e| errors.push(e.to_string()),
            3,
        )
        .unwrap();
        (summary, errors)
    }

    fn export_string(store: &dyn Subscribers) -> String {
        let mut out = vec![];
        export(store, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    const HOSTILE: &str = "\u{feff}Email,name,locale,categories,timezone,status\r
alice@example.com,Alice,fr,tech; world ;tech,Europe/Paris,active\r
\"=HYPERLINK(\"\"http://evil\"\")@example.com\",x,,,,
=cmd@example.com,\"=1+2\",en,,,
\"carol@example.com\",\"Carol
Bcc: x@y.com\",fr,,,
x@,X,,,,

alice@EXAMPLE.com,Alice again,,,,
dave@example.com,Dave,de,,,
erin@example.com,Erin,,,Mars/Olympus,
frank@example.com,Frank,en,,,maybe
gina@example.com,Gina,EN,,America/Montreal,Unsubscribed
henri@example.com,Henri,fr,,Europe/Nowhere,paused
only@example.com,two fields
";

    #[test]
    fn a_hostile_csv_reports_each_bad_row_by_its_line_and_imports_the_rest() {
        let store = SqliteStore::open_in_memory().unwrap();
        let (summary, errors) = run(HOSTILE, Some(&store));
        assert_eq!(
            errors,
            vec![
                "line 3: email: \"=HYPERLINK(\\\"http://evil\\\")@example.com\": forbidden character in local part",
                "line 5: name: contains a line break (CR/LF)",
                "line 7: email: \"x@\": bad domain \"\"",
                "line 9: email: alice@example.com already appears on line 2 (letter case does not count)",
                "line 10: locale: unknown locale \"de\": use fr or en",
                "line 11: timezone: unknown time zone \"Mars/Olympus\": use an IANA name such as Europe/Paris",
                "line 12: status: unknown status \"maybe\": an import takes active or unsubscribed",
                "line 14: timezone: unknown time zone \"Europe/Nowhere\": use an IANA name such as Europe/Paris",
                "line 14: status: unknown status \"paused\": an import takes active or unsubscribed",
                "line 15: row: has 2 fields, the header has 6",
            ]
        );
        assert_eq!(
            summary,
            ImportSummary {
                rows: 12,
                valid: 3,
                inserted: 3,
                updated: 0,
                unchanged: 0,
                suppressed: 0,
                skipped: 9,
                skipped_lines: vec![3, 5, 7, 9, 10, 11, 12, 14, 15],
                dry_run: false,
            }
        );
        assert_eq!(
            summary.to_string(),
            "12 rows: 3 imported, 0 updated, 0 unchanged, 9 skipped (lines 3, 5, 7, 9, 10, 11, 12, 14, 15)"
        );
        let alice = store
            .subscriber_by_email(&SubscriberEmail::parse("alice@example.com").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(alice.name.as_deref(), Some("Alice"));
        assert_eq!(alice.categories, vec!["tech", "world"]);
        assert_eq!(alice.timezone, Some(chrono_tz::Europe::Paris));
        let gina = store
            .subscriber_by_email(&SubscriberEmail::parse("gina@example.com").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(gina.status, SubscriberStatus::Unsubscribed);
        assert_eq!(gina.locale, Some(Locale::En));
    }

    #[test]
    fn a_dry_run_checks_every_row_and_writes_nothing() {
        let (summary, errors) = run(HOSTILE, None);
        assert_eq!(errors.len(), 10);
        assert_eq!(
            (summary.valid, summary.skipped, summary.inserted),
            (3, 9, 0)
        );
        assert!(summary
            .to_string()
            .starts_with("dry run: 12 rows, 3 valid, 9 skipped; nothing written"));
    }

    #[test]
    fn the_skipped_count_is_not_the_number_of_errors() {
        // Line 14 has two errors and counts as one skipped row.
        let (summary, errors) = run(HOSTILE, None);
        assert_eq!(
            errors.iter().filter(|e| e.starts_with("line 14:")).count(),
            2
        );
        assert_eq!(summary.skipped as usize, errors.len() - 1);
    }

    #[test]
    fn line_numbers_hold_with_stray_quotes_escaped_quotes_and_every_line_ending() {
        let csv = "\r\nemail,name\r\na@example.com,O\"Brien\r\n\r\n\"b@example.com\",\"say \"\"hi\"\"\nthere\"\rbad,x\n\n\nc@example.com,\"\"\"=x\"\nworse,y";
        let (s, errors) = run(csv, None);
        assert_eq!(
            errors,
            vec![
                "line 5: name: contains a line break (CR/LF)",
                "line 6: email: \"bad\" is not an email address (no @)",
                "line 10: email: \"worse\" is not an email address (no @)",
            ]
        );
        assert_eq!((s.rows, s.valid), (5, 2));
    }

    #[test]
    fn the_header_must_name_email_and_only_known_columns() {
        let err = import("name,email,phone,fax\n".as_bytes(), None, &mut |_| {}).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: unknown columns \"phone\", \"fax\" in the header: the columns are email, name, \
             locale, categories, timezone, status (only email is required)"
        );
        let err = import("name,locale\nA,fr\n".as_bytes(), None, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("no \"email\" column"), "{err}");
        let err = import("".as_bytes(), None, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("no header row"), "{err}");
        let err = import("email,Email\n".as_bytes(), None, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
    }

    #[test]
    fn a_file_with_only_an_email_column_imports_active_subscribers() {
        let store = SqliteStore::open_in_memory().unwrap();
        let (s, errors) = run("email\na@example.com\nb@example.org\n", Some(&store));
        assert!(errors.is_empty());
        assert_eq!((s.inserted, s.skipped), (2, 0));
        let page = store
            .subscribers_page(Some(SubscriberStatus::Active), 0, 10)
            .unwrap();
        assert_eq!(page.len(), 2);
    }

    #[test]
    fn invalid_utf8_is_reported_on_its_line_and_the_import_goes_on() {
        let store = SqliteStore::open_in_memory().unwrap();
        let mut bytes = b"email,name\na@example.com,A\nb@example.com,".to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe, b'\n']);
        bytes.extend_from_slice(b"c@example.com,C\n");
        let mut errors = vec![];
        let s = import(&bytes[..], Some(&store), &mut |e| {
            errors.push(e.to_string())
        })
        .unwrap();
        assert_eq!(
            errors,
            vec!["line 3: name: is not valid UTF-8 (save the file as UTF-8)"]
        );
        assert_eq!((s.rows, s.inserted, s.skipped), (3, 2, 1));
    }

    #[test]
    fn a_reimport_counts_updates_and_keeps_unsubscribed_addresses_unsubscribed() {
        let store = SqliteStore::open_in_memory().unwrap();
        run(
            "email,name,status\na@example.com,A,active\nb@example.com,B,unsubscribed\nc@example.com,C,\n",
            Some(&store),
        );
        let (s, errors) = run(
            "email,name,status\na@example.com,A2,active\nb@example.com,B,active\nc@example.com,C,\nd@example.com,D,\n",
            Some(&store),
        );
        assert!(errors.is_empty());
        assert_eq!((s.inserted, s.updated, s.unchanged), (1, 1, 2));
        let b = store
            .subscriber_by_email(&SubscriberEmail::parse("b@example.com").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(b.status, SubscriberStatus::Unsubscribed);
    }

    #[test]
    fn export_neutralises_cells_a_spreadsheet_would_run() {
        let store = SqliteStore::open_in_memory().unwrap();
        let (_, errors) = run(
            "email,name,categories\n=cmd@example.com,=1+2,@SUM(A1);tech\n-x@example.com,+33 6 12,\nplain@example.com,Ana,tech\n",
            Some(&store),
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            export_string(&store),
            "email,name,locale,categories,timezone,status\n\
             '=cmd@example.com,'=1+2,,'@SUM(A1);tech,,active\n\
             '-x@example.com,'+33 6 12,,,,active\n\
             plain@example.com,Ana,,tech,,active\n"
        );
    }

    #[test]
    fn import_export_import_is_stable() {
        let example = include_str!("../subscribers.example.csv");
        let first = SqliteStore::open_in_memory().unwrap();
        let (s, errors) = run(example, Some(&first));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(s.inserted >= 6);
        let (_, errors) = run(HOSTILE, Some(&first));
        assert_eq!(errors.len(), 10);
        let exported = export_string(&first);

        let second = SqliteStore::open_in_memory().unwrap();
        let (s2, errors) = run(&exported, Some(&second));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s2.inserted, s.inserted + 3);
        assert_eq!(export_string(&second), exported);
        // The same file again changes nothing.
        let (s3, _) = run(&exported, Some(&second));
        assert_eq!((s3.inserted, s3.updated, s3.unchanged), (0, 0, s2.inserted));
    }
}
