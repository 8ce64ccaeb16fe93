//! Remote NVMe/TCP controllers whose namespaces become bdevs (`bdev_nvme_*`).

use clap::Subcommand;

use crate::params::{Call, Params};

#[derive(Debug, Subcommand)]
pub enum Nvme {
    /// Connect to a remote NVMe/TCP subsystem and create a bdev for each of its namespaces;
    /// prints their names (NAMEn1 NAMEn2 ...) on one line.
    #[command(
        name = "bdev_nvme_attach_controller",
        after_help = "Example: ballast-rpc bdev_nvme_attach_controller -b Nvme0 -t tcp \
                      -a 192.168.0.2 -s 4420 -f ipv4 -n nqn.2016-06.io.spdk:cnode1\n\n\
                      -n/--subnqn is optional in rpc.py (for PCIe); ballast attaches NVMe/TCP \
                      subsystems only, so it is required.\n\
                      Not offered (features ballast's NVMe host lacks): rpc.py's -i/--hostaddr, \
                      -c/--hostsvcid, -r/--prchk-reftag, -g/--prchk-guard, \
                      -u/--fast-io-fail-timeout-sec, -k/--psk, --dhchap-key, \
                      --dhchap-ctrlr-key, -U/--allow-unrecognized-csi."
    )]
    AttachController {
        /// Name of the controller; its bdevs are named NAMEn<nsid>.
        #[arg(short = 'b', long)]
        name: String,
        /// Transport type: tcp.
        #[arg(short = 't', long)]
        trtype: String,
        /// Target address: an IP address.
        #[arg(short = 'a', long)]
        traddr: String,
        /// Address family: ipv4 or ipv6.
        #[arg(short = 'f', long)]
        adrfam: Option<String>,
        /// Target port (default 4420).
        #[arg(short = 's', long)]
        trsvcid: Option<String>,
        /// NQN of the target subsystem.
        #[arg(short = 'n', long)]
        subnqn: String,
        /// Host NQN to connect as (default: the daemon's).
        #[arg(short = 'q', long)]
        hostnqn: Option<String>,
        /// Host ID to connect with, a UUID (ballast's; rpc.py has no flag for it).
        #[arg(long)]
        hostid: Option<String>,
        /// Enable the TCP header digest.
        #[arg(short = 'e', long)]
        hdgst: bool,
        /// Enable the TCP data digest.
        #[arg(short = 'd', long)]
        ddgst: bool,
        /// I/O queues to ask for (default: one per reactor).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        num_io_queues: Option<u16>,
        /// Seconds I/O waits for a lost controller to reconnect before it fails (reconnecting
        /// goes on after, and I/O resumes once it is back); -1: forever, 0: fail at once
        /// (default 30).
        #[arg(
            short = 'l',
            long,
            allow_negative_numbers = true,
            value_parser = clap::value_parser!(i64).range(-1..)
        )]
        ctrlr_loss_timeout_sec: Option<i64>,
        /// Seconds between reconnect attempts (default 1).
        #[arg(short = 'o', long)]
        reconnect_delay_sec: Option<u64>,
        /// Connection priority: accepted for rpc.py compatibility, no effect in ballast.
        #[arg(short = 'p', long)]
        priority: Option<i64>,
        /// Fabrics connect timeout in microseconds: accepted for rpc.py compatibility, no
        /// effect in ballast.
        #[arg(long = "fabrics-timeout", value_name = "US")]
        fabrics_connect_timeout_us: Option<u64>,
        /// Multipath behaviour (disable, failover, multipath): accepted for rpc.py
        /// compatibility, no effect (ballast's controllers have one path).
        #[arg(short = 'x', long)]
        multipath: Option<String>,
        /// Size of SPDK's bdev name array: accepted for rpc.py compatibility, no effect.
        #[arg(short = 'm', long)]
        max_bdevs: Option<u32>,
    },
    /// Detach a controller and delete its bdevs. An address given must be the controller's
    /// (ballast's controllers have one path).
    #[command(name = "bdev_nvme_detach_controller")]
    DetachController {
        /// Name of the controller.
        name: String,
        /// Transport type of the path.
        #[arg(short = 't', long)]
        trtype: Option<String>,
        /// Target address of the path.
        #[arg(short = 'a', long)]
        traddr: Option<String>,
        /// Address family of the path.
        #[arg(short = 'f', long)]
        adrfam: Option<String>,
        /// Target port of the path.
        #[arg(short = 's', long)]
        trsvcid: Option<String>,
        /// Subsystem NQN of the path.
        #[arg(short = 'n', long)]
        subnqn: Option<String>,
        /// Host address of the path (ballast's paths have none).
        #[arg(short = 'i', long)]
        hostaddr: Option<String>,
        /// Host port of the path (ballast's paths have none).
        #[arg(short = 'c', long)]
        hostsvcid: Option<String>,
    },
    /// Show attached controllers (all, or the one named).
    #[command(name = "bdev_nvme_get_controllers")]
    GetControllers {
        /// Name of the controller.
        #[arg(short = 'n', long)]
        name: Option<String>,
    },
}

