//! The subscribers on SQLite: upserts (one at a time or in batches), lookups,
//! removal and forgetting with their suppression records, status and preferences.

use super::*;

impl SqliteStore {
    /// Deletes the subscriber (their ledger rows cascade) and any pending sign-up
    /// of `email`, keeping only a suppression record: `reason`, else what their
    /// status says (unsubscribed, bounced, or removed by the operator). Whether a
    /// subscriber or a sign-up was found.
    fn erase(
        &self,
        email: &SubscriberEmail,
        reason: Option<SuppressionReason>,
    ) -> StoreResult<bool> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let key = email.key();
        let status: Option<String> = tx
            .query_row(
                "DELETE FROM subscribers WHERE email_key = ?1 RETURNING status",
                [&key],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        let signups = tx
            .execute("DELETE FROM signups WHERE email_key = ?1", [&key])
            .map_err(db)?;
        let reason = reason.or(match status.as_deref() {
            Some("unsubscribed") => Some(SuppressionReason::Unsubscribed),
            Some("bounced") => Some(SuppressionReason::Bounced),
            Some(_) => Some(SuppressionReason::Removed),
            None => None,
        });
        if let Some(reason) = reason {
            suppress_in(
                &tx,
                &self.suppression_key,
                email,
                reason,
                &ts(crate::clock::now()),
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(status.is_some() || signups > 0)
    }
}

/// One upsert inside the caller's transaction.
fn upsert_in(
    conn: &Connection,
    new: &NewSubscriber,
    now: &str,
    suppression_key: &[u8],
) -> rusqlite::Result<Upserted> {
    let key = new.email.key();
    let key = key.as_str();
    let old = conn
        .prepare_cached(
            "SELECT id, name, locale, categories, timezone, status
             FROM subscribers WHERE email_key = ?1",
        )?
        .query_row([key], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, String>(5)?,
            ))
        })
        .optional()?;
    let new_locale = new.locale.map(|l| l.code().to_string());
    let new_tz = new.timezone.map(|t| t.name().to_string());
    let Some((id, name, locale, categories, timezone, status)) = old else {
        if suppression_in(conn, suppression_key, &new.email)?.is_some() {
            return Ok(Upserted::Suppressed);
        }
        let unsubscribed_at = (new.status == SubscriberStatus::Unsubscribed).then_some(now);
        conn.prepare_cached(
            "INSERT INTO subscribers
               (email, email_key, name, locale, categories, timezone, status,
                status_reason, created_at, updated_at, unsubscribed_at)
             VALUES (?9, ?1, ?2, ?3, ?4, ?5, ?6, 'added', ?7, ?7, ?8)",
        )?
        .execute(params![
            key,
            new.name,
            new_locale,
            join_categories(&new.categories),
            new_tz,
            new.status.as_str(),
            now,
            unsubscribed_at,
            new.email.as_str(),
        ])?;
        return Ok(Upserted::Inserted);
    };
    let old_status = SubscriberStatus::from_str(&status).map_err(|e| bad_column(5, e))?;
    // Absent fields keep what is stored: an import adds information, it does not erase it.
    let m_name = new.name.clone().or(name.clone());
    let m_locale = new_locale.or(locale.clone());
    let m_categories = if new.categories.is_empty() {
        categories.clone()
    } else {
        join_categories(&new.categories)
    };
    let m_tz = new_tz.or(timezone.clone());
    let m_status = merged_status(old_status, new.status);
    if m_name == name
        && m_locale == locale
        && m_categories == categories
        && m_tz == timezone
        && m_status == old_status
    {
        return Ok(Upserted::Unchanged);
    }
    let status_changed = m_status != old_status;
    conn.prepare_cached(
        "UPDATE subscribers SET name = ?2, locale = ?3, categories = ?4, timezone = ?5,
           status = ?6, updated_at = ?7,
           status_reason = CASE WHEN ?8 THEN 'updated' ELSE status_reason END,
           unsubscribed_at = CASE WHEN ?8 AND ?6 = 'unsubscribed' THEN ?7 ELSE unsubscribed_at END
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        m_name,
        m_locale,
        m_categories,
        m_tz,
        m_status.as_str(),
        now,
        status_changed,
    ])?;
    Ok(Upserted::Updated)
}

