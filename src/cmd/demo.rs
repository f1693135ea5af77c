//! `digestif demo`: the whole job on the built-in example, no server needed.

use crate::cli::DemoArgs;

use super::{CmdResult, Failure};

pub fn demo(args: &DemoArgs) -> CmdResult {
    let _ = args;
    Err(Failure::job(anyhow::anyhow!("demo: not available yet")))
}
