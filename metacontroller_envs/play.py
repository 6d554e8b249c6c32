"""Play an environment by hand: arrow keys move, R resets, Escape or closing the window quits."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import metacontroller_envs  # noqa: F401  (registers the ids)
from metacontroller_envs.checks import check_env_id

KEYS = ("up", "down", "left", "right", "noop")


class Player:
    """Keyboard control of one env, kept apart from the event loop so it can be tested."""

    def __init__(self, env_id: str, seed: int | None = None) -> None:
        check_env_id(env_id)
        self.env = gym.make(env_id, render_mode="rgb_array")
        names = getattr(self.env.unwrapped, "action_names", None)
        if names is None:
            raise ValueError(f"{env_id} does not name its actions, so it cannot be played by keys")
        self.key_to_action = {name: i for i, name in enumerate(names) if name in KEYS}
        self.episode_return = 0.0
        self.last_info: dict = {}
        self.done = False
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        _, self.last_info = self.env.reset(seed=seed)
        self.episode_return, self.done = 0.0, False

    def press(self, key: str) -> str:
        """Apply a key; returns a line describing what happened."""
        if key == "reset" or (self.done and key in self.key_to_action):
            self.reset()
            return "new episode"
        if key not in self.key_to_action:
            return ""
        _, reward, terminated, truncated, self.last_info = self.env.step(self.key_to_action[key])
        self.episode_return += float(reward)
        self.done = terminated or truncated
        if self.done:
            result = "success" if self.last_info.get("success") else "episode over"
            return f"{result}: return {self.episode_return:g} (any arrow key starts a new one)"
        return ""

    def frame(self) -> np.ndarray:
        return self.env.render()


def play(env_id: str, seed: int | None = None, scale: int = 2) -> None:
    import pygame

    player = Player(env_id, seed)
    keymap = {
        pygame.K_UP: "up",
        pygame.K_DOWN: "down",
        pygame.K_LEFT: "left",
        pygame.K_RIGHT: "right",
        pygame.K_SPACE: "noop",
        pygame.K_r: "reset",
    }
    pygame.init()
    image = player.frame()
    screen = pygame.display.set_mode((image.shape[1] * scale, image.shape[0] * scale))
    pygame.display.set_caption(f"{env_id}: arrows move, R resets, Esc quits")
    print(f"{env_id}: arrows move, R resets, Esc quits")
    running = True
    while running:
        image = np.repeat(np.repeat(player.frame(), scale, axis=0), scale, axis=1)
        screen.blit(pygame.surfarray.make_surface(image.transpose(1, 0, 2)), (0, 0))
        pygame.display.flip()
        event = pygame.event.wait()
        if event.type == pygame.QUIT or (
            event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE
        ):
            running = False
        elif event.type == pygame.KEYDOWN and event.key in keymap:
            message = player.press(keymap[event.key])
            if message:
                print(message)
    pygame.quit()
