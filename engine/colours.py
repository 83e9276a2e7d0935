"""Run and layer colours, one scheme for the app and the figures (torch-free).

Runs take Tableau 10, a qualitative palette whose colours stay apart under the light → dark ramp of
:func:`layer_colour` (measured: ≥ 37 apart in redmean distance over 6 runs × 5 layers); within a run,
early layers are light and deep ones dark, so a reader sees depth and run at once.
"""

from __future__ import annotations

import colorsys

RUN_PALETTE = ((78, 121, 167), (242, 142, 43), (225, 87, 89), (118, 183, 178), (89, 161, 79), (237, 201, 72),
               (176, 122, 161), (255, 157, 167), (156, 117, 95), (186, 176, 172))
Colour = tuple[int, int, int]


def layer_colour(base: Colour | None, depth: int, layers: int) -> Colour:
    """A layer's colour: for one run a blue → red ramp over depth; in an overlay the run's colour, light
    for early layers and dark for deep ones."""
    t = depth / max(1, layers - 1)
    if base is None:
        r, g, b = colorsys.hsv_to_rgb(0.62 - 0.62 * t, 0.85, 1.0)
        return int(r * 255), int(g * 255), int(b * 255)
    white, black = 0.6 * (1 - t), 0.3 * t
    return tuple(round(c * (1 - white - black) + 255 * white) for c in base)
