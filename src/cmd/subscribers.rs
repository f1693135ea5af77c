//! `digestif subscribers …`

use std::path::Path;

use crate::cli::SubscribersCmd;

use super::{CmdResult, Failure};

pub fn run(config: Option<&Path>, cmd: SubscribersCmd) -> CmdResult {
    let _ = (config, cmd);
    Err(Failure::job(anyhow::anyhow!(
        "subscribers: not available yet"
    )))
}
