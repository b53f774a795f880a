"""The independent GCMMD reference of tests/test_gcmmd.py and tests/test_scaled.py: A = [[K, Gᵀ], [G, H]] and
v = [η̂(Z); ∇η̂(Z)] by automatic differentiation (torch.func) of kernel *functions* k(a, b) written here from SPEC §1
(no kernelmmd code), solved with torch.linalg.solve. See docs/ARCHITECTURE.md, "Tests".
"""

import torch
from torch.func import jacrev, vmap

import kernelmmd as km

DT = torch.float64


def kfun(name, **p):
    """k(a, b) for two single points (1-D tensors), straight from SPEC §1."""
    if name == "rbf":
        return lambda a, b: torch.exp(-((a - b) ** 2).sum() / (2 * p["sigma"] ** 2))
    if name == "mix_rbf":
        return lambda a, b: sum(torch.exp(-((a - b) ** 2).sum() / (2 * s**2)) for s in p["sigmas"])
    if name == "rq":
        return lambda a, b: (1 + ((a - b) ** 2).sum() / (2 * p["alpha"])) ** (-p["alpha"])
    if name == "mix_rq":
        return lambda a, b: sum((1 + ((a - b) ** 2).sum() / (2 * al)) ** (-al) for al in p["alphas"])
    if name == "linear":
        return lambda a, b: (a * b).sum()
    if name == "poly":
        return lambda a, b: (p["gamma"] * (a * b).sum() + p["coef0"]) ** p["degree"]
    raise KeyError(name)


def deep_kfun(phi, top):
    return lambda a, b: top(phi(a[None])[0].reshape(-1), phi(b[None])[0].reshape(-1))


def ref_blocks(k, z):
    """(A (N, N), per-point helpers) by autograd: K[l,l'] = k, G[(l,i),l'] = ∂_{a_i} k, H = ∂_{a_i}∂_{b_j} k."""
    M = z.shape[0]
    zf = z.reshape(M, -1)
    d = zf.shape[1]
    shape = z.shape[1:]
    kk = lambda a, b: k(a.reshape(shape), b.reshape(shape))  # noqa: E731
    ka = jacrev(kk, argnums=0)
    kab = jacrev(ka, argnums=1)
    Z1 = zf[:, None, :].expand(M, M, d).reshape(-1, d)
    Z2 = zf[None, :, :].expand(M, M, d).reshape(-1, d)
    K = vmap(kk)(Z1, Z2).reshape(M, M)
    G = vmap(ka)(Z1, Z2).reshape(M, M, d).permute(0, 2, 1).reshape(M * d, M)
    H = vmap(kab)(Z1, Z2).reshape(M, M, d, d).permute(0, 2, 1, 3).reshape(M * d, M * d)
    return torch.cat([torch.cat([K, G.T], 1), torch.cat([G, H], 1)])


def ref_gcmmd2(k, x, y, z, lam):
    """(GCMMD², MMD²_b, P̄) by the dense formula, differentiable by plain autograd."""
    M = z.shape[0]
    shape = z.shape[1:]
    xf, yf, zf = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1), z.reshape(M, -1)
    kk = lambda a, b: k(a.reshape(shape), b.reshape(shape))  # noqa: E731
    A = ref_blocks(k, z)

    def eta(t):
        return vmap(lambda a: kk(a, t))(xf).mean() - vmap(lambda b: kk(b, t))(yf).mean()

    v = torch.cat([vmap(eta)(zf), vmap(jacrev(eta))(zf).reshape(-1)])
    gram = lambda P, Q: vmap(lambda a: vmap(lambda b: kk(a, b))(Q))(P)  # noqa: E731
    mmd2b = gram(xf, xf).mean() + gram(yf, yf).mean() - 2 * gram(xf, yf).mean()
    pbar = v @ torch.linalg.solve(A + M * lam * torch.eye(A.shape[0], dtype=A.dtype), v)
    return (mmd2b - pbar) / lam, mmd2b, pbar


def gcmmd_data(n=5, m=4, M=6, d=3, seed=0, shift=0.4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DT)
    y = torch.randn(m, d, generator=g, dtype=DT) * 1.2 + shift
    z = torch.randn(M, d, generator=g, dtype=DT) * 0.9
    return x, y, z


def mlp(d, s, seed=0, width=16):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, width), torch.nn.Tanh(), torch.nn.Linear(width, s)).double()


# deep kernels: name -> (kernelmmd top kernel, the same kernel as a function)
TOPS = {
    "rbf": (km.RBF(0.8), lambda a, b: torch.exp(-((a - b) ** 2).sum() / (2 * 0.64))),
    "rq": (km.RQ(1.5), lambda a, b: (1 + ((a - b) ** 2).sum() / 3.0) ** (-1.5)),
    "linear": (km.Linear(), lambda a, b: (a * b).sum()),
    "poly": (km.Poly(2, 0.5, 1.0), lambda a, b: (0.5 * (a * b).sum() + 1.0) ** 2),
}
