//! The NVMe-oF target: transport, subsystems, namespaces, listeners, hosts.

use super::*;

pub(crate) fn nvmf_create_transport(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        trtype: String,
        max_queue_depth: Option<u16>,
        max_io_qpairs_per_ctrlr: Option<u16>,
        in_capsule_data_size: Option<u32>,
        max_io_size: Option<u32>,
        io_unit_size: Option<u32>,
        c2h_success: Option<bool>,
    }
    let p: P = parse(params)?;
    if !p.trtype.eq_ignore_ascii_case("tcp") {
        return Err(RpcError::params(format!(
            "Invalid parameters: trtype {:?} is not supported (only TCP)",
            p.trtype
        )));
    }
    // Unset options take the daemon's defaults (its command-line transport flags).
    let d = ctx.target.default_opts().clone();
    let max_io_size = p.max_io_size.unwrap_or(d.max_io_size);
    let opts = TransportOpts {
        max_queue_depth: p.max_queue_depth.unwrap_or(d.max_queue_depth),
        max_io_qpairs_per_ctrlr: p
            .max_io_qpairs_per_ctrlr
            .unwrap_or(d.max_io_qpairs_per_ctrlr),
        in_capsule_data_size: p.in_capsule_data_size.unwrap_or(d.in_capsule_data_size),
        max_io_size,
        io_unit_size: p.io_unit_size.unwrap_or(d.io_unit_size),
        c2h_success: p.c2h_success.unwrap_or(d.c2h_success),
        max_h2c_data: max_io_size.min(d.max_h2c_data.max(max_io_size)),
        ..d
    };
    ctx.target.create_transport(opts)?;
    Ok(json!(true))
}

/// The transport's options in SPDK's shape.
pub fn transport_json(o: &TransportOpts) -> Value {
    json!({
        "trtype": "TCP",
        "max_queue_depth": o.max_queue_depth,
        "max_io_qpairs_per_ctrlr": o.max_io_qpairs_per_ctrlr,
        "in_capsule_data_size": o.in_capsule_data_size,
        "max_io_size": o.max_io_size,
        "io_unit_size": o.io_unit_size,
        "c2h_success": o.c2h_success,
    })
}

pub(crate) fn nvmf_get_transports(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        #[serde(default)]
        trtype: Option<String>,
    }
    let p: P = parse(params)?;
    if let Some(t) = &p.trtype {
        if !t.eq_ignore_ascii_case("tcp") {
            return Err(RpcError::new(-19, format!("transport {t} not found")));
        }
    }
    Ok(Value::Array(
        ctx.target
            .transport()
            .map(transport_json)
            .into_iter()
            .collect(),
    ))
}

pub(crate) fn subsystem(ctx: &Context, nqn: &str) -> Result<Arc<Subsystem>, RpcError> {
    ctx.target
        .subsystem(nqn)
        .ok_or_else(|| RpcError::new(-19, format!("subsystem {nqn} not found")))
}

pub(crate) fn nvm_subsystem(ctx: &Context, nqn: &str) -> Result<Arc<Subsystem>, RpcError> {
    let s = subsystem(ctx, nqn)?;
    if s.kind == SubsystemKind::Discovery {
        return Err(RpcError::params(format!(
            "Invalid parameters: {nqn} is the discovery subsystem"
        )));
    }
    Ok(s)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NqnOnly {
    nqn: String,
}

/// Default serial number of a subsystem created without one (SPDK's default).
pub const DEFAULT_SERIAL: &str = "00000000000000000000";
/// Default model number (SPDK's default).
pub const DEFAULT_MODEL: &str = "SPDK bdev Controller";

pub(crate) fn nvmf_create_subsystem(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        nqn: String,
        #[serde(default)]
        serial_number: Option<String>,
        #[serde(default)]
        model_number: Option<String>,
        #[serde(default)]
        allow_any_host: bool,
        #[serde(default)]
        max_namespaces: Option<u32>,
    }
    let p: P = parse(params)?;
    ctx.target.create_subsystem(
        &p.nqn,
        p.serial_number.as_deref().unwrap_or(DEFAULT_SERIAL),
        p.model_number.as_deref().unwrap_or(DEFAULT_MODEL),
        // SPDK's 0 means "the default" (32 here).
        p.max_namespaces.filter(|&n| n > 0).unwrap_or(32),
        p.allow_any_host,
    )?;
    Ok(json!(true))
}

pub(crate) fn nvmf_delete_subsystem(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    let p: NqnOnly = parse(params)?;
    nvm_subsystem(ctx, &p.nqn)?;
    ctx.target.delete_subsystem(&p.nqn)?;
    Ok(json!(true))
}

