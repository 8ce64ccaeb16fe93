//! The daemon as a whole: methods, version, reactors and threads, subsystems and their
//! config, log level, buffer pools, socket options, shutdown.

use std::path::PathBuf;

use clap::Subcommand;

use crate::params::{bare, parse_json, Call, Params};

#[derive(Debug, Subcommand)]
pub enum Framework {
    /// List the methods the daemon serves.
    #[command(name = "rpc_get_methods")]
    RpcGetMethods {
        /// Only the methods callable in the current state.
        #[arg(short, long)]
        current: bool,
        /// Include deprecated aliases (ballast has none).
        #[arg(short, long)]
        include_aliases: bool,
    },
    /// Show the daemon's version (in SPDK's shape).
    #[command(name = "spdk_get_version")]
    SpdkGetVersion,
    /// Show the reactors, their cores and the threads on them.
    #[command(name = "framework_get_reactors")]
    GetReactors,
    /// Show per-thread busy/idle statistics.
    #[command(name = "thread_get_stats")]
    ThreadGetStats,
    /// Wait until the daemon has finished initialising.
    #[command(name = "framework_wait_init")]
    WaitInit,
    /// List the configurable subsystems, each after those it depends on.
    #[command(name = "framework_get_subsystems")]
    GetSubsystems,
    /// Print one subsystem's configuration (its part of save_config). The accel subsystem's
    /// holds crypto key material.
    #[command(
        name = "framework_get_config",
        after_help = "Example: ballast-rpc framework_get_config bdev"
    )]
    GetConfig {
        /// Subsystem: accel, bdev or nvmf (framework_get_subsystems lists them).
        name: String,
    },
    /// Print the current configuration in SPDK's JSON config format. It holds crypto keys
    /// with their material, so it is written private: mode 0600 (also when stdout is
    /// redirected to a file).
    #[command(
        name = "save_config",
        after_help = "Examples:\n  ballast-rpc save_config -o ballast.json\n  \
                      ballast-rpc save_config > ballast.json\n\n\
                      Not offered: rpc.py's -i/--indent and -s/--subsystems \
                      (framework_get_config prints one subsystem)."
    )]
    SaveConfig {
        /// Write the configuration to FILE (created or replaced with mode 0600), not stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Apply a JSON config (SPDK's format, as save_config prints it) read from stdin.
    #[command(
        name = "load_config",
        after_help = "Example: ballast-rpc load_config < config.json\n\n\
                      Not offered: rpc.py's -j/--json-conf (redirect stdin) and \
                      -i/--include-aliases."
    )]
    LoadConfig,
    /// Shut the daemon down cleanly.
    #[command(name = "spdk_kill_instance")]
    SpdkKillInstance {
        /// Signal name, e.g. SIGTERM or SIGINT.
        sig_name: String,
    },
    /// Set the log print level.
    #[command(
        name = "log_set_print_level",
        after_help = "Example: ballast-rpc log_set_print_level DEBUG"
    )]
    LogSetPrintLevel {
        /// DISABLED, ERROR, WARNING, NOTICE, INFO or DEBUG (any case).
        level: String,
    },
    /// Show the log print level.
    #[command(name = "log_get_print_level")]
    LogGetPrintLevel,
    /// Show each reactor's I/O buffer pools.
    #[command(name = "iobuf_get_stats")]
    IobufGetStats,
    /// Show the options of a socket implementation (ballast has posix).
    #[command(
        name = "sock_impl_get_options",
        after_help = "Example: ballast-rpc sock_impl_get_options -i posix"
    )]
    SockImplGetOptions {
        /// Socket implementation name: posix.
        #[arg(short = 'i', long = "impl", value_name = "IMPL")]
        impl_name: String,
    },
}

