# shellcheck shell=bash
# ensure_py_tools: the Python tools the end-to-end tests run on what
# hookfleet publishes, installed from PyPI into a venv of their own
# (created once; a re-run only checks that the pinned versions are there):
#
#  - openapi-spec-validator: the event-type catalogue's OpenAPI document
#    must validate as OpenAPI 3.1;
#  - datamodel-code-generator: receivers generate typed models from that
#    document; the test generates them and uses them on a payload.
#
# Sourced by scripts/test (and usable alone:
# bash -c '. scripts/lib/py_tools.sh; ensure_py_tools'). Exports
# HOOKFLEET_PY_TOOLS, the venv's bin folder, which the tests read.

_PY_TOOLS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
_PY_TOOLS_REQ="openapi-spec-validator==0.9.0 datamodel-code-generator==0.89.0"

ensure_py_tools() {
    local venv=${HOOKFLEET_PY_TOOLS_VENV:-$_PY_TOOLS_ROOT/target/py-tools/venv}
    local py=$venv/bin/python
    if ! { [ -x "$py" ] \
           && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$_PY_TOOLS_REQ" ] \
           && "$py" -c 'import openapi_spec_validator, datamodel_code_generator' 2>/dev/null; }; then
        echo "py_tools: installing $_PY_TOOLS_REQ into ${venv#"$_PY_TOOLS_ROOT"/}" >&2
        rm -rf "$venv"
        mkdir -p "$(dirname "$venv")"
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            # Debian's python3 without ensurepip: python3-venv brings it.
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
                DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1
                rm -rf "$venv"
            fi
            python3 -m venv "$venv" >/dev/null 2>&1 || {
                echo "py_tools: cannot create a Python venv in $venv (apt-get install python3-venv)" >&2
                return 1
            }
        fi
        # shellcheck disable=SC2086 # the requirements are words
        "$py" -m pip install --quiet --disable-pip-version-check $_PY_TOOLS_REQ || {
            echo "py_tools: pip could not install $_PY_TOOLS_REQ from PyPI" >&2
            return 1
        }
        printf '%s\n' "$_PY_TOOLS_REQ" >"$venv/.requirements"
    fi
    export HOOKFLEET_PY_TOOLS="$venv/bin"
}
