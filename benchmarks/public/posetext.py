#!/usr/bin/env python3
"""PoseScript: text-to-pose and pose-to-text R@1/5/10 and mRecall of a pose/text model on a split.

The release folder gives the captions and the split's pose ids (layout in
``pylocalize.datasets.posescript``); the poses are the SMPL joint positions the user exported
from AMASS (``--joints``: a ``.npy`` whose row i is pose id i, or a ``.npz`` of ``joints`` and
``pose_ids``; the first 22 joints, the body's, in metres, y up, or ``--z-up`` for AMASS's own
axes). Every pose of the split with a caption of the chosen kind (``--captions human``:
PoseScript-H, the table the papers report; ``auto``: PoseScript-A) is embedded with its first
caption by a model from ``pylocalize posetext train`` (the torch extra); each caption retrieves
among the split's poses and each pose among its captions. Written: the recalls as JSON.

    python benchmarks/public/posetext.py data/posescript --joints data/posescript/joints_100k.npy \
        --model outputs/posetext.pt [--split test --captions human --limit 1000]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

# a z-up body (AMASS) turned y-up: (x, y, z) -> (x, z, -y), a rotation of -90 degrees about x
Z_UP_TO_Y_UP = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
BODY_JOINTS = 22


def main(args) -> int:
    from pylocalize.datasets.posescript import read_joints, read_posescript
    from pylocalize.posetext.model import MiniLMEncoder, PoseTextModel, retrieval_recalls

    split = read_posescript(args.posescript, split=args.split, captions=args.captions)
    keep = _common.evenly(range(len(split.pose_ids)), args.limit)
    pose_ids, captions = [split.pose_ids[i] for i in keep], [split.captions[i] for i in keep]
    joints = read_joints(args.joints, pose_ids)
    if joints.shape[1] < BODY_JOINTS:
        raise ValueError(f"{args.joints}: {joints.shape[1]} joints per pose; export the SMPL body joints (22 or more)")
    joints = joints[:, :BODY_JOINTS]
    if args.z_up:
        joints = joints @ Z_UP_TO_Y_UP.T
    model = PoseTextModel.load(args.model, encoder=MiniLMEncoder(args.minilm) if args.minilm else None)
    with _common.phase(_common.logger, f"embed {len(pose_ids)} poses and captions"):
        recalls = retrieval_recalls(model.embed_poses(joints), model.embed_texts(captions, progress=args.progress))
    row = {"split": f"{args.split} ({args.captions})", "poses": len(pose_ids), **recalls}
    _common.print_table([row], [("split", "split", "s"), ("poses", "poses", "d")]
                        + [(f"{d}@{k}", f"{'t2p' if d == 'text_to_pose' else 'p2t'} R@{k}", ".1f")
                           for d in ("text_to_pose", "pose_to_text") for k in (1, 5, 10)]
                        + [("mRecall", "mRecall", ".1f")])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _common.write_json(out, row)
    return 0


def parser():
    p = _common.make_parser(__doc__.splitlines()[0], main, limit="poses of the split")
    p.add_argument("posescript", help="the PoseScript release folder (captions and split files)")
    p.add_argument("--joints", required=True, help="the exported joint positions (.npy by pose id, or .npz)")
    p.add_argument("--model", required=True, help="a model from 'pylocalize posetext train' (.pt)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="the split to score")
    p.add_argument("--captions", default="human", choices=["human", "auto"], help="PoseScript-H or PoseScript-A")
    p.add_argument("--z-up", action="store_true", help="the joints are in AMASS's z-up axes (default: y up)")
    p.add_argument("--minilm", help="local all-MiniLM-L6-v2 folder, for clauses the model has not seen")
    p.add_argument("--out", default="outputs/posescript/recalls.json", help="the recalls as JSON")
    return p


if __name__ == "__main__":
    sys.exit(_common.main_of(parser()))
