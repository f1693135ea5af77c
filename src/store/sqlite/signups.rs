//! Sign-ups waiting for their confirmation on SQLite (double opt-in).

use super::*;

impl Signups for SqliteStore {
    fn put_signup(&self, signup: &PendingSignup) -> StoreResult<()> {
        let s = &signup.subscriber;
        self.conn()
            .prepare_cached(
                "INSERT INTO signups
                   (email_key, email, name, locale, categories, timezone, status, requested_at)
                 VALUES (?1, ?8, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (email_key) DO UPDATE SET
                   name = excluded.name, locale = excluded.locale,
                   categories = excluded.categories, timezone = excluded.timezone,
                   status = excluded.status, requested_at = excluded.requested_at",
            )
            .map_err(db)?
            .execute(params![
                s.email.key(),
                s.name,
                s.locale.map(|l| l.code()),
                join_categories(&s.categories),
                s.timezone.map(|t| t.name()),
                s.status.as_str(),
                ts(signup.requested_at),
                s.email.as_str(),
            ])
            .map_err(db)?;
        Ok(())
    }

    fn take_signup(&self, email: &SubscriberEmail) -> StoreResult<Option<PendingSignup>> {
        self.conn()
            .prepare_cached(
                "DELETE FROM signups WHERE email_key = ?1
                 RETURNING email, name, locale, categories, timezone, status, requested_at",
            )
            .map_err(db)?
            .query_row([email.key()], |r| {
                let email: String = r.get(0)?;
                let locale: Option<String> = r.get(2)?;
                let categories: String = r.get(3)?;
                let timezone: Option<String> = r.get(4)?;
                let status: String = r.get(5)?;
                let requested_at: String = r.get(6)?;
                Ok(PendingSignup {
                    subscriber: NewSubscriber {
                        email: SubscriberEmail::parse(&email).map_err(|e| bad_column(0, e))?,
                        name: r.get(1)?,
                        locale: locale
                            .map(|l| Locale::from_str(&l).map_err(|e| bad_column(2, e.to_string())))
                            .transpose()?,
                        categories: split_categories(&categories),
                        timezone: timezone
                            .map(|t| {
                                chrono_tz::Tz::from_str(&t)
                                    .map_err(|e| bad_column(4, e.to_string()))
                            })
                            .transpose()?,
                        status: SubscriberStatus::from_str(&status)
                            .map_err(|e| bad_column(5, e))?,
                    },
                    requested_at: parse_time(&requested_at, 6)?,
                })
            })
            .optional()
            .map_err(db)
    }

    fn claim_confirmation_mail(
        &self,
        email: &SubscriberEmail,
        now: DateTime<Utc>,
        cooldown: chrono::Duration,
    ) -> StoreResult<bool> {
        let n = self
            .conn()
            .prepare_cached(
                "UPDATE signups SET mailed_at = ?2
                 WHERE email_key = ?1 AND (mailed_at IS NULL OR mailed_at <= ?3)",
            )
            .map_err(db)?
            .execute(params![email.key(), ts(now), ts(now - cooldown)])
            .map_err(db)?;
        Ok(n > 0)
    }

    fn purge_signups(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let n = self
            .conn()
            .execute("DELETE FROM signups WHERE requested_at < ?1", [ts(before)])
            .map_err(db)?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite::{at, email, new_sub};

    #[test]
    fn a_signup_is_kept_by_its_address_key_with_the_address_as_first_given() {
        let s = SqliteStore::open_in_memory().unwrap();
        let mut sub = new_sub("New@Example.org", SubscriberStatus::Pending);
        sub.categories = vec!["tech".into(), "world".into()];
        let put = |sub: &NewSubscriber, h| {
            s.put_signup(&PendingSignup {
                subscriber: sub.clone(),
                requested_at: at(h, 0),
            })
            .unwrap()
        };
        put(&sub, 9);
        // The same address in other letters refreshes the one row, which keeps
        // the first spelling.
        let mut again = sub.clone();
        again.email = email("NEW@example.ORG");
        put(&again, 10);
        let rows: Vec<(String, String, String, String)> = s
            .conn()
            .prepare("SELECT email_key, email, categories, requested_at FROM signups")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![(
                sub.email.key(),
                "New@example.org".to_string(),
                "tech;world".to_string(),
                ts(at(10, 0)),
            )]
        );
    }
}
