//! Leases and heartbeats. A lease makes one process at a time build and send
//! the issue of a date (`digestif send`, or a send pass of `digestif serve`, on
//! this machine or another sharing the database): [`IssueLease`] holds
//! `issue:<date>` while a send runs, renews it from its own thread, and
//! releases it when dropped. Where several processes share the sending of one
//! issue (PostgreSQL), each beats a [`Heartbeat`] while it sends, so that the
//! others know when it is gone and take over its rows.

use std::sync::{Arc, Condvar, Mutex};

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::store::{Holder, Leases, Ledger, SenderSeen, StoreResult};

/// A thread that calls `beat` every `every` until dropped.
struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    fn start(every: std::time::Duration, mut beat: impl FnMut() + Send + 'static) -> Ticker {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (lock, cv) = &*flag;
            let mut stopped = lock.lock().expect("ticker lock");
            // The flag is checked before each wait: a stop that came before
            // this thread first waited is not missed.
            while !*stopped {
                let (guard, waited) = cv.wait_timeout(stopped, every).expect("ticker lock");
                stopped = guard;
                if *stopped || !waited.timed_out() {
                    continue;
                }
                beat();
            }
        });
        Ticker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        *self.stop.0.lock().expect("ticker lock") = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `issue:<date>` held while a send runs: taken by [`IssueLease::take`],
/// renewed every third of its length from its own thread (so a killed process
/// loses it after that), released when dropped. The `digestif send` command and
/// the service's send passes hold the same guard.
pub struct IssueLease {
    store: Arc<dyn Leases>,
    name: String,
    holder: String,
    renew: Option<Ticker>,
}

impl IssueLease {
    /// Takes the lease of `date` for `holder` as of `now`, for `len`; `None` when
    /// another live process holds it. Renewals follow `now` (an injected clock
    /// in tests) plus the time elapsed since.
    pub fn take(
        store: Arc<dyn Leases>,
        date: NaiveDate,
        holder: String,
        now: DateTime<Utc>,
        len: Duration,
    ) -> StoreResult<Option<IssueLease>> {
        let name = issue_lease(date);
        if !take_lease(store.as_ref(), &name, &holder, now, now + len)? {
            return Ok(None);
        }
        let renew = {
            let (store, name, holder) = (store.clone(), name.clone(), holder.clone());
            let every =
                (len.to_std().unwrap_or_default() / 3).max(std::time::Duration::from_millis(100));
            let started = std::time::Instant::now();
            Ticker::start(every, move || {
                let at = now + Duration::from_std(started.elapsed()).unwrap_or_default();
                if !matches!(store.try_lease(&name, &holder, at, at + len), Ok(true)) {
                    tracing::error!(lease = %name, "could not renew the send lease");
                }
            })
        };
        Ok(Some(IssueLease {
            store,
            name,
            holder,
            renew: Some(renew),
        }))
    }

    /// Who holds it (this process).
    pub fn holder(&self) -> &str {
        &self.holder
    }
}

impl Drop for IssueLease {
    fn drop(&mut self) {
        drop(self.renew.take());
        if self.store.release_lease(&self.name, &self.holder).is_err() {
            tracing::warn!("could not release the send lease; it expires on its own");
        }
    }
}

/// A sender's heartbeat while it sends the issue of a date: recorded at once,
/// then every third of `timeout` from its own thread, until dropped. A sender
/// whose heartbeat is older than `timeout` is gone ([`sender_is_gone`]).
pub struct Heartbeat {
    _ticker: Ticker,
}

impl Heartbeat {
    pub fn start(
        store: Arc<dyn Ledger>,
        date: NaiveDate,
        holder: Holder,
        timeout: Duration,
    ) -> StoreResult<Heartbeat> {
        store.sender_seen(date, &holder, crate::clock::now())?;
        let every =
            (timeout.to_std().unwrap_or_default() / 3).max(std::time::Duration::from_millis(100));
        let ticker = Ticker::start(every, move || {
            if let Err(e) = store.sender_seen(date, &holder, crate::clock::now()) {
                tracing::error!(%holder, error = %e, "could not record this sender's heartbeat");
            }
        });
        Ok(Heartbeat { _ticker: ticker })
    }
}

/// Whether the sender `seen` is gone as of `now`: not heard from for `timeout`,
/// or a process of this machine that no longer runs.
pub fn sender_is_gone(seen: &SenderSeen, now: DateTime<Utc>, timeout: Duration) -> bool {
    now - seen.last_seen > timeout || holder_is_gone(seen.holder.as_str())
}

