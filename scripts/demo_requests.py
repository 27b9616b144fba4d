#!/usr/bin/env python
"""Write an info.json (script and true labels) for held-out Charades videos,
in the reference's format, so that request.py can send them.

    python scripts/demo_requests.py --data-dir data --count 5 --out demo_requests/
    python scripts/demo_requests.py --data-dir data --count 1 --copy-first demo

prints one ``<video> <info.json>`` line per video. With ``--copy-first NAME``
the first video is also copied to NAME.mp4 and its info to NAME.info.json
(request.py's defaults). With ``--taking-turns``, only videos whose actions
happen one after the other (for a timeline).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from minimmf.datasets.builders.charades.layout import (
    CharadesLayout,
    parse_action_intervals,
    read_classes_file,
    takes_turns,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("demo_requests"))
    parser.add_argument("--copy-first", help="also write NAME.mp4 and NAME.info.json for the first video")
    parser.add_argument("--taking-turns", action="store_true", help="only videos whose actions take turns")
    args = parser.parse_args(argv)
    layout = CharadesLayout.default(args.data_dir)
    try:
        df = layout.read_split(args.split)
    except FileNotFoundError as error:
        print(f"error: {error.filename or error} not found: make the data first (make demo)", file=sys.stderr)
        return 2
    if args.taking_turns:
        names = read_classes_file(layout.classes_file)
        df = df[[takes_turns(parse_action_intervals(actions, names)) for actions in df["actions"]]]
    if df.empty:
        print(f"error: no such {args.split} videos in {args.data_dir}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for position, (_, row) in enumerate(df.head(args.count).iterrows()):
        info = {"script": row["script"], "action_labels": row["action_labels"]}
        info_path = args.out / f"{row['id']}.info.json"
        info_path.write_text(json.dumps(info) + "\n")
        print(row["path"], info_path)
        if position == 0 and args.copy_first:
            shutil.copyfile(row["path"], f"{args.copy_first}.mp4")
            shutil.copyfile(info_path, f"{args.copy_first}.info.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
