//! SQLite side of [`IssueStore`]: the `issues` and `issue_variants` tables (migration 0005).

use std::str::FromStr;

use chrono::NaiveDate;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{bad_column, day, db, parse_day, parse_time, split_categories, ts, SqliteStore};
use crate::domain::Locale;
use crate::store::issues::{Freeze, FrozenIssue, IssueStore, VariantRow};
use crate::store::{StoreError, StoreResult};

/// Reads `issue_date, digest, html, text, frozen_at`.
fn issue_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<FrozenIssue> {
    Ok(FrozenIssue {
        date: parse_day(&r.get::<_, String>(0)?, 0)?,
        digest: r.get(1)?,
        html: r.get(2)?,
        text: r.get(3)?,
        frozen_at: parse_time(&r.get::<_, String>(4)?, 4)?,
    })
}

fn issue_in(conn: &rusqlite::Connection, date: NaiveDate) -> rusqlite::Result<Option<FrozenIssue>> {
    conn.prepare_cached(
        "SELECT issue_date, digest, html, text, frozen_at FROM issues WHERE issue_date = ?1",
    )?
    .query_row([day(date)], issue_of)
    .optional()
}

impl IssueStore for SqliteStore {
    fn freeze_issue(&self, issue: &FrozenIssue, mode: Freeze) -> StoreResult<FrozenIssue> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        if mode == Freeze::KeepFirst {
            if let Some(kept) = issue_in(&tx, issue.date).map_err(db)? {
                return Ok(kept);
            }
        }
        // The variants cascade with a replaced issue.
        tx.execute(
            "DELETE FROM issues WHERE issue_date = ?1",
            [day(issue.date)],
        )
        .map_err(db)?;
        tx.execute(
            "INSERT INTO issues (issue_date, digest, html, text, frozen_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![day(issue.date), issue.digest, issue.html, issue.text, ts(issue.frozen_at)],
        )
        .map_err(db)?;
        let kept = issue_in(&tx, issue.date)
            .map_err(db)?
            .ok_or_else(|| StoreError::Db(format!("the issue of {} was not kept", issue.date)))?;
        tx.commit().map_err(db)?;
        Ok(kept)
    }

    fn frozen_issue(&self, date: NaiveDate) -> StoreResult<Option<FrozenIssue>> {
        issue_in(&self.reader(), date).map_err(db)
    }

    fn frozen_dates(&self) -> StoreResult<Vec<NaiveDate>> {
        let conn = self.reader();
        let mut st = conn
            .prepare_cached("SELECT issue_date FROM issues ORDER BY issue_date DESC")
            .map_err(db)?;
        let rows = st
            .query_map([], |r| parse_day(&r.get::<_, String>(0)?, 0))
            .map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }

    fn freeze_variant(&self, date: NaiveDate, key: &str, template: &str) -> StoreResult<String> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        tx.execute(
            "INSERT INTO issue_variants (issue_date, variant, template) VALUES (?1, ?2, ?3)
             ON CONFLICT (issue_date, variant) DO NOTHING",
            params![day(date), key, template],
        )
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::NotFrozen {
                date,
                variant: key.to_string(),
            },
            _ => db(e),
        })?;
        let kept: String = tx
            .query_row(
                "SELECT template FROM issue_variants WHERE issue_date = ?1 AND variant = ?2",
                params![day(date), key],
                |r| r.get(0),
            )
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(kept)
    }

    fn frozen_variant(&self, date: NaiveDate, key: &str) -> StoreResult<Option<String>> {
        self.reader()
            .prepare_cached(
                "SELECT template FROM issue_variants WHERE issue_date = ?1 AND variant = ?2",
            )
            .map_err(db)?
            .query_row(params![day(date), key], |r| r.get(0))
            .optional()
            .map_err(db)
    }

    fn variants_in_use(&self) -> StoreResult<Vec<(Option<Locale>, Vec<String>)>> {
        let conn = self.reader();
        let mut st = conn
            .prepare_cached(
                "SELECT DISTINCT locale, categories FROM subscribers WHERE status = 'active'",
            )
            .map_err(db)?;
        let rows = st
            .query_map([], |r| {
                let locale: Option<String> = r.get(0)?;
                let locale = locale
                    .map(|l| Locale::from_str(&l).map_err(|e| bad_column(0, e)))
                    .transpose()?;
                Ok((locale, split_categories(&r.get::<_, String>(1)?)))
            })
            .map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }
}

/// Every frozen issue and variant, for `store copy`.
pub(super) fn dump_in(
    conn: &rusqlite::Connection,
) -> rusqlite::Result<(Vec<FrozenIssue>, Vec<VariantRow>)> {
    let issues = conn
        .prepare(
            "SELECT issue_date, digest, html, text, frozen_at FROM issues ORDER BY issue_date",
        )?
        .query_map([], issue_of)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let variants = conn
        .prepare(
            "SELECT issue_date, variant, template FROM issue_variants
             ORDER BY issue_date, variant COLLATE BINARY",
        )?
        .query_map([], |r| {
            Ok(VariantRow {
                issue_date: parse_day(&r.get::<_, String>(0)?, 0)?,
                variant: r.get(1)?,
                template: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((issues, variants))
}

/// Writes copied issues and variants (inside the copy's transaction).
pub(super) fn load_in(
    conn: &rusqlite::Connection,
    issues: &[FrozenIssue],
    variants: &[VariantRow],
) -> rusqlite::Result<()> {
    let mut st = conn.prepare(
        "INSERT INTO issues (issue_date, digest, html, text, frozen_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for i in issues {
        st.execute(params![
            day(i.date),
            i.digest,
            i.html,
            i.text,
            ts(i.frozen_at)
        ])?;
    }
    let mut st = conn.prepare(
        "INSERT INTO issue_variants (issue_date, variant, template) VALUES (?1, ?2, ?3)",
    )?;
    for v in variants {
        st.execute(params![day(v.issue_date), v.variant, v.template])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite::{at, date};

    #[test]
    fn an_issue_is_kept_under_its_day_and_its_variants_go_with_a_replacement() {
        let s = SqliteStore::open_in_memory().unwrap();
        let issue = FrozenIssue {
            date: date(),
            digest: "{}".into(),
            html: "<p>i</p>".into(),
            text: "i".into(),
            frozen_at: at(6, 30),
        };
        s.freeze_issue(&issue, Freeze::KeepFirst).unwrap();
        s.freeze_variant(date(), "fr:", "{\"t\": 1}").unwrap();
        let count = |sql: &str| -> i64 { s.conn().query_row(sql, [], |r| r.get(0)).unwrap() };
        let (day, frozen_at): (String, String) = s
            .conn()
            .query_row("SELECT issue_date, frozen_at FROM issues", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(day, "2026-03-02");
        assert_eq!(frozen_at, ts(at(6, 30)));
        assert_eq!(
            count("SELECT COUNT(*) FROM issue_variants WHERE issue_date = '2026-03-02'"),
            1
        );
        s.freeze_issue(&issue, Freeze::Replace).unwrap();
        assert_eq!(count("SELECT COUNT(*) FROM issue_variants"), 0);
        assert_eq!(count("SELECT COUNT(*) FROM issues"), 1);
    }
}
