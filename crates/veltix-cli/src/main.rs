//! `veltix`: serve, send, ping, bench, demo.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod demo;
mod ping;
mod secure;
mod send;
mod serve;

/// Veltix: TCP without the boilerplate (wire-compatible with Python Veltix).
#[derive(Parser)]
#[command(name = "veltix", version, about)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "veltix=debug". Logs go to stderr.
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a server (echo, chat or sink).
    Serve(serve::Args),
    /// Send one message (optionally wait for the reply).
    Send(send::Args),
    /// Ping a server.
    Ping(ping::Args),
    /// Benchmarks, optionally side by side with Python Veltix.
    Bench(Box<bench::Args>),
    /// A server and clients talking on loopback, narrated.
    Demo(demo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let r = match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Send(a) => send::run(a),
        Command::Ping(a) => ping::run(a),
        Command::Bench(a) => bench::run(*a),
        Command::Demo(a) => demo::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("veltix: error: {e}");
            ExitCode::FAILURE
        }
    }
}
