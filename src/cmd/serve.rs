//! `digestif serve`: the scheduler and the HTTP server under one process.

use std::path::Path;

use crate::cli::ServeArgs;

use super::{CmdResult, Failure};

pub fn serve(config: Option<&Path>, args: &ServeArgs) -> CmdResult {
    let _ = (config, args);
    Err(Failure::job(anyhow::anyhow!("serve: not available yet")))
}
