"""Validates hookfleet's rendered Kubernetes overlays, its compose file and
its Grafana dashboard: what kubernetes-validate checks against the API
schemas, and the cross-references it cannot (run by
scripts/lib/validate_infra.sh, in the tools venv).

    validate_infra.py ROOT K8S_VERSIONS NAME=RENDERED.yaml ...
"""
import json
import os
import re
import sys

import yaml
import kubernetes_validate as kv

root, versions = sys.argv[1], sys.argv[2].split()
overlays = [arg.split("=", 1) for arg in sys.argv[3:]]
failed = False


def report(scope, errors, summary):
    global failed
    if errors:
        failed = True
        for e in errors:
            print(f"validate_infra: {scope}: {e}", file=sys.stderr)
    else:
        print(f"validate_infra: {scope}: ok ({summary})")


def dig(obj, *path, default=None):
    for p in path:
        if isinstance(obj, dict) and p in obj:
            obj = obj[p]
        elif isinstance(obj, list) and isinstance(p, int) and -len(obj) <= p < len(obj):
            obj = obj[p]
        else:
            return default
    return obj


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(s):
    try:
        float(s)
        return isinstance(s, str)
    except (TypeError, ValueError):
        return False


# Resources whose group is not a Kubernetes API group: checked by hand.
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"),
    ("postgresql.cnpg.io/v1", "Cluster"),
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass",
                  "StorageClass", "CustomResourceDefinition"}
# Keys the operators write into the Secrets they generate.
RABBITMQ_USER_KEYS = {"username", "password", "host", "port", "provider", "type",
                      "default_user.conf"}
CNPG_APP_KEYS = {"username", "password", "host", "port", "dbname", "uri", "jdbc-uri",
                 "pgpass", "fqdn-uri", "fqdn-jdbc-uri", "user"}
PRIVATE_V4 = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"}


def is_core(api_version):
    group = api_version.split("/")[0] if "/" in api_version else ""
    return group == "" or "." not in group or group.endswith(".k8s.io")


def pod_spec(obj):
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        return dig(obj, "spec", "template", "spec")
    return None


