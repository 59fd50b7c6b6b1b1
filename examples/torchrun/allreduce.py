"""One member of a torchrun job: joins the process group (gloo, CPU) and all-reduces its rank
plus one, so every member ends with 1 + 2 + ... + world."""

import os

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
value = torch.tensor([float(rank + 1)])
dist.all_reduce(value)
expected = world * (world + 1) / 2
print(
    "rank=%d hearth_rank=%s world=%d allreduce=%g expected=%g"
    % (rank, os.environ.get("HEARTH_EXECUTOR_RANK"), world, value.item(), expected),
    flush=True,
)
dist.destroy_process_group()
if value.item() != expected:
    raise SystemExit("all-reduce gave %g, not %g" % (value.item(), expected))
