"""The procedural scene: its parameters, their validation, the terrain height and the object placement.

A scene is fully described by `SceneParams` (the `[scene]` table of a level file). Everything here is plain
numpy and deterministic from the parameters; the renderer (world/gl_scene.py) turns it into pictures.

Conventions: metres and degrees, +Y up. Directions on the ground use the camera's yaw convention
(camera/pose.py): azimuth 0 points along -Z, positive azimuth turns counter-clockwise seen from above,
so azimuth 90 points along -X. A camera with yaw == sun_azimuth and pitch == sun_elevation looks at the sun.
"""
from __future__ import annotations

import math
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass

import numpy as np

from camera.errors import InputError, describe_value, is_number

Color = tuple[float, float, float]  # RGB, each 0..1, display (sRGB-like) values


# --- vocabulary ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SkyPreset:
    """The look of a time of day; `Lighting` fields left unset in a level come from here."""
    zenith: Color
    horizon: Color
    sun_color: Color
    sun_elevation: float
    sun_azimuth: float
    sun_intensity: float
    ambient: float
    clouds: float        # cloud cover, 0..1
    moon: bool = False   # the disc is a pale moon
    lights_on: bool = False  # lamps and house windows glow


SKY_PRESETS: dict[str, SkyPreset] = {
    "dawn": SkyPreset((0.36, 0.46, 0.68), (0.96, 0.74, 0.62), (1.00, 0.78, 0.58), 7, 60, 1.0, 0.55, 0.35),
    "noon": SkyPreset((0.22, 0.45, 0.85), (0.70, 0.83, 0.95), (1.00, 0.97, 0.90), 60, 30, 1.1, 0.55, 0.25),
    "sunset": SkyPreset((0.20, 0.22, 0.48), (1.00, 0.56, 0.28), (1.00, 0.58, 0.30), 4, -20, 1.1, 0.45, 0.40),
    "dusk": SkyPreset((0.10, 0.12, 0.30), (0.62, 0.42, 0.48), (0.85, 0.50, 0.45), -4, -30, 0.3, 0.6, 0.30,
                      lights_on=True),
    "night": SkyPreset((0.008, 0.012, 0.035), (0.045, 0.06, 0.11), (0.60, 0.70, 0.95), 35, 120, 0.35, 0.30, 0.15,
                       moon=True, lights_on=True),
    "overcast": SkyPreset((0.55, 0.58, 0.62), (0.78, 0.80, 0.82), (1.00, 1.00, 1.00), 45, 0, 0.25, 0.95, 1.0),
}
GROUND_MATERIALS = ("grass", "sand", "snow", "rock", "dirt", "paved")
TERRAIN_KINDS = ("flat", "hilly")
# kind -> (footprint radius in metres, used to keep objects apart; nominal height in metres)
OBJECT_KINDS: dict[str, tuple[float, float]] = {
    "conifer": (1.8, 9.0),
    "broadleaf": (2.8, 7.5),
    "rock": (1.6, 1.4),
    "house": (5.5, 5.5),
    "crate": (1.0, 1.0),
    "column": (1.0, 5.0),
    "ruin": (3.5, 3.0),
    "lamp": (0.6, 3.8),
}


def spec(default=MISSING, *, factory=MISSING, range=None, choices=None):
    """A dataclass field with validation metadata: `range` (lo, hi) for numbers (each element of a tuple,
    each value of a table), `choices` for strings (or a table's keys)."""
    return field(default=default, default_factory=factory, metadata={"range": range, "choices": choices})


# --- parameters ---------------------------------------------------------------------------------

@dataclass
class Sky:
    preset: str = spec("noon", choices=tuple(SKY_PRESETS))
    zenith: Color | None = spec(None, range=(0, 1))  # colour override at the top of the sky
    horizon: Color | None = spec(None, range=(0, 1))  # colour override at the horizon
    clouds: float | None = spec(None, range=(0, 1))  # cloud cover override, 0 (clear) to 1 (overcast)


@dataclass
class Ground:
    material: str = spec("grass", choices=GROUND_MATERIALS)
    tint: Color | None = spec(None, range=(0, 2))  # multiplies the material's colours


@dataclass
class Terrain:
    kind: str = spec("flat", choices=TERRAIN_KINDS)
    height: float = spec(5.0, range=(0, 60))  # typical height from valley to hill top, metres
    scale: float = spec(60.0, range=(30, 1000))  # typical distance between hill tops, metres


