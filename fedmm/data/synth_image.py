"""Vectorised drawing of synthetic chest radiographs (numpy only).

Everything is drawn in normalised body coordinates (``[-1, 1]`` across the
image), so any image size works; a batch of images is one set of ``[B, S, S]``
array operations. Per-sample parameters come in as arrays of length ``B``
(see :func:`draw_batch`); all randomness comes from the caller's Generator.

Class evidence (each salient at 64x64, several pixels wide):
focal opacity (pneumonia *and* atelectasis - deliberately identical), enlarged
heart shadow (cardiomegaly), fluid at a lung base blunting the costophrenic
angle (effusion), a peripheral band without lung markings behind a pleural line
(pneumothorax), a small round dense nodule (nodule). Nuisance: patient
rotation/scale/shift, body habitus, rib and vessel texture, ECG electrodes with
wires, tubes, side markers, exposure (gamma, window), blur and noise.
"""
from __future__ import annotations

import numpy as np

F = np.float32


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Linear interpolation matrix [n_out, n_in] (upsamples a coarse noise grid)."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * n_in / n_out - 0.5
    lo = np.clip(np.floor(pos).astype(int), 0, n_in - 1)
    hi = np.clip(lo + 1, 0, n_in - 1)
    frac = np.clip(pos - lo, 0.0, 1.0)
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m.astype(F)


def smooth_noise(rng: np.random.Generator, batch: int, size: int, grid: int) -> np.ndarray:
    """Zero-mean, unit-ish smooth random fields [B, S, S] from a coarse ``grid`` x ``grid`` noise."""
    m = _interp_matrix(size, grid)
    coarse = rng.standard_normal((batch, grid, grid), dtype=F)
    return m @ coarse @ m.T


def _ramp(x: np.ndarray, width: float) -> np.ndarray:
    """Soft step: 0 below -width/2, 1 above +width/2 (anti-aliased edges)."""
    t = x * F(1.0 / width)
    t += F(0.5)
    return np.clip(t, F(0.0), F(1.0), out=t)


def _col(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=F)[:, None, None]


