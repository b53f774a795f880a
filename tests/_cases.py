"""The kernel cases every test parametrizes over: one table of kernel kinds with non-default parameters, in the two
forms the tests use (``kernel=name, **params`` of the public API, and a kernel object, optionally with float64 leaf
tensor parameters). See docs/ARCHITECTURE.md, "Tests".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

import kernelmmd as km


@dataclass(frozen=True)
class KernelCase:
    """A kernel kind with its parameters. ``id`` names the case (the kind's name unless it is a variant)."""

    name: str
    params: dict = field(default_factory=dict)
    id: str = ""

    def __post_init__(self):
        if not self.id:
            object.__setattr__(self, "id", self.name)

    def kernel(self, tensor_params: bool = False) -> km.Kernel:
        """The kernel object; ``tensor_params``: its σ, α, γ, c parameters as float64 leaf tensors (requires grad)."""

        def p(v):
            return torch.tensor(v, dtype=torch.float64, requires_grad=True) if isinstance(v, float) else v

        params = dict(self.params)
        for k in _DIFFERENTIABLE.intersection(params) if tensor_params else ():
            params[k] = [p(u) for u in params[k]] if isinstance(params[k], list) else p(params[k])
        return km.get_kernel(self.name, **params)

    @property
    def twice_differentiable(self) -> bool:
        return bool(km.kernels.KERNELS[self.name].twice_differentiable)

    def __iter__(self):  # name, params = case
        return iter((self.name, dict(self.params)))


_DIFFERENTIABLE = {"sigma", "sigmas", "alpha", "alphas", "gamma", "coef0"}


def _case(name, id="", **params):
    return KernelCase(name, params, id)


#: every kernel kind once, with non-default parameters (the order is the parametrization order)
KERNEL_CASES: tuple[KernelCase, ...] = (
    _case("rbf", sigma=1.3),
    _case("mix_rbf", sigmas=[0.6, 2.0]),
    _case("rq", alpha=0.7),
    _case("mix_rq", alphas=[0.5, 2.0]),
    _case("rbf_bounded", sigma=1.1, lower=0.5, upper=3.0),
    _case("laplacian", sigma=1.2),
    _case("energy"),
    _case("linear"),
    _case("poly", degree=3, gamma=0.4, coef0=0.8),
)

#: variants that cover one more code path of a kind
VARIANTS: tuple[KernelCase, ...] = (
    _case("poly", "poly_auto", degree=3, gamma=None, coef0=1.0),  # γ = 1/d resolved on the data
    _case("poly", "poly2", degree=2, gamma=0.3, coef0=0.1),
    _case("poly", "poly1", degree=1, gamma=0.3, coef0=0.1),
    _case("poly", "poly0", degree=0, gamma=0.3, coef0=0.1),
    _case("rbf_bounded", "rbf_bounded_rep", sigma=1.1, lower=0.5, upper=3.0, xx="upper", yy="lower", xy=None),
)

#: kernel families outside KINDS: functions of the L1 distance ‖a − b‖₁ (neither radial nor dot-product), with their
#: own suite in tests/test_l1_laplacian.py (the radial/dot tables and the numpy references of tests/reference_np.py
#: do not cover them)
L1_CASES: tuple[KernelCase, ...] = (
    _case("l1_laplacian", sigma=1.3),
    _case("l1_laplacian", "l1_laplacian_wide", sigma=4.0),  # for d ≈ 20: t/σ of order 5, as t/(2σ²) of the radial cases
)

_BY_ID = {c.id: c for c in KERNEL_CASES + VARIANTS + L1_CASES}

KINDS: tuple[str, ...] = tuple(c.id for c in KERNEL_CASES)
#: the twice-differentiable kinds (GCMMD, a_matvec, gradients of kernel_grad_mv)
TWICE: tuple[str, ...] = tuple(c.id for c in KERNEL_CASES if c.twice_differentiable)
#: the L1 kinds (see L1_CASES)
L1_KINDS: tuple[str, ...] = tuple(c.id for c in L1_CASES)
#: the kinds with no parameter to differentiate
NO_PARAMS: tuple[str, ...] = ("energy", "linear")


def case(id: str) -> KernelCase:
    return _BY_ID[id]


def cases(*ids: str, exclude: tuple[str, ...] = ()) -> list:
    """``pytest.param`` of each case named (every kind when none is), for ``parametrize("kcase", cases(...))``."""
    ids = ids or KINDS
    return [pytest.param(_BY_ID[i], id=i) for i in ids if i not in exclude]


def name_params(*ids: str, exclude: tuple[str, ...] = ()) -> list:
    """``pytest.param(name, params)`` of each case, for ``parametrize("name,params", name_params(...))``."""
    return [pytest.param(c.name, dict(c.params), id=c.id) for c in (_BY_ID[i] for i in (ids or KINDS))
            if c.id not in exclude]

