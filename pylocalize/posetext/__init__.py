"""3D human pose <-> text retrieval (PoseScript, Delmas et al., ECCV 2022).

- :mod:`~pylocalize.posetext.skeleton` — the 22 SMPL body joints, mirroring, normalisation,
  :func:`load_joints` for ``(frames, 22, 3)`` ``.npy`` files.
- :mod:`~pylocalize.posetext.posecodes` — categorical posecodes, vectorised over poses.
- :mod:`~pylocalize.posetext.captioner` — automatic captions from posecodes.
- :mod:`~pylocalize.posetext.generator` — procedural poses (forward kinematics, joint limits).
- :mod:`~pylocalize.posetext.model` — the pose/text joint embedding (torch extra) and
  :class:`PoseTextRetrieval`, searched through the core.

Everything but the model is numpy only.
"""

from pylocalize.posetext.captioner import Captioner, caption_poses, split_clauses, swap_left_right
from pylocalize.posetext.generator import FAMILIES, forward_kinematics, generate_poses
from pylocalize.posetext.model import (  # torch is imported only when a model is made
    ClauseBank,
    MiniLMEncoder,
    PoseTextModel,
    PoseTextRetrieval,
    retrieval_recalls,
)
from pylocalize.posetext.posecodes import (
    POSECODES,
    Posecode,
    category_name,
    compute_posecodes,
    mirror_posecodes,
)
from pylocalize.posetext.skeleton import (
    JOINT_NAMES,
    MIRROR,
    PARENTS,
    check_poses,
    load_joints,
    mirror_poses,
    normalize_poses,
)

__all__ = ["FAMILIES", "JOINT_NAMES", "MIRROR", "PARENTS", "POSECODES", "Captioner", "ClauseBank", "MiniLMEncoder",
           "PoseTextModel", "PoseTextRetrieval", "Posecode", "caption_poses", "category_name", "check_poses",
           "compute_posecodes", "forward_kinematics", "generate_poses", "load_joints", "mirror_poses",
           "mirror_posecodes", "normalize_poses", "retrieval_recalls", "split_clauses", "swap_left_right"]
