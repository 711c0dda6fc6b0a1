"""The built-in two-domain portrait benchmark (``mlb synth``): procedural people, real gap.

Public matting sets cannot be downloaded here, so the demo, the tests and the central
experiment run on data drawn by this module (pure numpy + OpenCV, one core):

- people that make matting hard: head-and-shoulders or half-body figures with hair made of
  hundreds of sub-pixel strands, soft and motion-blurred edges, semi-transparent veils and
  shawls, clothing and skin texture, varied pose, scale and position, sometimes two people or
  a partial crop. The true alpha is rendered at ``SUPERSAMPLE`` x the output resolution and
  area-averaged, so strands thinner than a pixel become partial alpha;
- composite domain (the matte corpus): the foreground and its alpha, plus a pool of unrelated
  person-free backgrounds to paste it on with plain alpha compositing, ``image = alpha * fg +
  (1 - alpha) * bg`` (method.md section 1). The pool is ``"patterns"`` (gradients, shapes,
  textures, stripes, bokeh: the first release's, far from any photo) or ``"scenes"``
  (person-free scenes of the natural domain's renderer, drawn from their own seeds and
  defocused as its backgrounds are: what matting corpora do with photos of places, such as
  BG-20k, and what closes most of the whole-image gap at 256 px; docs/science-notes.md);
- natural domain (the segmentation corpus and validation images): one coherent scene
  (rooms or outdoors with clutter in skin and hair colours and hair-like branches), the
  person's key light shared with the scene, a cast shadow, background defocus, light spill
  on the person's edges, a colour cast, sensor noise, then JPEG compression; with a coarse
  mask that looks annotated by hand (binary, strands not traced, boundary simplified and
  jittered by a few pixels) and the true alpha for validation.

Every sample ``i`` is drawn from its own generator ``default_rng([seed, domain, i])``: the
output is byte-deterministic for a seed, and sample ``i`` does not depend on ``count``.
Whether the domains differ enough is measured later by training on them, not assumed here.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from mlb.data.compositing import composite
from mlb.data.imageio import write_jpeg, write_png

__all__ = [
    "BACKGROUND_POOLS",
    "GENERATOR_VERSION",
    "SUPERSAMPLE",
    "SynthSummary",
    "coarse_mask_from_alpha",
    "make_composite_corpus",
    "make_natural_corpus",
    "read_manifest",
    "render_background",
    "render_composite_sample",
    "render_natural_sample",
    "render_person",
    "render_scene",
    "render_scene_plate",
    "sample_id",
]

GENERATOR_VERSION = 1
SUPERSAMPLE = 2  # people are drawn at 2x and area-averaged: AA edges, sub-pixel hair strands
_DOMAIN_PERSON = {"composite": 1, "natural": 2}
_DOMAIN_BACKGROUND = 3
_DOMAIN_SCENE_PLATE = 4
BACKGROUND_POOLS = ("patterns", "scenes")
"""The composite domain's background pools (module doc); "patterns" is the default."""
_MIN_SIZE = 32

# sRGB colour palettes (0-255). Skin: a Fitzpatrick-like range; hair: natural colours.
SKIN_TONES = np.array([
    (255, 224, 196), (241, 194, 167), (234, 182, 150), (224, 172, 138), (198, 134, 99),
    (176, 120, 86), (161, 102, 70), (120, 77, 52), (96, 62, 44), (74, 48, 34),
], dtype=np.float32)
HAIR_COLOURS = np.array([
    (22, 18, 16), (40, 28, 22), (62, 42, 30), (92, 64, 42), (128, 92, 60), (170, 130, 84),
    (205, 170, 115), (225, 205, 165), (125, 58, 32), (160, 158, 152),
], dtype=np.float32)


# ---------------------------------------------------------------------------------------
# geometry helpers


@dataclass(frozen=True)
class _Frame:
    """Maps local body units (1 = head height / 2, +y down) to canvas pixels."""

    origin: tuple[float, float]
    unit: float
    angle: float

    def rotation(self) -> np.ndarray:
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        return np.array([[cos, -sin], [sin, cos]], dtype=np.float64)

    def map(self, points: np.ndarray) -> np.ndarray:
        """``(N, 2)`` local points -> ``(N, 2)`` canvas pixels (float)."""
        return np.asarray(points, np.float64) @ self.rotation().T * self.unit + self.origin

    def child(self, pivot: tuple[float, float], angle: float) -> _Frame:
        """The frame rotated by ``angle`` about the local point ``pivot`` (a joint)."""
        turned = _Frame(self.origin, self.unit, self.angle + angle)
        shift = self.map(np.array([pivot])) - turned.map(np.array([pivot]))
        return _Frame(tuple(turned.origin + shift[0]), self.unit, turned.angle)


def _arc(centre: tuple[float, float], radii: tuple[float, float], start: float, stop: float,
         count: int = 40) -> np.ndarray:
    """Points on an ellipse arc, angles in radians (+y down, so 3pi/2 is the top)."""
    angles = np.linspace(start, stop, count)
    return np.stack([centre[0] + radii[0] * np.cos(angles),
                     centre[1] + radii[1] * np.sin(angles)], axis=1)


