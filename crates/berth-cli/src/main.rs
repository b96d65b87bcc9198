//! `berth`: the server (`berth serve`) and a command-line client of it shaped like the Azure CLI.
//! Every client command talks HTTP to a running server and prints JSON.

mod args;
mod client;
mod commands;
mod debug;
mod fine_tuning;
mod serve;

#[cfg(test)]
mod tests;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = args::Cli::parse();
    match commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
