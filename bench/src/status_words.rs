//! Completion statuses in words, for `ballast-perf`'s messages: NVMe statuses (NVMe Base 2.0
//! §4.6.1.2; NVMe over Fabrics 1.1 §3.3 for Connect), the host library's errors carrying
//! them, and in-process bdev statuses.
//!
//! ```text
//!  Status(sct 0x1, sc 0x82) + Command::Connect ─► "Connect Invalid Parameters (sct 0x1 sc 0x82)"
//!  Status(sct 0x1, sc 0x82) + Command::Io      ─► "Attempted Write to Read Only Range (…)"
//!  Status(sct 0x0, sc 0x99)                    ─► "Generic Command Status 0x99 (…)"
//!  HostError::Command { what: "Connect", … }   ─► "connect to NQN at ADDR refused: … — hint"
//! ```

use std::net::SocketAddr;

use ballast_engine::IoStatus;
use ballast_nvme::host::HostError;
use ballast_nvme::spec::Status;

/// The command a status answers: command-specific codes (SCT 1) mean different things for
/// a Fabrics Connect, an admin command and an NVM I/O command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Fabrics Connect (admin or I/O queue).
    Connect,
    /// Any other admin command.
    Admin,
    /// An NVM I/O command (Read, Write, …).
    Io,
}

/// The spec's name of `s` answering a `cmd` command, if this table knows it.
pub fn nvme_name(s: Status, cmd: Command) -> Option<&'static str> {
    Some(match (s.sct(), s.sc(), cmd) {
        (0, 0x00, _) => "Successful Completion",
        (0, 0x01, _) => "Invalid Command Opcode",
        (0, 0x02, _) => "Invalid Field in Command",
        (0, 0x03, _) => "Command ID Conflict",
        (0, 0x04, _) => "Data Transfer Error",
        (0, 0x05, _) => "Commands Aborted due to Power Loss Notification",
        (0, 0x06, _) => "Internal Error",
        (0, 0x07, _) => "Command Abort Requested",
        (0, 0x08, _) => "Command Aborted due to SQ Deletion",
        (0, 0x0B, _) => "Invalid Namespace or Format",
        (0, 0x0C, _) => "Command Sequence Error",
        (0, 0x0D, _) => "Invalid SGL Segment Descriptor",
        (0, 0x0E, _) => "Invalid Number of SGL Descriptors",
        (0, 0x0F, _) => "Data SGL Length Invalid",
        (0, 0x10, _) => "Metadata SGL Length Invalid",
        (0, 0x11, _) => "SGL Descriptor Type Invalid",
        (0, 0x15, _) => "Operation Denied",
        (0, 0x16, _) => "SGL Offset Invalid",
        (0, 0x18, _) => "Host Identifier Inconsistent Format",
        (0, 0x19, _) => "Keep Alive Timer Expired",
        (0, 0x1A, _) => "Keep Alive Timeout Invalid",
        (0, 0x20, _) => "Namespace is Write Protected",
        (0, 0x21, _) => "Command Interrupted",
        (0, 0x22, _) => "Transient Transport Error",
        (0, 0x80, _) => "LBA Out of Range",
        (0, 0x81, _) => "Capacity Exceeded",
        (0, 0x82, _) => "Namespace Not Ready",
        (0, 0x83, _) => "Reservation Conflict",
        (0, 0x84, _) => "Format In Progress",
        (1, 0x80, Command::Connect) => "Connect Incompatible Format",
        (1, 0x81, Command::Connect) => "Connect Controller Busy",
        (1, 0x82, Command::Connect) => "Connect Invalid Parameters",
        (1, 0x83, Command::Connect) => "Connect Restart Discovery",
        (1, 0x84, Command::Connect) => "Connect Invalid Host",
        (1, 0x90, Command::Connect) => "Invalid Queue Type",
        (1, 0x92, Command::Connect) => "Authentication Required",
        (1, 0x80, Command::Io) => "Conflicting Attributes",
        (1, 0x81, Command::Io) => "Invalid Protection Information",
        (1, 0x82, Command::Io) => "Attempted Write to Read Only Range",
        (1, 0x00, Command::Admin) => "Completion Queue Invalid",
        (1, 0x01, Command::Admin) => "Invalid Queue Identifier",
        (1, 0x02, Command::Admin) => "Invalid Queue Size",
        (1, 0x05, Command::Admin) => "Asynchronous Event Request Limit Exceeded",
        (1, 0x09, Command::Admin) => "Invalid Log Page",
        (1, 0x0D, Command::Admin) => "Feature Identifier Not Saveable",
        (1, 0x0E, Command::Admin) => "Feature Not Changeable",
        (1, 0x0F, Command::Admin) => "Feature Not Namespace Specific",
        (2, 0x80, _) => "Write Fault",
        (2, 0x81, _) => "Unrecovered Read Error",
        (2, 0x82, _) => "End-to-end Guard Check Error",
        (2, 0x83, _) => "End-to-end Application Tag Check Error",
        (2, 0x84, _) => "End-to-end Reference Tag Check Error",
        (2, 0x85, _) => "Compare Failure",
        (2, 0x86, _) => "Access Denied",
        (2, 0x87, _) => "Deallocated or Unwritten Logical Block",
        (3, 0x00, _) => "Internal Path Error",
        (3, 0x01, _) => "Asymmetric Access Persistent Loss",
        (3, 0x02, _) => "Asymmetric Access Inaccessible",
        (3, 0x03, _) => "Asymmetric Access Transition",
        (3, 0x60, _) => "Controller Pathing Error",
        (3, 0x70, _) => "Host Pathing Error",
        (3, 0x71, _) => "Command Aborted By Host",
        _ => return None,
    })
}

