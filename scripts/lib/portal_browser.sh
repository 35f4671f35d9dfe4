# shellcheck shell=bash
# ensure_portal_browser: what the end-to-end test portal_browser drives the
# web portal with: Debian's chromium (apt) and the pinned playwright-core
# (npm, tests/portal/package-lock.json) under Node. Installs what is
# missing (a re-run only checks), then prints the browser's path, which
# scripts/test hands to the test through HOOKFLEET_PORTAL_CHROMIUM.
# Needs scripts/lib/infra.sh (apt_install) sourced first.

_PORTAL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

ensure_portal_browser() (
    set -uo pipefail
    local dir=$_PORTAL_ROOT/tests/portal browser
    if ! command -v chromium >/dev/null; then
        echo "portal_browser: installing chromium from the OS packages" >&2
        apt_install chromium >&2 || { echo "portal_browser: could not install chromium" >&2; exit 1; }
    fi
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "portal_browser: installing nodejs and npm from the OS packages" >&2
        apt_install nodejs npm >&2 || { echo "portal_browser: could not install nodejs and npm" >&2; exit 1; }
    fi
    # npm ci again only when the lock file changed since the last install.
    if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed" 2>/dev/null; then
        echo "portal_browser: npm ci in tests/portal (playwright-core, pinned)" >&2
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2) \
            || { echo "portal_browser: npm ci failed" >&2; exit 1; }
        cp "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed"
    fi
    browser=$(command -v chromium)
    echo "$browser"
)
