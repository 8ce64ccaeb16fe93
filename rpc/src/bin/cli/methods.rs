//! One subcommand per JSON-RPC method, with rpc.py's flag letters, and [`params_for`], the pure
//! mapping from a parsed subcommand to the method name and the `params` SPDK's schema expects.
//!
//! The subcommands are declared by concern, each group in its own file, and flattened into
//! [`Method`]:
//!
//! ```text
//!  framework.rs  rpc_get_methods, spdk_get_version, framework_*, save/load_config, log_*, ...
//!  bdev.rs       bdev_get_*, bdev_wait_for_examine, malloc, null, uring
//!  stages.rs     compress and crypto bdevs, accel crypto keys
//!  lvol.rs       bdev_lvol_* (lvol stores and lvols)
//!  nvme.rs       bdev_nvme_* (remote NVMe/TCP controllers)
//!  nvmf.rs       nvmf_* (the target)
//!  here          call (raw mode)
//! ```
//!
//! Keys that the operator did not give are left out rather than sent as `null`, as rpc.py does,
//! so the daemon applies its own defaults; a method whose params would be `{}` sends none.
//! Where rpc.py has flags for features ballast lacks, the subcommand's help names them under
//! "Not offered"; `call` can still send anything.

use std::path::Path;

use clap::{Command, Subcommand};
use serde_json::Value;

use crate::bdev::Bdev;
use crate::framework::Framework;
use crate::lvol::Lvol;
use crate::nvme::Nvme;
use crate::nvmf::Nvmf;
use crate::output::Style;
use crate::params::parse_json;
use crate::stages::Stages;

/// A JSON-RPC method and its arguments, as given on the command line.
#[derive(Debug, Subcommand)]
pub enum Method {
    #[command(flatten)]
    Framework(Framework),
    #[command(flatten)]
    Bdev(Bdev),
    #[command(flatten)]
    Stages(Stages),
    #[command(flatten)]
    Lvol(Lvol),
    #[command(flatten)]
    Nvme(Nvme),
    #[command(flatten)]
    Nvmf(Nvmf),

    /// Raw mode: call any method with a JSON params value.
    #[command(
        name = "call",
        after_help = "Examples:\n  ballast-rpc call bdev_get_bdevs '{\"name\":\"Malloc0\"}'\n  \
                      echo '{\"name\":\"Malloc0\"}' | ballast-rpc call bdev_get_bdevs -"
    )]
    Call {
        /// Method name.
        method: String,
        /// Params as JSON (an object, normally), or `-` to read them from stdin.
        params: Option<String>,
    },
}

impl Method {
    /// The file the result goes to instead of stdout (`save_config -o FILE`).
    pub fn output_file(&self) -> Option<&Path> {
        match self {
            Method::Framework(Framework::SaveConfig { output }) => output.as_deref(),
            _ => None,
        }
    }

    /// Whether the result may hold secrets (keys), so that it is written with mode 0600.
    pub fn result_is_private(&self) -> bool {
        matches!(
            self,
            Method::Framework(Framework::SaveConfig { .. } | Framework::GetConfig { .. })
        )
    }

    /// How the result is printed: as rpc.py prints it where that is not JSON.
    pub fn style(&self) -> Style {
        match self {
            // rpc.py's print_array: the bdev names on one line.
            Method::Nvme(Nvme::AttachController { .. }) => Style::Words,
            _ => Style::Json,
        }
    }

    /// Whether this invocation takes input from stdin (read by the caller, handed to
    /// [`params_for`]), so the mapping itself stays pure.
    pub fn reads_stdin(&self) -> bool {
        match self {
            Method::Framework(f) => f.reads_stdin(),
            Method::Call { params, .. } => params.as_deref() == Some("-"),
            _ => false,
        }
    }
}

/// Maps a subcommand to the JSON-RPC method name and its params (`None`: send no params).
///
/// `stdin` is what the caller read from stdin when [`Method::reads_stdin`] says so. Fails, with a
/// message for the operator, only on JSON the operator supplied and on sizes that overflow.
pub fn params_for(method: &Method, stdin: Option<&str>) -> Result<(String, Option<Value>), String> {
    let (name, params) = match method {
        Method::Framework(m) => m.call(stdin)?,
        Method::Bdev(m) => m.call()?,
        Method::Stages(m) => m.call(),
        Method::Lvol(m) => m.call(),
        Method::Nvme(m) => m.call(),
        Method::Nvmf(m) => m.call(),
        // Raw mode sends exactly what it was given, `{}` included.
        Method::Call { method, params } => {
            let params = match params.as_deref() {
                None => None,
                Some("-") => Some(parse_json(stdin.unwrap_or_default(), "params on stdin")?),
                Some(text) => Some(parse_json(text, "params")?),
            };
            return Ok((method.clone(), params));
        }
    };
    Ok((name.to_string(), params))
}

/// What a required option's help ends with: clap lists required and optional options together
/// under "Options:", so each required one says so.
pub const REQUIRED_MARK: &str = "[required]";

