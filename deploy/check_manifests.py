#!/usr/bin/env python3
"""Static checks of ballast's Kubernetes deployment (deploy/kubernetes), run by deploy/check.sh.

No cluster is needed: every manifest is parsed (PyYAML) and checked for what commonly breaks
a CSI deployment and what a cluster would only report at run time, if at all:

  * objects: apiVersion/kind/name, namespaces, no duplicates, kustomization lists every file;
  * pods: every volumeMount names a declared volume, every volume is used, no mount path twice,
    Bidirectional propagation only in privileged containers, $(VAR) references defined,
    ConfigMaps and keys that exist, probe ports that exist, host ports unique on the host
    network, selectors that match the template;
  * CSI wiring: every sidecar's --csi-address is the driver's --endpoint socket (same volume,
    same file), the registrar's --kubelet-registration-path is the host path of that socket
    (/var/lib/kubelet/plugins/csi.ballast.io/csi.sock), kubelet's plugin registry mounted,
    the node plugin has the kubelet directory with Bidirectional propagation;
  * ballast wiring: ballastd's RPC socket is the socket the node plugin and the controller use
    (same host file), the setup init container writes the configuration ballastd replays,
    ballastd keeps (--save-config) the file it replays (-c),
    nodes.json is valid for csi/src/config.rs and agrees with the node settings (lvs) and with
    the node plugin's topology keys;
  * RBAC: service accounts exist, bindings point at existing roles and accounts, each sidecar
    has its permissions and the leases for leader election;
  * classes: CSIDriver, StorageClasses and VolumeSnapshotClass name csi.ballast.io (the name in
    csi/src/lib.rs), StorageClass parameters are ones ballast-csi knows;
  * image: what the manifests run from the ballast image is what deploy/Dockerfile installs,
    sidecar images are pinned registry.k8s.io/sig-storage tags; deploy/*.sh pass bash -n;
  * schema (when the `kubernetes` Python client is importable, e.g. in a venv): every field
    of the built-in kinds exists in the Kubernetes API models and has the right type.

Usage: check_manifests.py [REPO_ROOT] [--no-self-test]. Prints one line per failed check and
a closing "N passed, M failed"; exits 1 when a check failed. Unless --no-self-test, it then
breaks copies of the manifests in the ways above (a self-test of the checks) and counts a
failure for each break not caught.
"""

import copy
import json
import os
import posixpath
import re
import sys

import yaml

NAMESPACE = "ballast-system"
KUBELET_DIR = "/var/lib/kubelet"
SIDECAR_REGISTRY = "registry.k8s.io/sig-storage/"
DEFAULT_RPC_SOCKET = "/var/tmp/ballast.sock"  # ballast-rpc / ballastd / ballast-csi default
BALLAST_IMAGE = "ballast"

API_VERSIONS = {
    "Namespace": "v1",
    "ServiceAccount": "v1",
    "ConfigMap": "v1",
    "PersistentVolumeClaim": "v1",
    "Pod": "v1",
    "CSIDriver": "storage.k8s.io/v1",
    "StorageClass": "storage.k8s.io/v1",
    "ClusterRole": "rbac.authorization.k8s.io/v1",
    "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
    "Deployment": "apps/v1",
    "DaemonSet": "apps/v1",
    "VolumeSnapshotClass": "snapshot.storage.k8s.io/v1",
}
CLUSTER_SCOPED = {"Namespace", "CSIDriver", "StorageClass", "ClusterRole",
                  "ClusterRoleBinding", "VolumeSnapshotClass"}
# The sidecars and a rule each must be granted (apiGroup, resource, verb).
SIDECAR_RULES = {
    "csi-provisioner": ("", "persistentvolumes", "create"),
    "csi-attacher": ("storage.k8s.io", "volumeattachments/status", "patch"),
    "csi-snapshotter": ("snapshot.storage.k8s.io", "volumesnapshotcontents/status", "patch"),
    "csi-resizer": ("", "persistentvolumeclaims/status", "patch"),
}
SC_PARAMETERS = {"thin", "replicas", "compression", "encryption"}
VOLUME_SOURCES = {"hostPath", "emptyDir", "configMap", "secret", "persistentVolumeClaim",
                  "projected", "downwardAPI", "csi", "ephemeral"}


class Checker:
    def __init__(self):
        self.passed = 0
        self.failures = []

    def check(self, cond, what):
        if cond:
            self.passed += 1
        else:
            self.failures.append(what)
        return cond


# ---------------------------------------------------------------------------------------
# Loading


def load_manifests(kdir):
    """All documents of deploy/kubernetes/**/*.yaml except kustomization.yaml, as
    (relative file, document) pairs."""
    docs = []
    for root, _, files in os.walk(kdir):
        for f in sorted(files):
            if not f.endswith((".yaml", ".yml")) or f == "kustomization.yaml":
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, kdir)
            with open(path) as fh:
                for d in yaml.safe_load_all(fh):
                    if d is not None:
                        docs.append((rel, d))
    return docs


def name_of(d):
    return (d.get("metadata") or {}).get("name")


def ns_of(d):
    return (d.get("metadata") or {}).get("namespace")


def find(docs, kind, name=None, ns=None):
    return [d for _, d in docs if d.get("kind") == kind
            and (name is None or name_of(d) == name) and (ns is None or ns_of(d) == ns)]


def pod_spec(d):
    if d.get("kind") in ("Deployment", "DaemonSet"):
        return ((d.get("spec") or {}).get("template") or {}).get("spec") or {}
    if d.get("kind") == "Pod":
        return d.get("spec") or {}
    return None


def containers(spec):
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def args_of(c):
    return [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]


def flag(c, name):
    """The value of --name=V or --name V (or -x V) in a container's command line."""
    a = args_of(c)
    for i, x in enumerate(a):
        if x.startswith(name + "="):
            return x[len(name) + 1:]
        if x == name and i + 1 < len(a):
            return a[i + 1]
    return None


def flags(c, name):
    a = args_of(c)
    out = [x[len(name) + 1:] for x in a if x.startswith(name + "=")]
    out += [a[i + 1] for i, x in enumerate(a) if x == name and i + 1 < len(a)]
    return out


