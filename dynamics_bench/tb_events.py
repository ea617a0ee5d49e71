"""TensorBoard event files, written directly: Event protos framed as TFRecords, without torch.utils.tensorboard.

Importing torch.utils.tensorboard (which imports tensorboard.summary and every plugin's summary ops) takes ~0.2 s,
a tenth of a small run's start-up; this writer needs only the protos (~0.02 s). It writes what SummaryWriter
writes, so TensorBoard and its EventAccumulator read the same: the file-version event, then one event per
add_summary, and add_hparams's three hparams-plugin summaries with the metrics as scalars at step 0
(SummaryWriter.add_hparams's records, in this run's own file). Writes are synchronous and flushed per event: a
killed run keeps every event it logged.

Record framing (TFRecord): uint64 length, uint32 masked CRC-32C of the length, the bytes, uint32 masked CRC-32C
of the bytes, all little-endian.
"""
from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

# tensorboard.plugins.hparams.metadata's constants (that module imports the slow summary ops); a test checks them
HPARAMS_PLUGIN, HPARAMS_VERSION = "hparams", 0
EXPERIMENT_TAG = "_hparams_/experiment"
SESSION_START_TAG = "_hparams_/session_start_info"
SESSION_END_TAG = "_hparams_/session_end_info"


def _crc32c_table() -> tuple[int, ...]:
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) of each byte value."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc, table = 0xFFFFFFFF, CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum: CRC-32C rotated right by 15 bits plus a constant (mod 2³²)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """`data` framed as one TFRecord."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def _plugin_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    data.version = HPARAMS_VERSION
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=HPARAMS_PLUGIN,
                                                                      content=data.SerializeToString()))
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata)])


def hparams_summaries(hparams: dict[str, Any], metrics: dict[str, float]) -> list[Summary]:
    """The hparams plugin's experiment, session-start and session-end summaries, as SummaryWriter.add_hparams
    makes them: numbers (bools too) as float64 hparams, strings as strings; None is left out."""
    start = plugin_data_pb2.SessionStartInfo()
    infos = []
    for name, value in hparams.items():
        if value is None:
            continue
        if isinstance(value, (int, float)):
            start.hparams[name].number_value = value
            infos.append(api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_FLOAT64))
        elif isinstance(value, str):
            start.hparams[name].string_value = value
            infos.append(api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_STRING))
        else:
            raise TypeError(f"hparam {name}={value!r}: must be a number, a string or None")
    experiment = api_pb2.Experiment(hparam_infos=infos,
                                    metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=k)) for k in metrics])
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS)
    return [_plugin_summary(EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment)),
            _plugin_summary(SESSION_START_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)),
            _plugin_summary(SESSION_END_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))]


def _stamp(logdir: Path) -> int:
    """The time in a new event file's name: now, or past every file already in logdir. Readers take a run's files
    in name order, and a resumed run's file must come after the interrupted run's (within the same second, or from
    a lower pid, it would not)."""
    stamps = [int(part) for part in (p.name.split(".")[3] for p in logdir.glob("events.out.tfevents.*"))
              if part.isdigit()]
    return max([int(time.time()), *(t + 1 for t in stamps)])


class EventWriter:
    """One TensorBoard run's event file in `logdir` (created if missing), named as SummaryWriter names them."""

    _files = itertools.count()  # several writers of one process in one second still get their own file

    def __init__(self, logdir: str | Path, purge_step: int | None = None):
        """`purge_step`: as SummaryWriter's, a session restart there: readers drop the events of this run's earlier
        files at that step and after (a resumed run rewrites them)."""
        logdir = Path(logdir)
        logdir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{_stamp(logdir):010d}.{socket.gethostname()}.{os.getpid()}.{next(self._files)}"
        self.file = open(logdir / name, "wb")
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))
        if purge_step is not None:
            self._write(Event(wall_time=time.time(), step=purge_step, session_log=SessionLog(status=SessionLog.START)))

    def _write(self, event: Event) -> None:
        self.file.write(record(event.SerializeToString()))
        self.file.flush()

    def add_summary(self, summary: Summary, step: int) -> None:
        self._write(Event(wall_time=time.time(), step=step, summary=summary))

    def add_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """This run's entry in TensorBoard's HParams dashboard: `hparams` (name -> number or string) and `metrics`
        (tag -> value), the latter also as scalars at step 0, which the dashboard's columns read."""
        for summary in hparams_summaries(hparams, metrics):
            self.add_summary(summary, 0)
        self.add_summary(Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in metrics.items()]), 0)

    def close(self) -> None:
        self.file.close()
