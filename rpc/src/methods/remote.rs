//! Remote NVMe/TCP namespaces as bdevs (`bdev_nvme_*`).

use super::*;

impl From<ballast_nvme::remote::RemoteError> for RpcError {
    fn from(e: ballast_nvme::remote::RemoteError) -> Self {
        use ballast_nvme::remote::RemoteError as R;
        match e {
            R::Exists(_) => RpcError::new(-17, e.to_string()),
            R::NotFound(_) => RpcError::new(-19, e.to_string()),
            R::Bdev(b) => b.into(),
            R::Host(h) => RpcError::new(-5, h.to_string()),
        }
    }
}

pub(crate) fn bdev_nvme_attach_controller(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
        trtype: String,
        traddr: String,
        #[serde(default)]
        adrfam: Option<String>,
        #[serde(default)]
        trsvcid: Option<String>,
        subnqn: String,
        #[serde(default)]
        hostnqn: Option<String>,
        #[serde(default)]
        hostid: Option<String>,
        #[serde(default)]
        hdgst: bool,
        #[serde(default)]
        ddgst: bool,
        #[serde(default)]
        ctrlr_loss_timeout_sec: Option<i64>,
        #[serde(default)]
        reconnect_delay_sec: Option<u64>,
        /// SPDK's name; `io_queues` (what ballast saved before) is accepted too.
        #[serde(default, alias = "io_queues")]
        num_io_queues: Option<u16>,
    }
    let p: P = parse(params)?;
    let addr = socket_addr(&ListenAddress {
        trtype: p.trtype,
        adrfam: p.adrfam,
        traddr: p.traddr,
        trsvcid: p.trsvcid.unwrap_or_else(|| "4420".into()),
    })?;
    let mut host = ballast_nvme::host::HostOpts {
        hdgst: p.hdgst,
        ddgst: p.ddgst,
        ..Default::default()
    };
    if let Some(h) = p.hostnqn {
        host.hostnqn = h;
    }
    if let Some(id) = p.hostid {
        host.hostid = *parse_uuid(Some(id), "hostid")?.expect("given").as_bytes();
    }
    // SPDK: -1 = retry forever; 0 = give up at once.
    let loss = match p.ctrlr_loss_timeout_sec {
        Some(s) if s < 0 => std::time::Duration::from_secs(u64::MAX / 4),
        Some(s) => std::time::Duration::from_secs(s as u64),
        None => std::time::Duration::from_secs(30),
    };
    let names = ballast_nvme::remote::attach(ballast_nvme::remote::AttachOpts {
        name: p.name,
        addr,
        subnqn: p.subnqn,
        host,
        ctrlr_loss_timeout: loss,
        reconnect_delay: std::time::Duration::from_secs(p.reconnect_delay_sec.unwrap_or(1).max(1)),
        io_queues: p
            .num_io_queues
            .unwrap_or(ctx.rt.cores().len() as u16)
            .max(1),
    })?;
    Ok(json!(names))
}

pub(crate) fn bdev_nvme_detach_controller(
    _: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    /// SPDK's detach takes a path's address to remove one path of a multipath controller;
    /// ballast's controllers have one path: given, it must be that path's.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
        trtype: Option<String>,
        traddr: Option<String>,
        adrfam: Option<String>,
        trsvcid: Option<String>,
        subnqn: Option<String>,
        hostaddr: Option<String>,
        hostsvcid: Option<String>,
    }
    let p: P = parse(params)?;
    if let Some(r) = ballast_nvme::remote::list()
        .into_iter()
        .find(|r| r.name == p.name)
    {
        let t = remote_json(&r);
        let given = [
            ("trtype", &p.trtype),
            ("traddr", &p.traddr),
            ("adrfam", &p.adrfam),
            ("trsvcid", &p.trsvcid),
            ("subnqn", &p.subnqn),
        ];
        for (k, v) in given {
            if let Some(v) = v {
                if !t[k].as_str().is_some_and(|x| x.eq_ignore_ascii_case(v)) {
                    return Err(RpcError::new(
                        -19,
                        format!(
                            "No such device: controller {} has no path with {k} {v}",
                            p.name
                        ),
                    ));
                }
            }
        }
        if p.hostaddr.is_some() || p.hostsvcid.is_some() {
            return Err(RpcError::new(
                -19,
                format!(
                    "No such device: controller {} has no path with a host address",
                    p.name
                ),
            ));
        }
    }
    ballast_nvme::remote::detach(&p.name)?;
    Ok(json!(true))
}

/// Attach params of a controller, as save_config writes them.
pub(crate) fn remote_json(r: &ballast_nvme::remote::RemoteInfo) -> Value {
    let o = &r.opts;
    json!({
        "name": r.name,
        "trtype": "TCP",
        "adrfam": if o.addr.is_ipv4() { "IPv4" } else { "IPv6" },
        "traddr": o.addr.ip().to_string(),
        "trsvcid": o.addr.port().to_string(),
        "subnqn": o.subnqn,
        "hostnqn": o.host.hostnqn,
        "hostid": uuid::Uuid::from_bytes(o.host.hostid).to_string(),
        "hdgst": o.host.hdgst,
        "ddgst": o.host.ddgst,
        "ctrlr_loss_timeout_sec": o.ctrlr_loss_timeout.as_secs().min(i64::MAX as u64 / 2),
        "reconnect_delay_sec": o.reconnect_delay.as_secs(),
        "num_io_queues": o.io_queues,
    })
}

pub(crate) fn bdev_nvme_get_controllers(
    _: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    let p: OptName = parse(params)?;
    let all = ballast_nvme::remote::list();
    if let Some(n) = &p.name {
        if !all.iter().any(|r| &r.name == n) {
            return Err(RpcError::new(-19, format!("controller {n} not found")));
        }
    }
    Ok(Value::Array(
        all.iter()
            .filter(|r| p.name.as_ref().is_none_or(|n| n == &r.name))
            .map(|r| {
                json!({
                    "name": r.name,
                    "ctrlrs": [{"trid": remote_json(r), "state": if r.failed { "failed" } else if r.connected { "enabled" } else { "resetting" }}],
                    "bdevs": r.bdevs,
                    "reconnects": r.reconnects,
                })
            })
            .collect(),
    ))
}
