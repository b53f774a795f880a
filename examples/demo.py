"""A short kernelmmd demo: MMD² between two Gaussian samples, its variance, the witness, and a deep kernel."""

import torch

import kernelmmd as km


def main() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 16, generator=g)
    y = torch.randn(2000, 16, generator=g) * 1.1 + 0.05
    mmd2, var = km.mmd2_and_variance(x, y, kernel="rbf", sigma="median")
    print(f"MMD²_u (rbf, median bandwidth) = {float(mmd2):.6f}   sd = {float(var) ** 0.5:.6f}")
    print(f"MMD²_b = {float(km.mmd2_biased(x, y, kernel='rbf', sigma='median')):.6f}")
    print(f"MMD²_linear = {float(km.mmd2_linear(x, y, kernel='rbf', sigma='median')):.6f}")
    print(f"witness at 3 points = {km.witness(x, y, x[:3], kernel='rbf', sigma='median').tolist()}")
    phi = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    deep = km.DeepKernel(phi, "rbf", sigma=1.0)
    with torch.no_grad():
        print(f"deep-kernel MMD²_u = {float(km.mmd2_unbiased(x, y, deep)):.6f}")


if __name__ == "__main__":
    main()