fn suppression_in(
    conn: &Connection,
    key: &[u8],
    email: &SubscriberEmail,
) -> rusqlite::Result<Option<Suppression>> {
    conn.prepare_cached("SELECT reason, created_at FROM suppressions WHERE address_hash = ?1")?
        .query_row([address_hash(key, email)], |r| {
            let reason: String = r.get(0)?;
            let at: String = r.get(1)?;
            Ok(Suppression {
                reason: SuppressionReason::from_str(&reason).map_err(|e| bad_column(0, e))?,
                at: parse_time(&at, 1)?,
            })
        })
        .optional()
}

fn suppress_in(
    conn: &Connection,
    key: &[u8],
    email: &SubscriberEmail,
    reason: SuppressionReason,
    at: &str,
) -> rusqlite::Result<()> {
    // A later reason replaces an earlier one, except that "forgotten" stays.
    conn.prepare_cached(
        "INSERT INTO suppressions (address_hash, reason, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (address_hash) DO UPDATE SET reason = excluded.reason,
           created_at = excluded.created_at
         WHERE suppressions.reason <> 'forgotten'",
    )?
    .execute(params![address_hash(key, email), reason.as_str(), at])?;
    Ok(())
}

impl Subscribers for SqliteStore {
    fn upsert_subscriber(&self, new: &NewSubscriber) -> StoreResult<Upserted> {
        let mut outs = self.upsert_many(std::slice::from_ref(new))?;
        Ok(outs.pop().unwrap_or(Upserted::Unchanged))
    }

