//! SPDK's parameters that name features ballast does not have.
//!
//! SPDK's `rpc.py` sends some of them on every call at their default value (`bdev_malloc_create`
//! always carries `md_interleave: false`), and SPDK's `save_config` writes all of them, so a
//! method that refused every name it does not act on would break SPDK's own tools. Each method's
//! params go through [`screen`] before they are decoded:
//!
//! ```text
//!  params ─► screen(method) ─┬─ parameter at SPDK's default (or null) ─► removed, decoded as absent
//!                            ├─ tuning of an SPDK internal (Any)     ─► removed, logged at debug
//!                            ├─ other value of a feature ballast lacks ─► -32602 "... not supported"
//!                            └─ everything else ─► the method's own decoder (deny_unknown_fields:
//!                                                  a misspelt name still fails, named)
//! ```
//!
//! The table holds the parameters of SPDK v25.09's schema (its `rpc.py` and JSON decoders) for
//! the methods ballast implements, less those the methods honour themselves.

use serde_json::{Map, Value};

use crate::error::RpcError;

/// What ballast accepts of one SPDK parameter.
#[derive(Clone, Copy)]
pub(crate) enum Accept {
    /// Tunes an SPDK internal that has no counterpart here (buffer pools, RDMA or vfio-user
    /// knobs, socket priorities, NUMA placement hints): any value is accepted, no effect.
    Any,
    /// A feature ballast does not have: accepted at SPDK's default, refused otherwise.
    Only(Spdk, &'static str),
}

/// SPDK's default value of a parameter.
#[derive(Clone, Copy)]
pub(crate) enum Spdk {
    False,
    Zero,
    Int(i64),
    Str(&'static str),
    /// No default: accepted only when absent or null.
    Absent,
}

impl Spdk {
    fn matches(self, v: &Value) -> bool {
        match self {
            Spdk::False => v == &Value::Bool(false),
            Spdk::Zero => v.as_i64() == Some(0) || v.as_u64() == Some(0),
            Spdk::Int(i) => v.as_i64() == Some(i),
            Spdk::Str(s) => v.as_str().is_some_and(|x| x.eq_ignore_ascii_case(s)),
            Spdk::Absent => false,
        }
    }