def check_overlay(name, path):
    errors = []
    try:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        return [f"rendered YAML does not parse: {e}"], ""
    if not docs:
        return ["renders to nothing"], ""

    objs = {}
    for d in docs:
        if not isinstance(d, dict) or not all(k in d for k in ("apiVersion", "kind", "metadata")) \
                or not dig(d, "metadata", "name"):
            errors.append(f"object without apiVersion/kind/metadata.name: {str(d)[:80]}")
            continue
        key = (d["kind"], d["metadata"]["name"])
        if key in objs:
            errors.append(f"{d['kind']}/{d['metadata']['name']} rendered twice")
        objs[key] = d
    if errors:
        return errors, ""

    def by_kind(kind):
        return [o for (k, _), o in objs.items() if k == kind]

    # 1. Core objects against the Kubernetes schemas; custom ones by hand.
    n_core = n_custom = 0
    namespaces = {o["metadata"]["name"] for o in by_kind("Namespace")}
    for (kind, oname), o in objs.items():
        ident = f"{kind}/{oname}"
        if kind not in CLUSTER_SCOPED:
            ns = dig(o, "metadata", "namespace")
            if not ns:
                errors.append(f"{ident} has no namespace")
            elif ns not in namespaces:
                errors.append(f"{ident} is in namespace {ns}, which the overlay does not create")
        if (o["apiVersion"], kind) in CUSTOM_KINDS:
            n_custom += 1
            continue
        if not is_core(o["apiVersion"]):
            errors.append(f"{ident}: {o['apiVersion']} is neither a Kubernetes API nor a "
                          "custom resource this script knows how to check")
            continue
        n_core += 1
        for v in versions:
            try:
                kv.validate(o, v, strict=True)
            except kv.ValidationError as e:
                where = ".".join(str(p) for p in e.path) or "(root)"
                errors.append(f"{ident} is invalid for Kubernetes {v}: {where}: {e.message}")
            except kv.SchemaNotFoundError:
                errors.append(f"{ident}: Kubernetes {v} has no {o['apiVersion']} {kind}")

    # Names and keys that env/envFrom/volumes may refer to.
    configmaps = {o["metadata"]["name"]: set((o.get("data") or {}).keys())
                  for o in by_kind("ConfigMap")}
    secrets = {o["metadata"]["name"]: set((o.get("data") or {}).keys())
               | set((o.get("stringData") or {}).keys()) for o in by_kind("Secret")}
    for rc in by_kind("RabbitmqCluster"):
        secrets.setdefault(rc["metadata"]["name"] + "-default-user", RABBITMQ_USER_KEYS)
    for pg in by_kind("Cluster"):
        secrets.setdefault(pg["metadata"]["name"] + "-app", CNPG_APP_KEYS)

    # 2. Custom resources: required fields.
    deployments = {o["metadata"]["name"]: o for o in by_kind("Deployment")}
    trigger_auths = {o["metadata"]["name"]: o for o in by_kind("TriggerAuthentication")}
    autoscaled = {}

    def container_env_names(deploy, container_name):
        for c in dig(deploy, "spec", "template", "spec", "containers", default=[]):
            if container_name in (None, c.get("name")):
                return {e.get("name") for e in c.get("env") or []}
        return None

    for so in by_kind("ScaledObject"):
        ident = f"ScaledObject/{so['metadata']['name']}"
        spec = so.get("spec") or {}
        target = dig(spec, "scaleTargetRef", "name")
        if not isinstance(target, str):
            errors.append(f"{ident}: spec.scaleTargetRef.name is required")
        elif dig(spec, "scaleTargetRef", "kind", default="Deployment") == "Deployment":
            if target not in deployments:
                errors.append(f"{ident}: scales Deployment {target}, which is not rendered")
            autoscaled.setdefault(target, []).append(ident)
        lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if not (is_int(lo) and is_int(hi) and 0 <= lo <= hi and hi >= 1):
            errors.append(f"{ident}: need 0 <= minReplicaCount <= maxReplicaCount")
        triggers = spec.get("triggers")
        if not isinstance(triggers, list) or not triggers:
            errors.append(f"{ident}: spec.triggers must be a non-empty list")
            triggers = []
        for i, t in enumerate(triggers):
            md = t.get("metadata") if isinstance(t, dict) else None
            if not isinstance(t, dict) or not isinstance(t.get("type"), str) or not isinstance(md, dict):
                errors.append(f"{ident}: triggers[{i}] needs a type and a metadata map")
                continue
            if any(not isinstance(v, str) for v in md.values()):
                errors.append(f"{ident}: triggers[{i}].metadata values must all be strings")
            if t["type"] == "rabbitmq":
                if not md.get("queueName"):
                    errors.append(f"{ident}: rabbitmq trigger needs metadata.queueName")
                if md.get("mode") not in ("QueueLength", "MessageRate"):
                    errors.append(f"{ident}: rabbitmq trigger mode must be QueueLength or MessageRate")
                if not is_number(md.get("value")):
                    errors.append(f"{ident}: rabbitmq trigger needs a numeric string metadata.value")
                if "@" in md.get("host", ""):
                    errors.append(f"{ident}: credentials in trigger metadata.host; use a TriggerAuthentication")
                ref = dig(t, "authenticationRef", "name")
                if ref is None and not md.get("host") and not md.get("hostFromEnv"):
                    errors.append(f"{ident}: rabbitmq trigger has no host, hostFromEnv or authenticationRef")
                if ref is not None:
                    ta = trigger_auths.get(ref)
                    if ta is None:
                        errors.append(f"{ident}: authenticationRef {ref} is not rendered")
                    elif target in deployments:
                        for e in dig(ta, "spec", "env", default=[]):
                            names = container_env_names(deployments[target], e.get("containerName"))
                            if names is None or e.get("name") not in names:
                                errors.append(f"TriggerAuthentication/{ref}: {target} has no env "
                                              f"{e.get('name')} in container {e.get('containerName')}")
                # The queue the workers consume: {amqp.prefix}.deliver.
                cm_prefixes = {keys_cm.get("HOOKFLEET__AMQP__PREFIX") for keys_cm in
                               (dig(o, "data", default={}) for o in by_kind("ConfigMap"))} - {None}
                prefix = cm_prefixes.pop() if len(cm_prefixes) == 1 else "hookfleet"
                if md.get("queueName") and md["queueName"] != f"{prefix}.deliver":
                    errors.append(f"{ident}: scales on {md['queueName']}, the workers consume {prefix}.deliver")
            if t["type"] in ("cpu", "memory") and t.get("metricType") not in ("Utilization", "AverageValue"):
                errors.append(f"{ident}: {t['type']} trigger needs metricType Utilization or AverageValue")

    for ta in trigger_auths.values():
        ident = f"TriggerAuthentication/{ta['metadata']['name']}"
        spec = ta.get("spec") or {}
        sources = [k for k in ("secretTargetRef", "env", "configMapTargetRef", "hashiCorpVault",
                               "podIdentity", "azureKeyVault", "awsSecretManager") if spec.get(k)]
        if not sources:
            errors.append(f"{ident}: spec needs secretTargetRef, env or another source")
        for e in spec.get("env") or []:
            if not (e.get("parameter") and e.get("name")):
                errors.append(f"{ident}: every env entry needs parameter and name")
        for e in spec.get("secretTargetRef") or []:
            if not (e.get("parameter") and e.get("name") and e.get("key")):
                errors.append(f"{ident}: every secretTargetRef needs parameter, name and key")
            elif e["name"] not in secrets or e["key"] not in secrets[e["name"]]:
                errors.append(f"{ident}: Secret {e['name']} key {e['key']} is not rendered")

    for rc in by_kind("RabbitmqCluster"):
        ident = f"RabbitmqCluster/{rc['metadata']['name']}"
        spec = rc.get("spec") or {}
        replicas = spec.get("replicas", 1)
        # Quorum queues need a majority: an odd number of at least 3 nodes.
        if not is_int(replicas) or replicas < 3 or replicas % 2 == 0:
            errors.append(f"{ident}: spec.replicas must be an odd number >= 3 for quorum queues")
        for key, kind_ in (("image", str), ("persistence", dict), ("resources", dict),
                           ("rabbitmq", dict), ("service", dict)):
            if key in spec and not isinstance(spec[key], kind_):
                errors.append(f"{ident}: spec.{key} must be a {kind_.__name__}")
        extra = dig(spec, "rabbitmq", "additionalConfig")
        if extra is not None:
            if not isinstance(extra, str):
                errors.append(f"{ident}: spec.rabbitmq.additionalConfig must be a string")
            else:
                for line in extra.splitlines():
                    if line.strip() and not line.strip().startswith("#") and "=" not in line:
                        errors.append(f"{ident}: additionalConfig line is not key = value: {line!r}")

    # A service given a RabbitMQ cluster must know every node, to move to
    # another when its node dies (amqp.urls), and all must agree on the
    # quorum queues' replica count (the broker refuses a redeclaration
    # with another).
    hookfleet_services = ("hookfleet-producer", "hookfleet-worker", "hookfleet-ledger")
    for rc in by_kind("RabbitmqCluster"):
        rc_name = rc["metadata"]["name"]
        replicas = dig(rc, "spec", "replicas", default=1)
        if not is_int(replicas):
            continue
        expected = [f"{rc_name}-server-{i}.{rc_name}-nodes" for i in range(replicas)]
        sizes = {}
        for dname in hookfleet_services:
            if dname not in deployments:
                continue
            c = (dig(deployments[dname], "spec", "template", "spec", "containers", default=[]) or [{}])[0]
            env = {e.get("name"): e.get("value") for e in c.get("env") or []}
            urls = env.get("HOOKFLEET__AMQP__URLS")
            if not urls:
                errors.append(f"Deployment/{dname}: RabbitmqCluster/{rc_name} has {replicas} nodes "
                              "but HOOKFLEET__AMQP__URLS is not set (the service could not move "
                              "to another node)")
                continue
            hosts = []
            for url in urls.split(","):
                if not re.match(r"^amqps?://", url.strip()):
                    errors.append(f"Deployment/{dname}: HOOKFLEET__AMQP__URLS entry {url!r} is not an amqp:// URL")
                    continue
                authority = url.strip().split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
                hosts.append(authority.rsplit(":", 1)[0])
            missing = [h for h in expected if h not in hosts]
            if missing:
                errors.append(f"Deployment/{dname}: HOOKFLEET__AMQP__URLS lacks node(s) "
                              f"{', '.join(missing)} of RabbitmqCluster/{rc_name} ({replicas} replicas)")
            size = env.get("HOOKFLEET__AMQP__QUORUM_GROUP_SIZE")
            sizes[dname] = size
            if size is not None and (not str(size).isdigit() or not 1 <= int(size) <= replicas):
                errors.append(f"Deployment/{dname}: HOOKFLEET__AMQP__QUORUM_GROUP_SIZE {size!r} "
                              f"must be a number from 1 to {replicas}")
        if len(set(sizes.values())) > 1:
            errors.append(f"the services disagree on HOOKFLEET__AMQP__QUORUM_GROUP_SIZE: {sizes}")

    for pg in by_kind("Cluster"):
        ident = f"Cluster/{pg['metadata']['name']}"
        spec = pg.get("spec") or {}
        if not is_int(spec.get("instances")) or spec["instances"] < 1:
            errors.append(f"{ident}: spec.instances (>= 1) is required")
        if not dig(spec, "storage", "size") and not dig(spec, "storage", "pvcTemplate"):
            errors.append(f"{ident}: spec.storage.size is required")
        initdb = dig(spec, "bootstrap", "initdb")
        if initdb is not None and not (initdb.get("database") and initdb.get("owner")):
            errors.append(f"{ident}: bootstrap.initdb needs database and owner")

    for hpa in by_kind("HorizontalPodAutoscaler"):
        target = dig(hpa, "spec", "scaleTargetRef", "name")
        if dig(hpa, "spec", "scaleTargetRef", "kind") == "Deployment":
            if target not in deployments:
                errors.append(f"HorizontalPodAutoscaler/{hpa['metadata']['name']}: "
                              f"scales Deployment {target}, which is not rendered")
            autoscaled.setdefault(target, []).append(f"HorizontalPodAutoscaler/{hpa['metadata']['name']}")
    for target, scalers in autoscaled.items():
        if len(scalers) > 1:
            errors.append(f"Deployment/{target} has several autoscalers: {', '.join(scalers)}")
        if "replicas" in dig(deployments, target, "spec", default={}):
            errors.append(f"Deployment/{target} sets spec.replicas but {scalers[0]} owns it")

    # 3. Wiring of the workloads.
    def config_value(container, key):
        for e in container.get("env") or []:
            if e.get("name") == key and "value" in e:
                return e["value"]
        for src in container.get("envFrom") or []:
            cm = dig(src, "configMapRef", "name")
            for o in by_kind("ConfigMap"):
                if o["metadata"]["name"] == cm and key in (o.get("data") or {}):
                    return o["data"][key]
        return None

    for (kind, oname), o in objs.items():
        spec = pod_spec(o)
        if spec is None:
            continue
        ident = f"{kind}/{oname}"
        containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
        for c in containers:
            cid = f"{ident} container {c.get('name')}"
            defined = set()
            for src in c.get("envFrom") or []:
                prefix = src.get("prefix", "")
                if "configMapRef" in src:
                    ref = src["configMapRef"]["name"]
                    if ref not in configmaps and not src["configMapRef"].get("optional"):
                        errors.append(f"{cid}: envFrom ConfigMap {ref} is not rendered")
                    defined |= {prefix + k for k in configmaps.get(ref, ())}
                if "secretRef" in src:
                    ref = src["secretRef"]["name"]
                    if ref not in secrets and not src["secretRef"].get("optional"):
                        errors.append(f"{cid}: envFrom Secret {ref} is not rendered")
                    defined |= {prefix + k for k in secrets.get(ref, ())}
            for e in c.get("env") or []:
                for kind_ref, table, label in (("secretKeyRef", secrets, "Secret"),
                                               ("configMapKeyRef", configmaps, "ConfigMap")):
                    ref = dig(e, "valueFrom", kind_ref)
                    if ref and not ref.get("optional"):
                        if ref.get("name") not in table:
                            errors.append(f"{cid}: env {e['name']} refers to {label} {ref.get('name')}, "
                                          "which is neither rendered nor made by a rendered operator resource")
                        elif ref.get("key") not in table[ref["name"]]:
                            errors.append(f"{cid}: env {e['name']}: {label} {ref['name']} has no key {ref.get('key')}")
                # $(VAR) expands only variables defined before it.
                for var in re.findall(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", str(e.get("value", ""))):
                    if var not in defined:
                        errors.append(f"{cid}: env {e['name']} uses $({var}), which is not defined before it")
                defined.add(e.get("name"))
            for vol in spec.get("volumes") or []:
                if "configMap" in vol and vol["configMap"].get("name") not in configmaps:
                    errors.append(f"{ident}: volume {vol['name']}: ConfigMap {vol['configMap'].get('name')} is not rendered")
                if "secret" in vol and vol["secret"].get("secretName") not in secrets:
                    errors.append(f"{ident}: volume {vol['name']}: Secret {vol['secret'].get('secretName')} is not rendered")

    app = {n: d for n, d in deployments.items() if n in ("hookfleet-producer", "hookfleet-worker", "hookfleet-ledger")}
    for missing in sorted({"hookfleet-producer", "hookfleet-worker", "hookfleet-ledger"} - set(app)):
        errors.append(f"Deployment/{missing} is not rendered")
    pdbs = by_kind("PodDisruptionBudget")
    services = by_kind("Service")
    for dname, d in app.items():
        ident = f"Deployment/{dname}"
        pspec = d["spec"]["template"]["spec"]
        labels = dig(d, "spec", "template", "metadata", "labels", default={})
        if not dig(pspec, "securityContext", "runAsNonRoot"):
            errors.append(f"{ident}: pod securityContext.runAsNonRoot must be true")
        grace = pspec.get("terminationGracePeriodSeconds", 30)
        for c in pspec["containers"]:
            cid = f"{ident} container {c['name']}"
            ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                got = dig(c, probe, "httpGet", "path")
                port = dig(c, probe, "httpGet", "port")
                if got != path:
                    errors.append(f"{cid}: {probe} must GET {path} (has {got})")
                elif port not in ports and port not in ports.values():
                    errors.append(f"{cid}: {probe} port {port} is not a container port")
                listen = config_value(c, "HOOKFLEET__LISTEN__PORT")
                if listen is not None and str(ports.get(port, port)) != str(listen):
                    errors.append(f"{cid}: {probe} port {port} is not HOOKFLEET__LISTEN__PORT {listen}")
            for res in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if not dig(c, "resources", res, r):
                        errors.append(f"{cid}: resources.{res}.{r} is required")
            if config_value(c, "HOOKFLEET__LISTEN__HOST") != "0.0.0.0":
                errors.append(f"{cid}: HOOKFLEET__LISTEN__HOST must be 0.0.0.0 in a pod")
            if str(config_value(c, "HOOKFLEET__DATABASE__MIGRATE_ON_START")).lower() != "false":
                errors.append(f"{cid}: HOOKFLEET__DATABASE__MIGRATE_ON_START must be false (the Job migrates)")
            if dname == "hookfleet-worker":
                timeout = int(config_value(c, "HOOKFLEET__DELIVERY__TIMEOUT_MS") or 15000)
                drain = int(config_value(c, "HOOKFLEET__DELIVERY__DRAIN_MS") or 20000)
                if grace * 1000 <= timeout + drain:
                    errors.append(f"{ident}: terminationGracePeriodSeconds {grace} must exceed "
                                  f"delivery timeout + drain ({(timeout + drain) / 1000:g} s)")
                if any("DATABASE__URL" in (e.get("name") or "") for e in c.get("env") or []):
                    errors.append(f"{cid}: workers must not get the database URL")
            image = c.get("image", "")
            if image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1]:
                errors.append(f"{cid}: image {image} is not pinned to a tag (set images: in the overlay)")
        if not any(set((dig(p, "spec", "selector", "matchLabels") or {}).items()) <= set(labels.items())
                   for p in pdbs):
            errors.append(f"{ident}: no PodDisruptionBudget selects its pods")
        if dname in ("hookfleet-producer", "hookfleet-ledger"):
            if not any(dig(s, "spec", "selector") and set(s["spec"]["selector"].items()) <= set(labels.items())
                       for s in services):
                errors.append(f"{ident}: no Service selects its pods")

    worker_labels = dig(app, "hookfleet-worker", "spec", "template", "metadata", "labels", default={})
    policies = [p for p in by_kind("NetworkPolicy")
                if set((dig(p, "spec", "podSelector", "matchLabels") or {}).items()) <= set(worker_labels.items())
                and "Egress" in (dig(p, "spec", "policyTypes") or [])]
    if worker_labels and not policies:
        errors.append("no NetworkPolicy restricts the workers' egress")
    for p in policies:
        ident = f"NetworkPolicy/{p['metadata']['name']}"
        egress = dig(p, "spec", "egress", default=[])
        broker = any(any(dig(to, "podSelector") for to in r.get("to") or [])
                     and any(pt.get("port") == 5672 for pt in r.get("ports") or []) for r in egress)
        dns = any(any(pt.get("port") == 53 for pt in r.get("ports") or []) for r in egress)
        internet = [b for r in egress for to in r.get("to") or []
                    for b in [to.get("ipBlock")] if b and b.get("cidr") == "0.0.0.0/0"]
        if not broker:
            errors.append(f"{ident}: no egress rule to the broker pods on 5672")
        if not dns:
            errors.append(f"{ident}: no egress rule for DNS (53)")
        if not internet:
            errors.append(f"{ident}: no egress rule to the internet (0.0.0.0/0)")
        for b in internet:
            missing = PRIVATE_V4 - set(b.get("except") or [])
            if missing:
                errors.append(f"{ident}: internet rule does not exclude {', '.join(sorted(missing))}")
        for r in egress:
            for to in r.get("to") or []:
                if to.get("namespaceSelector") is not None and not r.get("ports"):
                    errors.append(f"{ident}: an egress rule opens whole namespaces on every port")

    jobs = [j for j in by_kind("Job")
            if any("migrate" in (c.get("args") or []) + (c.get("command") or [])
                   for c in dig(j, "spec", "template", "spec", "containers", default=[]))]
    if not jobs:
        errors.append("no Job runs the database migrations (args: [migrate])")

    summary = (f"{len(objs)} objects: {n_core} validated against Kubernetes "
               f"{' and '.join(versions)} (strict), {n_custom} custom resources checked")
    return errors, summary


