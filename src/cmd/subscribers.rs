//! `digestif subscribers …`
//!
//! `import` exits 0 when every row was imported, 1 when some rows were skipped
//! (each listed on stderr, their lines named in the summary), 2 when the file or
//! its header cannot be used (nothing is imported then).

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::str::FromStr;

use anyhow::{anyhow, Context};

use crate::cli::SubscribersCmd;
use crate::domain::{Locale, SubscriberEmail, SubscriberStatus};
use std::sync::Arc;

use crate::store::{Backend, NewSubscriber, Subscribers, Upserted};
use crate::subscribers::{self, CsvError};

use super::exit::usage;
use super::CmdResult;

pub fn run(config: Option<&Path>, cmd: SubscribersCmd) -> CmdResult {
    let cfg = super::load_config(config)?;
    let open = || crate::store::open(&cfg).context("cannot open the subscribers database");
    match cmd {
        SubscribersCmd::Import { file, dry_run } => import(&file, dry_run, open),
        SubscribersCmd::Export { file } => export(file.as_deref(), &*open()?),
        SubscribersCmd::List { status } => list(status.as_deref(), &*open()?),
        SubscribersCmd::Add {
            email,
            name,
            locale,
            categories,
            timezone,
        } => add(
            &*open()?,
            &email,
            name,
            locale.as_deref(),
            categories.as_deref(),
            timezone.as_deref(),
        ),
        SubscribersCmd::Show { email } => show(&*open()?, &email),
        SubscribersCmd::Remove { email } => remove(&*open()?, &email),
        SubscribersCmd::Forget { email } => forget(&*open()?, &email),
    }
}

fn import(
    file: &Path,
    dry_run: bool,
    open: impl FnOnce() -> anyhow::Result<Arc<dyn Backend>>,
) -> CmdResult {
    let input = std::fs::File::open(file)
        .with_context(|| format!("cannot read {}", file.display()))
        .map_err(usage)?;
    let store = if dry_run { None } else { Some(open()?) };
    let stderr = io::stderr();
    let mut err = stderr.lock();
    let summary = subscribers::import(
        io::BufReader::with_capacity(1 << 16, input),
        store.as_deref().map(|s| s as &dyn Subscribers),
        &mut |e| {
            let _ = writeln!(err, "{}: {e}", file.display());
        },
    )
    .map_err(|e| anyhow::Error::new(e).context(file.display().to_string()))?;
    println!("{summary}");
    if summary.skipped > 0 {
        return Err(anyhow!(
            "{} of {} rows skipped: fix the lines listed above and import the file again \
             (rows already imported are not duplicated)",
            summary.skipped,
            summary.rows
        ));
    }
    Ok(())
}

/// A closed pipe (`| head`) ends the output quietly.
fn quiet_pipe(e: io::Error) -> CmdResult {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(anyhow!("cannot write the output: {e}"))
    }
}

