"""Procedurally generated handwriting-like glyphs: the built-in image set for few-shot learning.

Omniglot (Lake, Salakhutdinov and Tenenbaum, Science 2015) is the usual first benchmark for
few-shot classification (Vinyals et al. 2016; Snell et al. 2017; Finn et al. 2017), but it is a
download.  :func:`make_glyphs` builds a stand-in that needs no file: every class is a random
"character" made of one to four pen strokes (polylines with corners, C- and S-curves, closed
loops, dots; every piece a cubic Bezier curve, later strokes often starting on an earlier one),
and every sample is
that character redrawn by a sloppy hand: its control points moved a little, the whole drawing
warped by a smooth random field, rotated, scaled, sheared and shifted, with a varying pen
width.  Drawings are rendered anti-aliased: points sampled densely along each curve are splatted
bilinearly, blurred by a small Gaussian and passed through a saturating ink curve.

Guarantees:

* class ``c`` depends only on ``(seed, c)``, never on how many classes are requested, so the
  supply of classes is unlimited and consistent (``class_offset`` picks a later range);
* sample ``i`` of class ``c`` depends only on ``(seed, c, i)`` (and the rendering options), not
  on ``samples_per_class``;
* images are ``float32`` in ``[0, 1]``, strokes bright (1) on a dark (0) background, shape
  ``[N, 1, H, W]`` -- the toolkit's convention.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mtl.data.base import LabelledImages
from mtl.errors import ConfigError

__all__ = ["make_glyphs", "MAX_STROKES"]

MAX_STROKES = 4
"""Most strokes a glyph class can have (the ``"strokes"`` attribute is ``0..MAX_STROKES-1``)."""

_MAX_CURVES = 8  # cubic pieces per glyph, summed over its strokes
_CLASS_STREAM = 0  # seed-sequence tags: the class prototype ...
_SAMPLE_STREAM = 1  # ... and the per-sample redraw noise are independent streams
_CLASSES_PER_CHUNK = 64  # rendering works on this many classes at a time (bounds the memory)

# Layout of the per-sample noise block, one row of uniforms per sample.
_N_CTRL = _MAX_CURVES * 4 * 2
_N_WARP = 2 * 2 * 4  # two output axes x two waves x (two frequencies, phase, amplitude)
_N_AFFINE = 6  # rotation, log-scale x, log-scale y, shear, shift x, shift y
_N_NOISE = _N_CTRL + _N_WARP + _N_AFFINE + 1  # + pen weight

# Size of the per-sample perturbations (standard deviations at jitter=1; lengths are in units of
# the half-width of the drawing box [-1, 1]^2, which spans all but a margin of the image).
_ANCHOR_NOISE = 0.07
_HANDLE_NOISE = 0.03
_WARP_AMPLITUDE = 0.06
_WARP_FREQUENCY = 1.2
_ROTATION_DEGREES = 9.0
_LOG_SCALE = 0.1
_SHEAR = 0.14
_SHIFT = 0.1
_LOG_PEN = 0.2
# Rendering at 28 pixels (scaled with the image size).
_MARGIN = 0.07
_BLUR = 0.45
_INK_GAIN = 3.5

_BEZIER_BASIS_CACHE: dict[int, torch.Tensor] = {}


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _bezier(ctrl: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points of cubic Bezier curves ``ctrl`` ``[..., 4, 2]`` at parameters ``t`` ``[T]``."""
    s = 1.0 - t
    basis = np.stack([s**3, 3 * s * s * t, 3 * s * t * t, t**3], axis=-1)  # [T, 4]
    return np.einsum("tk,...kd->...td", basis, ctrl)


def _heading(rng: np.random.Generator) -> float:
    """A pen direction: mostly near a multiple of 45 degrees, as in handwriting."""
    if rng.random() < 0.6:
        return float(rng.integers(8) * math.pi / 4 + rng.normal(0.0, 0.15))
    return float(rng.uniform(0.0, 2 * math.pi))


def _pick(rng: np.random.Generator, cumulative: tuple[float, ...]) -> int:
    """Index ``k`` with probability ``cumulative[k] - cumulative[k - 1]`` (faster than choice)."""
    u = rng.random()
    return next((k for k, c in enumerate(cumulative) if u < c), len(cumulative))


