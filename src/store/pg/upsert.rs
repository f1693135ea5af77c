//! Adding and updating subscribers on PostgreSQL, a chunk of rows at a time: per
//! chunk one read of the rows already there (locked), one of the suppressions of
//! the others, one `INSERT` of the new rows and one `UPDATE` of the changed ones,
//! instead of three or four statements per row. The outcome of each row is the one
//! the row-by-row upsert ([`upsert_in`]) gives: a later row of the chunk sees what
//! an earlier one wrote. That row-by-row upsert stays for an address another
//! process inserts meanwhile (the batch's `INSERT` finds it taken).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use postgres::{Statement, Transaction};

use super::super::sqlite::{address_hash, join_categories, merged_status};
use super::{bad, db, suppression_in, Conn};
use crate::domain::{LinkKey, SubscriberStatus};
use crate::store::{NewSubscriber, StoreError, StoreResult, Upserted};

/// Rows written per round of statements. Large enough that the round trips cost
/// little next to the rows (about 1 ms of several hundred), small enough that the
/// arrays sent stay a few hundred kilobytes.
pub(crate) const CHUNK: usize = 5_000;

/// Run first in the transaction. A statement's first executions are planned for
/// the arrays they are given, and for thousands of keys PostgreSQL then reads the
/// whole table (about 10× slower at 200 000 subscribers, and growing with the
/// list); the generic plan looks each key up in its index whatever the array.
pub(super) const PLANS: &str = "SET LOCAL plan_cache_mode = force_generic_plan";

/// Run before each chunk: the plans of the statements below are made again.
const REPLAN: &str = "DISCARD PLANS";

const FIND: &str = "SELECT id, email_key, name, locale, categories, timezone, status
     FROM subscribers WHERE email_key = ANY($1::text[]) ORDER BY id FOR UPDATE";

const SUPPRESSED: &str =
    "SELECT address_hash FROM suppressions WHERE address_hash = ANY($1::text[])";

/// Rows inserted in the order given (their ids in that order); an address taken
/// meanwhile by another process is left out of `RETURNING`.
const INSERT: &str = "INSERT INTO subscribers
       (email, email_key, link_key, name, locale, categories, timezone, status,
        status_reason, created_at, updated_at, unsubscribed_at)
     SELECT u.email, u.email_key, u.link_key, u.name, u.locale, u.categories, u.timezone,
            u.status, u.status_reason, $1, $1,
            CASE WHEN u.status = 'unsubscribed' THEN $1::timestamptz END
     FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                 $8::text[], $9::text[], $10::text[])
          WITH ORDINALITY AS u(email, email_key, link_key, name, locale, categories, timezone,
                               status, status_reason, n)
     ORDER BY u.n
     ON CONFLICT (email_key) DO NOTHING
     RETURNING email_key";

/// What the row-by-row `UPDATE` does, once per changed row however many rows of
/// the chunk changed it: `status_reason` and `unsubscribed_at` as the last change
/// of status left them.
const UPDATE: &str = "UPDATE subscribers s SET name = u.name, locale = u.locale,
       categories = u.categories, timezone = u.timezone, status = u.status, updated_at = $1,
       status_reason = CASE WHEN u.status_changed THEN 'updated' ELSE s.status_reason END,
       unsubscribed_at = CASE WHEN u.unsubscribed THEN $1 ELSE s.unsubscribed_at END
     FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                 $8::bool[], $9::bool[])
          AS u(id, name, locale, categories, timezone, status, status_changed, unsubscribed)
     WHERE s.id = u.id";

/// The statements of a batch, prepared once per connection.
pub(super) struct Statements {
    find: Statement,
    suppressed: Statement,
    insert: Statement,
    update: Statement,
}

impl Statements {
    pub(super) fn prepare(c: &mut Conn) -> Result<Statements, postgres::Error> {
        Ok(Statements {
            find: c.st(FIND)?,
            suppressed: c.st(SUPPRESSED)?,
            insert: c.st(INSERT)?,
            update: c.st(UPDATE)?,
        })
    }
}

/// The columns of a subscriber an upsert may change, as stored.
#[derive(Debug, Clone, PartialEq)]
struct Fields {
    name: Option<String>,
    locale: Option<String>,
    categories: String,
    timezone: Option<String>,
    status: SubscriberStatus,
}

