"""Error metrics of an integer multiplier against the exact product.

The error of an entry is ``e = a*b - LUT[a][b]`` (positive: the multiplier underestimates).
All metrics are taken over every one of the ``2**(bits_a + bits_b)`` operand pairs:

* ``er``   error rate, the fraction of pairs with ``e != 0``;
* ``med``  mean error distance ``mean(|e|)``;
* ``nmed`` ``med / 2**(bits_a + bits_b)`` (the seed tools' normalisation: the output range);
* ``mred`` mean relative error distance ``mean(|e| / |a*b|)`` over pairs with ``a*b != 0``;
* ``mse``  mean squared error ``mean(e**2)``;
* ``wce``  worst-case error, ``max(|e|)`` (the seed's "maximum error distance");
* ``wcre`` worst-case relative error, ``max(|e| / |a*b|)`` over pairs with ``a*b != 0``;
* ``bias`` mean error ``mean(e)``.

EvoApproxLib's figures are the same quantities in the library's units
(:func:`evoapprox_metrics`): ``MAE = med``, ``MAE% = 100 * nmed``,
``WCE = wce``, ``WCE% = 100 * wce / 2**(bits_a + bits_b)``, ``EP% = 100 * er``,
``MRE% = 100 * mred``, ``WCRE% = 100 * wcre``, ``MSE = mse`` (checked against every header
of the library sample in the tests; see docs/luts.md).
"""

from __future__ import annotations

import numpy as np

from .multiplier import Multiplier

METRIC_NAMES = ("er", "med", "nmed", "mred", "mse", "wce", "wcre", "bias")


def metrics(mult: Multiplier) -> dict[str, float]:
    """Error metrics of ``mult`` (keys :data:`METRIC_NAMES`), exact in float64."""
    exact = mult.exact_table().numpy().astype(np.float64)
    err = exact - mult.table.numpy().astype(np.float64)
    dist = np.abs(err)
    nonzero = exact != 0
    relative = dist[nonzero] / np.abs(exact[nonzero])
    return {
        "er": float(np.mean(err != 0)),
        "med": float(dist.mean()),
        "nmed": float(dist.mean() / 2 ** (mult.bits_a + mult.bits_b)),
        "mred": float(relative.mean()) if relative.size else 0.0,
        "mse": float(np.mean(err * err)),
        "wce": float(dist.max()),
        "wcre": float(relative.max()) if relative.size else 0.0,
        "bias": float(err.mean()),
    }


def evoapprox_metrics(mult: Multiplier, m: dict[str, float] | None = None) -> dict[str, float]:
    """``mult``'s metrics in EvoApproxLib's names and units (keys as in its file headers:
    ``mae_pct mae wce_pct wce wcre_pct ep_pct mre_pct mse``); ``m``: precomputed
    :func:`metrics`."""
    m = metrics(mult) if m is None else m
    out_range = 2 ** (mult.bits_a + mult.bits_b)
    return {
        "mae_pct": 100 * m["nmed"],
        "mae": m["med"],
        "wce_pct": 100 * m["wce"] / out_range,
        "wce": m["wce"],
        "wcre_pct": 100 * m["wcre"],
        "ep_pct": 100 * m["er"],
        "mre_pct": 100 * m["mred"],
        "mse": m["mse"],
    }