def _bend(
    rng: np.random.Generator, start: np.ndarray, heading: float, length: float, bend: float
) -> tuple[np.ndarray, float]:
    """A straight or gently bent piece; ``bend`` is the std of the handles' sideways offset."""
    direction = np.array([math.cos(heading), math.sin(heading)])
    normal = np.array([-direction[1], direction[0]])
    offset = rng.normal(0.0, bend, size=2) * length
    end = start + length * direction
    c1 = start + direction * length / 3 + normal * offset[0]
    c2 = start + direction * 2 * length / 3 + normal * offset[1]
    out = end - c2
    return np.stack([start, c1, c2, end]), float(math.atan2(out[1], out[0]))


def _arc(start: np.ndarray, heading: float, span: float, radius: float) -> tuple[np.ndarray, float]:
    """A circular arc leaving ``start`` along ``heading``, turning left if ``span > 0``."""
    side = 1.0 if span > 0 else -1.0
    centre = start + side * radius * np.array([-math.sin(heading), math.cos(heading)])
    a0 = heading - side * math.pi / 2
    a1 = a0 + span
    handle = 4.0 / 3.0 * math.tan(span / 4) * radius
    end = centre + radius * np.array([math.cos(a1), math.sin(a1)])
    c1 = start + handle * np.array([-math.sin(a0), math.cos(a0)])
    c2 = end - handle * np.array([-math.sin(a1), math.cos(a1)])
    return np.stack([start, c1, c2, end]), heading + span


def _stroke(
    rng: np.random.Generator, start: np.ndarray, first: bool, budget: int
) -> tuple[list[np.ndarray], bool]:
    """One pen stroke as up to ``budget`` cubic pieces; also says whether it is a closed loop.

    Kinds: a polyline of (mostly) straight pieces meeting at corners, a smooth curve of arcs
    (C- or S-shaped), a closed loop, or (never first) a dot.
    """
    kind = _pick(rng, (0.55, 0.87, 0.96) if not first else (0.6, 0.92, 1.0))
    heading = _heading(rng)
    if kind == 3:  # a dot
        return [np.stack([start, start, start + 0.05, start + 0.05])], False
    if kind == 2 and budget >= 2:  # a closed loop: two half circles
        radius = rng.uniform(0.3, 0.55)
        span = math.pi if rng.random() < 0.5 else -math.pi
        first_half, heading = _arc(start, heading, span, radius)
        second_half, _ = _arc(first_half[3], heading, span, radius)
        second_half[3] = start
        return [first_half, second_half], True
    pieces: list[np.ndarray] = []
    count = min(budget, 1 + _pick(rng, (0.45, 0.8) if kind == 0 else (0.6,)))
    sign = 1.0 if rng.random() < 0.5 else -1.0
    for _ in range(count):
        if kind == 0:
            bend = 0.08 if rng.random() < 0.75 else 0.3
            piece, heading = _bend(rng, start, heading, rng.uniform(0.6, 1.4), bend)
            turn = rng.uniform(math.pi / 3, 5 * math.pi / 6)
            heading += turn if rng.random() < 0.5 else -turn
        else:
            span = sign * rng.uniform(math.pi / 3, math.pi)
            piece, heading = _arc(start, heading, span, rng.uniform(0.3, 0.7))
            if rng.random() < 0.35:
                sign = -sign  # an S-bend
        pieces.append(piece)
        start = piece[3]
    return pieces, False


