"""The GPU side of the reference world: meshes, instances, culling and shaders (ModernGL).

Budget: llvmpipe (Mesa's CPU rasteriser) costs about 0.1-0.2 us per triangle and runs every branch of a
shader's `if` for every pixel, and a 128x72 frame should cost about a millisecond; so:

- Terrain: a polar grid around a centre that follows the camera in TERRAIN_SNAP jumps (fine near the centre,
  coarser with distance, out past the far plane), split into chunks; runs of visible chunks are drawn with
  one multi-draw-indirect call.
- Objects: each kind is assembled from a few unit primitives (box, cylinder, cone, blob, rock, roof); one
  instance per part. Objects come from the 7x7 cells around the camera's cell and shrink away between FADE
  distances, before the edge of that area, so nothing pops in when the camera changes cell. Visible parts
  are compacted each frame and drawn with one multi-draw call per surface pattern. Tree crowns and cones
  switch to cheaper meshes beyond LOD_DEPTH (scaled with the image height, so about the same pixel size).
- Lighting and fog are per vertex; the fragment shaders only add texture (taps of a noise texture, and drawn
  patterns such as paving, planks and windows). Material and pattern are compile-time constants, so each
  shader holds only the branch it needs.
- Sky: a full-screen triangle drawn last at the far plane, so it shades only the pixels nothing covers.

Everything a frame shows is a function of (scene, pose, image size) only: which meshes are used follows
from the pose, caches only save work, and culling is conservative.
"""
from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from dataclasses import dataclass

import moderngl
import numpy as np
from scipy.spatial.transform import Rotation

from camera.pose import Pose
from world.scene import (CELL, GROUND_MATERIALS, OBJECT_KINDS, Placements, SceneParams, direction, height_at,
                         objects_in_cell)

# terrain rings: (segments, ring spacing near the centre in metres); further out, rings are 1.5 times as far
# apart as the segments (the ground is seen at a grazing angle); flat ground needs vertices only for the
# per-vertex fog and lamp light
HILLY_RINGS, FLAT_RINGS = (48, 2.0), (32, 3.0)
TERRAIN_SNAP = 8.0          # metres: the terrain centre jumps in these steps, so the camera stays where it is fine
TERRAIN_RADIUS = 560.0      # metres: the far plane (500 m) and then some
CHUNK = 4                   # terrain chunks are CHUNK segments x CHUNK rings, for culling
OBJECT_CELLS = 3            # objects from cells within this many cells of the camera's cell
FADE = (60.0, 80.0)         # objects shrink to nothing between these distances (m) from the camera
MAX_LAMPS = 8               # lamps that light their surroundings at once (the nearest)
CACHED = 4                  # terrain meshes and object sets kept per scene

# surface patterns of object parts (each compiles to its own fragment shader)
PLAIN, BARK, FOLIAGE, STONE, PLANKS, WALL, ROOF, LAMP, ROCK = range(9)
N_PATTERNS = 9
PRIMITIVES = ("box", "cylinder", "cone", "blob", "rock", "roof", "cone_far", "blob_far")
LOD = {"cone": "cone_far", "blob": "blob_far"}  # cheaper meshes for parts far away
LOD_DEPTH = 25.0            # metres ahead of the camera where they take over, at 72 pixels of image height

# ground material -> (dark, light, accent) colours
MATERIAL_COLORS = {
    "grass": ((0.20, 0.34, 0.10), (0.42, 0.56, 0.20), (0.62, 0.58, 0.30)),
    "sand": ((0.74, 0.60, 0.40), (0.90, 0.79, 0.58), (0.66, 0.52, 0.36)),
    "snow": ((0.78, 0.83, 0.92), (0.97, 0.98, 1.00), (0.70, 0.76, 0.86)),
    "rock": ((0.30, 0.29, 0.28), (0.55, 0.53, 0.50), (0.20, 0.19, 0.19)),
    "dirt": ((0.30, 0.21, 0.13), (0.48, 0.36, 0.23), (0.58, 0.54, 0.48)),
    "paved": ((0.42, 0.40, 0.38), (0.62, 0.59, 0.55), (0.22, 0.21, 0.20)),
}
assert set(MATERIAL_COLORS) == set(GROUND_MATERIALS)


# --- unit primitives: inside [-0.5, 0.5] x [0, 1] x [-0.5, 0.5], base on y = 0 ----------------------

def _outward(pos, nrm, tris):
    """Orient every triangle counter-clockwise seen from outside (its vertex normals say where that is)."""
    a, b, c = pos[tris[:, 0]], pos[tris[:, 1]], pos[tris[:, 2]]
    flip = np.einsum("ij,ij->i", np.cross(b - a, c - a), nrm[tris].sum(1)) < 0
    tris[flip] = tris[flip][:, [0, 2, 1]]
    return pos.astype("f4"), nrm.astype("f4"), tris.astype("u4")


def _flat(pos, tris):
    """Unshare vertices so each triangle gets its own (face) normal: faceted shading."""
    p = pos[tris.reshape(-1)]
    n = np.cross(p[1::3] - p[0::3], p[2::3] - p[0::3])
    n = np.repeat(n / np.linalg.norm(n, axis=1, keepdims=True), 3, 0)
    centre = p.reshape(-1, 3, 3).mean(1) - pos.mean(0)            # faces point away from the middle
    n *= np.repeat(np.sign(np.einsum("ij,ij->i", n[0::3], centre)), 3)[:, None]
    return _outward(p, n, np.arange(len(p)).reshape(-1, 3))


