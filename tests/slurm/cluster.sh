#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for `make test-slurm`.
#   cluster.sh start DIR   install slurm-wlm + munge if missing (as root), write DIR/slurm.conf,
#                          start munged, slurmctld and slurmd; prints `export SLURM_CONF=...`
#   cluster.sh stop DIR    stop the daemons started from DIR
set -euo pipefail
action=${1:?start or stop}
dir=$(realpath -m "${2:?state directory}")
conf=$dir/slurm.conf

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
  if [[ $(id -u) -ne 0 ]]; then
    echo "cluster.sh: slurm-wlm and munge are missing and only root can install them" >&2; exit 1
  fi
  command -v apt-get >/dev/null || { echo "cluster.sh: no apt-get to install slurm-wlm" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_config() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))
  mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
  cat >"$conf" <<CONF
ClusterName=agiqa-test
SlurmctldHost=$host
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  echo "CgroupPlugin=cgroup/v1" >"$dir/cgroup.conf"
}

start_munge() {
  [[ -f /etc/munge/munge.key ]] || mungekey --create >/dev/null 2>&1 || \
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
    if id munge >/dev/null 2>&1; then runuser -u munge -- /usr/sbin/munged; else /usr/sbin/munged --force; fi
  fi
}

wait_for_node() {
  for _ in $(seq 1 60); do
    state=$(SLURM_CONF=$conf sinfo -h -o %t 2>/dev/null | head -1)
    [[ $state == idle* || $state == mix* ]] && return 0
    sleep 1
  done
  echo "cluster.sh: the node did not become idle (state '${state:-none}'); logs in $dir/log" >&2
  tail -20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
  return 1
}

# Job steps (srun inside a batch job) do not always inherit SLURM_CONF: link the config into
# /etc/slurm, where Slurm looks by default, unless a real cluster's config is already there.
link_config() {
  mkdir -p /etc/slurm
  for name in slurm.conf cgroup.conf; do
    if [[ -e /etc/slurm/$name && ! -L /etc/slurm/$name ]]; then
      echo "cluster.sh: /etc/slurm/$name exists; refusing to replace a real cluster's config" >&2
      exit 1
    fi
    ln -sfn "$dir/$name" "/etc/slurm/$name"
  done
}

unlink_config() {
  for name in slurm.conf cgroup.conf; do
    [[ -L /etc/slurm/$name && $(readlink "/etc/slurm/$name") == "$dir/$name" ]] && rm -f "/etc/slurm/$name"
  done
  return 0
}

case $action in
  start)
    install_packages
    write_config
    link_config
    start_munge
    SLURM_CONF=$conf slurmctld -i
    SLURM_CONF=$conf slurmd
    wait_for_node
    echo "export SLURM_CONF=$conf"
    ;;
  stop)
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
      [[ -f $pidfile ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    unlink_config
    ;;
  *) echo "usage: cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
