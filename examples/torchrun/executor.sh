#!/bin/sh
# One torchrun node per executor of a gang (hearth submit --gang): Hearth's rank is the node
# rank, and rank 0's host (the first of HEARTH_GANG_HOSTS) hosts the static rendezvous on
# TORCH_MASTER_PORT. `--redirects 2 --tee 1`: torchrun of torch 1.13 (Debian 12) fails on
# Python 3.11 with its default of 0; any torch keeps the output in the executor's log this way.
set -eu
exec "${PYTHON:-python3}" -m torch.distributed.run \
  --nnodes "$HEARTH_WORLD_SIZE" --nproc_per_node 1 \
  --node_rank "$HEARTH_EXECUTOR_RANK" \
  --master_addr "${HEARTH_GANG_HOSTS%%,*}" --master_port "${TORCH_MASTER_PORT:-29500}" \
  --redirects 2 --tee 1 \
  "$(dirname "$0")/allreduce.py"
