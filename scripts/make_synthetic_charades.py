#!/usr/bin/env python
"""Write a small synthetic dataset in the exact Charades layout, where
minimmf's Charades config looks for it with ``env.data_dir=<out>``:

    <out>/datasets/charades/defaults/Charades/Charades_v1_train.csv
    <out>/datasets/charades/defaults/Charades/Charades_v1_test.csv
    <out>/datasets/charades/defaults/Charades/Charades_v1_classes.txt
    <out>/datasets/charades/defaults/Charades_v1_480/<id>.mp4   (H.264 + AAC)

Each video shows one to three actions. Every action class is learnable from
each modality on its own: a square of the class's colour moves on screen
while the action lasts, the soundtrack is the sum of the classes' tones,
and the script names the actions. In most videos the actions last the whole
video and their tones sound from the first sample (the audio pipeline reads
only the start). In a ``--localized-fraction`` of them the actions take
turns in distinct, non-overlapping intervals, square and tone present only
during their action, so that *when* is learnable and measurable (the
``actions`` column gives the intervals, as in Charades). A
``--generic-script-fraction`` of the scripts name no action, so that a
model must look and listen, not only read. What is drawn and heard, the
annotations and the scripts are deterministic given ``--seed``; the encoded
frames are not quite: from the same frames, libx264 (through PyAV) encodes
some videos a little differently from one process to the next, decoded
pixels off by up to a few tens. ``<out>`` is what
``env.data_dir`` points at.
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minimmf.datasets.builders.charades.layout import CHARADES_CSV_COLUMNS, CharadesLayout
from minimmf.utils.video_writer import write_video

ACTION_NAMES = [
    "Holding a book", "Opening a door", "Drinking from a cup", "Sitting in a chair", "Watching television",
    "Someone is sneezing", "Putting on shoes", "Tidying up a shelf", "Washing a dish", "Closing a window",
    "Eating a sandwich", "Walking through a doorway", "Playing with a phone", "Throwing a pillow",
    "Turning on a light", "Pouring into a cup", "Laughing at a picture", "Taking a towel", "Sweeping the floor",
    "Lying on a bed", "Opening a laptop", "Holding some clothes", "Standing on a chair", "Fixing a vacuum",
]
SCENES = ["Kitchen", "Bedroom", "Living room", "Bathroom", "Hallway", "Garage"]
FILLERS = ["The room is quiet.", "It is late in the evening.", "Nobody else is around.", "The light is dim.",
           "Music plays somewhere.", ""]
TONE_AMPLITUDE = 0.008  # mel power ~0.6 at the tone's bin, below the pipeline's wrap-around at 1.0


@dataclass(frozen=True)
class ActionClass:
    class_id: str
    name: str
    color: tuple[int, int, int]
    tone_hz: float


@dataclass
class Action:
    action_class: ActionClass
    start: float
    end: float
    phase: float


def action_classes(num_classes: int) -> list[ActionClass]:
    names = ACTION_NAMES + [f"Doing synthetic action {i}" for i in range(len(ACTION_NAMES), num_classes)]
    tones = np.geomspace(300.0, 6000.0, num_classes)
    classes = []
    for index in range(num_classes):
        red, green, blue = colorsys.hsv_to_rgb(index / num_classes, 0.9, 0.95)
        classes.append(ActionClass(f"c{index:03d}", names[index], (int(red * 255), int(green * 255), int(blue * 255)),
                                   float(tones[index])))
    return classes


def video_id(rng: np.random.Generator) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(rng.choice(list(alphabet), size=5))


def pick_actions(rng: np.random.Generator, classes: list[ActionClass], duration: float,
                 must_include: ActionClass | None, localized: bool) -> list[Action]:
    """One to three actions: lasting (almost) the whole video, or, ``localized``,
    taking turns in consecutive slots with a gap between them."""
    count = min(int(rng.integers(1, 4)), len(classes))
    chosen = list(rng.choice(len(classes), size=count, replace=False))
    if must_include is not None and classes.index(must_include) not in chosen:
        chosen[0] = classes.index(must_include)
    phases = [float(rng.uniform(0, 2 * np.pi)) for _ in chosen]
    if localized:
        slot = duration / count
        return [Action(classes[i], round(n * slot, 2), round((n + 0.85) * slot, 2), phase)
                for n, (i, phase) in enumerate(zip(chosen, phases, strict=True))]
    return [Action(classes[i], round(float(rng.uniform(0, 0.15 * duration)), 2),
                   round(float(rng.uniform(0.85 * duration, duration)), 2), phase)
            for i, phase in zip(chosen, phases, strict=True)]


def render_frame(actions: list[Action], t: float, width: int, height: int, background: np.ndarray) -> np.ndarray:
    frame = background.copy()
    side = max(8, height // 4)
    for slot, action in enumerate(actions):
        if not action.start <= t <= action.end:
            continue
        center_y = int((slot + 1) * height / (len(actions) + 1))
        center_x = int(width / 2 + (width / 2 - side) * np.sin(2 * np.pi * t / 2.0 + action.phase))
        top, left = max(0, center_y - side // 2), max(0, center_x - side // 2)
        frame[top : top + side, left : left + side] = action.action_class.color
    return frame


def soundtrack(actions: list[Action], duration: float, rate: int, rng: np.random.Generator,
               localized: bool) -> np.ndarray:
    """Each action's tone: all along, or (``localized``) only during its action."""
    # Quiet tones: the Charades audio pipeline turns mel power into bytes by
    # multiplying by 255 and wrapping, so louder tones would alias into noise.
    t = np.arange(int(duration * rate)) / rate

    def heard(action: Action) -> np.ndarray:
        return ((t >= action.start) & (t <= action.end)).astype(np.float64) if localized else np.ones_like(t)

    audio = sum(TONE_AMPLITUDE * heard(a) * np.sin(2 * np.pi * a.action_class.tone_hz * t + a.phase) for a in actions)
    audio = audio + rng.normal(0, 1e-4, size=t.shape)
    return np.clip(audio, -1, 1).astype(np.float32)[None, :]


