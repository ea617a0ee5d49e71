"""Data streams (dynamics_bench/batches.py): which stream a trainer gets, minibatches of distinct samples drawn from
each member's own generator, online samples, and rewinding a stream to replay the same draws."""
from __future__ import annotations

import pytest
import torch

from dynamics_bench.batches import FullBatch, MiniBatch, OnlineBatch, check_batch_size, make_batches
from dynamics_bench.config import ConfigError
from dynamics_bench.tasks import build_task
from dynamics_bench.tasks.base import Task

N = 10


class _Rows(Task):
    """x = y = the row index (n, 1): a batch names the samples it holds."""

    input_dim = output_dim = 1

    def __init__(self, n: int = N, online: bool = False):
        self._x = torch.arange(n, dtype=torch.float64)[:, None]
        self.online = online

    def data(self):
        return self._x, self._x


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_minibatches_are_distinct_samples_of_each_members_own_draws():
    """b = n − 1 distinct rows per step and member (with replacement, 20 steps × 3 members of 9 draws from 10
    would repeat a row with probability 1 − 0.0036^60); x and y are the same rows; over 200 steps every row is
    drawn, about equally often (each row's share 0.9 per step: 180 ± 4.2, ±30 is 7 sd); member e's batches are
    those it draws alone from its generator."""
    stream = MiniBatch(_Rows(), N - 1, gens(0, 1, 2))
    counts = torch.zeros(N)
    for _ in range(200):
        x, y = stream()
        assert x.shape == (3, N - 1, 1) and torch.equal(x, y)
        rows = x[..., 0].long()  # (E, b)
        assert all(len(set(r.tolist())) == N - 1 for r in rows)
        counts += torch.bincount(rows.flatten(), minlength=N) / 3
    assert ((counts - 180).abs() <= 30).all(), counts
    together, alone = MiniBatch(_Rows(), 4, gens(5, 7)), MiniBatch(_Rows(), 4, gens(7))
    for _ in range(5):
        assert torch.equal(together()[0][1], alone()[0][0])


@pytest.mark.parametrize("kind", ["minibatch", "online"])
def test_restore_replays_the_same_draws(kind):
    """state() then restore() rewinds every member's generator: the loop goes back to a window's start and must
    see the same batches again."""
    if kind == "minibatch":
        stream = MiniBatch(_Rows(), 3, gens(0, 1))
    else:
        task = build_task({"name": "teacher", "seed": 0, "online": True, "n": 8}, dtype=torch.float64,
                          device=torch.device("cpu"))
        stream = OnlineBatch(task, 3, gens(0, 1))
    stream()
    saved = stream.state()
    first = [stream()[0] for _ in range(3)]
    stream.restore(saved)
    assert all(torch.equal(a, stream()[0]) for a in first)
    assert not torch.equal(first[0], first[1])


def test_make_batches_picks_the_stream():
    """Online tasks sample (batch_size, else n, per step); a fixed set gives minibatches only for a batch smaller
    than it, the full set (every member's view of it) otherwise."""
    full = make_batches(_Rows(), None, 2, gens(0, 1))
    assert isinstance(full, FullBatch) and full.full and full()[0].shape == (2, N, 1)
    assert full.state() == [] and torch.equal(full()[0][1], _Rows().data()[0])
    assert isinstance(make_batches(_Rows(), N, 2, gens(0, 1)), FullBatch)
    mini = make_batches(_Rows(), N - 1, 2, gens(0, 1))
    assert isinstance(mini, MiniBatch) and not mini.full and mini()[0].shape == (2, N - 1, 1)
    task = build_task({"name": "teacher", "seed": 0, "online": True, "n": 8}, dtype=torch.float64,
                      device=torch.device("cpu"))
    online = make_batches(task, None, 2, gens(0, 1))
    assert isinstance(online, OnlineBatch) and not online.full and online()[0].shape == (2, 8, 5)
    assert make_batches(task, 20, 2, gens(0, 1))()[0].shape == (2, 20, 5)


def test_batch_size_above_the_data_set_is_a_config_error():
    check_batch_size(_Rows(), N)
    check_batch_size(_Rows(), None)
    check_batch_size(_Rows(online=True), 10 * N)  # online tasks have no limit
    with pytest.raises(ConfigError) as info:
        check_batch_size(_Rows(), N + 1)
    assert info.value.key == "trainer.batch_size" and f"{N}" in str(info.value)
