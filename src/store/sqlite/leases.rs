//! Leases on SQLite: one holder per name until it expires.

use super::*;

impl Leases for SqliteStore {
    fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        // Compare-and-set in one statement: take it if free, expired or already ours.
        let n = self
            .conn()
            .prepare_cached(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?4)
                 ON CONFLICT (name) DO UPDATE SET
                   holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at <= ?3",
            )
            .map_err(db)?
            .execute(params![
                name,
                holder,
                now.timestamp_millis(),
                until.timestamp_millis()
            ])
            .map_err(db)?;
        Ok(n == 1)
    }

    fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        self.conn()
            .prepare_cached("DELETE FROM leases WHERE name = ?1 AND holder = ?2")
            .map_err(db)?
            .execute(params![name, holder])
            .map_err(db)?;
        Ok(())
    }

    fn lease_holder(&self, name: &str) -> StoreResult<Option<String>> {
        self.reader()
            .prepare_cached("SELECT holder FROM leases WHERE name = ?1")
            .map_err(db)?
            .query_row([name], |r| r.get(0))
            .optional()
            .map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_lease_ends_at_the_millisecond_of_the_clock_given() {
        let s = SqliteStore::open_in_memory().unwrap();
        let t0 = Utc.with_ymd_and_hms(2026, 3, 2, 7, 0, 0).unwrap();
        let until = t0 + chrono::Duration::milliseconds(1500);
        let later = until + chrono::Duration::seconds(10);
        assert!(s.try_lease("issue:2026-03-02", "a", t0, until).unwrap());
        let stored: i64 = s
            .conn()
            .query_row("SELECT expires_at FROM leases", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, until.timestamp_millis());
        let just_before = until - chrono::Duration::milliseconds(1);
        assert!(!s
            .try_lease("issue:2026-03-02", "b", just_before, later)
            .unwrap());
        assert_eq!(
            s.lease_holder("issue:2026-03-02").unwrap().as_deref(),
            Some("a")
        );
        assert!(s.try_lease("issue:2026-03-02", "b", until, later).unwrap());
        assert_eq!(
            s.lease_holder("issue:2026-03-02").unwrap().as_deref(),
            Some("b")
        );
    }
}
