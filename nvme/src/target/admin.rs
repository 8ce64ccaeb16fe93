//! Admin and fabrics-property commands of a controller: Identify, Get Log Page, Set/Get
//! Features, Keep Alive, Asynchronous Event Request, Abort, Property Get/Set.
//!
//! Everything here is control path: it runs on the admin queue pair's reactor, may allocate,
//! and touches the controller's mutex-protected state.

use std::sync::Arc;
use std::time::Instant;

use ballast_engine::IoBuf;

use super::ctrlr::Controller;
use super::subsystem::SubsystemKind;
use super::Target;
use crate::spec::{self, Status};

/// What an admin command produced.
pub(crate) enum AdminOutcome {
    /// Completed now, with optional controller-to-host data.
    Done {
        status: Status,
        dw0: u32,
        data: Option<Vec<u8>>,
    },
    /// An Asynchronous Event Request: parked until an event occurs.
    AsyncEvent,
}

fn done(status: Status) -> AdminOutcome {
    AdminOutcome::Done {
        status,
        dw0: 0,
        data: None,
    }
}

fn with_data(data: Vec<u8>) -> AdminOutcome {
    AdminOutcome::Done {
        status: Status::SUCCESS,
        dw0: 0,
        data: Some(data),
    }
}

fn started() -> Instant {
    static T: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T.get_or_init(Instant::now)
}

/// Firmware revision reported in Identify and the firmware slot log.
pub(crate) fn firmware_revision() -> [u8; 8] {
    let mut fr = [b' '; 8];
    let v = env!("CARGO_PKG_VERSION").as_bytes();
    let n = v.len().min(8);
    fr[..n].copy_from_slice(&v[..n]);
    fr
}

/// Executes admin command `sqe` for `ctrl`. `data` holds host-to-controller data, if any.
pub(crate) fn execute(
    target: &Arc<Target>,
    ctrl: &Arc<Controller>,
    sqe: &spec::Sqe,
    data: Option<IoBuf>,
) -> AdminOutcome {
    let _ = started();
    let discovery = ctrl.subsys.kind == SubsystemKind::Discovery;
    let Some(op) = spec::AdminOpcode::from_u8(sqe.opcode()) else {
        return done(Status::INVALID_OPCODE);
    };
    use spec::AdminOpcode as A;
    match op {
        A::Identify => identify(target, ctrl, sqe),
        A::GetLogPage => get_log_page(target, ctrl, sqe),
        A::SetFeatures => set_features(target, ctrl, sqe, data),
        A::GetFeatures => get_features(target, ctrl, sqe),
        A::KeepAlive => {
            ctrl.touch();
            done(Status::SUCCESS)
        }
        A::AsyncEventRequest => AdminOutcome::AsyncEvent,
        // Commands are never queued long enough to be aborted: "command not aborted" (bit 0).
        A::Abort if !discovery => AdminOutcome::Done {
            status: Status::SUCCESS,
            dw0: 1,
            data: None,
        },
        _ => done(Status::INVALID_OPCODE),
    }
}

fn identify(target: &Arc<Target>, ctrl: &Arc<Controller>, sqe: &spec::Sqe) -> AdminOutcome {
    let cns = (sqe.cdw10() & 0xFF) as u8;
    let nsid = sqe.nsid();
    let subsys = &ctrl.subsys;
    let discovery = subsys.kind == SubsystemKind::Discovery;
    match cns {
        spec::CNS_CONTROLLER => with_data(identify_controller(target, ctrl).to_vec()),
        _ if discovery => done(Status::INVALID_FIELD),
        spec::CNS_NAMESPACE => {
            if nsid == 0 || (nsid > subsys.max_namespaces && nsid != u32::MAX) {
                return done(Status::INVALID_NAMESPACE_OR_FORMAT);
            }
            let table = subsys.ns_table();
            match table.get(nsid) {
                Some(ns) => {
                    let b = &ns.bdev;
                    let id = spec::IdentifyNamespace {
                        nsze: b.num_blocks(),
                        ncap: b.num_blocks(),
                        nuse: b.num_blocks(),
                        lba_data_size: b.block_size(),
                        nguid: ns.nguid,
                        eui64: ns.eui64,
                        // Deallocated blocks read as zeros; Write Zeroes may deallocate.
                        dlfeat: 0x01 | 0x08,
                        nmic: 1,
                        noiob: b.info().optimal_io_boundary.min(u16::MAX as u32) as u16,
                    };
                    with_data(id.to_bytes().to_vec())
                }
                // An allocated-but-inactive (or broadcast) NSID reads as zeros.
                None => with_data(vec![0u8; 4096]),
            }
        }
        spec::CNS_ACTIVE_NS_LIST => {
            if nsid >= 0xFFFF_FFFE {
                return done(Status::INVALID_NAMESPACE_OR_FORMAT);
            }
            let ids: Vec<u32> = subsys
                .ns_table()
                .entries
                .iter()
                .map(|e| e.nsid)
                .filter(|&n| n > nsid)
                .collect();
            with_data(spec::active_ns_list(&ids).to_vec())
        }
        spec::CNS_NS_ID_DESCRIPTORS => {
            let table = subsys.ns_table();
            let Some(ns) = table.get(nsid) else {
                return done(Status::INVALID_NAMESPACE_OR_FORMAT);
            };
            with_data(spec::ns_id_descriptors(ns.eui64, ns.nguid, *ns.uuid.as_bytes()).to_vec())
        }
        _ => done(Status::INVALID_FIELD),
    }
}