impl Nvme {
    pub fn call(&self) -> Call {
        match self {
            Nvme::AttachController {
                name,
                trtype,
                traddr,
                adrfam,
                trsvcid,
                subnqn,
                hostnqn,
                hostid,
                hdgst,
                ddgst,
                num_io_queues,
                ctrlr_loss_timeout_sec,
                reconnect_delay_sec,
                priority,
                fabrics_connect_timeout_us,
                multipath,
                max_bdevs,
            } => Params::new()
                .set("name", name.as_str())
                .set("trtype", trtype.as_str())
                .set("traddr", traddr.as_str())
                .opt("adrfam", adrfam.as_deref())
                .opt("trsvcid", trsvcid.as_deref())
                .set("subnqn", subnqn.as_str())
                .opt("hostnqn", hostnqn.as_deref())
                .opt("hostid", hostid.as_deref())
                .flag("hdgst", *hdgst)
                .flag("ddgst", *ddgst)
                .opt("num_io_queues", *num_io_queues)
                .opt("ctrlr_loss_timeout_sec", *ctrlr_loss_timeout_sec)
                .opt("reconnect_delay_sec", *reconnect_delay_sec)
                .opt("priority", *priority)
                .opt("fabrics_connect_timeout_us", *fabrics_connect_timeout_us)
                .opt("multipath", multipath.as_deref())
                .opt("max_bdevs", *max_bdevs)
                .call("bdev_nvme_attach_controller"),
            Nvme::DetachController {
                name,
                trtype,
                traddr,
                adrfam,
                trsvcid,
                subnqn,
                hostaddr,
                hostsvcid,
            } => Params::new()
                .set("name", name.as_str())
                .opt("trtype", trtype.as_deref())
                .opt("traddr", traddr.as_deref())
                .opt("adrfam", adrfam.as_deref())
                .opt("trsvcid", trsvcid.as_deref())
                .opt("subnqn", subnqn.as_deref())
                .opt("hostaddr", hostaddr.as_deref())
                .opt("hostsvcid", hostsvcid.as_deref())
                .call("bdev_nvme_detach_controller"),
            Nvme::GetControllers { name } => Params::new()
                .opt("name", name.as_deref())
                .call("bdev_nvme_get_controllers"),
        }
    }
}

#[cfg(test)]
pub mod tests {
    use crate::methods::tests::Case;
    use serde_json::json;