/// `s` in words with its codes, e.g. "Invalid Field in Command (sct 0x0 sc 0x2)"; unknown
/// codes get their type's name and the code in hex.
pub fn nvme(s: Status, cmd: Command) -> String {
    let codes = format!("sct {:#x} sc {:#x}", s.sct(), s.sc());
    match nvme_name(s, cmd) {
        Some(name) => format!("{name} ({codes})"),
        None => {
            let kind = match s.sct() {
                0 => "Generic Command Status",
                1 => "Command Specific Status",
                2 => "Media and Data Integrity Error",
                3 => "Path Related Status",
                7 => "Vendor Specific Status",
                _ => "Status",
            };
            format!("{kind} {:#04x} ({codes})", s.sc())
        }
    }
}

/// An in-process bdev's completion status in words.
pub fn bdev(s: IoStatus) -> String {
    match s {
        IoStatus::Pending => "still pending".into(),
        IoStatus::Success => "success".into(),
        IoStatus::OutOfRange => "LBA out of range".into(),
        IoStatus::InvalidLength => "buffer length does not match the block count".into(),
        IoStatus::Removed => "bdev removed".into(),
        IoStatus::NotSupported => "operation not supported by the bdev".into(),
        IoStatus::NoMemory => "no resources (retryable)".into(),
        IoStatus::Aborted => "aborted".into(),
        IoStatus::Failed(errno) => {
            format!(
                "backend error: {}",
                std::io::Error::from_raw_os_error(errno)
            )
        }
    }
}

