//! `digestif migrate`: the database's schema brought up to date, nothing else.

use std::path::Path;

use super::{load_config, CmdResult, Failure};

pub fn migrate(config: Option<&Path>) -> CmdResult {
    let cfg = load_config(config)?;
    let store = crate::store::open(&cfg).map_err(|e| {
        Failure::job(anyhow::anyhow!(
            "cannot migrate the database {:?}: {e}",
            cfg.storage.database
        ))
    })?;
    let version = store.schema_version().map_err(Failure::job)?;
    println!("database at schema version {version}");
    Ok(())
}