fn export(file: Option<&Path>, store: &dyn Backend) -> CmdResult {
    let result = match file {
        Some(path) => {
            let f = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let n = subscribers::export(store, BufWriter::new(f))?;
            eprintln!("exported {n} subscribers to {}", path.display());
            Ok(())
        }
        None => subscribers::export(store, BufWriter::new(io::stdout().lock())).map(|_| ()),
    };
    match result {
        Err(CsvError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn list(status: Option<&str>, store: &dyn Backend) -> CmdResult {
    let status = status
        .map(|s| match s.trim().to_ascii_lowercase().as_str() {
            "active" => Ok(SubscriberStatus::Active),
            "pending" => Ok(SubscriberStatus::Pending),
            "unsubscribed" => Ok(SubscriberStatus::Unsubscribed),
            "bounced" => Ok(SubscriberStatus::Bounced),
            other => Err(usage(anyhow!(
                "unknown status {other:?}: use active, pending, unsubscribed or bounced"
            ))),
        })
        .transpose()?;
    let mut out = BufWriter::new(io::stdout().lock());
    let mut after = 0;
    loop {
        let page = store.subscribers_page(status, after, 5_000)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for s in &page {
            let line = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}",
                s.email,
                s.status,
                s.name.as_deref().unwrap_or("-"),
                s.locale.map(|l| l.code()).unwrap_or("-"),
                if s.categories.is_empty() {
                    "-".to_string()
                } else {
                    s.categories.join(";")
                }
            );
            if let Err(e) = line {
                return quiet_pipe(e);
            }
        }
    }
    out.flush().or_else(quiet_pipe)
}

fn add(
    store: &dyn Backend,
    email: &str,
    name: Option<String>,
    locale: Option<&str>,
    categories: Option<&str>,
    timezone: Option<&str>,
) -> CmdResult {
    let email = SubscriberEmail::parse(email).map_err(|e| usage(anyhow!("email: {e}")))?;
    let name = name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
    if name
        .as_deref()
        .is_some_and(|n| n.chars().any(char::is_control))
    {
        return Err(usage(anyhow!(
            "--name: contains a control character (CR/LF?)"
        )));
    }
    let locale = locale
        .map(|l| {
            Locale::from_str(l)
                .map_err(|_| usage(anyhow!("--locale: unknown locale {l:?}: use fr or en")))
        })
        .transpose()?;
    let timezone = timezone
        .map(|t| {
            chrono_tz::Tz::from_str(t).map_err(|_| {
                usage(anyhow!(
                    "--timezone: unknown time zone {t:?}: use an IANA name such as Europe/Paris"
                ))
            })
        })
        .transpose()?;
    let categories: Vec<String> = categories
        .unwrap_or("")
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    if categories.iter().any(|c| c.chars().any(char::is_control)) {
        return Err(usage(anyhow!(
            "--categories: contains a control character (CR/LF?)"
        )));
    }
    let existing = store.subscriber_by_email(&email)?;
    if existing.is_none() {
        if let Some(sup) = store.suppression(&email)? {
            if sup.reason.is_the_persons_choice() {
                return Err(anyhow!(
                    "{email} was {} on {} and stays out; they can sign up again through the \
                     form (double opt-in)",
                    sup.reason,
                    sup.at.format("%Y-%m-%d")
                ));
            }
            // Removed or bounced: the operator may take it back by hand.
            store.lift_suppression(&email)?;
        }
    }
    if let Some(s) = &existing {
        if s.status == SubscriberStatus::Unsubscribed {
            // Their choice stands: only they can come back, through the sign-up form.
            return Err(anyhow!(
                "{email} unsubscribed earlier and stays unsubscribed; they can sign up again \
                 through the form (double opt-in)"
            ));
        }
    }
    let outcome = store.upsert_subscriber(&NewSubscriber {
        email: email.clone(),
        name,
        locale,
        categories,
        timezone,
        status: SubscriberStatus::Active,
    })?;
    // A bounced or pending address re-added by hand is active again.
    if let Some(s) = existing.filter(|s| s.status != SubscriberStatus::Active) {
        store.set_status(
            s.id,
            SubscriberStatus::Active,
            "re-added by hand",
            crate::clock::now(),
        )?;
        println!("{email}: active again (was {})", s.status);
        return Ok(());
    }
    match outcome {
        Upserted::Inserted => println!("{email}: added"),
        Upserted::Updated => println!("{email}: updated"),
        Upserted::Unchanged => println!("{email}: already subscribed, unchanged"),
        Upserted::Suppressed => return Err(anyhow!("{email} was removed meanwhile; try again")),
    }
    Ok(())
}

fn show(store: &dyn Backend, email: &str) -> CmdResult {
    let email = SubscriberEmail::parse(email).map_err(|e| usage(anyhow!("email: {e}")))?;
    let Some(s) = store.subscriber_by_email(&email)? else {
        return Err(anyhow!("{email} is not a subscriber"));
    };
    println!("{}\t{}", s.email, s.status);
    let events = store.bounce_events(s.id)?;
    if events.is_empty() {
        println!("no bounce or complaint");
    }
    for e in events {
        println!(
            "{}\tissue {}\t{}\t{}\t{}\t{}",
            e.at.format("%Y-%m-%d %H:%M:%S UTC"),
            e.issue,
            e.kind,
            e.status.as_deref().unwrap_or("-"),
            e.diagnostic.as_deref().unwrap_or("-"),
            e.source
        );
    }
    Ok(())
}

fn remove(store: &dyn Backend, email: &str) -> CmdResult {
    let email = SubscriberEmail::parse(email).map_err(|e| usage(anyhow!("email: {e}")))?;
    if store.remove_subscriber(&email)? {
        println!(
            "{email}: removed, with their delivery history; a keyed hash of the address is kept \
             so that no import adds it back"
        );
        Ok(())
    } else {
        Err(anyhow!("{email} is not a subscriber"))
    }
}

fn forget(store: &dyn Backend, email: &str) -> CmdResult {
    let email = SubscriberEmail::parse(email).map_err(|e| usage(anyhow!("email: {e}")))?;
    let found = store.forget_subscriber(&email)?;
    println!(
        "{email}: {}; only a keyed hash of the address is kept, so that no import adds it back \
         (their own confirmed sign-up would)",
        if found {
            "erased (subscription, sign-up, delivery history)"
        } else {
            "nothing stored about it"
        }
    );
    Ok(())
}
