"""Helpers shared by the robustness, crash-safety and untrusted-file tests."""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from psinspect.capture import lights_from_slant_tilt, write_capture
from psinspect.cli import main


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``psinspect ARGS`` in this process -> (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["psinspect", *[str(a) for a in args]])
    with pytest.raises(SystemExit) as exc:
        main()
    out, err = capsys.readouterr()
    code = exc.value.code
    return (0 if code is None else int(code)), out, err


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error")]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) -> its bytes."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def sphere_normals(size: int, radius: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
    """A hemisphere's normal map ``float32 (size, size, 3)`` (DiLiGenT frame) and its mask."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size]
    x, y = (xx - c) / (size * radius), -(yy - c) / (size * radius)
    mask = x**2 + y**2 < 0.9
    z = np.sqrt(np.clip(1 - x**2 - y**2, 0, None))
    n = np.where(mask[..., None], np.stack([x, y, z], -1), 0).astype(np.float32)
    n /= np.maximum(np.linalg.norm(n, axis=2, keepdims=True), 1e-12)
    return n.astype(np.float32), mask


def good_sphere_maps(folder: Path, size: int) -> list[Path]:
    """Three defect-free hemisphere maps of radii 0.45, 0.4 and 0.35 (``good0..2.npy`` in
    ``folder``): the smallest training set."""
    from psinspect.fileio import save_npy

    paths = []
    for i, r in enumerate((0.45, 0.4, 0.35)):
        paths.append(save_npy(folder / f"good{i}.npy", sphere_normals(size, r)[0]))
    return paths


def small_scene(k: int = 6, h: int = 12, w: int = 10, seed: int = 3):
    """A lit random surface: float images (K, H, W) in [0, 1], exactly 0 off the object,
    its lights (K, 3) and mask (H, W)."""
    rng = np.random.default_rng(seed)
    lights = lights_from_slant_tilt(rng.uniform(10, 50, k), rng.uniform(0, 360, k))
    mask = np.zeros((h, w), bool)
    mask[2:-2, 2:-2] = True
    # a lit surface (random normals within 40 deg of the view, random albedo): images of
    # noise alone are refused as "no shading"
    n = np.concatenate([rng.uniform(-0.6, 0.6, (h, w, 2)), np.ones((h, w, 1))], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    shade = np.clip(np.einsum("hwc,kc->khw", n, lights), 0.05, 1.0)
    imgs = np.where(mask, shade * rng.uniform(0.3, 0.9, (h, w)), 0).astype(np.float32)
    return imgs, lights, mask


def tiny_capture(folder: Path, k: int = 6, size: int = 16, seed: int = 3,
                 with_gt: bool = False) -> Path:
    """A Lambertian hemisphere under ``k`` lights, DiLiGenT layout, 16-bit grey PNGs."""
    rng = np.random.default_rng(seed)
    lights = lights_from_slant_tilt(rng.uniform(15, 45, k),
                                    np.linspace(0, 360, k, endpoint=False))
    n, mask = sphere_normals(size)
    imgs = np.maximum(np.einsum("hwc,kc->khw", n, lights), 0) * 0.8
    return write_capture(folder, imgs, lights, mask, normals_gt=n if with_gt else None)


def png_header_only(width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    """A PNG whose header claims ``width x height`` but that holds almost no pixel data
    (what a decompression-bomb upload or a cut-off transfer looks like)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def sparse_npy(path: Path, shape: tuple[int, ...], dtype: str = "<f4") -> Path:
    """A full-length ``.npy`` of zeros as a sparse file: instant to make, no disk used."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": dtype, "fortran_order": False, "shape": shape})
        offset = fh.tell()
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    with open(path, "r+b") as fh:
        fh.truncate(offset + nbytes)
    return path
