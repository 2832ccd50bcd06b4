//! The `billing-ledger` binary: parse the command line, set up logging, call the library.

use billing_ledger::cli;
use billing_ledger::config::{Cli, Command, LogFormat};
use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Cli::parse();
    let format = match &args.command {
        Command::Serve(serve) => serve.log_format,
        _ => LogFormat::Text,
    };
    cli::init_logging(format);
    match cli::execute(args.command).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("billing-ledger: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