def env_value(c, var):
    for e in c.get("env") or []:
        if e.get("name") == var and "value" in e:
            return str(e["value"])
    return None


def expand(c, s, configmaps):
    """Expands $(VAR) from the container's env and envFrom ConfigMaps."""
    def sub(m):
        v = env_value(c, m.group(1))
        if v is None:
            for ef in c.get("envFrom") or []:
                cm = configmaps.get((ef.get("configMapRef") or {}).get("name"))
                if cm and m.group(1) in cm:
                    v = str(cm[m.group(1)])
        return v if v is not None else m.group(0)
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, s) if s is not None else None


def image_base(image):
    return (image or "").rsplit(":", 1)[0]


def is_ballast(c):
    return image_base(c.get("image")).split("/")[-1] == BALLAST_IMAGE


def sidecar_name(c):
    b = image_base(c.get("image"))
    return b[len(SIDECAR_REGISTRY):] if b.startswith(SIDECAR_REGISTRY) else None


def csi_driver_container(spec):
    """The ballast-csi container (controller or node mode) of a pod, if any."""
    for c in spec.get("containers") or []:
        if is_ballast(c) and not c.get("command") and (c.get("args") or [None])[0] in (
                "controller", "node"):
            return c
    return None


def resolve(c, spec, path):
    """(volume, path inside the volume) of a container path, by the longest mount prefix."""
    if not path:
        return None
    best = None
    for m in c.get("volumeMounts") or []:
        mp = m.get("mountPath", "").rstrip("/") or "/"
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) > len(best[0]):
                best = (mp, m)
    if best is None:
        return None
    mp, m = best
    rel = posixpath.relpath(path, mp) if path != mp else "."
    if m.get("subPath"):
        rel = posixpath.normpath(posixpath.join(m["subPath"], rel))
    return (m["name"], rel)


def host_path(spec, res):
    """The host file of a resolved (volume, rel) when the volume is a hostPath."""
    if not res:
        return None
    for v in spec.get("volumes") or []:
        if v.get("name") == res[0] and "hostPath" in v:
            return posixpath.normpath(posixpath.join(v["hostPath"]["path"], res[1]))
    return None


def as_int(x):
    try:
        return int(x)
    except (TypeError, ValueError):
        return None


def unix_path(endpoint):
    if endpoint and endpoint.startswith("unix://"):
        p = endpoint[len("unix://"):]
        return p if p.startswith("/") else "/" + p
    return endpoint


# ---------------------------------------------------------------------------------------
# Checks


def check_objects(ck, docs):
    seen = set()
    for rel, d in docs:
        where = f"{rel}: {d.get('kind')}/{name_of(d)}"
        if not ck.check(isinstance(d, dict) and d.get("kind") and name_of(d),
                        f"{rel}: a document without kind or metadata.name"):
            continue
        kind = d["kind"]
        ck.check(kind in API_VERSIONS, f"{where}: kind {kind} is not one this deployment uses")
        if kind in API_VERSIONS:
            ck.check(d.get("apiVersion") == API_VERSIONS[kind],
                     f"{where}: apiVersion {d.get('apiVersion')}, expected {API_VERSIONS[kind]}")
        if kind in CLUSTER_SCOPED:
            ck.check(ns_of(d) is None, f"{where}: cluster-scoped, but has a namespace")
        else:
            ck.check(ns_of(d) is not None, f"{where}: namespaced, but has no metadata.namespace")
            if not rel.startswith("examples"):
                ck.check(ns_of(d) == NAMESPACE, f"{where}: namespace {ns_of(d)}, not {NAMESPACE}")
        key = (kind, ns_of(d), name_of(d))
        ck.check(key not in seen, f"{where}: defined twice")
        seen.add(key)
    ck.check(find(docs, "Namespace", NAMESPACE), f"no Namespace {NAMESPACE}")


def check_classes(ck, docs, driver):
    drivers = find(docs, "CSIDriver")
    ck.check(len(drivers) == 1, f"{len(drivers)} CSIDriver objects, expected 1")
    for d in drivers:
        s = d.get("spec") or {}
        ck.check(name_of(d) == driver, f"CSIDriver {name_of(d)}: the plugin's name is {driver}")
        ck.check(s.get("attachRequired") is True, "CSIDriver: attachRequired must be true "
                 "(ControllerPublish adds the host NQN to the subsystem)")
        ck.check(s.get("podInfoOnMount") is False, "CSIDriver: podInfoOnMount must be false")
        ck.check(s.get("volumeLifecycleModes") == ["Persistent"],
                 "CSIDriver: volumeLifecycleModes must be [Persistent]")
        ck.check(s.get("fsGroupPolicy") == "File", "CSIDriver: fsGroupPolicy must be File")
    scs = find(docs, "StorageClass")
    ck.check(scs, "no StorageClass")
    for d in scs:
        w = f"StorageClass {name_of(d)}"
        ck.check(d.get("provisioner") == driver, f"{w}: provisioner is not {driver}")
        params = d.get("parameters") or {}
        for k, v in params.items():
            ck.check(isinstance(v, str), f"{w}: parameter {k} must be a string (quote it)")
            ck.check(k in SC_PARAMETERS or k.startswith("csi.storage.k8s.io/"),
                     f"{w}: parameter {k} is unknown to ballast-csi (refused: INVALID_ARGUMENT)")
        if "thin" in params:
            ck.check(params["thin"] in ("true", "false"), f"{w}: thin must be \"true\" or \"false\"")
        if "replicas" in params:
            ck.check(re.fullmatch(r"[1-9][0-9]*", str(params["replicas"])) is not None,
                     f"{w}: replicas must be a positive integer string")
        ck.check(d.get("volumeBindingMode") == "WaitForFirstConsumer",
                 f"{w}: volumeBindingMode must be WaitForFirstConsumer")
        ck.check(d.get("allowVolumeExpansion") is True, f"{w}: allowVolumeExpansion must be true")
    for d in find(docs, "VolumeSnapshotClass"):
        w = f"VolumeSnapshotClass {name_of(d)}"
        ck.check(d.get("driver") == driver, f"{w}: driver is not {driver}")
        ck.check(d.get("deletionPolicy") in ("Delete", "Retain"), f"{w}: deletionPolicy")