for name, path in overlays:
    errs, summary = check_overlay(name, path)
    report(f"overlay {name}", errs, summary)


# Dockerfile: the final stages the compose file and the docs build.
errors = []
stages = {}
users = {}
current = None
try:
    with open(os.path.join(root, "Dockerfile")) as f:
        for line in f:
            m = re.match(r"\s*FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
            if m:
                current = (m.group(2) or "").lower()
                stages[current] = m.group(1).lower()
                continue
            m = re.match(r"\s*USER\s+(\S+)", line, re.I)
            if m and current is not None:
                users[current] = m.group(1)
except OSError as e:
    errors.append(f"cannot read: {e}")


def stage_user(stage, seen=()):
    if stage in users:
        return users[stage]
    parent = stages.get(stage)
    if parent in stages and parent not in seen:
        return stage_user(parent, seen + (stage,))
    return None


for target in ("producer", "worker", "ledger"):
    if target not in stages:
        errors.append(f"no final stage named {target}")
    else:
        user = stage_user(target)
        if user is None or user.split(":")[0] in ("root", "0"):
            errors.append(f"stage {target} runs as root")
report("Dockerfile", errors, f"targets {', '.join(s for s in ('producer', 'worker', 'ledger') if s in stages)} run as non-root")


# infra/compose.yaml: parses, names the services, and hangs together.
errors = []
compose_path = os.path.join(root, "infra", "compose.yaml")
try:
    with open(compose_path) as f:
        compose = yaml.safe_load(f)
except (OSError, yaml.YAMLError) as e:
    compose = None
    errors.append(f"does not parse: {e}")
services = (compose or {}).get("services") if isinstance(compose, dict) else None
if compose is not None and not isinstance(services, dict):
    errors.append("has no services map")
    services = None
services = services or {}


def env_of(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def port_numbers(svc):
    out = set()
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            out.add(int(p.get("target", 0)))
        else:
            out.add(int(str(p).split("/")[0].split(":")[-1]))
    return out


if services:
    for required in ("rabbitmq", "postgres", "jaeger", "migrate", "producer", "ledger"):
        if required not in services:
            errors.append(f"no {required} service")
    workers = [n for n in services if n == "worker" or n.startswith("worker")]
    replicas = sum(int(dig(services[n], "deploy", "replicas", default=1)) for n in workers)
    if replicas < 2:
        errors.append(f"needs two workers (worker services or deploy.replicas: 2), has {replicas}")
    rmq, pg, jg = services.get("rabbitmq", {}), services.get("postgres", {}), services.get("jaeger", {})
    if rmq and (not str(rmq.get("image", "")).startswith("rabbitmq:3.13") or 5672 not in port_numbers(rmq)):
        errors.append("rabbitmq must use image rabbitmq:3.13 and publish 5672")
    if pg:
        if not str(pg.get("image", "")).startswith("postgres:16"):
            errors.append("postgres must use image postgres:16")
        for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
            if env_of(pg).get(k) != "hookfleet":
                errors.append(f"postgres: {k} must be hookfleet")
    if jg:
        if not str(jg.get("image", "")).startswith("jaegertracing/all-in-one"):
            errors.append("jaeger must use image jaegertracing/all-in-one")
        for port in (4317, 4318, 16686):
            if port not in port_numbers(jg):
                errors.append(f"jaeger must publish {port}")
    for n, svc in services.items():
        if not isinstance(svc, dict):
            errors.append(f"service {n} is not a map")
            continue
        if "build" in svc:
            build = svc["build"] if isinstance(svc["build"], dict) else {"context": svc["build"]}
            ctx = os.path.normpath(os.path.join(os.path.dirname(compose_path), build.get("context", ".")))
            dockerfile = os.path.join(ctx, build.get("dockerfile", "Dockerfile"))
            if os.path.realpath(dockerfile) != os.path.realpath(os.path.join(root, "Dockerfile")):
                errors.append(f"{n}: builds {dockerfile}, not the root Dockerfile")
            if build.get("target") not in stages or not build.get("target"):
                errors.append(f"{n}: build target {build.get('target')} is not a Dockerfile stage")
        elif "image" not in svc:
            errors.append(f"{n}: has neither image nor build")
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, cond in deps.items():
            condition = (cond or {}).get("condition", "service_started")
            if dep not in services:
                errors.append(f"{n}: depends on unknown service {dep}")
            elif condition not in ("service_started", "service_healthy", "service_completed_successfully"):
                errors.append(f"{n}: depends_on {dep} has unknown condition {condition}")
            elif condition == "service_healthy" and "healthcheck" not in services[dep]:
                errors.append(f"{n}: waits for {dep} to be healthy, which has no healthcheck")
        for k in env_of(svc):
            if k.startswith("HOOKFLEET") and not re.fullmatch(r"HOOKFLEET(__[A-Z0-9_]+?){2}|HOOKFLEET_CONFIG", k):
                errors.append(f"{n}: {k} is not HOOKFLEET__SECTION__KEY")
    for n in ("producer", "ledger", *workers):
        svc = services.get(n) or {}
        if svc and "healthcheck" not in svc:
            errors.append(f"{n}: needs a healthcheck")
        if svc and env_of(svc).get("HOOKFLEET__LISTEN__HOST") != "0.0.0.0":
            errors.append(f"{n}: HOOKFLEET__LISTEN__HOST must be 0.0.0.0 in a container")
    for n in ("producer", "ledger"):
        cond = dig(services, n, "depends_on", "migrate", "condition")
        if n in services and cond != "service_completed_successfully":
            errors.append(f"{n}: must wait for migrate to complete successfully")
    if "migrate" in services and "migrate" not in (services["migrate"].get("command") or []):
        errors.append("migrate: command must be [migrate]")
report("infra/compose.yaml", errors, f"{len(services)} services: {', '.join(services)}")


# infra/dashboards/hookfleet.json: the Grafana dashboard. It parses, every
# panel queries something, every query uses metrics the services export (and
# still emit), and every datasource is the ${datasource} template variable.
COUNTERS = {
    "hookfleet_events_ingested_total": {"via": {"http"}},
    "hookfleet_events_routed_total": {},
    "hookfleet_events_repeated_total": {},
    "hookfleet_events_parked_total": {"reason": {"bad_id", "bad_tenant", "unknown_tenant", "bad_type",
                                                 "wrong_content_type", "too_large", "not_json", "not_object"}},
    "hookfleet_attempts_total": {"result": {"succeeded", "retrying", "exhausted"}},
    "hookfleet_retries_scheduled_total": {},
    "hookfleet_deliveries_deferred_total": {},
    "hookfleet_tasks_dead_lettered_total": {"reason": {"exhausted", "gone", "malformed"}},
    "hookfleet_ledger_records_total": {"kind": {"event", "attempt"}},
    "hookfleet_ledger_write_retries_total": {},
}
GAUGES = {
    "hookfleet_deliveries_in_flight": {},
    "hookfleet_circuit_breakers_open": {},
}
HISTOGRAMS = {
    "hookfleet_fanout_size": {},
    "hookfleet_publish_confirm_seconds": {},
    "hookfleet_attempt_duration_seconds": {},
    "hookfleet_retry_delay_seconds": {},
    "hookfleet_ledger_batch_size": {},
    "hookfleet_ledger_write_lag_seconds": {},
}
SERIES = {}  # Prometheus series name -> (source metric, macro kind, its labels)
for names, kind_ in ((COUNTERS, "counter"), (GAUGES, "gauge")):
    for n, labels in names.items():
        SERIES[n] = (n, kind_, labels)
for n, labels in HISTOGRAMS.items():
    SERIES[n + "_bucket"] = (n, "histogram", {**labels, "le": None})
    SERIES[n + "_sum"] = (n, "histogram", labels)
    SERIES[n + "_count"] = (n, "histogram", labels)
TARGET_LABELS = {"job", "instance"}  # added by Prometheus at scrape time
PROMQL_FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes",
    "clamp", "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "delta",
    "deriv", "exp", "floor", "group", "histogram_quantile", "idelta", "increase", "irate",
    "label_join", "label_replace", "last_over_time", "ln", "log10", "log2", "max",
    "max_over_time", "min", "min_over_time", "predict_linear", "quantile", "quantile_over_time",
    "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "stddev",
    "stddev_over_time", "stdvar", "sum", "sum_over_time", "time", "timestamp", "topk", "vector",
}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                   "group_left", "group_right", "inf", "nan"}
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s",
                    "__range_ms", "__from", "__to", "__dashboard", "__org", "__user"}
