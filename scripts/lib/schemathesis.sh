# shellcheck shell=bash
# ensure_schemathesis: puts the pinned schemathesis (PyPI) into the tools
# venv that validate_infra.sh also uses (target/infra-tools/venv), and
# prints the path of its `st` command. Sourced by scripts/test, which hands
# that path to the end-to-end test `api_document::schemathesis_finds_no_failure`
# through HOOKFLEET_SCHEMATHESIS.

_SCHEMATHESIS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
_SCHEMATHESIS_REQ="schemathesis==4.32.5"

ensure_schemathesis() (
    set -uo pipefail
    local tools=${VALIDATE_INFRA_TOOLS:-$_SCHEMATHESIS_ROOT/target/infra-tools}
    local venv=$tools/venv
    local st=$venv/bin/st
    if [ -x "$st" ] && "$venv/bin/python" -m pip show schemathesis 2>/dev/null \
        | grep -qx "Version: ${_SCHEMATHESIS_REQ#*==}"; then
        echo "$st"
        return 0
    fi
    mkdir -p "$tools" || { echo "ensure_schemathesis: cannot create $tools" >&2; exit 1; }
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" >/dev/null 2>&1 \
            || { echo "ensure_schemathesis: cannot create a venv in $venv (apt-get install python3-venv)" >&2; exit 1; }
    fi
    echo "ensure_schemathesis: installing $_SCHEMATHESIS_REQ into ${venv#"$_SCHEMATHESIS_ROOT"/}" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$_SCHEMATHESIS_REQ" >&2 \
        || { echo "ensure_schemathesis: pip could not install $_SCHEMATHESIS_REQ" >&2; exit 1; }
    echo "$st"
)