def write_example(path: Path, actions: list[Action], args: argparse.Namespace, rng: np.random.Generator,
                  localized: bool) -> None:
    background = np.clip(rng.normal(60, 12, size=(args.height, args.width, 3)), 0, 255).astype(np.uint8)
    frames = (render_frame(actions, index / args.fps, args.width, args.height, background)
              for index in range(int(round(args.duration * args.fps))))
    write_video(path, frames, fps=args.fps, audio=soundtrack(actions, args.duration, args.audio_rate, rng, localized),
                audio_rate=args.audio_rate, video_options={"preset": "veryfast", "crf": "23"})


def script_for(actions: list[Action], rng: np.random.Generator, generic: bool) -> str:
    """The actions in order, or (``generic``) a script that names none of them."""
    if generic:
        text = "A person is at home."
    else:
        phrases = [a.action_class.name[0].lower() + a.action_class.name[1:] for a in actions]
        text = "In this video: " + ", then ".join(phrases) + "."
    return f"{text} {rng.choice(FILLERS)}".strip()


def progress(items: range, description: str, quiet: bool) -> Iterator[int]:
    """``items``, with a tqdm bar on a terminal; elsewhere (a log file, a pipe)
    a line at every tenth, since a bar's redraws would make one huge line."""
    if quiet or sys.stderr.isatty():
        yield from tqdm(items, desc=description, unit="video", disable=quiet)
        return
    step = max(1, len(items) // 10)
    for done, item in enumerate(items, start=1):
        yield item
        if done % step == 0 or done == len(items):
            print(f"{description}: {done}/{len(items)}", file=sys.stderr, flush=True)


def write_split(name: str, count: int, classes: list[ActionClass], layout: CharadesLayout, args: argparse.Namespace,
                rng: np.random.Generator, used_ids: set[str]) -> None:
    annotations, videos = layout.annotations[name][0], layout.videos[name][0]
    rows = []
    for index in progress(range(count), f"{name} videos", args.quiet):
        vid = video_id(rng)
        while vid in used_ids:
            vid = video_id(rng)
        used_ids.add(vid)
        # the training split shows every class at least once
        must_include = classes[index] if name == "train" and index < len(classes) else None
        localized = bool(rng.random() < args.localized_fraction)
        actions = pick_actions(rng, classes, args.duration, must_include, localized)
        write_example(videos / f"{vid}.mp4", actions, args, rng, localized)
        generic_script = bool(rng.random() < args.generic_script_fraction)
        rows.append({
            "id": vid, "subject": f"S{int(rng.integers(1, 99)):02d}", "scene": str(rng.choice(SCENES)),
            "quality": int(rng.integers(3, 8)), "relevance": int(rng.integers(4, 8)), "verified": "Yes",
            "script": script_for(actions, rng, generic_script), "objects": "", "descriptions": "",
            "actions": ";".join(f"{a.action_class.class_id} {a.start:.2f} {a.end:.2f}" for a in actions),
            "length": f"{args.duration:.2f}",
        })
    with open(annotations, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CHARADES_CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written, each option with its default (flags have none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is False else super()._get_help_string(action)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data"), help="data root (env.data_dir)")
    parser.add_argument("--num-classes", type=int, default=8, help="action classes")
    parser.add_argument("--num-train", type=int, default=100, help="training videos")
    parser.add_argument("--num-test", type=int, default=24, help="test videos (the val and test splits)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per video")
    parser.add_argument("--width", type=int, default=160, help="frame width in pixels (even)")
    parser.add_argument("--height", type=int, default=120, help="frame height in pixels (even)")
    parser.add_argument("--fps", type=float, default=12.0, help="frames per second")
    parser.add_argument("--audio-rate", type=int, default=16000, help="audio samples per second")
    parser.add_argument("--localized-fraction", type=float, default=0.5,
                        help="share of videos whose actions take turns in distinct intervals")
    parser.add_argument("--generic-script-fraction", type=float, default=0.3,
                        help="share of videos whose script names none of their actions")
    parser.add_argument("--seed", type=int, default=0, help="fixes annotations, scripts, frames and sounds")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or lines")
    parser.add_argument("--skip-existing", action="store_true",
                        help="do nothing when <out> already holds a training split")
    args = parser.parse_args(argv)
    if args.num_classes < 1 or args.num_train < args.num_classes:
        parser.error("need at least one class and at least as many training videos as classes")
    if args.width % 2 or args.height % 2:
        parser.error("H.264 needs an even width and height")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    layout = CharadesLayout.default(args.out)
    if args.skip_existing and layout.annotations["train"][0].is_file():
        print(f"a Charades training split is already in {layout.annotations['train'][0].parent}")
        return 0
    for split in ("train", "test"):
        layout.annotations[split][0].parent.mkdir(parents=True, exist_ok=True)
        layout.videos[split][0].mkdir(parents=True, exist_ok=True)
    layout.classes_file.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    classes = action_classes(args.num_classes)
    with open(layout.classes_file, "w", encoding="utf-8") as handle:
        handle.writelines(f"{c.class_id} {c.name}\n" for c in classes)
    used_ids: set[str] = set()
    write_split("train", args.num_train, classes, layout, args, rng, used_ids)
    write_split("test", args.num_test, classes, layout, args, rng, used_ids)
    print(f"wrote {args.num_train} training and {args.num_test} test videos of {args.num_classes} classes "
          f"under {layout.classes_file.parent.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
