#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for testing the Snakemake SLURM profile.
#
#   scripts/slurm_cluster.sh install   apt-get install slurmctld slurmd slurm-client munge (root; skips if present)
#   scripts/slurm_cluster.sh start     write the config, start munged + slurmctld + slurmd, wait for `idle` (root)
#   scripts/slurm_cluster.sh stop      stop the daemons this script started, by their recorded PIDs (root)
#   scripts/slurm_cluster.sh status    say whether the cluster runs; exit 0 if it does, 3 if not
#   scripts/slurm_cluster.sh env       print `export SLURM_CONF=...` (use: eval "$(scripts/slurm_cluster.sh env)")
#
# Everything lives in one state folder, $FLATNESS_SLURM_DIR (default /tmp/flatness-slurm): slurm.conf, the munge
# key and socket, spool folders, logs and PID files. /etc/slurm, /etc/munge and /run/munge stay untouched. Client
# commands find the config through SLURM_CONF=$FLATNESS_SLURM_DIR/slurm.conf, and, where that variable is not
# set, through a symlink at /run/slurm/conf/slurm.conf: the place where SLURM clients look last (the config cache
# of a "configless" slurmd). The symlink is needed because the Snakemake SLURM job-step executor removes every
# SLURM_* variable (SLURM_CONF too) before it calls `srun` inside a job. `start` refuses to run if
# /etc/slurm/slurm.conf exists (this machine has its own SLURM, which clients would use instead) or if
# /run/slurm/conf/slurm.conf is something else than that symlink; `stop` removes the symlink again.
#
# The config is hostname-independent: one node called `localhost` at 127.0.0.1 with CPUs=$(nproc) and most of
# /proc/meminfo's memory, one partition `debug`, no accounting (so `sacct` does not work: the Snakemake profile
# must poll with squeue, which needs MinJobAge >= 3x the plugin's first status-check delay). `start` clears
# the controller's saved job state, so each start is a fresh cluster.
#
# Environment: FLATNESS_SLURM_DIR, FLATNESS_SLURM_CTLD_PORT (6817), FLATNESS_SLURM_SLURMD_PORT (6818),
# FLATNESS_SLURM_START_TIMEOUT (seconds to wait for `idle`, 60).
set -euo pipefail

