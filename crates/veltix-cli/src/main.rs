//! `veltix`: serve, send, ping, bench, demo.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod demo;
mod logging;
mod ping;
mod secure;
mod send;
mod serve;

/// Veltix: TCP without the boilerplate (wire-compatible with Python Veltix).
#[derive(Parser)]
#[command(name = "veltix", version, about)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "veltix=debug". Logs go to stderr
    /// through a bounded, non-blocking writer: when stderr is slow, lines are dropped (and
    /// counted), the server never waits for it.
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    /// Log line format: text (colours only on a terminal) or json (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
    /// Log lines that may wait for a slow stderr before new ones are dropped.
    #[arg(long, global = true, value_name = "LINES", default_value_t = logging::BUFFERED_LINES)]
    log_buffer: usize,
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
    let logging = match logging::Logging::init(&cli.log, cli.log_format, cli.log_buffer) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("veltix: error: {e}");
            return ExitCode::from(2);
        }
    };
    let r = match cli.command {
        Command::Serve(a) => serve::run(a, &logging),
        Command::Send(a) => send::run(a),
        Command::Ping(a) => ping::run(a),
        Command::Bench(a) => bench::run(*a),
        Command::Demo(a) => demo::run(a),
    };
    logging.finish();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("veltix: error: {e}");
            ExitCode::FAILURE
        }
    }
}
