//! PostgreSQL side of [`IssueStore`]: the `issues` and `issue_variants` tables (migration 0005).

use std::str::FromStr;

use chrono::NaiveDate;
use postgres::{GenericClient, Row};

use super::{bad, db, off_runtime, PgStore};
use crate::domain::Locale;
use crate::store::issues::{Freeze, FrozenIssue, IssueStore, VariantRow};
use crate::store::sqlite::split_categories;
use crate::store::{StoreError, StoreResult};

const ISSUE: &str =
    "SELECT issue_date, digest, html, text, frozen_at FROM issues WHERE issue_date = $1";

fn issue_of(r: &Row) -> FrozenIssue {
    FrozenIssue {
        date: r.get(0),
        digest: r.get(1),
        html: r.get(2),
        text: r.get(3),
        frozen_at: r.get(4),
    }
}

impl IssueStore for PgStore {
    fn freeze_issue(&self, issue: &FrozenIssue, mode: Freeze) -> StoreResult<FrozenIssue> {
        off_runtime(|| {
            let mut c = self.conn()?;
            let mut tx = c.client.transaction().map_err(db)?;
            match mode {
                // Two processes freezing at once: the second insert waits for
                // the first to commit, then does nothing.
                Freeze::KeepFirst => tx.execute(
                    "INSERT INTO issues (issue_date, digest, html, text, frozen_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (issue_date) DO NOTHING",
                    &[
                        &issue.date,
                        &issue.digest,
                        &issue.html,
                        &issue.text,
                        &issue.frozen_at,
                    ],
                ),
                Freeze::Replace => tx
                    .execute("DELETE FROM issues WHERE issue_date = $1", &[&issue.date])
                    .and_then(|_| {
                        tx.execute(
                            "INSERT INTO issues (issue_date, digest, html, text, frozen_at)
                             VALUES ($1, $2, $3, $4, $5)",
                            &[
                                &issue.date,
                                &issue.digest,
                                &issue.html,
                                &issue.text,
                                &issue.frozen_at,
                            ],
                        )
                    }),
            }
            .map_err(db)?;
            let kept = tx
                .query_opt(ISSUE, &[&issue.date])
                .map_err(db)?
                .map(|r| issue_of(&r))
                .ok_or_else(|| {
                    StoreError::Db(format!("the issue of {} was not kept", issue.date))
                })?;
            tx.commit().map_err(db)?;
            Ok(kept)
        })
    }

    fn frozen_issue(&self, date: NaiveDate) -> StoreResult<Option<FrozenIssue>> {
        off_runtime(|| Ok(self.query(ISSUE, &[&date])?.first().map(issue_of)))
    }

    fn frozen_dates(&self) -> StoreResult<Vec<NaiveDate>> {
        off_runtime(|| {
            Ok(self
                .query(
                    "SELECT issue_date FROM issues ORDER BY issue_date DESC",
                    &[],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    fn freeze_variant(&self, date: NaiveDate, key: &str, template: &str) -> StoreResult<String> {
        off_runtime(|| {
            let mut c = self.conn()?;
            let mut tx = c.client.transaction().map_err(db)?;
            tx.execute(
                "INSERT INTO issue_variants (issue_date, variant, template) VALUES ($1, $2, $3)
                 ON CONFLICT (issue_date, variant) DO NOTHING",
                &[&date, &key, &template],
            )
            .map_err(|e| {
                if e.code() == Some(&postgres::error::SqlState::FOREIGN_KEY_VIOLATION) {
                    StoreError::NotFrozen {
                        date,
                        variant: key.to_string(),
                    }
                } else {
                    db(e)
                }
            })?;
            let kept: String = tx
                .query_one(
                    "SELECT template FROM issue_variants WHERE issue_date = $1 AND variant = $2",
                    &[&date, &key],
                )
                .map_err(db)?
                .get(0);
            tx.commit().map_err(db)?;
            Ok(kept)
        })
    }

    fn frozen_variant(&self, date: NaiveDate, key: &str) -> StoreResult<Option<String>> {
        off_runtime(|| {
            Ok(self
                .query(
                    "SELECT template FROM issue_variants WHERE issue_date = $1 AND variant = $2",
                    &[&date, &key],
                )?
                .first()
                .map(|r| r.get(0)))
        })
    }

    fn variants_in_use(&self) -> StoreResult<Vec<(Option<Locale>, Vec<String>)>> {
        off_runtime(|| {
            self.query(
                "SELECT DISTINCT locale, categories FROM subscribers WHERE status = 'active'",
                &[],
            )?
            .iter()
            .map(|r| {
                let locale: Option<String> = r.get(0);
                let locale = locale
                    .map(|l| Locale::from_str(&l).map_err(|e| bad("locale", e)))
                    .transpose()?;
                Ok((locale, split_categories(&r.get::<_, String>(1))))
            })
            .collect()
        })
    }
}

/// Every frozen issue and variant, for `store copy`.
pub(super) fn dump_in(
    c: &mut impl GenericClient,
) -> Result<(Vec<FrozenIssue>, Vec<VariantRow>), postgres::Error> {
    let issues = c
        .query(
            "SELECT issue_date, digest, html, text, frozen_at FROM issues ORDER BY issue_date",
            &[],
        )?
        .iter()
        .map(issue_of)
        .collect();
    let variants = c
        .query(
            "SELECT issue_date, variant, template FROM issue_variants
             ORDER BY issue_date, variant COLLATE \"C\"",
            &[],
        )?
        .iter()
        .map(|r| VariantRow {
            issue_date: r.get(0),
            variant: r.get(1),
            template: r.get(2),
        })
        .collect();
    Ok((issues, variants))
}

/// Writes copied issues and variants (inside the copy's transaction).
pub(super) fn load_in(
    c: &mut impl GenericClient,
    issues: &[FrozenIssue],
    variants: &[VariantRow],
) -> Result<(), postgres::Error> {
    let st = c.prepare(
        "INSERT INTO issues (issue_date, digest, html, text, frozen_at) VALUES ($1, $2, $3, $4, $5)",
    )?;
    for i in issues {
        c.execute(&st, &[&i.date, &i.digest, &i.html, &i.text, &i.frozen_at])?;
    }
    let st = c.prepare(
        "INSERT INTO issue_variants (issue_date, variant, template) VALUES ($1, $2, $3)",
    )?;
    for v in variants {
        c.execute(&st, &[&v.issue_date, &v.variant, &v.template])?;
    }
    Ok(())
}
