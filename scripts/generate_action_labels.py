#!/usr/bin/env python
"""Write ``charades_action_labels.csv`` (the handler's class list) from a
dataset in the Charades layout, as the reference example's labels file:
an index column and an ``action_labels`` column of list literals, one row
per training video. The handler's classes are the sorted set of its labels.

    python scripts/generate_action_labels.py --data-dir data
    python scripts/generate_action_labels.py --annotations Charades/Charades_v1_train.csv \
        --classes Charades/Charades_v1_classes.txt --video-dir Charades_v1_480 --no-video-check
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from minimmf.datasets.builders.charades._utils import (
    make_charades_df,
    read_action_labels,
    write_action_labels_csv,
)

LAYOUT = Path("datasets/charades/defaults")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="env.data_dir holding datasets/charades/defaults/... (default ./data)")
    parser.add_argument("--annotations", type=Path, help="a Charades_v1_<split>.csv (overrides --data-dir)")
    parser.add_argument("--classes", type=Path, help="Charades_v1_classes.txt (overrides --data-dir)")
    parser.add_argument("--video-dir", type=Path, help="the folder of <id>.mp4 videos (overrides --data-dir)")
    parser.add_argument("--no-video-check", action="store_true",
                        help="keep rows whose video file is absent (annotations only)")
    parser.add_argument("--out", type=Path, default=Path("charades_action_labels.csv"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.data_dir / LAYOUT
    annotations = args.annotations or root / "Charades" / "Charades_v1_train.csv"
    classes = args.classes or root / "Charades" / "Charades_v1_classes.txt"
    video_dir = args.video_dir or root / "Charades_v1_480"
    for path in (annotations, classes):
        if not path.is_file():
            print(f"error: {path} not found; point --data-dir (or --annotations/--classes) at a Charades dataset, "
                  "e.g. one made by scripts/make_synthetic_charades.py", file=sys.stderr)
            return 2
    df = make_charades_df(annotations, video_dir, classes, require_videos=not args.no_video_check)
    write_action_labels_csv(df, args.out)
    print(f"wrote {args.out}: {len(df)} videos, {len(read_action_labels(args.out))} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
