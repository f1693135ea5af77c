//! The binary: parse arguments, set up logging, run, map the result to an exit code.

use clap::Parser;

fn main() {
    let cli = digestif::cli::Cli::parse();
    digestif::cmd::init_logging(cli.log_format);
    let code = match digestif::cmd::run(cli) {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            f.code
        }
    };
    std::process::exit(code);
}
