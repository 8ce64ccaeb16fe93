//! The NVMe-oF target: transport, subsystems, namespaces, listeners, hosts, statistics.
//!
//! rpc.py gives every `nvmf_*` method a `--tgt-name` (`-t`, `-g` or `-p`); ballast has one
//! target, so no subcommand here offers it.

use clap::{ArgGroup, Subcommand};

use crate::params::{bare, Call, Params};

/// The well-known discovery NQN; rpc.py accepts `discovery` as a shortcut for it.
const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

#[derive(Debug, Subcommand)]
pub enum Nvmf {
    /// Create an NVMe-oF transport (TCP).
    #[command(
        name = "nvmf_create_transport",
        after_help = "Example: ballast-rpc nvmf_create_transport -t TCP -c 8192 -q 128\n\n\
                      Not offered: rpc.py's -g/--tgt-name (ballast has one target), \
                      -f/--dif-insert-or-strip (no DIF), and its tuning of SPDK internals \
                      (-a, -n, -b, -z, -d, -s, -r, -y, -l, -x, -w, -e, -M, -I, -S, \
                      --acceptor-poll-rate, --ack-timeout, --data-wr-pool-size, \
                      --disable-command-passthru, --kas, --min-kato)."
    )]
    CreateTransport {
        /// Transport type.
        #[arg(short = 't', long)]
        trtype: String,
        /// Maximum outstanding I/O per queue.
        #[arg(short = 'q', long)]
        max_queue_depth: Option<u32>,
        /// Maximum I/O queue pairs per controller.
        #[arg(short = 'm', long)]
        max_io_qpairs_per_ctrlr: Option<u32>,
        /// Maximum in-capsule data size in bytes.
        #[arg(short = 'c', long)]
        in_capsule_data_size: Option<u32>,
        /// Maximum I/O size in bytes.
        #[arg(short = 'i', long)]
        max_io_size: Option<u32>,
        /// I/O unit size in bytes.
        #[arg(short = 'u', long)]
        io_unit_size: Option<u32>,
        /// Disable the C2H success optimisation (sends "c2h_success": false).
        #[arg(short = 'o', long = "c2h-success")]
        disable_c2h_success: bool,
    },
    /// Show transports (all, or the one of the given type).
    #[command(
        name = "nvmf_get_transports",
        after_help = "Not offered: rpc.py's -t/--tgt-name (ballast has one target)."
    )]
    GetTransports {
        /// Transport type.
        #[arg(long)]
        trtype: Option<String>,
    },
    /// Show per-reactor (poll group) statistics of the target.
    #[command(
        name = "nvmf_get_stats",
        after_help = "Not offered: rpc.py's -t/--tgt-name (ballast has one target)."
    )]
    GetStats,
    /// Create an NVMe-oF subsystem.
    #[command(
        name = "nvmf_create_subsystem",
        after_help = "Example: ballast-rpc nvmf_create_subsystem \
                      nqn.2016-06.io.spdk:cnode1 -a -s SPDK00000000000001\n\n\
                      Not offered: rpc.py's -t/--tgt-name (ballast has one target), \
                      -r/--ana-reporting (no ANA), -i/--min_cntlid and -I/--max_cntlid \
                      (controller IDs are 1..65519), --max-discard-size and \
                      --max-write-zeroes-size (no limits), -p/--passthrough, \
                      -n/--enable_nssr."
    )]
    CreateSubsystem {
        /// Subsystem NQN.
        nqn: String,
        /// Serial number (ASCII, up to 20 characters).
        #[arg(short, long)]
        serial_number: Option<String>,
        /// Model number (ASCII, up to 40 characters).
        #[arg(short = 'd', long)]
        model_number: Option<String>,
        /// Allow any host to connect (do not enforce the host list).
        #[arg(short, long)]
        allow_any_host: bool,
        /// Maximum number of namespaces.
        #[arg(short, long)]
        max_namespaces: Option<u32>,
    },
    /// Delete an NVMe-oF subsystem.
    #[command(name = "nvmf_delete_subsystem")]
    DeleteSubsystem {
        /// Subsystem NQN.
        subsystem_nqn: String,
    },
    /// Show subsystems (all, or the one given).
    #[command(name = "nvmf_get_subsystems")]
    GetSubsystems {
        /// Subsystem NQN.
        nqn: Option<String>,
    },
    /// Add a namespace backed by a bdev to a subsystem.
    #[command(
        name = "nvmf_subsystem_add_ns",
        after_help = "Example: ballast-rpc nvmf_subsystem_add_ns \
                      nqn.2016-06.io.spdk:cnode1 Malloc0 -n 1\n\n\
                      Not offered: rpc.py's -t/--tgt-name (ballast has one target), \
                      -p/--ptpl-file (no persistent reservations), -a/--anagrpid (no ANA), \
                      -i/--no-auto-visible (namespaces are visible to every host), \
                      -N/--hide-metadata (no metadata)."
    )]
    SubsystemAddNs {
        /// Subsystem NQN.
        nqn: String,
        /// Name of the bdev that backs the namespace.
        bdev_name: String,
        /// Requested namespace ID (default: the lowest free one).
        #[arg(short, long)]
        nsid: Option<u32>,
        /// Namespace UUID.
        #[arg(short, long)]
        uuid: Option<String>,
        /// Namespace globally unique identifier (32 hex digits).
        #[arg(short = 'g', long)]
        nguid: Option<String>,
        /// Namespace EUI-64 (16 hex digits).
        #[arg(short, long)]
        eui64: Option<String>,
    },
    /// Remove a namespace from a subsystem.
    #[command(name = "nvmf_subsystem_remove_ns")]
    SubsystemRemoveNs {
        /// Subsystem NQN.
        nqn: String,
        /// Namespace ID.
        nsid: u32,
    },
    /// Add a listener (transport address) to a subsystem.
    #[command(
        name = "nvmf_subsystem_add_listener",
        after_help = "Example: ballast-rpc nvmf_subsystem_add_listener \
                      nqn.2016-06.io.spdk:cnode1 -t tcp -a 127.0.0.1 -s 4420\n\n\
                      -s/--trsvcid is optional in rpc.py (for transports without ports); \
                      ballast listens on TCP only, so it is required.\n\
                      Not offered: rpc.py's -p/--tgt-name (ballast has one target), \
                      -k/--secure-channel (no TLS), -n/--ana-state (no ANA), \
                      -S/--sock-impl (posix only)."
    )]
    SubsystemAddListener {
        #[command(flatten)]
        listener: Listener,
    },
    /// Remove a listener from a subsystem (disconnects the controllers on it).
    #[command(
        name = "nvmf_subsystem_remove_listener",
        after_help = "-s/--trsvcid is optional in rpc.py; ballast listens on TCP only, so it \
                      is required.\n\
                      Not offered: rpc.py's -p/--tgt-name (ballast has one target)."
    )]
    SubsystemRemoveListener {
        #[command(flatten)]
        listener: Listener,
    },
    /// Allow a host NQN to connect to a subsystem.
    #[command(
        name = "nvmf_subsystem_add_host",
        after_help = "Not offered: rpc.py's -t/--tgt-name (ballast has one target), --psk \
                      (no TLS), --dhchap-key and --dhchap-ctrlr-key (no in-band \
                      authentication)."
    )]
    SubsystemAddHost {
        /// Subsystem NQN.
        nqn: String,
        /// Host NQN to allow.
        host: String,
    },
    /// Remove a host NQN from a subsystem (disconnects its controllers).
    #[command(name = "nvmf_subsystem_remove_host")]
    SubsystemRemoveHost {
        /// Subsystem NQN.
        nqn: String,
        /// Host NQN to remove.
        host: String,
    },
    /// Allow or stop allowing any host to connect to a subsystem (default: allow).
    #[command(name = "nvmf_subsystem_allow_any_host")]
    #[command(group(ArgGroup::new("mode").args(["enable", "disable"])))]
    SubsystemAllowAnyHost {
        /// Subsystem NQN.
        nqn: String,
        /// Allow any host.
        #[arg(short, long)]
        enable: bool,
        /// Enforce the subsystem's host list.
        #[arg(short, long)]
        disable: bool,
    },
    /// Show the controllers of a subsystem.
    #[command(name = "nvmf_subsystem_get_controllers")]
    SubsystemGetControllers {
        /// Subsystem NQN.
        nqn: String,
    },
    /// Show the queue pairs of a subsystem.
    #[command(name = "nvmf_subsystem_get_qpairs")]
    SubsystemGetQpairs {
        /// Subsystem NQN.
        nqn: String,
    },
    /// Show the listeners of a subsystem.
    #[command(name = "nvmf_subsystem_get_listeners")]
    SubsystemGetListeners {
        /// Subsystem NQN.
        nqn: String,
    },
}

