//! `ballast-rpc`: the command-line client of ballastd's JSON-RPC socket, with the method names,
//! flags and parameter names of SPDK's `rpc.py`.
//!
//! ```text
//! ballast-rpc [-s SOCK] [-t TIMEOUT_SECS] [-r N] [-v] METHOD [args...]
//! ballast-rpc bdev_malloc_create -b Malloc0 64 512
//! ballast-rpc call METHOD ['{"json":"params"}' | -]
//! ballast-rpc load_config < config.json
//! ballast-rpc save_config -o config.json    # mode 0600: it holds key material
//! ```
//!
//! A result is printed to stdout as pretty JSON, except a bare string (a created bdev's name),
//! which is printed unquoted as rpc.py does so that `name=$(ballast-rpc bdev_malloc_create 64 512)`
//! works, and bdev_nvme_attach_controller's list of bdev names, printed on one line as rpc.py
//! does. A JSON-RPC error is printed to stderr as `error: <message> (code <code>)`.
//!
//! Exit status: 0 on a result, 1 on an error response or when the daemon cannot be reached or
//! answers nonsense, 2 on a usage error.
//!
//! The client shares no code with the server in this crate's library: it speaks the wire
//! protocol only, so it can talk to any daemon version (or to SPDK).

#[path = "cli/bdev.rs"]
mod bdev;
#[path = "cli/client.rs"]
mod client;
#[path = "cli/framework.rs"]
mod framework;
#[path = "cli/lvol.rs"]
mod lvol;
#[path = "cli/methods.rs"]
mod methods;
#[path = "cli/nvme.rs"]
mod nvme;
#[path = "cli/nvmf.rs"]
mod nvmf;
#[path = "cli/output.rs"]
mod output;
#[path = "cli/params.rs"]
mod params;
#[path = "cli/stages.rs"]
mod stages;

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use serde_json::Value;

use client::{Options, Reply};
use methods::{params_for, Method};
use output::Style;

/// Where ballastd listens unless told otherwise (`ballastd -r PATH`).
const DEFAULT_SOCKET: &str = "/var/tmp/ballast.sock";

/// Command line of the ballast JSON-RPC client.
#[derive(Debug, Parser)]
#[command(
    name = "ballast-rpc",
    version,
    about = "Call ballastd's JSON-RPC methods (SPDK rpc.py compatible names and flags)",
    after_help = "Each METHOD has its own --help. Methods without a subcommand here: \
                  ballast-rpc call METHOD '{\"param\":\"value\"}'"
)]
pub struct Cli {
    /// The daemon's RPC socket.
    #[arg(short = 's', value_name = "SOCK", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Seconds to wait for the response.
    #[arg(
        short = 't',
        value_name = "TIMEOUT_SECS",
        default_value = "60",
        value_parser = parse_timeout
    )]
    timeout: Duration,
    /// Retry connecting N times, 0.2 s apart (for scripts that have just started the daemon).
    #[arg(short = 'r', value_name = "N", default_value_t = 0)]
    conn_retries: u32,
    /// Print the request and the response on stderr.
    #[arg(short = 'v')]
    verbose: bool,
    #[command(subcommand)]
    method: Method,
}

/// The command line as parsed and as its help shows it: [`Cli`], with each subcommand's
/// required options marked so in the option list.
pub fn command() -> clap::Command {
    methods::mark_required(Cli::command())
}

fn main() -> ExitCode {
    let cli = Cli::from_arg_matches(&command().get_matches())
        .unwrap_or_else(|e| e.format(&mut command()).exit());
    match run(&cli) {
        Ok(status) => status,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<ExitCode, String> {
    let stdin = if cli.method.reads_stdin() {
        Some(read_stdin()?)
    } else {
        None
    };
    let (method, params) = params_for(&cli.method, stdin.as_deref())?;
    let opts = Options {
        socket: cli.socket.clone(),
        timeout: cli.timeout,
        conn_retries: cli.conn_retries,
        verbose: cli.verbose,
    };
    let style = cli.method.style();
    match client::call(&opts, &method, params) {
        Ok(Reply::Result(result)) => match cli.method.output_file() {
            Some(path) => {
                output::write_private_file(path, &output::render(&result, style)?)?;
                Ok(ExitCode::SUCCESS)
            }
            None => {
                if cli.method.result_is_private() {
                    output::make_stdout_private()?;
                }
                print_result(&result, style)
            }
        },
        Ok(Reply::Error(error)) => {
            eprintln!("error: {error}");
            Ok(ExitCode::FAILURE)
        }
        // The daemon may exit before its answer to a kill gets out, as rpc.py also accepts.
        Err(client::Error::Closed { received: 0, .. }) if method == "spdk_kill_instance" => {
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e.to_string()),
    }
}

fn print_result(result: &Value, style: Style) -> Result<ExitCode, String> {
    let text = output::render(result, style)?;
    match writeln!(io::stdout().lock(), "{text}") {
        // `ballast-rpc … | head` is not a failure of the call.
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write to stdout: {e}"))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn read_stdin() -> Result<String, String> {
    let mut text = String::new();
    io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    Ok(text)
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("`{text}` is not a timeout in seconds (a number > 0)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_definition_is_consistent() {
        // Catches duplicate short flags, bad groups and the like in every subcommand.
        Cli::command().debug_assert();
        command().debug_assert();
    }

    #[test]
    fn default_socket_is_the_daemons() {
        assert_eq!(DEFAULT_SOCKET, ballast_rpc::DEFAULT_SOCKET);
    }

    #[test]
    fn global_options() {
        let cli = Cli::try_parse_from(["ballast-rpc", "spdk_get_version"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/var/tmp/ballast.sock"));
        assert_eq!(cli.timeout, Duration::from_secs(60));
        assert_eq!(cli.conn_retries, 0);
        assert!(!cli.verbose);

        let cli = Cli::try_parse_from([
            "ballast-rpc",
            "-s",
            "/tmp/x.sock",
            "-t",
            "0.5",
            "-r",
            "3",
            "-v",
            "save_config",
        ])
        .unwrap();
        assert_eq!(cli.socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(cli.timeout, Duration::from_millis(500));
        assert_eq!(cli.conn_retries, 3);
        assert!(cli.verbose);

        for bad in ["0", "-1", "nan", "inf", "soon"] {
            assert!(
                Cli::try_parse_from(["ballast-rpc", "-t", bad, "save_config"]).is_err(),
                "-t {bad}"
            );
        }
    }

    #[test]
    fn unknown_method_is_a_usage_error() {
        let e = Cli::try_parse_from(["ballast-rpc", "bdev_frobnicate"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