/// Marks every required option (not positional: `<ARG>` already reads as required) of every
/// subcommand with [`REQUIRED_MARK`] in its help.
pub fn mark_required(cmd: Command) -> Command {
    cmd.mut_subcommands(|sub| {
        sub.mut_args(|arg| {
            if !arg.is_required_set() || arg.is_positional() {
                return arg;
            }
            let mark = |help: Option<&clap::builder::StyledStr>| match help {
                Some(h) => format!("{} {REQUIRED_MARK}", h.to_string().trim_end()),
                None => REQUIRED_MARK.to_string(),
            };
            let help = mark(arg.get_help());
            let long_help = arg.get_long_help().map(|h| mark(Some(h)));
            let arg = arg.help(help);
            match long_help {
                Some(text) => arg.long_help(text),
                None => arg,
            }
        })
    })
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use serde_json::json;
    use std::collections::{BTreeMap, BTreeSet};

    /// A command line (split on spaces; `NQN` stands for [`NQN`]), and the method and params
    /// it must send.
    pub type Case = (&'static str, &'static str, Option<Value>);

    /// The subsystem NQN that `NQN` in a case's command line stands for.
    pub const NQN: &str = "nqn.2016-06.io.spdk:cnode1";

    fn parse(args: &[&str]) -> Result<crate::Cli, clap::Error> {
        crate::Cli::try_parse_from(std::iter::once("ballast-rpc").chain(args.iter().copied()))
    }

    fn map_with_stdin(
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<(String, Option<Value>), String> {
        let cli = parse(args).unwrap_or_else(|e| panic!("{args:?} does not parse: {e}"));
        params_for(&cli.method, stdin)
    }

    fn map(args: &[&str]) -> (String, Option<Value>) {
        map_with_stdin(args, None).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Every dedicated subcommand's cases.
    fn cases() -> Vec<Case> {
        [
            crate::framework::tests::cases(),
            crate::bdev::tests::cases(),
            crate::stages::tests::cases(),
            crate::lvol::tests::cases(),
            crate::nvme::tests::cases(),
            crate::nvmf::tests::cases(),
        ]
        .concat()
    }

    fn argv(line: &str) -> Vec<&str> {
        line.split_whitespace()
            .map(|arg| if arg == "NQN" { NQN } else { arg })
            .collect()
    }

    #[test]
    fn every_method_maps_to_spdk_names_and_params() {
        for (line, method, params) in cases() {
            let args = argv(line);
            assert_eq!(map(&args), (method.to_string(), params), "{line}");
            assert_eq!(args[0], method, "a subcommand is named after its method");
        }
        // Arguments with spaces pass through whole.
        let (_, params) = map(&["nvmf_create_subsystem", NQN, "-d", "ballast Controller"]);
        assert_eq!(
            params,
            Some(json!({"nqn": NQN, "model_number": "ballast Controller"}))
        );
    }

    #[test]
    fn every_subcommand_has_a_mapping_case() {
        let subcommands: BTreeSet<String> = crate::Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .filter(|name| name != "call" && name != "load_config")
            .collect();
        let covered: BTreeSet<String> = cases()
            .into_iter()
            .map(|(_, method, _)| method.to_string())
            .collect();
        assert_eq!(subcommands, covered);
    }

    #[test]
    fn load_config_sends_stdin_as_params() {
        let config = r#"{"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_malloc_create",
                        "params":{"name":"Malloc0","num_blocks":2048,"block_size":512}}]}]}"#;
        assert!(parse(&["load_config"]).unwrap().method.reads_stdin());
        let (method, params) = map_with_stdin(&["load_config"], Some(config)).unwrap();
        assert_eq!(method, "load_config");
        assert_eq!(params, Some(serde_json::from_str::<Value>(config).unwrap()));

        let empty = map_with_stdin(&["load_config"], Some(" \n")).unwrap_err();
        assert!(empty.contains("stdin was empty"), "{empty}");
        let broken = map_with_stdin(&["load_config"], Some("{\"subsystems\": [")).unwrap_err();
        assert!(
            broken.contains("invalid JSON in config on stdin"),
            "{broken}"
        );
    }

    #[test]
    fn raw_call_sends_params_verbatim() {
        assert!(!parse(&["call", "x"]).unwrap().method.reads_stdin());
        assert!(!parse(&["call", "x", "{}"]).unwrap().method.reads_stdin());
        assert!(parse(&["call", "x", "-"]).unwrap().method.reads_stdin());

        assert_eq!(
            map(&["call", "bdev_get_bdevs"]),
            ("bdev_get_bdevs".into(), None)
        );
        assert_eq!(
            map(&["call", "bdev_get_bdevs", "{}"]),
            ("bdev_get_bdevs".into(), Some(json!({})))
        );
        assert_eq!(
            map(&["call", "bdev_get_bdevs", r#"{"name":"Malloc0"}"#]),
            ("bdev_get_bdevs".into(), Some(json!({"name": "Malloc0"})))
        );
        // Not ours to judge: the daemon answers for methods and params it does not know.
        assert_eq!(
            map(&["call", "no_such_method", "[1,2]"]),
            ("no_such_method".into(), Some(json!([1, 2])))
        );
        assert_eq!(
            map_with_stdin(
                &["call", "nvmf_get_subsystems", "-"],
                Some(r#" {"nqn": "n"} "#)
            )
            .unwrap(),
            ("nvmf_get_subsystems".into(), Some(json!({"nqn": "n"})))
        );
        let bad = map_with_stdin(&["call", "bdev_get_bdevs", "Malloc0"], None).unwrap_err();
        assert!(bad.contains("invalid JSON in params"), "{bad}");
        let bad = map_with_stdin(&["call", "bdev_get_bdevs", "-"], Some("")).unwrap_err();
        assert!(bad.contains("invalid JSON in params on stdin"), "{bad}");
    }

    #[test]
    fn malformed_arguments_are_usage_errors() {
        let lines = [
            crate::framework::tests::MALFORMED,
            crate::bdev::tests::MALFORMED,
            crate::stages::tests::MALFORMED,
            crate::lvol::tests::MALFORMED,
            crate::nvme::tests::MALFORMED,
            crate::nvmf::tests::MALFORMED,
            &["call"],
        ]
        .concat();
        for line in lines {
            assert!(parse(&argv(line)).is_err(), "`{line}` was accepted");
        }
    }

    #[test]
    fn only_attach_controller_prints_words_and_only_configs_are_private() {
        for sub in crate::Cli::command().get_subcommands() {
            let name = sub.get_name();
            let Some(line) = cases()
                .into_iter()
                .find(|(_, method, _)| *method == name)
                .map(|(line, ..)| line)
            else {
                continue;
            };
            let method = parse(&argv(line)).unwrap().method;
            let words = name == "bdev_nvme_attach_controller";
            assert_eq!(method.style() == Style::Words, words, "{name}");
            let private = name == "save_config" || name == "framework_get_config";
            assert_eq!(method.result_is_private(), private, "{name}");
        }
    }

    #[test]
    fn oversized_null_bdev_is_refused_before_sending() {
        let e = map_with_stdin(
            &["bdev_null_create", "N", &u64::MAX.to_string(), "512"],
            None,
        )
        .unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn tiny_malloc_bdev_is_refused_before_sending() {
        let e = map_with_stdin(&["bdev_malloc_create", "0.0001", "4096"], None).unwrap_err();
        assert!(e.contains("less than one 4096-byte block"), "{e}");
    }

    #[test]
    fn every_method_has_help() {
        for sub in crate::Cli::command().get_subcommands() {
            assert!(
                sub.get_about().is_some(),
                "{} has no help text",
                sub.get_name()
            );
        }
        let help = parse(&["nvmf_create_transport", "--help"]).unwrap_err();
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        let text = help.to_string();
        for flag in [
            "--trtype",
            "--in-capsule-data-size",
            "--max-io-size",
            "--c2h-success",
            "-o",
        ] {
            assert!(text.contains(flag), "{flag} missing from:\n{text}");
        }
    }

    /// The required options (long names) of each subcommand that has any: the params the
    /// daemon refuses to go without. A subcommand not listed has no required option.
    const REQUIRED: &[(&str, &[&str])] = &[
        ("sock_impl_get_options", &["impl"]),
        ("bdev_compress_create", &["base-bdev-name"]),
        (
            "accel_crypto_key_create",
            &["cipher", "key", "key2", "name"],
        ),
        ("accel_crypto_key_destroy", &["name"]),
        ("bdev_crypto_create", &["key-name"]),
        (
            "bdev_nvme_attach_controller",
            &["name", "trtype", "traddr", "subnqn"],
        ),
        ("bdev_raid_create", &["name", "raid-level", "base-bdevs"]),
        ("nvmf_create_transport", &["trtype"]),
        (
            "nvmf_subsystem_add_listener",
            &["trtype", "traddr", "trsvcid"],
        ),
        (
            "nvmf_subsystem_remove_listener",
            &["trtype", "traddr", "trsvcid"],
        ),
    ];

    #[test]
    fn required_options_are_required_and_say_so() {
        let expected: BTreeMap<&str, BTreeSet<&str>> = REQUIRED
            .iter()
            .map(|(sub, longs)| (*sub, longs.iter().copied().collect()))
            .collect();
        let cmd = crate::command();
        for sub in cmd.get_subcommands() {
            let required: BTreeSet<&str> = sub
                .get_arguments()
                .filter(|a| a.is_required_set() && !a.is_positional())
                .map(|a| a.get_long().expect("options have a long name"))
                .collect();
            let want = expected.get(sub.get_name()).cloned().unwrap_or_default();
            assert_eq!(required, want, "{}", sub.get_name());
            for arg in sub.get_arguments().filter(|a| !a.is_positional()) {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                assert_eq!(
                    help.ends_with(REQUIRED_MARK),
                    arg.is_required_set(),
                    "{} --{}: {help}",
                    sub.get_name(),
                    arg.get_id()
                );
            }
        }
    }
}