def _bezier(p0: tuple, p1: tuple, p2: tuple, count: int = 12) -> np.ndarray:
    t = np.linspace(0.0, 1.0, count)[:, None]
    p0, p1, p2 = (np.asarray(p, np.float64) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _fixed(points: np.ndarray) -> np.ndarray:
    """Canvas points -> int32 with 4 fractional bits (cv2 ``shift=4``): sub-pixel shapes."""
    return np.round(np.asarray(points) * 16.0).astype(np.int32).reshape(-1, 1, 2)


def _point(point: np.ndarray) -> tuple[int, int]:
    """One canvas point as cv2 wants it with ``shift=4``."""
    x, y = _fixed(point)[0, 0]
    return int(x), int(y)


def _mirror(points: np.ndarray) -> np.ndarray:
    return np.asarray(points)[::-1] * np.array([-1.0, 1.0])


# ---------------------------------------------------------------------------------------
# layered painting at supersampled resolution (premultiplied colour + alpha)


class _Canvas:
    """A premultiplied RGBA float canvas that shapes are painted onto with "over"."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.colour = np.zeros((size, size, 3), np.float32)  # premultiplied, 0-255
        self.alpha = np.zeros((size, size), np.float32)

    def box(self, points: np.ndarray, margin: float) -> tuple[slice, slice] | None:
        low = np.floor(points.min(axis=0) - margin).astype(int)
        high = np.ceil(points.max(axis=0) + margin).astype(int)
        x0, y0 = max(low[0], 0), max(low[1], 0)
        x1, y1 = min(high[0], self.size), min(high[1], self.size)
        if x1 <= x0 or y1 <= y0:
            return None
        return slice(y0, y1), slice(x0, x1)

    def over(self, box: tuple[slice, slice], colour: np.ndarray, coverage: np.ndarray) -> None:
        """Composite ``colour`` (straight, ``(h, w, 3)`` or ``(3,)``) with ``coverage``."""
        weight = coverage[:, :, None]
        self.colour[box] = colour * weight + self.colour[box] * (1.0 - weight)
        self.alpha[box] = coverage + self.alpha[box] * (1.0 - coverage)

    def over_premultiplied(self, other: _Canvas) -> None:
        self.colour = other.colour + self.colour * (1.0 - other.alpha[:, :, None])
        self.alpha = other.alpha + self.alpha * (1.0 - other.alpha)


@dataclass
class _Style:
    """Colour fields (``(N, N, 3) float32``, straight colour) and lighting of one person."""

    skin: np.ndarray
    clothing: np.ndarray
    hair: np.ndarray
    skin_tone: np.ndarray
    hair_tone: np.ndarray


def _coverage(shape: tuple[int, int], offset: np.ndarray, polygons: list[np.ndarray],
              lines: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Float coverage in [0, 1] of filled polygons and thick polylines in a box."""
    mask = np.zeros(shape, np.uint8)
    for polygon in polygons:
        cv2.fillPoly(mask, [_fixed(polygon - offset)], 255, cv2.LINE_AA, shift=4)
    for line, thickness in lines:
        cv2.polylines(mask, [_fixed(line - offset)], False, 255, max(1, int(thickness)),
                      cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) * np.float32(1.0 / 255.0)


def _volume(coverage: np.ndarray, radius: float, strength: float) -> np.ndarray:
    """A shading factor darker near a part's edge: a cheap stand-in for surface curvature."""
    small_size = (max(1, coverage.shape[1] // 4), max(1, coverage.shape[0] // 4))
    small = cv2.resize(coverage, small_size, interpolation=cv2.INTER_AREA)
    sigma = max(radius / 4.0, 0.5)
    blurred = cv2.GaussianBlur(small, (0, 0), sigma)
    blurred = cv2.resize(blurred, coverage.shape[::-1], interpolation=cv2.INTER_LINEAR)
    return (1.0 - strength) + strength * np.sqrt(np.clip(blurred, 0.0, 1.0))


def _paint(canvas: _Canvas, colour: np.ndarray, *, polygons: tuple = (), lines: tuple = (),
           opacity: float | np.ndarray = 1.0, volume: float = 0.0, soften: float = 0.0) -> None:
    """Paint filled ``polygons`` and ``(polyline, thickness)`` ``lines`` (canvas px).

    ``colour``: a full colour field ``(N, N, 3)`` or one colour ``(3,)``; ``opacity``: a
    number or a full ``(N, N)`` field; ``volume``: edge darkening strength; ``soften``:
    Gaussian blur of the coverage in px (soft edges).
    """
    points = np.concatenate([*polygons, *(line for line, _ in lines)])
    thickest = max((thickness for _, thickness in lines), default=0)
    box = canvas.box(points, margin=thickest + 3 * soften + 3)
    if box is None:
        return
    offset = np.array([box[1].start, box[0].start], np.float64)
    coverage = _coverage((box[0].stop - box[0].start, box[1].stop - box[1].start), offset,
                         list(polygons), list(lines))
    if soften > 0:
        coverage = cv2.GaussianBlur(coverage, (0, 0), soften)
    field = colour[box] if colour.ndim == 3 else colour.astype(np.float32)
    if volume > 0:
        field = field * _volume(coverage, radius=canvas.size / 20, strength=volume)[:, :, None]
    opacity = opacity[box] if isinstance(opacity, np.ndarray) else np.float32(opacity)
    canvas.over(box, field, coverage * opacity)


# ---------------------------------------------------------------------------------------
# colour fields


def _smooth_noise(rng: np.random.Generator, size: int, cells: int,
                  channels: int = 1) -> np.ndarray:
    """Band-limited noise, about zero mean and unit std, ``(size, size[, channels])``."""
    coarse = rng.standard_normal((cells, cells, channels)).astype(np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return field if channels > 1 else field.reshape(size, size)


def _light_ramp(size: int, light: np.ndarray, strength: float) -> np.ndarray:
    """Directional key light: brighter towards ``light`` (unit 2-vector), ``(N, N)``."""
    axis = (np.arange(size, dtype=np.float32) / size - 0.5)
    return 1.0 + strength * (axis[None, :] * light[0] + axis[:, None] * light[1])


def _jitter_colour(rng: np.random.Generator, colour: np.ndarray, amount: float) -> np.ndarray:
    return np.clip(colour * rng.uniform(1 - amount, 1 + amount, 3), 0, 255).astype(np.float32)


def _clothing_colour(rng: np.random.Generator) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0, 230), rng.uniform(30, 240)]]],
                   np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    """Clothing print in [0, 1]: plain, stripes, checks, dots or a mottled print."""
    kind = rng.choice(["plain", "plain", "stripes", "checks", "dots", "mottled"])
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    period = rng.uniform(0.02, 0.08)
    angle = rng.uniform(0, np.pi)
    u = (x * np.cos(angle) + y * np.sin(angle)) / period
    v = (-x * np.sin(angle) + y * np.cos(angle)) / period
    if kind == "stripes":
        return (np.sin(2 * np.pi * u) > rng.uniform(-0.5, 0.5)).astype(np.float32)
    if kind == "checks":
        return ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    if kind == "dots":
        return ((np.sin(np.pi * u) ** 2 * np.sin(np.pi * v) ** 2) > 0.6).astype(np.float32)
    if kind == "mottled":
        return np.clip(0.5 + 0.5 * _smooth_noise(rng, size, 24), 0, 1)
    return np.zeros((size, size), np.float32)


def _make_style(rng: np.random.Generator, size: int, light: np.ndarray) -> _Style:
    """Skin, clothing and hair colour fields, drawn at half resolution and upsampled
    (they are smooth; the speed matters: three full-canvas fields per person)."""
    half = size // 2
    ramp = _light_ramp(half, light, rng.uniform(0.2, 0.6))[:, :, None]
    skin_tone = _jitter_colour(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))], 0.06)
    hair_tone = _jitter_colour(rng, HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))], 0.12)
    if rng.random() < 0.06:  # dyed hair
        hair_tone = _clothing_colour(rng) * 0.8
    skin = skin_tone * (1 + 0.05 * _smooth_noise(rng, half, 10, 3)) * ramp
    base, accent = _clothing_colour(rng), _clothing_colour(rng)
    mix = _pattern(rng, half)[:, :, None]
    folds = 1 + rng.uniform(0.05, 0.2) * _smooth_noise(rng, half, 14)[:, :, None]
    clothing = (base * (1 - mix) + accent * mix) * folds * ramp
    hair = hair_tone * _hair_sheen(rng, half) * ramp
    fields = (cv2.resize(np.clip(field, 0, 255).astype(np.float32), (size, size),
                         interpolation=cv2.INTER_LINEAR) for field in (skin, clothing, hair))
    return _Style(*fields, skin_tone=skin_tone, hair_tone=hair_tone)


