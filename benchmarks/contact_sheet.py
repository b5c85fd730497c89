"""Contact sheet of a result beside its inputs: the image, driving frames on top, output frames below.

`python benchmarks/contact_sheet.py OUTPUT DRIVING IMAGE SHEET.png [--frames 5] [--height 260]`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marionet.media.video import VideoInfo, probe_video, read_frames  # noqa: E402


def _fit(rgb: np.ndarray, height: int) -> np.ndarray:
    return cv2.resize(
        rgb, (round(rgb.shape[1] * height / rgb.shape[0]), height), interpolation=cv2.INTER_AREA
    )


def _frames_at(
    path: Path, picks: set[int], height: int, info: VideoInfo | None = None
) -> dict[int, np.ndarray]:
    return {i: _fit(rgb, height) for i, _, rgb in read_frames(path, info, max_side=2 * height) if i in picks}


def contact_sheet(output: Path, driving: Path, image: Path, count: int = 5, height: int = 260) -> np.ndarray:
    """Top row: the image then driving frames; bottom row: a blank tile then the output at the same times."""
    output_info = probe_video(output)
    total = output_info.frame_count
    picks = sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})
    top = _frames_at(driving, set(picks), height)
    bottom = _frames_at(output, set(picks), height, output_info)
    still = _fit(cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB), height)
    gap = np.full((height, 6, 3), 255, np.uint8)
    rows = []
    for first, tiles in ((still, top), (np.full_like(still, 255), bottom)):
        row = [first, gap]
        for i in picks:
            tile = tiles[i]
            width = max(top[i].shape[1], bottom[i].shape[1])
            padded = np.full((height, width, 3), 255, np.uint8)
            padded[:, : tile.shape[1]] = tile
            row += [padded, gap]
        rows.append(np.hstack(row))
    return np.vstack([rows[0], np.full((6, rows[0].shape[1], 3), 255, np.uint8), rows[1]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output", type=Path)
    parser.add_argument("driving", type=Path)
    parser.add_argument("image", type=Path)
    parser.add_argument("sheet", type=Path)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--height", type=int, default=260)
    args = parser.parse_args()
    sheet = contact_sheet(args.output, args.driving, args.image, args.frames, args.height)
    cv2.imwrite(str(args.sheet), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"{args.sheet}: {sheet.shape[1]}x{sheet.shape[0]}, {args.sheet.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
