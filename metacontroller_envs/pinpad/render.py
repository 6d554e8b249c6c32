"""PinPad frames drawn with numpy, and a small pygame window for render_mode="human"."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

#: Colours 0..7 are Director's pad colours: red, green, blue, yellow, magenta, cyan, purple, teal.
_BASE_PALETTE = (
    (230, 25, 25),
    (20, 200, 20),
    (30, 60, 230),
    (240, 220, 0),
    (230, 0, 230),
    (0, 220, 220),
    (128, 0, 128),
    (0, 128, 128),
)
_FLOOR = np.array((236, 236, 236), np.uint8)
_LINE = np.array((205, 205, 205), np.uint8)
_WALL = np.array((70, 70, 80), np.uint8)
_BAR = {"running": (200, 200, 200), "success": (150, 225, 150), "failure": (235, 150, 150)}


def palette(num_colours: int) -> np.ndarray:
    """(num_colours, 3) uint8 RGB; beyond Director's eight, evenly spaced hues."""
    extra = [
        tuple(int(255 * v) for v in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.8, 0.85))
        for i in range(max(0, num_colours - len(_BASE_PALETTE)))
    ]
    return np.array((list(_BASE_PALETTE) + extra)[:num_colours], dtype=np.uint8)


@dataclass(frozen=True)
class PinPadFrame:
    """Everything a PinPad picture shows, independent of where the state is kept."""

    grid_size: int
    num_colours: int
    walls: tuple[int, ...]
    colours: tuple[int, ...]  # cell of each colour
    agent: int
    task: tuple[int, ...]
    progress: int
    outcome: str  # "running", "success" or "failure"

    @classmethod
    def from_batch(cls, batch, env: int) -> PinPadFrame:
        success, failure = bool(batch.success[env]), bool(batch.failure[env])
        length = int(batch.task_length[env])
        return cls(
            grid_size=batch.config.grid_size,
            num_colours=batch.config.num_colours,
            walls=tuple(int(c) for c in batch.walls[env]),
            colours=tuple(int(c) for c in batch.colours[env]),
            agent=int(batch.agent[env]),
            task=tuple(int(c) for c in batch.task[env, :length]),
            progress=int(batch.progress[env]),
            outcome="success" if success else "failure" if failure else "running",
        )


def _disc(size: int, radius: float) -> np.ndarray:
    centre = (size - 1) / 2
    y, x = np.ogrid[:size, :size]
    return (x - centre) ** 2 + (y - centre) ** 2 <= radius**2


def draw_pinpad(frame: PinPadFrame, tile: int = 32) -> np.ndarray:
    """(G*tile + tile, G*tile, 3) uint8: the grid, and below it the task with its progress.

    In the task bar, visited colours are faded, the next one is framed in black, and the
    bar turns green on success and red on failure.
    """
    g = frame.grid_size
    colours = palette(frame.num_colours)
    image = np.empty((g * tile + tile, g * tile, 3), np.uint8)
    grid = image[: g * tile]
    grid[:] = _FLOOR
    grid[::tile, :] = _LINE
    grid[:, ::tile] = _LINE

    def cell_view(cell: int, inset: int) -> np.ndarray:
        r, c = divmod(cell, g)
        return grid[
            r * tile + inset : (r + 1) * tile - inset + 1,
            c * tile + inset : (c + 1) * tile - inset + 1,
        ]

    for cell in frame.walls:
        cell_view(cell, 1)[:] = _WALL
    for colour, cell in enumerate(frame.colours):
        cell_view(cell, 2)[:] = colours[colour]
    agent = cell_view(frame.agent, 0)[:tile, :tile]
    agent[_disc(tile, tile * 0.34)] = 255
    agent[_disc(tile, tile * 0.28)] = 0

    bar = image[g * tile :]
    bar[:] = _BAR[frame.outcome]
    width = max(4, min(tile, (g * tile) // max(1, len(frame.task))))
    inset = max(1, width // 6)
    for slot, colour in enumerate(frame.task):
        x0 = slot * width
        box = bar[inset : tile - inset, x0 + inset : x0 + width - inset]
        rgb = colours[colour].astype(np.float32)
        if slot < frame.progress:
            rgb = 0.35 * rgb + 0.65 * np.array(_BAR[frame.outcome], np.float32)
        box[:] = rgb.astype(np.uint8)
        if slot == frame.progress and frame.outcome == "running":
            box[:2], box[-2:], box[:, :2], box[:, -2:] = 0, 0, 0, 0
    return image


class PygameWindow:
    """A window that shows rgb frames; pygame is imported only when one is opened."""

    def __init__(self, title: str, size: tuple[int, int], scale: int = 2) -> None:
        import pygame

        self._pygame = pygame
        pygame.init()
        pygame.display.init()
        height, width = size
        self.screen = pygame.display.set_mode((width * scale, height * scale))
        pygame.display.set_caption(title)
        self.clock = pygame.time.Clock()
        self.scale = scale

    def show(self, image: np.ndarray, fps: float | None = None) -> None:
        pygame = self._pygame
        pygame.event.pump()
        big = np.repeat(np.repeat(image, self.scale, axis=0), self.scale, axis=1)
        surface = pygame.surfarray.make_surface(np.ascontiguousarray(big.transpose(1, 0, 2)))
        self.screen.blit(surface, (0, 0))
        pygame.display.flip()
        if fps:
            self.clock.tick(fps)

    def close(self) -> None:
        self._pygame.display.quit()