@dataclass
class Objects:
    density: float = spec(0.5, range=(0, 5))  # objects per 100 square metres (fewer if big ones leave no room)
    kinds: dict[str, float] = spec(factory=lambda: {"broadleaf": 1.0}, range=(0, 1000),
                                   choices=tuple(OBJECT_KINDS))  # kind -> relative weight
    clear_radius: float = spec(4.0, range=(0, 100))  # nothing is placed this close to the origin, metres


@dataclass
class Fog:
    density: float = spec(0.1, range=(0, 1))  # 0: clear air (only far haze); 1: about 15 m visibility
    color: Color | None = spec(None, range=(0, 1))  # default: the sky's colour at the horizon


@dataclass
class Lighting:
    """Unset values come from the sky preset."""
    sun_elevation: float | None = spec(None, range=(-90, 90))  # degrees above the horizon
    sun_azimuth: float | None = spec(None, range=(-360, 360))  # degrees, the camera's yaw convention
    sun_intensity: float | None = spec(None, range=(0, 5))
    ambient: float | None = spec(None, range=(0, 3))


@dataclass
class SceneParams:
    seed: int = spec(0, range=(0, 2**63 - 1))
    sky: Sky = spec(factory=Sky)
    ground: Ground = spec(factory=Ground)
    terrain: Terrain = spec(factory=Terrain)
    objects: Objects = spec(factory=Objects)
    fog: Fog = spec(factory=Fog)
    lighting: Lighting = spec(factory=Lighting)

    @staticmethod
    def from_dict(d: dict, source: str, path: str = "scene") -> "SceneParams":
        """Validate a `[scene]` table; errors name `source` and the dotted field, e.g. scene.fog.density."""
        return parse_table(SceneParams, d, source, path)

    def to_dict(self) -> dict:
        """A TOML-ready dict (None values left out, tuples as lists); from_dict(to_dict()) == self."""
        return _plain(asdict(self))

    def preset(self) -> SkyPreset:
        return SKY_PRESETS[self.sky.preset]

    def sun(self) -> tuple[float, float, float, float]:
        """(elevation, azimuth, intensity, ambient) with the preset's values where the level sets none."""
        preset, lighting = self.preset(), self.lighting
        return tuple(float(getattr(preset, name) if getattr(lighting, name) is None else getattr(lighting, name))
                     for name in ("sun_elevation", "sun_azimuth", "sun_intensity", "ambient"))


def direction(azimuth: float, elevation: float) -> np.ndarray:
    """(3,) unit vector for an azimuth (the yaw convention: 0 -> -Z, 90 -> -X) and an elevation, degrees."""
    a, e = math.radians(azimuth), math.radians(elevation)
    return np.array([-math.sin(a) * math.cos(e), math.sin(e), -math.cos(a) * math.cos(e)])


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items() if x is not None}
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return v


# --- validation (also used for the [level] and [start] tables of level files) -------------------

