"""Error metrics of an integer multiplier against the exact product.

The error of an entry is ``e = a*b - LUT[a][b]`` (positive: the multiplier underestimates).
All metrics are taken over every one of the ``2**(2*bits)`` operand pairs:

* ``er``   error rate, the fraction of pairs with ``e != 0``;
* ``med``  mean error distance ``mean(|e|)``;
* ``nmed`` ``med / 2**(2*bits)`` (the seed tools' normalisation: the output range);
* ``mred`` mean relative error distance ``mean(|e| / |a*b|)`` over pairs with ``a*b != 0``;
* ``mse``  mean squared error ``mean(e**2)``;
* ``wce``  worst-case error, ``max(|e|)`` (the seed's "maximum error distance");
* ``bias`` mean error ``mean(e)``.
"""

from __future__ import annotations

import numpy as np

from .multiplier import Multiplier

METRIC_NAMES = ("er", "med", "nmed", "mred", "mse", "wce", "bias")


def metrics(mult: Multiplier) -> dict[str, float]:
    """Error metrics of ``mult`` (keys ``er med nmed mred mse wce bias``), exact in float64."""
    exact = mult.exact_table().numpy().astype(np.float64)
    err = exact - mult.table.numpy().astype(np.float64)
    dist = np.abs(err)
    nonzero = exact != 0
    mred = float(np.mean(dist[nonzero] / np.abs(exact[nonzero]))) if nonzero.any() else 0.0
    return {
        "er": float(np.mean(err != 0)),
        "med": float(dist.mean()),
        "nmed": float(dist.mean() / 4**mult.bits),
        "mred": mred,
        "mse": float(np.mean(err * err)),
        "wce": float(dist.max()),
        "bias": float(err.mean()),
    }