pub(crate) fn listen_json(l: &ListenAddr) -> Value {
    addr_json(&l.0)
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

pub(crate) fn subsystem_json(s: &Subsystem) -> Value {
    let (any, hosts) = s.hosts();
    let mut v = json!({
        "nqn": s.nqn,
        "subtype": if s.kind == SubsystemKind::Discovery { "Discovery" } else { "NVMe" },
        "listen_addresses": s.listeners().iter().map(listen_json).collect::<Vec<_>>(),
        "allow_any_host": any,
        "hosts": hosts.iter().map(|h| json!({"nqn": h})).collect::<Vec<_>>(),
    });
    if s.kind == SubsystemKind::Nvm {
        let m = v.as_object_mut().expect("object");
        m.insert("serial_number".into(), json!(s.serial));
        m.insert("model_number".into(), json!(s.model));
        m.insert("max_namespaces".into(), json!(s.max_namespaces));
        let mut ns = s.namespaces();
        ns.sort_by_key(|n| n.nsid);
        m.insert(
            "namespaces".into(),
            Value::Array(
                ns.iter()
                    .map(|n| {
                        json!({
                            "nsid": n.nsid,
                            "bdev_name": n.bdev.name(),
                            "name": n.bdev.name(),
                            "nguid": hex(&n.nguid),
                            "eui64": hex(&n.eui64),
                            "uuid": n.uuid.to_string(),
                        })
                    })
                    .collect(),
            ),
        );
    }
    v
}

pub(crate) fn nvmf_get_subsystems(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        #[serde(default)]
        nqn: Option<String>,
    }
    let p: P = parse(params)?;
    if let Some(n) = p.nqn {
        return Ok(json!([subsystem_json(&*subsystem(ctx, &n)?)]));
    }
    let mut all = vec![subsystem_json(ctx.target.discovery())];
    all.extend(ctx.target.subsystems().iter().map(|s| subsystem_json(s)));
    Ok(Value::Array(all))
}