def _segment_dist(u, v, x0, y0, x1, y1):
    """Distance from every pixel to the segment (x0,y0)-(x1,y1); params [B,1,1]."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((u - x0) * dx + (v - y0) * dy) / (dx * dx + dy * dy + 1e-6), 0, 1)
    return np.hypot(u - (x0 + t * dx), v - (y0 + t * dy))


def _lung_geometry(u, v, side, P):
    """Lung mask parts for one side (+1 = image right). Returns (mask, p, q, e)."""
    cx, cy, a, b = P["lung_cx"] * side, P["lung_cy"], P["lung_a"], P["lung_b"]
    p = (u - cx) * side          # lateral is positive
    q = v - cy                   # down is positive
    e = (p / a) ** 2 + (q / b) ** 2
    diaphragm = 0.28 * b / 0.78 + 0.30 * np.clip((p / a + 0.3) / 1.3, 0, 1) ** 2
    w = P["px"] * 2
    mask = _ramp(1 - e, w * 4) * _ramp(diaphragm - q, w)
    return mask, p, q, e


def _subset(on: np.ndarray) -> np.ndarray:
    """Indices of the samples where a sparse feature is present."""
    return np.nonzero(on.reshape(-1) > 0)[0]


def _glyph_l(size: int) -> np.ndarray:
    """A small 'L' side-marker glyph (bright on transparent), about 8% of the image."""
    h = max(4, round(size * 0.08))
    w = max(3, round(h * 0.7))
    t = max(1, round(h / 4))
    g = np.zeros((h, w), dtype=F)
    g[:, :t] = 1.0
    g[-t:, :] = 1.0
    return g


def draw_batch(rng: np.random.Generator, P: dict, size: int) -> np.ndarray:
    """Draw a batch of radiographs as uint8 [B, S, S] from per-sample parameters ``P``.

    ``P`` maps names to arrays of length B (see ``fedmm.data.synth._sample_params``).
    Sparse findings and devices are drawn only on the samples that have them.
    """
    B = len(P["theta"])
    P = {k: _col(v) for k, v in P.items()}
    P["px"] = F(2.0 / size)
    px = P["px"]
    g = (np.arange(size, dtype=F) + 0.5) * 2 / size - 1
    x, y = g[None, None, :], g[None, :, None]
    # body coordinates: undo patient shift, rotation and scale
    xs, ys = x - P["shift_x"], y - P["shift_y"]
    ct, st = np.cos(P["theta"]), np.sin(P["theta"])
    u = (ct * xs + st * ys) / P["scale"]                             # [B,S,S]
    v = (-st * xs + ct * ys) / P["scale"]

    body = _ramp(1 - (np.abs(u) / P["body_w"]) ** 4 - (np.abs(v - 0.05) / 1.12) ** 4, 0.08)
    dens = 0.04 + (P["tissue"] - 0.04) * body

    lungs = np.zeros_like(u)
    fluid = np.zeros_like(u)
    ptx = np.zeros_like(u)
    line = np.zeros_like(u)
    for side in (-1.0, 1.0):
        mask, p, q, e = _lung_geometry(u, v, side, P)
        lungs += mask
        is_side = P["find_side"] == side
        # effusion: fluid up from the base, higher laterally (meniscus)
        i = _subset(P["eff_on"] * (is_side | (P["eff_bilat"] > 0)))
        if i.size:
            surface = (0.58 * P["lung_b"][i] / 0.78 - P["eff_h"][i]
                       - P["eff_men"][i] * np.clip(p[i] / P["lung_a"][i], 0, 1))
            fluid[i] += _ramp(q[i] - surface, px * 2) * mask[i]
        # pneumothorax: peripheral upper shell beyond r0, bounded by a pleural line
        i = _subset(P["ptx_on"] * is_side)
        if i.size:
            upper = _ramp(0.25 - q[i], 0.15) * mask[i]
            d = e[i] - P["ptx_r0"][i]
            ptx[i] += _ramp(d, px * 3) * upper
            line[i] += np.exp(-((d / (px * 2.5)) ** 2)) * upper
    np.minimum(lungs, 1.0, out=lungs)
    air = lungs * (1 - fluid)
    dens -= air * (P["tissue"] - P["lung_d"])

    # lung markings: vessel texture, strongest near the hila, absent in a pneumothorax
    hil = np.exp(-np.hypot(np.abs(u) - 0.22, v + 0.02) / 0.35)
    texture = smooth_noise(rng, B, size, 22) * 0.7 + smooth_noise(rng, B, size, 10) * 0.5
    dens += P["mark_amp"] * texture * (0.35 + hil) * air * (1 - ptx)
    dens += P["ptx_line"] * np.minimum(line, 1.0) - 0.07 * ptx

    # ribs (posterior, curved) and clavicles, visible over the chest
    au = np.abs(u)
    rv = v + 0.35 * (au - 0.45) ** 2 - 0.12 * au
    rib = 0.5 + 0.5 * np.cos((2 * np.pi) * (rv / P["rib_sp"] + P["rib_ph"]))
    rib = rib * rib
    rib = rib * rib * rib
    dens += P["rib_amp"] * rib * body * _ramp(0.45 - v, 0.2) * (0.4 + 0.6 * lungs)
    clav_v = -0.70 - 0.14 * (au - 0.1) / 0.68
    dens += 0.12 * _ramp(0.045 - np.abs(v - clav_v), px * 2) * _ramp(au - 0.1, 0.05) * _ramp(0.78 - au, 0.05)

    # focal opacities (same look for infection and volume loss), confined to the lungs
    for k in ("op1", "op2"):
        i = _subset(P[k + "_c"])
        if i.size:
            r2 = (((u[i] - P[k + "_x"][i]) / P[k + "_rx"][i]) ** 2
                  + ((v[i] - P[k + "_y"][i]) / P[k + "_ry"][i]) ** 2)
            core = np.clip(1 - r2, 0, 1)
            irregular = 0.7 + 0.35 * smooth_noise(rng, i.size, size, 9)
            dens[i] += core * np.sqrt(core) * irregular * P[k + "_c"][i] * lungs[i] * (1 - 0.5 * fluid[i])
    # nodule: small round dense focus with a crisp edge
    i = _subset(P["nod_c"])
    if i.size:
        r = np.hypot(u[i] - P["nod_x"][i], v[i] - P["nod_y"][i])
        dens[i] += P["nod_c"][i] * _ramp(P["nod_r"][i] - r, px * 1.2) * lungs[i]

    # heart and mediastinum sit in front of the lungs
    eh = ((u - P["heart_x"]) / P["heart_w"]) ** 2 + ((v - P["heart_y"]) / P["heart_h"]) ** 2
    heart = _ramp(1 - eh, 0.12)
    med = _ramp(0.13 - np.abs(u - 0.02), px * 2) * _ramp(v + 0.95, 0.1) * _ramp(0.5 - v, 0.1)
    solid = np.maximum(heart, med)
    dens = dens * (1 - solid) + P["heart_d"] * solid
    np.clip(dens, 0, 1, out=dens)

    # devices: ECG electrodes with wires, tube (bright, sharp), drawn in image coordinates
    for k in range(4):
        i = _subset(P[f"ecg{k}_on"])
        if i.size:
            ex, ey = P[f"ecg{k}_x"][i], P[f"ecg{k}_y"][i]
            disc = _ramp(0.055 - np.hypot(x - ex, y - ey), px)
            wire = _ramp(px * 0.9 - _segment_dist(x, y, ex, ey, P[f"ecg{k}_wx"][i], F(-1.05)), px * 0.8)
            dens[i] = np.maximum(dens[i], 0.98 * np.maximum(disc, 0.8 * wire))
    i = _subset(P["tube_on"])
    if i.size:
        tube = _segment_dist(x, y, P["tube_x0"][i], F(-1.05), P["tube_x1"][i], P["tube_y1"][i])
        dens[i] = np.maximum(dens[i], 0.83 * _ramp(px * 0.9 - tube, px * 0.8))
    # side marker glyph pasted near a corner
    glyph = _glyph_l(size)
    gh, gw = glyph.shape
    rows = np.clip(((P["mark_y"].reshape(-1) + 1) / 2 * size).astype(int), 0, size - gh)
    cols = np.clip(((P["mark_x"].reshape(-1) + 1) / 2 * size).astype(int), 0, size - gw)
    for b in range(B):
        patch = dens[b, rows[b]:rows[b] + gh, cols[b]:cols[b] + gw]
        np.maximum(patch, 0.98 * glyph, out=patch)

    # acquisition: exposure curve, window, blur, noise
    img = np.exp(P["gamma"] * np.log(np.maximum(dens, 1e-4)))
    img = P["lo"] + (P["hi"] - P["lo"]) * img
    i = _subset(P["blur"])
    if i.size:
        sub = img[i]
        bl = 0.25 * np.roll(sub, 1, -1) + 0.5 * sub + 0.25 * np.roll(sub, -1, -1)
        bl = 0.25 * np.roll(bl, 1, -2) + 0.5 * bl + 0.25 * np.roll(bl, -1, -2)
        img[i] = P["blur"][i] * bl + (1 - P["blur"][i]) * sub
    img += P["noise"] * rng.standard_normal(img.shape, dtype=F)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
