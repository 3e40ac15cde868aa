#!/usr/bin/env bash
# Trains on a Cloud TPU VM (one host or a pod slice): copies this checkout to every
# worker, installs the pinned requirements with JAX's TPU wheel, and starts
# vlkg.main on all workers at once. On a pod slice the workers find each other
# through jax.distributed (VLKG_DISTRIBUTED=1, vlkg/sharding.py).
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_vm.sh \
#       --config configs/structure_clip.py:vit_b32 --workdir /mnt/shared/runs/sc_b32
#
# On a pod slice, --workdir and VLKG_DATA_DIR must be folders that every worker
# sees (an NFS/Filestore mount): process 0 prepares the data and writes the run
# files, and every process writes its part of each checkpoint. vlkg's file I/O is
# local-filesystem only (no gs:// paths). SETUP=0 skips the copy and install on a
# re-run.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
[[ $# -gt 0 ]] || { echo "usage: TPU_NAME=... ZONE=... $0 ARGS_FOR_vlkg.main..." >&2; exit 2; }
ssh_all() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "$1"
}
root=$(cd "$(dirname "$0")/.." && pwd)
if [[ "${SETUP:-1}" == 1 ]]; then
  tar -C "$root" --exclude=.git -czf /tmp/vlkg_src.tgz .
  gcloud compute tpus tpu-vm scp /tmp/vlkg_src.tgz "$TPU_NAME":~/ --zone "$ZONE" --worker=all
  ssh_all "mkdir -p ~/vlkg && tar -C ~/vlkg -xzf ~/vlkg_src.tgz && cd ~/vlkg && \
    python3 -m pip install -q -r requirements.txt && \
    python3 -m pip install -q 'jax[tpu]==$(grep '^jax==' "$root/requirements.txt" | cut -d= -f3)' \
      -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
fi
args=$(printf '%q ' "$@")
ssh_all "cd ~/vlkg && VLKG_DISTRIBUTED=1 ${VLKG_DATA_DIR:+VLKG_DATA_DIR=$VLKG_DATA_DIR} \
  nohup python3 -m vlkg.main $args > ~/vlkg_train.log 2>&1 &"
echo "started on every worker of $TPU_NAME; logs in ~/vlkg_train.log on each"
