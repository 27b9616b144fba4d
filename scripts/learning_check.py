#!/usr/bin/env python
"""Learning check: the tiny config must learn the synthetic Charades.

Generates the dataset if needed (8 classes, 100 training and 24 held-out
videos), trains with ``mmf_run`` (tiny config, run_type=train_val) and reads
the held-out ``multilabel_micro_f1`` of the final (best) model. Prints the
figure, the updates and the wall time; exits 1 below ``--min-f1``. A check
kept as a script, not a test: it takes several minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "learning_check")
    parser.add_argument("--save-dir", type=Path, default=ROOT / "save" / "learning_check")
    parser.add_argument("--min-f1", type=float, default=0.9)
    parser.add_argument("overrides", nargs="*", help="extra mmf_run key=value overrides")
    args = parser.parse_args(argv)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_synthetic_charades.py"), "--out", str(args.data_dir),
                    "--num-classes", "8", "--num-train", "100", "--num-test", "24", "--skip-existing"], check=True)
    started = time.time()
    subprocess.run([sys.executable, "-m", "minimmf.cli.run",
                    f"config={ROOT / 'projects/mmf_transformer/configs/charades/tiny.yaml'}", "run_type=train_val",
                    "dataset=charades", "model=mmf_transformer", f"env.data_dir={args.data_dir}",
                    f"env.save_dir={args.save_dir}", *args.overrides], check=True, cwd=ROOT)
    wall = time.time() - started
    metrics = pd.read_csv(args.save_dir / "metrics.csv")
    f1 = metrics[metrics["name"] == "val/charades/multilabel_micro_f1"]
    # the last evaluation is the best model's, after all training updates
    updates, final_f1 = int(f1["update"].iloc[-1]), float(f1["value"].iloc[-1])
    held_out_map = metrics[metrics["name"] == "val/charades/map"]["value"].iloc[-1]
    print(f"\nlearning check: held-out multilabel_micro_f1 = {final_f1:.3f} (map {held_out_map:.3f}) after "
          f"{updates} updates, {wall / 60:.1f} min wall time; curves in {args.save_dir / 'curves.png'}")
    if final_f1 < args.min_f1:
        print(f"FAILED: below {args.min_f1}", file=sys.stderr)
        return 1
    print(f"passed (>= {args.min_f1})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
