//! `digestif send`, `lint`, `ledger`, `unsubscribe`.

use std::path::Path;

use crate::cli::{DateArgs, LedgerArgs, SendArgs, UnsubscribeArgs};

use super::{CmdResult, Failure};

pub fn send(config: Option<&Path>, args: &SendArgs) -> CmdResult {
    let _ = (config, args);
    Err(Failure::job(anyhow::anyhow!("send: not available yet")))
}

pub fn lint(config: Option<&Path>, args: &DateArgs) -> CmdResult {
    let _ = (config, args);
    Err(Failure::job(anyhow::anyhow!("lint: not available yet")))
}

pub fn ledger(config: Option<&Path>, args: &LedgerArgs) -> CmdResult {
    let _ = (config, args);
    Err(Failure::job(anyhow::anyhow!("ledger: not available yet")))
}

pub fn unsubscribe(config: Option<&Path>, args: &UnsubscribeArgs) -> CmdResult {
    let _ = (config, args);
    Err(Failure::job(anyhow::anyhow!(
        "unsubscribe: not available yet"
    )))
}
