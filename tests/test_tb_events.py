"""dynamics_bench.tb_events against its oracle, torch's SummaryWriter: the same scalars and hparams written by
both read back the same through TensorBoard's own EventAccumulator; the record checksum is TensorFlow's."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import metadata, plugin_data_pb2

from dynamics_bench import tb_events
from dynamics_bench.tb_events import EventWriter, masked_crc32c

HPARAMS = {"trainer.lr": 0.05, "trainer.steps": 12, "model.name": "two_layer", "model.bias": False,
           "task.noise": None}
METRICS = {"final/loss": 0.125, "final/time_to_target": 3.5}
ROWS = {0: {"loss": 1.5, "t": 0.0}, 5: {"loss": 0.75, "t": 0.25}, 12: {"loss": 0.125, "t": 0.6}}


def load(path) -> EventAccumulator:
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def write(writer, add_summary, add_hparams) -> None:
    for step, row in ROWS.items():
        add_summary(Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in row.items()]), step)
    add_hparams(HPARAMS, METRICS)
    writer.close()


def read_back(acc: EventAccumulator) -> dict:
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    plugin = {tag: plugin_data_pb2.HParamsPluginData.FromString(content)
              for tag, content in acc.PluginTagToContent("hparams").items()}
    return {"scalars": scalars, "hparams": plugin}


def test_reads_back_as_summary_writer_writes(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    ours = EventWriter(tmp_path / "ours")
    write(ours, ours.add_summary, ours.add_hparams)
    theirs = SummaryWriter(str(tmp_path / "theirs"))
    write(theirs, theirs._get_file_writer().add_summary, lambda h, m: theirs.add_hparams(h, m, run_name="."))
    got, expected = read_back(load(tmp_path / "ours")), read_back(load(tmp_path / "theirs"))
    assert got["scalars"] == expected["scalars"] and set(got["scalars"]) == {"loss", "t", *METRICS}
    assert got["hparams"] == expected["hparams"] and len(got["hparams"]) == 3
    start = got["hparams"][tb_events.SESSION_START_TAG].session_start_info.hparams
    assert start["model.name"].string_value == "two_layer" and start["trainer.steps"].number_value == 12
    assert "task.noise" not in start


def test_hparams_constants_are_tensorboards():
    assert (tb_events.HPARAMS_PLUGIN, tb_events.HPARAMS_VERSION) == (metadata.PLUGIN_NAME, metadata.PLUGIN_DATA_VERSION)
    assert (tb_events.EXPERIMENT_TAG, tb_events.SESSION_START_TAG, tb_events.SESSION_END_TAG) == (
        metadata.EXPERIMENT_TAG, metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG)


@pytest.mark.parametrize("size", [0, 1, 7, 300])
def test_checksum_is_tensorflows(size):
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

    data = os.urandom(size)
    assert masked_crc32c(data) == reference(data)
    assert tb_events.crc32c(b"123456789") == 0xE3069283  # CRC-32C's standard check value


def test_writers_in_one_directory_get_their_own_files(tmp_path):
    first, second = EventWriter(tmp_path), EventWriter(tmp_path)
    first.add_summary(Summary(value=[Summary.Value(tag="a", simple_value=1.0)]), 1)
    second.add_summary(Summary(value=[Summary.Value(tag="b", simple_value=2.0)]), 1)
    first.close(), second.close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    assert sorted(load(tmp_path).Tags()["scalars"]) == ["a", "b"]


def test_a_later_writer_sorts_after_the_files_already_there(tmp_path):
    """Readers take a run's event files in name order: a resumed run's file (a purge step) must come after the
    interrupted run's, even one written later within the same second or by a lower pid."""
    earlier = tmp_path / f"events.out.tfevents.{int(time.time()) + 100:010d}.host.99999.7"
    earlier.write_bytes(b"")
    writer = EventWriter(tmp_path, purge_step=5)
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir())[-1] == Path(writer.file.name).name