DS_VARS = {"${datasource}", "$datasource"}


def check_expr(expr, variables):
    """The problems with one PromQL expression, as strings."""
    errs = []
    for m in re.finditer(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", expr):
        var = next(g for g in m.groups() if g)
        if var not in variables and var not in GRAFANA_BUILTINS:
            errs.append(f"uses ${var}, which is not a dashboard variable")
    # Strings out of the way (they may hold braces), kept for the matchers.
    strings = []

    def stash(m):
        strings.append(m.group(0)[1:-1])
        return f"\x00{len(strings) - 1}\x00"
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', stash, expr)
    s = re.sub(r"\$\{\w+(?::\w+)?\}|\$\w+|\[\[\w+\]\]", "", s)  # variables: [$__rate_interval]
    # Label matchers, each tied to the metric name in front of it (if any).
    selectors = []

    def take_selector(m):
        selectors.append((m.group(1), m.group(2)))
        return m.group(1) or ""
    s = re.sub(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^{}]*)\}", take_selector, s)
    s = re.sub(r"\[[^\[\]]*\]", "", s)  # ranges and subqueries
    groupings = []

    def take_grouping(m):
        groupings.extend(l.strip() for l in m.group(2).split(",") if l.strip())
        return " "
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)", take_grouping, s)
    s = re.sub(r"(?<![A-Za-z0-9_:.])\d[A-Za-z0-9_.]*", " ", s)  # numbers, durations

    used, unknown = [], []
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        tok = m.group(0)
        if re.match(r"\s*\(", s[m.end():]):
            if tok not in PROMQL_FUNCTIONS:
                errs.append(f"calls {tok}(), which is not a PromQL function")
        elif tok.lower() in PROMQL_KEYWORDS:
            continue
        elif tok not in SERIES:
            unknown.append(tok)
            errs.append(f"uses metric {tok}, which the services do not export"
                        + (" (histograms are queried as _bucket/_sum/_count)" if tok in HISTOGRAMS else ""))
        else:
            used.append(tok)
            base, kind_, _ = SERIES[tok]
            ranged = re.search(r"\b(rate|irate|increase|resets)\s*\(\s*$", s[:m.start()])
            if kind_ != "gauge" and not ranged:
                errs.append(f"uses the {kind_} {tok} without rate()/increase()")
            if kind_ == "gauge" and ranged:
                errs.append(f"takes {ranged.group(1)}() of the gauge {tok}")
    if unknown:
        return errs, used  # the label checks below would only add noise
    if not used:
        errs.append("queries no hookfleet metric")

    labels_in_expr = set(TARGET_LABELS)
    for tok in used:
        labels_in_expr |= set(SERIES[tok][2])
    for name, body in selectors:
        allowed = TARGET_LABELS | set(SERIES[name][2]) if name in SERIES else labels_in_expr | {"__name__"}
        for lm in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*\x00(\d+)\x00", body):
            label, op, value = lm.group(1), lm.group(2), strings[int(lm.group(3))]
            if label not in allowed:
                errs.append(f"matches on label {label}, which {name or 'no metric here'} does not have")
                continue
            values = SERIES[name][2].get(label) if name in SERIES else None
            if values and "$" not in value:
                wanted = [value] if op in ("=", "!=") else (
                    value.split("|") if re.fullmatch(r"[A-Za-z0-9_|]+", value) else [])
                for v in wanted:
                    if v not in values:
                        errs.append(f"{name}: {label}={v!r} is never exported "
                                    f"(one of {', '.join(sorted(values))})")
    for label in groupings:
        if label not in labels_in_expr:
            errs.append(f"groups by {label}, which none of its metrics has")
    if "histogram_quantile" in s:
        if not any(t.endswith("_bucket") for t in used) or "le" not in groupings:
            errs.append("histogram_quantile() needs a _bucket series aggregated by (le)")
    return errs, used