impl Fields {
    fn of(new: &NewSubscriber) -> Fields {
        Fields {
            name: new.name.clone(),
            locale: new.locale.map(|l| l.code().to_string()),
            categories: join_categories(&new.categories),
            timezone: new.timezone.map(|t| t.name().to_string()),
            status: new.status,
        }
    }

    /// What an upsert of `new` makes of these. Absent fields keep what is stored:
    /// an import adds information, it does not erase it.
    fn merged(&self, new: &NewSubscriber) -> Fields {
        Fields {
            name: new.name.clone().or_else(|| self.name.clone()),
            locale: new
                .locale
                .map(|l| l.code().to_string())
                .or_else(|| self.locale.clone()),
            categories: if new.categories.is_empty() {
                self.categories.clone()
            } else {
                join_categories(&new.categories)
            },
            timezone: new
                .timezone
                .map(|t| t.name().to_string())
                .or_else(|| self.timezone.clone()),
            status: merged_status(self.status, new.status),
        }
    }
}

/// A subscriber as the rows of the chunk so far have left it.
#[derive(Debug)]
struct Written {
    fields: Fields,
    changed: bool,
    /// Some row changed the status: `status_reason` becomes 'updated'.
    status_changed: bool,
    /// Some row changed the status to unsubscribed: `unsubscribed_at` is now.
    unsubscribed: bool,
}

impl Written {
    fn new(fields: Fields) -> Written {
        Written {
            fields,
            changed: false,
            status_changed: false,
            unsubscribed: false,
        }
    }

    fn upsert(&mut self, new: &NewSubscriber) -> Upserted {
        let merged = self.fields.merged(new);
        if merged == self.fields {
            return Upserted::Unchanged;
        }
        let status_changed = merged.status != self.fields.status;
        self.status_changed |= status_changed;
        self.unsubscribed |= status_changed && merged.status == SubscriberStatus::Unsubscribed;
        self.changed = true;
        self.fields = merged;
        Upserted::Updated
    }
}

/// One address of the chunk.
#[derive(Debug)]
enum Slot {
    /// Not stored and not suppressed: its first row inserts it.
    Absent,
    Suppressed,
    Stored {
        id: i64,
        now: Written,
    },
    New {
        first: usize,
        now: Written,
    },
}

/// Upserts `rows` inside `tx`, returning each row's outcome in their order.
pub(super) fn upsert_chunk(
    tx: &mut Transaction<'_>,
    st: &Statements,
    rows: &[NewSubscriber],
    now: DateTime<Utc>,
    suppression_key: &[u8],
) -> StoreResult<Vec<Upserted>> {
    // The addresses, each once, in the order they first appear.
    let mut slot_of: HashMap<String, usize> = HashMap::with_capacity(rows.len());
    let mut keys: Vec<String> = Vec::with_capacity(rows.len());
    let mut first_row = Vec::with_capacity(rows.len());
    let mut row_slot = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let slot = match slot_of.entry(row.email.key()) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                keys.push(e.key().clone());
                first_row.push(i);
                *e.insert(keys.len() - 1)
            }
        };
        row_slot.push(slot);
    }
    let mut slots: Vec<Slot> = keys.iter().map(|_| Slot::Absent).collect();
    // The statements are prepared once per connection and keep their generic
    // plan: one made while the table was empty (the first chunk of a fresh import)
    // reads the whole table and compares every row with every key, so each chunk
    // would cost more than the last. Planning again for the table as it stands
    // costs about a millisecond a chunk.
    tx.batch_execute(REPLAN).map_err(db)?;
    for r in tx.query(&st.find, &[&keys]).map_err(db)? {
        let key: &str = r.try_get(1).map_err(db)?;
        let status: &str = r.try_get(6).map_err(db)?;
        slots[slot_of[key]] = Slot::Stored {
            id: r.try_get(0).map_err(db)?,
            now: Written::new(Fields {
                name: r.try_get(2).map_err(db)?,
                locale: r.try_get(3).map_err(db)?,
                categories: r.try_get(4).map_err(db)?,
                timezone: r.try_get(5).map_err(db)?,
                status: SubscriberStatus::from_str(status).map_err(|e| bad("status", e))?,
            }),
        };
    }
    // Suppressions matter only for addresses not stored, as row by row.
    let hashed: HashMap<String, usize> = (0..slots.len())
        .filter(|&slot| matches!(slots[slot], Slot::Absent))
        .map(|slot| {
            (
                address_hash(suppression_key, &rows[first_row[slot]].email),
                slot,
            )
        })
        .collect();
    if !hashed.is_empty() {
        let hashes: Vec<&str> = hashed.keys().map(String::as_str).collect();
        for r in tx.query(&st.suppressed, &[&hashes]).map_err(db)? {
            let hash: &str = r.try_get(0).map_err(db)?;
            slots[hashed[hash]] = Slot::Suppressed;
        }
    }

    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let slot = &mut slots[row_slot[i]];
        out.push(match slot {
            Slot::Absent => {
                *slot = Slot::New {
                    first: i,
                    now: Written::new(Fields::of(row)),
                };
                Upserted::Inserted
            }
            Slot::Suppressed => Upserted::Suppressed,
            Slot::Stored { now, .. } | Slot::New { now, .. } => now.upsert(row),
        });
    }

    let taken = insert_new(tx, st, rows, &slots, now)?;
    // Another process inserted some of these addresses since our read: those rows
    // go row by row, which then finds and updates that process's row.
    if !taken.is_empty() {
        for (i, row) in rows.iter().enumerate() {
            if taken.contains(&row_slot[i]) {
                out[i] = upsert_in(tx, row, now, suppression_key)?;
            }
        }
    }
    update_stored(tx, st, &slots, now)?;
    Ok(out)
}