def configmap_data(docs):
    return {(ns_of(d), name_of(d)): (d.get("data") or {}) for d in find(docs, "ConfigMap")}


def check_pods(ck, docs):
    cms_all = configmap_data(docs)
    for rel, d in docs:
        spec = pod_spec(d)
        if spec is None:
            continue
        w = f"{d['kind']} {name_of(d)}"
        ns = ns_of(d)
        cms = {n: data for (cns, n), data in cms_all.items() if cns == ns}
        if d["kind"] != "Pod":
            sel = ((d.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            labels = (((d.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
                "labels") or {}
            ck.check(sel and all(labels.get(k) == v for k, v in sel.items()),
                     f"{w}: selector.matchLabels do not match the template's labels")
        vols = spec.get("volumes") or []
        vnames = [v.get("name") for v in vols]
        ck.check(len(vnames) == len(set(vnames)), f"{w}: a volume name is declared twice")
        for v in vols:
            srcs = [k for k in v if k != "name"]
            ck.check(len(srcs) == 1 and srcs[0] in VOLUME_SOURCES,
                     f"{w}: volume {v.get('name')} must have exactly one known source, has {srcs}")
            if "configMap" in v:
                cmn = v["configMap"].get("name")
                ck.check(cmn in cms, f"{w}: volume {v['name']}: no ConfigMap {cmn} in {ns}")
                for it in v["configMap"].get("items") or []:
                    ck.check(it.get("key") in cms.get(cmn, {}),
                             f"{w}: volume {v['name']}: ConfigMap {cmn} has no key {it.get('key')}")
        used = set()
        cnames = [c.get("name") for c in containers(spec)]
        ck.check(len(cnames) == len(set(cnames)), f"{w}: a container name is used twice")
        for c in containers(spec):
            cw = f"{w}, container {c.get('name')}"
            paths = []
            priv = bool((c.get("securityContext") or {}).get("privileged"))
            for m in c.get("volumeMounts") or []:
                ck.check(m.get("name") in vnames,
                         f"{cw}: volumeMount {m.get('name')} names no volume of the pod")
                used.add(m.get("name"))
                paths.append(m.get("mountPath"))
                if m.get("mountPropagation") == "Bidirectional":
                    ck.check(priv, f"{cw}: Bidirectional mount propagation needs a privileged "
                                   f"container ({m.get('mountPath')})")
            ck.check(len(paths) == len(set(paths)), f"{cw}: a mountPath is used twice")
            for ef in c.get("envFrom") or []:
                cmn = (ef.get("configMapRef") or {}).get("name")
                ck.check(cmn in cms, f"{cw}: envFrom names no ConfigMap {cmn} in {ns}")
            for a in args_of(c):
                for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
                    ck.check(expand(c, f"$({var})", cms) != f"$({var})" or any(
                        e.get("name") == var for e in c.get("env") or []),
                        f"{cw}: $({var}) in its command line is not defined in its env")
            ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                hg = (c.get(probe) or {}).get("httpGet")
                if hg:
                    port = hg.get("port")
                    ck.check(isinstance(port, int) or port in ports,
                             f"{cw}: {probe} port {port} is not a port of the container")
            img = c.get("image") or ""
            ck.check(":" in img.split("/")[-1] and not img.endswith(":latest"),
                     f"{cw}: image {img} must have a pinned tag")
            sc = sidecar_name(c)
            if sc:
                ck.check(re.fullmatch(r"v\d+\.\d+\.\d+", img.rsplit(":", 1)[1]) is not None,
                         f"{cw}: sidecar image {img} must be a vX.Y.Z release")
        for v in vnames:
            ck.check(v in used, f"{w}: volume {v} is mounted by no container")
        if spec.get("hostNetwork"):
            ck.check(spec.get("dnsPolicy") == "ClusterFirstWithHostNet",
                     f"{w}: hostNetwork pods need dnsPolicy ClusterFirstWithHostNet")
            host_ports = []
            for c in containers(spec):
                host_ports += [p.get("containerPort") for p in c.get("ports") or []]
            ck.check(len(host_ports) == len(set(host_ports)),
                     f"{w}: a port is used twice on the host network: {host_ports}")
        ballast_tags = {c["image"].rsplit(":", 1)[1] for c in containers(spec) if is_ballast(c)}
        ck.check(len(ballast_tags) <= 1, f"{w}: ballast containers of different tags {ballast_tags}")
        # Service account.
        sa = spec.get("serviceAccountName")
        if sa:
            ck.check(find(docs, "ServiceAccount", sa, ns),
                     f"{w}: serviceAccountName {sa} is no ServiceAccount in {ns}")


def check_csi_wiring(ck, docs, driver):
    cms_all = configmap_data(docs)
    drivers_seen = 0
    for rel, d in docs:
        spec = pod_spec(d)
        if spec is None:
            continue
        drv = csi_driver_container(spec)
        if drv is None:
            continue
        drivers_seen += 1
        w = f"{d['kind']} {name_of(d)}"
        cms = {n: data for (cns, n), data in cms_all.items() if cns == ns_of(d)}
        endpoint = unix_path(flag(drv, "--endpoint"))
        sock = resolve(drv, spec, endpoint)
        ck.check(sock is not None, f"{w}: the driver's --endpoint {endpoint} is on no volume")
        mode = drv["args"][0]
        for c in containers(spec):
            sc = sidecar_name(c)
            if not sc:
                continue
            addr = expand(c, flag(c, "--csi-address"), cms)
            ck.check(addr is not None, f"{w}, {c['name']}: no --csi-address")
            got = resolve(c, spec, addr)
            ck.check(got is not None and got == sock,
                     f"{w}, {c['name']}: --csi-address {addr} is not the driver's socket "
                     f"{endpoint} (volume/file {got} vs {sock})")
            if sc == "livenessprobe":
                port = flag(c, "--health-port")
                drv_ports = {p.get("name"): p.get("containerPort") for p in drv.get("ports") or []}
                probe = ((drv.get("livenessProbe") or {}).get("httpGet") or {}).get("port")
                probe = drv_ports.get(probe, probe)
                ck.check(as_int(port) is not None and as_int(port) == as_int(probe),
                         f"{w}: livenessprobe --health-port {port} is not the port the driver's "
                         f"livenessProbe asks ({probe})")
            if sc == "csi-node-driver-registrar":
                want = f"{KUBELET_DIR}/plugins/{driver}/csi.sock"
                reg = flag(c, "--kubelet-registration-path")
                ck.check(reg == want, f"{w}: --kubelet-registration-path {reg}, expected {want}")
                ck.check(host_path(spec, sock) == want,
                         f"{w}: the driver's socket is {host_path(spec, sock)} on the host, but "
                         f"kubelet is told {want}")
                regdir = resolve(c, spec, "/registration/x")
                ck.check(host_path(spec, regdir) == f"{KUBELET_DIR}/plugins_registry/x",
                         f"{w}: the registrar needs {KUBELET_DIR}/plugins_registry at /registration")
                ep = flag(c, "--http-endpoint")
                if ep:
                    rp = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
                    hp = ((c.get("livenessProbe") or {}).get("httpGet") or {}).get("port")
                    ck.check(as_int(ep.rsplit(":", 1)[-1]) == as_int(rp.get(hp, hp)),
                             f"{w}: registrar --http-endpoint {ep} is not its livenessProbe port")
        names = {sidecar_name(c) for c in containers(spec)}
        if mode == "node":
            ck.check(d["kind"] == "DaemonSet", f"{w}: the node plugin runs in a DaemonSet")
            ck.check("csi-node-driver-registrar" in names, f"{w}: no node-driver-registrar")
            ck.check(spec.get("hostNetwork") is True, f"{w}: the node pod needs hostNetwork")
            ck.check((drv.get("securityContext") or {}).get("privileged") is True,
                     f"{w}: the node plugin must be privileged")
            kub = [m for m in drv.get("volumeMounts") or []
                   if host_path(spec, (m["name"], ".")) == KUBELET_DIR]
            ck.check(kub and kub[0].get("mountPath") == KUBELET_DIR
                     and kub[0].get("mountPropagation") == "Bidirectional",
                     f"{w}: the node plugin needs {KUBELET_DIR} at the same path, Bidirectional")
            for need in ("/dev", "/sys", "/etc/nvme"):
                got = resolve(drv, spec, need)
                ck.check(host_path(spec, got) == need, f"{w}: the node plugin needs the host's "
                                                       f"{need} at {need}")
            ck.check(flag(drv, "--node-name") is not None, f"{w}: node plugin without --node-name")
        else:
            for sc in SIDECAR_RULES:
                ck.check(sc in names, f"{w}: no {sc} sidecar")
            prov = [c for c in containers(spec) if sidecar_name(c) == "csi-provisioner"]
            for c in prov:
                ck.check("--feature-gates=Topology=true" in args_of(c),
                         f"{w}: csi-provisioner without --feature-gates=Topology=true")
                ck.check("--extra-create-metadata" in args_of(c),
                         f"{w}: csi-provisioner without --extra-create-metadata")
            reps = (d.get("spec") or {}).get("replicas", 1)
            ck.check(reps == 1, f"{w}: ballast-csi controller must run as one replica")
    ck.check(drivers_seen == 2, f"{drivers_seen} pods run ballast-csi, expected 2 (controller, node)")


def validate_nodes_json(text):
    """csi/src/config.rs's rules; returns (errors, parsed)."""
    errs = []
    try:
        cfg = json.loads(text)
    except ValueError as e:
        return [f"nodes.json is not JSON: {e}"], None
    if not isinstance(cfg, dict) or set(cfg) != {"nodes"}:
        return ["nodes.json must be an object with the one key \"nodes\""], None
    nodes = cfg["nodes"]
    if not isinstance(nodes, list) or not nodes:
        return ["nodes.json: \"nodes\" must be a non-empty list"], None
    seen = set()
    for n in nodes:
        if not isinstance(n, dict):
            errs.append("nodes.json: a node is not an object")
            continue
        extra = set(n) - {"id", "rpc_socket", "lvs", "nvmf", "topology"}
        if extra:
            errs.append(f"nodes.json: unknown keys {sorted(extra)} (refused by ballast-csi)")
        nid = n.get("id")
        if not isinstance(nid, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,48}", nid):
            errs.append(f"nodes.json: node id {nid!r} must be 1-48 characters of [A-Za-z0-9._-]")
        elif nid in seen:
            errs.append(f"nodes.json: node id {nid} given twice")
        seen.add(nid)
        lvs = n.get("lvs", "lvs0")
        if not isinstance(lvs, str) or not 1 <= len(lvs.encode()) <= 63:
            errs.append(f"nodes.json: node {nid}: lvs must be 1-63 bytes")
        if not isinstance(n.get("rpc_socket", DEFAULT_RPC_SOCKET), str):
            errs.append(f"nodes.json: node {nid}: rpc_socket must be a path")
        nv = n.get("nvmf")
        if nv is not None:
            if not isinstance(nv, dict) or set(nv) - {"addr", "port"}:
                errs.append(f"nodes.json: node {nid}: nvmf takes addr and port only")
            elif not isinstance(nv.get("addr"), str) or not nv.get("addr"):
                errs.append(f"nodes.json: node {nid}: nvmf.addr must be a non-empty string")
            elif not isinstance(nv.get("port", 4420), int) or not 0 < nv.get("port", 4420) < 65536:
                errs.append(f"nodes.json: node {nid}: nvmf.port must be 1-65535")
        topo = n.get("topology", {})
        if not isinstance(topo, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in topo.items()):
            errs.append(f"nodes.json: node {nid}: topology must map strings to strings")
    return errs, cfg


def check_ballast_wiring(ck, docs):
    cms_all = configmap_data(docs)
    node_pod = ctrl_pod = None
    for _, d in docs:
        spec = pod_spec(d)
        drv = csi_driver_container(spec) if spec is not None else None
        if drv is not None:
            if drv["args"][0] == "node":
                node_pod = (d, spec, drv)
            else:
                ctrl_pod = (d, spec, drv)
    if not ck.check(node_pod and ctrl_pod, "no node DaemonSet or controller Deployment to check"):
        return
    d, spec, drv = node_pod
    w = f"{d['kind']} {name_of(d)}"
    cms = {n: data for (cns, n), data in cms_all.items() if cns == ns_of(d)}
    bd = [c for c in containers(spec) if is_ballast(c)
          and any(x.endswith("/ballastd") or x == "ballastd" for x in c.get("command") or [])]
    if not ck.check(len(bd) == 1, f"{w}: expected one ballastd container, found {len(bd)}"):
        return
    bd = bd[0]
    rsock = flag(bd, "-r") or flag(bd, "--rpc-socket") or DEFAULT_RPC_SOCKET
    host_sock = host_path(spec, resolve(bd, spec, rsock))
    ck.check(host_sock is not None, f"{w}: ballastd's RPC socket {rsock} is not on a hostPath")
    nsock = flag(drv, "--rpc-socket") or DEFAULT_RPC_SOCKET
    ck.check(host_path(spec, resolve(drv, spec, nsock)) == host_sock,
             f"{w}: the node plugin's RPC socket {nsock} is not ballastd's ({host_sock})")
    cfg_path = flag(bd, "-c") or flag(bd, "--config")
    host_cfg = host_path(spec, resolve(bd, spec, cfg_path))
    ck.check(host_cfg is not None, f"{w}: ballastd -c {cfg_path} is not on a hostPath")
    # What the CSI driver creates over RPC survives a restart only if ballastd keeps it in the
    # file it replays.
    save_path = flag(bd, "--save-config")
    ck.check(save_path is not None and host_path(spec, resolve(bd, spec, save_path)) == host_cfg,
             f"{w}: ballastd --save-config {save_path} is not the file -c replays "
             f"({cfg_path}): what the CSI driver creates would be lost at a restart")
    setup = [c for c in spec.get("initContainers") or []
             if any("ballast-node-setup" in x for x in c.get("command") or [])]
    if ck.check(len(setup) == 1, f"{w}: no ballastd-setup init container"):
        s = setup[0]
        state = expand(s, "$(BALLAST_STATE_DIR)", cms)
        state = "/var/lib/ballast" if state.startswith("$(") else state
        conf = expand(s, "$(BALLAST_CONFIG)", cms)
        conf = posixpath.join(state, "config.json") if conf.startswith("$(") else conf
        ck.check(host_path(spec, resolve(s, spec, conf)) == host_cfg,
                 f"{w}: ballastd-setup writes {conf}, but ballastd replays {cfg_path} "
                 f"(host {host_cfg})")
        pool = expand(s, "$(BALLAST_POOL)", cms)
        if not pool.startswith("$(") and not pool.startswith("/dev/"):
            ck.check(host_path(spec, resolve(s, spec, pool)) is not None
                     and host_path(spec, resolve(bd, spec, pool)) == host_path(spec, resolve(
                         s, spec, pool)),
                     f"{w}: the pool file {pool} is not on the same hostPath in ballastd-setup "
                     f"and ballastd")
        if pool.startswith("/dev/"):
            ck.check(host_path(spec, resolve(bd, spec, "/dev")) == "/dev",
                     f"{w}: a block-device pool needs the host's /dev in ballastd")
    # nodes.json of the controller.
    cd, cspec, cdrv = ctrl_pod
    cw = f"{cd['kind']} {name_of(cd)}"
    conf = flag(cdrv, "--config")
    res = resolve(cdrv, cspec, conf)
    text = None
    if ck.check(res is not None, f"{cw}: --config {conf} is on no volume"):
        vol = [v for v in cspec.get("volumes") or [] if v.get("name") == res[0]]
        cmv = vol[0].get("configMap") if vol else None
        if ck.check(cmv is not None, f"{cw}: --config {conf} is not from a ConfigMap"):
            key = res[1]
            for it in cmv.get("items") or []:
                if it.get("path") == res[1]:
                    key = it.get("key")
            text = cms_all.get((ns_of(cd), cmv.get("name")), {}).get(key)
            ck.check(text is not None, f"{cw}: ConfigMap {cmv.get('name')} has no {key}")
    if text is None:
        return
    errs, cfg = validate_nodes_json(text)
    for e in errs:
        ck.check(False, e)
    ck.check(not errs, "nodes.json")
    if not cfg:
        return
    reachable = []
    for n in cfg["nodes"]:
        sockp = n.get("rpc_socket", DEFAULT_RPC_SOCKET)
        reachable.append(host_path(cspec, resolve(cdrv, cspec, sockp)) == host_sock)
    ck.check(any(reachable), f"{cw}: no node of nodes.json has its rpc_socket on the host's "
                             f"ballastd socket {host_sock}")
    ck.check(all(reachable), f"{cw}: nodes.json lists nodes whose rpc_socket the controller "
                             f"cannot reach (only the local ballastd's socket is mounted)")
    ck.check(((cspec.get("nodeSelector") or {}).get("csi.ballast.io/controller")) == "true",
             f"{cw}: the controller must be pinned to the storage node "
             f"(nodeSelector csi.ballast.io/controller=true)")
    node_cm = {}
    for ef in bd.get("envFrom") or []:
        node_cm.update(cms.get((ef.get("configMapRef") or {}).get("name"), {}))
    lvs = node_cm.get("BALLAST_LVS", "lvs0")
    for n in cfg["nodes"]:
        ck.check(n.get("lvs", "lvs0") == lvs, f"nodes.json: node {n.get('id')} has lvs "
                                              f"{n.get('lvs', 'lvs0')}, the nodes make {lvs}")
    topo_keys = {t.split("=", 1)[0] for t in flags(drv, "--topology")}
    for n in cfg["nodes"]:
        keys = set(n.get("topology") or {"topology.csi.ballast.io/node": n.get("id")})
        ck.check(keys <= topo_keys, f"nodes.json: node {n.get('id')}'s topology keys "
                                    f"{sorted(keys - topo_keys)} are not reported by the node "
                                    f"plugin (--topology): its volumes could never be used")


def rule_grants(rule, group, resource, verb):
    return (group in rule.get("apiGroups", []) or "*" in rule.get("apiGroups", [])) and (
        resource in rule.get("resources", []) or "*" in rule.get("resources", [])) and (
        verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))


def check_rbac(ck, docs):
    roles = {}
    for kind in ("ClusterRole", "Role"):
        for d in find(docs, kind):
            roles[(kind, ns_of(d), name_of(d))] = d.get("rules") or []
    grants = {}  # (ns, sa) -> [rules]
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for d in find(docs, kind):
            w = f"{kind} {name_of(d)}"
            ref = d.get("roleRef") or {}
            rk = ref.get("kind")
            key = (rk, None if rk == "ClusterRole" else ns_of(d), ref.get("name"))
            ck.check(ref.get("apiGroup") == "rbac.authorization.k8s.io",
                     f"{w}: roleRef.apiGroup must be rbac.authorization.k8s.io")
            ck.check(key in roles, f"{w}: roleRef {rk}/{ref.get('name')} does not exist")
            ck.check(d.get("subjects"), f"{w}: no subjects")
            for s in d.get("subjects") or []:
                if s.get("kind") != "ServiceAccount":
                    continue
                ck.check(find(docs, "ServiceAccount", s.get("name"), s.get("namespace")),
                         f"{w}: subject ServiceAccount {s.get('namespace')}/{s.get('name')} "
                         f"does not exist")
                grants.setdefault((s.get("namespace"), s.get("name")), []).append(
                    (kind, ns_of(d), roles.get(key, [])))
    used = set()
    for _, d in docs:
        spec = pod_spec(d)
        if spec is None:
            continue
        sa = spec.get("serviceAccountName", "default")
        used.add((ns_of(d), sa))
        mine = grants.get((ns_of(d), sa), [])
        for c in containers(spec):
            sc = sidecar_name(c)
            if sc in SIDECAR_RULES:
                g, r, v = SIDECAR_RULES[sc]
                ck.check(any(rule_grants(rl, g, r, v) for _, _, rules in mine for rl in rules),
                         f"{d['kind']} {name_of(d)}: {sc} lacks {v} on {r} (account {sa})")
            if sc and "--leader-election" in args_of(c):
                ck.check(any(rule_grants(rl, "coordination.k8s.io", "leases", verb)
                             for kind, bns, rules in mine for rl in rules
                             if kind == "ClusterRoleBinding" or bns == ns_of(d)
                             for verb in ("create", "update")),
                         f"{d['kind']} {name_of(d)}: {sc} elects a leader but {sa} may not "
                         f"create/update leases in {ns_of(d)}")
    for d in find(docs, "ServiceAccount"):
        ck.check((ns_of(d), name_of(d)) in used, f"ServiceAccount {name_of(d)} is used by no pod")


def check_files(ck, root, docs):
    kdir = os.path.join(root, "deploy", "kubernetes")
    with open(os.path.join(kdir, "kustomization.yaml")) as fh:
        kust = yaml.safe_load(fh)
    listed = kust.get("resources") or []
    top = sorted(f for f in os.listdir(kdir)
                 if f.endswith(".yaml") and f != "kustomization.yaml")
    ck.check(sorted(listed) == top,
             f"kustomization.yaml lists {sorted(listed)}, the directory has {top}")
    with open(os.path.join(root, "deploy", "Dockerfile")) as fh:
        df = fh.read()
    for src in re.findall(r"^COPY\s+(?!--from)(\S+)\s+\S+\s*$", df, re.M):
        if src != ".":
            ck.check(os.path.exists(os.path.join(root, src)), f"Dockerfile: COPY {src}: no such file")
    installed = set(re.findall(r"/usr/local/bin/([A-Za-z0-9._-]+)", df))
    for b in re.findall(r"/out/([A-Za-z0-9._-]+)", df):
        installed.add(b)
    ent = re.search(r'^ENTRYPOINT\s+\["([^"]+)"', df, re.M)
    for _, d in docs:
        spec = pod_spec(d)
        if spec is None:
            continue
        for c in containers(spec):
            if not is_ballast(c):
                continue
            cmd = c.get("command")
            if cmd:
                ck.check(posixpath.basename(cmd[0]) in installed,
                         f"{d['kind']} {name_of(d)}, {c['name']}: runs {cmd[0]}, which the "
                         f"Dockerfile does not install")
            else:
                ck.check(ent is not None and posixpath.basename(ent.group(1)) == "ballast-csi",
                         f"{d['kind']} {name_of(d)}, {c['name']}: relies on the image's "
                         f"entrypoint being ballast-csi")
            for probe in ("livenessProbe",):
                ex = ((c.get(probe) or {}).get("exec") or {}).get("command") or []
                if ex:
                    ck.check(posixpath.basename(ex[0]) in installed,
                             f"{d['kind']} {name_of(d)}, {c['name']}: probe runs {ex[0]}, "
                             f"not in the image")


# ---------------------------------------------------------------------------------------
# Schema (optional: the kubernetes Python client's models)


def check_schema(ck, docs):
    try:
        import kubernetes.client.models as models  # noqa: F401
    except ImportError:
        return False
    prim = {"str": str, "int": int, "bool": bool, "float": (int, float)}

    def walk(value, typ, where):
        if typ in ("object", "datetime", "date"):
            return
        if typ in prim:
            ok = isinstance(value, prim[typ]) and not (typ != "bool" and isinstance(value, bool))
            ck.check(ok, f"{where}: {value!r} is not a {typ}")
            return
        m = re.fullmatch(r"[Ll]ist\[(.+)\]", typ)
        if m:
            if ck.check(isinstance(value, list), f"{where}: must be a list"):
                for i, x in enumerate(value):
                    walk(x, m.group(1), f"{where}[{i}]")
            return
        m = re.fullmatch(r"dict\((\w+), (.+)\)|Dict\[(\w+), (.+)\]", typ)
        if m:
            if ck.check(isinstance(value, dict), f"{where}: must be a map"):
                for k, x in value.items():
                    walk(x, m.group(2) or m.group(4), f"{where}.{k}")
            return
        cls = getattr(models, typ, None)
        if cls is None:
            return
        if not ck.check(isinstance(value, dict), f"{where}: must be an object ({typ})"):
            return
        by_json = {j: a for a, j in cls.attribute_map.items()}
        for k, x in value.items():
            if ck.check(k in by_json, f"{where}: unknown field {k!r} ({typ})"):
                walk(x, cls.openapi_types[by_json[k]], f"{where}.{k}")

    for rel, d in docs:
        kind = d.get("kind")
        cls = "V1" + kind
        if getattr(models, cls, None) is None:
            continue  # CRDs (VolumeSnapshotClass)
        walk(d, cls, f"{rel}: {kind}/{name_of(d)}")
    return True


# ---------------------------------------------------------------------------------------


def run_all(ck, docs, driver, root=None):
    check_objects(ck, docs)
    check_classes(ck, docs, driver)
    check_pods(ck, docs)
    check_csi_wiring(ck, docs, driver)
    check_ballast_wiring(ck, docs)
    check_rbac(ck, docs)
    if root:
        check_files(ck, root, docs)


def driver_name(root):
    with open(os.path.join(root, "csi", "src", "lib.rs")) as fh:
        m = re.search(r'PLUGIN_NAME:\s*&str\s*=\s*"([^"]+)"', fh.read())
    return m.group(1) if m else "csi.ballast.io"


def self_test(docs, driver):
    """Breaks copies of the manifests; each break must be caught."""

    def obj(ds, kind, name):
        return next(d for _, d in ds if d.get("kind") == kind and name_of(d) == name)

    def ctr(ds, kind, name, cname):
        return next(c for c in containers(pod_spec(obj(ds, kind, name))) if c["name"] == cname)

    def set_arg(c, prefix, new):
        c["args"] = [new if str(a).startswith(prefix) else a for a in c["args"]]

    def nodes_json(ds, f):
        cm = obj(ds, "ConfigMap", "ballast-csi-nodes")
        cfg = json.loads(cm["data"]["nodes.json"])
        f(cfg)
        cm["data"]["nodes.json"] = json.dumps(cfg)

    DS, DEP = "ballast-csi-node", "ballast-csi-controller"
    breaks = [
        ("a mount of an undeclared volume", "names no volume",
         lambda ds: ctr(ds, "DaemonSet", DS, "ballast-csi")["volumeMounts"][0].update(name="plugin")),
        ("a volume nobody mounts", "mounted by no container",
         lambda ds: pod_spec(obj(ds, "DaemonSet", DS))["volumes"].append(
             {"name": "spare", "emptyDir": {}})),
        ("the registrar told another path", "kubelet-registration-path",
         lambda ds: set_arg(ctr(ds, "DaemonSet", DS, "node-driver-registrar"),
                            "--kubelet-registration-path=",
                            "--kubelet-registration-path=/var/lib/kubelet/plugins/ballast/csi.sock")),
        ("the plugin socket in another host directory", "on the host",
         lambda ds: next(v for v in pod_spec(obj(ds, "DaemonSet", DS))["volumes"]
                         if v["name"] == "plugin-dir")["hostPath"].update(
             path="/var/lib/kubelet/plugins/ballast")),
        ("a sidecar on another socket", "--csi-address",
         lambda ds: ctr(ds, "Deployment", DEP, "csi-provisioner")["env"][0].update(
             value="/csi/provisioner.sock")),
        ("a sidecar without the socket volume", "--csi-address",
         lambda ds: ctr(ds, "Deployment", DEP, "csi-attacher").update(volumeMounts=[])),
        ("Bidirectional in an unprivileged container", "Bidirectional",
         lambda ds: ctr(ds, "DaemonSet", DS, "node-driver-registrar")["volumeMounts"][0].update(
             mountPropagation="Bidirectional")),
        ("the kubelet directory without propagation", "Bidirectional",
         lambda ds: next(m for m in ctr(ds, "DaemonSet", DS, "ballast-csi")["volumeMounts"]
                         if m["name"] == "kubelet-dir").pop("mountPropagation")),
        ("a binding to a missing account", "does not exist",
         lambda ds: obj(ds, "ClusterRoleBinding", "ballast-csi-attacher")["subjects"][0].update(
             name="csi-attacher")),
        ("a binding to a missing role", "does not exist",
         lambda ds: obj(ds, "RoleBinding", "ballast-csi-leader-election")["roleRef"].update(
             name="leader-election")),
        ("the resizer without its status rule", "lacks patch",
         lambda ds: obj(ds, "ClusterRole", "ballast-csi-resizer")["rules"].pop(2)),
        ("no leases for leader election", "leases",
         lambda ds: obj(ds, "Role", "ballast-csi-leader-election")["rules"][0].update(
             resources=["configmaps"])),
        ("a pod with a missing service account", "is no ServiceAccount",
         lambda ds: pod_spec(obj(ds, "Deployment", DEP)).update(serviceAccountName="csi")),
        ("ballastd's socket elsewhere", "RPC socket",
         lambda ds: ctr(ds, "DaemonSet", DS, "ballastd")["args"].__setitem__(3, "/tmp/b.sock")),
        ("ballastd not keeping its config", "--save-config",
         lambda ds: ctr(ds, "DaemonSet", DS, "ballastd")["args"].__setitem__(
             slice(6, 8), [])),
        ("ballastd keeping its config elsewhere", "--save-config",
         lambda ds: ctr(ds, "DaemonSet", DS, "ballastd")["args"].__setitem__(
             7, "/var/tmp/config.json")),
        ("the setup writing another config", "ballastd-setup writes",
         lambda ds: ctr(ds, "DaemonSet", DS, "ballastd-setup")["env"][0].update(value="/tmp")),
        ("a bad node id in nodes.json", "node id",
         lambda ds: nodes_json(ds, lambda c: c["nodes"][0].update(id="a:b"))),
        ("an unknown key in nodes.json", "unknown keys",
         lambda ds: nodes_json(ds, lambda c: c["nodes"][0].update(address="10.0.0.1"))),
        ("an unreachable second node", "cannot reach",
         lambda ds: nodes_json(ds, lambda c: c["nodes"].append(
             {"id": "storage-2", "rpc_socket": "/run/other/ballast.sock"}))),
        ("another lvs than the nodes make", "lvs",
         lambda ds: nodes_json(ds, lambda c: c["nodes"][0].update(lvs="pool"))),
        ("a topology key no node reports", "topology keys",
         lambda ds: nodes_json(ds, lambda c: c["nodes"][0].update(
             topology={"topology.kubernetes.io/zone": "z1"}))),
        ("an unknown StorageClass parameter", "unknown to ballast-csi",
         lambda ds: obj(ds, "StorageClass", "ballast-thin")["parameters"].update(fsType="ext4")),
        ("an unquoted parameter", "must be a string",
         lambda ds: obj(ds, "StorageClass", "ballast-thin")["parameters"].update(replicas=1)),
        ("another provisioner name", "provisioner is not",
         lambda ds: obj(ds, "StorageClass", "ballast-thin").update(provisioner="ballast")),
        ("the CSIDriver without attach", "attachRequired",
         lambda ds: obj(ds, "CSIDriver", driver)["spec"].update(attachRequired=False)),
        ("an undefined $(VAR)", "is not defined",
         lambda ds: ctr(ds, "DaemonSet", DS, "ballast-csi")["env"].pop(0)),
        ("a ConfigMap volume of a missing key", "has no key",
         lambda ds: pod_spec(obj(ds, "Deployment", DEP))["volumes"][1]["configMap"]["items"][0]
         .update(key="config.json")),
        ("a probe of a port that is not declared", "is not a port",
         lambda ds: ctr(ds, "DaemonSet", DS, "ballast-csi")["livenessProbe"]["httpGet"].update(
             port="health")),
        ("livenessprobe on another port", "--health-port",
         lambda ds: set_arg(ctr(ds, "DaemonSet", DS, "liveness-probe"), "--health-port=",
                            "--health-port=9808")),
        ("two containers on one host port", "used twice on the host network",
         lambda ds: ctr(ds, "DaemonSet", DS, "node-driver-registrar")["ports"][0].update(
             containerPort=9890)),
        ("a sidecar on latest", "pinned tag",
         lambda ds: ctr(ds, "Deployment", DEP, "csi-resizer").update(
             image="registry.k8s.io/sig-storage/csi-resizer:latest")),
        ("a selector that misses the template", "selector",
         lambda ds: obj(ds, "DaemonSet", DS)["spec"]["selector"]["matchLabels"].update(app="x")),
        ("a namespaced object in another namespace", "namespace",
         lambda ds: obj(ds, "ConfigMap", "ballast-node")["metadata"].update(namespace="default")),
        ("two controller replicas", "one replica",
         lambda ds: obj(ds, "Deployment", DEP)["spec"].update(replicas=2)),
        ("a controller on any node", "pinned",
         lambda ds: pod_spec(obj(ds, "Deployment", DEP))["nodeSelector"].pop(
             "csi.ballast.io/controller")),
    ]
    try:
        import kubernetes.client.models  # noqa: F401
        schema = True
    except ImportError:
        schema = False
    if schema:
        breaks += [
            ("a misspelt field", "unknown field 'mountPropagaton'",
             lambda ds: ctr(ds, "DaemonSet", DS, "ballast-csi")["volumeMounts"][1].update(
                 mountPropagaton="Bidirectional")),
            ("a string where the API wants a number", "is not a int",
             lambda ds: ctr(ds, "DaemonSet", DS, "ballast-csi")["ports"][0].update(
                 containerPort="9890")),
        ]

    def run(ck, ds):
        run_all(ck, ds, driver)
        if schema:
            check_schema(ck, ds)

    good = Checker()
    run(good, docs)
    passed = failed = 0
    if good.failures:
        print("self-test: the manifests themselves fail:", *good.failures, sep="\n  ")
        failed += 1
    for what, expect, brk in breaks:
        ds = copy.deepcopy(docs)
        try:
            brk(ds)
        except (StopIteration, KeyError, IndexError) as e:
            print(f"FAIL self-test: cannot apply the break '{what}': {e!r}")
            failed += 1
            continue
        ck = Checker()
        run(ck, ds)
        if any(expect in f for f in ck.failures):
            passed += 1
        else:
            failed += 1
            print(f"FAIL self-test: '{what}' was not caught (expected a failure naming "
                  f"'{expect}'; got {ck.failures or 'none'})")
    print(f"self-test: {passed} of {len(breaks)} deliberate breaks of the manifests caught"
          f"{' (with the API schema)' if schema else ''}")
    return passed, failed


def check_scripts(ck, root):
    """bash -n of the shell scripts under deploy/."""
    import subprocess
    ddir = os.path.join(root, "deploy")
    for f in sorted(os.listdir(ddir)):
        if f.endswith(".sh"):
            r = subprocess.run(["bash", "-n", os.path.join(ddir, f)], capture_output=True,
                               text=True)
            ck.check(r.returncode == 0, f"deploy/{f}: bash -n: {r.stderr.strip()}")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    root = os.path.abspath(args[0] if args else os.path.join(os.path.dirname(__file__), ".."))
    kdir = os.path.join(root, "deploy", "kubernetes")
    docs = load_manifests(kdir)
    driver = driver_name(root)
    ck = Checker()
    run_all(ck, docs, driver, root)
    check_scripts(ck, root)
    schema = check_schema(ck, docs)
    for f in ck.failures:
        print(f"FAIL {f}")
    files = sorted({rel for rel, _ in docs})
    print(f"checked {len(docs)} objects in {len(files)} files of deploy/kubernetes "
          f"(driver {driver}; API schema: "
          f"{'kubernetes client models' if schema else 'skipped, no kubernetes Python client'})")
    passed, failed = ck.passed, len(ck.failures)
    if "--no-self-test" not in sys.argv:
        p, f = self_test(docs, driver)
        passed, failed = passed + p, failed + f
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
