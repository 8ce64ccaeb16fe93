//! NVMe/TCP PDU codec.
