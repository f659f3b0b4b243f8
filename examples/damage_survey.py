"""Survey of random mid-stream damage (issue 12 fault 1): how many delivered frames show another frame's picture.

    PYTHONPATH=. python examples/damage_survey.py [--examples 120] [--seed 0]

Synthetic H.264 videos (64x64, 60 or 150 frames, GOP 12 or 250, mkv/mp4/mpegts) whose frames show their
own number (tests/numbered_video.py) get 1-8000 random bytes written from 10-100% of the file. Counted over
all examples: frames delivered, frames whose picture reads as another frame's number (an index error, or a
stale/concealed picture), and frames whose picture reads as no number (damage the decoder did not report).
FFmpeg's frame threading makes concealment vary a little from run to run.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from numbered_video import damage, read_number, write_numbered_video  # noqa: E402

from vce_stream.errors import InputError  # noqa: E402
from vce_stream.sources import VideoSource  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp())
    clean: dict[tuple[str, int, int], bytes] = {}
    totals = {"examples": 0, "with a misplaced picture": 0, "delivered": 0, "misplaced pictures": 0, "unreadable pictures": 0}
    for k in range(args.examples):
        ext, count, gop = rng.choice(["ts", "mkv", "mp4"]), rng.choice([60, 150]), rng.choice([12, 250])
        if (ext, count, gop) not in clean:
            path = work / f"clean_{count}_{gop}.{ext}"
            clean[ext, count, gop] = write_numbered_video(path, count, fmt="mpegts" if ext == "ts" else None, gop=gop).read_bytes()
        data = clean[ext, count, gop]
        damaged = work / f"damaged.{ext}"
        damaged.write_bytes(damage(data, int(rng.uniform(0.1, 1.0) * (len(data) - 1)), rng.randint(1, 8000), seed=k))
        got = []
        try:
            source = VideoSource(damaged)
            for index, frame in source.frames():
                got.append((index, read_number(frame.to_ndarray(format="rgb24"))))
        except InputError:
            pass
        wrong = [(i, n) for i, n in got if n is not None and n != i]
        totals["examples"] += 1
        totals["with a misplaced picture"] += bool(wrong)
        totals["delivered"] += len(got)
        totals["misplaced pictures"] += len(wrong)
        totals["unreadable pictures"] += sum(n is None for _, n in got)
    for name, value in totals.items():
        print(f"{name:>26}: {value}")


if __name__ == "__main__":
    main()