/// A name for this process in leases: what it is, the host, the pid, a random tag.
pub fn lease_holder(kind: &str) -> String {
    format!(
        "{kind}-{}-{}-{:08x}",
        hostname_hint(),
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Takes the lease `name` for `holder` until `until`, as [`Leases::try_lease`];
/// when another holder has it, and that holder is a process of this machine
/// that is gone (killed, crashed), takes it over at once instead of waiting for
/// it to expire: a restart resumes the issue right away.
pub fn take_lease(
    store: &dyn Leases,
    name: &str,
    holder: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> crate::store::StoreResult<bool> {
    if store.try_lease(name, holder, now, until)? {
        return Ok(true);
    }
    match store.lease_holder(name)? {
        Some(old) if holder_is_gone(&old) => {
            tracing::warn!(lease = name, holder = %old, "taking over the lease of a process that is gone");
            store.release_lease(name, &old)?;
            store.try_lease(name, holder, now, until)
        }
        _ => Ok(false),
    }
}

/// Whether `holder` (as [`lease_holder`] writes it) names a process of this host
/// that no longer runs. False whenever that cannot be known (another host, no /proc).
fn holder_is_gone(holder: &str) -> bool {
    let mut right = holder.rsplitn(3, '-');
    let (Some(_tag), Some(pid), Some(rest)) = (right.next(), right.next(), right.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    let Some((_kind, host)) = rest.split_once('-') else {
        return false;
    };
    let proc = std::path::Path::new("/proc");
    host == hostname_hint()
        && host != UNKNOWN_HOST
        && pid != std::process::id()
        && proc.join("self").exists()
        && !proc.join(pid.to_string()).exists()
}

/// The lease that makes one process at a time send the issue of `date`.
pub fn issue_lease(date: NaiveDate) -> String {
    format!("issue:{date}")
}

/// This machine's name: $HOSTNAME, else the kernel's, else "host" (unknown).
fn hostname_hint() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| UNKNOWN_HOST.into())
}

const UNKNOWN_HOST: &str = "host";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use chrono::TimeZone;

    #[test]
    fn a_lease_left_by_a_dead_local_process_is_taken_over_a_live_or_remote_one_is_not() {
        let store = crate::store::SqliteStore::open_in_memory().unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap();
        let until = now + Duration::minutes(5);
        let host = hostname_hint();
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let holders = [
            (format!("send-{host}-{dead_pid}-0000abcd"), true),
            (format!("send-{host}-{}-0000abcd", live.id()), false),
            (
                format!("serve-elsewhere.example-{dead_pid}-0000abcd"),
                false,
            ),
            ("garbage".to_string(), false),
        ];
        for (i, (old, taken)) in holders.iter().enumerate() {
            let name = format!("issue:test-{i}");
            assert!(store.try_lease(&name, old, now, until).unwrap());
            let got = take_lease(&store, &name, "serve-me-1-00000001", now, until).unwrap();
            assert_eq!(got, *taken, "holder {old}");
            let want = if *taken {
                "serve-me-1-00000001"
            } else {
                old.as_str()
            };
            assert_eq!(store.lease_holder(&name).unwrap().as_deref(), Some(want));
        }
        live.kill().unwrap();
        let _ = live.wait();
    }

    #[test]
    fn the_guard_renews_the_lease_while_held_and_releases_it_when_dropped() {
        let store: Arc<dyn Store> = Arc::new(crate::store::SqliteStore::open_in_memory().unwrap());
        let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap();
        let len = Duration::milliseconds(600);
        let guard = IssueLease::take(store.clone(), date, "send-a".into(), now, len)
            .unwrap()
            .expect("free");
        assert_eq!(guard.holder(), "send-a");
        let other = || IssueLease::take(store.clone(), date, "send-b".into(), now, len);
        assert!(other().unwrap().is_none(), "held");
        // Past its first length, the lease is still held: it was renewed.
        std::thread::sleep(std::time::Duration::from_millis(900));
        let later = now + Duration::milliseconds(700);
        assert!(!store
            .try_lease(&issue_lease(date), "send-b", later, later + len)
            .unwrap());
        drop(guard);
        assert_eq!(store.lease_holder(&issue_lease(date)).unwrap(), None);
        assert!(other().unwrap().is_some(), "released");
    }
}