impl Framework {
    /// The method and params; `stdin` is what was read when [`Framework::reads_stdin`].
    pub fn call(&self, stdin: Option<&str>) -> Result<Call, String> {
        use Framework as F;
        Ok(match self {
            F::RpcGetMethods {
                current,
                include_aliases,
            } => Params::new()
                .flag("current", *current)
                .flag("include_aliases", *include_aliases)
                .call("rpc_get_methods"),
            F::SpdkGetVersion => bare("spdk_get_version"),
            F::GetReactors => bare("framework_get_reactors"),
            F::ThreadGetStats => bare("thread_get_stats"),
            F::WaitInit => bare("framework_wait_init"),
            F::GetSubsystems => bare("framework_get_subsystems"),
            F::GetConfig { name } => Params::new()
                .set("name", name.as_str())
                .call("framework_get_config"),
            F::SaveConfig { output: _ } => bare("save_config"),
            F::LoadConfig => {
                let text = stdin.unwrap_or_default();
                if text.trim().is_empty() {
                    let usage = "usage: ballast-rpc load_config < config.json";
                    return Err(format!(
                        "load_config reads the config JSON from stdin, and stdin \
                         was empty ({usage})"
                    ));
                }
                ("load_config", Some(parse_json(text, "config on stdin")?))
            }
            F::SpdkKillInstance { sig_name } => Params::new()
                .set("sig_name", sig_name.as_str())
                .call("spdk_kill_instance"),
            F::LogSetPrintLevel { level } => Params::new()
                .set("level", level.as_str())
                .call("log_set_print_level"),
            F::LogGetPrintLevel => bare("log_get_print_level"),
            F::IobufGetStats => bare("iobuf_get_stats"),
            F::SockImplGetOptions { impl_name } => Params::new()
                .set("impl_name", impl_name.as_str())
                .call("sock_impl_get_options"),
        })
    }

    pub fn reads_stdin(&self) -> bool {
        matches!(self, Framework::LoadConfig)
    }
}

#[cfg(test)]
pub mod tests {
    use crate::methods::tests::Case;
    use serde_json::json;

    pub fn cases() -> Vec<Case> {
        vec![
            ("rpc_get_methods", "rpc_get_methods", None),
            (
                "rpc_get_methods -c",
                "rpc_get_methods",
                Some(json!({"current": true})),
            ),
            (
                "rpc_get_methods --current --include-aliases",
                "rpc_get_methods",
                Some(json!({"current": true, "include_aliases": true})),
            ),
            ("spdk_get_version", "spdk_get_version", None),
            ("framework_get_reactors", "framework_get_reactors", None),
            ("thread_get_stats", "thread_get_stats", None),
            ("framework_wait_init", "framework_wait_init", None),
            ("framework_get_subsystems", "framework_get_subsystems", None),
            (
                "framework_get_config bdev",
                "framework_get_config",
                Some(json!({"name": "bdev"})),
            ),
            ("save_config", "save_config", None),
            ("save_config -o /tmp/cfg.json", "save_config", None),
            (
                "spdk_kill_instance SIGTERM",
                "spdk_kill_instance",
                Some(json!({"sig_name": "SIGTERM"})),
            ),
            (
                "log_set_print_level DEBUG",
                "log_set_print_level",
                Some(json!({"level": "DEBUG"})),
            ),
            ("log_get_print_level", "log_get_print_level", None),
            ("iobuf_get_stats", "iobuf_get_stats", None),
            (
                "sock_impl_get_options -i posix",
                "sock_impl_get_options",
                Some(json!({"impl_name": "posix"})),
            ),
            (
                "sock_impl_get_options --impl uring",
                "sock_impl_get_options",
                Some(json!({"impl_name": "uring"})),
            ),
        ]
    }

    pub const MALFORMED: &[&str] = &[
        "save_config -o",
        "spdk_kill_instance",
        "rpc_get_methods extra",
        "framework_get_config",
        "framework_get_config bdev nvmf",
        "framework_get_subsystems bdev",
        "log_set_print_level",
        "log_get_print_level DEBUG",
        "iobuf_get_stats x",
        "sock_impl_get_options",
        "sock_impl_get_options posix",
    ];
}
