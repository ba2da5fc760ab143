"""Open a world by name, as the command line and the client ask for it."""
from __future__ import annotations

from dataclasses import dataclass

from camera.errors import InputError

WORLDS = ("reference", "generated")
REFERENCE_SIZE = (640, 360)  # the reference world renders at any size; this is the default for videos


def make_world(kind: str, size: tuple[int, int] | None = None, checkpoint=None, device: str = "auto", level=None,
               random_config: str | None = None, caches: int = 1, random_source: str | None = None):
    """A World of the given kind. `level` (optional) is checked for what the world needs (a scene, for reference).
    random_config: the generated world with random weights of that config instead of a checkpoint (tests, benchmarks;
    the client shows a warning). caches: the generated world's KV caches its user holds at once (play: one per
    state it can rewind to), for the check that they fit in memory. random_source: where random_config was named
    (for messages: "command line: --random-weights")."""
    if kind == "reference":
        from world.level import require_scene
        from world.reference import ReferenceWorld
        if level is not None:
            require_scene(level)
        return ReferenceWorld(size=size or REFERENCE_SIZE)
    if kind == "generated":
        from world.generated import GeneratedWorld
        return GeneratedWorld.open(checkpoint=checkpoint, device=device, random_config=random_config, caches=caches,
                                   random_source=random_source)
    raise InputError("command line", "--world", f"unknown world {kind!r} (known: {', '.join(WORLDS)})")


@dataclass(frozen=True)
class WorldOpener:
    """make_world with the game's settings bound: called as (kind, size) on the game's worker. A dataclass rather
    than a closure so that it pickles: `explorer play` opens its worlds in a child process."""
    checkpoint: str | None = None
    device: str = "auto"
    level: object = None                # a world.level.Level
    random_config: str | None = None    # for the generated world only
    caches: int = 1                     # the generated world's KV caches held at once (make_world)
    random_source: str = "command line: --random-weights"  # where random_config was named

    def __call__(self, kind: str, size: tuple[int, int] | None):
        return make_world(kind, size=size, checkpoint=self.checkpoint, device=self.device, level=self.level,
                          random_config=self.random_config if kind == "generated" else None, caches=self.caches,
                          random_source=self.random_source)