    fn describe(self) -> String {
        match self {
            Spdk::False => "false".into(),
            Spdk::Zero => "0".into(),
            Spdk::Int(i) => i.to_string(),
            Spdk::Str(s) => format!("{s:?}"),
            Spdk::Absent => "absent".into(),
        }
    }
}

use Accept::{Any, Only};
use Spdk::{Absent, False, Int, Str, Zero};

const DIF: &str = "ballast bdevs have no metadata or protection information (DIF/DIX)";
const TLS: &str = "TLS/PSK is not built";
const AUTH: &str = "in-band authentication (DH-HMAC-CHAP) is not built";
const ANA: &str = "ANA (asymmetric namespace access) is not built";
const TGT: &str = "ballast has one NVMe-oF target";
const PI: &str = "ballast's NVMe host checks no protection information";

/// Parameters per method; a dotted name is one level down (`namespace.ptpl_file`).
const TABLE: &[(&str, &[(&str, Accept)])] = &[
    (
        "bdev_malloc_create",
        &[
            ("optimal_io_boundary", Only(Zero, "I/O is never split")),
            ("numa_id", Any),
            ("md_size", Only(Zero, DIF)),
            ("md_interleave", Only(False, DIF)),
            ("dif_type", Only(Zero, DIF)),
            ("dif_is_head_of_md", Only(False, DIF)),
            ("dif_pi_format", Only(Zero, DIF)),
        ],
    ),
    (
        "bdev_null_create",
        &[
            ("numa_id", Any),
            ("md_size", Only(Zero, DIF)),
            ("dif_type", Only(Zero, DIF)),
            ("dif_is_head_of_md", Only(False, DIF)),
            ("dif_pi_format", Only(Zero, DIF)),
            ("preferred_write_alignment", Only(Zero, "no write hints")),
            ("preferred_write_granularity", Only(Zero, "no write hints")),
            ("optimal_write_size", Only(Zero, "no write hints")),
            ("preferred_unmap_alignment", Only(Zero, "no unmap hints")),
            ("preferred_unmap_granularity", Only(Zero, "no unmap hints")),
        ],
    ),
    (
        "bdev_get_iostat",
        &[
            (
                "per_channel",
                Only(False, "per-channel statistics are not kept"),
            ),
            ("reset_mode", Only(Str("none"), "statistics are not reset")),
        ],
    ),
    (
        "bdev_lvol_create_lvstore",
        &[
            // Blobstore's metadata layout; ballast's store keeps its own.
            ("num_md_pages_per_cluster_ratio", Any),
            ("md_page_size", Any),
        ],
    ),
    (
        "bdev_crypto_create",
        &[
            ("crypto_pmd", Any),
            (
                "key",
                Only(
                    Absent,
                    "create the key with accel_crypto_key_create, pass key_name",
                ),
            ),
            (
                "key2",
                Only(
                    Absent,
                    "create the key with accel_crypto_key_create, pass key_name",
                ),
            ),
            (
                "cipher",
                Only(
                    Absent,
                    "create the key with accel_crypto_key_create, pass key_name",
                ),
            ),
        ],
    ),
    (
        "bdev_nvme_attach_controller",
        &[
            ("priority", Any),
            (
                "hostaddr",
                Only(Absent, "the host's source address is not chosen"),
            ),
            (
                "hostsvcid",
                Only(Absent, "the host's source port is not chosen"),
            ),
            ("prchk_reftag", Only(False, PI)),
            ("prchk_guard", Only(False, PI)),
            ("fabrics_connect_timeout_us", Any),
            ("multipath", Any),
            (
                "fast_io_fail_timeout_sec",
                Only(Zero, "I/O fails at ctrlr_loss_timeout_sec"),
            ),
            ("psk", Only(Absent, TLS)),
            ("max_bdevs", Any),
            ("dhchap_key", Only(Absent, AUTH)),
            ("dhchap_ctrlr_key", Only(Absent, AUTH)),
            (
                "allow_unrecognized_csi",
                Only(False, "only the NVM command set is attached"),
            ),
            (
                "disable_sq_flow_control",
                Only(False, "SQ flow control is always on"),
            ),
        ],
    ),
    (
        "nvmf_create_transport",
        &[
            ("max_aq_depth", Any),
            ("max_qpairs_per_ctrlr", Any),
            ("num_shared_buffers", Any),
            ("buf_cache_size", Any),
            ("zcopy", Any),
            ("num_cqe", Any),
            ("max_srq_depth", Any),
            ("no_srq", Any),
            ("dif_insert_or_strip", Only(False, DIF)),
            ("sock_priority", Any),
            ("acceptor_backlog", Any),
            ("abort_timeout_sec", Any),
            ("no_wr_batching", Any),
            ("control_msg_num", Any),
            ("disable_mappable_bar0", Any),
            ("disable_adaptive_irq", Any),
            ("disable_shadow_doorbells", Any),
            ("acceptor_poll_rate", Any),
            ("ack_timeout", Any),
            ("data_wr_pool_size", Any),
            ("disable_command_passthru", Any),
            ("kas", Any),
            ("min_kato", Any),
            ("transport_specific", Any),
        ],
    ),
    (
        "nvmf_create_subsystem",
        &[
            ("ana_reporting", Only(False, ANA)),
            ("min_cntlid", Only(Int(1), "controller IDs are 1..65519")),
            (
                "max_cntlid",
                Only(Int(0xffef), "controller IDs are 1..65519"),
            ),
            ("max_discard_size_kib", Only(Zero, "no discard size limit")),
            (
                "max_write_zeroes_size_kib",
                Only(Zero, "no write-zeroes size limit"),
            ),
            ("passthrough", Only(False, "no NVMe passthrough")),
            ("enable_nssr", Only(False, "no NVM subsystem reset")),
        ],
    ),
    (
        "nvmf_subsystem_add_ns",
        &[
            (
                "namespace.ptpl_file",
                Only(Absent, "no persistent reservations"),
            ),
            ("namespace.anagrpid", Any),
            (
                "namespace.no_auto_visible",
                Only(False, "namespaces are visible to every host"),
            ),
            ("namespace.hide_metadata", Only(False, DIF)),
        ],
    ),
    (
        "nvmf_subsystem_add_listener",
        &[
            ("secure_channel", Only(False, TLS)),
            ("ana_state", Only(Str("optimized"), ANA)),
            (
                "sock_impl",
                Only(Str("posix"), "ballast's sockets are plain POSIX sockets"),
            ),
        ],
    ),
    (
        "nvmf_subsystem_remove_listener",
        &[("secure_channel", Only(False, TLS))],
    ),
    (
        "nvmf_subsystem_add_host",
        &[
            ("psk", Only(Absent, TLS)),
            ("dhchap_key", Only(Absent, AUTH)),
            ("dhchap_ctrlr_key", Only(Absent, AUTH)),
        ],
    ),
    (
        "framework_get_config",
        &[("with_batches", Only(False, "no batches"))],
    ),
];

/// Removes from `params` (an object, or absent) the SPDK parameters of `method` that ballast
/// accepts without acting on them; refuses, naming it, one whose value asks for a feature
/// ballast lacks. Every `nvmf_*` method also takes SPDK's `tgt_name` when absent.
pub(crate) fn screen(method: &str, params: &mut Option<Value>) -> Result<(), RpcError> {
    let Some(Value::Object(m)) = params.as_mut() else {
        return Ok(());
    };
    if method.starts_with("nvmf_") {
        check(method, m, "tgt_name", Only(Absent, TGT))?;
    }
    let Some((_, entries)) = TABLE.iter().find(|(n, _)| *n == method) else {
        return Ok(());
    };
    for &(name, accept) in entries.iter() {
        match name.split_once('.') {
            Some((outer, inner)) => {
                if let Some(Value::Object(o)) = m.get_mut(outer) {
                    check(method, o, inner, accept)
                        .map_err(|e| RpcError::params(e.message.replacen(inner, name, 1)))?;
                }
            }
            None => check(method, m, name, accept)?,
        }
    }
    Ok(())
}

fn check(
    method: &str,
    m: &mut Map<String, Value>,
    name: &str,
    accept: Accept,
) -> Result<(), RpcError> {
    let Some(v) = m.get(name) else {
        return Ok(());
    };
    let ok = v.is_null()
        || match accept {
            Any => {
                tracing::debug!(
                    method,
                    param = name,
                    "SPDK tuning parameter accepted, no effect"
                );
                true
            }
            Only(d, _) => d.matches(v),
        };
    if !ok {
        let Only(d, why) = accept else { unreachable!() };
        let shown = crate::error::cap(&v.to_string(), 64).into_owned();
        return Err(RpcError::params(format!(
            "Invalid parameters: {name} {shown} is not supported by ballast ({why}); only {} is accepted",
            d.describe()
        )));
    }
    m.remove(name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_removed_and_other_values_refused_by_name() {
        let mut p = Some(json!({"name": "M0", "md_size": 0, "md_interleave": false}));
        screen("bdev_malloc_create", &mut p).unwrap();
        assert_eq!(p, Some(json!({"name": "M0"})));
        let mut p = Some(json!({"name": "M0", "md_size": 8}));
        let e = screen("bdev_malloc_create", &mut p).unwrap_err();
        assert!(
            e.message.contains("md_size 8 is not supported"),
            "{}",
            e.message
        );
        // Nested, and tgt_name on every nvmf method.
        let mut p =
            Some(json!({"nqn": "n", "namespace": {"bdev_name": "b", "hide_metadata": true}}));
        let e = screen("nvmf_subsystem_add_ns", &mut p).unwrap_err();
        assert!(
            e.message.contains("namespace.hide_metadata true"),
            "{}",
            e.message
        );
        let mut p = Some(json!({"nqn": "n", "tgt_name": "other"}));
        assert!(screen("nvmf_get_subsystems", &mut p).is_err());
        // Unknown names are left for the method's decoder to refuse.
        let mut p = Some(json!({"nqn": "n", "typo": 1}));
        screen("nvmf_create_subsystem", &mut p).unwrap();
        assert_eq!(p, Some(json!({"nqn": "n", "typo": 1})));
    }
}
