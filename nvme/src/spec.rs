//! NVMe base/fabrics wire structures.
