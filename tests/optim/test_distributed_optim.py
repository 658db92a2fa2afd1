"""Two gloo processes under DDP: DGD (which all-reduces its layer-input statistics), Muon and M3
keep the ranks identical and match one process on the global batch; under FSDP2 (DTensor parameters and
state, sharded by rows, one matrix unevenly) Muon and M3 (Newton-Schulz on gathered matrices) match one process
too, and delta momentum refuses them with a HopeError. The ranks are forked from the test process (no second torch import)."""

import multiprocessing
import traceback

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

from hope.errors import HopeError
from hope.optim import DeltaMomentum, build_optimizer
from hope.optim.params import gathered

RUNS = [("dgd", {"lr": 0.3}), ("muon", {"lr": 0.01, "ns_dtype": None}),
        ("m3", {"lr": 0.01, "ns_dtype": None, "slow_period": 2})]
SHARDED_RUNS = [("muon", {"lr": 0.01, "ns_dtype": None}), ("m3", {"lr": 0.01, "ns_dtype": None, "slow_period": 2}),
                ("m3-ema", {"lr": 0.01, "ns_dtype": None, "slow_period": 2})]


def _train(rank: int, world: int, runs=RUNS, fsdp: bool = False) -> dict[str, torch.Tensor]:
    from torch.distributed.fsdp import fully_shard

    result = {}
    for name, kwargs in runs:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        if fsdp:
            for layer in (model[0], model[2], model):
                fully_shard(layer)
        optimizer = build_optimizer(name, model, **kwargs)
        trained = nn.parallel.DistributedDataParallel(model) if world > 1 and not fsdp else model
        for step in range(4):
            x = torch.randn(8, 6, generator=torch.Generator().manual_seed(step), dtype=torch.float64)
            trained(x.chunk(world)[rank]).pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad()
        prefix = "fsdp." if fsdp else ""
        result.update({f"{prefix}{name}.{k}": gathered(v).detach().clone() for k, v in model.state_dict().items()})
    return result


def _rank(rank: int, world: int, store: str, out: str, errors) -> None:
    try:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
        result = {**_train(rank, world), **_train(rank, world, SHARDED_RUNS, fsdp=True)}
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import Shard, distribute_tensor

        mesh = init_device_mesh("cpu", (world,))
        sharded = nn.Parameter(distribute_tensor(torch.randn(4, 4), mesh, [Shard(0)]))
        try:
            DeltaMomentum([sharded])
        except HopeError as err:
            result["dtensor_refused"] = torch.tensor(1.0 if "FSDP2" in str(err) else 0.0)
        dist.destroy_process_group()
        save_file(result, out)
    except BaseException:
        errors.put(traceback.format_exc())
        raise


def test_ddp_ranks_agree_and_match_one_process(tmp_path):
    one = _train(0, 1)  # first, so that the forked ranks inherit every lazy import
    one.update({f"fsdp.{k}": v for k, v in _train(0, 1, SHARDED_RUNS).items()})
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
