//! The scheduler's runs on SQLite, and the health check.

use super::*;

impl Runs for SqliteStore {
    fn record_run(&self, run: &RunRecord) -> StoreResult<()> {
        self.conn()
            .prepare_cached(
                "INSERT INTO runs (issue_date, started_at, finished_at, status, sent, failed,
                                   retried, in_doubt, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(db)?
            .execute(params![
                day(run.date),
                ts(run.started_at),
                ts(run.finished_at),
                run.status.as_str(),
                run.sent as i64,
                run.failed as i64,
                run.retried as i64,
                run.in_doubt as i64,
                run.message,
            ])
            .map_err(db)?;
        Ok(())
    }

    fn last_run(&self) -> StoreResult<Option<RunRecord>> {
        self.reader()
            .prepare_cached(
                "SELECT issue_date, started_at, finished_at, status, sent, failed, retried,
                        in_doubt, message
                 FROM runs ORDER BY finished_at DESC, id DESC LIMIT 1",
            )
            .map_err(db)?
            .query_row([], |r| {
                let d: String = r.get(0)?;
                let s: String = r.get(1)?;
                let f: String = r.get(2)?;
                Ok(RunRecord {
                    date: parse_day(&d, 0)?,
                    started_at: parse_time(&s, 1)?,
                    finished_at: parse_time(&f, 2)?,
                    status: RunStatus::parse(&r.get::<_, String>(3)?)
                        .map_err(|e| bad_column(3, e))?,
                    sent: r.get::<_, i64>(4)? as u64,
                    failed: r.get::<_, i64>(5)? as u64,
                    retried: r.get::<_, i64>(6)? as u64,
                    in_doubt: r.get::<_, i64>(7)? as u64,
                    message: r.get(8)?,
                })
            })
            .optional()
            .map_err(db)
    }

    fn ping(&self) -> StoreResult<()> {
        self.reader()
            .query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
            .map_err(db)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn run_finished_at(finished_at: DateTime<Utc>, message: &str) -> RunRecord {
        RunRecord {
            date: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
            started_at: Utc.with_ymd_and_hms(2026, 3, 2, 7, 0, 0).unwrap(),
            finished_at,
            status: RunStatus::Ok,
            sent: 3,
            failed: 0,
            retried: 1,
            in_doubt: 0,
            message: message.into(),
        }
    }

    #[test]
    fn run_times_are_kept_as_fixed_width_utc_text_so_the_last_run_sorts_right() {
        let s = SqliteStore::open_in_memory().unwrap();
        let ten = Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap();
        // Half a second later, recorded first: "…00.500Z" must sort after
        // "…00.000Z" (it would not after a bare "…00Z").
        s.record_run(&run_finished_at(
            ten + chrono::Duration::milliseconds(500),
            "later",
        ))
        .unwrap();
        s.record_run(&run_finished_at(ten, "earlier")).unwrap();
        let (day, finished): (String, String) = s
            .conn()
            .query_row(
                "SELECT issue_date, finished_at FROM runs WHERE message = 'earlier'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(day, "2026-03-02");
        assert_eq!(finished, "2026-03-02T10:00:00.000Z");
        assert_eq!(s.last_run().unwrap().unwrap().message, "later");
    }
}