    pub fn cases() -> Vec<Case> {
        vec![
            (
                "bdev_nvme_attach_controller -b Nvme0 -t tcp -a 10.0.0.2 -n NQN",
                "bdev_nvme_attach_controller",
                Some(
                    json!({"name": "Nvme0", "trtype": "tcp", "traddr": "10.0.0.2",
                            "subnqn": crate::methods::tests::NQN}),
                ),
            ),
            (
                "bdev_nvme_attach_controller -b Nvme0 -t tcp -a ::1 -f ipv6 -s 4421 -n NQN \
                 -q nqn.2014-08.org.nvmexpress:uuid:1 -e -d --num-io-queues 4 -l -1 -o 2 \
                 --hostid 0e2b8e6c-3f3a-4e0f-8d8e-1c6b7f0a9b01",
                "bdev_nvme_attach_controller",
                Some(json!({"name": "Nvme0", "trtype": "tcp", "traddr": "::1",
                            "adrfam": "ipv6", "trsvcid": "4421",
                            "subnqn": crate::methods::tests::NQN,
                            "hostnqn": "nqn.2014-08.org.nvmexpress:uuid:1",
                            "hostid": "0e2b8e6c-3f3a-4e0f-8d8e-1c6b7f0a9b01",
                            "hdgst": true, "ddgst": true, "num_io_queues": 4,
                            "ctrlr_loss_timeout_sec": -1, "reconnect_delay_sec": 2})),
            ),
            (
                "bdev_nvme_attach_controller --name N1 --trtype TCP --traddr 127.0.0.1 \
                 --trsvcid 4420 --adrfam IPv4 --subnqn NQN --hostnqn h --hdgst --ddgst \
                 --ctrlr-loss-timeout-sec 0 --reconnect-delay-sec 0 -p 1 --fabrics-timeout 100 \
                 -x failover -m 32",
                "bdev_nvme_attach_controller",
                Some(json!({"name": "N1", "trtype": "TCP", "traddr": "127.0.0.1",
                            "trsvcid": "4420", "adrfam": "IPv4",
                            "subnqn": crate::methods::tests::NQN, "hostnqn": "h",
                            "hdgst": true, "ddgst": true, "ctrlr_loss_timeout_sec": 0,
                            "reconnect_delay_sec": 0, "priority": 1,
                            "fabrics_connect_timeout_us": 100, "multipath": "failover",
                            "max_bdevs": 32})),
            ),
            (
                "bdev_nvme_detach_controller Nvme0",
                "bdev_nvme_detach_controller",
                Some(json!({"name": "Nvme0"})),
            ),
            (
                "bdev_nvme_detach_controller Nvme0 -t tcp -a 10.0.0.2 -f ipv4 -s 4420 -n NQN \
                 -i 10.0.0.1 -c 5000",
                "bdev_nvme_detach_controller",
                Some(
                    json!({"name": "Nvme0", "trtype": "tcp", "traddr": "10.0.0.2",
                            "adrfam": "ipv4", "trsvcid": "4420",
                            "subnqn": crate::methods::tests::NQN, "hostaddr": "10.0.0.1",
                            "hostsvcid": "5000"}),
                ),
            ),
            (
                "bdev_nvme_get_controllers",
                "bdev_nvme_get_controllers",
                None,
            ),
            (
                "bdev_nvme_get_controllers -n Nvme0",
                "bdev_nvme_get_controllers",
                Some(json!({"name": "Nvme0"})),
            ),
        ]
    }

    pub const MALFORMED: &[&str] = &[
        "bdev_nvme_attach_controller",
        "bdev_nvme_attach_controller -t tcp -a 10.0.0.2 -n NQN",
        "bdev_nvme_attach_controller -b Nvme0 -a 10.0.0.2 -n NQN",
        "bdev_nvme_attach_controller -b Nvme0 -t tcp -n NQN",
        "bdev_nvme_attach_controller -b Nvme0 -t tcp -a 10.0.0.2",
        "bdev_nvme_attach_controller -b Nvme0 -t tcp -a 10.0.0.2 -n NQN -l -2",
        "bdev_nvme_attach_controller -b Nvme0 -t tcp -a 10.0.0.2 -n NQN -o -1",
        "bdev_nvme_attach_controller -b Nvme0 -t tcp -a 10.0.0.2 -n NQN --num-io-queues 0",
        "bdev_nvme_attach_controller -b Nvme0 -t tcp -a 10.0.0.2 -n NQN -k key0",
        "bdev_nvme_attach_controller -b Nvme0 -t tcp -a 10.0.0.2 -n NQN -i 10.0.0.1",
        "bdev_nvme_detach_controller",
        "bdev_nvme_get_controllers Nvme0",
    ];
}
