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

import pandas as pd

from minimmf.datasets.builders.charades.layout import (
    CharadesLayout,
    make_charades_df,
    read_action_labels,
    write_action_labels_csv,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="env.data_dir of a dataset in minimmf's Charades layout (default ./data)")
    parser.add_argument("--annotations", type=Path, help="a Charades_v1_<split>.csv (overrides --data-dir)")
    parser.add_argument("--classes", type=Path, help="Charades_v1_classes.txt (overrides --data-dir)")
    parser.add_argument("--video-dir", type=Path, help="the folder of <id>.mp4 videos (overrides --data-dir)")
    parser.add_argument("--no-video-check", action="store_true",
                        help="keep rows whose video file is absent (annotations only)")
    parser.add_argument("--out", type=Path, default=Path("charades_action_labels.csv"))
    return parser.parse_args(argv)


def training_videos(args: argparse.Namespace) -> pd.DataFrame:
    """The training split's rows: every annotation file the layout lists, or the files given."""
    layout = CharadesLayout.default(args.data_dir)
    if not (args.annotations or args.classes or args.video_dir):
        return layout.read_split("train", require_videos=not args.no_video_check)
    return make_charades_df(args.annotations or layout.annotations["train"][0],
                            args.video_dir or layout.videos["train"][0], args.classes or layout.classes_file,
                            require_videos=not args.no_video_check)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        df = training_videos(args)
    except FileNotFoundError as error:
        print(f"error: {error.filename or error} not found; point --data-dir (or --annotations/--classes) at a "
              "Charades dataset, e.g. one made by scripts/make_synthetic_charades.py", file=sys.stderr)
        return 2
    write_action_labels_csv(df, args.out)
    print(f"wrote {args.out}: {len(df)} videos, {len(read_action_labels(args.out))} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
