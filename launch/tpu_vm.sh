#!/usr/bin/env bash
# Trains on a Cloud TPU VM (one host or a pod slice): copies this checkout to every
# worker, installs the pinned requirements with JAX's TPU wheel, and starts
# vlkg.main on all workers at once. On a pod slice the workers find each other
# through jax.distributed (VLKG_DISTRIBUTED=1, vlkg/sharding.py).
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b VLKG_DATA_DIR=gs://my-bucket/vlkg/data \
#     launch/tpu_vm.sh --config configs/structure_clip.py:vit_b32 \
#       --workdir gs://my-bucket/vlkg/runs/sc_b32
#
# Every worker must see the same workdir and data: on a pod slice give gs:// paths
# (a bucket the TPU VM's service account can write), which need no shared mount;
# a local path is fine on a single-host TPU VM only. Process 0 prepares the data and
# writes the run files; every process writes its part of each checkpoint.
#
# A spot or pre-emptible TPU VM gets SIGTERM before it is taken: every worker saves
# the same step and exits 143 (vlkg/preemption.py). Run the same command again
# (SETUP=0 once the workers are set up) to resume.
#
#   --dry-run   print the commands (tar, gcloud) instead of running them
#   SETUP=0     skip the copy and install on a re-run
#   PROJECT=p   pass --project p to gcloud
set -euo pipefail
dry_run=0
args=()
for a in "$@"; do
  if [[ "$a" == --dry-run ]]; then dry_run=1; else args+=("$a"); fi
done
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
if [[ ${#args[@]} -eq 0 ]]; then
  echo "usage: TPU_NAME=... ZONE=... $0 [--dry-run] ARGS_FOR_vlkg.main..." >&2
  exit 2
fi
workdir=""
for ((i = 0; i < ${#args[@]}; i++)); do
  if [[ "${args[$i]}" == --workdir=* ]]; then workdir="${args[$i]#--workdir=}"; fi
  if [[ "${args[$i]}" == --workdir ]]; then workdir="${args[$((i + 1))]:-}"; fi
done
[[ -n "$workdir" ]] || { echo "$0: --workdir is required" >&2; exit 2; }
for path in "$workdir" "${VLKG_DATA_DIR:-}"; do
  if [[ -n "$path" && "$path" != gs://* ]]; then
    echo "$0: note: $path is not a gs:// path; on a pod slice every worker must see it" >&2
  fi
done

run() {  # runs a command, or prints it (shell-quoted) with --dry-run
  if ((dry_run)); then
    local line
    line=$(printf '%q ' "$@")
    echo "${line% }"
  else
    "$@"
  fi
}
gcloud_tpu() {
  run gcloud compute tpus tpu-vm "$1" "${@:2}" --zone "$ZONE" ${PROJECT:+--project "$PROJECT"}
}
ssh_all() {
  gcloud_tpu ssh "$TPU_NAME" --worker=all --command "$1"
}

root=$(cd "$(dirname "$0")/.." && pwd)
if [[ "${SETUP:-1}" == 1 ]]; then
  tarball=/tmp/vlkg_src.tgz
  run tar -C "$root" --exclude=.git -czf "$tarball" .
  gcloud_tpu scp "$tarball" "$TPU_NAME":~/ --worker=all
  jax_version=$(grep '^jax==' "$root/requirements.txt" | cut -d= -f3)
  ssh_all "mkdir -p ~/vlkg && tar -C ~/vlkg -xzf ~/vlkg_src.tgz && cd ~/vlkg && \
python3 -m pip install -q -r requirements.txt && \
python3 -m pip install -q 'jax[tpu]==$jax_version' \
-f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
fi
quoted=$(printf '%q ' "${args[@]}")
data_env=""
if [[ -n "${VLKG_DATA_DIR:-}" ]]; then data_env="VLKG_DATA_DIR=$(printf '%q' "$VLKG_DATA_DIR") "; fi
ssh_all "cd ~/vlkg && VLKG_DISTRIBUTED=1 ${data_env}\
nohup python3 -m vlkg.main ${quoted% } > ~/vlkg_train.log 2>&1 &"
if ((dry_run)); then
  echo "# dry run: nothing was copied or started" >&2
else
  echo "started on every worker of $TPU_NAME; logs in ~/vlkg_train.log on each"
fi
