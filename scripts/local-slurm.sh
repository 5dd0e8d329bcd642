#!/usr/bin/env bash
# local-slurm.sh - a real single-node SLURM cluster on localhost, for tests and CI.
#
# Usage (as root, Debian 12):
#   scripts/local-slurm.sh install           install the Debian packages (quiet, idempotent)
#   scripts/local-slurm.sh up STATE_DIR      start munged, mariadb, slurmdbd, slurmctld, slurmd;
#                                            the last stdout line is `export SLURM_CONF=...`
#   scripts/local-slurm.sh status STATE_DIR  exit 0 if that cluster is up and healthy
#   scripts/local-slurm.sh down STATE_DIR    cancel all jobs, stop exactly the daemons `up` started
#
# Typical use:
#   scripts/local-slurm.sh install
#   eval "$(scripts/local-slurm.sh up /tmp/slurm-test)"     # or: . /tmp/slurm-test/env.sh
#   sbatch --wrap 'echo hi'; sacct -X
#   scripts/local-slurm.sh down /tmp/slurm-test
#
# Everything (configs, logs, PID files, spool, database) lives under STATE_DIR, except the munge
# socket: slurmdbd always talks to /run/munge/munge.socket.2, so only one cluster per machine.
# Progress goes to stderr; stdout carries only the export line. Daemon ports are picked free.
# Every daemon is started with LOCAL_SLURM_STATE_DIR=STATE_DIR in its environment; `down` only
# signals a recorded PID whose environment carries that marker, so it never kills a stranger.

set -euo pipefail

readonly PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server-core mariadb-client-core)
readonly MUNGE_SOCKET=/run/munge/munge.socket.2
readonly MUNGE_OWNER_FILE=/run/munge/local-slurm.owner
readonly LOCK_FILE=/run/lock/local-slurm.lock
readonly CLUSTER=anlab
readonly PARTITION=debug
# A second partition on the same node with a 5-minute MaxTime, as real clusters cap theirs: tests of limits use it.
readonly SHORT_PARTITION=short
# Start order; `down` stops them in reverse.
readonly DAEMONS=(munged mysqld slurmdbd slurmctld slurmd)

log() { echo "local-slurm: $*" >&2; }

# die MESSAGE [LOGFILE...]: explain the failure and show the end of the relevant logs.
die() {
    local msg=$1 f
    shift
    log "ERROR: $msg"
    for f in "$@"; do
        if [[ -s $f ]]; then
            echo "----- last lines of $f -----" >&2
            tail -n 25 "$f" >&2
        fi
    done
    exit 1
}

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and runs the daemons as root)"
}

# ---------------------------------------------------------------------------------------------
# install

missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || echo "$p"
    done
}

