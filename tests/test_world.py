"""gpt2/world.py: this process's place among torchrun's processes, read from RANK, LOCAL_RANK,
WORLD_SIZE, LOCAL_WORLD_SIZE and TORCHELASTIC_RUN_ID; and `Dist.from_env()` reading the same."""

import dataclasses

import pytest

from gpt2.train.distributed import Dist
from gpt2.world import World

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "GROUP_RANK")


@pytest.fixture(autouse=True)
def plain_python(monkeypatch):
    """Each test starts as a plain `python train.py` (none of torchrun's variables set)."""
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_a_plain_python_process_is_rank_0_of_1():
    world = World.from_env()
    assert world == World(rank=0, local_rank=0, world_size=1)
    assert (world.enabled, world.is_main, world.several_nodes) == (False, True, False)


@pytest.mark.parametrize("rank, local_rank, world_size, is_main", [
    ("0", "0", "2", True),
    ("1", "1", "2", False),
    ("5", "1", "8", False),
])
def test_torchrun_variables_give_the_rank_and_the_world(monkeypatch, rank, local_rank, world_size, is_main):
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    monkeypatch.setenv("WORLD_SIZE", world_size)
    world = World.from_env()
    assert world == World(rank=int(rank), local_rank=int(local_rank), world_size=int(world_size))
    assert world.enabled is True and world.is_main is is_main


@pytest.mark.parametrize("world_size, local_world_size, several", [
    (1, None, False),     # plain python
    (1, "1", False),      # torchrun with one process
    (2, "2", False),      # every process on this machine
    (4, "2", True),       # two nodes of two
    (4, None, True),      # no node share known: not this machine alone
])
def test_several_nodes_when_a_node_holds_less_than_the_world(monkeypatch, world_size, local_world_size, several):
    if local_world_size is not None:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world_size)
    assert World(rank=0, local_rank=0, world_size=world_size).several_nodes is several


@pytest.mark.parametrize("world, group_rank, leads", [
    (World(), None, False),                 # plain python
    (World(0, 0, 4), "0", False),           # rank 0 itself
    (World(1, 1, 4), "0", False),           # rank 0's node
    (World(2, 0, 4), "1", True),            # the first process of the second node
    (World(3, 1, 4), "1", False),
])
def test_the_first_process_of_another_node_leads_it(monkeypatch, world, group_rank, leads):
    if group_rank is not None:
        monkeypatch.setenv("GROUP_RANK", group_rank)
    assert world.leads_another_node is leads


@pytest.mark.parametrize("value, run_id", [(None, None), ("none", None), ("3f2a9c", "3f2a9c")])
def test_the_run_id_is_torchelastics_and_none_outside_torchrun(monkeypatch, value, run_id):
    if value is not None:
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", value)
    assert World.run_id() == run_id


def test_a_world_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        World().rank = 1


@pytest.mark.parametrize("env, fields", [
    ({}, (0, 0, 1)),
    ({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}, (3, 1, 4)),
])
def test_dist_from_env_is_a_dist_with_the_worlds_fields(monkeypatch, env, fields):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    dist = Dist.from_env()
    assert type(dist) is Dist and dist.cpu_group is None
    assert (dist.rank, dist.local_rank, dist.world_size) == fields
    world = World.from_env()
    assert (world.rank, world.local_rank, world.world_size) == fields
    assert (dist.enabled, dist.is_main) == (world.enabled, world.is_main)
