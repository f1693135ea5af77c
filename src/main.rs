//! The binary: parse arguments, set up logging, run, map the result to an exit code.

use clap::Parser;
use digestif::cmd::exit::Exit;

fn main() {
    let cli = digestif::cli::Cli::parse();
    digestif::cmd::init_logging(cli.log_format);
    let result = digestif::cmd::run(cli);
    if let Err(e) = &result {
        eprintln!("error: {e:#}");
    }
    std::process::exit(Exit::of(&result).code());
}
