//! Transport and target options (SPDK's nvmf_create_transport parameters).

use std::net::SocketAddr;

/// NVMe/TCP transport options.
#[derive(Debug, Clone)]
pub struct TransportOpts {
    /// Maximum queue depth per queue pair (CAP.MQES + 1).
    pub max_queue_depth: u16,
    /// Maximum I/O queues per controller.
    pub max_io_qpairs_per_ctrlr: u16,
    /// In-capsule data size for I/O queues (bytes, multiple of 16).
    pub in_capsule_data_size: u32,
    /// Maximum transfer size of one command (bytes; power of two ≥ 4096).
    pub max_io_size: u32,
    /// Data buffer unit (bytes; reported, buffers come from the reactor pools).
    pub io_unit_size: u32,
    /// Send C2HData with the SUCCESS flag (skipping the CapsuleResp) when the host allows it.
    pub c2h_success: bool,
    /// Maximum data per H2CData PDU the host may send (MAXH2CDATA).
    pub max_h2c_data: u32,
    /// Number of asynchronous event requests a controller accepts (AERL + 1).
    pub aer_limit: u8,
}

impl Default for TransportOpts {
    fn default() -> Self {
        Self {
            max_queue_depth: 128,
            max_io_qpairs_per_ctrlr: 127,
            in_capsule_data_size: 8192,
            max_io_size: 131072,
            io_unit_size: 131072,
            c2h_success: true,
            max_h2c_data: 131072,
            aer_limit: 4,
        }
    }
}

impl TransportOpts {
    /// Checks the options' invariants; the message names the bad parameter.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=4096).contains(&self.max_queue_depth) {
            return Err("max_queue_depth must be 2..=4096".into());
        }
        if !self.in_capsule_data_size.is_multiple_of(16) || self.in_capsule_data_size > 131072 {
            return Err("in_capsule_data_size must be a multiple of 16, at most 131072".into());
        }
        if !self.max_io_size.is_power_of_two() || !(4096..=(1 << 20)).contains(&self.max_io_size) {
            return Err("max_io_size must be a power of two between 4096 and 1048576".into());
        }
        if self.max_h2c_data < 4096 || !self.max_h2c_data.is_multiple_of(4) {
            return Err("max_h2c_data must be ≥ 4096 and a multiple of 4".into());
        }
        if self.max_io_qpairs_per_ctrlr == 0 {
            return Err("max_io_qpairs_per_ctrlr must be ≥ 1".into());
        }
        Ok(())
    }

    /// MDTS in units of 4 KiB pages, as a power of two.
    pub fn mdts(&self) -> u8 {
        (self.max_io_size / 4096).trailing_zeros() as u8
    }
}

/// A listen address (SPDK's listen_address: trtype, adrfam, traddr, trsvcid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenAddr(pub SocketAddr);

impl ListenAddr {
    /// "ipv4" or "ipv6".
    pub fn adrfam(&self) -> &'static str {
        if self.0.is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        }
    }
    /// The address without port, as text.
    pub fn traddr(&self) -> String {
        self.0.ip().to_string()
    }
    /// The port, as text.
    pub fn trsvcid(&self) -> String {
        self.0.port().to_string()
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
