"""Figures of a localization: the query with its 2D-3D matches and reprojections, and the
database images retrieval chose."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pylocalize.io import read_image
from pylocalize.localization.map import image_path


def draw_matches(ax, image: np.ndarray, result, m, camera) -> None:
    """The query with its 2D-3D matches: inliers green, outliers red, and for inliers the
    reprojection of their 3D point under the estimated pose (yellow tick)."""
    ax.imshow(image)
    ax.axis("off")
    if result.points2D is None:
        ax.set_title(f"not localized: {result.reason}", fontsize=9)
        return
    inliers = result.inlier_mask if result.inlier_mask is not None else np.zeros(len(result.points2D), bool)
    xy = result.points2D
    ax.scatter(*xy[~inliers].T, s=4, c="tab:red", label=f"outliers ({(~inliers).sum()})")
    ax.scatter(*xy[inliers].T, s=6, c="lime", label=f"inliers ({inliers.sum()})")
    if result.success:
        P = result.cam_from_world
        cam = m.feature_layer(result.features).points3D[result.point3D_ids[inliers]] @ P[:, :3].T + P[:, 3]
        front = cam[:, 2] > 1e-6
        proj = camera.project(cam[front])
        for (x0, y0), (x1, y1) in zip(xy[inliers][front], proj):
            ax.plot([x0, x1], [y0, y1], c="yellow", lw=0.8)
        error = np.linalg.norm(proj - xy[inliers][front], axis=1)
        title = (f"{result.num_inliers}/{result.num_matches} inliers, median reprojection error "
                 f"{np.median(error) if len(error) else float('nan'):.2f} px")
    else:
        title = f"not localized: {result.reason}"
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=7, markerscale=2)


def save_localization_figure(path, image: np.ndarray, result, m, camera, image_dir=None,
                             num_retrieved: int = 3) -> Path:
    """Writes a figure: the query with its matches, then the top retrieved database images
    (read from ``image_dir`` when given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = result.retrieved[:num_retrieved] if image_dir is not None else []
    fig, axes = plt.subplots(1, 1 + len(shown), figsize=(6 * (1 + len(shown)), 4.5), squeeze=False)
    draw_matches(axes[0, 0], image, result, m, camera)
    for ax, name in zip(axes[0, 1:], shown):
        try:  # image_path refuses a name that leads outside image_dir
            ax.imshow(read_image(image_path(image_dir, name)))
        except ValueError as error:
            ax.text(0.5, 0.5, "image refused" if "image name" in str(error) else "image not found", ha="center")
        ax.set_title(f"retrieved: {name}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
