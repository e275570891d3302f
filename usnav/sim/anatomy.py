"""The simulated thoracic spine segment: random anatomy, label volumes, surgery, cord shift.

Frames
------
*Spine frame* (mm): x = patient right, y = anterior, z = superior; origin at the centre of the
spinal canal at the middle of the segment. The spine is gently curved (kyphosis, a little
scoliosis): ``centre_offset(z)`` is the canal centre line, and every primitive is defined in
*straightened* coordinates ``q = p - (cx(z), cy(z), 0)``. ``SpineToMri`` (rigid) places the
segment in the MRI's world space (RAS).

The anatomy is an ordered list of :class:`Primitive` (constructive solid geometry by painting:
later primitives overwrite earlier ones where their mask allows), evaluated on a voxel grid or
at arbitrary points by the kernels in :mod:`usnav.sim._kernels`.

*Preoperative* anatomy = what the MRI shows. *Intraoperative* anatomy = the preoperative
anatomy after a laminectomy over ``laminectomy_levels`` levels (posterior elements and the
opened soft tissue replaced by saline) and a cord shift: a point X of the cord or of what it
carries (tumor, cyst, central canal, rootlets) lies at ``X + u(X)`` during surgery, with ``u``
the smooth cord-shift field; the dura, the CSF space and everything outside stay (CSF fills
the space the cord leaves), so bone never moves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from usnav.sim import _kernels as K
from usnav.sim.tissues import ALL_LABELS, Tissue, label_mask

_INF = 1e6


@dataclass
class Primitive:
    """One painted shape, in straightened spine coordinates (mm).

    ``rotation`` columns are the local axes (u, v, w) expressed in straightened coordinates;
    ``center`` is the local origin.
    """

    kind: int
    label: Tissue
    center: np.ndarray
    params: list[float]
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    overwrite: int = ALL_LABELS
    name: str = ""

    def world_to_local(self) -> np.ndarray:
        m = np.zeros((3, 4))
        m[:, :3] = self.rotation.T
        m[:, 3] = -self.rotation.T @ np.asarray(self.center, dtype=np.float64)
        return m

    def aabb(self) -> np.ndarray:
        p = self.params
        if self.kind == K.PRIM_SUPERELLIPTIC_CYLINDER:
            half = np.array([p[0], p[1], p[2]])
        elif self.kind == K.PRIM_ELLIPSOID:
            half = np.array([p[0], p[1], p[2]]) * (1 + abs(p[3]) + abs(p[4]) + abs(p[5]))
        elif self.kind == K.PRIM_BOX:
            half = np.array([p[0], p[1], p[2]])
        elif self.kind == K.PRIM_ARCH:
            half = np.array([p[2], p[3], p[4]])
        else:
            return np.array([-_INF, -_INF, -_INF, _INF, _INF, _INF])
        corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        world = (corners * half) @ self.rotation.T + np.asarray(self.center)
        return np.concatenate([world.min(axis=0) - 1e-6, world.max(axis=0) + 1e-6])


@dataclass
class PrimitiveArrays:
    """The primitive list packed for the kernels."""

    types: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    mats: np.ndarray
    params: np.ndarray
    aabb: np.ndarray

    @classmethod
    def pack(cls, prims: list[Primitive]) -> PrimitiveArrays:
        params = np.zeros((len(prims), 12))
        for n, p in enumerate(prims):
            params[n, : len(p.params)] = p.params
        return cls(
            types=np.array([p.kind for p in prims], dtype=np.int64),
            labels=np.array([int(p.label) for p in prims], dtype=np.int64),
            masks=np.array([p.overwrite for p in prims], dtype=np.int64),
            mats=np.array([p.world_to_local() for p in prims]),
            params=params,
            aabb=np.array([p.aabb() for p in prims]),
        )


def _axes_from_w(w_dir: np.ndarray, u_hint: np.ndarray) -> np.ndarray:
    """Right-handed rotation whose third column is ``w_dir`` and first is close to ``u_hint``."""
    w = w_dir / np.linalg.norm(w_dir)
    u = u_hint - np.dot(u_hint, w) * w
    u /= np.linalg.norm(u)
    v = np.cross(w, u)
    return np.column_stack([u, v, w])


@dataclass
class TumorSpec:
    """The intramedullary tumor (straightened spine coordinates, mm)."""

    center: np.ndarray
    radii: np.ndarray  # half-axes a (x), b (y), c (along the cord)
    lobulation: np.ndarray  # e1, e2, e3, p1, p2, p3
    rotation: np.ndarray
    echogenicity: str  # "hyperechoic" | "isoechoic"
    t2_signal: float
    cyst_center: np.ndarray | None
    cyst_radii: np.ndarray | None

    @property
    def length_mm(self) -> float:
        return 2.0 * float(self.radii[2])


@dataclass
class SpineAnatomy:
    """One random spine segment. Create with :func:`random_anatomy`."""

    levels: int
    body_height: float
    disc_height: float
    canal: np.ndarray  # half-axes of the bony canal (x, y)
    body: np.ndarray  # half-axes of the vertebral body footprint
    lamina_thickness: float
    sac: np.ndarray  # dural sac half-axes
    sac_dy: float
    dura_thickness: float
    cord: np.ndarray  # cord half-axes (x, y)
    cord_offset: np.ndarray  # cord centre in the straightened cross-section (x, y)
    cord_swelling: float
    skin_y0: float
    skin_k: float
    fat_thickness: float
    spinous_angle_deg: float
    kyphosis_radius: float
    scoliosis_curvature: float
    tumor: TumorSpec
    laminectomy_first_level: int
    laminectomy_levels: int
    lamina_cut_half_width: float
    wound_half_width: float
    shift_mm: float
    shift_direction: np.ndarray
    root_angles_deg: list[float]
    spine_to_mri: np.ndarray
    primitives: list[Primitive] = field(default_factory=list)

    # ---- geometry helpers -------------------------------------------------------------
    @property
    def pitch(self) -> float:
        return self.body_height + self.disc_height

    @property
    def segment_length(self) -> float:
        return self.levels * self.pitch

    def level_z(self, i: int) -> float:
        """z of the centre of vertebral body ``i`` (0 = most inferior)."""
        return (i - (self.levels - 1) / 2.0) * self.pitch

    @property
    def window(self) -> tuple[float, float]:
        """z range of the laminectomy (straightened spine mm)."""
        first = self.laminectomy_first_level
        last = first + self.laminectomy_levels - 1
        return (
            self.level_z(first) - self.body_height / 2 - 3.5,
            self.level_z(last) + self.body_height / 2 - 2.5,
        )

    @property
    def wound(self) -> tuple[float, float]:
        lo, hi = self.window
        half = self.segment_length / 2
        return max(lo - 6.0, -half), min(hi + 6.0, half)

    def centre_offset(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canal centre line (cx(z), cy(z)), spine mm."""
        z = np.asarray(z, dtype=np.float64)
        return self.scoliosis_curvature * z * z / 2.0, z * z / (2.0 * self.kyphosis_radius)

    def straighten(self, p: np.ndarray) -> np.ndarray:
        """Spine coordinates (..., 3) → straightened coordinates."""
        p = np.asarray(p, dtype=np.float64)
        cx, cy = self.centre_offset(p[..., 2])
        q = p.copy()
        q[..., 0] -= cx
        q[..., 1] -= cy
        return q

    def unstraighten(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        cx, cy = self.centre_offset(q[..., 2])
        p = q.copy()
        p[..., 0] += cx
        p[..., 1] += cy
        return p

    @property
    def dura_posterior_y(self) -> float:
        """Straightened y of the posterior surface of the dural sac."""
        return self.sac_dy - self.sac[1]

    def grid_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Spine-frame box (min, max) the label volume covers, mm."""
        half_z = self.segment_length / 2.0
        zs = np.array([-half_z, half_z])
        cx, cy = self.centre_offset(zs)
        x_half = 36.0
        y_min = self.skin_y0 - self.skin_k * x_half**2 - 6.0 + min(0.0, float(cy.min()))
        y_max = self.canal[1] + 0.4 + 2 * self.body[1] + 6.0 + float(cy.max())
        return (
            np.array([-x_half + min(0.0, cx.min()), y_min, -half_z]),
            np.array([x_half + max(0.0, cx.max()), y_max, half_z]),
        )

    # ---- cord shift ----------------------------------------------------------------------
    def shift_weight(self, q: np.ndarray) -> np.ndarray:
        """Smooth weight 0..1 of the cord-shift field at straightened points (..., 3).

        Across the canal: ``rho`` = 0 at the cord's centre, 1 on the bony canal wall (measured
        along the ray from the cord's centre); weight 1 for rho <= 0.45, a cosine taper to 0
        at rho = 1, so bone never moves. Along the cord: 1 over the laminectomy window (less
        4 mm each end), a 15 mm cosine taper beyond.
        """
        q = np.asarray(q, dtype=np.float64)
        inv = 1.0 / self.canal
        cx, cy = self.cord_offset[0] * inv[0], self.cord_offset[1] * inv[1]
        dx = (q[..., 0] - self.cord_offset[0]) * inv[0]
        dy = (q[..., 1] - self.cord_offset[1]) * inv[1]
        a = dx * dx + dy * dy
        b = cx * dx + cy * dy
        c = cx * cx + cy * cy - 1.0  # < 0: the cord's centre is inside the canal
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (-b + np.sqrt(b * b - a * c)) / a  # wall at centre + s * (q - centre)
            rho = np.where(a > 0, 1.0 / s, 0.0)
        r0, r1 = 0.45, 1.0
        wr = 0.5 * (1.0 + np.cos(np.pi * np.clip((rho - r0) / (r1 - r0), 0.0, 1.0)))
        lo, hi = self.window
        zc, half = (lo + hi) / 2.0, max(2.0, (hi - lo) / 2.0 - 4.0)
        taper = 15.0
        dz = np.abs(q[..., 2] - zc) - half
        wz = 0.5 * (1.0 + np.cos(np.pi * np.clip(dz / taper, 0.0, 1.0)))
        return wr * wz

    def displacement(self, p: np.ndarray) -> np.ndarray:
        """Cord-shift displacement u(X) at preoperative spine points X (..., 3), mm."""
        w = self.shift_weight(self.straighten(p))
        return w[..., None] * (self.shift_mm * self.shift_direction)

    def inverse_warp(self, p: np.ndarray, iterations: int = 80, tol_mm: float = 1e-5) -> np.ndarray:
        """X with X + u(X) = p (fixed-point iteration: |grad u| < 1, so it converges)."""
        p = np.asarray(p, dtype=np.float64)
        x = p.copy()
        for _ in range(iterations):
            new = p - self.displacement(x)
            done = np.abs(new - x).max(initial=0.0) < tol_mm
            x = new
            if done:
                break
        return x


def random_anatomy(
    rng: np.random.Generator,
    *,
    levels: int,
    laminectomy_levels: int,
    tumor_length_mm: tuple[float, float],
    shift_mm: tuple[float, float],
    echogenicity: str,
    cyst: str,
    size_scale: float = 1.0,
) -> SpineAnatomy:
    """Draw a thoracic segment: sizes, curvature, tumor, cyst, laminectomy, shift, placement.

    ``size_scale`` multiplies the vertebrae (body, disc, lamina), the bony canal and the cord:
    < 1 for an upper thoracic level, > 1 towards the thoracolumbar junction (1: mid-thoracic;
    the random draws are the same for every scale).
    """
    u = rng.uniform
    k = float(size_scale)
    canal = np.array([u(7.6, 8.8), u(7.4, 8.4)]) * k
    sac = np.array([canal[0] - u(0.4, 0.8), canal[1] - u(1.0, 1.6)])
    sac_dy = (canal[1] - sac[1]) - u(0.3, 0.7)  # sac rests anteriorly in the canal
    dura_t = 0.75
    csf_half = sac - dura_t
    cord = np.array([u(4.5, 5.3), u(3.6, 4.2)]) * k
    cord = np.minimum(cord, csf_half - 1.2)
    cord_offset = np.array([u(-0.5, 0.5), 0.0])
    room_y = csf_half[1] - cord[1] - 0.8
    cord_offset[1] = sac_dy + float(np.clip(u(0.3, 1.2), 0.0, max(room_y, 0.0)))
    swelling = u(1.0, 1.22)
    swelling = min(swelling, float(np.min((csf_half - 0.9) / cord)))
    swelling = max(swelling, 1.0)
    body_h = u(18.0, 21.0) * k
    disc_h = u(4.0, 5.8) * k
    pitch = body_h + disc_h
    first = int(rng.integers(0, levels - laminectomy_levels + 1))

    anat = SpineAnatomy(
        levels=levels,
        body_height=body_h,
        disc_height=disc_h,
        canal=canal,
        body=np.array([u(14.0, 17.0), u(11.5, 14.0)]) * k,
        lamina_thickness=u(5.0, 6.5) * k,
        sac=sac,
        sac_dy=sac_dy,
        dura_thickness=dura_t,
        cord=cord,
        cord_offset=cord_offset,
        cord_swelling=swelling,
        skin_y0=0.0,
        skin_k=u(0.002, 0.006),
        fat_thickness=u(4.0, 9.0),
        spinous_angle_deg=u(45.0, 60.0),
        kyphosis_radius=u(300.0, 700.0),
        scoliosis_curvature=u(-1, 1) / u(900.0, 3000.0),
        tumor=None,  # type: ignore[arg-type]
        laminectomy_first_level=first,
        laminectomy_levels=laminectomy_levels,
        lamina_cut_half_width=canal[0] + u(0.8, 1.8),
        wound_half_width=u(23.0, 27.0),
        shift_mm=u(*shift_mm) if shift_mm[1] > shift_mm[0] else shift_mm[0],
        shift_direction=np.zeros(3),
        root_angles_deg=[s * u(lo, hi) for s in (-1.0, 1.0) for lo, hi in ((45, 60), (120, 135))],
        spine_to_mri=np.eye(4),
    )
    # skin over the spinous process tips
    beta = np.radians(anat.spinous_angle_deg)
    tip_y = -canal[1] - anat.lamina_thickness + 2.0 - np.cos(beta) * 34.0
    anat.skin_y0 = tip_y - u(5.0, 9.0)

    # cord shift: mostly posterior (towards the opened lamina), some lateral
    psi = np.radians(u(-35.0, 35.0))
    d = np.array([np.sin(psi), -np.cos(psi), u(-0.2, 0.2)])
    anat.shift_direction = d / np.linalg.norm(d)

    anat.tumor = _random_tumor(rng, anat, tumor_length_mm, echogenicity, cyst, pitch)

    # placement in the scanner: small patient rotation, canal posterior of the isocentre
    rot = Rotation.from_euler("xyz", rng.uniform(-3.0, 3.0, 3), degrees=True).as_matrix()
    spine_to_mri = np.eye(4)
    spine_to_mri[:3, :3] = rot
    spine_to_mri[:3, 3] = [u(-8.0, 8.0), u(-70.0, -40.0), u(-60.0, 60.0)]
    anat.spine_to_mri = spine_to_mri
    anat.primitives = build_primitives(anat)
    return anat


def _random_tumor(rng, anat: SpineAnatomy, length_range, echogenicity, cyst, pitch) -> TumorSpec:
    u = rng.uniform
    length = u(*length_range) if length_range[1] > length_range[0] else length_range[0]
    c = length / 2.0
    swollen = anat.cord * anat.cord_swelling
    radii_xy = swollen * np.array([u(0.55, 0.8), u(0.55, 0.8)]) - 0.3
    radii = np.array([radii_xy[0], radii_xy[1], c])
    has_cyst = {"yes": True, "no": False}.get(cyst, bool(rng.random() < 0.5))
    cyst_c = u(3.0, 7.0) if has_cyst else 0.0
    cyst_side = 1.0 if rng.random() < 0.5 else -1.0
    lo, hi = anat.window
    extent_lo = c + (2 * cyst_c if has_cyst and cyst_side < 0 else 0.0) + 2.0
    extent_hi = c + (2 * cyst_c if has_cyst and cyst_side > 0 else 0.0) + 2.0
    zmin, zmax = lo + extent_lo, hi - extent_hi
    if zmax > zmin:
        tz = u(zmin, zmax)
    else:  # longer than the window: centre it on the window, clip to the segment
        half = anat.segment_length / 2.0
        tz = float(np.clip((lo + hi) / 2.0, -half + extent_lo, half - extent_hi))
    room = np.maximum(swollen - radii[:2] - 0.3, 0.0)
    center = np.array(
        [
            anat.cord_offset[0] + u(-1, 1) * min(room[0], 1.0),
            anat.cord_offset[1] + u(-1, 1) * min(room[1], 0.8),
            tz,
        ]
    )
    tilt = Rotation.from_euler("xy", rng.uniform(-5.0, 5.0, 2), degrees=True).as_matrix()
    lob = np.concatenate([rng.uniform(-0.12, 0.12, 3), rng.uniform(0, 2 * np.pi, 3)])
    if echogenicity == "random":
        echogenicity = "hyperechoic" if rng.random() < 0.5 else "isoechoic"
    cyst_center = cyst_radii = None
    if has_cyst:
        cyst_radii = np.array([radii[0] * u(0.6, 0.9), radii[1] * u(0.6, 0.9), cyst_c])
        axis = tilt[:, 2]
        cyst_center = center + cyst_side * axis * (c + 0.6 * cyst_c)
    return TumorSpec(
        center=center,
        radii=radii,
        lobulation=lob,
        rotation=tilt,
        echogenicity=echogenicity,
        t2_signal=u(520.0, 700.0),
        cyst_center=cyst_center,
        cyst_radii=cyst_radii,
    )


def build_primitives(a: SpineAnatomy) -> list[Primitive]:
    """The ordered primitive list of the preoperative anatomy."""
    T = Tissue
    P = K
    half_z = a.segment_length / 2.0 + 30.0
    prims: list[Primitive] = [
        Primitive(P.PRIM_EVERYWHERE, T.AIR, np.zeros(3), [], name="air"),
        Primitive(P.PRIM_CURVED_HALFSPACE, T.SKIN, np.zeros(3), [a.skin_y0, a.skin_k], name="skin"),
        Primitive(
            P.PRIM_CURVED_HALFSPACE,
            T.FAT,
            np.zeros(3),
            [a.skin_y0 + 2.0, a.skin_k],
            name="subcutaneous fat",
        ),
        Primitive(
            P.PRIM_CURVED_HALFSPACE,
            T.MUSCLE,
            np.zeros(3),
            [a.skin_y0 + 2.0 + a.fat_thickness, a.skin_k],
            name="muscle",
        ),
    ]
    cx, cy = a.canal
    body_y = cy - 1.5 + a.body[1]  # the canal carves a concave back into bodies and discs
    # ligamentum flavum (shows in the interlaminar gaps)
    prims.append(
        Primitive(
            P.PRIM_ARCH,
            T.LIGAMENT,
            np.zeros(3),
            [cx, cy, cx + 4.0, cy + 4.0, half_z, cx + 4.0, 0.5],
            name="flavum",
        )
    )
    beta = np.radians(a.spinous_angle_deg)
    for i in range(a.levels):
        z = a.level_z(i)
        h2 = a.body_height / 2.0
        prims.append(
            Primitive(
                P.PRIM_SUPERELLIPTIC_CYLINDER,
                T.BONE,
                np.array([0, body_y, z]),
                [a.body[0], a.body[1], h2, 2.4],
                name=f"body {i}",
            )
        )
        prims.append(
            Primitive(
                P.PRIM_SUPERELLIPTIC_CYLINDER,
                T.MARROW,
                np.array([0, body_y, z]),
                [a.body[0] - 1.0, a.body[1] - 1.0, h2 - 1.0, 2.4],
                name=f"marrow {i}",
            )
        )
        for side in (-1.0, 1.0):
            # pedicle (upper half of the body) and lateral mass / facets
            y0, y1 = -0.2 * cy, cy + 4.0
            prims.append(
                Primitive(
                    P.PRIM_SUPERELLIPTIC_CYLINDER,
                    T.BONE,
                    np.array([side * (cx + 2.8), (y0 + y1) / 2, z + h2 / 2 - 0.5]),
                    [3.0, (y1 - y0) / 2, h2 / 2 + 0.5, 2.0],
                    name=f"pedicle {i}",
                )
            )
            y0, y1 = -cy - 5.5, 0.3 * cy
            prims.append(
                Primitive(
                    P.PRIM_SUPERELLIPTIC_CYLINDER,
                    T.BONE,
                    np.array([side * (cx + 4.5), (y0 + y1) / 2, z + 1.25]),
                    [3.8, (y1 - y0) / 2, h2 - 0.25, 2.6],
                    name=f"facet {i}",
                )
            )
            gamma = np.radians(25.0)
            d = np.array([side * np.cos(gamma), -np.sin(gamma), 0.0])
            start = np.array([side * (cx + 6.0), -cy - 1.0, z + 1.0])
            rot = np.column_stack([d, np.cross([0, 0, 1.0], d), [0, 0, 1.0]])
            prims.append(
                Primitive(
                    P.PRIM_BOX,
                    T.BONE,
                    start + 9.0 * d,
                    [9.0, 3.5, 4.0],
                    rot,
                    name=f"transverse process {i}",
                )
            )
        prims.append(
            Primitive(
                P.PRIM_ARCH,
                T.BONE,
                np.array([0, 0, z - 3.5]),
                [cx, cy, cx + 6.0, cy + a.lamina_thickness, h2 + 1.0, cx + 6.0, 0.5],
                name=f"lamina {i}",
            )
        )
        sp_dir = np.array([0.0, -np.cos(beta), -np.sin(beta)])
        start = np.array([0.0, -cy - a.lamina_thickness + 2.0, z - 2.0])
        rot = _axes_from_w(sp_dir, np.array([1.0, 0, 0]))
        prims.append(
            Primitive(
                P.PRIM_BOX,
                T.BONE,
                start + 17.0 * sp_dir,
                [3.0, 4.0, 17.0],
                rot,
                name=f"spinous process {i}",
            )
        )
    for i in range(-1, a.levels):
        z = a.level_z(i) + a.pitch / 2.0
        dh = a.disc_height / 2.0 + 0.01
        prims.append(
            Primitive(
                P.PRIM_SUPERELLIPTIC_CYLINDER,
                T.DISC_ANNULUS,
                np.array([0, body_y, z]),
                [a.body[0], a.body[1], dh, 2.4],
                name=f"disc {i}",
            )
        )
        prims.append(
            Primitive(
                P.PRIM_SUPERELLIPTIC_CYLINDER,
                T.DISC_NUCLEUS,
                np.array([0, body_y - 1.0, z]),
                [a.body[0] * 0.5, a.body[1] * 0.45, dh * 0.75, 2.0],
                name=f"nucleus {i}",
            )
        )
    # the canal: a cortical / annular rim, then the epidural space carved out of it
    rim = [cx + 1.0, cy + 1.0, half_z, 2.0]
    for label, inner in ((T.BONE, T.MARROW), (T.DISC_ANNULUS, T.DISC_NUCLEUS)):
        prims.append(
            Primitive(
                P.PRIM_SUPERELLIPTIC_CYLINDER,
                label,
                np.zeros(3),
                rim,
                overwrite=label_mask(inner),
                name="canal rim",
            )
        )
    prims.append(
        Primitive(
            P.PRIM_SUPERELLIPTIC_CYLINDER,
            T.EPIDURAL_FAT,
            np.zeros(3),
            [cx, cy, half_z, 2.0],
            name="epidural space",
        )
    )
    # posterior longitudinal ligament
    prims.append(
        Primitive(
            P.PRIM_BOX,
            T.LIGAMENT,
            np.array([0, cy - 0.45, 0]),
            [5.0, 0.45, half_z],
            overwrite=label_mask(T.EPIDURAL_FAT),
            name="PLL",
        )
    )
    # dural sac, CSF, cord, central echo
    sac_c = np.array([0.0, a.sac_dy, 0.0])
    prims.append(
        Primitive(
            P.PRIM_SUPERELLIPTIC_CYLINDER,
            T.DURA,
            sac_c,
            [a.sac[0], a.sac[1], half_z, 2.0],
            name="dura",
        )
    )
    prims.append(
        Primitive(
            P.PRIM_SUPERELLIPTIC_CYLINDER,
            T.CSF,
            sac_c,
            [a.sac[0] - a.dura_thickness, a.sac[1] - a.dura_thickness, half_z, 2.0],
            name="CSF",
        )
    )
    cord_c = np.array([a.cord_offset[0], a.cord_offset[1], 0.0])
    prims.append(
        Primitive(
            P.PRIM_SUPERELLIPTIC_CYLINDER,
            T.CORD,
            cord_c,
            [a.cord[0], a.cord[1], half_z, 2.0],
            name="cord",
        )
    )
    prims.append(
        Primitive(
            P.PRIM_SUPERELLIPTIC_CYLINDER,
            T.CENTRAL_ECHO,
            cord_c + np.array([0.0, 0.25 * a.cord[1], 0.0]),
            [0.45, 0.35 * a.cord[1], half_z, 2.0],
            name="central echo",
        )
    )
    # rootlets: bundles crossing the CSF from the cord's dorsolateral / ventrolateral sulci
    for angle in a.root_angles_deg:
        ang = np.radians(angle)
        direction = np.array([np.sin(ang), -np.cos(ang), 0.0])
        reach = 1.0 / np.hypot(direction[0] / a.cord[0], direction[1] / a.cord[1])
        prims.append(
            Primitive(
                P.PRIM_SUPERELLIPTIC_CYLINDER,
                T.NERVE_ROOT,
                cord_c + direction * (reach + 1.1),
                [0.6, 0.6, half_z, 2.0],
                overwrite=label_mask(T.CSF),
                name="rootlets",
            )
        )
    t = a.tumor
    extent = t.radii[2] + (2 * t.cyst_radii[2] if t.cyst_radii is not None else 0.0) + 8.0
    prims.append(
        Primitive(
            P.PRIM_ELLIPSOID,
            T.CORD,
            np.array([cord_c[0], cord_c[1], t.center[2]]),
            [a.cord[0] * a.cord_swelling, a.cord[1] * a.cord_swelling, extent, 0, 0, 0, 0, 0, 0],
            overwrite=label_mask(T.CSF),
            name="cord swelling",
        )
    )
    if t.cyst_center is not None:
        prims.append(
            Primitive(
                P.PRIM_ELLIPSOID,
                T.CYST,
                t.cyst_center,
                [*t.cyst_radii, 0, 0, 0, 0, 0, 0],
                t.rotation,
                overwrite=label_mask(T.CORD, T.CENTRAL_ECHO),
                name="cyst",
            )
        )
    prims.append(
        Primitive(
            P.PRIM_ELLIPSOID,
            T.TUMOR,
            t.center,
            [*t.radii, *t.lobulation],
            t.rotation,
            overwrite=label_mask(T.CORD, T.CENTRAL_ECHO, T.CYST),
            name="tumor",
        )
    )
    return prims


@dataclass
class LabelGrid:
    """A label volume on an axis-aligned grid of the spine frame (isotropic voxels)."""

    labels: np.ndarray  # (nx, ny, nz) uint8
    origin: np.ndarray  # spine mm of voxel (0, 0, 0)
    spacing: float

    def coords(self, axis: int) -> np.ndarray:
        return self.origin[axis] + np.arange(self.labels.shape[axis]) * self.spacing

    def index_to_spine(self) -> np.ndarray:
        """4×4 voxel index → spine mm."""
        m = np.eye(4) * self.spacing
        m[3, 3] = 1.0
        m[:3, 3] = self.origin
        return m


def paint_preop(anat: SpineAnatomy, spacing: float) -> LabelGrid:
    """Paint the preoperative anatomy on a ``spacing`` mm grid covering the segment."""
    lo, hi = anat.grid_bounds()
    shape = tuple(int(np.floor((hi[d] - lo[d]) / spacing)) + 1 for d in range(3))
    labels = np.zeros(shape, dtype=np.uint8)
    zs = lo[2] + np.arange(shape[2]) * spacing
    cxs, cys = anat.centre_offset(zs)
    arr = PrimitiveArrays.pack(anat.primitives)
    K.paint_grid(
        labels,
        lo.astype(np.float64),
        float(spacing),
        cxs,
        cys,
        arr.types,
        arr.labels,
        arr.masks,
        arr.mats,
        arr.params,
        arr.aabb,
    )
    return LabelGrid(labels, lo.astype(np.float64), float(spacing))


def labels_at(anat: SpineAnatomy, points_spine: np.ndarray) -> np.ndarray:
    """Preoperative labels at arbitrary spine-frame points (N, 3) (exact, no voxelisation)."""
    pts = np.ascontiguousarray(anat.straighten(np.asarray(points_spine, dtype=np.float64)))
    out = np.zeros(len(pts), dtype=np.uint8)
    arr = PrimitiveArrays.pack(anat.primitives)
    K.paint_points(
        pts.reshape(-1, 3), arr.types, arr.labels, arr.masks, arr.mats, arr.params, arr.aabb, out
    )
    return out


#: Tissues carried by the cord when it shifts, and the space they can move in.
_MOVES_WITH_CORD = np.array(
    [Tissue.CORD, Tissue.TUMOR, Tissue.CYST, Tissue.CENTRAL_ECHO, Tissue.NERVE_ROOT], np.uint8
)
_CORD_SPACE = np.concatenate([_MOVES_WITH_CORD, np.array([Tissue.CSF], np.uint8)])

#: Tissues the laminectomy wound replaces by saline.
_OPENED = (Tissue.SKIN, Tissue.FAT, Tissue.MUSCLE, Tissue.LIGAMENT, Tissue.EPIDURAL_FAT)


def intraoperative(anat: SpineAnatomy, preop: LabelGrid) -> LabelGrid:
    """The intraoperative labels: cord shift applied inside the canal, then the laminectomy."""
    labels = preop.labels.copy()
    xs, ys, zs = preop.coords(0), preop.coords(1), preop.coords(2)
    cxs, cys = anat.centre_offset(zs)

    # 1. cord shift: the cord and what it carries (tumor, cyst, central canal, rootlets) move
    # by u inside the dural sac; the sac, the CSF space and everything outside stay, and CSF
    # fills the space the cord leaves. Warped labels are X = phi^-1(p).
    reach = anat.shift_mm + 1.0
    lo_w, hi_w = anat.window
    z_sel = np.nonzero((zs > lo_w - 25.0) & (zs < hi_w + 25.0))[0]
    if anat.shift_mm > 0 and len(z_sel):
        k0, k1 = z_sel[0], z_sel[-1] + 1
        x_lim = anat.canal[0] + reach + np.abs(cxs[k0:k1]).max()
        i_sel = np.nonzero(np.abs(xs) < x_lim)[0]
        y_lo = anat.sac_dy - anat.canal[1] - reach + cys[k0:k1].min()
        y_hi = anat.sac_dy + anat.canal[1] + reach + cys[k0:k1].max()
        j_sel = np.nonzero((ys > y_lo) & (ys < y_hi))[0]
        ii, jj, kk = np.meshgrid(i_sel, j_sel, np.arange(k0, k1), indexing="ij")
        flat = (ii.reshape(-1), jj.reshape(-1), kk.reshape(-1))
        here = labels[flat]
        roomy = np.isin(here, _CORD_SPACE)  # where the moved cord may lie
        p = np.stack([xs[flat[0]], ys[flat[1]], zs[flat[2]]], axis=-1)[roomy]
        x_pre = anat.inverse_warp(p)
        moved = labels_at(anat, x_pre)
        new = np.where(np.isin(moved, _MOVES_WITH_CORD), moved, np.uint8(Tissue.CSF))
        labels[tuple(f[roomy] for f in flat)] = new

    # 2. laminectomy: open the wound (soft tissue → saline), cut the laminae and spinous
    # processes medial to the facets over the window; the dural sac and everything in it stays
    lo_z, hi_z = anat.wound
    k_sel = np.nonzero((zs >= lo_z) & (zs <= hi_z))[0]
    if len(k_sel):
        k0, k1 = k_sel[0], k_sel[-1] + 1
        sub = labels[:, :, k0:k1]
        qx = xs[:, None, None] - cxs[None, None, k0:k1]
        qy = ys[None, :, None] - cys[None, None, k0:k1]
        qz = zs[None, None, k0:k1]
        # the cut widens posteriorly (a trough, not a vertical wall)
        widen = 0.35 * np.maximum(-qy - anat.canal[1], 0.0)
        medial = np.abs(qx) < anat.lamina_cut_half_width + widen
        # medially the wound reaches the dura; laterally its floor is the facets and the
        # transverse processes (the muscle below them stays)
        # (the posterior epidural fat is removed; what lies in the lateral gutters stays,
        # under a sloping surface)
        gutter = anat.dura_posterior_y + 0.9 * np.abs(qx)
        floor = np.where(medial, gutter, -anat.canal[1] - 5.0)
        in_box = (np.abs(qx) < anat.wound_half_width) & (qy < floor)
        soft = np.isin(sub, np.array([int(t) for t in _OPENED], dtype=np.uint8))
        bone = (sub == Tissue.BONE) | (sub == Tissue.MARROW)
        lo_c, hi_c = anat.window
        in_window = (qz >= lo_c) & (qz <= hi_c)
        spinous = qy < -anat.canal[1] - anat.lamina_thickness - 1.0
        cut = in_box & (soft | (bone & medial & (in_window | spinous)))
        sub[cut] = Tissue.SALINE
        labels[:, :, k0:k1] = sub
    return LabelGrid(labels, preop.origin, preop.spacing)


def smooth_noise_volume(
    rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float
) -> np.ndarray:
    """Unit-variance smooth Gaussian random field (float32)."""
    from scipy.ndimage import gaussian_filter

    field_ = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_vox, mode="wrap")
    sd = float(field_.std())
    return (field_ / (sd if sd > 0 else 1.0)).astype(np.float32)
