"""Drawing toy frames: PIL shapes at 4x, downsampled to the frame size (anti-aliased)."""

from __future__ import annotations

from PIL import Image, ImageDraw

from storyloop.toy.world import ASIDE, COLORS, GROUNDS, HAT_COLORS, SKIES, Character, Frame

SCALE = 4
SCARF, BAG, STICK, OUTLINE = (0, 170, 170), (150, 90, 40), (90, 55, 20), (15, 15, 15)
HORIZON = 0.66  # share of the height that is sky
COMPANION_X = 0.78  # where a companion stands (and a character drawn ASIDE): its centre, as a share of the width


def _pastel(rgb, style):
    return tuple(int(c + (255 - c) * 0.55) for c in rgb) if style == "pastel" else tuple(rgb)


def _shade(rgb, f):
    return tuple(max(0, int(c * f)) for c in rgb)


def draw_character(d: ImageDraw.ImageDraw, ch: Character, cx: float, base: float, height: float, style: str,
                   size: int) -> None:
    """A character standing on `base` (y), centred at `cx`, `height` tall (body + hat), in pixels."""
    body_h = height * 0.72
    w = {"round": 0.8, "square": 0.75, "tall": 0.48, "pointy": 0.85}[ch.shape] * body_h
    top = base - body_h
    left, right = cx - w / 2, cx + w / 2
    fill = _pastel(COLORS[ch.color], style)
    outline = OUTLINE if style == "outlined" else None
    ow = 2 * SCALE if outline else 0
    box = [left, top, right, base]
    if ch.shape == "round":
        d.ellipse(box, fill=fill, outline=outline, width=ow)
    elif ch.shape in ("square", "tall"):
        d.rounded_rectangle(box, radius=w * 0.12, fill=fill, outline=outline, width=ow)
    else:
        d.polygon([(cx, top), (right, base), (left, base)], fill=fill, outline=outline, width=ow)
    if style == "striped":  # texture: darker horizontal bands across the body
        band = body_h / 7
        for i in range(1, 7, 2):
            y0 = top + i * band
            inset = 0 if ch.shape != "pointy" else (w / 2) * (1 - (y0 - top) / body_h)
            x0, x1 = left + inset + w * 0.08, right - inset - w * 0.08
            if x1 > x0:
                d.rectangle([x0, y0, x1, y0 + band * 0.6], fill=_shade(fill, 0.72))
    # Eyes
    ey = top + body_h * (0.42 if ch.shape == "pointy" else 0.3)
    for dx in (-0.16, 0.16):
        ex, r = cx + dx * w * (0.9 if ch.shape != "tall" else 1.3), max(body_h * 0.07, SCALE * 1.2)
        d.ellipse([ex - r, ey - r, ex + r, ey + r], fill=(255, 255, 255))
        d.ellipse([ex - r * 0.5, ey - r * 0.5, ex + r * 0.5, ey + r * 0.5], fill=(0, 0, 0))
    # Hat, on the top of the body
    hat_col = _pastel(HAT_COLORS[ch.hat_color], style)
    hw, hh = w * 0.55, height * 0.26
    hat_base = top + (body_h * 0.08 if ch.shape in ("round",) else 0) + (body_h * 0.05 if ch.shape == "pointy" else 0)
    if ch.hat == "cap":
        d.chord([cx - hw / 2, hat_base - hh * 0.9, cx + hw / 2, hat_base + hh * 0.5], 180, 360, fill=hat_col,
                outline=outline, width=ow)
        d.rectangle([cx, hat_base - hh * 0.12, cx + hw * 0.75, hat_base + hh * 0.05], fill=hat_col)
    elif ch.hat == "tophat":
        d.rectangle([cx - hw * 0.35, hat_base - hh * 1.2, cx + hw * 0.35, hat_base], fill=hat_col, outline=outline,
                    width=ow)
        d.rectangle([cx - hw * 0.6, hat_base - hh * 0.18, cx + hw * 0.6, hat_base + hh * 0.05], fill=hat_col)
    elif ch.hat == "crown":
        y0, y1 = hat_base - hh * 0.9, hat_base
        pts = [(cx - hw / 2, y1), (cx - hw / 2, y0), (cx - hw / 4, y0 + hh * 0.45), (cx, y0),
               (cx + hw / 4, y0 + hh * 0.45), (cx + hw / 2, y0), (cx + hw / 2, y1)]
        d.polygon(pts, fill=hat_col, outline=outline, width=ow)
    # Accessory
    if ch.accessory == "scarf":
        sy = top + body_h * 0.55
        d.rectangle([left + w * 0.08, sy, right - w * 0.08, sy + body_h * 0.12], fill=_pastel(SCARF, style))
        d.rectangle([cx + w * 0.1, sy, cx + w * 0.25, sy + body_h * 0.35], fill=_pastel(SCARF, style))
    elif ch.accessory == "bag":
        bx = right - w * 0.05
        d.rectangle([bx, base - body_h * 0.45, bx + w * 0.35, base - body_h * 0.15], fill=_pastel(BAG, style),
                    outline=outline, width=ow)
    elif ch.accessory == "stick":
        sx = left - w * 0.08
        d.line([(sx, base - body_h * 0.85), (sx - w * 0.1, base + size * 0.02)], fill=_pastel(STICK, style),
               width=int(3 * SCALE))


def render(frame: Frame, size: int = 64) -> Image.Image:
    big = size * SCALE
    img = Image.new("RGB", (big, big), _pastel(SKIES[frame.sky], frame.style))
    d = ImageDraw.Draw(img)
    horizon = big * HORIZON
    d.rectangle([0, horizon, big, big], fill=_pastel(GROUNDS[frame.ground], frame.style))
    if frame.sky == "night":
        for x, y in ((0.1, 0.1), (0.3, 0.22), (0.55, 0.08), (0.8, 0.18), (0.92, 0.35), (0.42, 0.4)):
            r = SCALE * 1.0
            d.ellipse([x * big - r, y * big - r, x * big + r, y * big + r], fill=(250, 250, 210))
    if frame.style == "outlined":
        d.line([(0, horizon), (big, horizon)], fill=OUTLINE, width=2 * SCALE)
    base = big * 0.9
    height = big * (0.62 if frame.size == "big" else 0.42)
    px = {"left": 0.27, "middle": 0.48, "right": 0.72, ASIDE: COMPANION_X}[frame.place]
    if frame.companion is not None:
        draw_character(d, frame.companion, big * COMPANION_X, base, big * 0.42, frame.style, big)
    draw_character(d, frame.protagonist, big * px, base, height, frame.style, big)
    return img.resize((size, size), Image.LANCZOS)
