#!/usr/bin/env bash
# A SLURM cluster on this machine, for the tests and for trying the slurm
# executor: munged, slurmctld and one slurmd per node on localhost, every
# file (munge key, slurm.conf, spool, logs, sockets) inside one state folder,
# so nothing under /etc is touched and two clusters never share a port.
# With NODES > 1 the nodes are n1..nN: each its own slurmd (`slurmd -N nK`)
# with its own port, spool, log and pid file, all at NodeAddr=127.0.0.1
# (the names are not in DNS: a job reaches a node through that NodeAddr,
# `scontrol show node`, as dtvg_dist.grid.slurm_job does).
#
#   scripts/slurm_test_cluster.sh start STATE_DIR [NODES]  # prints `export SLURM_CONF=...`
#   scripts/slurm_test_cluster.sh stop STATE_DIR           # stops what start started, by pid
#
# Needs root (slurmd starts jobs as their user) and Debian's slurm-wlm and
# munge (scripts/ci_system_packages.sh installs them).
set -euo pipefail

usage() { echo "usage: $0 start|stop STATE_DIR [NODES]" >&2; exit 2; }
[[ $# -eq 2 || $# -eq 3 ]] || usage
action=$1
state=$2
nodes=${3:-1}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop() {
  # Only the pids start recorded: all are told to stop at once (each takes
  # about 2 s; the cluster is thrown away), then each is waited for up to 5 s
  # and killed if still there.
  local pidfiles=() pidfile pid
  for pidfile in "$state"/slurmd*.pid "$state/slurmctld.pid" "$state/munged.pid"; do
    [[ -f $pidfile ]] || continue
    pidfiles+=("$pidfile")
    kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
  done
  for pidfile in "${pidfiles[@]}"; do
    pid=$(cat "$pidfile")
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

start() {
  for bin in munged slurmctld slurmd sbatch sinfo; do
    command -v "$bin" >/dev/null || [[ -x /usr/sbin/$bin ]] || {
      echo "slurm_test_cluster: $bin not found (apt-get install slurm-wlm munge)" >&2; exit 3; }
  done
  [[ $(id -u) -eq 0 ]] || { echo "slurm_test_cluster: must run as root (slurmd)" >&2; exit 3; }
  id munge >/dev/null 2>&1 || { echo "slurm_test_cluster: no munge user" >&2; exit 3; }
  mkdir -p "$state"
  state=$(cd "$state" && pwd)
  chmod 755 "$state"
  host=$(hostname -s)
  cpus=$(nproc)
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))

  # munge: its own key, socket, pid, log and seed files, owned by the munge user.
  m="$state/munge"
  mkdir -p "$m/etc" "$m/run"
  dd if=/dev/urandom bs=1 count=1024 of="$m/etc/munge.key" status=none
  chown -R munge:munge "$m"
  chmod 755 "$m" "$m/run"  # clients need to reach the socket
  chmod 700 "$m/etc"
  chmod 400 "$m/etc/munge.key"
  setsid setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F \
    --socket="$m/run/munge.socket" --key-file="$m/etc/munge.key" --pid-file="$m/run/munged.pid" \
    --log-file="$m/etc/munged.log" --seed-file="$m/etc/munged.seed" >"$state/munged.out" 2>&1 &
  echo $! >"$state/munged.pid"
  for _ in $(seq 50); do [[ -S $m/run/munge.socket ]] && break; sleep 0.1; done
  [[ -S $m/run/munge.socket ]] || { echo "munged did not start: $(cat "$m/etc/munged.log" "$state/munged.out" 2>/dev/null)" >&2; stop; exit 1; }

  mkdir -p "$state/spool/ctld" "$state/log"
  ctld_port=$(free_port)
  d_port=$(free_port)
  if [[ $nodes -eq 1 ]]; then
    names=("$host")
    node_lines="NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"
    node_list=$host
  else
    names=()
    node_lines=""
    for k in $(seq "$nodes"); do
      names+=("n$k")
      # every node gets all the cores (overcommitted): each runs one process of a two-node job
      node_lines+="NodeName=n$k NodeHostname=$host NodeAddr=127.0.0.1 Port=$(free_port) CPUs=$cpus RealMemory=$(( mem_mb / nodes )) State=UNKNOWN"$'\n'
    done
    node_list="n[1-$nodes]"
  fi
  for name in "${names[@]}"; do mkdir -p "$state/spool/d-$name"; done
  cat >"$state/slurm.conf" <<EOF
# test cluster ($nodes node(s)) written by scripts/slurm_test_cluster.sh
ClusterName=dtvgtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job waits this long before it may start again (default 120 s)
AuthInfo=socket=$m/run/munge.socket,cred_expire=5
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/d-%n
SlurmctldPidFile=$state/slurmctld.pidfile
SlurmdPidFile=$state/slurmd-%n.pidfile
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# a requeued job may start again at once (the default waits 2 minutes)
MinJobAge=30
KillWait=30
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=1
$node_lines
PartitionName=debug Nodes=$node_list Default=YES DefaultTime=60 MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF="$state/slurm.conf"
  setsid /usr/sbin/slurmctld -D -i -f "$SLURM_CONF" >"$state/slurmctld.out" 2>&1 &
  echo $! >"$state/slurmctld.pid"
  for name in "${names[@]}"; do
    setsid /usr/sbin/slurmd -D -f "$SLURM_CONF" -N "$name" >"$state/slurmd-$name.out" 2>&1 &
    echo $! >"$state/slurmd-$name.pid"
  done
  for _ in $(seq 150); do
    if [[ $(sinfo -h -N -o %t 2>/dev/null | sort | uniq -c | awk '{print $1, $2}') == "$nodes idle" ]]; then
      echo "export SLURM_CONF=$SLURM_CONF"
      return 0
    fi
    sleep 0.2
  done
  echo "slurm_test_cluster: $nodes node(s) not idle after 30 s; sinfo: $(sinfo -N 2>&1)" >&2
  tail -n 20 "$state"/log/*.log "$state"/*.out >&2 || true
  stop
  exit 1
}

case $action in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
