#!/usr/bin/env bash
# A one-node Slurm cluster on localhost for the tests marked `slurm` (root, Debian/Ubuntu).
#
#   tests/cluster/slurm.sh start    install if needed (apt), start munged, slurmctld, slurmd,
#                                   wait until `sinfo` shows the node idle; prints the
#                                   `export SLURM_CONF=...` line the tests and sbatch need
#   tests/cluster/slurm.sh stop     stop the daemons this script started (by their pid files)
#   tests/cluster/slurm.sh status   sinfo of the test cluster
#
# Everything lives in $INFOFLOW_SLURM_DIR (default /tmp/infoflow-slurm): slurm.conf, state,
# spool, logs, pid files. /etc/slurm is not touched, so a machine's own Slurm is left alone;
# munged is started only if no munge daemon answers already.
#
# Why this configuration: a container has no systemd and no writable cgroup tree, so processes
# are tracked by parent pid (proctrack/linuxproc) and tasks are not bound (task/none). There is
# no accounting database (accounting_storage/none): submitit polls `sacct`, which then fails
# (submitit logs "Bypassing sacct error" and waits for each job's result file instead). Jobs
# that end normally, or raise, are seen; a job killed from outside (scancel, node failure) is
# not, and its sweep waits until interrupted (the tests interrupt it, as a user would).
set -euo pipefail

DIR=${INFOFLOW_SLURM_DIR:-/tmp/infoflow-slurm}
CONF=$DIR/slurm.conf
PARTITION=${INFOFLOW_SLURM_PARTITION:-debug}
NODE=localhost

install() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null && command -v sbatch >/dev/null && return
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    cat >"$CONF" <<EOF
ClusterName=infoflow-test
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
    install
    write_conf
    if ! munge_ok; then
        mkdir -p /run/munge /var/log/munge /var/lib/munge
        [[ -f /etc/munge/munge.key ]] || mungekey --create >/dev/null 2>&1 \
            || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
        chmod 0400 /etc/munge/munge.key
        munged --force --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log"
        for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
        munge_ok || { echo "munged did not start: $DIR/log/munged.log" >&2; exit 1; }
    fi
    export SLURM_CONF=$CONF
    running "$DIR/slurmctld.pid" || slurmctld -f "$CONF" -c  # -c: no state from an earlier run
    running "$DIR/slurmd.pid" || slurmd -f "$CONF" -N "$NODE"
    local state=""
    for _ in $(seq 120); do
        state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null || true)
        [[ $state == idle ]] && break
        sleep 0.5
    done
    if [[ $state != idle ]]; then
        echo "the Slurm node is '${state:-unreachable}', not idle; logs in $DIR/log" >&2
        sinfo -N -l >&2 || true
        tail -n 20 "$DIR"/log/*.log >&2 || true
        exit 1
    fi
    echo "export SLURM_CONF=$CONF"
}

stop() {
    local name pid
    for name in slurmd slurmctld munged; do
        running "$DIR/$name.pid" || continue
        pid=$(cat "$DIR/$name.pid")
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$DIR/$name.pid"
    done
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) SLURM_CONF=$CONF sinfo -N -l ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