/// The Identify Controller data of `ctrl`.
pub(crate) fn identify_controller(target: &Arc<Target>, ctrl: &Arc<Controller>) -> Box<[u8; 4096]> {
    let o = target.opts();
    let s = &ctrl.subsys;
    let discovery = s.kind == SubsystemKind::Discovery;
    let vwc = !discovery
        && s.ns_table()
            .entries
            .iter()
            .any(|e| e.bdev.info().write_cache);
    let id = spec::IdentifyController {
        serial: s.serial.clone(),
        model: s.model.clone(),
        firmware: firmware_revision(),
        rab: 6,
        ieee: [0x00, 0x00, 0x00],
        cmic: if discovery { 0 } else { 0x02 },
        mdts: o.mdts(),
        cntlid: ctrl.cntlid,
        ver: spec::NVME_VERSION,
        oaes: if discovery { 0 } else { 1 << 8 },
        ctratt: 1, // 128-bit host identifier
        cntrltype: if discovery {
            spec::CNTRLTYPE_DISCOVERY
        } else {
            spec::CNTRLTYPE_IO
        },
        acl: 3,
        aerl: o.aer_limit.saturating_sub(1),
        frmw: 0x03, // slot 1 read-only, one slot
        lpa: 0x04,  // extended Get Log Page (offsets, 32-bit NUMD)
        elpe: 0,
        kas: 10, // 100 ms units → KATO granularity 1 s
        sqes: 0x66,
        cqes: 0x44,
        maxcmd: o.max_queue_depth,
        nn: if discovery { 0 } else { s.max_namespaces },
        oncs: if discovery {
            0
        } else {
            spec::ONCS_DSM | spec::ONCS_WRITE_ZEROES
        },
        vwc: vwc as u8,
        sgls: spec::SGLS_SUPPORTED | spec::SGLS_OFFSET | spec::SGLS_TRANSPORT,
        subnqn: s.nqn.clone(),
        ioccsz: (64 + o.in_capsule_data_size) / 16,
        iorcsz: 1,
        icdoff: 0,
        fcatt: 0,
        msdbd: 1,
    };
    id.to_bytes()
}

fn get_log_page(target: &Arc<Target>, ctrl: &Arc<Controller>, sqe: &spec::Sqe) -> AdminOutcome {
    let glp = spec::GetLogPage::from_sqe(sqe);
    let discovery = ctrl.subsys.kind == SubsystemKind::Discovery;
    let page: Vec<u8> = match glp.lid {
        spec::LOG_DISCOVERY if discovery => discovery_log(target, ctrl),
        spec::LOG_ERROR => vec![0u8; 64],
        spec::LOG_SMART if !discovery => smart_log(ctrl).to_vec(),
        spec::LOG_FIRMWARE_SLOT if !discovery => {
            spec::firmware_slot_log(firmware_revision()).to_vec()
        }
        spec::LOG_CHANGED_NS if !discovery => {
            let mut st = ctrl.state.lock().unwrap();
            let list = std::mem::take(&mut st.changed_ns);
            if !glp.rae {
                st.ns_notice_masked = false;
            }
            spec::changed_ns_list(&list).to_vec()
        }
        _ => {
            return done(Status::INVALID_LOG_PAGE);
        }
    };
    if glp.offset > page.len() as u64 || !glp.offset.is_multiple_of(4) {
        return done(Status::INVALID_FIELD);
    }
    let start = glp.offset as usize;
    let end = (start + glp.len_bytes()).min(page.len());
    let mut out = page[start..end].to_vec();
    // Past the end of the page the host reads zeros.
    out.resize(glp.len_bytes(), 0);
    with_data(out)
}