/// The transport address of nvmf_subsystem_add_listener / remove_listener.
#[derive(Debug, clap::Args)]
pub struct Listener {
    /// Subsystem NQN (`discovery` is a shortcut for the discovery NQN).
    nqn: String,
    /// Transport type, e.g. tcp.
    #[arg(short = 't', long)]
    trtype: String,
    /// Transport address, e.g. an IP address.
    #[arg(short = 'a', long)]
    traddr: String,
    /// Transport service ID: the TCP port.
    #[arg(short = 's', long)]
    trsvcid: String,
    /// Address family: ipv4 or ipv6.
    #[arg(short = 'f', long)]
    adrfam: Option<String>,
}

impl Nvmf {
    pub fn call(&self) -> Call {
        use Nvmf as N;
        match self {
            N::CreateTransport {
                trtype,
                max_queue_depth,
                max_io_qpairs_per_ctrlr,
                in_capsule_data_size,
                max_io_size,
                io_unit_size,
                disable_c2h_success,
            } => {
                let mut params = Params::new()
                    .set("trtype", trtype.as_str())
                    .opt("max_queue_depth", *max_queue_depth)
                    .opt("max_io_qpairs_per_ctrlr", *max_io_qpairs_per_ctrlr)
                    .opt("in_capsule_data_size", *in_capsule_data_size)
                    .opt("max_io_size", *max_io_size)
                    .opt("io_unit_size", *io_unit_size);
                if *disable_c2h_success {
                    params = params.set("c2h_success", false);
                }
                params.call("nvmf_create_transport")
            }
            N::GetTransports { trtype } => Params::new()
                .opt("trtype", trtype.as_deref())
                .call("nvmf_get_transports"),
            N::GetStats => bare("nvmf_get_stats"),
            N::CreateSubsystem {
                nqn,
                serial_number,
                model_number,
                allow_any_host,
                max_namespaces,
            } => Params::new()
                .set("nqn", nqn.as_str())
                .opt("serial_number", serial_number.as_deref())
                .opt("model_number", model_number.as_deref())
                .flag("allow_any_host", *allow_any_host)
                .opt("max_namespaces", *max_namespaces)
                .call("nvmf_create_subsystem"),
            N::DeleteSubsystem { subsystem_nqn } => Params::new()
                .set("nqn", subsystem_nqn.as_str())
                .call("nvmf_delete_subsystem"),
            N::GetSubsystems { nqn } => Params::new()
                .opt("nqn", nqn.as_deref())
                .call("nvmf_get_subsystems"),
            N::SubsystemAddNs {
                nqn,
                bdev_name,
                nsid,
                uuid,
                nguid,
                eui64,
            } => {
                let namespace = Params::new()
                    .set("bdev_name", bdev_name.as_str())
                    .opt("nsid", *nsid)
                    .opt("uuid", uuid.as_deref())
                    .opt("nguid", nguid.as_deref())
                    .opt("eui64", eui64.as_deref());
                Params::new()
                    .set("nqn", nqn.as_str())
                    .set("namespace", namespace.0)
                    .call("nvmf_subsystem_add_ns")
            }
            N::SubsystemRemoveNs { nqn, nsid } => Params::new()
                .set("nqn", nqn.as_str())
                .set("nsid", *nsid)
                .call("nvmf_subsystem_remove_ns"),
            N::SubsystemAddListener { listener } => {
                listener.params().call("nvmf_subsystem_add_listener")
            }
            N::SubsystemRemoveListener { listener } => {
                listener.params().call("nvmf_subsystem_remove_listener")
            }
            N::SubsystemAddHost { nqn, host } => Params::new()
                .set("nqn", nqn.as_str())
                .set("host", host.as_str())
                .call("nvmf_subsystem_add_host"),
            N::SubsystemRemoveHost { nqn, host } => Params::new()
                .set("nqn", nqn.as_str())
                .set("host", host.as_str())
                .call("nvmf_subsystem_remove_host"),
            // As rpc.py: neither flag means enable.
            N::SubsystemAllowAnyHost {
                nqn,
                enable: _,
                disable,
            } => Params::new()
                .set("nqn", nqn.as_str())
                .set("allow_any_host", !*disable)
                .call("nvmf_subsystem_allow_any_host"),
            N::SubsystemGetControllers { nqn } => Params::new()
                .set("nqn", nqn.as_str())
                .call("nvmf_subsystem_get_controllers"),
            N::SubsystemGetQpairs { nqn } => Params::new()
                .set("nqn", nqn.as_str())
                .call("nvmf_subsystem_get_qpairs"),
            N::SubsystemGetListeners { nqn } => Params::new()
                .set("nqn", nqn.as_str())
                .call("nvmf_subsystem_get_listeners"),
        }
    }
}

