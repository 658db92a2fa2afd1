"""Two gloo processes under DDP: DGD (which all-reduces its layer-input statistics), Muon and M3
keep the ranks identical and match one process on the global batch; FSDP2 (DTensor) parameters are
refused with a HopeError. The ranks are forked from the test process (no second torch import)."""

import multiprocessing
import traceback

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

from hope.errors import HopeError
from hope.optim import M3, build_optimizer

RUNS = [("dgd", {"lr": 0.3}), ("muon", {"lr": 0.01, "ns_dtype": None}),
        ("m3", {"lr": 0.01, "ns_dtype": None, "slow_period": 2})]


def _train(rank: int, world: int) -> dict[str, torch.Tensor]:
    result = {}
    for name, kwargs in RUNS:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        optimizer = build_optimizer(name, model, **kwargs)
        trained = nn.parallel.DistributedDataParallel(model) if world > 1 else model
        for step in range(4):
            x = torch.randn(8, 6, generator=torch.Generator().manual_seed(step), dtype=torch.float64)
            trained(x.chunk(world)[rank]).pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad()
        result.update({f"{name}.{k}": v.detach().clone() for k, v in model.state_dict().items()})
    return result


def _rank(rank: int, world: int, store: str, out: str, errors) -> None:
    try:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
        result = _train(rank, world)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import Shard, distribute_tensor

        mesh = init_device_mesh("cpu", (world,))
        sharded = nn.Parameter(distribute_tensor(torch.randn(4, 4), mesh, [Shard(0)]))
        try:
            M3([sharded])
        except HopeError as err:
            result["dtensor_refused"] = torch.tensor(1.0 if "FSDP2" in str(err) else 0.0)
        dist.destroy_process_group()
        save_file(result, out)
    except BaseException:
        errors.put(traceback.format_exc())
        raise


def test_ddp_ranks_agree_and_match_one_process(tmp_path):
    one = _train(0, 1)  # first, so that the forked ranks inherit every lazy import
    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    procs = [context.Process(target=_rank, args=(r, 2, str(tmp_path / "store"), str(tmp_path / f"rank{r}.st"), errors))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs), errors.get(timeout=5) if not errors.empty() else "a rank failed"
    rank0, rank1 = (load_file(str(tmp_path / f"rank{r}.st")) for r in range(2))
    assert rank0.pop("dtensor_refused").item() == 1.0
    assert rank1.pop("dtensor_refused").item() == 1.0
    assert rank0.keys() == one.keys()
    for key in one:
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], one[key], rtol=1e-9, atol=1e-11, msg=key)
