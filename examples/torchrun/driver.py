"""The driver of a torchrun gang: it starts nothing itself (the executors are the torchrun
nodes) and ends when every member has ended, with success only if all exited 0.

    hearth submit --executors 3 --gang --executor-cores 1 --executor-memory 1g \
      --executor-env TORCH_MASTER_PORT=29500 \
      --executor-command 'exec sh /opt/examples/torchrun/executor.sh' \
      -- python3 /opt/examples/torchrun/driver.py
"""

import json
import os
import subprocess
import sys
import time

APP = os.environ["HEARTH_APP_ID"]
HEARTH = os.environ.get("HEARTH_BIN", "hearth")
ENDED = {"EXITED", "FAILED", "KILLED", "LOST"}

while True:
    view = json.loads(
        subprocess.run([HEARTH, "status", APP, "--json"], check=True,
                       capture_output=True, text=True).stdout
    )
    states = [e["state"] for e in view["executors"]]
    if states and all(s in ENDED for s in states) and view["targetExecutors"] == 0:
        print("members: " + ", ".join(states), flush=True)
        sys.exit(0 if all(s == "EXITED" for s in states) else 1)
    time.sleep(0.5)