impl Listener {
    fn params(&self) -> Params {
        let nqn = if self.nqn == "discovery" {
            DISCOVERY_NQN
        } else {
            self.nqn.as_str()
        };
        let listen_address = Params::new()
            .set("trtype", self.trtype.as_str())
            .set("traddr", self.traddr.as_str())
            .set("trsvcid", self.trsvcid.as_str())
            .opt("adrfam", self.adrfam.as_deref());
        Params::new()
            .set("nqn", nqn)
            .set("listen_address", listen_address.0)
    }
}

#[cfg(test)]
pub mod tests {
    use crate::methods::tests::{Case, NQN};
    use serde_json::json;

    pub fn cases() -> Vec<Case> {
        let nqn = NQN;
        let host = "nqn.2014-08.org.nvmexpress:uuid:1";
        let uuid = "0e2b8e6c-3f3a-4e0f-8d8e-1c6b7f0a9b01";
        vec![
            (
                "nvmf_create_transport -t TCP",
                "nvmf_create_transport",
                Some(json!({"trtype": "TCP"})),
            ),
            (
                "nvmf_create_transport -t TCP -c 8192 -i 131072 -q 128 -u 8192 -m 8 -o",
                "nvmf_create_transport",
                Some(
                    json!({"trtype": "TCP", "in_capsule_data_size": 8192, "max_io_size": 131072,
                            "max_queue_depth": 128, "io_unit_size": 8192,
                            "max_io_qpairs_per_ctrlr": 8, "c2h_success": false}),
                ),
            ),
            (
                "nvmf_create_transport --trtype tcp --in-capsule-data-size 4096 \
                 --max-io-size 65536 --max-queue-depth 64 --io-unit-size 4096 \
                 --max-io-qpairs-per-ctrlr 4 --c2h-success",
                "nvmf_create_transport",
                Some(
                    json!({"trtype": "tcp", "in_capsule_data_size": 4096, "max_io_size": 65536,
                            "max_queue_depth": 64, "io_unit_size": 4096,
                            "max_io_qpairs_per_ctrlr": 4, "c2h_success": false}),
                ),
            ),
            ("nvmf_get_transports", "nvmf_get_transports", None),
            (
                "nvmf_get_transports --trtype TCP",
                "nvmf_get_transports",
                Some(json!({"trtype": "TCP"})),
            ),
            ("nvmf_get_stats", "nvmf_get_stats", None),
            (
                "nvmf_create_subsystem NQN",
                "nvmf_create_subsystem",
                Some(json!({"nqn": nqn})),
            ),
            (
                "nvmf_create_subsystem NQN -s SPDK00000000000001 -d ballast -a -m 32",
                "nvmf_create_subsystem",
                Some(json!({"nqn": nqn, "serial_number": "SPDK00000000000001",
                            "model_number": "ballast", "allow_any_host": true,
                            "max_namespaces": 32})),
            ),
            (
                "nvmf_create_subsystem --serial-number S1 --model-number M1 --allow-any-host \
                 --max-namespaces 1 NQN",
                "nvmf_create_subsystem",
                Some(
                    json!({"nqn": nqn, "serial_number": "S1", "model_number": "M1",
                            "allow_any_host": true, "max_namespaces": 1}),
                ),
            ),
            (
                "nvmf_delete_subsystem NQN",
                "nvmf_delete_subsystem",
                Some(json!({"nqn": nqn})),
            ),
            ("nvmf_get_subsystems", "nvmf_get_subsystems", None),
            (
                "nvmf_get_subsystems NQN",
                "nvmf_get_subsystems",
                Some(json!({"nqn": nqn})),
            ),
            (
                "nvmf_subsystem_add_ns NQN Malloc0",
                "nvmf_subsystem_add_ns",
                Some(json!({"nqn": nqn, "namespace": {"bdev_name": "Malloc0"}})),
            ),
            (
                "nvmf_subsystem_add_ns NQN Malloc0 -n 3 -u 0e2b8e6c-3f3a-4e0f-8d8e-1c6b7f0a9b01 \
                 -g 000102030405060708090a0b0c0d0e0f -e 0011223344556677",
                "nvmf_subsystem_add_ns",
                Some(
                    json!({"nqn": nqn, "namespace": {"bdev_name": "Malloc0", "nsid": 3,
                            "uuid": uuid, "nguid": "000102030405060708090a0b0c0d0e0f",
                            "eui64": "0011223344556677"}}),
                ),
            ),
            (
                "nvmf_subsystem_add_ns --nsid 1 --uuid u --nguid g --eui64 e NQN Null0",
                "nvmf_subsystem_add_ns",
                Some(
                    json!({"nqn": nqn, "namespace": {"bdev_name": "Null0", "nsid": 1, "uuid": "u",
                            "nguid": "g", "eui64": "e"}}),
                ),
            ),
            (
                "nvmf_subsystem_remove_ns NQN 3",
                "nvmf_subsystem_remove_ns",
                Some(json!({"nqn": nqn, "nsid": 3})),
            ),
            (
                "nvmf_subsystem_add_listener NQN -t tcp -a 127.0.0.1 -s 4420",
                "nvmf_subsystem_add_listener",
                Some(
                    json!({"nqn": nqn, "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1",
                            "trsvcid": "4420"}}),
                ),
            ),
            (
                "nvmf_subsystem_add_listener NQN --trtype TCP --traddr ::1 --trsvcid 4421 \
                 --adrfam ipv6",
                "nvmf_subsystem_add_listener",
                Some(
                    json!({"nqn": nqn, "listen_address": {"trtype": "TCP", "traddr": "::1",
                            "trsvcid": "4421", "adrfam": "ipv6"}}),
                ),
            ),
            (
                "nvmf_subsystem_add_listener discovery -t tcp -a 127.0.0.1 -s 8009 -f ipv4",
                "nvmf_subsystem_add_listener",
                Some(json!({"nqn": "nqn.2014-08.org.nvmexpress.discovery",
                            "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1",
                                               "trsvcid": "8009", "adrfam": "ipv4"}})),
            ),
            (
                "nvmf_subsystem_remove_listener NQN -t tcp -a 127.0.0.1 -s 4420 -f ipv4",
                "nvmf_subsystem_remove_listener",
                Some(
                    json!({"nqn": nqn, "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1",
                            "trsvcid": "4420", "adrfam": "ipv4"}}),
                ),
            ),
            (
                "nvmf_subsystem_add_host NQN nqn.2014-08.org.nvmexpress:uuid:1",
                "nvmf_subsystem_add_host",
                Some(json!({"nqn": nqn, "host": host})),
            ),
            (
                "nvmf_subsystem_remove_host NQN nqn.2014-08.org.nvmexpress:uuid:1",
                "nvmf_subsystem_remove_host",
                Some(json!({"nqn": nqn, "host": host})),
            ),
            (
                "nvmf_subsystem_allow_any_host NQN -e",
                "nvmf_subsystem_allow_any_host",
                Some(json!({"nqn": nqn, "allow_any_host": true})),
            ),
            (
                "nvmf_subsystem_allow_any_host NQN --disable",
                "nvmf_subsystem_allow_any_host",
                Some(json!({"nqn": nqn, "allow_any_host": false})),
            ),
            // As rpc.py: neither flag means enable.
            (
                "nvmf_subsystem_allow_any_host NQN",
                "nvmf_subsystem_allow_any_host",
                Some(json!({"nqn": nqn, "allow_any_host": true})),
            ),
            (
                "nvmf_subsystem_get_controllers NQN",
                "nvmf_subsystem_get_controllers",
                Some(json!({"nqn": nqn})),
            ),
            (
                "nvmf_subsystem_get_qpairs NQN",
                "nvmf_subsystem_get_qpairs",
                Some(json!({"nqn": nqn})),
            ),
            (
                "nvmf_subsystem_get_listeners NQN",
                "nvmf_subsystem_get_listeners",
                Some(json!({"nqn": nqn})),
            ),
        ]
    }

    pub const MALFORMED: &[&str] = &[
        "nvmf_create_transport",
        "nvmf_create_transport -t TCP -q deep",
        "nvmf_create_transport -t TCP --tgt-name x",
        "nvmf_get_stats -t x",
        "nvmf_create_subsystem",
        "nvmf_create_subsystem NQN -m -1",
        "nvmf_subsystem_add_ns NQN",
        "nvmf_subsystem_add_ns NQN Malloc0 -n one",
        "nvmf_subsystem_remove_ns NQN x",
        "nvmf_subsystem_add_listener NQN -a 127.0.0.1 -s 4420",
        "nvmf_subsystem_add_listener NQN -t tcp -s 4420",
        "nvmf_subsystem_add_listener NQN -t tcp -a 127.0.0.1",
        "nvmf_subsystem_remove_listener NQN -a 127.0.0.1",
        "nvmf_subsystem_remove_listener NQN -t tcp -a 127.0.0.1",
        "nvmf_subsystem_add_host NQN",
        "nvmf_subsystem_allow_any_host NQN -e -d",
        "nvmf_subsystem_get_controllers",
    ];
}
