"""Independent float64 numpy references (no torch, no kernelmmd code): kernels and MMD² estimators.

Written straight from SPEC §1–4 with explicit loops or broadcasting over pairs, so that a shared bug with the
library is unlikely. Used by every estimator test.
"""

from __future__ import annotations

import numpy as np


def sqd(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # difference-based: exact


def kmat(name, a, b, block="xy", **p):
    """Dense kernel matrix for the named kernel."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = sqd(a, b)
    if name == "rbf":
        return np.exp(-t / (2 * p.get("sigma", 1.0) ** 2))
    if name == "mix_rbf":
        return sum(np.exp(-t / (2 * s**2)) for s in p["sigmas"])
    if name == "rq":
        al = p.get("alpha", 1.0)
        return (1 + t / (2 * al)) ** (-al)
    if name == "mix_rq":
        return sum((1 + t / (2 * al)) ** (-al) for al in p["alphas"])
    if name == "laplacian":
        return np.exp(-np.sqrt(t) / p.get("sigma", 1.0))
    if name == "energy":
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        return na[:, None] + nb[None, :] - np.sqrt(t)
    if name == "rbf_bounded":
        lo, hi = p.get("lower", 0.25), p.get("upper", 4.0)
        mode = {"xx": "lower", "yy": "lower", "xy": "upper"}[block]
        t = np.maximum(t, lo) if mode == "lower" else np.minimum(t, hi)
        return np.exp(-t / (2 * p.get("sigma", 1.0) ** 2))
    u = a @ b.T
    if name == "linear":
        return u
    if name == "poly":
        g = p.get("gamma") or 1.0 / a.shape[1]
        return (g * u + p.get("coef0", 1.0)) ** p.get("degree", 3)
    raise KeyError(name)


def mmd2_unbiased(x, y, name, **p):
    n, m = len(x), len(y)
    kxx, kyy, kxy = kmat(name, x, x, "xx", **p), kmat(name, y, y, "yy", **p), kmat(name, x, y, "xy", **p)
    sxx = sum(kxx[i, j] for i in range(n) for j in range(n) if i != j)
    syy = sum(kyy[i, j] for i in range(m) for j in range(m) if i != j)
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * kxy.sum() / (n * m)


def mmd2_biased(x, y, name, **p):
    kxx, kyy, kxy = kmat(name, x, x, "xx", **p), kmat(name, y, y, "yy", **p), kmat(name, x, y, "xy", **p)
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


def mmd2_linear(x, y, name, **p):
    half = len(x) // 2
    hs = []
    for i in range(half):
        x1, x2, y1, y2 = x[2 * i : 2 * i + 1], x[2 * i + 1 : 2 * i + 2], y[2 * i : 2 * i + 1], y[2 * i + 1 : 2 * i + 2]
        hs.append(
            kmat(name, x1, x2, "xx", **p)[0, 0]
            + kmat(name, y1, y2, "yy", **p)[0, 0]
            - kmat(name, x1, y2, "xy", **p)[0, 0]
            - kmat(name, x2, y1, "xy", **p)[0, 0]
        )
    return float(np.mean(hs))


def variance_h1(x, y, name, **p):
    """Sutherland et al. 2017 H1 variance estimator, transcribed from SPEC §3 with explicit matrices."""
    m = len(x)
    kxx, kyy, kxy = kmat(name, x, x, "xx", **p), kmat(name, y, y, "yy", **p), kmat(name, x, y, "xy", **p)
    np.fill_diagonal(kxx, 0.0)
    np.fill_diagonal(kyy, 0.0)
    rxx, ryy, rxy, cxy = kxx.sum(1), kyy.sum(1), kxy.sum(1), kxy.sum(0)
    sxx, syy, sxy = kxx.sum(), kyy.sum(), kxy.sum()
    qxx, qyy, qxy = (kxx**2).sum(), (kyy**2).sum(), (kxy**2).sum()
    return (
        2 / (m**2 * (m - 1) ** 2) * (2 * rxx @ rxx - qxx + 2 * ryy @ ryy - qyy)
        - (4 * m - 6) / (m**3 * (m - 1) ** 3) * (sxx**2 + syy**2)
        + 4 * (m - 2) / (m**3 * (m - 1) ** 2) * (rxy @ rxy + cxy @ cxy)
        - 4 * (m - 3) / (m**3 * (m - 1) ** 2) * qxy
        - (8 * m - 12) / (m**5 * (m - 1)) * sxy**2
        + 8 / (m**3 * (m - 1)) * ((sxx + syy) * sxy / m - rxx @ rxy - ryy @ cxy)
    )


def witness(x, y, t, name, **p):
    return kmat(name, x, t, **p).mean(0) - kmat(name, y, t, **p).mean(0)


def witness_grad(x, y, t, name, eps=1e-6, **p):
    """Central finite differences of the numpy witness (independent of any analytic derivative)."""
    t = np.asarray(t, np.float64)
    g = np.zeros_like(t)
    for k in range(t.shape[1]):
        e = np.zeros(t.shape[1])
        e[k] = eps
        g[:, k] = (witness(x, y, t + e, name, **p) - witness(x, y, t - e, name, **p)) / (2 * eps)
    return g


def gaussian_mmd2_rbf(sigma, d, s1, s2, mu1, mu2):
    """Population MMD² under rbf(σ) between N(µ1, s1² I) and N(µ2, s2² I) in R^d (closed form)."""
    exx = (sigma**2 / (sigma**2 + 2 * s1**2)) ** (d / 2)
    eyy = (sigma**2 / (sigma**2 + 2 * s2**2)) ** (d / 2)
    v = sigma**2 + s1**2 + s2**2
    exy = (sigma**2 / v) ** (d / 2) * np.exp(-np.sum((np.asarray(mu1) - np.asarray(mu2)) ** 2) / (2 * v))
    return exx + eyy - 2 * exy