/// Inserts the new addresses in the order of their first row; returns the slots
/// of those that another process inserted first (not inserted here).
fn insert_new(
    tx: &mut Transaction<'_>,
    st: &Statements,
    rows: &[NewSubscriber],
    slots: &[Slot],
    now: DateTime<Utc>,
) -> StoreResult<HashSet<usize>> {
    let new: Vec<(usize, &NewSubscriber, &Written)> = slots
        .iter()
        .enumerate()
        .filter_map(|(slot, s)| match s {
            Slot::New { first, now } => Some((slot, &rows[*first], now)),
            _ => None,
        })
        .collect();
    if new.is_empty() {
        return Ok(HashSet::new());
    }
    let emails: Vec<&str> = new.iter().map(|(_, r, _)| r.email.as_str()).collect();
    let keys: Vec<String> = new.iter().map(|(_, r, _)| r.email.key()).collect();
    let link_keys: Vec<String> = new.iter().map(|_| LinkKey::random().to_string()).collect();
    let names: Vec<Option<&str>> = new
        .iter()
        .map(|(_, _, w)| w.fields.name.as_deref())
        .collect();
    let locales: Vec<Option<&str>> = new
        .iter()
        .map(|(_, _, w)| w.fields.locale.as_deref())
        .collect();
    let categories: Vec<&str> = new
        .iter()
        .map(|(_, _, w)| w.fields.categories.as_str())
        .collect();
    let timezones: Vec<Option<&str>> = new
        .iter()
        .map(|(_, _, w)| w.fields.timezone.as_deref())
        .collect();
    let statuses: Vec<&str> = new
        .iter()
        .map(|(_, _, w)| w.fields.status.as_str())
        .collect();
    // Inserted then updated by a later row of the chunk, as row by row.
    let reasons: Vec<&str> = new
        .iter()
        .map(|(_, _, w)| if w.status_changed { "updated" } else { "added" })
        .collect();
    let inserted: HashSet<String> = tx
        .query(
            &st.insert,
            &[
                &now,
                &emails,
                &keys,
                &link_keys,
                &names,
                &locales,
                &categories,
                &timezones,
                &statuses,
                &reasons,
            ],
        )
        .map_err(db)?
        .iter()
        .map(|r| r.try_get(0).map_err(db))
        .collect::<StoreResult<_>>()?;
    Ok(new
        .iter()
        .zip(&keys)
        .filter(|(_, key)| !inserted.contains(key.as_str()))
        .map(|((slot, _, _), _)| *slot)
        .collect())
}