def datasource_refs(node, path="$"):
    """Every value of a `datasource` key in the dashboard, with its path."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "datasource":
                yield path + ".datasource", v
            yield from datasource_refs(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from datasource_refs(v, f"{path}[{i}]")


errors = []
n_panels = 0
dash_path = os.path.join(root, "infra", "dashboards", "hookfleet.json")
try:
    with open(dash_path) as f:
        dash = json.load(f)
except OSError as e:
    dash = None
    errors.append(f"cannot read infra/dashboards/hookfleet.json: {e}")
except ValueError as e:
    dash = None
    errors.append(f"infra/dashboards/hookfleet.json does not parse: {e}")
if dash is not None and not isinstance(dash, dict):
    errors.append("infra/dashboards/hookfleet.json is not a JSON object")
    dash = None
if dash is not None:
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        errors.append(f"schemaVersion {dash.get('schemaVersion')} is not a current Grafana's (>= 36)")
    if not dash.get("title") or not dash.get("uid"):
        errors.append("needs a title and a uid")
    variables = {v.get("name"): v for v in dig(dash, "templating", "list", default=[]) or []
                 if isinstance(v, dict)}
    ds_var = variables.get("datasource")
    if not ds_var or ds_var.get("type") != "datasource" or ds_var.get("query") != "prometheus":
        errors.append("needs a template variable `datasource` of type datasource, query prometheus")
    if "__inputs" in dash:
        errors.append("has __inputs: use the ${datasource} variable, not import-time inputs")
    for where, ref in datasource_refs(dash):
        if isinstance(ref, dict):
            ok_ref = ref.get("uid") in DS_VARS and ref.get("type") in ("prometheus", None)
        else:
            ok_ref = ref in DS_VARS
        if not ok_ref:
            errors.append(f"{where} is {json.dumps(ref)}, not the ${{datasource}} variable "
                          '({"type": "prometheus", "uid": "${datasource}"})')

    flat = []
    for p in dash.get("panels") or []:
        flat.append(p)
        if isinstance(p, dict):
            flat.extend(p.get("panels") or [])  # panels of collapsed rows
    seen_ids = set()
    metrics_used = set()
    for i, p in enumerate(flat):
        if not isinstance(p, dict):
            errors.append(f"panel #{i} is not an object")
            continue
        title = p.get("title")
        ident = f"panel {title!r}" if title else f"panel #{i} (id {p.get('id')})"
        if not isinstance(title, str) or not title.strip():
            errors.append(f"{ident} has no title")
        if p.get("id") in seen_ids:
            errors.append(f"{ident}: id {p.get('id')} is used twice")
        seen_ids.add(p.get("id"))
        gp = p.get("gridPos") or {}
        if not (all(is_int(gp.get(k)) for k in "hwxy") and gp["x"] + gp["w"] <= 24):
            errors.append(f"{ident}: gridPos needs integer h, w, x, y within 24 columns")
        if p.get("type") == "row":
            continue
        n_panels += 1
        targets = [t for t in p.get("targets") or [] if isinstance(t, dict)]
        if not any(isinstance(t.get("expr"), str) and t["expr"].strip() for t in targets):
            errors.append(f"{ident} has no target with a non-empty expr")
        for t in targets:
            expr = t.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                errors.append(f"{ident}: target {t.get('refId')} has an empty expr")
                continue
            errs, used = check_expr(expr, variables)
            metrics_used.update(SERIES[u][0:2] for u in used)
            errors.extend(f"{ident}: target {t.get('refId')}: {e}: {expr}" for e in errs)
    if not n_panels:
        errors.append("has no panels")

    # The metrics must still be emitted under those names, by the same kind
    # of macro: a renamed metric would otherwise leave a silently empty panel.
    sources = []
    for top in ("services", "shared"):
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for fn in files:
                if fn.endswith(".rs"):
                    with open(os.path.join(dirpath, fn), encoding="utf-8", errors="replace") as f:
                        sources.append(f.read())
    source = "\n".join(sources)
    for base, kind_ in sorted(metrics_used):
        if not re.search(r"\b%s!\(\s*\"%s\"" % (kind_, re.escape(base)), source):
            errors.append(f"the dashboard queries {base}, but no {kind_}!(\"{base}\", ...) "
                          "is left in services/ or shared/")
report("dashboard", errors, f"{n_panels} panels")

sys.exit(1 if failed else 0)