def _hair_sheen(rng: np.random.Generator, size: int) -> np.ndarray:
    """Streaky brightness along the hair's fall: anisotropic noise, ``(N, N, 1)``."""
    small = size // 2
    noise = rng.standard_normal((small, small)).astype(np.float32)
    length = max(3, small // 12)
    kernel = np.zeros((length, length), np.float32)
    kernel[:, length // 2] = 1.0 / length
    kernel = cv2.warpAffine(kernel, cv2.getRotationMatrix2D(
        (length / 2 - 0.5, length / 2 - 0.5), rng.uniform(-25, 25), 1.0), (length, length))
    streaks = cv2.filter2D(noise, -1, kernel / max(kernel.sum(), 1e-6))
    streaks = cv2.resize(streaks, (size, size), interpolation=cv2.INTER_LINEAR)
    return (1.0 + 0.3 * streaks / (streaks.std() + 1e-6))[:, :, None].clip(0.4, 1.8)


# ---------------------------------------------------------------------------------------
# the person


@dataclass(frozen=True)
class _Pose:
    framing: str            # "portrait" (head and shoulders) or "half" (half body, arms)
    shoulder: float         # shoulder half-width (units)
    shoulder_tilt: float    # right shoulder height offset
    hair: str               # short / long / bun / curly / buzz
    volume: float           # hair volume factor
    fringe: float           # hairline height (small = bangs low on the forehead)
    wave_arm: bool          # a raised, waving (motion-blurred) hand
    veil: str               # none / veil / shawl


def _draw_pose(rng: np.random.Generator, framing: str) -> _Pose:
    hair = rng.choice(["short", "long", "long", "bun", "curly", "buzz"],
                      p=[0.26, 0.22, 0.22, 0.1, 0.15, 0.05])
    return _Pose(
        framing=framing, shoulder=rng.uniform(1.9, 2.6), shoulder_tilt=rng.uniform(-0.2, 0.2),
        hair=str(hair), volume=rng.uniform(1.0, 1.15) if hair != "curly" else rng.uniform(1.3, 1.7),
        fringe=rng.uniform(0.35, 0.85), wave_arm=framing == "half" and rng.random() < 0.45,
        veil=str(rng.choice(["none", "veil", "shawl"], p=[0.62, 0.19, 0.19])),
    )


def _torso_outline(pose: _Pose) -> np.ndarray:
    """Neck base, trapezius, round shoulders and the sides down past the frame (left half)."""
    width = pose.shoulder
    trapezius = _bezier((-0.42, -0.2), (-0.95, 0.02), (-(width - 0.45), 0.3))
    shoulder = _arc((-(width - 0.45), 0.85), (0.56, 0.56), 1.5 * np.pi, np.pi, 12)
    if pose.framing == "portrait":
        side = np.array([(-(width + 0.02), 2.5), (-(width - 0.05), 20.0)])
    else:
        side = np.array([(-(width - 0.5), 1.7), (-(width - 0.75), 4.6),
                         (-(width - 0.45), 7.5), (-(width - 0.45), 20.0)])
    return np.concatenate([trapezius, shoulder, side])


def _torso_polygon(pose: _Pose) -> np.ndarray:
    left = _torso_outline(pose)
    right = _mirror(left)
    right[:, 1] += pose.shoulder_tilt * np.clip(1.5 - right[:, 1], 0, 1.5) / 1.5
    return np.concatenate([left, right])


def _arms(rng: np.random.Generator, pose: _Pose) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """Half-body arms: ``(upper+fore arm polyline, hand centre, waving)`` per side (units)."""
    arms = []
    for side in (-1.0, 1.0):
        shoulder = np.array([side * (pose.shoulder - 0.4), 0.75])
        waving = pose.wave_arm and side > 0
        if waving:
            elbow = shoulder + np.array([side * rng.uniform(0.9, 1.5), rng.uniform(0.9, 1.6)])
            hand = elbow + np.array([side * rng.uniform(-0.3, 0.5), -rng.uniform(2.2, 2.8)])
        else:
            elbow = shoulder + np.array([side * rng.uniform(0.15, 0.5), rng.uniform(2.2, 2.6)])
            hand = elbow + np.array([side * rng.uniform(-0.6, 0.3), rng.uniform(1.9, 2.4)])
        arms.append((np.stack([shoulder, elbow, hand]), hand, waving))
    return arms


def _hair_outline(rng: np.random.Generator, pose: _Pose) -> tuple[np.ndarray, np.ndarray]:
    """The hair cap as ``(polygon, outer arc)`` in head units (outer arc grows strands).

    The outer arc runs from one side over the crown to the other; its lower ends reach from
    the temples (short) down to the jaw (a bob); the inner edge is the hairline.
    """
    drop = rng.uniform(0.15, 0.45) if pose.hair in ("buzz", "bun") else rng.uniform(0.2, 1.1)
    centre = np.array([rng.uniform(-0.04, 0.04), -1.92])
    radii = (0.82, 0.97) if pose.hair == "buzz" else (0.9 * pose.volume, 1.04 * pose.volume)
    angles = np.linspace(np.pi - drop, 2 * np.pi + drop, 64)
    # Uneven volume: a lopsided, bumpy silhouette rather than a helmet.
    radial = 1 + 0.035 * np.sin(2 * angles + rng.uniform(0, 6)) + 0.02 * np.sin(
        5 * angles + rng.uniform(0, 6))
    if pose.hair == "curly":
        radial += 0.05 * np.sin(angles * rng.uniform(10, 18) + rng.uniform(0, 6))
    outer = centre + np.stack([radii[0] * np.cos(angles), radii[1] * np.sin(angles)], 1) * (
        radial[:, None])
    inner_drop = min(drop, 0.45)
    inner = _arc((0, -1.72), (0.74, 0.84 * pose.fringe + 0.1), 2 * np.pi + inner_drop,
                 np.pi - inner_drop, 40)
    sides = [np.array([(0.68, outer[-1, 1])]), inner, np.array([(-0.68, outer[0, 1])])]
    return np.concatenate([outer, *sides]), outer


def _back_hair(rng: np.random.Generator, pose: _Pose) -> tuple[np.ndarray, np.ndarray]:
    """Long hair falling behind the shoulders: ``(polygon, outline that grows strands)``."""
    width = rng.uniform(0.95, 1.35) * pose.volume
    end = rng.uniform(0.3, 3.5)
    left = np.array([(-0.8, -2.4), (-width, -1.5), (-width - 0.1, 0.0),
                     (-width + 0.05, end)], np.float64)
    bottom_x = np.linspace(-width + 0.05, width - 0.05, 9)
    bottom = np.stack([bottom_x, end + rng.uniform(-0.35, 0.35, 9)], axis=1)
    right = _mirror(left)
    polygon = np.concatenate([left, bottom[1:-1], right])
    return polygon, polygon


def _outline_points(outline: np.ndarray, count: int, rng: np.random.Generator,
                    centre: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` random points along a polyline, their outward normals (away from
    ``centre``) and their downward tangents."""
    segments = np.diff(outline, axis=0)
    lengths = np.linalg.norm(segments, axis=1)
    cumulative = np.concatenate([[0.0], np.cumsum(lengths)])
    where = rng.uniform(0, cumulative[-1], count)
    index = np.clip(np.searchsorted(cumulative, where) - 1, 0, len(segments) - 1)
    t = ((where - cumulative[index]) / np.maximum(lengths[index], 1e-9))[:, None]
    points = outline[index] + t * segments[index]
    tangents = segments[index] / np.maximum(lengths[index], 1e-9)[:, None]
    normals = np.stack([tangents[:, 1], -tangents[:, 0]], axis=1)
    normals[np.sum(normals * (points - centre), axis=1) < 0] *= -1
    # Hair falls: orient tangents downwards, and away from the parting on the crown.
    flip = (tangents[:, 1] < -0.05) | ((np.abs(tangents[:, 1]) <= 0.05) &
                                       (tangents[:, 0] * (points[:, 0] - centre[0]) < 0))
    tangents[flip] *= -1
    return points, normals, tangents


def _strands(rng: np.random.Generator, outline: np.ndarray, *, count: int, centre: np.ndarray,
             length: float, curl: float, gravity: float, spring: float) -> np.ndarray:
    """Hair strands growing out of ``outline`` (local units): ``(count, 7, 2)`` polylines.

    Strands leave the hair mass along its flow (the downward tangent) and spring out by
    ``spring`` (0: lie along the edge, 1: stick straight out), bend by ``curl`` (radians
    per step) and droop under ``gravity``.
    """
    if count < 1:
        return np.zeros((0, 7, 2))
    roots, normals, tangents = _outline_points(outline, count, rng, centre)
    mix = np.clip(rng.normal(spring, 0.2, (count, 1)), 0.05, 1.0)
    direction = tangents * (1 - mix) + normals * mix + rng.normal(0, 0.15, normals.shape)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True) + 1e-9
    lengths = np.clip(rng.lognormal(np.log(length), 0.55, count), 0.02, 5 * length)
    bend = rng.normal(0, curl, count)
    step = lengths / 6
    points = [roots - normals * rng.uniform(0.03, 0.25, (count, 1))]
    for _ in range(6):
        cos, sin = np.cos(bend), np.sin(bend)
        direction = np.stack([direction[:, 0] * cos - direction[:, 1] * sin,
                              direction[:, 0] * sin + direction[:, 1] * cos], axis=1)
        direction[:, 1] += gravity * step
        direction /= np.linalg.norm(direction, axis=1, keepdims=True) + 1e-9
        points.append(points[-1] + direction * step[:, None])
        if curl > 0.5:  # curly hair changes its bend along the strand
            bend = bend + rng.normal(0, curl * 0.6, count)
    return np.stack(points, axis=1)


def _paint_strands(canvas: _Canvas, style: _Style, frame: _Frame, strands: np.ndarray,
                   rng: np.random.Generator) -> None:
    """Draw ``(M, K, 2)`` strands as anti-aliased 1-2 px lines at 2x supersampling, so a
    strand covers part of an output pixel: sub-pixel, partial alpha."""
    if len(strands) == 0:
        return
    pixels = frame.map(strands)
    box = canvas.box(pixels.reshape(-1, 2), margin=3)
    if box is None:
        return
    fixed = np.round((pixels - (box[1].start, box[0].start)) * 16.0).astype(np.int32)
    coverage = np.zeros((box[0].stop - box[0].start, box[1].stop - box[1].start), np.uint8)
    groups = rng.integers(0, 4, len(fixed))
    # Four groups: strands at three densities (alpha about 0.45-1) and a few thicker clumps.
    for group, (value, thickness) in enumerate([(255, 1), (190, 1), (115, 1), (255, 2)]):
        chosen = list(fixed[groups == group])
        if group == 3:
            chosen = chosen[: len(chosen) // 4]
        if chosen:
            cv2.polylines(coverage, chosen, False, value, thickness, cv2.LINE_AA, shift=4)
    canvas.over(box, style.hair[box], coverage.astype(np.float32) * np.float32(1 / 255))


def _paint_hair_texture(style: _Style, frame: _Frame, rng: np.random.Generator, *,
                        crown: tuple[float, float], length: float, count: int) -> None:
    """Darker and lighter strands in the hair colour field, flowing from the crown.

    Only the colour changes here; the hair shapes painted later show this field.
    """
    angles = rng.uniform(0.05 * np.pi, 0.95 * np.pi, count) + np.pi  # fanning upwards/out
    direction = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    start = np.asarray(crown) + rng.normal(0, 0.08, (count, 2))
    steps = np.linspace(0, 1, 8)[None, :, None] * rng.uniform(0.5, 1.0, (count, 1, 1)) * length
    # A parabola: out from the crown, then down under gravity.
    points = start[:, None, :] + direction[:, None, :] * steps + np.array([0.0, 1.0]) * (
        0.9 * steps**2 / length)
    field = np.clip(style.hair, 0, 255).astype(np.uint8)
    for scale, chosen in ((0.7, points[::2]), (1.25, points[1::2])):
        colour = tuple(float(c) for c in np.clip(style.hair_tone * scale, 0, 255))
        cv2.polylines(field, [_fixed(frame.map(s)) for s in chosen], False, colour, 1,
                      cv2.LINE_AA, shift=4)
    style.hair[...] = field


def _paint_head(canvas: _Canvas, style: _Style, head: _Frame, rng: np.random.Generator) -> None:
    ear_tone = style.skin_tone * 0.9
    for side in (-1, 1):
        _paint(canvas, ear_tone, polygons=(head.map(_arc((side * 0.76, -1.75), (0.13, 0.24),
                                                          0, 2 * np.pi, 20)),))
    skull = head.map(_arc((0, -1.9), (0.78, 0.92), 0, 2 * np.pi, 48))
    jaw = head.map(_arc((0, -1.56), (0.64 * rng.uniform(0.9, 1.05), 0.72), 0, 2 * np.pi, 48))
    _paint(canvas, style.skin, polygons=(skull, jaw), volume=0.35)
    _paint_face(canvas, style, head, rng)


def _paint_face(canvas: _Canvas, style: _Style, head: _Frame, rng: np.random.Generator) -> None:
    yaw = rng.uniform(-0.12, 0.12)
    dark = np.float32([35, 25, 22])
    iris = _jitter_colour(rng, np.float32([70, 55, 40]), 0.4)
    for side in (-1, 1):
        eye = (yaw + side * 0.3, -1.83)
        _paint(canvas, np.float32([235, 232, 228]), polygons=(head.map(_arc(eye, (0.14, 0.065),
                                                                           0, 2 * np.pi, 16)),))
        _paint(canvas, iris, polygons=(head.map(_arc(eye, (0.065, 0.065), 0, 2 * np.pi, 12)),))
        _paint(canvas, dark, polygons=(head.map(_arc(eye, (0.03, 0.03), 0, 2 * np.pi, 8)),))
        brow = _bezier((yaw + side * 0.14, -2.0), (yaw + side * 0.3, -2.1),
                       (yaw + side * 0.46, -2.0), 6)
        _paint(canvas, style.hair_tone * 0.9,
               lines=((head.map(brow), max(1, round(0.06 * head.unit))),))
    nose = np.array([(yaw, -1.8), (yaw + 0.07, -1.5), (yaw - 0.02, -1.45)])
    _paint(canvas, style.skin_tone * 0.72, lines=((head.map(nose), max(1, round(0.03 *
                                                                             head.unit))),))
    lips = style.skin_tone * np.float32([0.8, 0.5, 0.5])
    mouth = head.map(_arc((yaw * 0.8, -1.22), (0.21, 0.055), 0, 2 * np.pi, 16))
    _paint(canvas, lips, polygons=(mouth,))


def _paint_arm(canvas: _Canvas, style: _Style, body: _Frame, arm: np.ndarray,
               hand: np.ndarray, rng: np.random.Generator) -> None:
    sleeve = rng.random() < 0.6  # long sleeves, else bare forearm
    thickness = round(0.62 * body.unit)
    upper, fore = arm[:2], arm[1:]
    _paint(canvas, style.clothing, lines=((body.map(upper), thickness),), volume=0.3)
    _paint(canvas, style.clothing if sleeve else style.skin,
           lines=((body.map(fore), round(0.52 * body.unit)),), volume=0.3)
    palm = _arc(tuple(hand), (0.28, 0.36), 0, 2 * np.pi, 20)
    _paint(canvas, style.skin, polygons=(body.map(palm),), volume=0.3)
    if not sleeve:
        return
    cuff = _arc(tuple(fore[0] + 0.85 * (fore[1] - fore[0])), (0.05, 0.05), 0, 2 * np.pi, 6)
    _paint(canvas, style.clothing * 0.8, polygons=(body.map(cuff),))


def _motion_blur(canvas: _Canvas, length: float, angle: float) -> None:
    """Blur premultiplied colour and alpha along a line: a moving part (or camera shake)."""
    size = max(3, int(length) | 1)
    kernel = np.zeros((size, size), np.float32)
    kernel[size // 2, :] = 1.0
    rotation = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), np.degrees(angle), 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (size, size))
    kernel /= kernel.sum()
    canvas.colour = cv2.filter2D(canvas.colour, -1, kernel)
    canvas.alpha = cv2.filter2D(canvas.alpha, -1, kernel)


def _paint_veil(canvas: _Canvas, rng: np.random.Generator, head: _Frame, body: _Frame,
                pose: _Pose, size: int) -> None:
    """A sheer veil or shawl (alpha about 0.3-0.7, with folds) reaching past the silhouette."""
    colour = _clothing_colour(rng) * 0.5 + rng.uniform(80, 200) * 0.5
    spread = pose.shoulder + rng.uniform(0.2, 0.9)
    hem_x = np.linspace(spread, -spread, 16)
    hem = np.stack([hem_x, rng.uniform(1.6, 3.2) + 0.25 * np.sin(
        hem_x * rng.uniform(2, 4) + rng.uniform(0, 6))], axis=1)
    if pose.veil == "veil":  # from the crown, over the hair, down past the shoulders
        top = head.map(_arc((0, -1.95), (1.0 * pose.volume, 1.12 * pose.volume),
                            np.pi, 2 * np.pi, 24))
        right = body.map(_bezier((1.0, -1.0), (spread * 0.85, -0.6), (spread, hem[0, 1]), 8))
        left = body.map(_bezier((-spread, hem[-1, 1]), (-spread * 0.85, -0.6), (-1.0, -1.0), 8))
        polygon = np.concatenate([top, right, body.map(hem), left])
    else:  # a stole over the shoulders, its ends hanging down both sides
        outer = _bezier((0.45, -0.35), (pose.shoulder - 0.3, -0.25), (spread, 0.9), 10)
        right = np.concatenate([outer, [(spread, hem[0, 1]), (spread - 0.8, hem[0, 1]),
                                        (pose.shoulder - 0.9, 1.2)]])
        polygon = body.map(np.concatenate([right, [(0.0, rng.uniform(0.7, 1.3))],
                                           _mirror(right)]))
    folds = _folds(rng, canvas.size, body.angle) * rng.uniform(0.3, 0.7)
    _paint(canvas, colour, polygons=(polygon,), opacity=folds,
           soften=rng.uniform(0.5, 2.0) * size / 512)


def _folds(rng: np.random.Generator, size: int, angle: float) -> np.ndarray:
    """Opacity of draped sheer fabric: 1 +- folds along the hang direction, ``(N, N)``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    across = x * math.cos(angle) + y * math.sin(angle)
    wobble = 0.6 * _smooth_noise(rng, size, 6)
    period = rng.uniform(0.06, 0.14)
    return np.clip(1 + 0.25 * np.sin(2 * np.pi * across / period + wobble), 0.3, 1.6)


def _paint_hair(canvas: _Canvas, style: _Style, head: _Frame, pose: _Pose,
                rng: np.random.Generator, *, back: bool) -> None:
    """Back hair (behind the body) or the cap, each with a fuzzy edge and flyaway strands."""
    centre = np.array([0.0, -1.9])
    if back:
        polygon, outline = _back_hair(rng, pose)
        _paint_hair_texture(style, head, rng, crown=(0.0, -2.6), length=5.0, count=160)
    else:
        polygon, outline = _hair_outline(rng, pose)
        _paint_hair_texture(style, head, rng, crown=(rng.uniform(-0.3, 0.3), -2.85),
                            length=1.6, count=300)
    _paint(canvas, style.hair, polygons=(head.map(polygon),), volume=0.25,
           soften=rng.uniform(0.3, 1.0) * canvas.size / 512)
    perimeter = np.linalg.norm(np.diff(head.map(outline), axis=0), axis=1).sum()
    curly = pose.hair == "curly"
    fuzz = _strands(rng, outline, count=int(perimeter * rng.uniform(1.5, 4.0)), centre=centre,
                    length=0.09 if not curly else 0.11, curl=1.0 if curly else 0.15,
                    gravity=0.3, spring=0.3 if not curly else 0.6)
    flyaway = _strands(rng, outline, count=int(perimeter * rng.uniform(0.1, 0.5)),
                       centre=centre, length=0.3 if not back else 0.45,
                       curl=1.0 if curly else rng.uniform(0.05, 0.25),
                       gravity=0.6 if not back else 1.5, spring=rng.uniform(0.1, 0.45))
    if pose.hair == "buzz":
        fuzz, flyaway = fuzz[: len(fuzz) // 2], flyaway[:0]
    _paint_strands(canvas, style, head, np.concatenate([fuzz, flyaway]), rng)
    if pose.hair == "bun" and not back:
        bun = _arc((rng.uniform(-0.2, 0.2), -2.95 * pose.volume), (0.42, 0.38), 0, 2 * np.pi, 28)
        _paint(canvas, style.hair, polygons=(head.map(bun),), volume=0.3)
        _paint_strands(canvas, style, head, _strands(
            rng, bun, count=int(perimeter * 0.4), centre=np.array([0.0, -2.95]), length=0.1,
            curl=0.3, gravity=0.3, spring=0.4), rng)


def _person_frames(rng: np.random.Generator, size: int, placement: dict) -> tuple[_Frame, _Frame]:
    body = _Frame((placement["x"] * size, placement["y"] * size), placement["unit"] * size,
                  rng.uniform(-0.12, 0.12))
    head = body.child((0.0, -1.0), rng.uniform(-0.25, 0.25))
    # Lower the head a little into the shoulders: a shorter visible neck.
    drop = head.rotation() @ np.array([0.0, 0.15]) * head.unit
    return body, _Frame(tuple(np.asarray(head.origin) + drop), head.unit, head.angle)


def _render_figure(rng: np.random.Generator, size: int, placement: dict,
                   light: np.ndarray) -> _Canvas:
    """One person on a transparent canvas at supersampled resolution ``size``."""
    pose = _draw_pose(rng, placement["framing"])
    style = _make_style(rng, size, light)
    body, head = _person_frames(rng, size, placement)
    canvas = _Canvas(size)
    if pose.hair == "long":
        _paint_hair(canvas, style, head, pose, rng, back=True)
    neck = np.array([(-0.36, -1.3), (0.36, -1.3), (0.45, 0.1), (-0.45, 0.1)])
    _paint(canvas, style.skin, polygons=(body.map(neck),), volume=0.3)
    _paint(canvas, style.clothing, polygons=(body.map(_torso_polygon(pose)),), volume=0.3)
    neckline = (np.array([(-0.5, -0.1), (0.5, -0.1), (0.0, rng.uniform(0.3, 1.2))])
                if rng.random() < 0.5 else _arc((0, -0.1), (0.55, 0.32), 0, np.pi, 16))
    _paint(canvas, style.skin, polygons=(body.map(neckline),))
    if pose.framing == "half":
        _paint(canvas, _clothing_colour(rng) * _light_ramp(size, light, 0.3)[:, :, None],
               polygons=(body.map(_trousers(pose)),), volume=0.3)
        _paint_arms(canvas, style, body, pose, rng)
    _paint_head(canvas, style, head, rng)
    _paint_hair(canvas, style, head, pose, rng, back=False)
    if pose.veil != "none":
        _paint_veil(canvas, rng, head, body, pose, size)
    return canvas


def _trousers(pose: _Pose) -> np.ndarray:
    """Trousers or a skirt from the waist down (half-body framing), body units."""
    waist, hips = pose.shoulder - 0.75, pose.shoulder - 0.45
    left = np.array([(-waist, 4.6), (-hips, 7.5), (-(hips + 0.05), 20.0), (-0.12, 20.0)])
    return np.concatenate([left, [(0.0, 8.8)], _mirror(left)])


def _paint_arms(canvas: _Canvas, style: _Style, body: _Frame, pose: _Pose,
                rng: np.random.Generator) -> None:
    for arm, hand, waving in _arms(rng, pose):
        if not waving:
            _paint_arm(canvas, style, body, arm, hand, rng)
            continue
        moving = _Canvas(canvas.size)  # its own layer, so only the moving arm is blurred
        _paint_arm(moving, style, body, arm, hand, rng)
        _motion_blur(moving, length=rng.uniform(0.02, 0.06) * canvas.size,
                     angle=rng.uniform(-0.5, 0.5))
        canvas.over_premultiplied(moving)


def _placements(rng: np.random.Generator) -> list[dict]:
    """Where the people stand (fractions of the frame), back to front."""
    framing = "portrait" if rng.random() < 0.55 else "half"
    unit = rng.uniform(0.085, 0.13) if framing == "portrait" else rng.uniform(0.05, 0.072)
    x = rng.uniform(0.35, 0.65)
    head_y = rng.uniform(0.22, 0.4) if framing == "portrait" else rng.uniform(0.17, 0.3)
    if rng.random() < 0.18:  # a partial crop: larger, or pushed towards an edge
        unit *= rng.uniform(1.2, 1.6)
        x = rng.choice([rng.uniform(0.12, 0.25), rng.uniform(0.75, 0.88)])
        head_y = rng.uniform(0.15, 0.35)
    main = {"framing": framing, "unit": unit, "x": x, "y": head_y + 1.9 * unit}
    people = [main]
    if rng.random() < 0.14:  # a second person, smaller, beside and behind
        side = -1 if x > 0.5 else 1
        other_unit = unit * rng.uniform(0.65, 0.9)
        other_y = head_y + rng.uniform(-0.05, 0.08) + 1.9 * other_unit
        people.insert(0, {"framing": framing, "unit": other_unit,
                          "x": x + side * rng.uniform(0.3, 0.45), "y": other_y})
    return people


def render_person(rng: np.random.Generator, size: int, *,
                  light: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw one portrait (one or two people) on a transparent ``size`` x ``size`` frame.

    Returns ``(foreground, alpha)``: ``(size, size, 3) float32`` straight (unpremultiplied)
    colour in [0, 255], defined everywhere (colour bled outwards where alpha is 0), and
    ``(size, size) float32`` alpha in [0, 1]. ``light``: the key light direction (unit
    2-vector, image axes), drawn at random when None.
    """
    if light is None:
        angle = rng.uniform(0, 2 * np.pi)
        light = np.array([np.cos(angle), np.sin(angle)], np.float32)
    canvas_size = size * SUPERSAMPLE
    canvas = _Canvas(canvas_size)
    for placement in _placements(rng):
        canvas.over_premultiplied(_render_figure(rng, canvas_size, placement, light))
    if rng.random() < 0.12:  # the whole figure moves (or the camera shakes)
        _motion_blur(canvas, rng.uniform(0.006, 0.02) * canvas_size, rng.uniform(0, np.pi))
    elif rng.random() < 0.15:  # slightly out of focus: soft edges everywhere
        sigma = rng.uniform(0.5, 1.4) * SUPERSAMPLE
        canvas.colour = cv2.GaussianBlur(canvas.colour, (0, 0), sigma)
        canvas.alpha = cv2.GaussianBlur(canvas.alpha, (0, 0), sigma)
    colour = cv2.resize(canvas.colour, (size, size), interpolation=cv2.INTER_AREA)
    alpha = np.clip(cv2.resize(canvas.alpha, (size, size), interpolation=cv2.INTER_AREA), 0, 1)
    alpha[alpha < 1.0 / 512] = 0.0  # below half a code value: nothing there
    return _unpremultiply(colour, alpha), alpha


def _unpremultiply(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight colour; where alpha is (nearly) 0, colour bled from the nearby foreground."""
    weight = alpha[:, :, None]
    straight = colour / np.maximum(weight, 1e-6)
    sigma = max(2.0, alpha.shape[0] / 64)
    bled = cv2.GaussianBlur(colour, (0, 0), sigma) / np.maximum(
        cv2.GaussianBlur(alpha, (0, 0), sigma)[:, :, None], 1e-3)
    fallback = colour.sum(axis=(0, 1)) / max(float(alpha.sum()), 1e-6)
    bled = np.where(cv2.GaussianBlur(alpha, (0, 0), sigma)[:, :, None] > 1e-3, bled, fallback)
    # Mix so strands keep their colour and the background-facing side fades into the bleed.
    trust = np.clip(weight * 8.0, 0.0, 1.0)
    return np.clip(straight * trust + bled * (1 - trust), 0, 255).astype(np.float32)


# ---------------------------------------------------------------------------------------
# backgrounds


def _random_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(c) for c in rng.uniform(0, 255, 3))


def render_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A person-free background for compositing: ``(size, size, 3) uint8``.

    Unrelated to any foreground: gradients, flat shapes, noise textures, stripes, bokeh.
    """
    kind = rng.choice(["shapes", "texture", "stripes", "bokeh"])
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    start, stop = np.float32(_random_colour(rng)), np.float32(_random_colour(rng))
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.clip(0.5 + (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle), 0, 1)
    image = start * (1 - ramp[:, :, None]) + stop * ramp[:, :, None]
    if kind == "texture":
        for cells in (4, 12, 40):
            image += 40 * _smooth_noise(rng, size, cells, 3) * rng.uniform(0.3, 1.0)
    elif kind == "stripes":
        period = rng.uniform(0.03, 0.2)
        phase = (x * np.cos(angle + 1) + y * np.sin(angle + 1)) / period
        image += (np.sin(2 * np.pi * phase)[:, :, None] * rng.uniform(20, 80, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    if kind in ("shapes", "bokeh"):
        _draw_shapes(image, rng, count=int(rng.integers(5, 40)), bokeh=kind == "bokeh")
    return image


def _draw_shapes(image: np.ndarray, rng: np.random.Generator, *, count: int,
                 bokeh: bool) -> None:
    size = image.shape[0]
    for _ in range(count):
        centre = rng.uniform(0, size, 2)
        radius = rng.uniform(0.02, 0.25) * size
        colour = _random_colour(rng)
        if bokeh or rng.random() < 0.4:
            cv2.circle(image, _point(centre), int(radius * 16), colour, -1,
                       cv2.LINE_AA, shift=4)
        else:
            corners = centre + rng.uniform(-radius, radius, (int(rng.integers(3, 7)), 2))
            cv2.fillPoly(image, [_fixed(corners)], colour, cv2.LINE_AA, shift=4)
    if bokeh:
        image[...] = cv2.GaussianBlur(image, (0, 0), size / 60)


def _clutter_colour(rng: np.random.Generator) -> np.ndarray:
    """Natural scenes are full of skin- and hair-coloured things (wood, beige walls, ...)."""
    draw = rng.random()
    if draw < 0.45:
        return _jitter_colour(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))], 0.15)
    if draw < 0.75:
        return _jitter_colour(rng, HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))], 0.2)
    return _clothing_colour(rng)


def render_scene(rng: np.random.Generator, size: int, light: np.ndarray) -> np.ndarray:
    """A person-free natural scene lit from ``light``: ``(size, size, 3) float32`` 0-255.

    A room (wall, floor, windows, furniture) or outdoors (sky, trees, buildings), with
    skin- and hair-coloured clutter and hair-like thin branches or grass.
    """
    y = np.arange(size, dtype=np.float32)[:, None] / size
    horizon = rng.uniform(0.45, 0.9)
    indoor = rng.random() < 0.6
    if indoor:
        wall = _clutter_colour(rng) if rng.random() < 0.5 else _clothing_colour(rng) * 0.4 + 130
        floor = _jitter_colour(rng, HAIR_COLOURS[rng.integers(3, 8)], 0.2)
    else:
        wall = np.float32([rng.uniform(90, 170), rng.uniform(150, 210), rng.uniform(200, 255)])
        floor = np.float32([rng.uniform(60, 120), rng.uniform(90, 150), rng.uniform(40, 90)])
    below = np.broadcast_to((y > horizon)[:, :, None], (size, size, 1))
    image = np.where(below, floor, wall).astype(np.float32)
    # Surface texture is mostly luminance (plaster, foliage), with a trace of colour.
    image *= (1 + 0.08 * _smooth_noise(rng, size, 16)[:, :, None]
              + 0.015 * _smooth_noise(rng, size, 8, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    _draw_scene_objects(image, rng, horizon, indoor)
    if rng.random() < 0.6:
        _draw_branches(image, rng, horizon)
    ramp = _light_ramp(size, light, rng.uniform(0.2, 0.5))[:, :, None]
    return np.clip(image.astype(np.float32) * ramp, 0, 255)


def _draw_scene_objects(image: np.ndarray, rng: np.random.Generator, horizon: float,
                        indoor: bool) -> None:
    size = image.shape[0]
    for _ in range(int(rng.integers(4, 14))):
        colour = tuple(float(c) for c in _clutter_colour(rng))
        width, height = rng.uniform(0.05, 0.4, 2) * size
        left = rng.uniform(-0.1, 1.0) * size
        base = (horizon + rng.uniform(-0.05, 0.25)) * size
        kind = rng.random()
        if kind < 0.5:  # furniture, frames, windows, buildings: boxes with an edge shade
            top = base - height if indoor else base - height * 1.8
            box = np.array([(left, top), (left + width, top), (left + width, base), (left, base)])
            cv2.fillPoly(image, [_fixed(box)], colour, cv2.LINE_AA, shift=4)
            shade = tuple(c * 0.7 for c in colour)
            cv2.polylines(image, [_fixed(box)], True, shade, max(1, size // 128), cv2.LINE_AA,
                          shift=4)
        else:  # lamps, plants, balls, bushes: blobs
            centre = np.array([left, base - height / 2])
            cv2.ellipse(image, _point(centre), (int(width * 8), int(height * 8)),
                        rng.uniform(0, 180), 0, 360, colour, -1, cv2.LINE_AA, shift=4)


def _draw_branches(image: np.ndarray, rng: np.random.Generator, horizon: float) -> None:
    """Thin curved lines in hair colours (branches, grass, fringes): hair-like clutter."""
    size = image.shape[0]
    count = int(rng.integers(30, 200))
    roots = np.stack([rng.uniform(0, size, count),
                      (horizon + rng.uniform(-0.4, 0.1, count)) * size], axis=1)
    base_angle = rng.uniform(-np.pi, 0)
    lines = []
    for root in roots:
        angle = base_angle + rng.normal(0, 0.5)
        length = rng.uniform(0.02, 0.15) * size
        bend = rng.normal(0, 0.3)
        t = np.linspace(0, 1, 6)[:, None]
        direction = np.stack([np.cos(angle + bend * t[:, 0]), np.sin(angle + bend * t[:, 0])], 1)
        lines.append(_fixed(root + direction * length * t))
    colour = tuple(float(c) for c in _clutter_colour(rng))
    cv2.polylines(image, lines, False, colour, 1, cv2.LINE_AA, shift=4)


# ---------------------------------------------------------------------------------------
# the two domains


def sample_id(index: int) -> str:
    """The file stem of sample ``index``: zero-padded, so names sort in order."""
    return f"{index:05d}"


def _person_rng(seed: int, domain: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _DOMAIN_PERSON[domain], index])


def render_scene_plate(rng: np.random.Generator, size: int) -> np.ndarray:
    """A person-free natural scene as a composite background: ``(size, size, 3) uint8``.

    The natural domain's :func:`render_scene` under a random light, defocused as the
    natural domain defocuses its backgrounds (sigma 0-3.5 px at 256 px; 0 keeps it sharp).
    No cast shadow, light spill, colour cast or sensor noise: those belong to the photo, and
    ``photographic_composite`` adds them to the composite.
    """
    angle = rng.uniform(0, 2 * np.pi)
    scene = render_scene(rng, size, np.array([np.cos(angle), np.sin(angle)], np.float32))
    sigma = rng.uniform(0.0, 3.5) * size / 256
    if sigma > 0.1:
        scene = cv2.GaussianBlur(scene, (0, 0), sigma)
    return np.rint(np.clip(scene, 0, 255)).astype(np.uint8)


def _pool(backgrounds: str) -> tuple[Callable[[np.random.Generator, int], np.ndarray], int]:
    """The renderer of pool ``backgrounds`` and the seed stream its backgrounds draw from."""
    pools = {"patterns": (render_background, _DOMAIN_BACKGROUND),
             "scenes": (render_scene_plate, _DOMAIN_SCENE_PLATE)}
    if backgrounds not in pools:
        raise ValueError(f"backgrounds must be one of {', '.join(BACKGROUND_POOLS)}, "
                         f"got {backgrounds!r}")
    return pools[backgrounds]


def render_composite_sample(seed: int, index: int, size: int, *,
                            backgrounds: str = "patterns") -> dict[str, np.ndarray]:
    """Sample ``index`` of the matte corpus: ``{"foreground": (H, W, 3) uint8, "alpha":
    (H, W) float32}``; and ``"background"``, background ``index`` of the pool, uint8.

    ``backgrounds``: the pool (:data:`BACKGROUND_POOLS`). The person does not depend on it.
    """
    render, domain = _pool(backgrounds)
    foreground, alpha = render_person(_person_rng(seed, "composite", index), size)
    background = render(np.random.default_rng([seed, domain, index]), size)
    return {"foreground": np.rint(foreground).astype(np.uint8), "alpha": alpha,
            "background": background}


def _cast_shadow(rng: np.random.Generator, alpha: np.ndarray, light: np.ndarray) -> np.ndarray:
    """The person's soft shadow on the wall behind, thrown away from the light, ``(H, W)``."""
    size = alpha.shape[0]
    shift = -light * rng.uniform(0.02, 0.08) * size
    matrix = np.float32([[1, rng.uniform(-0.2, 0.2), shift[0]], [0, 1, shift[1]]])
    shadow = cv2.warpAffine(alpha, matrix, (size, size))
    shadow = cv2.GaussianBlur(shadow, (0, 0), rng.uniform(0.01, 0.04) * size)
    return shadow * rng.uniform(0.25, 0.6)


def _illuminate(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Scene-wide colour cast and exposure, shared by person and background."""
    warmth = rng.uniform(-1, 1)
    cast = np.float32([1 + 0.12 * warmth, 1.0, 1 - 0.15 * warmth]) * rng.uniform(0.97, 1.03, 3)
    exposure = rng.uniform(0.75, 1.2)
    gamma = rng.uniform(0.85, 1.15)
    return 255.0 * np.clip(image * cast * exposure / 255.0, 0, 1) ** gamma


def _sensor(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Lens softness, vignetting and signal-dependent noise with some chroma noise."""
    size = image.shape[0]
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 0.7) * size / 256)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    image = image * (1 - rng.uniform(0.0, 0.35) * (x**2 + y**2) * 2)[:, :, None]
    shot = rng.uniform(0.1, 0.5)
    read = rng.uniform(1.0, 4.0)
    sigma = np.sqrt(shot * np.clip(image, 0, 255) + read**2)
    luma = rng.standard_normal(image.shape[:2]).astype(np.float32)[:, :, None]
    chroma = rng.standard_normal(image.shape).astype(np.float32)
    return np.clip(image + sigma * (0.75 * luma + 0.45 * chroma), 0, 255)


def render_natural_sample(seed: int, index: int, size: int) -> dict:
    """Sample ``index`` of the natural set: ``{"image": (H, W, 3) uint8 before JPEG,
    "alpha": (H, W) float32, "coarse_mask": (H, W) float32 in {0, 1}, "quality": int}``."""
    rng = _person_rng(seed, "natural", index)
    angle = rng.uniform(0, 2 * np.pi)
    light = np.array([np.cos(angle), np.sin(angle)], np.float32)
    foreground, alpha = render_person(rng, size, light=light)
    background = render_scene(rng, size, light)
    background *= (1 - _cast_shadow(rng, alpha, light))[:, :, None]
    background = cv2.GaussianBlur(background, (0, 0), rng.uniform(0.5, 3.5) * size / 256)
    # Light spill: the scene's colour wraps around the person's edges.
    near_edge = np.clip(1 - cv2.GaussianBlur(alpha, (0, 0), size / 128), 0, 1)[:, :, None]
    ambient = cv2.GaussianBlur(background, (0, 0), size / 32)
    spill = rng.uniform(0.15, 0.45) * near_edge
    foreground = foreground * (1 - spill) + ambient * spill
    weight = alpha[:, :, None]
    image = weight * foreground + (1 - weight) * background
    image = _sensor(rng, _illuminate(rng, image))
    return {"image": np.rint(image).astype(np.uint8), "alpha": alpha,
            "coarse_mask": coarse_mask_from_alpha(alpha, rng=rng),
            "quality": int(rng.integers(60, 91))}


def coarse_mask_from_alpha(alpha: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """A hand-annotation-like mask: ``(H, W) float32`` in {0, 1}.

    Binarised at 0.5 (after a slight blur); hair strands dropped by a morphological opening
    (annotators trace the hair mass, not strands); the outline simplified to polygons of
    0.5-1.5 px tolerance (holes kept, specks dropped); then jittered by a smooth random
    displacement of about 1-3 px.
    """
    size = alpha.shape[0]
    scale = size / 256
    # Annotators see shapes, not texture: fabric folds do not cut a veil into stripes.
    binary = (cv2.GaussianBlur(alpha, (0, 0), 1.5 * scale) > 0.5).astype(np.uint8)
    kernel = max(3, round(rng.uniform(4, 9) * scale) | 1)
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (kernel, kernel)))
    traced = _trace(binary, epsilon=rng.uniform(0.5, 1.5) * scale, min_area=0.002 * size**2)
    amplitude = rng.uniform(1.0, 3.0) * max(scale, 0.5)  # at least ~1 px on small images
    flow = _smooth_noise(rng, size, max(4, size // 24), 2) * amplitude
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    jittered = cv2.remap(traced, x + flow[:, :, 0], y + flow[:, :, 1], cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_REPLICATE)
    return jittered.astype(np.float32)


def _trace(binary: np.ndarray, *, epsilon: float, min_area: float) -> np.ndarray:
    """Redraw a binary mask from simplified polygons: outer outlines, then holes."""
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    traced = np.zeros_like(binary)
    if hierarchy is None:
        return traced
    for is_hole in (False, True):  # nobody outlines specks: small regions are dropped
        chosen = [cv2.approxPolyDP(contour, epsilon, True)
                  for contour, link in zip(contours, hierarchy[0], strict=True)
                  if (link[3] >= 0) == is_hole and cv2.contourArea(contour) >= min_area]
        if chosen:
            cv2.fillPoly(traced, chosen, 0 if is_hole else 1)
    return traced


# ---------------------------------------------------------------------------------------
# writing corpora


@dataclass(frozen=True)
class SynthSummary:
    """What a ``make_*_corpus`` call wrote."""

    out_dir: Path
    domain: str
    count: int
    size: int
    seed: int
    seconds: float
    transition_fraction: float
    """Mean over samples of the fraction of pixels with 0 < alpha < 1."""

    def line(self) -> str:
        rate = self.count / max(self.seconds, 1e-9)
        return (f"{self.domain}: {self.count} samples of {self.size}px in {self.out_dir} "
                f"({self.seconds:.1f} s, {rate:.1f}/s, transition {self.transition_fraction:.3f})")


def _check_arguments(count: int, size: int, seed: int) -> None:
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if size < _MIN_SIZE:
        raise ValueError(f"size must be >= {_MIN_SIZE} px, got {size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


def _manifest(domain: str, count: int, size: int, seed: int,
              backgrounds: str | None = None) -> dict:
    """What ``synth.json`` records; a composite corpus also its background pool."""
    record: dict = {"generator": "mlb.data.synth", "version": GENERATOR_VERSION,
                    "domain": domain, "count": count, "size": size, "seed": seed}
    if backgrounds is not None:
        record["backgrounds"] = backgrounds
    return record


def read_manifest(out_dir: str | Path) -> dict:
    """``out_dir/synth.json`` as written, a composite corpus's pool filled in ("patterns" for
    a manifest written before pools existed). ``ValueError`` if it is not a manifest."""
    manifest = Path(out_dir) / "synth.json"
    try:
        record = json.loads(manifest.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise ValueError(f"{manifest}: not a synth manifest ({error})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{manifest}: not a synth manifest (a JSON "
                         f"{type(record).__name__}, not an object)")
    if record.get("domain") == "composite":
        record.setdefault("backgrounds", "patterns")
    return record


def _write_manifest(out_dir: Path, record: dict) -> None:
    (out_dir / "synth.json").write_text(json.dumps(record, indent=2) + "\n")


def _check_target(out_dir: Path, record: dict, folders: tuple[str, ...]) -> None:
    """Refuse a folder that holds another corpus: writing over it would leave a mix (the
    old pool's backgrounds, or samples beyond the new count). The same corpus again is
    fine: it is rewritten byte for byte."""
    manifest = out_dir / "synth.json"
    if manifest.is_file():
        try:
            found: dict | None = read_manifest(out_dir)
        except ValueError:
            found = None
        if found != record:
            raise ValueError(f"{out_dir} holds another corpus ({manifest}: {found}); give an "
                             "empty folder, or remove this one first")
    wanted = {sample_id(index) for index in range(record["count"])}
    for folder in folders:
        if not (out_dir / folder).is_dir():
            continue
        extra = sorted(path.name for path in (out_dir / folder).iterdir()
                       if path.stem not in wanted)
        if extra:
            raise ValueError(f"{out_dir / folder} holds {len(extra)} file(s) that are not "
                             f"samples 0-{record['count'] - 1} of this corpus (first: "
                             f"{extra[0]}); give an empty folder, or remove this one first")


def make_composite_corpus(out_dir: str | Path, *, count: int, size: int = 256, seed: int = 0,
                          progress: bool | None = None, with_images: bool = False,
                          backgrounds: str = "patterns") -> SynthSummary:
    """Write the matte corpus: ``out_dir/fg/``, ``alpha/``, ``bg/`` PNGs matched by stem.

    ``bg/`` holds ``count`` person-free backgrounds (the pool). ``progress``: a tqdm bar
    (None: only on a terminal). Read it back with ``find_matte_samples(out/"fg", out/"alpha",
    out/"bg")``. ``with_images`` also writes ``images/``: each foreground composited onto its
    own background, so ``images/`` + ``alpha/`` is a composite-domain validation set (the
    domain-gap measurement scores a model on it and on natural images). ``backgrounds``:
    the pool (:data:`BACKGROUND_POOLS`), recorded in ``synth.json``.
    """
    _check_arguments(count, size, seed)
    _pool(backgrounds)  # a bad pool is an error before the folder is looked at
    out_dir = Path(out_dir)
    record = _manifest("composite", count, size, seed, backgrounds)
    _check_target(out_dir, record, ("fg", "alpha", "bg", "images"))
    started = time.perf_counter()
    transitions = []
    for index in tqdm(range(count), desc="synth composite", disable=_quiet(progress)):
        sample = render_composite_sample(seed, index, size, backgrounds=backgrounds)
        stem = sample_id(index)
        write_png(out_dir / "fg" / f"{stem}.png", sample["foreground"])
        write_png(out_dir / "alpha" / f"{stem}.png", sample["alpha"])
        write_png(out_dir / "bg" / f"{stem}.png", sample["background"])
        if with_images:
            image = composite(sample["foreground"], sample["alpha"], sample["background"])
            write_png(out_dir / "images" / f"{stem}.png", image)
        transitions.append(_transition_fraction(sample["alpha"]))
    _write_manifest(out_dir, record)
    return SynthSummary(out_dir, "composite", count, size, seed,
                        time.perf_counter() - started, float(np.mean(transitions)))


def make_natural_corpus(out_dir: str | Path, *, count: int, size: int = 256, seed: int = 0,
                        progress: bool | None = None) -> SynthSummary:
    """Write the natural set: ``out_dir/images/`` JPEG, ``masks/`` coarse binary PNG,
    ``alphas/`` true alpha PNG (for validation only), matched by stem."""
    _check_arguments(count, size, seed)
    out_dir = Path(out_dir)
    record = _manifest("natural", count, size, seed)
    _check_target(out_dir, record, ("images", "masks", "alphas"))
    started = time.perf_counter()
    transitions = []
    for index in tqdm(range(count), desc="synth natural", disable=_quiet(progress)):
        sample = render_natural_sample(seed, index, size)
        stem = sample_id(index)
        write_jpeg(out_dir / "images" / f"{stem}.jpg", sample["image"], quality=sample["quality"])
        write_png(out_dir / "masks" / f"{stem}.png", sample["coarse_mask"])
        write_png(out_dir / "alphas" / f"{stem}.png", sample["alpha"])
        transitions.append(_transition_fraction(sample["alpha"]))
    _write_manifest(out_dir, record)
    return SynthSummary(out_dir, "natural", count, size, seed,
                        time.perf_counter() - started, float(np.mean(transitions)))


def _transition_fraction(alpha: np.ndarray) -> float:
    coded = np.rint(alpha * 255)
    return float(np.mean((coded > 0) & (coded < 255)))


def _quiet(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None lets tqdm hide the bar when not writing to a terminal."""
    return None if progress is None else not progress
