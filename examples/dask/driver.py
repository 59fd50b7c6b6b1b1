"""A Dask driver on Hearth.

The driver runs the Dask scheduler and the client; the application's executors run
`dask worker` against it (see executor.sh), one per executor, with the executor's cores and
memory. The driver sizes its own cluster with `hearth executors`: it computes with one
worker, grows to three for a larger job, ends two of those executors, and finishes with one. Dask's own adaptive scaling stays off:
Hearth decides where executors run.

Needs from Hearth: HEARTH_APP_ID (the application registered with the driver's launch),
HEARTH_BIN (the `hearth` command, for `hearth executors`) and, on executors,
HEARTH_DRIVER_HOST, HEARTH_EXECUTOR_ID, HEARTH_CORES and HEARTH_MEMORY_MB. The scheduler's port
comes from DASK_SCHEDULER_PORT, given to the driver and the executors alike, so that two Dask
drivers on one worker do not collide.

    hearth submit --env DASK_SCHEDULER_PORT=8786 \
      --executors 1 --max-cores 3 --executor-memory 1g \
      --executor-env DASK_SCHEDULER_PORT=8786 \
      --executor-command 'exec sh /opt/examples/dask/executor.sh' \
      -- python3 /opt/examples/dask/driver.py
"""

import os
import subprocess
import sys
import time

from distributed import Client

PORT = int(os.environ.get("DASK_SCHEDULER_PORT", "8786"))
APP = os.environ["HEARTH_APP_ID"]
HEARTH = os.environ.get("HEARTH_BIN", "hearth")


def hearth(*args):
    out = subprocess.run([HEARTH, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("hearth %s: %s" % (" ".join(args), out.stderr.strip()))
    print("hearth " + " ".join(args) + ": " + out.stdout.strip(), flush=True)


def wait_for_workers(client, n, limit=120):
    deadline = time.time() + limit
    while len(client.scheduler_info()["workers"]) != n:
        if time.time() > deadline:
            sys.exit("timed out waiting for %d Dask workers" % n)
        time.sleep(0.2)
    print("workers=%d" % n, flush=True)


def main():
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler",
         "--host", "0.0.0.0", "--port", str(PORT), "--dashboard-address", ":0"],
    )
    try:
        client = Client("tcp://127.0.0.1:%d" % PORT, timeout=60)
        wait_for_workers(client, 1)

        import dask.array as da
        total = da.arange(1_000_000, chunks=100_000).sum().compute()
        print("sum=%d" % total, flush=True)

        # Grow: two more executors, two more Dask workers.
        hearth("executors", APP, "--add", "2")
        wait_for_workers(client, 3)
        squares = client.gather(client.map(lambda x: x * x, range(1000)))
        print("squares=%d" % sum(squares), flush=True)

        # Shrink: their executors end (SIGTERM); Dask recomputes anything they held.
        hearth("executors", APP, "--kill", "1,2")
        wait_for_workers(client, 1)
        print("after=%d" % da.ones(10_000, chunks=1_000).sum().compute(), flush=True)
        client.close()
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=30)


if __name__ == "__main__":
    main()