    fn upsert_many(&self, rows: &[NewSubscriber]) -> StoreResult<Vec<Upserted>> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let now = ts(crate::clock::now());
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(
                upsert_in(&tx, row, &now, &self.suppression_key)
                    .map_err(|e| StoreError::Db(format!("upserting {}: {e}", row.email)))?,
            );
        }
        tx.commit().map_err(db)?;
        Ok(out)
    }

    fn subscriber_by_email(&self, email: &SubscriberEmail) -> StoreResult<Option<Subscriber>> {
        self.reader()
            .prepare_cached(&format!(
                "SELECT {SUB_COLS} FROM subscribers s WHERE s.email_key = ?1"
            ))
            .map_err(db)?
            .query_row([email.key()], |r| subscriber_from_row(r, 0))
            .optional()
            .map_err(db)
    }

    fn subscriber_by_id(&self, id: i64) -> StoreResult<Option<Subscriber>> {
        self.reader()
            .prepare_cached(&format!(
                "SELECT {SUB_COLS} FROM subscribers s WHERE s.id = ?1"
            ))
            .map_err(db)?
            .query_row([id], |r| subscriber_from_row(r, 0))
            .optional()
            .map_err(db)
    }

    fn remove_subscriber(&self, email: &SubscriberEmail) -> StoreResult<bool> {
        self.erase(email, None)
    }

    fn forget_subscriber(&self, email: &SubscriberEmail) -> StoreResult<bool> {
        self.erase(email, Some(SuppressionReason::Forgotten))
    }

    fn suppression(&self, email: &SubscriberEmail) -> StoreResult<Option<Suppression>> {
        suppression_in(&self.reader(), &self.suppression_key, email).map_err(db)
    }

    fn lift_suppression(&self, email: &SubscriberEmail) -> StoreResult<bool> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM suppressions WHERE address_hash = ?1",
                [address_hash(&self.suppression_key, email)],
            )
            .map_err(db)?;
        Ok(n > 0)
    }

    fn subscriber_by_link_key(&self, key: &LinkKey) -> StoreResult<Option<Subscriber>> {
        self.reader()
            .prepare_cached(&format!(
                "SELECT {SUB_COLS} FROM subscribers s WHERE s.link_key = ?1"
            ))
            .map_err(db)?
            .query_row([key.to_string()], |r| subscriber_from_row(r, 0))
            .optional()
            .map_err(db)
    }

    fn subscriber_by_legacy_id(&self, id: i64) -> StoreResult<Option<Subscriber>> {
        self.reader()
            .prepare_cached(&format!(
                "SELECT {SUB_COLS} FROM subscribers s WHERE s.id = ?1 AND s.legacy_links = 1"
            ))
            .map_err(db)?
            .query_row([id], |r| subscriber_from_row(r, 0))
            .optional()
            .map_err(db)
    }

    fn set_status(
        &self,
        id: i64,
        status: SubscriberStatus,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let n = self
            .conn()
            .prepare_cached(
                "UPDATE subscribers SET status = ?2, status_reason = ?3, updated_at = ?4,
                   unsubscribed_at = CASE
                     WHEN ?2 = 'unsubscribed' AND status = 'unsubscribed' THEN unsubscribed_at
                     WHEN ?2 = 'unsubscribed' THEN ?4
                     ELSE unsubscribed_at END
                 WHERE id = ?1",
            )
            .map_err(db)?
            .execute(params![id, status.as_str(), reason, ts(at)])
            .map_err(db)?;
        Ok(n > 0)
    }

    fn set_preferences(
        &self,
        id: i64,
        locale: Option<Locale>,
        categories: &[String],
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let n = self
            .conn()
            .prepare_cached(
                "UPDATE subscribers SET locale = ?2, categories = ?3, updated_at = ?4 WHERE id = ?1",
            )
            .map_err(db)?
            .execute(params![
                id,
                locale.map(|l| l.code()),
                join_categories(categories),
                ts(at)
            ])
            .map_err(db)?;
        Ok(n > 0)
    }

    fn subscribers_page(
        &self,
        status: Option<SubscriberStatus>,
        after_id: i64,
        limit: usize,
    ) -> StoreResult<Vec<Subscriber>> {
        let conn = self.reader();
        let limit = limit as i64;
        let rows = match status {
            Some(st) => conn
                .prepare_cached(&format!(
                    "SELECT {SUB_COLS} FROM subscribers s
                     WHERE s.status = ?1 AND s.id > ?2 ORDER BY s.id LIMIT ?3"
                ))
                .map_err(db)?
                .query_map(params![st.as_str(), after_id, limit], |r| {
                    subscriber_from_row(r, 0)
                })
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>(),
            None => conn
                .prepare_cached(&format!(
                    "SELECT {SUB_COLS} FROM subscribers s
                     WHERE s.id > ?1 ORDER BY s.id LIMIT ?2"
                ))
                .map_err(db)?
                .query_map(params![after_id, limit], |r| subscriber_from_row(r, 0))
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>(),
        };
        rows.map_err(db)
    }

    fn count_by_status(&self) -> StoreResult<Vec<(SubscriberStatus, u64)>> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "SELECT status, COUNT(*) FROM subscribers GROUP BY status ORDER BY status",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                let s: String = r.get(0)?;
                let n: i64 = r.get(1)?;
                Ok((
                    SubscriberStatus::from_str(&s).map_err(|e| bad_column(0, e))?,
                    n as u64,
                ))
            })
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db)?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite::active;

    #[test]
    fn a_subscriber_row_keeps_sections_joined_and_zone_and_language_by_name() {
        let s = SqliteStore::open_in_memory().unwrap();
        let mut sub = active("Ana@Example.org");
        sub.categories = vec!["tech".into(), "world".into()];
        sub.locale = Some(Locale::En);
        sub.timezone = Some(chrono_tz::Europe::London);
        s.upsert_subscriber(&sub).unwrap();
        s.upsert_subscriber(&active("bo@example.org")).unwrap();
        let row: (String, String, Option<String>, Option<String>, String) = s
            .conn()
            .query_row(
                "SELECT email, categories, locale, timezone, link_key FROM subscribers
                 WHERE email_key = ?1",
                [sub.email.key()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(row.0, "Ana@example.org");
        assert_eq!(row.1, "tech;world");
        assert_eq!(row.2.as_deref(), Some("en"));
        assert_eq!(row.3.as_deref(), Some("Europe/London"));
        let keys: i64 = s
            .conn()
            .query_row(
                "SELECT COUNT(DISTINCT link_key) FROM subscribers",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(keys, 2, "each subscriber gets a link key of its own");
        assert!(!row.4.is_empty());
    }
}
