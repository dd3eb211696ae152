"""The per-pixel-plane NCC kernel (recon.kernels.plane_ncc): the C++ kernel agrees with the PyTorch reference,
a window warped through its true plane scores ~1, and windows that face away or leave the source score -1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.kernels import plane_ncc as pn


def _scene(seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, torch.Tensor, np.ndarray]:
    """A smooth random reference image and two sources related to it by known homographies of the plane z = 2
    (fronto-parallel in the reference; sources shifted sideways by 0.1 and 0.2 and rotated slightly)."""
    rng = np.random.default_rng(seed)
    h, w = 40, 56
    K = np.array([[50.0, 0, w / 2], [0, 50.0, h / 2], [0, 0, 1]])
    yy, xx = np.mgrid[:h, :w] + 0.5
    waves = [(*rng.uniform(2, 8, 2), rng.uniform(0, 6)) for _ in range(8)]

    def texture(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        out = np.zeros_like(u)
        for fu, fv, phase in waves:
            out += np.sin(fu * u + fv * v + phase)
        return (0.5 + 0.1 * out).astype(np.float32)

    def render(R: np.ndarray, t: np.ndarray) -> np.ndarray:
        # the image of a camera at (R, t) from the reference: each pixel's ray meets the plane z = 2 (reference
        # frame) at the point whose texture it shows
        Kinv = np.linalg.inv(K)
        q = np.stack([xx, yy, np.ones_like(xx)], -1) @ Kinv.T  # source rays
        # solve for the ray hitting z = 2 in the reference frame: X = R^T (s ray - t)
        d = q @ R  # R^T ray as rows
        o = -t @ R
        s = (2.0 - o[2]) / d[..., 2]
        X = o + d * s[..., None]
        return texture(X[..., 0], X[..., 1])

    ref = render(np.eye(3), np.zeros(3))
    A, b, srcs = [], [], []
    for dx, ang in ((0.1, 0.02), (-0.2, -0.03)):
        c, s_ = np.cos(ang), np.sin(ang)
        R = np.array([[c, 0, s_], [0, 1, 0], [-s_, 0, c]])
        t = np.array([dx, 0.02, 0.0])
        srcs.append(torch.from_numpy(render(R, t)))
        A.append(K @ R @ np.linalg.inv(K))
        b.append(K @ t)
    g_true = np.linalg.inv(K).T @ np.array([0.0, 0.0, 1.0]) / 2.0
    return torch.from_numpy(ref), srcs, torch.from_numpy(np.stack(A)), torch.from_numpy(np.stack(b)), g_true


def test_true_plane_scores_near_one_and_the_kernel_matches_the_reference() -> None:
    ref, srcs, A, b, g_true = _scene()
    rng = np.random.default_rng(3)
    n = 200
    pixels = torch.from_numpy(np.stack([rng.integers(6, 50, n), rng.integers(6, 34, n)], axis=1))
    g = torch.from_numpy(np.tile(g_true, (n, 1)))
    g[n // 2 :] *= torch.from_numpy(rng.uniform(0.7, 1.3, (n - n // 2, 1)))  # half at wrong depths
    g[-5:] *= -1  # facing away: -1
    ref_out = pn.plane_ncc_reference(ref, srcs, A, b, pixels, g, 9, 1)
    assert ref_out[: n // 2].min() > 0.97  # the true plane
    assert ref_out[n // 2 : -5].median() < ref_out[: n // 2].median()
    assert (ref_out[-5:] == -1).all()
    if pn.extension() is None:
        pytest.skip("no C++ compiler: the reference is the implementation")
    out = pn.plane_ncc(ref, srcs, A, b, pixels, g, 9, 1)
    assert torch.allclose(out, ref_out, atol=2e-4)
    strided = pn.plane_ncc(ref, srcs, A, b, pixels, g, 9, 2)
    assert torch.allclose(strided, pn.plane_ncc_reference(ref, srcs, A, b, pixels, g, 9, 2), atol=2e-4)


def test_a_window_leaving_every_source_scores_minus_one() -> None:
    ref, srcs, A, b, g_true = _scene()
    pixels = torch.tensor([[0, 0], [55, 39], [28, 20]])
    g = torch.from_numpy(np.tile(g_true, (3, 1)))
    b_far = b.clone()
    b_far[:, 0] += 5000.0  # every source shifted far to the side: nothing lands inside
    for impl in (pn.plane_ncc_reference, pn.plane_ncc):
        assert (impl(ref, srcs, A, b_far, pixels, g, 9, 1) == -1).all()