/// A host library error about subsystem `nqn` at `addr` in words. A refused Connect (of
/// the admin queue if `qid` is 0) names the subsystem and the likely cause; other refused
/// commands name their status.
pub fn host_error(e: &HostError, nqn: &str, addr: SocketAddr, hostnqn: &str, qid: u16) -> String {
    match e {
        HostError::Command {
            what: "Connect",
            status,
            ..
        } => {
            let queue = if qid == 0 {
                String::new()
            } else {
                format!("I/O queue {qid} ")
            };
            let hint = match (status.sct(), status.sc(), qid) {
                (1, 0x82, 0) => " — is the subsystem NQN right, and is this host allowed?".into(),
                (1, 0x82, _) => " — the target refused the queue's ID or size".into(),
                (1, 0x84, _) => format!(" — host {hostnqn} is not allowed on {nqn}"),
                (1, 0x81, _) => " — the controller is busy, try again".into(),
                _ => String::new(),
            };
            format!(
                "{queue}connect to {nqn} at {addr} refused: {}{hint}",
                nvme(*status, Command::Connect)
            )
        }
        HostError::Command { what, status, .. } => format!(
            "{nqn} at {addr}: {what} failed: {}",
            nvme(*status, Command::Admin)
        ),
        HostError::Io { op, source, .. } => format!("{nqn} at {addr}: {op}: {source}"),
        HostError::Protocol { why, .. } => format!("{nqn} at {addr}: protocol error: {why}"),
        e => format!("{nqn}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_statuses_have_their_fabrics_names() {
        assert_eq!(
            nvme(Status::CONNECT_INVALID_PARAMETERS, Command::Connect),
            "Connect Invalid Parameters (sct 0x1 sc 0x82)"
        );
        assert_eq!(
            nvme(Status::CONNECT_INVALID_HOST, Command::Connect),
            "Connect Invalid Host (sct 0x1 sc 0x84)"
        );
        // The same code on an I/O command means something else.
        assert_eq!(
            nvme_name(Status::CONNECT_INVALID_PARAMETERS, Command::Io),
            Some("Attempted Write to Read Only Range")
        );
    }

    #[test]
    fn generic_statuses_and_hex_fallback() {
        assert_eq!(
            nvme(Status::INVALID_FIELD, Command::Io),
            "Invalid Field in Command (sct 0x0 sc 0x2)"
        );
        assert_eq!(
            nvme(Status::LBA_OUT_OF_RANGE, Command::Io),
            "LBA Out of Range (sct 0x0 sc 0x80)"
        );
        // DNR does not change the words.
        assert_eq!(
            nvme(Status::NAMESPACE_NOT_READY_RETRY, Command::Io),
            nvme(Status::NAMESPACE_NOT_READY, Command::Io)
        );
        assert_eq!(
            nvme(Status(0x0099), Command::Io),
            "Generic Command Status 0x99 (sct 0x0 sc 0x99)"
        );
        assert_eq!(
            nvme(Status(0x0185), Command::Connect),
            "Command Specific Status 0x85 (sct 0x1 sc 0x85)"
        );
    }

    #[test]
    fn bdev_errno_in_words() {
        assert!(bdev(IoStatus::Failed(libc::EIO)).contains("Input/output error"));
    }

    #[test]
    fn refused_connect_is_explained() {
        let addr: SocketAddr = "127.0.0.1:4420".parse().unwrap();
        let cmd = |what, status| HostError::Command { addr, what, status };
        let e = cmd("Connect", Status::CONNECT_INVALID_PARAMETERS);
        assert_eq!(
            host_error(&e, "nqn.X", addr, "nqn.H", 0),
            "connect to nqn.X at 127.0.0.1:4420 refused: Connect Invalid Parameters \
             (sct 0x1 sc 0x82) — is the subsystem NQN right, and is this host allowed?"
        );
        let e = cmd("Connect", Status::CONNECT_INVALID_HOST);
        assert!(host_error(&e, "nqn.X", addr, "nqn.H", 0).ends_with(
            "refused: Connect Invalid Host (sct 0x1 sc 0x84) — host nqn.H is not allowed on nqn.X"
        ));
        assert!(host_error(&e, "nqn.X", addr, "nqn.H", 2).starts_with("I/O queue 2 connect to"));
        let e = cmd("Identify Namespace", Status::INVALID_NAMESPACE_OR_FORMAT);
        assert_eq!(
            host_error(&e, "nqn.X", addr, "nqn.H", 0),
            "nqn.X at 127.0.0.1:4420: Identify Namespace failed: Invalid Namespace or Format \
             (sct 0x0 sc 0xb)"
        );
    }
}
