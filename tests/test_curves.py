"""Training curves as TensorBoard event files beside the CSVs (attrgan.train.curves)."""

from __future__ import annotations

import struct

from tensorboardX.proto import event_pb2

from attrgan.train.curves import EVENTS_FILE, Curves, write_curves


def read_scalars(data: bytes) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} from TFRecord-framed Event protos (length, crc, event, crc)."""
    out: dict[str, list[tuple[int, float]]] = {}
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
        pos += 12 + length + 4
        for value in event.summary.value:
            out.setdefault(value.tag, []).append((event.step, round(value.simple_value, 6)))
    return out


def test_tensorboard_events_hold_each_epoch_once(tmp_path):
    curves = Curves()
    curves.add_epoch({"epoch": 0, "step": 2, "images_per_s": 10.0, "lr": 0.002, "train_l_g_pix": 2.0,
                      "val_psnr": 14.5, "step_log": []})
    curves.add_epoch({"epoch": 1, "step": 4, "images_per_s": 12.0, "lr": 0.002, "train_l_g_pix": 1.5,
                      "val_psnr": 15.0, "step_log": []})
    curves.add_epoch({"epoch": 1, "step": 4, "images_per_s": 12.0, "lr": 0.002, "train_l_g_pix": 1.25,
                      "val_psnr": 15.5, "step_log": []})  # a retried epoch replaces the first try
    write_curves(str(tmp_path), curves)
    scalars = read_scalars((tmp_path / EVENTS_FILE).read_bytes())
    assert scalars["train/l_g_pix"] == [(1, 2.0), (2, 1.25)]
    assert scalars["val/psnr"] == [(1, 14.5), (2, 15.5)]
    assert scalars["lr"] == [(1, 0.002), (2, 0.002)] and scalars["images_per_s"] == [(1, 10.0), (2, 12.0)]
    assert (tmp_path / "epochs.csv").is_file() and (tmp_path / "curves.png").is_file()
