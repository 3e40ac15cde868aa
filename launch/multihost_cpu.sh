#!/usr/bin/env bash
# Runs one training job as N CPU processes on this machine, each with D fake
# devices: the multi-host code path (per-host data shards, global batches, process 0
# writing the run files) without a pod.
#
#   launch/multihost_cpu.sh N D --config configs/clip.py:smoke --workdir /tmp/vlkg_mh
#
# Every process logs to WORKDIR/process_<i>.log; the script waits for all of them
# and fails if any fails.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS ARGS_FOR_vlkg.main..." >&2
  exit 2
fi
num=$1 devices=$2
shift 2
workdir=""
for ((i = 1; i <= $#; i++)); do
  if [[ "${!i}" == --workdir=* ]]; then workdir="${!i#--workdir=}"; fi
  if [[ "${!i}" == --workdir ]]; then j=$((i + 1)); workdir="${!j}"; fi
done
[[ -n "$workdir" ]] || { echo "$0: --workdir is required" >&2; exit 2; }
mkdir -p "$workdir"
port=${VLKG_PORT:-$((20000 + RANDOM % 20000))}
pids=()
for ((p = 0; p < num; p++)); do
  JAX_PLATFORMS=cpu \
  XLA_FLAGS="--xla_force_host_platform_device_count=$devices" \
  VLKG_NUM_PROCESSES=$num VLKG_PROCESS_ID=$p VLKG_COORDINATOR="localhost:$port" \
    python -m vlkg.main "$@" > "$workdir/process_$p.log" 2>&1 &
  pids+=($!)
done
status=0
for p in "${!pids[@]}"; do
  if ! wait "${pids[$p]}"; then
    echo "process $p failed; see $workdir/process_$p.log" >&2
    status=1
  fi
done
exit $status
