"""What both comparison scripts share: the Debian package's Fashion-MNIST as numpy arrays,
split as the reference model is (first 55000 images to train, last 5000 to validate), and
the command-line options, and the one-line JSON summary run.sh reads."""

import argparse
import gzip
import json
import os
import struct

import numpy as np

DATA_DIR = os.environ.get("SAE_DATA", "/usr/share/datasets/fashion-mnist")


def read_idx(name):
    """An IDX file (gzipped or not) from DATA_DIR as a numpy array."""
    for candidate in (name + ".gz", name):
        path = os.path.join(DATA_DIR, candidate)
        if os.path.exists(path):
            opener = gzip.open if candidate.endswith(".gz") else open
            with opener(path, "rb") as f:
                data = f.read()
            break
    else:
        raise SystemExit(
            f"{name} not found in {DATA_DIR}: apt-get install -y dataset-fashion-mnist"
        )
    zero, dtype, rank = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise SystemExit(f"{name}: not a u8 IDX file")
    dims = struct.unpack(">" + "I" * rank, data[4 : 4 + 4 * rank])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * rank).reshape(dims)


def training_data():
    """(train, valid) as float32 in [0, 1], shape (N, 784)."""
    images = read_idx("train-images-idx3-ubyte").reshape(-1, 784).astype(np.float32) / 255.0
    return images[:55000], images[55000:]


def arguments(description):
    """The options both scripts take."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args()


def summary(name, epoch_seconds, history, mean_coding):
    """The last line each script prints: what run.sh tabulates. Seconds per epoch are the
    mean of the epochs after the first, whose time includes Keras' graph tracing."""
    steady = epoch_seconds[1:] or epoch_seconds
    seconds_per_epoch = sum(steady) / len(steady)
    print(
        "SUMMARY "
        + json.dumps(
            {
                "name": name,
                "seconds_per_epoch": seconds_per_epoch,
                "val_loss": history[-1]["val_loss"],
                "val_rounded_accuracy": history[-1]["val_rounded_accuracy"],
                "mean_coding_activation": mean_coding,
                "epochs": len(history),
            }
        ),
        flush=True,
    )
