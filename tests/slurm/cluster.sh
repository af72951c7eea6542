#!/usr/bin/env bash
# A throwaway single-node Slurm cluster on localhost (munged + slurmctld + slurmd), for the Slurm
# tests: `cluster.sh start DIR [CPUS]` writes slurm.conf and state under DIR, starts the daemons and
# waits until the node is idle; `cluster.sh stop DIR` stops them by PID. The facts it relies on are
# in docs/slurm.md (Slurm 22.05, Debian 12). Needs root and Debian's slurmctld,
# slurmd, slurm-client and munge packages (.ci/run installs them).
set -euo pipefail

cmd=${1:?usage: cluster.sh start|stop DIR [CPUS]}
dir=$(realpath -m "${2:?usage: cluster.sh start|stop DIR [CPUS]}")
cpus=${3:-4}
host=$(hostname -s)

alive() { # PID: running, not a zombie (PID 1 here does not reap orphans)
  local s
  s=$(ps -o stat= -p "$1" 2>/dev/null | tr -d ' ') || return 1
  [[ -n $s && $s != Z* ]]
}

stop() {
  for d in slurmd slurmctld munged; do
    if [[ -f $dir/$d.pid ]]; then
      local pid
      pid=$(cat "$dir/$d.pid")
      if alive "$pid" && grep -q "${d:0:6}" "/proc/$pid/comm" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
        alive "$pid" && kill -9 "$pid" 2>/dev/null || true
      fi
      rm -f "$dir/$d.pid"
    fi
  done
}

case $cmd in
stop) stop; exit 0 ;;
start) ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac

mkdir -p "$dir"/{state,spool,log} /run/munge
chown munge:munge /run/munge
if [[ ! -f /etc/munge/munge.key ]]; then
  mungekey -c
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
conf=$dir/slurm.conf
cat > "$conf" <<CONF
ClusterName=gramci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=600
KillWait=5
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pidfile
SlurmdPidFile=$dir/slurmd.pidfile
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$conf

setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F > "$dir/log/munged.out" 2>&1 &
echo $! > "$dir/munged.pid"
for _ in $(seq 50); do [[ -S /run/munge/munge.socket.2 ]] && break; sleep 0.1; done
slurmctld -D -i -f "$conf" > "$dir/log/slurmctld.out" 2>&1 &
echo $! > "$dir/slurmctld.pid"
slurmd -D -f "$conf" > "$dir/log/slurmd.out" 2>&1 &
echo $! > "$dir/slurmd.pid"
for _ in $(seq 150); do
  if scontrol ping 2>/dev/null | grep -q UP && [[ $(sinfo -h -o %t 2>/dev/null) == idle* ]]; then
    echo "slurm up: SLURM_CONF=$conf"
    exit 0
  fi
  sleep 0.2
done
echo "slurm did not come up; logs in $dir/log" >&2
tail -n 20 "$dir"/log/*.log >&2 || true
stop
exit 1
