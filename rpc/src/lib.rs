//! JSON-RPC management (issue 4: not built yet).
