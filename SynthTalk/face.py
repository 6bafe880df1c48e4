"""A procedural talking head and its analytic rig.

The head is a closed surface swept over (row, azimuth): horizontal cross-sections from the neck up to
the brow, then an elliptic crown cap. Facial features are smooth depth offsets on the front. The mouth
line is cut open (the upper and lower lips own separate vertices along it) and closed again from the
inside by a mouth cavity, so the lips can part while the head stays watertight. Eyeballs and eyelids
are separate closed shells. Units are metres, y up, +z towards the viewer, like FLAME.

The rig is a function of a few named controls per frame, see `CONTROLS` and `Face.pose`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.interpolate import PchipInterpolator

CONTROLS = (
    "jaw_open",         # 0..1, jaw rotation about the hinge
    "lip_round",        # 0..1, pucker: corners in, lips forward
    "lip_spread",       # 0..1, corners out, lips flat against the teeth
    "lip_press",        # 0..1, fraction of the lip gap closed (1 = lips sealed)
    "upper_lip_raise",  # 0..1
    "lower_lip_tuck",   # 0..1, lower lip up and under the upper teeth (f, v)
    "smile",            # 0..1, corners and cheeks up, lower lids up
    "brow_raise",       # 0..1
    "blink",            # 0..1, 1 = both eyes closed
    "mouth_left",       # -1..1, lips shifted along +x
    "head_pitch",       # radians, positive nods the face down
    "head_yaw",         # radians, positive turns the face towards +x
    "head_roll",        # radians
)

MOUTH_Y = -0.045            # height of the mouth line
MOUTH_CORNER_ANGLE = 0.40   # azimuth of the mouth corners (radians from the front)
NECK_Y = -0.17
BROW_Y = 0.045              # where the swept rows end and the crown cap begins
CROWN_HEIGHT = 0.075
EYE_Y = 0.022
EYE_RADIUS = 0.012
JAW_PIVOT = np.array([0.0, 0.0, -0.025])
JAW_MAX_ANGLE = 0.13        # radians at jaw_open = 1 (about 17 mm of lip opening)
NECK_PIVOT = np.array([0.0, -0.10, -0.015])

N_COLUMNS = 68
N_SWEPT_ROWS = 40
N_CAP_ROWS = 12
# The cavity is a funnel that bends down into the throat, so what shows through the parted lips is
# steep wall facing away from a frontal light, and the point where it closes is out of sight.
CAVITY_DEPTHS = (0.004, 0.014, 0.030, 0.045)
CAVITY_HEIGHTS = (0.002, 0.006, 0.007, 0.005)
CAVITY_DROPS = (0.0, 0.002, 0.008, 0.020)
CAVITY_NARROWING = (0.96, 0.85, 0.65, 0.45)
THROAT = (0.055, 0.045)     # depth behind the lips and drop below the mouth line
EYE_LONGITUDES = 12
EYE_LATITUDES = 9
LID_COLUMNS = 11
LID_ROWS = 4
LID_HALF_WIDTH = 1.1        # azimuth half-range of a lid, radians
LID_UPPER_OPEN = 0.38       # elevation of the upper lid edge (eye centre frame) when open
LID_LOWER_OPEN = -0.50
LID_CORNER = -0.10          # both lids meet here at the eye corners
LID_UPPER_CLOSED = -0.42
LID_LOWER_BLINK_RISE = 0.10
LID_UPPER_FAR, LID_LOWER_FAR = 1.35, -1.30

# Profile of the swept part: half width, front depth and back depth at a height.
_PROFILE_Y = np.array([-0.170, -0.140, -0.118, -0.102, -0.090, -0.072, -0.045, -0.020, 0.000, 0.022, 0.045])
_PROFILE_W = np.array([0.050, 0.052, 0.055, 0.059, 0.062, 0.065, 0.067, 0.071, 0.074, 0.075, 0.075])
_PROFILE_F = np.array([0.040, 0.044, 0.052, 0.068, 0.080, 0.086, 0.088, 0.090, 0.090, 0.089, 0.087])
_PROFILE_B = np.array([0.055, 0.060, 0.068, 0.078, 0.086, 0.093, 0.097, 0.100, 0.101, 0.100, 0.098])
_SECTION_POWER = 0.85       # < 1 squares the cross-sections off a little


@dataclass(frozen=True)
class FaceShape:
    """Identity parameters, relative sizes: all 1.0 is the default face."""
    width: float = 1.0
    height: float = 1.0
    depth: float = 1.0
    jaw_width: float = 1.0
    nose: float = 1.0
    nose_width: float = 1.0
    lips: float = 1.0
    chin: float = 1.0
    cheeks: float = 1.0
    brow: float = 1.0
    eye_spacing: float = 1.0

    @classmethod
    def random(cls, rng: np.random.Generator) -> "FaceShape":
        """A plausible identity: each parameter jittered around the default."""
        def jitter(scale):
            return float(1.0 + scale * rng.uniform(-1.0, 1.0))
        return cls(width=jitter(0.06), height=jitter(0.05), depth=jitter(0.05), jaw_width=jitter(0.08),
                   nose=jitter(0.25), nose_width=jitter(0.2), lips=jitter(0.3), chin=jitter(0.35),
                   cheeks=jitter(0.4), brow=jitter(0.4), eye_spacing=jitter(0.06))


@dataclass
class Face:
    """A neutral head with its topology, regions and rig fields. Build with `build_face`."""
    vertices: np.ndarray          # (V, 3) float32, neutral pose
    faces: np.ndarray             # (F, 3) int64, outward-facing
    regions: dict[str, np.ndarray]
    mouth_pairs: np.ndarray       # (K, 2) upper/lower lip vertex ids facing each other along the mouth line
    _rig: "_Rig"

    def pose(self, controls: dict[str, np.ndarray | float]) -> np.ndarray:
        """Controls (name -> per-frame values, all of one length, or scalars) -> (T, V, 3) float32.

        Missing controls are 0. Unknown names are an error, so a typo is not silently ignored.
        """
        unknown = set(controls) - set(CONTROLS)
        if unknown:
            raise KeyError(f"unknown face controls: {sorted(unknown)}")
        lengths = {np.size(v) for v in controls.values() if np.ndim(v) > 0}
        if len(lengths) > 1:
            raise ValueError(f"controls have different lengths: {sorted(lengths)}")
        frames = lengths.pop() if lengths else 1
        values = np.zeros((frames, len(CONTROLS)))
        for name, value in controls.items():
            values[:, CONTROLS.index(name)] = np.broadcast_to(np.asarray(value, dtype=np.float64), (frames,))
        return self._rig.pose(values)

    def lip_gap(self, poses: np.ndarray) -> np.ndarray:
        """Mouth opening per frame: the largest upper-to-lower lip distance along the mouth line."""
        upper = poses[:, self.mouth_pairs[:, 0]]
        lower = poses[:, self.mouth_pairs[:, 1]]
        return np.linalg.norm(upper - lower, axis=-1).max(axis=1)


def _smoothstep(edge0, edge1, x):
    t = np.clip((np.asarray(x, dtype=np.float64) - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _gauss(x, y, cx, cy, sx, sy):
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _signed_pow(v, p):
    return np.sign(v) * np.abs(v) ** p


def _warped_samples(lo, hi, n, bumps):
    """n samples from lo to hi, denser where `bumps` [(centre, width, gain)] raise the density."""
    fine = np.linspace(lo, hi, 4097)
    density = np.ones_like(fine)
    for centre, width, gain in bumps:
        density += gain * np.exp(-0.5 * ((fine - centre) / width) ** 2)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(fine))])
    return np.interp(np.linspace(0.0, 1.0, n), cdf / cdf[-1], fine)


def _columns():
    # Symmetric about the front (an even count puts a column exactly at azimuth 0), dense on the face.
    lam = _warped_samples(-np.pi, np.pi, N_COLUMNS + 1, [(0.0, 0.55, 4.0), (0.0, 0.25, 2.0)])[:-1]
    lam[N_COLUMNS // 2] = 0.0
    return lam


def _rows():
    y = _warped_samples(NECK_Y, BROW_Y, N_SWEPT_ROWS,
                        [(MOUTH_Y, 0.018, 3.0), (EYE_Y, 0.02, 1.5), (-0.09, 0.015, 1.0)])
    mouth_row = int(np.argmin(np.abs(y - MOUTH_Y)))
    y[mouth_row] = MOUTH_Y
    theta = np.linspace(0.0, np.pi / 2, N_CAP_ROWS + 2)[1:-1]
    return y, theta, mouth_row


def _front_features(x, y, shape: FaceShape, eye_x: float, with_sockets: bool = True):
    """Depth offsets of the facial features at canonical (x, y), before the front-facing fade."""
    xc = _corner_x()
    dz = np.zeros(np.broadcast(x, y).shape)
    if with_sockets:
        for sx in (-eye_x, eye_x):
            dz -= 0.0140 * _gauss(x, y, sx, EYE_Y, 0.0145, 0.0100)
    brow_band = np.exp(-0.5 * ((y - (EYE_Y + 0.02)) / 0.006) ** 2) * np.exp(-0.5 * (x / 0.045) ** 4)
    dz += 0.0055 * shape.brow * brow_band
    # Nose: a ridge that rises from the bridge to the tip, then a steep underside.
    ridge_h = np.interp(y, [-0.026, -0.014, -0.008, 0.012, 0.034], [0.0, 0.019, 0.021, 0.011, 0.003])
    ridge_w = np.interp(y, [-0.026, -0.010, 0.034], [0.0085, 0.0085, 0.0055]) * shape.nose_width
    dz += shape.nose * ridge_h * np.exp(-0.5 * (x / ridge_w) ** 2)
    for sx in (-1.0, 1.0):
        dz += 0.007 * shape.nose * _gauss(x, y, sx * 0.013 * shape.nose_width, -0.019, 0.0055, 0.0045)
        dz += 0.006 * shape.cheeks * _gauss(x, y, sx * 0.043, -0.002, 0.016, 0.013)
        dz += 0.004 * shape.cheeks * _gauss(x, y, sx * 0.040, -0.036, 0.017, 0.018)
        dz -= 0.003 * _gauss(x, y, sx * xc, MOUTH_Y, 0.004, 0.004)
    # The lips sit on a forward bulge (the teeth arch); each lip is a roll that meets the other in a crease.
    dz += 0.007 * _gauss(x, y, 0.0, MOUTH_Y - 0.002, 0.028, 0.017)
    across = np.clip(1.0 - (x / xc) ** 2, 0.0, None) ** 0.7
    dz += 0.0050 * shape.lips * across * np.exp(-0.5 * ((y - (MOUTH_Y + 0.0045)) / 0.0033) ** 2)
    dz += 0.0060 * shape.lips * across * np.exp(-0.5 * ((y - (MOUTH_Y - 0.0058)) / 0.0040) ** 2)
    dz -= 0.0030 * _gauss(x, y, 0.0, MOUTH_Y - 0.019, 0.018, 0.004)
    dz += 0.0075 * shape.chin * _gauss(x, y, 0.0, -0.081, 0.016, 0.010)
    return dz


def _corner_x() -> float:
    """Canonical x of the mouth corners (on the default profile)."""
    w = float(PchipInterpolator(_PROFILE_Y, _PROFILE_W)(MOUTH_Y))
    return w * np.sin(MOUTH_CORNER_ANGLE) ** _SECTION_POWER


def _surface_point(x_target, y, shape: FaceShape, eye_x):
    """Canonical front-surface z at (x, y) without the eye sockets (to seat the eyeballs)."""
    w, f = _profile(np.array([y]), shape)
    lam = np.arcsin(np.clip(abs(x_target) / w[0], 0, 1) ** (1.0 / _SECTION_POWER))
    z = f[0] * np.cos(lam) ** _SECTION_POWER
    fade = _smoothstep(0.15, 0.55, np.cos(lam))
    return z + fade * _front_features(x_target, y, shape, eye_x, with_sockets=False)


def _profile(y, shape: FaceShape):
    w = PchipInterpolator(_PROFILE_Y, _PROFILE_W)(y)
    f = PchipInterpolator(_PROFILE_Y, _PROFILE_F)(y)
    w = w * (1.0 + (shape.jaw_width - 1.0) * _smoothstep(MOUTH_Y + 0.035, MOUTH_Y - 0.03, y)
             * _smoothstep(NECK_Y, -0.11, y))
    return w, f


class _Builder:
    """Accumulates vertices and faces part by part."""

    def __init__(self):
        self.points: list[np.ndarray] = []
        self.faces: list[np.ndarray] = []
        self.count = 0

    def add(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        ids = np.arange(self.count, self.count + len(points))
        self.points.append(points)
        self.count += len(points)
        return ids

    def quads(self, a, b, c, d):
        """Two triangles per quad a-b-c-d (counter-clockwise seen from outside)."""
        a, b, c, d = (np.asarray(v).ravel() for v in (a, b, c, d))
        self.faces.append(np.stack([a, b, c], axis=1))
        self.faces.append(np.stack([a, c, d], axis=1))

    def triangles(self, a, b, c):
        a, b, c = np.broadcast_arrays(*(np.asarray(v).ravel() for v in (a, b, c)))
        self.faces.append(np.stack([a, b, c], axis=1))


def _grid_shell(builder: _Builder, outer: np.ndarray, inner: np.ndarray):
    """A closed thin shell from two (rows, cols, 3) grids: outer faces out, inner faces in, rims joined."""
    rows, cols = outer.shape[:2]
    o = builder.add(outer).reshape(rows, cols)
    i = builder.add(inner).reshape(rows, cols)
    builder.quads(o[:-1, :-1], o[:-1, 1:], o[1:, 1:], o[1:, :-1])
    builder.quads(i[:-1, :-1], i[1:, :-1], i[1:, 1:], i[:-1, 1:])
    ring = ([(0, c) for c in range(cols)] + [(r, cols - 1) for r in range(1, rows)]
            + [(rows - 1, c) for c in range(cols - 2, -1, -1)] + [(r, 0) for r in range(rows - 2, 0, -1)])
    ring_o = np.array([o[r, c] for r, c in ring])
    ring_i = np.array([i[r, c] for r, c in ring])
    builder.quads(ring_o, ring_i, np.roll(ring_i, -1), np.roll(ring_o, -1))
    return o, i


def _sphere_point(centre, radius: float, azimuth, elevation):
    azimuth, elevation = np.broadcast_arrays(azimuth, elevation)
    ce = np.cos(elevation)
    return centre + radius * np.stack([ce * np.sin(azimuth), np.sin(elevation), ce * np.cos(azimuth)], axis=-1)


def _lid_edges(kind: str, blink, brow, smile, azimuth):
    """Lid edge elevation per frame and lid column: almond-shaped, meeting the other lid at the corners."""
    if kind == "upper":
        centre = LID_UPPER_OPEN + 0.10 * brow + (LID_UPPER_CLOSED - LID_UPPER_OPEN - 0.10 * brow) * blink
    else:
        centre = LID_LOWER_OPEN + 0.12 * smile + LID_LOWER_BLINK_RISE * blink
    shape = (azimuth / LID_HALF_WIDTH) ** 2
    return centre[:, None] + (LID_CORNER - centre[:, None]) * shape[None, :]


@dataclass
class _Lid:
    ids: np.ndarray        # (2, rows, cols): outer then inner layer
    kind: str
    centre: np.ndarray
    radii: tuple[float, float]
    azimuth: np.ndarray    # (cols,)
    far: float


class _Rig:
    def __init__(self, rest, basis, jaw_weight, press_pairs, press_column, press_weight, press_side,
                 lids, head_weight, scale):
        self.rest = rest                    # canonical (unscaled) neutral
        self.basis = basis                  # (n_linear, V, 3) displacement per unit control
        self.jaw_weight = jaw_weight
        self.press_pairs = press_pairs      # (K, 2)
        self.press_column = press_column    # (V,) index into press_pairs, -1 = not pressed
        self.press_weight = press_weight
        self.press_side = press_side        # +1 upper lip, -1 lower lip
        self.lids = lids
        self.head_weight = head_weight
        self.scale = scale

    LINEAR = ("lip_round", "lip_spread", "upper_lip_raise", "lower_lip_tuck", "smile", "brow_raise",
              "mouth_left")

    def pose(self, values: np.ndarray) -> np.ndarray:
        c = {name: values[:, i] for i, name in enumerate(CONTROLS)}
        weights = np.stack([c[name] for name in self.LINEAR], axis=1)
        p = self.rest[None] + np.einsum("tc,cvd->tvd", weights, self.basis)
        # The jaw hinges about a transverse axis; lower-face vertices follow it by their weight.
        rot = _rotation_x(JAW_MAX_ANGLE * c["jaw_open"])
        rel = p - JAW_PIVOT
        swung = np.einsum("tij,tvj->tvi", rot, rel) + JAW_PIVOT
        p += self.jaw_weight[None, :, None] * (swung - p)
        # Pressing closes the remaining gap between facing lip vertices, so the lips meet and never cross.
        gap = p[:, self.press_pairs[:, 1]] - p[:, self.press_pairs[:, 0]]
        movers = np.flatnonzero(self.press_column >= 0)
        share = 0.5 * self.press_side[movers] * self.press_weight[movers]
        p[:, movers] += (c["lip_press"][:, None, None] * share[None, :, None]
                         * gap[:, self.press_column[movers]])
        for lid in self.lids:
            edge = _lid_edges(lid.kind, c["blink"], c["brow_raise"], c["smile"], lid.azimuth)
            rows = lid.ids.shape[1]
            s = np.linspace(0.0, 1.0, rows)[None, :, None]
            elevation = edge[:, None, :] + (lid.far - edge[:, None, :]) * s
            for layer, radius in enumerate(lid.radii):
                pts = _sphere_point(lid.centre, radius, lid.azimuth[None, None, :], elevation)
                p[:, lid.ids[layer].ravel()] = pts.reshape(len(p), -1, 3)
        p *= self.scale
        head = _rotation_z(c["head_roll"]) @ _rotation_y(c["head_yaw"]) @ _rotation_x(c["head_pitch"])
        pivot = NECK_PIVOT * self.scale
        turned = np.einsum("tij,tvj->tvi", head, p - pivot) + pivot
        p += self.head_weight[None, :, None] * (turned - p)
        return p.astype(np.float32)


def _rotation_x(angle):
    angle = np.atleast_1d(angle)
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(angle), np.zeros_like(angle)
    # Positive angles turn +z towards -y: the chin drops, the face nods down.
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _rotation_y(angle):
    angle = np.atleast_1d(angle)
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(angle), np.zeros_like(angle)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rotation_z(angle):
    angle = np.atleast_1d(angle)
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(angle), np.zeros_like(angle)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def build_face(shape: FaceShape = FaceShape()) -> Face:
    """The neutral head for an identity, with its rig. Deterministic; topology never depends on `shape`."""
    b = _Builder()
    lam = _columns()
    y_swept, theta, mouth_row = _rows()
    w_swept, f_swept = _profile(y_swept, shape)
    b_swept = PchipInterpolator(_PROFILE_Y, _PROFILE_B)(y_swept)
    rows_y = np.concatenate([y_swept, BROW_Y + CROWN_HEIGHT * np.sin(theta)])
    rows_w = np.concatenate([w_swept, w_swept[-1] * np.cos(theta)])
    rows_f = np.concatenate([f_swept, f_swept[-1] * np.cos(theta)])
    rows_b = np.concatenate([b_swept, b_swept[-1] * np.cos(theta)])
    sin_l, cos_l = np.sin(lam), np.cos(lam)
    x = rows_w[:, None] * _signed_pow(sin_l, _SECTION_POWER)[None, :]
    depth = np.where(cos_l[None, :] >= 0, rows_f[:, None], rows_b[:, None])
    z = depth * _signed_pow(cos_l, _SECTION_POWER)[None, :]
    y = np.broadcast_to(rows_y[:, None], x.shape).copy()

    eye_x = 0.032 * shape.eye_spacing
    front = _smoothstep(0.15, 0.55, cos_l)[None, :]
    z = z + front * _front_features(x, y, shape, eye_x)
    # Ears: flat lobes on the sides, a little behind the jaw hinge.
    side = _smoothstep(0.75, 0.95, np.abs(sin_l))[None, :]
    x = x + np.sign(x) * side * 0.011 * _gauss(z, y, -0.012, 0.006, 0.011, 0.022)

    n_rows, n_cols = x.shape
    corner_l = int(np.argmin(np.abs(lam + MOUTH_CORNER_ANGLE)))
    corner_r = int(np.argmin(np.abs(lam - MOUTH_CORNER_ANGLE)))
    slit = np.arange(corner_l + 1, corner_r)
    # The lip edges curl slightly inwards so the closed mouth reads as a crease.
    z[mouth_row, slit] -= 0.0015

    grid = b.add(np.stack([x, y, z], axis=-1)).reshape(n_rows, n_cols)
    lower_edge = b.add(np.stack([x[mouth_row, slit], y[mouth_row, slit], z[mouth_row, slit]], axis=-1))
    neck_centre = np.array([0.0, NECK_Y, 0.5 * (rows_f[0] - rows_b[0])])
    bottom = b.add(neck_centre)[0]
    top = b.add([0.0, BROW_Y + CROWN_HEIGHT, 0.0])[0]

    below = grid.copy()                       # the mouth row as the quads under it see it: lower lip copies
    below[mouth_row, slit] = lower_edge
    nxt = np.roll(np.arange(n_cols), -1)
    for r in range(n_rows - 1):
        upper_row = below[r + 1] if r + 1 == mouth_row else grid[r + 1]
        b.quads(grid[r], grid[r][nxt], upper_row[nxt], upper_row)
    b.triangles(bottom, grid[0][nxt], grid[0])
    b.triangles(grid[-1], grid[-1][nxt], top)

    # Mouth cavity: rings behind the lip loop, shrinking to the throat.
    loop = np.concatenate([[grid[mouth_row, corner_l]], grid[mouth_row, slit], [grid[mouth_row, corner_r]],
                           lower_edge[::-1]])
    loop_side = np.concatenate([[0.0], np.ones(len(slit)), [0.0], -np.ones(len(slit))])
    loop_pts = np.concatenate(b.points)[loop]
    prev = loop
    rings = []
    for depth_k, height_k, drop_k, narrow_k in zip(CAVITY_DEPTHS, CAVITY_HEIGHTS, CAVITY_DROPS, CAVITY_NARROWING):
        pts = loop_pts.copy()
        pts[:, 0] *= narrow_k
        pts[:, 1] += loop_side * height_k - drop_k
        pts[:, 2] -= depth_k
        ring = b.add(pts)
        b.quads(np.roll(prev, -1), prev, ring, np.roll(ring, -1))
        rings.append(ring)
        prev = ring
    throat = b.add([0.0, MOUTH_Y - THROAT[1], float(loop_pts[:, 2].max()) - THROAT[0]])[0]
    b.triangles(np.roll(prev, -1), prev, throat)

    # Eyes: eyeball spheres seated in the sockets, and a thin upper and lower lid over each.
    lids = []
    eyes = []
    lid_azimuth = np.linspace(-LID_HALF_WIDTH, LID_HALF_WIDTH, LID_COLUMNS)
    for sx in (-eye_x, eye_x):
        centre = np.array([sx, EYE_Y, _surface_point(sx, EYE_Y, shape, eye_x) - 1.05 * EYE_RADIUS])
        lat = np.linspace(-np.pi / 2, np.pi / 2, EYE_LATITUDES)[1:-1]
        lon = np.linspace(-np.pi, np.pi, EYE_LONGITUDES + 1)[:-1]
        ring_pts = _sphere_point(centre, EYE_RADIUS, lon[None, :], lat[:, None])
        ball = b.add(ring_pts).reshape(len(lat), len(lon))
        south, north = b.add([centre - [0, EYE_RADIUS, 0], centre + [0, EYE_RADIUS, 0]])
        enx = np.roll(np.arange(len(lon)), -1)
        for r in range(len(lat) - 1):
            b.quads(ball[r], ball[r][enx], ball[r + 1][enx], ball[r + 1])
        b.triangles(south, ball[0][enx], ball[0])
        b.triangles(ball[-1], ball[-1][enx], north)
        eyes.append(np.concatenate([ball.ravel(), [south, north]]))
        for kind, radii, far in (("upper", (1.07, 1.19), LID_UPPER_FAR), ("lower", (1.04, 1.15), LID_LOWER_FAR)):
            radii = (radii[1] * EYE_RADIUS, radii[0] * EYE_RADIUS)
            edge = _lid_edges(kind, np.zeros(1), np.zeros(1), np.zeros(1), lid_azimuth)
            s = np.linspace(0.0, 1.0, LID_ROWS)[:, None]
            elevation = edge + (far - edge) * s
            layers = [_sphere_point(centre, r, lid_azimuth[None, :], elevation)
                      for r in radii]
            if kind == "upper":
                o, i = _grid_shell(b, layers[0], layers[1])
            else:
                o, i = _grid_shell(b, layers[0][::-1], layers[1][::-1])
                o, i = o[::-1], i[::-1]
            lids.append(_Lid(np.stack([o, i]), kind, centre, radii, lid_azimuth, far))

    vertices = np.concatenate(b.points)
    faces = np.concatenate(b.faces).astype(np.int64)
    n = len(vertices)
    head_ids = np.concatenate([grid.ravel(), lower_edge, [bottom, top]])
    cavity_ids = np.concatenate(rings + [np.array([throat])])

    # Rig fields, from canonical positions.
    vx, vy, vz = vertices.T
    xc = _corner_x()
    on_face = np.zeros(n)
    on_face[grid.ravel()] = np.broadcast_to(front, grid.shape).ravel()
    on_face[lower_edge] = 1.0
    # side: +1 upper lip and above, -1 lower lip and below; sharp at the mouth, softer on the cheeks.
    length = 0.0015 + 0.02 * np.clip((np.abs(vx) - xc) / 0.03, 0.0, 1.0)
    side = np.tanh((vy - MOUTH_Y) / length)
    side[grid[mouth_row, slit]] = 1.0
    side[lower_edge] = -1.0
    side[grid[mouth_row, [corner_l, corner_r]]] = 0.0
    lip = np.exp(-(vx / (1.05 * xc)) ** 4 - ((vy - MOUTH_Y) / 0.012) ** 2) * on_face
    near_line = np.exp(-((vy - MOUTH_Y) / 0.006) ** 2) * np.clip(1.0 - (vx / xc) ** 2, 0.0, None) * on_face
    for depth_rank, ring in enumerate(rings):
        fade = 1.0 - (depth_rank + 1) / (len(rings) + 1)
        side[ring] = loop_side
        lip[ring] = lip[loop] * fade
        near_line[ring] = near_line[loop] * fade
    side[throat] = 0.0
    upper = np.clip(side, 0.0, 1.0)
    lower = np.clip(-side, 0.0, 1.0)

    corners = sum(_gauss(vx, vy, s * xc, MOUTH_Y, 0.008, 0.008) for s in (-1, 1)) * on_face
    cheeks = sum(_gauss(vx, vy, s * 0.040, -0.020, 0.015, 0.015) for s in (-1, 1)) * on_face
    brow = (_smoothstep(EYE_Y + 0.002, EYE_Y + 0.018, vy) * (1.0 - _smoothstep(0.075, 0.115, vy))
            * np.exp(-0.5 * (vx / 0.05) ** 2) * on_face)
    zeros = np.zeros(n)
    basis = np.stack([
        np.stack([-0.35 * lip * vx, 0.0020 * side * near_line, 0.0070 * lip], axis=-1),    # lip_round
        np.stack([0.18 * lip * vx, 0.0010 * side * near_line, -0.0030 * lip], axis=-1),    # lip_spread
        np.stack([zeros, 0.0040 * lip * upper, 0.0010 * lip * upper], axis=-1),           # upper_lip_raise
        np.stack([zeros, 0.0030 * lip * lower, -0.0040 * lip * lower], axis=-1),          # lower_lip_tuck
        np.stack([0.005 * corners * np.sign(vx) + 0.08 * lip * vx,
                  0.005 * corners + 0.003 * cheeks,
                  -0.002 * corners + 0.0015 * cheeks], axis=-1),                           # smile
        np.stack([zeros, 0.0060 * brow, 0.0010 * brow], axis=-1),                          # brow_raise
        np.stack([0.0040 * lip, zeros, zeros], axis=-1),                                   # mouth_left
    ])

    jaw_region = _smoothstep(-0.04, 0.0, vz) * _smoothstep(-0.15, -0.105, vy)
    # Near the mouth line the lower lip follows the jaw less towards the corners: an oval opening.
    oval = np.sqrt(np.clip(1.0 - (vx / xc) ** 2, 0.0, 1.0))
    lip_band = np.exp(-((vy - MOUTH_Y) / 0.008) ** 2) * on_face
    jaw_weight = 0.5 * (1.0 - side) * jaw_region * (1.0 - lip_band * (1.0 - oval))
    for ring in rings:
        jaw_weight[ring] = jaw_weight[loop]
    jaw_weight[throat] = 0.5
    jaw_weight[np.concatenate(eyes + [lid.ids.ravel() for lid in lids])] = 0.0
    jaw_weight[[bottom, top]] = 0.0

    press_pairs = np.stack([grid[mouth_row, slit], lower_edge], axis=1)
    press_column = np.full(n, -1)
    press_weight = np.zeros(n)
    for k, col in enumerate(slit):
        members = np.concatenate([grid[:, col], [lower_edge[k]]])
        press_column[members] = k
        press_weight[members] = np.exp(-((vy[members] - MOUTH_Y) / 0.005) ** 2)
        for depth_rank, ring in enumerate(rings):
            ring_members = ring[[1 + k, len(loop) - 1 - k]]
            press_column[ring_members] = k
            press_weight[ring_members] = 0.9 - 0.25 * depth_rank
    press_side = np.where(side >= 0, 1.0, -1.0)

    head_weight = _smoothstep(-0.16, -0.10, vy)
    scale = np.array([shape.width, shape.height, shape.depth])

    lid_ids = np.concatenate([lid.ids.ravel() for lid in lids])
    eye_ids = np.concatenate(eyes)
    lip_ids = np.flatnonzero((lip > 0.35) | (near_line > 0.5))
    lip_ids = np.union1d(lip_ids, np.concatenate([press_pairs.ravel(), rings[0]]))
    forehead = np.flatnonzero((vy > EYE_Y + 0.012) & (vy < 0.11) & (on_face > 0.5) & (np.abs(vx) < 0.06))
    eye_region = np.flatnonzero((np.abs(np.abs(vx) - eye_x) < 0.02) & (np.abs(vy - EYE_Y) < 0.018)
                                & (on_face > 0.5))
    regions = {
        "lips": lip_ids,
        "forehead": np.setdiff1d(forehead, eye_region),
        "eye_region": np.union1d(eye_region, np.concatenate([eye_ids, lid_ids])),
        "eyelids": lid_ids,
        "eyeballs": eye_ids,
        "head": head_ids,
        "mouth_cavity": cavity_ids,
        "jaw": np.flatnonzero(jaw_weight > 0.5),
    }
    regions["upper_face"] = np.union1d(regions["forehead"], regions["eye_region"])
    regions = {k: np.asarray(v, dtype=np.int64) for k, v in regions.items()}
    if shape != FaceShape():
        # Region ids belong to the topology: every identity uses the default face's.
        regions = _default_regions()
    rig = _Rig(vertices, basis, jaw_weight, press_pairs, press_column, press_weight, press_side,
               lids, head_weight, scale)
    neutral = rig.pose(np.zeros((1, len(CONTROLS))))[0]
    return Face(neutral, faces, regions, press_pairs.astype(np.int64), rig)


@lru_cache(maxsize=1)
def _default_regions() -> dict[str, np.ndarray]:
    return build_face().regions