/// Writes the stored subscribers that rows of the chunk changed.
fn update_stored(
    tx: &mut Transaction<'_>,
    st: &Statements,
    slots: &[Slot],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let changed: Vec<(i64, &Written)> = slots
        .iter()
        .filter_map(|s| match s {
            Slot::Stored { id, now } if now.changed => Some((*id, now)),
            _ => None,
        })
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = changed.iter().map(|(id, _)| *id).collect();
    let names: Vec<Option<&str>> = changed
        .iter()
        .map(|(_, w)| w.fields.name.as_deref())
        .collect();
    let locales: Vec<Option<&str>> = changed
        .iter()
        .map(|(_, w)| w.fields.locale.as_deref())
        .collect();
    let categories: Vec<&str> = changed
        .iter()
        .map(|(_, w)| w.fields.categories.as_str())
        .collect();
    let timezones: Vec<Option<&str>> = changed
        .iter()
        .map(|(_, w)| w.fields.timezone.as_deref())
        .collect();
    let statuses: Vec<&str> = changed
        .iter()
        .map(|(_, w)| w.fields.status.as_str())
        .collect();
    let status_changed: Vec<bool> = changed.iter().map(|(_, w)| w.status_changed).collect();
    let unsubscribed: Vec<bool> = changed.iter().map(|(_, w)| w.unsubscribed).collect();
    tx.execute(
        &st.update,
        &[
            &now,
            &ids,
            &names,
            &locales,
            &categories,
            &timezones,
            &statuses,
            &status_changed,
            &unsubscribed,
        ],
    )
    .map_err(db)?;
    Ok(())
}

/// One upsert inside the caller's transaction, row by row (see
/// [`crate::store::Store::upsert_subscriber`]): for an address another process
/// inserted while a batch was being written.
fn upsert_in(
    tx: &mut Transaction<'_>,
    new: &NewSubscriber,
    now: DateTime<Utc>,
    suppression_key: &[u8],
) -> StoreResult<Upserted> {
    let key = new.email.key();
    // Twice at most: an insert that loses a race with another process's insert
    // of the same address updates that row instead.
    for _ in 0..2 {
        let old = tx
            .query_opt(
                "SELECT id, name, locale, categories, timezone, status
                 FROM subscribers WHERE email_key = $1 FOR UPDATE",
                &[&key],
            )
            .map_err(db)?;
        let Some(old) = old else {
            if suppression_in(tx, suppression_key, &new.email)?.is_some() {
                return Ok(Upserted::Suppressed);
            }
            let f = Fields::of(new);
            let unsubscribed_at = (new.status == SubscriberStatus::Unsubscribed).then_some(now);
            let n = tx
                .execute(
                    "INSERT INTO subscribers
                       (email, email_key, link_key, name, locale, categories, timezone, status,
                        status_reason, created_at, updated_at, unsubscribed_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'added', $9, $9, $10)
                     ON CONFLICT (email_key) DO NOTHING",
                    &[
                        &new.email.as_str(),
                        &key,
                        &LinkKey::random().to_string(),
                        &f.name,
                        &f.locale,
                        &f.categories,
                        &f.timezone,
                        &f.status.as_str(),
                        &now,
                        &unsubscribed_at,
                    ],
                )
                .map_err(db)?;
            if n == 1 {
                return Ok(Upserted::Inserted);
            }
            continue;
        };
        let id: i64 = old.try_get(0).map_err(db)?;
        let status: &str = old.try_get(5).map_err(db)?;
        let mut w = Written::new(Fields {
            name: old.try_get(1).map_err(db)?,
            locale: old.try_get(2).map_err(db)?,
            categories: old.try_get(3).map_err(db)?,
            timezone: old.try_get(4).map_err(db)?,
            status: SubscriberStatus::from_str(status).map_err(|e| bad("status", e))?,
        });
        let outcome = w.upsert(new);
        if outcome == Upserted::Updated {
            let f = &w.fields;
            tx.execute(
                "UPDATE subscribers SET name = $2, locale = $3, categories = $4, timezone = $5,
                   status = $6, updated_at = $7,
                   status_reason = CASE WHEN $8 THEN 'updated' ELSE status_reason END,
                   unsubscribed_at = CASE WHEN $9 THEN $7 ELSE unsubscribed_at END
                 WHERE id = $1",
                &[
                    &id,
                    &f.name,
                    &f.locale,
                    &f.categories,
                    &f.timezone,
                    &f.status.as_str(),
                    &now,
                    &w.status_changed,
                    &w.unsubscribed,
                ],
            )
            .map_err(db)?;
        }
        return Ok(outcome);
    }
    Err(StoreError::Db(format!(
        "{} was added and removed by another process meanwhile: try again",
        new.email
    )))
}