fn smart_log(ctrl: &Arc<Controller>) -> Box<[u8; 512]> {
    let mut s = spec::SmartLog {
        critical_warning: 0,
        temperature_k: 0x0141,
        available_spare: 100,
        available_spare_threshold: 10,
        percentage_used: 0,
        ..Default::default()
    };
    for e in ctrl.subsys.ns_table().entries.iter() {
        let st = e.bdev.iostat();
        s.data_units_read += (st.bytes_read as u128).div_ceil(512_000);
        s.data_units_written += (st.bytes_written as u128).div_ceil(512_000);
        s.host_read_commands += st.num_read_ops as u128;
        s.host_write_commands += st.num_write_ops as u128;
        s.media_errors += st.num_errors as u128;
    }
    s.power_on_hours = (started().elapsed().as_secs() / 3600) as u128;
    s.power_cycles = 1;
    s.to_bytes()
}

fn discovery_log(target: &Arc<Target>, ctrl: &Arc<Controller>) -> Vec<u8> {
    let mut entries = Vec::new();
    for s in target.subsystems() {
        if !s.host_allowed(&ctrl.hostnqn) {
            continue;
        }
        for (portid, l) in s.listeners().into_iter().enumerate() {
            entries.push(spec::DiscoveryEntry {
                trtype: spec::TRTYPE_TCP,
                adrfam: if l.0.is_ipv4() {
                    spec::ADRFAM_IPV4
                } else {
                    spec::ADRFAM_IPV6
                },
                subtype: spec::SUBTYPE_NVME,
                treq: 0x02, // secure channel not required
                portid: portid as u16,
                cntlid: 0xFFFF,
                asqsz: 32,
                trsvcid: l.trsvcid(),
                subnqn: s.nqn.clone(),
                traddr: l.traddr(),
                sectype: 0,
            });
        }
    }
    spec::discovery_log(target.genctr(), &entries)
}

fn set_features(
    target: &Arc<Target>,
    ctrl: &Arc<Controller>,
    sqe: &spec::Sqe,
    _data: Option<IoBuf>,
) -> AdminOutcome {
    let fid = (sqe.cdw10() & 0xFF) as u8;
    let save = sqe.cdw10() & (1 << 31) != 0;
    if save {
        return done(Status::FEATURE_NOT_SAVEABLE);
    }
    let cdw11 = sqe.cdw11();
    let discovery = ctrl.subsys.kind == SubsystemKind::Discovery;
    let mut st = ctrl.state.lock().unwrap();
    match fid {
        spec::FEAT_NUMBER_OF_QUEUES if !discovery => {
            let nsqr = cdw11 & 0xFFFF;
            let ncqr = cdw11 >> 16;
            if nsqr == 0xFFFF || ncqr == 0xFFFF {
                return done(Status::INVALID_FIELD);
            }
            let max = target.opts().max_io_qpairs_per_ctrlr as u32;
            let granted = (nsqr.max(ncqr) + 1).min(max);
            st.num_io_queues = granted as u16;
            let v = granted - 1;
            AdminOutcome::Done {
                status: Status::SUCCESS,
                dw0: v | v << 16,
                data: None,
            }
        }
        spec::FEAT_ASYNC_EVENT_CONFIG => {
            st.aen_config = cdw11;
            done(Status::SUCCESS)
        }
        spec::FEAT_VOLATILE_WRITE_CACHE if !discovery => {
            st.vwc_enabled = cdw11 & 1 != 0;
            done(Status::SUCCESS)
        }
        spec::FEAT_TEMPERATURE_THRESHOLD if !discovery => {
            st.temp_threshold = (cdw11 & 0xFFFF) as u16;
            done(Status::SUCCESS)
        }
        // KATO is fixed by Connect on fabrics; accept the value the host already has.
        spec::FEAT_KEEP_ALIVE_TIMER if cdw11 as u128 == ctrl.kato.as_millis() => {
            done(Status::SUCCESS)
        }
        _ => done(Status::INVALID_FIELD),
    }
}

