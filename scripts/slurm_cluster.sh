#!/bin/bash
# A one-node SLURM cluster on this machine, for the sweep's cluster tests (`make slurm-up`).
#
#   scripts/slurm_cluster.sh up      install slurm-wlm + munge if missing, start munged, slurmctld,
#                                    slurmd (as root); prints the config folder
#   scripts/slurm_cluster.sh down    stop the daemons this script started
#   scripts/slurm_cluster.sh status  exit 0 when the cluster answers
#
# The node is this machine with its own CPUs and memory (auth/munge, proctrack/linuxproc,
# task/none, select/cons_tres with CR_CPU); config, state and logs live in $MBT_SLURM_DIR
# (default /tmp/mbt-slurm). Jobs see the cluster through SLURM_CONF=$MBT_SLURM_DIR/slurm.conf.
set -euo pipefail

DIR="${MBT_SLURM_DIR:-/tmp/mbt-slurm}"
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "slurm_cluster.sh: slurmctld and slurmd run as root here; run as root" >&2
    exit 1
  fi
}

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_conf() {
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
  local cpus mem host
  cpus=$(getconf _NPROCESSORS_ONLN)  # not nproc: it honours OMP_NUM_THREADS
  mem=$(awk '/MemTotal/ {print int($2 / 1024) - 512}' /proc/meminfo)
  host=$(hostname -s)
  cat >"$CONF" <<EOF
ClusterName=mbt
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
KillWait=30
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  echo "$host" >"$DIR/node"
}

start_munge() {
  if pgrep -x munged >/dev/null; then return; fi
  touch "$DIR/munged.ours"  # started here: `down` stops it again
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  fi
  chown -R munge:munge /etc/munge 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  if id munge >/dev/null 2>&1; then
    su -s /bin/sh munge -c "/usr/sbin/munged" || /usr/sbin/munged --force
  else
    /usr/sbin/munged --force
  fi
}

answers() {  # the controller answers and the node takes jobs (or is finishing one)
  sinfo -h -o "%T" 2>/dev/null | grep -Eq "^(idle|mixed|allocated|completing)"
}

up() {
  need_root
  install
  if [ -f "$CONF" ] && answers; then
    echo "SLURM_CONF=$CONF (already running)"
    return
  fi
  write_conf
  start_munge
  munge -n | unmunge >/dev/null
  [ -f "$DIR/slurmctld.pid" ] && kill "$(cat "$DIR/slurmctld.pid")" 2>/dev/null || true
  [ -f "$DIR/slurmd.pid" ] && kill "$(cat "$DIR/slurmd.pid")" 2>/dev/null || true
  slurmctld -f "$CONF" -i
  slurmd -f "$CONF"
  for _ in $(seq 1 60); do
    if answers; then
      echo "SLURM_CONF=$CONF"
      return
    fi
    scontrol -f "$CONF" update NodeName="$(cat "$DIR/node")" State=RESUME >/dev/null 2>&1 || true
    sleep 1
  done
  echo "slurm_cluster.sh: the node did not come up; see $DIR/log" >&2
  sinfo -N -l >&2 || true
  exit 1
}

down() {
  for pid_file in "$DIR/slurmd.pid" "$DIR/slurmctld.pid"; do
    if [ -f "$pid_file" ]; then
      kill "$(cat "$pid_file")" 2>/dev/null || true
      rm -f "$pid_file"
    fi
  done
  if [ -f "$DIR/munged.ours" ]; then
    pkill -x munged 2>/dev/null || true
    rm -f "$DIR/munged.ours"
    echo "stopped the SLURM daemons of $DIR and the munged it started"
  else
    echo "stopped the SLURM daemons of $DIR (munged was running before: left running)"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) answers ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
