//! The `revokd` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;
use revokd::config::{Cli, Command, EXIT_USAGE};

fn usage_error(message: &str) -> ExitCode {
    eprintln!("revokd: {message}");
    ExitCode::from(EXIT_USAGE as u8)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            return usage_error(first.trim_start_matches("error: "));
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("revokd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(config) => {
            revokd::telemetry::init(config.log_format);
            runtime.block_on(async {
                let server = match revokd::server::Server::bind(*config).await {
                    Ok(s) => s,
                    // Validated first thing, before anything is logged: one line, exit 64.
                    Err(revokd::server::StartError::Config(e)) => return usage_error(&e.to_string()),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start");
                        return ExitCode::FAILURE;
                    }
                };
                match server.run(revokd::shutdown::signal()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!(error = %e, "server failed");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Keygen(args) => match revokd::keys::keygen(args.alg, &args.kid, &args.out) {
            Ok(path) => {
                println!("{}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("revokd keygen: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Token(args) => runtime.block_on(async {
            match revokd::client::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("revokd token: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
    }
}
