# shellcheck shell=bash
# Shared by scripts/bench and scripts/chaos, which each run a tool
# (hookfleet-bench, hookfleet-chaos) that starts the fleet as processes:
# the run's id and log folder, the commit it measures, the tool's
# environment, running the tool so that a signal reaches the script at
# once, and what the script's cleanup does whatever happened.
#
# Sourced after scripts/lib/infra.sh. The caller sets BIN (the folder of
# the binaries) and OUT (the tool's output folder); fleet_run_prepare sets
# RUN_ID and PIDS, fleet_run sets TOOL_PID while the tool runs.

TOOL_PID=

# fleet_run_prepare PREFIX: a new RUN_ID (PREFIX_ and 8 hex digits), its
# log folder OUT/logs/RUN_ID (earlier runs' logs go; this run's stay for
# inspection), and PIDS, the empty file the tool lists its service
# processes in.
fleet_run_prepare() {
    local prefix=$1
    RUN_ID=${prefix}_$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
    mkdir -p "$OUT/logs"
    find "$OUT/logs" -mindepth 1 -maxdepth 1 -name "${prefix}_*" -exec rm -rf {} + 2>/dev/null || true
    mkdir -p "$OUT/logs/$RUN_ID"
    PIDS=$OUT/logs/$RUN_ID/pids
    : >"$PIDS"
}

# fleet_run_commit [--short] HEAD: the commit checked out (git rev-parse
# with these arguments), with -dirty when the worktree has changes;
# "unknown" outside git.
fleet_run_commit() {
    local commit
    commit=$(git rev-parse "$@" 2>/dev/null || echo unknown)
    if [ -n "$(git status --porcelain 2>/dev/null)" ]; then commit="$commit-dirty"; fi
    printf '%s\n' "$commit"
}

# fleet_run_export NAME: exports HOOKFLEET_NAME_RUN_ID, _DATABASE_URL (the
# admin database the tool creates its own from) and _AMQP_URL (the
# machine's broker), which the tool reads.
fleet_run_export() {
    local name=$1 database_url
    database_url=$(hf_database_url)
    export "HOOKFLEET_${name}_RUN_ID=$RUN_ID"
    export "HOOKFLEET_${name}_DATABASE_URL=$database_url"
    export "HOOKFLEET_${name}_AMQP_URL=amqp://guest:guest@$HF_AMQP_HOST:$HF_AMQP_PORT/%2f"
}

# fleet_run TOOL ARGS...: runs BIN/TOOL with ARGS in the background, so
# that a signal to the script is handled at once (its traps forward it),
# and waits; returns the tool's status.
fleet_run() {
    local tool=$1 status=0
    shift
    "$BIN/$tool" "$@" &
    TOOL_PID=$!
    wait "$TOOL_PID" || status=$?
    TOOL_PID=
    return "$status"
}

# fleet_run_stop_tool: SIGTERM to the tool if it still runs, and waits for
# it (it stops its own processes).
fleet_run_stop_tool() {
    if [ -n "$TOOL_PID" ] && kill -0 "$TOOL_PID" 2>/dev/null; then
        kill -TERM "$TOOL_PID" 2>/dev/null || true
        wait "$TOOL_PID" 2>/dev/null || true
    fi
}

# fleet_run_stop_leftovers: stops the service processes listed in PIDS
# that still run (the tool was killed before it could): SIGTERM, then
# SIGKILL after 10 s.
fleet_run_stop_leftovers() {
    local pid left=()
    while read -r pid; do
        [ -n "$pid" ] || continue
        # Only our processes: the pid may have been reused since.
        if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -q "$BIN/hookfleet-"; then
            kill -TERM "$pid" 2>/dev/null && left+=("$pid")
        fi
    done <"$PIDS"
    if [ ${#left[@]} -gt 0 ]; then
        log "stopping ${#left[@]} leftover service process(es)"
        for _ in $(seq 1 100); do
            local alive=0
            for pid in "${left[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
            [ "$alive" = 0 ] && break
            sleep 0.1
        done
        for pid in "${left[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    fi
}

# fleet_run_remove TOOL: removes the run's databases, queues and
# exchanges (`TOOL cleanup`, which reads the exported run id).
fleet_run_remove() {
    local tool=$1
    if [ -x "$BIN/$tool" ]; then
        "$BIN/$tool" cleanup >/dev/null 2>&1 \
            || printf 'warning: cleanup of %s incomplete\n' "$RUN_ID" >&2
    fi
}