def _box():
    pos, nrm, tris = [], [], []
    for axis in range(3):
        for sign in (-1, 1):
            n = np.eye(3)[axis] * sign
            u, v = np.eye(3)[(axis + 1) % 3], np.eye(3)[(axis + 2) % 3]
            base = len(pos)
            pos += [0.5 * (n + su * u + sv * v) for su, sv in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
            nrm += [n] * 4
            tris += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
    pos = np.array(pos) + [0, 0.5, 0]
    return _outward(pos, np.array(nrm), np.array(tris))


def _ring(k=8):
    a = 2 * np.pi * np.arange(k) / k
    return np.cos(a), np.sin(a)


def _cylinder(k=8):
    """Side only: its ends are always covered (capitals, foliage, ground)."""
    c, s = _ring(k)
    pos = np.concatenate([np.stack([0.5 * c, 0 * c, 0.5 * s], 1), np.stack([0.5 * c, 0 * c + 1, 0.5 * s], 1)])
    nrm = np.concatenate([np.stack([c, 0 * c, s], 1)] * 2)
    i, j = np.arange(k), (np.arange(k) + 1) % k
    tris = np.concatenate([np.stack([i, j, j + k], 1), np.stack([i, j + k, i + k], 1)])
    return _outward(pos, nrm, tris)


def _cone(k=8, base=True):
    """Side with one apex vertex per face (so normals stay smooth round the cone), and the base disc (seen
    from under a tree; not from afar)."""
    c, s = _ring(k)
    mid = 2 * np.pi * (np.arange(k) + 0.5) / k
    ring = np.stack([0.5 * c, 0 * c, 0.5 * s], 1)
    pos = np.concatenate([ring, np.tile([0.0, 1.0, 0.0], (k, 1))])
    nrm = np.concatenate([np.stack([c, 0 * c + 0.5, s], 1), np.stack([np.cos(mid), 0 * mid + 0.5, np.sin(mid)], 1)])
    i, j = np.arange(k), (np.arange(k) + 1) % k
    tris = np.stack([i, j, i + k], 1)
    if base:
        pos = np.concatenate([pos, ring, [[0, 0, 0]]])
        nrm = np.concatenate([nrm, np.tile([0.0, -1, 0], (k + 1, 1))])
        tris = np.concatenate([tris, np.stack([2 * k + i, 2 * k + j, 0 * i + 3 * k], 1)])
    return _outward(pos, nrm, tris)


def _icosahedron():
    t = (1 + 5 ** 0.5) / 2
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
                  [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], float)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
                  [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
                  [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    return v / np.linalg.norm(v, axis=1, keepdims=True), f


def _subdivide(v, f):
    """Split each triangle of a unit sphere mesh in four, new vertices pushed out onto the sphere."""
    mids, tris, v = {}, [], list(v)
    for a, b, c in f:
        m = []
        for edge in ((a, b), (b, c), (c, a)):
            key = tuple(sorted(edge))
            if key not in mids:
                mids[key] = len(v)
                p = v[edge[0]] + v[edge[1]]
                v.append(p / np.linalg.norm(p))
            m.append(mids[key])
        tris += [(a, m[0], m[2]), (b, m[1], m[0]), (c, m[2], m[1]), (m[0], m[1], m[2])]
    return np.array(v), np.array(tris)


def _blob(subdivide=True):
    """A smooth, slightly lumpy ball of 80 (or 20) triangles: tree crowns (the fragment shader adds leaves)."""
    v, f = _subdivide(*_icosahedron()) if subdivide else _icosahedron()
    lumpy = v * np.random.default_rng(3).uniform(0.9, 1.05, (len(v), 1))
    return _outward(0.5 * lumpy / np.abs(lumpy).max(0) + [0, 0.5, 0], v, f)


def _rock():
    """An icosahedron dented by a fixed random pattern, faceted."""
    v, f = _icosahedron()
    v = v * np.random.default_rng(5).uniform(0.7, 1.1, (len(v), 1)) * [1, 0.75, 1]
    v = (v - v.min(0)) / (v.max(0) - v.min(0)) - [0.5, 0, 0.5]
    return _flat(v, f)


def _roof():
    """A gable roof: ridge along x at y = 1, eaves at z = +-0.5 on y = 0, with a flat underside."""
    p = np.array([[-.5, 0, .5], [.5, 0, .5], [.5, 1, 0], [-.5, 1, 0], [-.5, 0, -.5], [.5, 0, -.5]])
    faces = [([0, 1, 2, 3], [0, 1, 2]), ([4, 5, 2, 3], [0, -1, 2]), ([0, 3, 4], [-1, 0, 0]), ([1, 2, 5], [1, 0, 0]),
             ([0, 1, 5, 4], [0, -1, 0])]
    pos, nrm, tris = [], [], []
    for idx, n in faces:
        base = len(pos)
        pos += [p[i] for i in idx]
        nrm += [np.array(n, float) / np.linalg.norm(n)] * len(idx)
        tris += [(base, base + k, base + k + 1) for k in range(1, len(idx) - 1)]
    return _outward(np.array(pos), np.array(nrm), np.array(tris))


def primitive_meshes():
    """name -> (positions (V, 3) f4, normals (V, 3) f4, triangles (T, 3) u4)."""
    return {"box": _box(), "cylinder": _cylinder(), "cone": _cone(), "blob": _blob(), "rock": _rock(),
            "roof": _roof(), "cone_far": _cone(base=False), "blob_far": _blob(subdivide=False)}


# --- objects: kinds assembled from parts, all objects of a kind at once ------------------------

@dataclass
class Part:
    """One primitive per object of a kind; arrays of length n (or broadcastable)."""
    prim: str
    offset: np.ndarray       # (n, 3) object-local position of the primitive's base, before the object's yaw
    scale: np.ndarray        # (n, 3) metres
    color: np.ndarray        # (n, 3)
    pattern: int
    tilt: np.ndarray | None = None  # (n, 3) extra rotation, degrees, scipy "YXZ" euler
    present: np.ndarray | None = None  # (n,) bool: optional parts


def _mix(a, b, t):
    return np.asarray(a) + (np.asarray(b) - np.asarray(a)) * np.asarray(t)[..., None]


def _v3(x, y, z):
    return np.stack(np.broadcast_arrays(x, y, z), -1).astype(float)


def kind_parts(kind: str, size: np.ndarray, v: np.ndarray) -> list[Part]:
    """The parts of n objects of `kind`; `size` (n,) scales the kind's nominal size, `v` (n, 4) uniform
    random numbers vary shape and colour."""
    n, h = len(size), OBJECT_KINDS[kind][1] * size
    z0 = np.zeros(n)
    if kind == "conifer":
        h = h * (0.8 + 0.4 * v[:, 0])
        green = _mix((0.09, 0.22, 0.12), (0.16, 0.32, 0.16), v[:, 1])
        parts = [Part("cylinder", _v3(0, 0, 0), _v3(0.06 * h, 0.3 * h, 0.06 * h), _v3(0.32, 0.22, 0.15) + z0[:, None],
                      BARK)]
        for i in range(3):
            w = (0.5 - 0.12 * i) * h
            parts.append(Part("cone", _v3(0, (0.15 + 0.22 * i) * h, 0), _v3(w, (0.45 - 0.06 * i) * h, w),
                              green * (1 + 0.06 * i), FOLIAGE))
        return parts
    if kind == "broadleaf":
        green = _mix((0.18, 0.36, 0.10), (0.36, 0.48, 0.14), v[:, 1])
        green = np.where(v[:, 2:3] > 0.88, _mix((0.62, 0.36, 0.10), (0.70, 0.52, 0.12), v[:, 3]), green)
        side = np.where(v[:, 0] > 0.5, 1.0, -1.0)
        return [Part("cylinder", _v3(0, 0, 0), _v3(0.08 * h, 0.55 * h, 0.08 * h), _v3(0.36, 0.27, 0.19) + z0[:, None],
                     BARK),
                Part("blob", _v3(0, 0.35 * h, 0), _v3(0.62 * h, 0.58 * h, 0.62 * h), green, FOLIAGE),
                Part("blob", _v3(0.24 * h * side, 0.32 * h, 0.1 * h), _v3(0.45 * h, 0.42 * h, 0.45 * h), green * 0.92,
                     FOLIAGE)]
    if kind == "rock":
        s = h * (0.6 + 0.8 * v[:, 0])
        grey = _mix((0.40, 0.39, 0.37), (0.55, 0.50, 0.44), v[:, 1])
        tilt = _v3(v[:, 2] * 360, (v[:, 3] - 0.5) * 30, (v[:, 1] - 0.5) * 30)
        return [Part("rock", _v3(0, -0.25 * s, 0), _v3(1.5 * s, s, 1.2 * s), grey, ROCK, tilt=tilt),
                Part("rock", _v3(0.9 * s, -0.2 * s, 0.5 * s), _v3(0.7 * s, 0.5 * s, 0.6 * s), grey * 0.9, ROCK,
                     tilt=tilt[:, [1, 0, 2]] * [1, 3, 1], present=v[:, 3] > 0.5)]
    if kind == "house":
        w, d = (6 + 3 * v[:, 0]) * size, (5 + 2 * v[:, 1]) * size
        wall_h = np.where(v[:, 2] > 0.65, 5.6, 3.0) * np.minimum(size, 1.2)
        roof_h = 0.42 * d
        walls = np.array([(0.88, 0.84, 0.74), (0.80, 0.70, 0.55), (0.70, 0.72, 0.70), (0.78, 0.62, 0.50)])
        roofs = np.array([(0.55, 0.22, 0.16), (0.32, 0.33, 0.37), (0.45, 0.30, 0.20)])
        return [Part("box", _v3(0, -1.0, 0), _v3(w, wall_h + 1.0, d), walls[(v[:, 3] * 4).astype(int)], WALL),
                Part("roof", _v3(0, wall_h, 0), _v3(w + 0.8, roof_h, d + 0.8), roofs[(v[:, 2] * 3).astype(int) % 3],
                     ROOF),
                Part("box", _v3(0.25 * w, wall_h, 0.18 * d), _v3(0.7 + z0, roof_h * 0.95, 0.7 + z0),
                     _v3(0.45, 0.40, 0.38) + z0[:, None], STONE, present=v[:, 0] > 0.3)]
    if kind == "crate":
        s = (h * (0.8 + 0.4 * v[:, 0]))[:, None] * np.ones(3)
        wood = _mix((0.50, 0.36, 0.20), (0.66, 0.50, 0.30), v[:, 1])
        return [Part("box", _v3(0, 0, 0), s, wood, PLANKS),
                Part("box", _v3(1.05 * s[:, 0], 0, 0.15 * s[:, 0]), s * 0.9, wood * 0.92, PLANKS,
                     tilt=_v3(15 * v[:, 2], 0, 0), present=v[:, 2] > 0.4),
                Part("box", _v3(0.45 * s[:, 0], s[:, 1], 0.05 * s[:, 0]), s * 0.85, wood * 1.05, PLANKS,
                     tilt=_v3(40 * v[:, 3], 0, 0), present=v[:, 3] > 0.55)]
    if kind == "column":
        broken = v[:, 0] < 0.4
        shaft = np.where(broken, 0.3 + 0.5 * v[:, 1], 1.0) * (h - 0.75)
        stone = _mix((0.86, 0.83, 0.76), (0.80, 0.70, 0.52), v[:, 2])
        return [Part("box", _v3(0, -0.2, 0), _v3(1.3 + z0, 0.6, 1.3), stone * 0.9, STONE),
                Part("cylinder", _v3(0, 0.4, 0), _v3(0.8 + z0, shaft, 0.8), stone, STONE),
                Part("box", _v3(0, 0.4 + shaft, 0), _v3(1.15 + z0, 0.35, 1.15), stone * 0.95, STONE,
                     present=~broken),
                Part("cylinder", _v3(1.2, 0.3, 0.4), _v3(0.7 + z0, 1.2 + 1.5 * v[:, 3], 0.7), stone * 0.93, STONE,
                     tilt=_v3(0, 0, -90), present=broken & (v[:, 3] > 0.3))]
    if kind == "ruin":
        length, height = (4 + 3 * v[:, 0]) * size, (1.2 + 2.5 * v[:, 1]) * size
        stone = _mix((0.55, 0.52, 0.47), (0.66, 0.58, 0.46), v[:, 2])
        return [Part("box", _v3(0, -0.4, 0), _v3(length, height + 0.4, 0.7 + z0), stone, STONE),
                Part("box", _v3(-0.5 * length + 0.35, -0.4, 0.5 * length * 0.6), _v3(0.7 + z0, 0.6 * height + 0.4,
                     length * 0.6), stone * 0.95, STONE, present=v[:, 3] > 0.3),
                Part("box", _v3(0.3 * length, height - 0.05, 0), _v3(0.35 * length, 0.5 + 0.8 * v[:, 3], 0.7 + z0),
                     stone * 1.03, STONE)]
    if kind == "lamp":
        dark = _v3(0.12, 0.12, 0.13) + z0[:, None]
        return [Part("box", _v3(0, 0, 0), _v3(0.32 + z0, 0.4, 0.32), dark, PLAIN),
                Part("cylinder", _v3(0, 0, 0), _v3(0.13 + z0, h - 0.45, 0.13), dark, PLAIN),
                Part("box", _v3(0, h - 0.5, 0), _v3(0.42 + z0, 0.45, 0.42), _v3(1.0, 0.82, 0.55) + z0[:, None], LAMP),
                Part("box", _v3(0, h - 0.07, 0), _v3(0.55 + z0, 0.1, 0.55), dark, PLAIN)]
    raise ValueError(f"unknown object kind {kind!r}")


# --- culling -------------------------------------------------------------------------------------

def frustum_planes(view_proj: np.ndarray) -> np.ndarray:
    """(5, 4) planes (inward unit normal, d) of the view frustum: left, right, bottom, top, far. The near
    plane is left out: the side planes already reject what lies behind the camera."""
    m = view_proj
    planes = np.stack([m[3] + m[0], m[3] - m[0], m[3] + m[1], m[3] - m[1], m[3] - m[2]])
    return planes / np.sqrt(np.sum(planes[:, :3] ** 2, axis=1, keepdims=True))


@dataclass
class Bounds:
    """Bounding spheres, laid out for fast culling: homogeneous centres (4, N) and radii (N,), float32."""
    centre: np.ndarray
    radius: np.ndarray

    @staticmethod
    def of(spheres: np.ndarray) -> "Bounds":
        """From (N, 4) rows of centre x, y, z and radius."""
        spheres = np.asarray(spheres, np.float64).reshape(-1, 4)
        centre = np.concatenate([spheres[:, :3], np.ones((len(spheres), 1))], 1)
        return Bounds(np.ascontiguousarray(centre.T, "f4"), spheres[:, 3].astype("f4"))

    def visible(self, planes: np.ndarray) -> np.ndarray:
        """(N,) bool: the sphere is at least partly inside every plane (rows: inward unit normal, d)."""
        d = planes.astype("f4") @ self.centre
        d += self.radius
        return np.logical_and.reduce(d > 0, axis=0)



# --- objects as instanced parts -------------------------------------------------------------

LAMP_HEAD = 0.78  # lamp light sits this fraction of the lamp's nominal height up (the middle of its head)
INSTANCE_FLOATS = 18  # per part: model matrix rows (3 x vec4), colour, anchor (the object's base)
ANCHOR = 15           # where the anchor starts in a part's floats


@dataclass
class PartSet:
    """The parts of some objects, sorted by (pattern, primitive); arrays of length P."""
    key: np.ndarray       # (P,) pattern * len(PRIMITIVES) + primitive
    lod: np.ndarray       # (P,) 0: always drawn, 1: only near (closer than the LOD depth), 2: only far
    data: np.ndarray      # (P, INSTANCE_FLOATS) float32, the instance attributes
    bounds: Bounds        # (P,) bounding spheres
    lamps: np.ndarray     # (L, 3) float64 where the lamps' light comes from


def object_parts(pl: Placements) -> PartSet:
    """The instanced parts of the placed objects."""
    keys, lods, data, spheres = [np.zeros(0, int)], [np.zeros(0, int)], [np.zeros((0, INSTANCE_FLOATS))], \
        [np.zeros((0, 4))]
    lamps = [np.zeros((0, 3))]
    for k, kind in enumerate(OBJECT_KINDS):
        sel = pl.kind == k
        if not sel.any():
            continue
        pos, yaw, size = pl.position[sel], pl.yaw[sel], pl.size[sel]
        n = len(pos)
        r_obj = Rotation.from_euler("Y", yaw[:, None], degrees=True).as_matrix()   # (n, 3, 3)
        for part in kind_parts(kind, size, pl.variant[sel]):
            keep = np.ones(n, bool) if part.present is None else part.present
            r = r_obj if part.tilt is None else r_obj @ Rotation.from_euler("YXZ", part.tilt, degrees=True).as_matrix()
            scale = np.broadcast_to(part.scale, (n, 3))
            m = r * scale[:, None, :]                                             # R @ diag(scale)
            t = pos + np.einsum("nij,nj->ni", r_obj, np.broadcast_to(part.offset, (n, 3)))
            rows = np.concatenate([m, t[:, :, None]], 2).reshape(n, 12)
            d = np.concatenate([rows, np.broadcast_to(part.color, (n, 3)), pos], 1)
            sphere = np.concatenate([t + 0.5 * m[:, :, 1], 0.87 * scale.max(1, keepdims=True)], 1)[keep]
            versions = [(part.prim, 1), (LOD[part.prim], 2)] if part.prim in LOD else [(part.prim, 0)]
            for prim, lod in versions:
                keys.append(np.full(keep.sum(), part.pattern * len(PRIMITIVES) + PRIMITIVES.index(prim)))
                lods.append(np.full(keep.sum(), lod))
                data.append(d[keep])
                spheres.append(sphere)
        if kind == "lamp":
            lamps.append(pos + [0, 1, 0] * (LAMP_HEAD * OBJECT_KINDS["lamp"][1] * size)[:, None])
    key = np.concatenate(keys)
    order = np.argsort(key, kind="stable")
    return PartSet(key[order], np.concatenate(lods)[order], np.concatenate(data)[order].astype("f4"),
                   Bounds.of(np.concatenate(spheres)[order]), np.concatenate(lamps))


# --- terrain -------------------------------------------------------------------------------------

def terrain_mesh(scene: SceneParams, cx: float, cz: float):
    """Polar grid centred on (cx, cz): (vertices (V, 6) f4 position+normal, triangles (T, 3) u4 sorted by
    chunk, chunk_first (C+1,) index of each chunk's first triangle, chunk bounds (C,))."""
    k, step = FLAT_RINGS if scene.terrain.kind == "flat" or scene.terrain.height == 0 else HILLY_RINGS
    radii = [step]
    while radii[-1] < TERRAIN_RADIUS:
        radii.append(radii[-1] + max(step, 1.5 * radii[-1] * 2 * np.pi / k))
    radii = np.array(radii)
    ring_step = np.diff(radii, append=2 * radii[-1] - radii[-2])
    a = 2 * np.pi * np.arange(k) / k
    ring_x, ring_z = (radii[:, None] * np.cos(a)).ravel(), (radii[:, None] * np.sin(a)).ravel()
    x, z = cx + np.concatenate([[0.0], ring_x]), cz + np.concatenate([[0.0], ring_z])
    spacing = np.concatenate([[0.0], np.repeat(ring_step, k)])
    e = 0.05
    y = height_at(scene, x, z, spacing)
    gx = (height_at(scene, x + e, z, spacing) - height_at(scene, x - e, z, spacing)) / (2 * e)
    gz = (height_at(scene, x, z + e, spacing) - height_at(scene, x, z - e, spacing)) / (2 * e)
    normal = np.stack([-gx, np.ones_like(gx), -gz], 1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    vertices = np.concatenate([np.stack([x, y, z], 1), normal], 1).astype("f4")

    seg = np.arange(k)
    nxt = (seg + 1) % k
    tris, chunk = [np.stack([0 * seg, 1 + nxt, 1 + seg], 1)], [seg // CHUNK]
    for j in range(len(radii) - 1):
        inner, outer = 1 + j * k, 1 + (j + 1) * k
        tris += [np.stack([inner + seg, inner + nxt, outer + nxt], 1),
                 np.stack([inner + seg, outer + nxt, outer + seg], 1)]
        chunk += [seg // CHUNK + (k // CHUNK) * ((j + 1) // CHUNK)] * 2
    tris, chunk = np.concatenate(tris), np.concatenate(chunk)
    corner = vertices[tris, :3]                                            # (T, 3 corners, xyz)
    up = np.cross(corner[:, 1] - corner[:, 0], corner[:, 2] - corner[:, 0])[:, 1]
    tris[up < 0] = tris[up < 0][:, [0, 2, 1]]                              # counter-clockwise seen from above
    order = np.argsort(chunk, kind="stable")
    tris, chunk = tris[order], chunk[order]
    first = np.searchsorted(chunk, np.arange(chunk.max() + 2))
    spheres = []
    for c in range(chunk.max() + 1):
        p = vertices[np.unique(tris[first[c]:first[c + 1]]), :3].astype(np.float64)
        centre = (p.min(0) + p.max(0)) / 2
        spheres.append([*centre, np.linalg.norm(p - centre, axis=1).max() if len(p) else 0.0])
    return vertices, tris.astype("u4"), first, Bounds.of(spheres)


# --- shaders -------------------------------------------------------------------------------------

COMMON = """
#version 330
#define LAMPS %(LAMPS)d
#define MATERIAL %(MATERIAL)d
#define PATTERN %(PATTERN)d
layout(std140) uniform Scene {
    vec4 zenith;        // rgb; w: how much fog veils the sky
    vec4 horizon;       // rgb
    vec4 sun_dir;       // xyz towards the sun (or moon); w: 0 below the horizon .. 1 above
    vec4 sun_color;     // rgb x intensity; w: 1 when the disc is the moon
    vec4 glow;          // rgb horizon glow round the sun; w: cloud cover
    vec4 amb_sky;       // rgb ambient light from above; w: fog coefficient per metre
    vec4 amb_ground;    // rgb ambient light from below; w: lights on (lamps, windows)
    vec4 fog_color;     // rgb; w: 1 when it overrides the sky's horizon colour
    vec4 ground[3];     // material colours (dark, light, accent) x tint
    vec4 lamp_color;    // rgb
    vec4 noise_offset;  // xy: where this scene's seed puts us in the noise texture
    ivec4 ids;          // x: seed
};
layout(std140) uniform Frame {
    mat4 view_proj;
    vec4 cam;           // xyz camera position
    vec4 cam_right;     // w: tan(horizontal fov / 2)
    vec4 cam_up;        // w: tan(vertical fov / 2)
    vec4 cam_forward;
    vec4 lamps[%(MAX_LAMPS)d];     // xyz position, w weight 0..1
};
vec3 sky_color(vec3 d) {
    float e = clamp(d.y, 0.0, 1.0), h = 1.0 - e;
    float s = max(dot(d, sun_dir.xyz), 0.0);
    float s6 = s * s * s; s6 *= s6;
    float s48 = s6 * s6; s48 *= s48; s48 *= s48;
    return mix(horizon.rgb, zenith.rgb, sqrt(e)) + glow.rgb * (s6 * h * h + 0.25 * s48);
}
vec3 fog_tone(vec3 d) {
    return fog_color.w > 0.5 ? fog_color.rgb : sky_color(normalize(vec3(d.x, 0.0, d.z)));
}
"""

# Lighting and fog are computed per vertex: on llvmpipe the fragment shader is the expensive part, and sun,
# ambient, lamp light and fog all vary slowly across the (fine near the camera) geometry.
VERTEX_SHADING = """
vec3 light(vec3 n, vec3 p) {  // what multiplies the albedo
    vec3 c = sun_color.rgb * (max(dot(n, sun_dir.xyz), 0.0) * sun_dir.w)
             + mix(amb_ground.rgb, amb_sky.rgb, 0.5 + 0.5 * n.y);
#if LAMPS
    for (int i = 0; i < %(MAX_LAMPS)d; i++) {
        vec3 l = lamps[i].xyz - p;
        float d2 = dot(l, l);
        float fall = max(1.0 - d2 / 196.0, 0.0);
        c += lamp_color.rgb * (lamps[i].w * fall * fall * 9.0 / (d2 + 3.0))
             * (0.25 + 0.75 * max(dot(n, l * inversesqrt(d2)), 0.0));
    }
#endif
    return c;
}
vec4 fog(vec3 p) {  // rgb: the fog's colour in this direction, a: how much of it lies in front of p
    vec3 d = p - cam.xyz;
    return vec4(fog_tone(d), 1.0 - exp(-length(d) * amb_sky.w));
}
"""

NOISE = """
// Tileable noise (see noise_texture()), sampled without mipmaps (cheaper on llvmpipe); callers fade each band
// by the pixel footprint instead (bands()), so distant surfaces do not sparkle.
// R: 4 blobs across the tile, G: 16, B: 64, A: a network of thin ridges (about 16 across); all centred on 0.
uniform sampler2D noise_tex;
vec4 tap(vec2 uv) { return textureLod(noise_tex, uv + noise_offset.xy, 0.0) - 0.5; }
// weights of the four bands of a tap whose tile spans `tile` metres, for a pixel footprint fw (metres)
vec4 bands(float tile, float fw) {
    return clamp(2.0 - (fw / tile) / vec4(0.06, 0.015, 0.004, 0.015), 0.0, 1.0);  // 1 .. 0 as fw / tile doubles
}
float hash2(vec2 c) {  // a pcg-style integer hash of a cell, 0..1
    uvec3 v = uvec3(ivec3(c, ids.x)) * 1664525u + 1013904223u;
    v.x += v.y * v.z; v.y += v.z * v.x; v.z += v.x * v.y;
    v ^= v >> 16u;
    v.x += v.y * v.z; v.y += v.z * v.x; v.z += v.x * v.y;
    return float((v.x ^ v.y ^ v.z) >> 8u) * (1.0 / 16777216.0);
}
"""

TERRAIN_VS = """
in vec3 in_pos;
in vec3 in_normal;
out vec3 v_pos;
out float v_slope;
out vec3 v_light;
out vec4 v_fog;
void main() {
    v_pos = in_pos;
    v_slope = in_normal.y;
    v_light = light(in_normal, in_pos);
    v_fog = fog(in_pos);
    gl_Position = view_proj * vec4(in_pos, 1.0);
}
"""

TERRAIN_FS = """
in vec3 v_pos;
in float v_slope;
in vec3 v_light;
in vec4 v_fog;
out vec4 frag;
void main() {
    vec2 p = v_pos.xz;
    vec2 w = fwidth(p);
    float fw = max(max(w.x, w.y), 1e-4);                // metres per pixel
    vec3 c0 = ground[0].rgb, c1 = ground[1].rgb, c2 = ground[2].rgb, c;
    vec4 a = tap(p * (1.0 / 64.0)) * bands(64.0, fw);   // features of 16 m, 4 m, 1 m; ridges 4 m apart
    vec4 b = tap(p * (1.0 / 6.0)) * bands(6.0, fw);     // 1.5 m, 40 cm, 10 cm; ridges 40 cm apart
    float sharp = 1.0 - smoothstep(0.03, 0.12, fw);     // drawn patterns fade where a pixel covers them
#if MATERIAL == 0   // grass: light and dark patches, tufts, dry spots
    c = mix(c0, c1, clamp(0.55 + 1.3 * a.r + 0.8 * a.g + 0.6 * a.b + 0.7 * b.g + 0.8 * b.b, 0.0, 1.0));
    c = mix(c, c2, 0.75 * smoothstep(0.12, 0.3, a.g + 0.6 * a.r));
#elif MATERIAL == 1 // sand: wind ripples across dunes
    float ripple = sin(dot(p, vec2(0.8, 0.6)) * 9.0 + 14.0 * a.b) * sharp;
    c = mix(c0, c1, clamp(0.6 + 1.2 * a.r + 0.5 * a.g + 0.15 * ripple + 0.3 * b.b, 0.0, 1.0));
    c = mix(c, c2, smoothstep(0.1, 0.3, a.r + 0.5 * a.g));
#elif MATERIAL == 2 // snow: soft drifts
    c = mix(c0, c1, clamp(0.7 + 1.1 * a.r + 0.6 * a.g + 0.3 * b.g + 0.2 * b.b, 0.0, 1.0));
#elif MATERIAL == 3 // rock: layered stone with cracks
    c = mix(c0, c1, clamp(0.5 + 1.4 * a.r + 0.9 * a.g + 0.7 * a.b + 0.5 * b.g, 0.0, 1.0));
    c = mix(c, c2, 0.25 * smoothstep(0.3, 0.5, a.a) + 0.55 * smoothstep(0.25, 0.45, b.a));
#elif MATERIAL == 4 // dirt: earth with pebbles
    c = mix(c0, c1, clamp(0.5 + 1.3 * a.r + 0.9 * a.g + 0.6 * a.b + 0.5 * b.g, 0.0, 1.0));
    c = mix(c, c2, 0.8 * smoothstep(0.2, 0.28, b.b));
#else               // paved: stone slabs in a running bond, mortar lines, worn patches
    vec2 q = p / vec2(0.9, 0.6);
    q.x += 0.5 * mod(floor(q.y), 2.0);
    vec2 f = abs(fract(q) - 0.5) * vec2(0.9, 0.6);
    float line = mix(0.15, 1.0 - smoothstep(0.015, 0.04, min(0.45 - f.x, 0.3 - f.y)), sharp);
    c = mix(c0, c1, clamp(0.5 + 0.8 * (hash2(floor(q) + 101.0) - 0.5) * sharp + a.r + 0.4 * b.b, 0.0, 1.0));
    c = mix(c, c2, line);
#endif
#if MATERIAL != 3   // steep slopes show rock
    c = mix(c, vec3(0.36, 0.34, 0.32), smoothstep(0.82, 0.7, v_slope));
#endif
    frag = vec4(mix(c * v_light, v_fog.rgb, v_fog.a), 1.0);
}
"""

OBJECT_VS = """
in vec3 in_pos;
in vec3 in_normal;
in vec4 i_m0;
in vec4 i_m1;
in vec4 i_m2;
in vec3 i_color;
in vec3 i_anchor;
out vec3 v_pos;
out vec3 v_local;
out vec3 v_lnormal;
out vec3 v_light;
out vec4 v_fog;
flat out vec3 v_color;
void main() {
    mat3 m = transpose(mat3(i_m0.xyz, i_m1.xyz, i_m2.xyz));  // rotation x scale
    vec3 t = vec3(i_m0.w, i_m1.w, i_m2.w);
    vec3 scale = vec3(length(m[0]), length(m[1]), length(m[2]));
    float shrink = 1.0 - smoothstep(%(FADE0)f, %(FADE1)f, distance(i_anchor.xz, cam.xz));
    vec3 p = i_anchor.xyz + (m * in_pos + t - i_anchor.xyz) * shrink;
    v_pos = p;
    v_local = in_pos * scale;
    v_lnormal = in_normal;
    v_light = light(normalize(m * (in_normal / (scale * scale))), p);  // normal: inverse transpose of m
    v_fog = fog(p);
    v_color = i_color;
    gl_Position = view_proj * vec4(p, 1.0);
}
"""

OBJECT_FS = """
in vec3 v_pos;
in vec3 v_local;
in vec3 v_lnormal;
in vec3 v_light;
in vec4 v_fog;
flat in vec3 v_color;
out vec4 frag;
void main() {
    vec3 lp = v_local, ln = v_lnormal, albedo = v_color, emit = vec3(0.0);
    float fw = max(length(fwidth(v_pos)), 1e-4), sharp = 1.0 - smoothstep(0.04, 0.15, fw);
    // coordinates across a face in metres: (along, up) on walls, (x, z) on tops
    vec2 uv = abs(ln.y) > 0.7 ? lp.xz : vec2(abs(ln.x) > abs(ln.z) ? lp.z : lp.x, lp.y);
#if PATTERN == %(BARK)d
    albedo *= 1.0 + 0.8 * tap(vec2((lp.x - lp.z) * 0.6, lp.y * 0.05)).b * sharp;
#elif PATTERN == %(FOLIAGE)d
    vec4 f = tap(v_pos.xz * 0.09 + v_pos.y * vec2(0.061, 0.043)) * bands(11.0, fw);
    albedo *= (1.0 + 1.2 * f.b + 0.8 * f.g) * (0.8 + 0.3 * ln.y);
#elif PATTERN == %(STONE)d
    float row = floor(uv.y / 0.5), shift = 0.5 * mod(row, 2.0);
    vec2 f = abs(fract(vec2(uv.x / 0.8 + shift, uv.y / 0.5)) - 0.5) * vec2(0.8, 0.5);
    float joint = abs(ln.y) > 0.7 ? 0.0 : (1.0 - smoothstep(0.01, 0.035, min(0.4 - f.x, 0.25 - f.y))) * sharp;
    albedo *= (1.0 + 0.3 * (hash2(vec2(floor(uv.x / 0.8 + shift), row) + 57.0) - 0.5) * sharp) * (1.0 - 0.45 * joint);
#elif PATTERN == %(PLANKS)d
    float groove = (1.0 - smoothstep(0.005, 0.02, 0.11 - abs(fract(uv.y / 0.22) - 0.5) * 0.22)) * sharp;
    albedo *= (1.0 + 0.4 * tap(vec2(uv.x * 0.1, floor(uv.y / 0.22) * 0.37)).b * sharp) * (1.0 - 0.45 * groove);
#elif PATTERN == %(WALL)d
    if (abs(ln.y) < 0.5) {  // windows on every floor, a door on the front; walls start 1 m underground
        vec2 cell = vec2(uv.x / 2.4, (uv.y - 1.0) / 2.8), f = fract(cell);
        bool window = abs(f.x - 0.5) < 0.2 && f.y > 0.3 && f.y < 0.75 && cell.y >= 0.0;
        bool door = cell.y < 1.0 && abs(uv.x) < 0.55 && uv.y > 1.0 && uv.y < 3.1 && ln.z > 0.5;
        if (door) albedo = vec3(0.30, 0.20, 0.13);
        else if (window) {
            albedo = vec3(0.14, 0.17, 0.21);
            if (hash2(floor(cell) + 31.0 * ln.xz) > 0.35) emit = vec3(1.0, 0.75, 0.4) * 0.9 * amb_ground.w;
        }
    }
#elif PATTERN == %(ROOF)d
    albedo *= 0.82 + 0.25 * smoothstep(0.3, 0.5, abs(fract(lp.y * 3.0) - 0.5)) * sharp;
#elif PATTERN == %(ROCK)d
    vec4 f = tap(v_pos.xz * 0.05 + v_pos.y * vec2(0.037, 0.029)) * bands(20.0, fw);
    albedo *= 1.0 + 1.6 * f.g + 0.8 * f.b - 0.5 * smoothstep(0.1, 0.4, f.a);
#elif PATTERN == %(LAMP)d
    emit = albedo * 1.6 * amb_ground.w;
#endif
    frag = vec4(mix(albedo * v_light + emit, v_fog.rgb, v_fog.a), 1.0);
}
"""

SKY_VS = """
out vec2 v_ndc;
void main() {
    v_ndc = vec2(gl_VertexID == 1 ? 3.0 : -1.0, gl_VertexID == 2 ? 3.0 : -1.0);
    gl_Position = vec4(v_ndc, 1.0, 1.0);
}
"""

SKY_FS = """
in vec2 v_ndc;
out vec4 frag;
void main() {
    vec3 d = normalize(cam_forward.xyz + v_ndc.x * cam_right.w * cam_right.xyz + v_ndc.y * cam_up.w * cam_up.xyz);
    vec3 c = sky_color(d);
    float s = max(dot(d, sun_dir.xyz), 0.0);
    // the disc: the sun (bright, with a halo) or the moon (pale)
    float disc = smoothstep(0.99955, 0.99975, s) * sun_dir.w;
    c = mix(c, sun_color.rgb * (sun_color.w > 0.5 ? 2.2 : 3.0) + 0.25, disc);
    float halo = s * s; halo *= halo; halo *= halo; halo *= halo; halo *= halo; halo *= halo; halo *= halo;  // s^128
    c += sun_color.rgb * halo * 0.5 * sun_dir.w;
    // clouds on a plane high above, lit by the sky and the sun
    if (d.y > 0.0 && glow.w > 0.0) {
        vec4 t = tap(d.xz / (d.y + 0.08) * 0.35) + 0.5;
        float n = t.r * 0.55 + t.g * 0.3 + t.b * 0.15;
        float edge = 0.5 + 0.35 * (0.5 - glow.w);  // noise level where clouds begin: more cover, lower edge
        float cover = smoothstep(edge - 0.06, edge + 0.06, n) * smoothstep(0.0, 0.12, d.y);
        vec3 cloud = amb_sky.rgb * 1.3 + sun_color.rgb * sun_dir.w * (0.45 + 0.35 * s) + glow.rgb * 0.3;
        c = mix(c, cloud * (0.7 + 0.5 * n), cover * min(glow.w + 0.4, 0.95));
    }
    frag = vec4(mix(c, fog_tone(d), zenith.w), 1.0);
}
"""

HALO_VS = """
in vec2 in_corner;
in vec3 i_lamp;
out vec2 v_corner;
out float v_fade;
void main() {
    float shrink = 1.0 - smoothstep(%(FADE0)f, %(FADE1)f, distance(i_lamp.xz, cam.xz));
    vec3 p = i_lamp + (cam_right.xyz * in_corner.x + cam_up.xyz * in_corner.y) * 1.4 * shrink;
    v_corner = in_corner;
    v_fade = exp(-distance(i_lamp, cam.xyz) * amb_sky.w);
    gl_Position = view_proj * vec4(p, 1.0);
}
"""

HALO_FS = """
in vec2 v_corner;
in float v_fade;
out vec4 frag;
void main() {
    frag = vec4(lamp_color.rgb * (exp(-dot(v_corner, v_corner) * 5.0) * 0.55 * v_fade), 1.0);
}
"""

SHADERS = {  # name -> (vertex shader parts, fragment shader parts)
    "terrain": ((COMMON, VERTEX_SHADING, TERRAIN_VS), (COMMON, NOISE, TERRAIN_FS)),
    "object": ((COMMON, VERTEX_SHADING, OBJECT_VS), (COMMON, NOISE, OBJECT_FS)),
    "sky": ((COMMON, SKY_VS), (COMMON, NOISE, SKY_FS)),
    "halo": ((COMMON, HALO_VS), (COMMON, HALO_FS)),
}


def shader_source(parts: tuple[str, ...], lamps: bool = False, material: int = -1, pattern: int = -1) -> str:
    consts = dict(LAMPS=int(lamps), MATERIAL=material, PATTERN=pattern, MAX_LAMPS=MAX_LAMPS, FADE0=FADE[0],
                  FADE1=FADE[1], BARK=BARK, FOLIAGE=FOLIAGE, STONE=STONE, PLANKS=PLANKS, WALL=WALL, ROOF=ROOF,
                  LAMP=LAMP, ROCK=ROCK)
    return "".join(parts) % consts


@functools.cache
def noise_texture(size: int = 256) -> np.ndarray:
    """(size, size, 4) uint8 tileable noise: R, G, B band-limited noise with 4, 16 and 64 blobs across,
    A thin ridges along the zero crossings of 16-across noise (cracks, veins). All bands centre on 0.5, so
    fading a band towards 0.5 fades its detail. Fixed; scenes differ by where they sample it."""
    rng = np.random.default_rng(1234)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(size) * size, np.fft.rfftfreq(size) * size, indexing="ij"))

    def band(cycles):  # zero mean, unit std, features about size / cycles texels across
        x = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((size, size))) * np.exp(-(k / cycles) ** 2), (size, size))
        return (x - x.mean()) / x.std()

    r, g, b, v = band(4), band(16), band(64), band(16)
    ridge = np.exp(-(v / 0.2) ** 2)
    ridge = 0.5 + 0.5 * (ridge - ridge.mean()) / (1 - ridge.mean())  # crests at 1, the rest a little under 0.5
    channels = [0.5 + 0.125 * r, 0.5 + 0.125 * g, 0.5 + 0.125 * b, ridge]
    return np.round(np.clip(np.stack(channels, -1), 0, 1) * 255).astype(np.uint8)


def scene_uniforms(scene: SceneParams) -> bytes:
    """The Scene uniform block (std140) for a scene."""
    p = scene.preset()
    elevation, azimuth, intensity, ambient = scene.sun()
    zenith = np.array(scene.sky.zenith or p.zenith)
    horizon = np.array(scene.sky.horizon or p.horizon)
    sun_dir = direction(azimuth, elevation)
    above = float(np.clip((elevation + 2.0) / 5.0, 0, 1))   # the sun sets over a few degrees
    sun = np.array(p.sun_color) * intensity
    low = np.exp(-max(elevation, 0.0) / 12.0)               # a low sun paints the horizon round it
    glow = np.array(p.sun_color) * (0.15 if p.moon else 0.75) * low * min(intensity, 1.2) * float(elevation > -12)
    mats = np.array(MATERIAL_COLORS[scene.ground.material]) * np.array(scene.ground.tint or (1.0, 1.0, 1.0))
    amb_sky = (0.45 * zenith + 0.55 * horizon) * ambient * 1.4
    amb_ground = mats[1] * (sun * max(sun_dir[1], 0.0) * above + amb_sky) * 0.35
    density = scene.fog.density
    fog_k = float(np.exp(np.log(0.006) + density * (np.log(0.2) - np.log(0.006))))  # 95% fog at 500 m .. 15 m
    fog_color = scene.fog.color
    block = [
        [*zenith, 0.9 * density ** 1.5], [*horizon, 0.0], [*sun_dir, above], [*sun, float(p.moon)],
        [*glow, p.clouds if scene.sky.clouds is None else scene.sky.clouds], [*amb_sky, fog_k],
        [*amb_ground, float(p.lights_on)],
        [*(fog_color or (0, 0, 0)), float(fog_color is not None)], *[[*c, 0.0] for c in mats],
        [1.4, 1.09, 0.7, 0.0], [*np.random.default_rng([scene.seed, 0x0FF5]).random(2), 0.0, 0.0],
    ]
    return np.array(block, "f4").tobytes() + np.array([scene.seed % 65521, 0, 0, 0], "i4").tobytes()


# --- the renderer ----------------------------------------------------------------------------------

FRAME_FLOATS = 16 + 4 * 4 + MAX_LAMPS * 4  # the Frame uniform block


class GLResources:
    """What all scenes share on one context: compiled programs, the noise texture, the primitive meshes and
    the per-frame buffers. Switching scenes (data generation does it often) then costs no compiling."""

    def __init__(self, ctx: moderngl.Context):
        self.ctx = ctx
        self.programs: dict[tuple, moderngl.Program] = {}
        self.object_vaos: dict[tuple, moderngl.VertexArray] = {}
        self.noise = ctx.texture((256, 256), 4, noise_texture().tobytes())
        self.frame_ubo = ctx.buffer(reserve=FRAME_FLOATS * 4)
        meshes = primitive_meshes()
        vertices, indices = [], []
        self.prim_cmds = np.zeros((len(PRIMITIVES), 5), "u4")  # DrawElementsIndirect: index count, instances,
        for i, name in enumerate(PRIMITIVES):                   # first index, base vertex, base instance
            pos, nrm, tris = meshes[name]
            self.prim_cmds[i, [0, 2, 3]] = tris.size, sum(t.size for t in indices), sum(len(v) for v in vertices)
            vertices.append(np.concatenate([pos, nrm], 1))
            indices.append(tris)
        self.prim_vbo = ctx.buffer(np.concatenate(vertices).astype("f4").tobytes())
        self.prim_ibo = ctx.buffer(np.concatenate(indices).astype("u4").tobytes())
        self.instances = ctx.buffer(reserve=INSTANCE_FLOATS * 4)
        self.object_cmds_template = np.tile(self.prim_cmds, (N_PATTERNS, 1))  # a command per (pattern, primitive)
        self.object_cmds = ctx.buffer(reserve=self.object_cmds_template.nbytes)
        self.terrain_cmds = ctx.buffer(reserve=1024 * 20)
        self.sky_vao = ctx.vertex_array(self.program("sky"), [])
        self.halo_corners = ctx.buffer(np.array([-1, -1, 1, -1, 1, 1, -1, -1, 1, 1, -1, 1], "f4").tobytes())

    def program(self, name: str, **defines) -> moderngl.Program:
        key = (name, tuple(sorted(defines.items())))
        if key not in self.programs:
            vs, fs = SHADERS[name]
            prog = self.ctx.program(vertex_shader=shader_source(vs, **defines),
                                    fragment_shader=shader_source(fs, **defines))
            for block, binding in (("Scene", 0), ("Frame", 1)):
                if prog.get(block, None) is not None:
                    prog[block].binding = binding
            self.programs[key] = prog
        return self.programs[key]

    def object_vao(self, lamps: bool, pattern: int) -> moderngl.VertexArray:
        key = (lamps, pattern)
        if key not in self.object_vaos:
            self.object_vaos[key] = self.ctx.vertex_array(
                self.program("object", lamps=lamps, pattern=pattern),
                [(self.prim_vbo, "3f 3f", "in_pos", "in_normal"),
                 (self.instances, "4f 4f 4f 3f 3f/i", "i_m0", "i_m1", "i_m2", "i_color", "i_anchor")],
                index_buffer=self.prim_ibo, index_element_size=4)
        return self.object_vaos[key]

    def release(self) -> None:
        for obj in [*self.object_vaos.values(), self.sky_vao, *self.programs.values(), self.noise, self.frame_ubo,
                    self.prim_vbo, self.prim_ibo, self.instances, self.object_cmds, self.terrain_cmds,
                    self.halo_corners]:
            obj.release()


class SceneRenderer:
    """Draws one scene into the bound framebuffer. Keeps the terrain meshes and object sets near the camera
    (a few, most recently used); release() frees its GL objects."""

    def __init__(self, res: GLResources, scene: SceneParams):
        self.res, self.scene, ctx = res, copy.deepcopy(scene), res.ctx  # a copy: the caller may change theirs
        self.lit = scene.preset().lights_on
        self.scene_ubo = ctx.buffer(scene_uniforms(scene))
        material = GROUND_MATERIALS.index(scene.ground.material)
        self.terrain_prog = res.program("terrain", lamps=self.lit, material=material)
        self.placements: OrderedDict[tuple[int, int], Placements] = OrderedDict()
        self.object_sets: OrderedDict[tuple[int, int], PartSet] = OrderedDict()
        self.terrains: OrderedDict[tuple[int, int], tuple] = OrderedDict()
        self.lamp_buffer = ctx.buffer(reserve=12)
        self.halo_vao = ctx.vertex_array(res.program("halo"), [(res.halo_corners, "2f", "in_corner"),
                                                               (self.lamp_buffer, "3f/i", "i_lamp")])
        self.halo_cell = None  # the cell whose object set's lamps are in lamp_buffer

    # --- what lies around the camera (cached) ---
    def _objects(self, cell: tuple[int, int]) -> PartSet:
        """The parts of the objects in the cells round `cell` (a CELL grid square)."""
        if cell not in self.object_sets:
            r = range(-OBJECT_CELLS, OBJECT_CELLS + 1)
            self.object_sets[cell] = object_parts(Placements.concat(
                [self._placements((cell[0] + i, cell[1] + j)) for i in r for j in r]))
            _trim(self.object_sets, CACHED)
        self.object_sets.move_to_end(cell)
        return self.object_sets[cell]

    def _placements(self, cell: tuple[int, int]) -> Placements:
        if cell not in self.placements:
            self.placements[cell] = objects_in_cell(self.scene, *cell)
            _trim(self.placements, 4 * (2 * OBJECT_CELLS + 1) ** 2)
        self.placements.move_to_end(cell)
        return self.placements[cell]

    def _terrain(self, key: tuple[int, int]):
        """(vertex array, chunk_first, chunk bounds) of the terrain centred in the TERRAIN_SNAP square `key`."""
        if key not in self.terrains:
            vertices, tris, first, bounds = terrain_mesh(self.scene, (key[0] + 0.5) * TERRAIN_SNAP,
                                                          (key[1] + 0.5) * TERRAIN_SNAP)
            vbo, ibo = self.res.ctx.buffer(vertices.tobytes()), self.res.ctx.buffer(tris.tobytes())
            vao = self.res.ctx.vertex_array(self.terrain_prog, [(vbo, "3f 3f", "in_pos", "in_normal")],
                                            index_buffer=ibo, index_element_size=4)
            self.terrains[key] = (vao, first, bounds, (vao, vbo, ibo))
            for *_, gl_objects in _trim(self.terrains, CACHED):
                for obj in gl_objects:
                    obj.release()
        self.terrains.move_to_end(key)
        return self.terrains[key][:3]

    # --- one frame ---
    def draw(self, pose: Pose, size: tuple[int, int]) -> None:
        """One frame of (width, height) pixels into the bound framebuffer, whose depth must be clear."""
        res, ctx = self.res, self.res.ctx
        aspect = size[0] / size[1]
        cam = np.asarray(pose.position)
        cell = (int(np.floor(cam[0] / CELL)), int(np.floor(cam[2] / CELL)))
        parts = self._objects(cell)
        view, proj = pose.world_to_camera(), pose.projection(aspect)
        view_proj = proj @ view
        planes = frustum_planes(view_proj)
        # the rows of the view rotation are the camera's right, up and backward axes in world coordinates
        tan_y = 1.0 / proj[1, 1]
        frame = np.concatenate([view_proj.T.ravel(), cam, [0], view[0, :3], [tan_y * aspect], view[1, :3], [tan_y],
                                -view[2, :3], [0], self._lamps(parts.lamps, cam).ravel()])
        res.frame_ubo.write(frame.astype("f4").tobytes())
        self.scene_ubo.bind_to_uniform_block(0)
        res.frame_ubo.bind_to_uniform_block(1)
        res.noise.use(0)
        # nearest first, so the depth test spares the shading of what they hide; the sky last
        back = view[2, :3]
        depth = np.concatenate([-back, [back @ cam]])          # how far ahead
        self._draw_objects(parts, planes[:4], cam, depth, LOD_DEPTH * size[1] / 72)
        self._draw_terrain(cam, planes)
        ctx.depth_func = "<="  # the sky lies exactly on the far plane
        res.sky_vao.render(moderngl.TRIANGLES, vertices=3)
        ctx.depth_func = "<"
        if self.lit and len(parts.lamps):
            self._draw_halos(parts, cell)

    def _draw_objects(self, parts: PartSet, planes: np.ndarray, cam: np.ndarray, depth: np.ndarray,
                      lod_depth: float) -> None:
        """The visible parts, compacted into the instance buffer; per pattern one call with a command per
        primitive. Parts with a level of detail come in two versions: the near one is drawn if the part's
        centre lies less than lod_depth ahead (depth: a plane measuring that), the far one otherwise. Parts whose
        object stands FADE[1] or more away across the ground are shrunk to nothing by the shader, so not drawn
        (measured as the shader does: a plane FADE[1] ahead also took the objects right below a high camera)."""
        res = self.res
        near = depth.astype("f4") @ parts.bounds.centre < lod_depth
        across = parts.data[:, ANCHOR:ANCHOR + 3:2] - cam[[0, 2]].astype("f4")  # (P, 2) anchor - camera in x, z
        vis = (parts.bounds.visible(planes) & ((parts.lod == 0) | ((parts.lod == 1) == near))
               & (np.einsum("pi,pi->p", across, across) < FADE[1] ** 2))
        counts = np.bincount(parts.key[vis], minlength=N_PATTERNS * len(PRIMITIVES))
        if not counts.any():
            return
        res.instances.orphan(int(counts.sum()) * INSTANCE_FLOATS * 4)
        res.instances.write(parts.data[vis].tobytes())
        cmds = res.object_cmds_template.copy()
        cmds[:, 1], cmds[:, 4] = counts, np.cumsum(counts) - counts
        res.object_cmds.write(cmds.tobytes())
        for pattern in np.flatnonzero(counts.reshape(N_PATTERNS, -1).any(1)):
            res.object_vao(self.lit, int(pattern)).render_indirect(
                res.object_cmds, moderngl.TRIANGLES, count=len(PRIMITIVES), first=int(pattern) * len(PRIMITIVES))

    def _draw_terrain(self, cam: np.ndarray, planes: np.ndarray) -> None:
        """The visible chunks, runs of neighbours merged (each draw command has a fixed cost)."""
        vao, first, bounds = self._terrain((int(np.floor(cam[0] / TERRAIN_SNAP)), int(np.floor(cam[2] / TERRAIN_SNAP))))
        chunks = np.flatnonzero(bounds.visible(planes))
        if not len(chunks):
            return
        breaks = chunks[1:] != chunks[:-1] + 1
        start, end = chunks[np.concatenate([[True], breaks])], chunks[np.concatenate([breaks, [True]])] + 1
        cmds = np.zeros((len(start), 5), "u4")  # DrawElementsIndirect: index count, instances, first index, ...
        cmds[:, 0], cmds[:, 1], cmds[:, 2] = (first[end] - first[start]) * 3, 1, first[start] * 3
        self.res.terrain_cmds.write(cmds.tobytes())
        vao.render_indirect(self.res.terrain_cmds, moderngl.TRIANGLES, count=len(start))

    def _draw_halos(self, parts: PartSet, cell: tuple[int, int]) -> None:
        """A glow round each lamp, added on top."""
        ctx = self.res.ctx
        if self.halo_cell != cell:
            self.lamp_buffer.orphan(parts.lamps.size * 4)
            self.lamp_buffer.write(parts.lamps.astype("f4").tobytes())
            self.halo_cell = cell
        ctx.enable(moderngl.BLEND)
        ctx.blend_func = moderngl.ONE, moderngl.ONE
        ctx.depth_mask = False
        self.halo_vao.render(moderngl.TRIANGLES, vertices=6, instances=len(parts.lamps))
        ctx.depth_mask = True
        ctx.disable(moderngl.BLEND)

    def _lamps(self, positions: np.ndarray, cam: np.ndarray) -> np.ndarray:
        """(MAX_LAMPS, 4) the lamps that light the scene now: position and weight. Unused slots lie far below
        the ground. A lamp's weight falls to 0 before it leaves the nearest set, so no light switches."""
        out = np.zeros((MAX_LAMPS, 4))
        out[:, 1] = -1e4
        if not self.lit or not len(positions):
            return out
        d = np.linalg.norm(positions - cam, axis=1)
        order = np.argsort(d, kind="stable")[:MAX_LAMPS + 1]
        near = order[:MAX_LAMPS]
        cut = d[order[MAX_LAMPS]] if len(order) > MAX_LAMPS else np.inf
        out[:len(near), :3] = positions[near]
        out[:len(near), 3] = np.clip((cut - d[near]) / (0.25 * cut), 0, 1) if np.isfinite(cut) else 1.0
        return out

    def release(self) -> None:
        for *_, gl_objects in self.terrains.values():
            for obj in gl_objects:
                obj.release()
        for obj in (self.halo_vao, self.lamp_buffer, self.scene_ubo):
            obj.release()


def _trim(cache: OrderedDict, size: int) -> list:
    """Drop the least recently used entries beyond `size`; returns the dropped values."""
    return [cache.popitem(last=False)[1] for _ in range(len(cache) - size)]
