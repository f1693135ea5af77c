//! `digestif migrate` (the database's schema brought up to date, nothing else)
//! and `digestif store copy` (a whole database moved to another one).

use std::path::Path;

use crate::cli::StoreCmd;
use crate::store::Location;

use super::exit::usage;
use super::{load_config, CmdResult};

pub fn migrate(config: Option<&Path>) -> CmdResult {
    let cfg = load_config(config)?;
    let store = crate::store::open(&cfg)
        .map_err(|e| anyhow::anyhow!("cannot migrate the database {}: {e}", cfg.database()))?;
    let version = store.schema_version()?;
    println!("database at schema version {version}");
    Ok(())
}

pub fn run(cmd: StoreCmd) -> CmdResult {
    match cmd {
        StoreCmd::Copy { from, to } => copy(&from, &to),
    }
}

fn copy(from: &str, to: &str) -> CmdResult {
    let parse = |flag: &str, s: &str| {
        Location::parse(s).map_err(|e| usage(anyhow::anyhow!("--{flag}: {e}")))
    };
    let (from, to) = (parse("from", from)?, parse("to", to)?);
    if from == to {
        return Err(usage(anyhow::anyhow!(
            "--from and --to name the same database ({from})"
        )));
    }
    if let Location::SqliteFile(p) = &from {
        if !p.is_file() {
            return Err(usage(anyhow::anyhow!(
                "--from: there is no database file {}",
                p.display()
            )));
        }
    }
    let open =
        |at: &Location| crate::store::open_at(at).map_err(|e| super::send::cannot_open(at, e));
    let (source, target) = (open(&from)?, open(&to)?);
    let dump = crate::store::copy::copy(&*source, &*target)
        .map_err(|e| anyhow::anyhow!("cannot copy into {to}: {e}"))?;
    let counts: Vec<String> = dump
        .counts()
        .iter()
        .map(|(what, n)| format!("{n} {what}"))
        .collect();
    println!("copied {} from {from} to {to}", counts.join(", "));
    Ok(())
}