def _prototype(seed: int, cls: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """The character of class ``cls``: a function of ``(seed, cls)`` only.

    Returns control points ``[_MAX_CURVES, 4, 2]`` (unused rows zero), a mask of used curves,
    for each curve the anchor slot whose redraw noise moves its start and its end (anchor slot
    ``2m`` is the start of curve ``m``, ``2m + 1`` its end; pieces of one stroke share their
    joints, a loop's end is its start, a stroke starting at an earlier stroke's end shares that
    point), and the number of strokes.
    """
    rng = np.random.default_rng([seed, cls, _CLASS_STREAM])
    n_strokes = 1 + _pick(rng, (0.15, 0.45, 0.75))
    curves: list[np.ndarray] = []
    start_slot: list[int] = []
    end_slot: list[int] = []
    for _ in range(n_strokes):
        budget = _MAX_CURVES - len(curves)
        if budget <= 0:
            break
        shared = -1
        if curves and rng.random() < 0.55:  # start on an earlier stroke
            host = int(rng.integers(len(curves)))
            where = _pick(rng, (1 / 3, 2 / 3))
            if where < 2:
                start = curves[host][3 * where]
                shared = start_slot[host] if where == 0 else end_slot[host]
            else:
                start = _bezier(curves[host], np.array([rng.uniform(0.2, 0.8)]))[0]
        else:
            start = rng.uniform(-1.0, 1.0, size=2)
        pieces, closed = _stroke(rng, start, not curves, budget)
        first = len(curves)
        for k, piece in enumerate(pieces):
            m = len(curves)
            curves.append(piece)
            start_slot.append(end_slot[-1] if k > 0 else (shared if shared >= 0 else 2 * m))
            end_slot.append(2 * m + 1)
        if closed:
            end_slot[-1] = start_slot[first]
    ctrl = np.stack(curves)
    # Centre the drawing and scale its longer side to a random share of the box [-1, 1]^2.
    pts = _bezier(ctrl, np.linspace(0.0, 1.0, 33)).reshape(-1, 2)
    low, high = pts.min(axis=0), pts.max(axis=0)
    extent = np.maximum(high - low, 0.3)
    scale = rng.uniform(1.7, 2.0) / extent.max()
    # stretch the shorter side part of the way towards a square, as characters mostly are
    stretch = np.minimum(np.sqrt(extent.max() / extent), 1.6)
    ctrl = (ctrl - (low + high) / 2) * scale * stretch
    n = len(curves)
    out = np.zeros((_MAX_CURVES, 4, 2))
    out[:n] = ctrl
    used = np.zeros(_MAX_CURVES, dtype=bool)
    used[:n] = True
    starts = np.arange(0, 2 * _MAX_CURVES, 2)
    ends = starts + 1
    starts[:n] = start_slot
    ends[:n] = end_slot
    return out, used, starts, ends, n_strokes


def _sample_noise(seed: int, cls: int, count: int) -> np.ndarray:
    """Uniforms ``[count, _N_NOISE]`` for the redraws of ``cls``; row ``i`` ignores ``count``."""
    rng = np.random.default_rng([seed, cls, _SAMPLE_STREAM])
    return rng.random((count, _N_NOISE))


def _bezier_basis(steps: int) -> torch.Tensor:
    basis = _BEZIER_BASIS_CACHE.get(steps)
    if basis is None:
        t = torch.linspace(0.0, 1.0, steps, dtype=torch.float32)
        s = 1.0 - t
        basis = torch.stack([s**3, 3 * s * s * t, 3 * s * t * t, t**3], dim=-1)
        _BEZIER_BASIS_CACHE[steps] = basis
    return basis


def _gaussian_blur(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[N, H, W]`` with zero padding (elementwise, batch-exact)."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=field.dtype)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    n, h, w = field.shape
    padded = torch.nn.functional.pad(field, (radius, radius))
    rows = sum(kernel[k] * padded[:, :, k : k + w] for k in range(2 * radius + 1))
    padded = torch.nn.functional.pad(rows, (0, 0, radius, radius))
    return sum(kernel[k] * padded[:, k : k + h, :] for k in range(2 * radius + 1))


def _render(
    ctrl: torch.Tensor,
    used: torch.Tensor,
    start_slot: torch.Tensor,
    end_slot: torch.Tensor,
    noise: torch.Tensor,
    image_size: int,
    jitter: float,
    stroke_width: float,
) -> torch.Tensor:
    """Redraw and rasterise glyphs.

    Args:
        ctrl: prototypes ``[C, M, 4, 2]``; used: mask ``[C, M]``; start_slot / end_slot:
            anchor slots ``[C, M]`` (see :func:`_prototype`).
        noise: uniforms ``[C, S, _N_NOISE]``.

    Returns:
        images ``[C, S, H, W]`` (float32).
    """
    n_cls, n_smp = noise.shape[:2]
    z = torch.special.ndtri(noise.clamp(1e-6, 1 - 1e-6))  # standard normals
    # 1. move the anchors (curve ends; shared joints move together) and, a little, the handles,
    #    which also follow their anchor so that tangents stay smooth.
    off = 0
    d = z[..., off : off + _N_CTRL].reshape(n_cls, n_smp, _MAX_CURVES, 4, 2)
    off += _N_CTRL
    anchors = _ANCHOR_NOISE * jitter * d[..., [0, 3], :].reshape(n_cls, n_smp, -1, 2)
    slots = torch.stack([start_slot, end_slot], dim=-1).reshape(n_cls, 1, -1, 1)
    anchors = torch.gather(anchors, 2, slots.expand(n_cls, n_smp, -1, 2))
    anchors = anchors.reshape(n_cls, n_smp, _MAX_CURVES, 2, 2)
    handles = _HANDLE_NOISE * jitter * d[..., 1:3, :] + anchors
    d_ctrl = torch.stack(
        [anchors[..., 0, :], handles[..., 0, :], handles[..., 1, :], anchors[..., 1, :]], dim=-2
    )
    pts = ctrl[:, None] + d_ctrl  # [C, S, M, 4, 2]
    steps = max(24, 2 * image_size)
    basis = _bezier_basis(steps)  # [T, 4]; elementwise sums keep every image batch-independent
    pts = sum(basis[:, k, None] * pts[..., k, None, :] for k in range(4))  # [C, S, M, T, 2]
    # 2. a smooth random warp: two plane waves per axis.
    w = z[..., off : off + _N_WARP].reshape(n_cls, n_smp, 2, 2, 4)
    u = noise[..., off : off + _N_WARP].reshape(n_cls, n_smp, 2, 2, 4)
    off += _N_WARP
    freq = _WARP_FREQUENCY * w[..., :2]  # [C, S, axis, wave, 2]
    phase = 2 * math.pi * u[..., 2]
    amp = _WARP_AMPLITUDE * jitter * w[..., 3]
    px, py = pts[..., 0].reshape(n_cls, n_smp, -1), pts[..., 1].reshape(n_cls, n_smp, -1)
    moved = []
    for axis, base in enumerate((px, py)):
        for wave in range(2):
            f = freq[:, :, axis, wave, None, :]
            arg = f[..., 0] * px + f[..., 1] * py + phase[:, :, axis, wave, None]
            base = base + amp[:, :, axis, wave, None] * torch.sin(arg)
        moved.append(base)
    px, py = moved
    # 3. a small affine jitter about the centre of the box.
    a = z[..., off : off + _N_AFFINE] * jitter
    off += _N_AFFINE
    angle = a[..., 0] * math.radians(_ROTATION_DEGREES)
    sx = torch.exp(a[..., 1] * _LOG_SCALE)
    sy = torch.exp(a[..., 2] * _LOG_SCALE)
    shear = a[..., 3] * _SHEAR
    cos, sin = torch.cos(angle), torch.sin(angle)
    # matrix = rotation @ shear @ scale
    m00, m01 = cos * sx, (cos * shear - sin) * sy
    m10, m11 = sin * sx, (sin * shear + cos) * sy
    shift = a[..., 4:6] * _SHIFT
    x = m00[..., None] * px + m01[..., None] * py + shift[..., 0:1]
    y = m10[..., None] * px + m11[..., None] * py + shift[..., 1:2]
    pen = torch.exp(z[..., off] * _LOG_PEN * jitter)  # [C, S]
    # 4. rasterise: box [-1, 1] -> [margin, size - margin] in continuous pixel coordinates
    #    (pixel i covers [i, i + 1), so its centre is at i + 0.5); weights = arc length.
    margin = _MARGIN * image_size
    half = (image_size - 2 * margin) / 2
    px = (x + 1.0) * half + margin - 0.5
    py = (y + 1.0) * half + margin - 0.5
    px = px.reshape(n_cls, n_smp, _MAX_CURVES, steps)
    py = py.reshape(n_cls, n_smp, _MAX_CURVES, steps)
    seg = torch.hypot(px.diff(dim=-1), py.diff(dim=-1))
    weight = torch.nn.functional.pad(seg, (0, 1)) + torch.nn.functional.pad(seg, (1, 0))
    weight = 0.5 * weight * used[:, None, :, None]
    x0, y0 = px.floor(), py.floor()
    fx, fy = px - x0, py - y0
    x0, y0 = x0.long(), y0.long()
    image_id = torch.arange(n_cls * n_smp).reshape(n_cls, n_smp, 1, 1)
    index_parts, weight_parts = [], []
    for dx, dy, wk in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < image_size) & (yi >= 0) & (yi < image_size)
        flat_index = (image_id * image_size + yi.clamp(0, image_size - 1)) * image_size
        index_parts.append((flat_index + xi.clamp(0, image_size - 1)).reshape(-1))
        weight_parts.append((wk * weight * inside).reshape(-1))
    ink = torch.bincount(
        torch.cat(index_parts),
        weights=torch.cat(weight_parts).double(),  # float64: the sum order cannot matter
        minlength=n_cls * n_smp * image_size * image_size,
    ).float()
    ink = ink.reshape(n_cls * n_smp, image_size, image_size)
    scale = image_size / 28.0
    ink = _gaussian_blur(ink, sigma=_BLUR * scale) * scale  # ink per stroke width, any size
    gain = _INK_GAIN * stroke_width * pen.reshape(-1, 1, 1)
    images = 1.0 - torch.exp(-gain * ink)
    return images.reshape(n_cls, n_smp, image_size, image_size)


def make_glyphs(
    num_classes: int,
    samples_per_class: int = 20,
    image_size: int = 28,
    seed: int = 0,
    *,
    class_offset: int = 0,
    jitter: float = 1.0,
    stroke_width: float = 1.0,
) -> LabelledImages:
    """Generate an Omniglot-like set of handwritten-looking glyphs, with no file needed.

    Each class is a random character of one to four pen strokes; each sample is a jittered
    redraw (control-point noise, a smooth warp, rotation / scale / shear / shift, pen width)
    rendered anti-aliased.  It plays the role of Omniglot (Lake et al. 2015) in N-way K-shot
    episodes (Vinyals et al. 2016; Snell et al. 2017; Finn et al. 2017): as in Omniglot there are
    20 samples per class by default, and classes are learnable yet not trivially separable: a
    1-nearest-neighbour classifier on raw pixels scores about 60% on 5-way 1-shot episodes (about
    41% on real Omniglot at 28x28, 20% being chance), a small Prototypical Network well over 90%.

    Args:
        num_classes: how many classes (``>= 1``).
        samples_per_class: redraws per class (``>= 1``).
        image_size: height and width in pixels (``>= 8``).
        seed: selects the family of characters (``>= 0``).
        class_offset: first global class id (``>= 0``); classes are
            ``class_offset .. class_offset + num_classes - 1``, so disjoint ranges give disjoint
            classes and the same global id always gives the same character.
        jitter: multiplies every per-sample perturbation (``>= 0``; ``0`` redraws the prototype
            exactly, larger values make the task harder).
        stroke_width: multiplies the amount of ink (``> 0``; larger values give bolder strokes).

    Returns:
        :class:`~mtl.data.base.LabelledImages` with images ``[num_classes * samples_per_class,
        1, image_size, image_size]`` (float32, strokes 1 on background 0), class-major order,
        targets ``0..num_classes-1``, class names ``"glyph{global id:04d}"`` and the attribute
        ``"strokes"`` (number of strokes minus one, ``0..3``, named ``"1".."4"``).

    Class ``c`` depends only on ``(seed, c)``; sample ``i`` of it only on ``(seed, c, i)`` and the
    rendering options.
    """
    num_classes = _check_int("num_classes", num_classes, 1)
    samples_per_class = _check_int("samples_per_class", samples_per_class, 1)
    image_size = _check_int("image_size", image_size, 8)
    seed = _check_int("seed", seed, 0)
    class_offset = _check_int("class_offset", class_offset, 0)
    for name, value, allowed in (
        ("jitter", jitter, "a finite number >= 0"),
        ("stroke_width", stroke_width, "a finite number > 0"),
    ):
        bad = isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
        if bad or not math.isfinite(value) or value < 0 or (name == "stroke_width" and value == 0):
            raise ConfigError(f"{name} must be {allowed}, got {value!r}")

    ids = range(class_offset, class_offset + num_classes)
    chunks: list[torch.Tensor] = []
    strokes: list[int] = []
    for first in range(0, num_classes, _CLASSES_PER_CHUNK):
        block = ids[first : first + _CLASSES_PER_CHUNK]
        protos = [_prototype(seed, c) for c in block]
        strokes.extend(p[4] - 1 for p in protos)
        noise = np.stack([_sample_noise(seed, c, samples_per_class) for c in block])
        chunks.append(
            _render(
                torch.from_numpy(np.stack([p[0] for p in protos])).float(),
                torch.from_numpy(np.stack([p[1] for p in protos])),
                torch.from_numpy(np.stack([p[2] for p in protos])),
                torch.from_numpy(np.stack([p[3] for p in protos])),
                torch.from_numpy(noise).float(),
                image_size,
                float(jitter),
                float(stroke_width),
            ).reshape(-1, 1, image_size, image_size)
        )
    images = torch.cat(chunks).clamp_(0.0, 1.0)
    targets = torch.arange(num_classes).repeat_interleave(samples_per_class)
    stroke_attr = torch.tensor(strokes, dtype=torch.long).repeat_interleave(samples_per_class)
    return LabelledImages(
        images,
        targets,
        [f"glyph{c:04d}" for c in ids],
        attributes={"strokes": stroke_attr},
        attribute_names={"strokes": [str(k) for k in range(1, MAX_STROKES + 1)]},
    )