fn get_features(target: &Arc<Target>, ctrl: &Arc<Controller>, sqe: &spec::Sqe) -> AdminOutcome {
    let fid = (sqe.cdw10() & 0xFF) as u8;
    let sel = (sqe.cdw10() >> 8) & 0x7;
    let discovery = ctrl.subsys.kind == SubsystemKind::Discovery;
    let st = ctrl.state.lock().unwrap();
    let o = target.opts();
    let value = match fid {
        spec::FEAT_NUMBER_OF_QUEUES if !discovery => {
            let n = if sel == 1 || st.num_io_queues == 0 {
                o.max_io_qpairs_per_ctrlr as u32
            } else {
                st.num_io_queues as u32
            };
            (n - 1) | (n - 1) << 16
        }
        spec::FEAT_ASYNC_EVENT_CONFIG => {
            if sel == 1 {
                super::ctrlr::AEC_NS_ATTR
            } else {
                st.aen_config
            }
        }
        spec::FEAT_VOLATILE_WRITE_CACHE if !discovery => st.vwc_enabled as u32,
        spec::FEAT_TEMPERATURE_THRESHOLD if !discovery => st.temp_threshold as u32,
        spec::FEAT_KEEP_ALIVE_TIMER => ctrl.kato.as_millis() as u32,
        spec::FEAT_ARBITRATION if !discovery => 0,
        spec::FEAT_POWER_MANAGEMENT if !discovery => 0,
        spec::FEAT_ERROR_RECOVERY if !discovery => 0,
        _ => return done(Status::INVALID_FIELD),
    };
    // SEL=3 (supported capabilities): changeable, not saveable, not namespace specific.
    let dw0 = if sel == 3 { 0b100 } else { value };
    AdminOutcome::Done {
        status: Status::SUCCESS,
        dw0,
        data: None,
    }
}

/// Fabrics Property Get/Set on the controller registers (CAP, VS, CC, CSTS).
pub(crate) fn property(
    target: &Arc<Target>,
    ctrl: &Arc<Controller>,
    sqe: &spec::Sqe,
) -> (Status, u64) {
    let p = spec::PropertyCmd::from_sqe(sqe);
    let o = target.opts();
    let cap = spec::Cap {
        mqes: o.max_queue_depth - 1,
        cqr: true,
        to_500ms: 30,
        css_nvm: true,
        mpsmin: 0,
        mpsmax: 0,
    }
    .to_u64();
    let mut st = ctrl.state.lock().unwrap();
    if !p.set {
        let v = match (p.offset, p.size8) {
            (spec::REG_CAP, true) => cap,
            (spec::REG_CAP, false) => cap & 0xFFFF_FFFF,
            (spec::REG_CAP_HI, false) => cap >> 32,
            (spec::REG_VS, false) => spec::NVME_VERSION as u64,
            (spec::REG_CC, false) => st.cc as u64,
            (spec::REG_CSTS, false) => st.csts as u64,
            _ => return (Status::INVALID_FIELD, 0),
        };
        return (Status::SUCCESS, v);
    }
    match (p.offset, p.size8) {
        (spec::REG_CC, false) => {
            let cc = p.value as u32;
            let was = st.cc;
            st.cc = cc;
            let en = cc & 1 != 0;
            let shn = (cc >> 14) & 0x3;
            if en && was & 1 == 0 {
                st.csts |= 1; // RDY
            } else if !en && was & 1 != 0 {
                st.csts &= !1;
            }
            if shn != 0 {
                // Shutdown: nothing is cached in a volatile way beyond the bdevs' own flush
                // semantics; report shutdown processing complete.
                st.csts = (st.csts & !(0x3 << 2)) | (0x2 << 2);
            } else {
                st.csts &= !(0x3 << 2);
            }
            tracing::debug!(
                cntlid = ctrl.cntlid,
                cc = format_args!("{cc:#x}"),
                csts = format_args!("{:#x}", st.csts),
                "CC written"
            );
            (Status::SUCCESS, 0)
        }
        _ => (Status::INVALID_FIELD, 0),
    }
}
