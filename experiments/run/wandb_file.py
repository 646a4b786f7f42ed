"""wandb's run file (``run-<id>.wandb``): its records, and waiting until wandb has written the
last one (``Logger.close`` in offline mode), so a run can be read back or synced at once."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

# wandb's transaction log (the `.wandb` file) is a LevelDB log: a 7-byte file header, then
# 32 KiB blocks of records. Each record has a 7-byte header: the plain CRC-32 (zlib) of
# type byte + payload, payload length (uint16 LE), type. A payload larger than the space left
# in a block is split FIRST, MIDDLE..., LAST; a block tail shorter than a header is zero padding.
_WANDB_MAGIC = b":W&B"
_FILE_HEADER = struct.Struct("<4sHB")
_RECORD_HEADER = struct.Struct("<IHB")
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_records(data: bytes) -> list[bytes]:
    """Payloads of the records in a ``.wandb`` log, in order.

    A truncated final record (a writer killed mid-record) ends the log; a checksum mismatch or
    an out-of-order fragment raises ValueError.
    """
    if len(data) < _FILE_HEADER.size:
        raise ValueError(f"not a wandb log: {len(data)} bytes, shorter than its header")
    ident, magic, version = _FILE_HEADER.unpack_from(data, 0)
    if ident != _WANDB_MAGIC or magic != 0xBEE1 or version != 0:
        raise ValueError(f"not a wandb log (header {data[:7]!r}, expected b':W&B\\xe1\\xbe\\x00')")
    payloads: list[bytes] = []
    pending: list[bytes] | None = None
    pos = _FILE_HEADER.size
    while pos < len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _RECORD_HEADER.size:
            pos += left_in_block
            continue
        if pos + _RECORD_HEADER.size > len(data):
            break
        crc, length, kind = _RECORD_HEADER.unpack_from(data, pos)
        start = pos + _RECORD_HEADER.size
        if start + length > len(data):
            break
        if kind == 0 and length == 0 and crc == 0:
            # Zero fill: the writer pre-allocated or padded the rest of the block.
            pos += left_in_block
            continue
        payload = data[start : start + length]
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) != crc:
            raise ValueError(f"wandb log checksum mismatch in the record at byte {pos}")
        pos = start + length
        if kind == _FULL and pending is None:
            payloads.append(payload)
        elif kind == _FIRST and pending is None:
            pending = [payload]
        elif kind == _MIDDLE and pending is not None:
            pending.append(payload)
        elif kind == _LAST and pending is not None:
            pending.append(payload)
            payloads.append(b"".join(pending))
            pending = None
        else:
            raise ValueError(f"wandb log record of type {kind} out of sequence at byte {pos}")
    return payloads


def wait_for_exit_record(path: Path, timeout_s: float) -> None:
    """Blocks until the run file at ``path`` holds wandb's exit record.

    ``Run.finish()`` returns when wandb-core has processed the exit, but the core flushes and
    closes the run file afterwards, asynchronously: read at once, the file can still be only
    its 7-byte header.
    """
    from wandb.proto import wandb_internal_pb2

    deadline = time.monotonic() + timeout_s
    while True:
        if path.exists() and path.stat().st_size > _FILE_HEADER.size:
            # The exit record is among the last few; parsing only those keeps polling cheap.
            for payload in read_records(path.read_bytes())[-16:]:
                record = wandb_internal_pb2.Record()
                record.ParseFromString(payload)
                if record.WhichOneof("record_type") == "exit":
                    return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"wandb did not finish writing {path} within {timeout_s:.0f} s after the run "
                f"finished; the file may be incomplete (check {path.parent / 'logs'})"
            )
        time.sleep(0.02)