cmd_install() {
    require_root
    local missing
    mapfile -t missing < <(missing_packages)
    [[ ${#missing[@]} -eq 0 ]] && { log "packages already installed"; return 0; }

    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Package scripts must not start system services (they would take the default munge socket
    # and ports): a policy-rc.d that answers 101 forbids it. Docker images usually ship one.
    local own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local apt_log
    apt_log=$(mktemp /tmp/local-slurm-apt.XXXXXX)
    local apt_install=(apt-get install -y -q --no-install-recommends "${missing[@]}")
    # Try with the current package lists first; update them only if that fails (stale or absent).
    if ! "${apt_install[@]}" >"$apt_log" 2>&1; then
        log "package lists look stale: apt-get update"
        if ! { apt-get update -q && "${apt_install[@]}"; } >>"$apt_log" 2>&1; then
            [[ $own_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
            die "package installation failed" "$apt_log"
        fi
    fi
    [[ $own_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
    rm -f "$apt_log"
    log "packages installed"
}

# ---------------------------------------------------------------------------------------------
# paths and small helpers (all take the absolute state dir in $STATE)

set_paths() {
    [[ -n ${1:-} ]] || usage
    [[ $1 != *[[:space:]]* ]] || die "STATE_DIR must not contain whitespace (slurm.conf cannot quote it)"
    mkdir -p "$1"
    STATE=$(cd "$1" && pwd -P)
    ETC=$STATE/etc
    RUN=$STATE/run
    LOGS=$STATE/log
    SLURM_CONF_FILE=$ETC/slurm.conf
    DBD_CONF_FILE=$ETC/slurmdbd.conf
    MYSQL_DATA=$STATE/mysql/data
    MYSQL_SOCKET=$RUN/mysqld.sock
    export SLURM_CONF=$SLURM_CONF_FILE
    export LOCAL_SLURM_STATE_DIR=$STATE
}

pid_file() { echo "$RUN/$1.pid"; }
log_file() { echo "$LOGS/$1.log"; }

# Print the recorded PID of daemon $1 if that process is alive and was started for this state dir.
our_pid() {
    local f pid
    f=$(pid_file "$1")
    [[ -r $f ]] || return 1
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    # A zombie or a recycled PID has no (or another) marker in its environment.
    tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF "LOCAL_SLURM_STATE_DIR=$STATE" || return 1
    echo "$pid"
}

# A TCP port on 127.0.0.1 that nothing listens on.
free_port() {
    local port i
    for i in $(seq 1 200); do
        port=$((20000 + RANDOM % 30000))
        if ! ss -Hltn "sport = :$port" | grep -q .; then
            echo "$port"
            return 0
        fi
    done
    die "found no free TCP port"
}

# wait_until SECONDS WHAT DAEMON CMD...: poll CMD until it succeeds; fail early if DAEMON died,
# and on failure show the end of that daemon's logs.
wait_until() {
    local secs=$1 what=$2 daemon=$3
    shift 3
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        our_pid "$daemon" >/dev/null \
            || die "$daemon exited while waiting for $what" "$(log_file "$daemon")" "$LOGS/$daemon.console.log"
        ((SECONDS < deadline)) \
            || die "timed out after ${secs}s waiting for $what" "$(log_file "$daemon")" "$LOGS/$daemon.console.log"
        sleep 0.2
    done
}

# start_daemon NAME CMD...: run CMD in the foreground mode of the daemon, detached from our
# session and our stdio (a caller capturing our stdout must not wait for the daemons) and without
# the lock's fd 9 (a daemon holding it would block every later call), and record its PID.
start_daemon() {
    local name=$1
    shift
    local out=$LOGS/$name.console.log
    setsid "$@" </dev/null >>"$out" 2>&1 9>&- &
    local pid=$!
    echo "$pid" >"$(pid_file "$name")"
    sleep 0.1
    our_pid "$name" >/dev/null || die "$name exited at start" "$out" "$(log_file "$name")"
}

# Slurm client calls with a bound, so a sick daemon makes `status` fail instead of hang.
q() { timeout 15 "$@"; }

node_name() { hostname -s; }

# ---------------------------------------------------------------------------------------------
# health

node_ready() {
    local st
    st=$(q sinfo -h -N -n "$(node_name)" -p "$PARTITION" -o %T 2>/dev/null) || return 1
    [[ $st =~ ^(idle|mixed|allocated|completing)$ ]]
}

sacct_answers() {
    local err
    err=$(q sacct -n -X -a -S now-1minutes -o JobID 2>&1 >/dev/null) || return 1
    [[ -z $err ]]
}

healthy() {
    local d
    for d in "${DAEMONS[@]}"; do
        our_pid "$d" >/dev/null || return 1
    done
    q scontrol ping 2>/dev/null | grep -q 'is UP' || return 1
    node_ready && sacct_answers
}

cmd_status() {
    [[ -d ${1:-} ]] || { log "no state dir ${1:-}"; return 1; }
    set_paths "$1"
    if healthy; then
        log "cluster at $STATE is up"
        return 0
    fi
    log "cluster at $STATE is not up (or not healthy)"
    return 1
}

# ---------------------------------------------------------------------------------------------
# configuration

write_munge_key() {
    [[ -s $ETC/munge.key ]] || head -c 1024 /dev/urandom >"$ETC/munge.key"
    # munged insists: owned by the user that runs it, readable by nobody else.
    chown root:root "$ETC/munge.key"
    chmod 0400 "$ETC/munge.key"
}

write_slurm_conf() {
    local ctld_port=$1 slurmd_port=$2 dbd_port=$3 node hw first_job_id real_mem cpus
    node=$(node_name)
    # Hardware as slurmd itself sees it; keep everything after NodeName=... on the first line.
    hw=$(slurmd -C 2>&1 | head -n 1 | sed -E 's/^NodeName=[^ ]+ //') || die "slurmd -C failed: $hw"
    [[ $hw == *CPUs=* ]] || die "unexpected output of slurmd -C: $hw"
    cpus=$(sed -E 's/.*CPUs=([0-9]+).*/\1/' <<<"$hw")
    real_mem=$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$hw")
    # A wiped state dir would restart job ids at 1 and collide with old outputs keyed by job id:
    # start from ten ids per second of wall time (wraps after ~69 days, below MaxJobId).
    first_job_id=$(( ($(date +%s) % 6000000) * 10 + 1000 ))

    cat >"$SLURM_CONF_FILE" <<EOF
# Generated by local-slurm.sh for a single-node test cluster. Do not edit: \`up\` rewrites it.
ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Short credential lifetime: a requeued job otherwise waits up to 120 s to start again.
AuthInfo=cred_expire=10
MpiDefault=none
# No mail on a test node; the default /bin/mail is absent and slurmctld logs an error.
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
StateSaveLocation=$STATE/spool/slurmctld
SlurmdSpoolDir=$STATE/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.daemon.pid
SlurmdPidFile=$RUN/slurmd.daemon.pid
SlurmctldLogFile=$(log_file slurmctld)
SlurmdLogFile=$(log_file slurmd)
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=120
Waittime=0
JobRequeue=1
FirstJobId=$first_job_id
PreemptType=preempt/none
SchedulerType=sched/backfill
# Defaults start array tasks two at a time every 3 s; tests want them at once.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# Jobs without --mem get a CPU's share of memory instead of the whole node, so they can share it.
DefMemPerCPU=$(( real_mem / cpus ))
# submitit reads job states from sacct only: accounting through slurmdbd.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$dbd_port
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
NodeName=$node NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
PartitionName=$SHORT_PARTITION Nodes=$node Default=NO MaxTime=5 State=UP
EOF
}

write_slurmdbd_conf() {
    local dbd_port=$1 mysql_port=$2 db_pass=$3
    # slurmdbd reads slurmdbd.conf from the directory of SLURM_CONF and refuses it unless 0600.
    (
        umask 077
        cat >"$DBD_CONF_FILE" <<EOF
# Generated by local-slurm.sh. Do not edit: \`up\` rewrites it.
AuthType=auth/munge
DbdHost=localhost
DbdPort=$dbd_port
SlurmUser=root
PidFile=$RUN/slurmdbd.daemon.pid
LogFile=$(log_file slurmdbd)
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$mysql_port
StorageUser=slurm
StoragePass=$db_pass
StorageLoc=slurm_acct_db
EOF
    )
    chmod 0600 "$DBD_CONF_FILE"
}

# ---------------------------------------------------------------------------------------------
# daemons

munge_works() { munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET" >/dev/null; }

start_munged() {
    if munge_works 2>/dev/null; then
        # The socket path is fixed, so a second munged cannot run. If it belongs to another
        # local-slurm cluster, that cluster's `down` would pull it from under us: refuse.
        local owner
        owner=$(cat "$MUNGE_OWNER_FILE" 2>/dev/null || true)
        if [[ -n $owner && -d $owner ]]; then
            die "munged at $MUNGE_SOCKET belongs to the cluster in $owner; run: $0 down $owner"
        elif [[ -n $owner ]]; then
            die "munged at $MUNGE_SOCKET belongs to a cluster whose state dir $owner was deleted" \
                "without \`down\`; stop its daemons by hand (ps aux | grep $owner)"
        fi
        die "a munged not started by local-slurm already serves $MUNGE_SOCKET; stop it first"
    fi
    # munged refuses a socket directory that others can write to.
    mkdir -p "$(dirname "$MUNGE_SOCKET")"
    chmod 755 "$(dirname "$MUNGE_SOCKET")"
    start_daemon munged munged --foreground --force \
        --socket="$MUNGE_SOCKET" \
        --key-file="$ETC/munge.key" \
        --pid-file="$RUN/munged.daemon.pid" \
        --log-file="$(log_file munged)" \
        --seed-file="$STATE/munge/munged.seed"
    wait_until 15 "munged to answer" munged munge_works
    echo "$STATE" >"$MUNGE_OWNER_FILE"
}

mysql_cli() { mariadb --no-defaults --protocol=socket --socket="$MYSQL_SOCKET" -uroot "$@"; }

start_mysqld() {
    local port=$1 db_pass=$2
    if [[ ! -d $MYSQL_DATA/mysql ]]; then
        mkdir -p "$MYSQL_DATA"
        mariadb-install-db --no-defaults --user=root --datadir="$MYSQL_DATA" \
            --auth-root-authentication-method=normal --skip-test-db \
            >"$LOGS/mariadb-install-db.log" 2>&1 \
            || die "mariadb-install-db failed" "$LOGS/mariadb-install-db.log"
    fi
    # Test database: no durability needed, so skip the fsync per commit.
    start_daemon mysqld mariadbd --no-defaults --user=root \
        --datadir="$MYSQL_DATA" \
        --socket="$MYSQL_SOCKET" \
        --bind-address=127.0.0.1 --port="$port" \
        --pid-file="$RUN/mysqld.daemon.pid" \
        --log-error="$(log_file mysqld)" \
        --skip-name-resolve \
        --innodb-flush-log-at-trx-commit=2 \
        --innodb-buffer-pool-size=64M
    wait_until 30 "mariadb to accept connections" mysqld mysql_cli -e 'SELECT 1'
    # slurmdbd connects over TCP from 127.0.0.1 (a host of localhost would pick some other socket).
    mysql_cli -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1';
                  ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$db_pass';
                  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" \
        >>"$LOGS/mysql-setup.log" 2>&1 || die "could not create the slurm database user" "$LOGS/mysql-setup.log"
}

cluster_registered() {
    q sacctmgr -n -P show cluster format=Cluster 2>/dev/null | grep -qx "$CLUSTER"
}

start_slurmdbd() {
    start_daemon slurmdbd slurmdbd -D
    # The first start creates the tables; registering the cluster before slurmctld starts makes
    # slurmctld send its jobs to accounting from the first one on.
    local deadline=$((SECONDS + 30))
    until cluster_registered; do
        q sacctmgr -i add cluster "$CLUSTER" >>"$LOGS/sacctmgr.log" 2>&1 || true
        ((SECONDS < deadline)) || die "slurmdbd did not come up or refused the cluster" \
            "$(log_file slurmdbd)" "$LOGS/sacctmgr.log"
        our_pid slurmdbd >/dev/null || die "slurmdbd exited" "$(log_file slurmdbd)" "$LOGS/slurmdbd.console.log"
        sleep 0.3
    done
}

start_slurmctld() {
    start_daemon slurmctld slurmctld -D -f "$SLURM_CONF_FILE"
    wait_until 30 "slurmctld to answer" slurmctld \
        bash -c 'timeout 5 scontrol ping | grep -q "is UP"'
}

start_slurmd() {
    start_daemon slurmd slurmd -D -f "$SLURM_CONF_FILE" -N "$(node_name)"
    wait_until 30 "node $(node_name) to become idle" slurmd node_ready
}

# ---------------------------------------------------------------------------------------------
# up / down

print_env() {
    local line="export SLURM_CONF=$SLURM_CONF_FILE"
    echo "$line" >"$STATE/env.sh"
    echo "$line"
}

# stop_daemon NAME: SIGTERM the recorded PID (only if it is ours), then SIGKILL after a grace time.
stop_daemon() {
    local name=$1 pid deadline
    pid=$(our_pid "$name") || { rm -f "$(pid_file "$name")"; return 0; }
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 30))
    while our_pid "$name" >/dev/null; do
        if ((SECONDS >= deadline)); then
            log "$name (pid $pid) ignored SIGTERM for 30 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.1
    done
    rm -f "$(pid_file "$name")"
}

stop_all_daemons() {
    local i
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        stop_daemon "${DAEMONS[i]}"
    done
    if [[ $(cat "$MUNGE_OWNER_FILE" 2>/dev/null || true) == "$STATE" ]]; then
        rm -f "$MUNGE_OWNER_FILE"
    fi
}

# Stopping slurmd leaves running jobs behind: cancel them and wait until the controller forgets them.
cancel_all_jobs() {
    our_pid slurmctld >/dev/null || return 0
    local jobs deadline
    jobs=$(q squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ') || return 0
    [[ -n ${jobs// /} ]] || return 0
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086  # one argument per job id
    q scancel $jobs 2>/dev/null || true
    deadline=$((SECONDS + 30))
    # squeue lists pending, running and completing jobs by default: wait until none is left.
    while [[ -n $(q squeue -h -o %A 2>/dev/null) ]] && ((SECONDS < deadline)); do
        sleep 0.3
    done
}

take_lock() {
    mkdir -p "$(dirname "$LOCK_FILE")"
    exec 9>"$LOCK_FILE"
    flock -w 180 9 || die "another local-slurm.sh holds $LOCK_FILE"
}

stop_after_failed_up() {
    [[ $1 -eq 0 ]] && return 0
    log "up failed: stopping the daemons it started"
    stop_all_daemons
}

cmd_up() {
    require_root
    set_paths "${1:-}"
    take_lock
    if healthy; then
        log "cluster at $STATE is already up"
        print_env
        return 0
    fi
    [[ -n $(missing_packages) ]] && die "packages missing; run: $0 install"

    # A half-started or half-dead cluster from this state dir: restart it cleanly.
    cancel_all_jobs
    stop_all_daemons

    # If a step fails, stop what this call started (the logs stay for diagnosis).
    trap 'stop_after_failed_up $?' EXIT

    local start=$SECONDS
    mkdir -p "$ETC" "$RUN" "$LOGS" "$STATE/munge" "$STATE/spool/slurmctld" "$STATE/spool/slurmd" "$STATE/mysql"
    chmod 700 "$STATE/munge"
    # The database password is made once and kept, since the database itself is kept.
    local pass_file=$STATE/mysql/slurm.pass
    [[ -s $pass_file ]] || (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$pass_file")
    local db_pass mysql_port dbd_port ctld_port slurmd_port
    db_pass=$(<"$pass_file")
    mysql_port=$(free_port)
    dbd_port=$(free_port)
    ctld_port=$(free_port)
    slurmd_port=$(free_port)
    [[ $(printf '%s\n' "$mysql_port" "$dbd_port" "$ctld_port" "$slurmd_port" | sort -u | wc -l) -eq 4 ]] \
        || die "port picking collided; run up again"

    write_munge_key
    write_slurm_conf "$ctld_port" "$slurmd_port" "$dbd_port"
    write_slurmdbd_conf "$dbd_port" "$mysql_port" "$db_pass"

    log "starting munged";   start_munged
    log "starting mariadb";  start_mysqld "$mysql_port" "$db_pass"
    log "starting slurmdbd"; start_slurmdbd
    log "starting slurmctld"; start_slurmctld
    log "starting slurmd";   start_slurmd
    wait_until 20 "sacct to answer" slurmdbd sacct_answers
    healthy || die "cluster started but is not healthy" "$(log_file slurmctld)" "$(log_file slurmd)"
    trap - EXIT
    log "cluster up in $((SECONDS - start)) s (node $(node_name), partition $PARTITION, logs in $LOGS)"
    print_env
}

cmd_down() {
    require_root
    [[ -n ${1:-} ]] || usage
    [[ -d $1 ]] || { log "no state dir $1: nothing to stop"; return 0; }
    set_paths "$1"
    take_lock
    cancel_all_jobs
    stop_all_daemons
    log "cluster at $STATE is down"
}

main() {
    local cmd=${1:-}
    shift || true
    case $cmd in
        install) cmd_install ;;
        up) cmd_up "$@" ;;
        down) cmd_down "$@" ;;
        status) cmd_status "$@" ;;
        *) usage ;;
    esac
}

main "$@"