#[cfg(test)]
mod tests {
    use postgres::{Client, NoTls};

    use super::super::{test_cluster, PgStore};
    use crate::domain::LinkKey;
    use crate::store::suite::active;
    use crate::store::{NewSubscriber, Subscribers, Upserted};

    /// The plan the lookup of stored addresses keeps after an import of two
    /// chunks into an empty table, on the connection that ran it.
    fn lookup_plan_after_two_chunks() -> String {
        let url = test_cluster::fresh_database();
        let store = PgStore::open(&url).unwrap();
        let rows: Vec<NewSubscriber> = (0..=super::CHUNK)
            .map(|i| active(&format!("r{i}@example.com")))
            .collect();
        let outs = store.upsert_many(&rows).unwrap();
        assert!(outs.iter().all(|o| *o == Upserted::Inserted));
        // The pool gives back the connection the import used, with its
        // statements and the generic plans they keep.
        let mut c = store.conn().unwrap();
        let name: String = c
            .client
            .query_one(
                "SELECT name FROM pg_prepared_statements WHERE statement = $1",
                &[&super::FIND],
            )
            .unwrap()
            .get(0);
        c.client
            .query(
                &format!("EXPLAIN EXECUTE {name}('{{r1@example.com}}')"),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The first chunk of an import into an empty table is planned as a
    /// sequential scan; kept for the next chunks, each compared every stored
    /// row with every key of the chunk (quadratic in the import's size). Each
    /// chunk is planned again for the table as it stands.
    #[test]
    fn each_chunk_of_an_import_looks_stored_addresses_up_in_the_index_of_the_table_as_it_stands() {
        let plan = lookup_plan_after_two_chunks();
        assert!(plan.contains("subscribers_email_key"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
    }

    #[test]
    fn an_address_another_process_inserts_while_a_batch_is_written_is_updated_not_added_twice() {
        let url = test_cluster::fresh_database();
        let store = PgStore::open(&url).unwrap();
        let mut other = Client::connect(&url, NoTls).unwrap();
        let mut theirs = other.transaction().unwrap();
        theirs
            .execute(
                "INSERT INTO subscribers (email, email_key, link_key, status, status_reason,
                                          created_at, updated_at)
                 VALUES ('Race@example.com', 'race@example.com', $1, 'active', 'added', now(), now())",
                &[&LinkKey::random().to_string()],
            )
            .unwrap();
        // Our batch reads before their insert is committed (it does not see it), then
        // its own insert of that address waits for their transaction.
        let rows = vec![
            active("a@example.com"),
            NewSubscriber {
                name: Some("Rae".into()),
                ..active("race@example.com")
            },
            active("b@example.com"),
        ];
        let batch = std::thread::spawn(move || store.upsert_many(&rows).map(|o| (o, store)));
        let mut watch = Client::connect(&url, NoTls).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let waiting: i64 = watch
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .unwrap()
                .get(0);
            if waiting > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the batch never waited on their insert"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        theirs.commit().unwrap();
        let (outs, store) = batch.join().unwrap().unwrap();
        assert_eq!(
            outs,
            vec![Upserted::Inserted, Upserted::Updated, Upserted::Inserted]
        );
        let race = store
            .subscriber_by_email(&crate::store::suite::email("race@example.com"))
            .unwrap()
            .unwrap();
        assert_eq!(
            race.email.as_str(),
            "Race@example.com",
            "their row, updated"
        );
        assert_eq!(race.name.as_deref(), Some("Rae"));
        let n: i64 = watch
            .query_one("SELECT count(*) FROM subscribers", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 3);
    }
}
