"""Prints the coefficients of csrc/include/fastalign/box_muller_poly.h (numpy only).

Each polynomial is a minimax fit (Lawson's iteratively reweighted least squares, float64, 4001
Chebyshev nodes); the coefficients are rounded to float32 lowest order first, refitting the rest after
each rounding, and the printed error is that of the rounded polynomial (evaluated in float64).
"""
import numpy as np

TWO_PI_F = float(np.float32(2 * np.pi))


def lawson(a, target, weight, iters=200):
    w = np.full(len(target), 1.0 / len(target))
    for _ in range(iters):
        sw = np.sqrt(w) * weight
        c = np.linalg.lstsq(a * sw[:, None], target * sw, rcond=None)[0]
        w = w * np.abs(weight * (a @ c - target)) + 1e-300
        w /= w.sum()
    return c


def fit(powers, fn, weight_fn, lo, hi):
    x = np.cos(np.linspace(0, np.pi, 4001)) * (hi - lo) / 2 + (hi + lo) / 2
    target, weight = fn(x), weight_fn(x)
    coefs = []
    for i in range(len(powers)):
        resid = target - sum(c * x**p for c, p in zip(coefs, powers))
        c = lawson(np.stack([x**p for p in powers[i:]], 1), resid, weight)
        coefs.append(float(np.float32(c[0])))
    err = np.abs(weight * (sum(c * x**p for c, p in zip(coefs, powers)) - target)).max()
    return coefs, err


def main():
    fits = {
        # -2 log1p(t) = -2t + t^2 P(t), t in [-1/3, 1/3]; error relative to log1p(t)
        "kLogP": fit(list(range(8)), lambda t: -2 * (np.log1p(t) - t) / t**2,
                     lambda t: t**2 / np.abs(2 * np.log1p(t)), -1 / 3, 1 / 3),
        # sin(2 pi_f f) = f S(f^2), |f| <= 1/4; absolute error
        "kSinS": fit([1, 3, 5, 7, 9], lambda f: np.sin(TWO_PI_F * f), np.ones_like, 0, 1 / 4),
        # cos(2 pi_f f) = 1 + f^2 C(f^2), |f| <= 1/4; absolute error
        "kCosC": fit([2, 4, 6, 8, 10], lambda f: np.cos(TWO_PI_F * f) - 1, np.ones_like, 0, 1 / 4),
    }
    for name, (coefs, err) in fits.items():
        print(f"{name} (fit error {err:.2g}): " + ", ".join(f"{np.float32(c):.9e}f" for c in coefs))


if __name__ == "__main__":
    main()