STATE_DIR=${FLATNESS_SLURM_DIR:-/tmp/flatness-slurm}
CTLD_PORT=${FLATNESS_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${FLATNESS_SLURM_SLURMD_PORT:-6818}
START_TIMEOUT=${FLATNESS_SLURM_START_TIMEOUT:-60}
PACKAGES=(slurmctld slurmd slurm-client munge)

CONF=$STATE_DIR/slurm.conf
MUNGE_DIR=$STATE_DIR/munge          # key, seed, log: owned by munge, private
MUNGE_RUN=$STATE_DIR/munge-run      # socket and PID file: readable by every user
MUNGE_SOCKET=$MUNGE_RUN/munge.socket.2
RUN_DIR=$STATE_DIR/run              # slurmctld / slurmd PID files
FALLBACK_CONF=/run/slurm/conf/slurm.conf  # where clients look when SLURM_CONF is unset and /etc has none
LOG_DIR=$STATE_DIR/log

# PID file and expected process name (as in /proc/<pid>/comm) of each daemon, in start order.
declare -A PIDFILE=(
    [munged]=$MUNGE_RUN/munged.pid
    [slurmctld]=$RUN_DIR/slurmctld.pid
    [slurmd]=$RUN_DIR/slurmd.pid
)
DAEMONS=(munged slurmctld slurmd)

die() {
    echo "slurm_cluster.sh: error: $*" >&2
    exit 1
}
log() { echo "slurm_cluster.sh: $*" >&2; }

need_root() {
    [[ $(id -u) -eq 0 ]] || die "'$1' must run as root (the daemons switch users and launch jobs); try: sudo $0 $1"
}

need_binaries() {
    local missing=()
    for b in munged slurmctld slurmd sinfo sbatch squeue scontrol; do
        command -v "$b" >/dev/null 2>&1 || missing+=("$b")
    done
    ((${#missing[@]} == 0)) || die "not installed: ${missing[*]}; run: $0 install"
}

# PID recorded for a daemon if that process is alive and really is that daemon, else nothing.
live_pid() {
    local name=$1 file=${PIDFILE[$1]} pid comm
    [[ -r $file ]] || return 0
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid && -r /proc/$pid/comm ]] || return 0
    comm=$(<"/proc/$pid/comm")
    # slurmd/slurmctld may show as e.g. "slurmctld" or "slurmctld-wlm"; a reused PID shows something else.
    [[ $comm == "$name"* ]] && echo "$pid"
    return 0
}

cluster_idle() {
    local state
    state=$(SLURM_CONF=$CONF timeout 5 sinfo -h -N -o %T 2>/dev/null | head -n1) || return 1
    [[ $state == idle || $state == mixed || $state == allocated ]]
}

show_logs() {
    local f
    for f in "$MUNGE_DIR/munged.log" "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
        [[ -e $f ]] || continue
        echo "----- last lines of $f -----" >&2
        tail -n 25 "$f" >&2 || true
    done
}

cmd_install() {
    need_root install
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        log "already installed: ${PACKAGES[*]}"
        return 0
    fi
    log "installing ${missing[*]} (apt-get)"
    local out
    out=$(mktemp)
    # apt-get update only when the package lists are missing (fresh containers ship none).
    if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >"$out" 2>&1 || {
            cat "$out" >&2
            die "apt-get update failed"
        }
    fi
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        >"$out" 2>&1; then
        # Stale package lists name package versions the mirror no longer has: refresh once and retry.
        log "apt-get install failed; running apt-get update and trying again"
        if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
            >"$out" 2>&1; then
            tail -n 30 "$out" >&2
            rm -f "$out"
            die "apt-get install ${missing[*]} failed (output above)"
        fi
    fi
    rm -f "$out"
    log "installed ${missing[*]}"
}

write_config() {
    local cpus mem_mb
    cpus=$(nproc)
    # 95% of MemTotal: a node that reports less memory than RealMemory is drained by slurmctld.
    mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.95}' /proc/meminfo)
    [[ $mem_mb -gt 0 ]] || die "could not read MemTotal from /proc/meminfo"

    cat >"$CONF.tmp" <<EOF
# Written by scripts/slurm_cluster.sh: a single-node test cluster. Do not edit; 'start' rewrites it.
ClusterName=flatness
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE_DIR/spool/ctld
SlurmdSpoolDir=$STATE_DIR/spool/d
SlurmctldPidFile=${PIDFILE[slurmctld]}
SlurmdPidFile=${PIDFILE[slurmd]}
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Schedule batch jobs at once, not up to 3 s later (the default): tests wait on many tiny jobs.
SchedulerParameters=batch_sched_delay=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
# squeue keeps finished jobs visible this long; the Snakemake plugin polls with squeue and needs >= 120 s.
MinJobAge=300
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
# Reject at submission what the node can never run (e.g. more CPUs than it has), instead of queueing it forever.
EnforcePartLimits=ALL
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

prepare_dirs() {
    install -d -m 0755 "$STATE_DIR" "$LOG_DIR"
    install -d -m 0700 -o munge -g munge "$MUNGE_DIR"
    install -d -m 0755 -o munge -g munge "$MUNGE_RUN"
    install -d -m 0755 -o slurm -g slurm "$RUN_DIR" "$STATE_DIR/spool" "$STATE_DIR/spool/ctld"
    install -d -m 0755 "$STATE_DIR/spool/d"
    chown slurm:slurm "$LOG_DIR"
    if [[ ! -s $MUNGE_DIR/munge.key ]]; then
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$MUNGE_DIR/munge.key" --force 2>/dev/null ||
                dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
        else
            dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
        fi
        chown munge:munge "$MUNGE_DIR/munge.key"
        chmod 0600 "$MUNGE_DIR/munge.key"
    fi
}

# A failed start: show the daemons' logs, stop what did start, and exit with the reason.
fail_start() {
    show_logs
    stop_daemons quiet
    unlink_fallback_conf
    die "$* (daemon logs above; state folder $STATE_DIR)"
}

# Wait until a daemon's PID file names a live process of that name.
wait_pidfile() {
    local name=$1 deadline=$((SECONDS + 15))
    while ((SECONDS < deadline)); do
        [[ -n $(live_pid "$name") ]] && return 0
        sleep 0.2
    done
    fail_start "$name did not start (no live process behind ${PIDFILE[$name]})"
}

all_running() {
    local d
    for d in "${DAEMONS[@]}"; do
        [[ -n $(live_pid "$d") ]] || return 1
    done
}

# Check that SLURM clients without SLURM_CONF will find our config and no other.
check_fallback_conf() {
    if [[ -e /etc/slurm/slurm.conf && ! /etc/slurm/slurm.conf -ef $CONF ]]; then
        die "/etc/slurm/slurm.conf exists: this machine has its own SLURM configuration, which srun inside jobs \
would use instead of $CONF. Use that cluster, or move the file away to run this test cluster."
    fi
    if [[ -e $FALLBACK_CONF || -L $FALLBACK_CONF ]] && [[ $(readlink "$FALLBACK_CONF") != "$CONF" ]]; then
        die "$FALLBACK_CONF exists and is not a link to $CONF (another configless slurmd or test cluster?); \
stop that one first"
    fi
}

link_fallback_conf() {
    install -d -m 0755 "$(dirname "$FALLBACK_CONF")"
    ln -sfn "$CONF" "$FALLBACK_CONF"
}

unlink_fallback_conf() {
    if [[ -L $FALLBACK_CONF && $(readlink "$FALLBACK_CONF") == "$CONF" ]]; then
        rm -f "$FALLBACK_CONF"
        rmdir "$(dirname "$FALLBACK_CONF")" "$(dirname "$(dirname "$FALLBACK_CONF")")" 2>/dev/null || true
    fi
}

cmd_start() {
    need_root start
    need_binaries
    check_fallback_conf
    if all_running && cluster_idle; then
        link_fallback_conf
        log "already running (SLURM_CONF=$CONF)"
        return 0
    fi
    # A partly running cluster (one daemon died) is restarted from scratch.
    stop_daemons quiet
    local t0=$SECONDS
    prepare_dirs
    write_config
    link_fallback_conf
    rm -f "$LOG_DIR"/*.log "$MUNGE_DIR/munged.log"

    # munged refuses to run as root and checks the permissions of every folder above its files; --force
    # accepts a sticky, world-writable /tmp above the state folder.
    runuser -u munge -- munged --force --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" \
        --pid-file="${PIDFILE[munged]}" --log-file="$MUNGE_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed" || fail_start "munged failed to start"
    wait_pidfile munged
    # -c: start with a clean job state; -i: ignore state files from an older cluster in the same folder.
    SLURM_CONF=$CONF slurmctld -f "$CONF" -c -i || fail_start "slurmctld failed to start"
    wait_pidfile slurmctld
    SLURM_CONF=$CONF slurmd -f "$CONF" -N localhost || fail_start "slurmd failed to start"
    wait_pidfile slurmd

    local deadline=$((SECONDS + START_TIMEOUT)) d
    until cluster_idle; do
        for d in "${DAEMONS[@]}"; do
            [[ -n $(live_pid "$d") ]] || fail_start "$d exited during start-up"
        done
        if ((SECONDS >= deadline)); then
            echo "sinfo says: $(SLURM_CONF=$CONF sinfo -h -N -o '%N %T %E' 2>&1 || true)" >&2
            fail_start "the node did not become idle within ${START_TIMEOUT}s"
        fi
        sleep 0.5
    done
    log "cluster up in $((SECONDS - t0)) s: $(nproc) CPUs, partition debug; export SLURM_CONF=$CONF"
}

# Stop the recorded daemons in reverse start order: SIGTERM, wait up to 15 s, then SIGKILL.
stop_daemons() {
    local quiet=${1:-} i name pid deadline stopped=0
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        name=${DAEMONS[$i]}
        pid=$(live_pid "$name")
        [[ -n $pid ]] || continue
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 15))
        while [[ -e /proc/$pid ]] && ((SECONDS < deadline)); do sleep 0.2; done
        if [[ -e /proc/$pid ]]; then
            log "$name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
        rm -f "${PIDFILE[$name]}"
        [[ -n $quiet ]] || log "stopped $name (pid $pid)"
        stopped=$((stopped + 1))
    done
    [[ -n $quiet || $stopped -gt 0 ]] || log "nothing to stop (no live daemon recorded in $STATE_DIR)"
    return 0
}

cmd_stop() {
    need_root stop
    stop_daemons
    unlink_fallback_conf
}

cmd_status() {
    local d pid up=0
    for d in "${DAEMONS[@]}"; do
        pid=$(live_pid "$d")
        if [[ -n $pid ]]; then
            echo "$d: running (pid $pid)"
            up=$((up + 1))
        else
            echo "$d: not running"
        fi
    done
    if ((up == ${#DAEMONS[@]})) && cluster_idle; then
        echo "node: $(SLURM_CONF=$CONF sinfo -h -N -o '%N %T, %c CPUs, %m MB')"
        echo "SLURM_CONF=$CONF"
        return 0
    fi
    return 3
}

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
}

case ${1:-} in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
esac
