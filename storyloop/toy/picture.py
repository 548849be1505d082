"""A picture of one held-out story: its references, then each variant's frames, side by side."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from storyloop.toy.render import render


def story_sheet(scenarios, images: dict[str, list], story_id: str, path: Path, scale: int = 2) -> Path:
    idx = [i for i, sc in enumerate(scenarios) if sc.story_id == story_id]
    refs = scenarios[idx[0]].references
    rows = [("references", [render(f) for f in refs]), ("asked (truth)", [render(scenarios[i].asked) for i in idx])]
    rows += [(name, [imgs[i] for i in idx]) for name, imgs in images.items()]
    cell, label_w = 64 * scale, 110
    width = label_w + cell * max(len(r[1]) for r in rows)
    sheet = Image.new("RGB", (width, cell * len(rows)), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    for r, (name, tiles) in enumerate(rows):
        d.text((6, r * cell + cell // 2 - 6), name, fill=(0, 0, 0))
        for c, tile in enumerate(tiles):
            sheet.paste(tile.resize((cell, cell), Image.NEAREST), (label_w + c * cell, r * cell))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