def parse_table(cls, d, source, path: str):
    """Build dataclass `cls` from a TOML table `d`, checking keys, types and ranges from the field specs."""
    if not isinstance(d, dict):
        raise InputError(source, path, f"must be a table, got {describe_value(d)}")
    specs = fields(cls)
    names = [f.name for f in specs]
    for key in d:
        if key not in names:
            raise InputError(source, f"{path}.{key}", f"unknown key (allowed: {', '.join(names)})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in specs:
        where = f"{path}.{f.name}"
        if f.name in d:
            kwargs[f.name] = _parse_value(hints[f.name], f.metadata, d[f.name], source, where)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise InputError(source, where, "missing")
    return cls(**kwargs)


def _parse_value(tp, meta, v, source, where):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # X | None: TOML has no null, so parse as X
        (tp,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if is_dataclass(tp):
        return parse_table(tp, v, source, where)
    if origin is tuple:
        if not isinstance(v, list) or len(v) != len(args):
            raise InputError(source, where, f"must be an array of {len(args)} numbers, got {describe_value(v)}")
        return tuple(_parse_value(a, meta, x, source, f"{where}[{i}]") for i, (a, x) in enumerate(zip(args, v)))
    if origin is dict:
        if not isinstance(v, dict):
            raise InputError(source, where, f"must be a table, got {describe_value(v)}")
        choices = meta.get("choices")
        for key in v:
            if choices and key not in choices:
                raise InputError(source, f"{where}.{key}", f"unknown name (allowed: {', '.join(choices)})")
        return {k: _parse_value(args[1], meta, x, source, f"{where}.{k}") for k, x in v.items()}
    if tp is str:
        if not isinstance(v, str):
            raise InputError(source, where, f"must be a string, got {describe_value(v)}")
        choices = meta.get("choices")
        if choices and v not in choices:
            raise InputError(source, where, f"must be one of {', '.join(choices)}, got {v!r}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise InputError(source, where, f"must be an integer, got {describe_value(v)}")
    elif tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(source, where, f"must be a number, got {describe_value(v)}")
        if not is_number(v):
            raise InputError(source, where, f"must be a finite number, got {v!r}")
        v = float(v)
    else:
        raise TypeError(f"no parser for {tp} at {where}")
    lo_hi = meta.get("range")
    if lo_hi and not lo_hi[0] <= v <= lo_hi[1]:
        raise InputError(source, where, f"must be between {lo_hi[0]} and {lo_hi[1]}, got {v}")
    return v


# --- random scenes for training data ------------------------------------------------------------

def random_scene(rng: np.random.Generator) -> SceneParams:
    """A scene drawn from the whole vocabulary: every preset, material, terrain, object mix, fog, lighting.
    Values are rounded to 3 decimals so manifests stay readable; the result validates through to_dict/from_dict."""
    def u(lo, hi):
        return round(float(rng.uniform(lo, hi)), 3)

    def jitter(c: Color, lo, hi) -> Color:
        return tuple(round(min(1.0, x * float(rng.uniform(lo, hi))), 3) for x in c)

    name = str(rng.choice(list(SKY_PRESETS)))
    preset = SKY_PRESETS[name]
    sky = Sky(name)
    if rng.random() < 0.2:
        sky.zenith, sky.horizon = jitter(preset.zenith, 0.7, 1.3), jitter(preset.horizon, 0.7, 1.3)
    if rng.random() < 0.3:
        sky.clouds = u(0, 1)
    ground = Ground(str(rng.choice(GROUND_MATERIALS)), jitter((1, 1, 1), 0.75, 1.25) if rng.random() < 0.3 else None)
    hilly = rng.random() < 0.6
    terrain = Terrain("hilly" if hilly else "flat", u(1, 20) if hilly else 0.0, u(30, 250))
    chosen = rng.choice(list(OBJECT_KINDS), size=int(rng.integers(1, 5)), replace=False)
    objects = Objects(u(0, 3) if rng.random() < 0.9 else 0.0, {str(k): u(0.2, 3) for k in chosen}, u(2, 6))
    fog = Fog(u(0, 0.5) if rng.random() < 0.7 else u(0.5, 1),
              jitter((0.7, 0.7, 0.7), 0.5, 1.3) if rng.random() < 0.1 else None)
    elevation = u(35, 80) if name == "noon" else u(preset.sun_elevation - 8, preset.sun_elevation + 8)
    lighting = Lighting(elevation, u(-180, 180), round(preset.sun_intensity * u(0.7, 1.3), 3),
                        round(preset.ambient * u(0.8, 1.2), 3))
    return SceneParams(int(rng.integers(0, 2**31)), sky, ground, terrain, objects, fog, lighting)


# --- terrain ------------------------------------------------------------------------------------

_N_WAVES = 12           # the terrain is a sum of sinusoids in random directions, three octaves
MIN_WAVELENGTH = 8.0    # metres: four times the renderer's finest mesh spacing, so its mesh follows height_at
_SALT_TERRAIN, _SALT_OBJECTS = 0x7E44, 0x0B1E


def _waves(scene: SceneParams):
    """(wave vectors (K, 2) rad/m, phases (K,), amplitudes (K,) in metres, wavelengths (K,) m), from the seed."""
    rng = np.random.default_rng([scene.seed, _SALT_TERRAIN])
    angle = rng.uniform(0, 2 * np.pi, _N_WAVES)
    octave = np.arange(_N_WAVES) % 3
    wavelength = np.maximum(scene.terrain.scale * 0.5 ** octave * rng.uniform(0.75, 1.3, _N_WAVES), MIN_WAVELENGTH)
    k = (2 * np.pi / wavelength)[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    amp = 0.45 ** octave
    amp *= 0.5 * scene.terrain.height / np.sqrt(np.sum(amp ** 2) / 2)  # std of the sum = height / 2
    return k, rng.uniform(0, 2 * np.pi, _N_WAVES), amp, wavelength


def height_at(scene: SceneParams, x, z, spacing=0.0) -> np.ndarray:
    """Terrain height in metres at world (x, z) (arrays broadcast; float64). Smooth; 0 at the origin and flat
    within half the clear radius, rising gently to full hills at twice the clear radius plus 16 m, so that
    camera paths from a level's start (about 10 m at a constant height) stay above the ground.

    `spacing` (metres, broadcasts with x) is for the renderer's mesh: waves shorter than four times the
    vertex spacing fade out, so a coarse far mesh shows a smoothed terrain instead of aliasing. The camera
    should use the default (exact) heights; near the camera the mesh has fine spacing and agrees.
    """
    x, z = np.asarray(x, np.float64), np.asarray(z, np.float64)
    if scene.terrain.kind == "flat" or scene.terrain.height == 0:
        return np.zeros(np.broadcast_shapes(x.shape, z.shape))
    k, phase, amp, wavelength = _waves(scene)
    keep = np.clip((wavelength / np.maximum(np.asarray(spacing, np.float64)[..., None], 1e-9) - 2) / 2, 0, 1)
    raw = np.sum(amp * keep * np.sin(x[..., None] * k[:, 0] + z[..., None] * k[:, 1] + phase), -1)
    at_origin = np.sum(amp * keep * np.sin(phase), -1)
    r0 = 0.5 * scene.objects.clear_radius
    r1 = 2.0 * scene.objects.clear_radius + 16.0
    t = np.clip((np.hypot(x, z) - r0) / (r1 - r0), 0, 1)
    return (t * t * (3 - 2 * t)) * (raw - at_origin)


# --- objects ------------------------------------------------------------------------------------

CELL = 32.0  # metres; objects are placed per square cell, so the world is unbounded and the same everywhere


@dataclass
class Placements:
    """Objects (of one cell, or several), arrays of length n: kind index into OBJECT_KINDS, base position,
    yaw (degrees), size factor (x the kind's nominal size), and 4 uniform random numbers per object for the
    renderer's shape and colour variation."""
    kind: np.ndarray       # (n,) int
    position: np.ndarray   # (n, 3) float64, y on the terrain
    yaw: np.ndarray        # (n,)
    size: np.ndarray       # (n,)
    variant: np.ndarray    # (n, 4) in [0, 1)

    @staticmethod
    def concat(parts: list["Placements"]) -> "Placements":
        return Placements(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Placements)))


def objects_in_cell(scene: SceneParams, ix: int, iz: int) -> Placements:
    """The objects whose base lies in cell [ix*CELL, (ix+1)*CELL) x [iz*CELL, (iz+1)*CELL); deterministic
    from (seed, ix, iz). Objects keep their footprints (OBJECT_KINDS radius x size) inside the cell and
    apart from each other, and none reaches within clear_radius of the origin."""
    o = scene.objects
    names = [k for k, w in o.kinds.items() if w > 0]
    rng = np.random.default_rng([scene.seed, _SALT_OBJECTS, ix % 2**32, iz % 2**32])
    n = int(rng.poisson(o.density / 100.0 * CELL * CELL)) if names else 0
    weights = np.array([o.kinds[k] for k in names])
    kind_ids = np.array([list(OBJECT_KINDS).index(k) for k in names], int)
    kind = kind_ids[rng.choice(len(names), n, p=weights / weights.sum())] if n else np.zeros(0, int)
    radius = np.array([r for r, _ in OBJECT_KINDS.values()])[kind]
    size = np.exp(rng.normal(0, 0.18, n))
    radius = radius * size
    xz = rng.uniform(radius[:, None], CELL - radius[:, None], (n, 2)) + np.array([ix, iz]) * CELL
    yaw, variant = rng.uniform(0, 360, n), rng.random((n, 4))
    # keep an object if it overlaps no object kept before it (greedy in drawing order, computed in rounds:
    # an object with no live earlier rival is kept, and every live object it overlaps is dropped)
    overlap = np.linalg.norm(xz[:, None] - xz[None], axis=-1) < 0.9 * (radius[:, None] + radius[None])
    earlier = np.tril(overlap, -1)
    alive, keep = np.hypot(*xz.T) > o.clear_radius + radius, np.zeros(n, bool)
    while alive.any():
        new = alive & ~(earlier & alive).any(axis=1)
        keep |= new
        alive &= ~new & ~overlap[:, new].any(axis=1)
    xz, kind, size, yaw, variant, radius = xz[keep], kind[keep], size[keep], yaw[keep], variant[keep], radius[keep]
    # sit on the lowest point under the footprint, so nothing floats on a slope
    ring = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]]) * 0.7
    y = height_at(scene, xz[:, None, 0] + ring[:, 0] * radius[:, None],
                  xz[:, None, 1] + ring[:, 1] * radius[:, None]).min(1)
    return Placements(kind, np.stack([xz[:, 0], y, xz[:, 1]], 1), yaw, size, variant)
