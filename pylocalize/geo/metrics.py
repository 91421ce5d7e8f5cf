"""Geo-localization metrics and world-map figures.

Errors are great-circle distances (haversine formula, spherical Earth of mean radius
6371.0088 km, the IUGG value; the ellipsoid changes a distance by at most about 0.5 %).
Accuracy at 1 / 25 / 200 / 750 / 2500 km (street, city, region, country, continent) is the
fraction of photos predicted within that distance, as in Im2GPS, PlaNet and the GeoDecoder
paper (Clark et al., CVPR 2023).

The figure draws on the Equal Earth projection (Šavrič, Patterson and Jenny, 2018: an
equal-area pseudocylindrical projection, formulas from the paper) or on plain longitude /
latitude, with no map tiles or coastline data: a background scatter of training photos,
when given, draws the inhabited world well enough.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from pylocalize.geo.cells import check_latlon

EARTH_RADIUS_KM = 6371.0088
THRESHOLDS_KM = (1.0, 25.0, 200.0, 750.0, 2500.0)

# Equal Earth polynomial coefficients (Šavrič et al. 2018, eq. 2)
_A1, _A2, _A3, _A4 = 1.340264, -0.081106, 0.000893, 0.003796
_M = np.sqrt(3.0) / 2.0


def great_circle_km(a, b, radius_km: float = EARTH_RADIUS_KM) -> np.ndarray:
    """Great-circle distances ``float64 (n,)`` between rows of ``a`` and ``b``, each ``(n, 2)``
    latitude, longitude degrees (or one ``(2,)`` point broadcast against the other's rows)."""
    a, b = check_latlon(a, "a"), check_latlon(b, "b")
    if len(a) != len(b) and 1 not in (len(a), len(b)):
        raise ValueError(f"a and b must have the same number of rows (or one row), got {len(a)} and {len(b)}")
    lat1, lon1 = np.radians(a[:, 0]), np.radians(a[:, 1])
    lat2, lon2 = np.radians(b[:, 0]), np.radians(b[:, 1])
    # haversine: accurate for small distances, where the law of cosines loses digits
    h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * radius_km * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def accuracy(predicted, truth, thresholds_km: Sequence[float] = THRESHOLDS_KM) -> Dict[str, float]:
    """Geo-localization accuracy.

    Parameters
    ----------
    predicted, truth : float (n, 2)
        Latitude, longitude degrees.
    thresholds_km : sequence of float

    Returns
    -------
    dict
        ``"acc@<t>km"``: fraction of rows within ``t`` km, for each threshold;
        ``"median_km"`` and ``"mean_km"``: the error's median and mean; ``"n"``.
    """
    d = great_circle_km(predicted, truth)
    if len(d) == 0:
        raise ValueError("no predictions to score: give at least one row")
    out = {f"acc@{t:g}km": float(np.mean(d <= t)) for t in thresholds_km}
    out["median_km"] = float(np.median(d))
    out["mean_km"] = float(np.mean(d))
    out["n"] = int(len(d))
    return out


def equal_earth(latlon) -> np.ndarray:
    """Equal Earth projection ``(n, 2)`` of latitude, longitude degrees, on the unit sphere:
    x in about [-2.707, 2.707], y in about [-1.317, 1.317]."""
    ll = np.radians(check_latlon(latlon))
    theta = np.arcsin(_M * np.sin(ll[:, 0]))
    t2 = theta * theta
    t6 = t2 * t2 * t2
    x = 2 * np.sqrt(3.0) * ll[:, 1] * np.cos(theta) / (3 * (9 * _A4 * t6 * t2 + 7 * _A3 * t6 + 3 * _A2 * t2 + _A1))
    y = theta * (_A4 * t6 * t2 + _A3 * t6 + _A2 * t2 + _A1)
    return np.stack([x, y], 1)


def plot_predictions(predicted, truth, path=None, background=None, projection: str = "equal-earth",
                     max_lines: int = 2000, title: Optional[str] = None, seed: int = 0):
    """World map of predictions against the truth.

    Parameters
    ----------
    predicted, truth : float (n, 2)
        Latitude, longitude degrees.
    path : str or path, optional
        Where to save the figure (format from the suffix).
    background : float (m, 2), optional
        Points drawn faintly underneath (e.g. the training photos) to show the land.
    projection : {"equal-earth", "lonlat"}
    max_lines : int
        At most this many prediction -> truth lines (a seeded random subset).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    predicted, truth = check_latlon(predicted, "predicted"), check_latlon(truth, "truth")
    if predicted.shape != truth.shape:
        raise ValueError(f"predicted {predicted.shape} and truth {truth.shape} must have the same shape")
    if projection == "equal-earth":
        project = equal_earth
    elif projection == "lonlat":
        def project(ll):
            ll = check_latlon(ll)
            return ll[:, ::-1].copy()
    else:
        raise ValueError(f"projection must be 'equal-earth' or 'lonlat', got {projection!r}")
    fig = Figure(figsize=(12, 6.2), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    # outline and graticule, so the map reads without coastlines
    for lon in np.arange(-180, 181, 30):
        g = project(np.stack([np.linspace(-90, 90, 91), np.full(91, lon)], 1))
        ax.plot(g[:, 0], g[:, 1], color="0.85" if abs(lon) != 180 else "0.4", lw=0.6 if abs(lon) != 180 else 1.0,
                zorder=0)
    for lat in np.arange(-60, 61, 30):
        g = project(np.stack([np.full(181, lat), np.linspace(-180, 180, 181)], 1))
        ax.plot(g[:, 0], g[:, 1], color="0.85", lw=0.6, zorder=0)
    for lat in (-90, 90):
        g = project(np.stack([np.full(181, lat), np.linspace(-180, 180, 181)], 1))
        ax.plot(g[:, 0], g[:, 1], color="0.4", lw=1.0, zorder=0)
    if background is not None:
        b = project(background)
        ax.scatter(b[:, 0], b[:, 1], s=1.0, c="0.7", alpha=0.5, linewidths=0, zorder=1, rasterized=True)
    p, t = project(predicted), project(truth)
    if len(p):
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(p), min(len(p), max_lines), replace=False)
        lines = np.stack([p[idx], t[idx]], 1)
        from matplotlib.collections import LineCollection

        # a line across the antimeridian would cross the whole map: those are left out
        keep = np.abs(predicted[idx, 1] - truth[idx, 1]) <= 180
        ax.add_collection(LineCollection(lines[keep], colors="tab:red", linewidths=0.4, alpha=0.35, zorder=2))
        ax.scatter(t[:, 0], t[:, 1], s=4, c="tab:blue", label="truth", linewidths=0, zorder=3)
        ax.scatter(p[:, 0], p[:, 1], s=4, c="tab:orange", label="prediction", linewidths=0, zorder=4)
        ax.legend(loc="lower left", markerscale=3, fontsize=8)
    ax.set_aspect("equal")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(str(path))
    return fig


__all__ = ["EARTH_RADIUS_KM", "THRESHOLDS_KM", "accuracy", "equal_earth", "great_circle_km", "plot_predictions"]
