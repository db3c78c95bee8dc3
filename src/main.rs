//! The `revokd` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;
use revokd::client;
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
            // In full: what is wrong, what was expected, the usage line.
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE as u8);
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
        Command::Client(args) => match args.action {
            revokd::config::ClientAction::Add {
                clients_file,
                id,
                permissions,
                audiences,
                tls_names,
            } => match revokd::callers::add_client(&clients_file, &id, permissions, audiences, tls_names) {
                Ok(secret) => {
                    // The only time the secret is shown.
                    println!("{}", serde_json::json!({"id": id, "secret": secret}));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("revokd client add: {e}");
                    ExitCode::FAILURE
                }
            },
        },
        Command::Token(args) => runtime.block_on(client("token", client::token(args))),
        Command::Session(args) => runtime.block_on(client("session", client::session(args))),
        Command::Jwks(endpoint) => runtime.block_on(client("jwks", client::jwks(endpoint))),
        Command::Status(args) => runtime.block_on(client("status", client::status(args))),
    }
}

/// Runs a client command: its answer as the exit status, an error in full on stderr.
async fn client(
    command: &str,
    run: impl std::future::Future<Output = Result<client::Answer, client::CliError>>,
) -> ExitCode {
    match run.await {
        Ok(client::Answer::Yes) => ExitCode::SUCCESS,
        Ok(client::Answer::No) => ExitCode::from(client::EXIT_NO),
        Err(e) => {
            eprintln!("revokd {command}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
