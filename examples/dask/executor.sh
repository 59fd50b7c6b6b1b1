#!/bin/sh
# One Dask worker per Hearth executor, against the scheduler the driver runs: named after the
# executor (so the driver can retire it by name), with the executor's cores and memory.
set -eu
exec "${PYTHON:-python3}" -m distributed.cli.dask_worker \
  "tcp://$HEARTH_DRIVER_HOST:${DASK_SCHEDULER_PORT:-8786}" \
  --name "$HEARTH_EXECUTOR_ID" \
  --nthreads "$HEARTH_CORES" \
  --memory-limit "${HEARTH_MEMORY_MB}MiB" \
  --no-dashboard
