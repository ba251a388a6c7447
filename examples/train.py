"""A small training script with no ML dependencies: fits y = 3x + 1 by gradient descent.

It prints each epoch's loss, reports progress with the `::progress` marker line, writes a checkpoint
after every epoch, and on SIGTERM (cancel) saves a last checkpoint before it exits.
Submit it as a command task:  python examples/train.py --epochs 5 --checkpoint-dir /tmp/ckpt
Without --checkpoint-dir, each job keeps its own folder checkpoints/<request id> (the worker gives every job its
request id in SCALABLEJOB_REQUEST_ID), so a burst of jobs never overwrites one checkpoint; run by hand, it is
checkpoints/local.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from types import FrameType

REQUEST_ID_ENV = "SCALABLEJOB_REQUEST_ID"


def default_checkpoint_dir() -> Path:
    """One folder per job: jobs of a burst run at once and must not write the same file."""
    return Path("checkpoints") / os.environ.get(REQUEST_ID_ENV, "local")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--epoch-seconds", type=float, default=0.5, help="pause per epoch, to watch it live")
    parser.add_argument(
        "--checkpoint-dir", type=Path, default=default_checkpoint_dir(),
        help=f"where checkpoint.json goes (default: checkpoints/${REQUEST_ID_ENV}, or checkpoints/local)",
    )  # fmt: skip
    return parser.parse_args()


def save(checkpoint_dir: Path, epoch: int, weights: tuple[float, float], loss: float) -> Path:
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_dir / "checkpoint.json"
    path.write_text(json.dumps({"epoch": epoch, "w": weights[0], "b": weights[1], "loss": loss}))
    return path


def main() -> None:
    args = parse_args()
    rng = random.Random(0)
    data = [(x, 3 * x + 1 + rng.gauss(0, 0.1)) for x in (rng.uniform(-1, 1) for _ in range(256))]
    w, b, loss, epoch = 0.0, 0.0, float("inf"), 0

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        print(f"cancelled at epoch {epoch}: checkpoint {save(args.checkpoint_dir, epoch, (w, b), loss)}", flush=True)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    for epoch in range(1, args.epochs + 1):
        for _ in range(5):
            grad_w = sum(2 * (w * x + b - y) * x for x, y in data) / len(data)
            grad_b = sum(2 * (w * x + b - y) for x, y in data) / len(data)
            w, b = w - args.lr * grad_w, b - args.lr * grad_b
        loss = sum((w * x + b - y) ** 2 for x, y in data) / len(data)
        print(f"epoch {epoch}/{args.epochs} loss {loss:.5f} w {w:.3f} b {b:.3f}", flush=True)
        print(f"::progress {epoch / args.epochs:.4f} epoch {epoch}/{args.epochs}", flush=True)
        save(args.checkpoint_dir, epoch, (w, b), loss)
        time.sleep(args.epoch_seconds)
    print(f"done: checkpoint {args.checkpoint_dir / 'checkpoint.json'}", flush=True)


if __name__ == "__main__":
    main()