pub(crate) fn parse_hex<const N: usize>(s: &str, param: &str) -> Result<[u8; N], RpcError> {
    let clean: String = s.chars().filter(|c| *c != '-').collect();
    let bad = || {
        RpcError::params(format!(
            "Invalid parameters: {param} {s:?} must be {} hex digits",
            N * 2
        ))
    };
    if clean.len() != N * 2 || !clean.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&clean[i * 2..i * 2 + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

pub(crate) fn nvmf_subsystem_add_ns(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Ns {
        bdev_name: String,
        #[serde(default)]
        nsid: Option<u32>,
        #[serde(default)]
        uuid: Option<String>,
        #[serde(default)]
        nguid: Option<String>,
        #[serde(default)]
        eui64: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        nqn: String,
        namespace: Ns,
    }
    let p: P = parse(params)?;
    let s = nvm_subsystem(ctx, &p.nqn)?;
    let ns = p.namespace;
    let uuid = parse_uuid(ns.uuid, "namespace.uuid")?;
    let nguid = ns
        .nguid
        .as_deref()
        .map(|g| parse_hex::<16>(g, "namespace.nguid"))
        .transpose()?;
    let eui64 = ns
        .eui64
        .as_deref()
        .map(|e| parse_hex::<8>(e, "namespace.eui64"))
        .transpose()?;
    let nsid = s.add_ns(
        &ns.bdev_name,
        ns.nsid.filter(|&n| n != 0),
        uuid,
        nguid,
        eui64,
    )?;
    Ok(json!(nsid))
}

pub(crate) fn nvmf_subsystem_remove_ns(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        nqn: String,
        nsid: u32,
    }
    let p: P = parse(params)?;
    nvm_subsystem(ctx, &p.nqn)?.remove_ns(p.nsid)?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenAddress {
    pub(crate) trtype: String,
    #[serde(default)]
    pub(crate) adrfam: Option<String>,
    pub(crate) traddr: String,
    pub(crate) trsvcid: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerParams {
    nqn: String,
    listen_address: ListenAddress,
}

pub(crate) fn socket_addr(l: &ListenAddress) -> Result<SocketAddr, RpcError> {
    if !l.trtype.eq_ignore_ascii_case("tcp") {
        return Err(RpcError::params(format!(
            "Invalid parameters: listen_address.trtype {:?} is not supported (only TCP)",
            l.trtype
        )));
    }
    let ip: IpAddr = l
        .traddr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| {
            RpcError::params(format!(
                "Invalid parameters: listen_address.traddr {:?} is not an IP address",
                l.traddr
            ))
        })?;
    let port: u16 = l.trsvcid.parse().map_err(|_| {
        RpcError::params(format!(
            "Invalid parameters: listen_address.trsvcid {:?} is not a port number",
            l.trsvcid
        ))
    })?;
    if let Some(f) = &l.adrfam {
        let ok = match f.to_ascii_lowercase().as_str() {
            "ipv4" => ip.is_ipv4(),
            "ipv6" => ip.is_ipv6(),
            _ => false,
        };
        if !ok {
            return Err(RpcError::params(format!(
                "Invalid parameters: listen_address.adrfam {f:?} does not match traddr {}",
                l.traddr
            )));
        }
    }
    Ok(SocketAddr::new(ip, port))
}

pub(crate) fn nvmf_subsystem_add_listener(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    let p: ListenerParams = parse(params)?;
    let addr = socket_addr(&p.listen_address)?;
    nvm_subsystem(ctx, &p.nqn)?;
    ctx.target.add_listener(&p.nqn, addr)?;
    Ok(json!(true))
}

pub(crate) fn nvmf_subsystem_remove_listener(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    let p: ListenerParams = parse(params)?;
    let addr = socket_addr(&p.listen_address)?;
    nvm_subsystem(ctx, &p.nqn)?;
    ctx.target.remove_listener(&p.nqn, addr)?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HostParams {
    nqn: String,
    host: String,
}

pub(crate) fn nvmf_subsystem_add_host(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    let p: HostParams = parse(params)?;
    nvm_subsystem(ctx, &p.nqn)?.add_host(&p.host)?;
    Ok(json!(true))
}

pub(crate) fn nvmf_subsystem_remove_host(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    let p: HostParams = parse(params)?;
    nvm_subsystem(ctx, &p.nqn)?.remove_host(&p.host)?;
    Ok(json!(true))
}

pub(crate) fn nvmf_subsystem_allow_any_host(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        nqn: String,
        allow_any_host: bool,
    }
    let p: P = parse(params)?;
    nvm_subsystem(ctx, &p.nqn)?.set_allow_any_host(p.allow_any_host);
    Ok(json!(true))
}

/// A socket address as SPDK's transport ID object (listeners, peers, saved listeners).
pub(crate) fn addr_json(a: &SocketAddr) -> Value {
    json!({
        "trtype": "TCP",
        "adrfam": if a.is_ipv4() { "IPv4" } else { "IPv6" },
        "traddr": a.ip().to_string(),
        "trsvcid": a.port().to_string(),
    })
}

pub(crate) fn nvmf_subsystem_get_controllers(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    let p: NqnOnly = parse(params)?;
    let s = subsystem(ctx, &p.nqn)?;
    let mut cs = s.controllers();
    cs.sort_by_key(|c| c.cntlid);
    let kind = if s.kind == SubsystemKind::Discovery {
        "discovery"
    } else {
        "io"
    };
    Ok(Value::Array(
        cs.iter()
            .map(|c| {
                let q = c.qpairs();
                json!({
                    "cntlid": c.cntlid,
                    "cntrltype": kind,
                    "hostnqn": c.hostnqn,
                    "hostid": uuid::Uuid::from_bytes(c.hostid).to_string(),
                    "num_io_qpairs": q.len().saturating_sub(1),
                    "peer_address": addr_json(&c.peer),
                    "listen_address": listen_json(&c.listener),
                    "kato_ms": c.kato.as_millis() as u64,
                })
            })
            .collect(),
    ))
}

pub(crate) fn nvmf_subsystem_get_qpairs(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    let p: NqnOnly = parse(params)?;
    let s = subsystem(ctx, &p.nqn)?;
    let mut out = Vec::new();
    let mut cs = s.controllers();
    cs.sort_by_key(|c| c.cntlid);
    for c in cs {
        // SPDK's qpair states: a listed qpair belongs to a connected controller, so it is
        // enabled until the controller starts to disconnect.
        let state = if c.is_disconnecting() {
            "deactivating"
        } else {
            "enabled"
        };
        for q in c.qpairs() {
            out.push(json!({
                "cntlid": c.cntlid,
                "qid": q.qid,
                "state": state,
                "thread": thread_name(ctx, q.core),
                "hostnqn": c.hostnqn,
                "listen_address": listen_json(&c.listener),
                "peer_address": addr_json(&c.peer),
            }));
        }
    }
    Ok(Value::Array(out))
}

pub(crate) fn nvmf_subsystem_get_listeners(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    let p: NqnOnly = parse(params)?;
    let s = subsystem(ctx, &p.nqn)?;
    Ok(Value::Array(
        s.listeners()
            .iter()
            .map(|l| json!({"address": listen_json(l), "ana_state": "optimized"}))
            .collect(),
    ))
}
