"""Pose <-> text retrieval (PoseScript-style) on generated poses with automatic captions.

Trains the joint embedding of :mod:`pylocalize.posetext.model` on procedurally generated
poses (:func:`generate_poses`) with several automatic captions each, then evaluates on
held-out poses (another generator seed) captioned with another caption seed: R@1/5/10
text-to-pose and pose-to-text, mRecall, against an untrained (random) encoder of the same
architecture. Also measures captioning speed and how often a caption prefers its own pose to
that pose's mirror image (a left/right test).

The frozen MiniLM clause embeddings are cached in ``--cache-dir`` (the slow part the first
time). Default run: 50k training poses x 3 captions, 2k test poses, about 15-20 min on 2 cores.

    python benchmarks/bench_posetext.py
    python benchmarks/bench_posetext.py --train-poses 5000 --epochs 10   # a quick look
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-poses", type=int, default=50_000)
    parser.add_argument("--test-poses", type=int, default=2_000)
    parser.add_argument("--captions-per-pose", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--embed-dim", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine two OpenMP threads spin "
                             "against other processes and run many times slower)")
    parser.add_argument("--cache-dir", default="benchmarks/results/posetext_cache",
                        help="MiniLM clause embedding cache")
    parser.add_argument("--out", default="benchmarks/results/posetext", help="folder for the figure, results and model")
    parser.add_argument("--short-facts", type=int, default=6,
                        help="the harder test: captions of at most this many facts, half of them skipped")
    parser.add_argument("--model", help="evaluate this saved model instead of training one (same pose seeds)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from pylocalize.posetext import generate_poses, mirror_poses
    from pylocalize.posetext.captioner import Captioner, swap_left_right
    from pylocalize.posetext.model import ClauseBank, PoseTextModel, retrieval_recalls

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    # poses: training and test bodies come from different generator seeds
    t0 = time.perf_counter()
    train_poses = generate_poses(args.train_poses, seed=args.seed)
    test_poses = generate_poses(args.test_poses, seed=args.seed + 1000)
    t_generate = time.perf_counter() - t0

    captioner = Captioner()
    t0 = time.perf_counter()
    train_captions = captioner.caption(train_poses, num_captions=args.captions_per_pose, seed=args.seed + 1)
    t_caption = time.perf_counter() - t0
    # test captions from another caption seed: other facts skipped, other words, other order
    test_captions = [c[0] for c in captioner.caption(test_poses, seed=args.seed + 2)]
    # a harder test: short captions (at most --short-facts facts, each fact skipped with p = 1/2)
    short_captions = [c[0] for c in Captioner(skip_probability=0.5, max_facts=args.short_facts).caption(
        test_poses, seed=args.seed + 3)]
    words = np.mean([len(c.split()) for c in test_captions])
    print(f"{args.train_poses:,} + {args.test_poses:,} poses generated in {t_generate:.1f} s; "
          f"{args.train_poses / t_caption:,.0f} poses/s captioned ({args.captions_per_pose} captions each, "
          f"{args.train_poses * args.captions_per_pose / t_caption:,.0f} captions/s), {words:.0f} words per caption")
    print("example test caption:", test_captions[0])

    cache = Path(args.cache_dir)
    try:
        bank = ClauseBank.load(cache)
    except ValueError:
        bank = ClauseBank()
    t0 = time.perf_counter()
    known = len(bank)
    flat = [c for cs in train_captions for c in cs]
    bank.lookup(flat + [swap_left_right(c) for c in flat] + test_captions + short_captions, progress=True)
    bank.save(cache)
    t_bank = time.perf_counter() - t0
    print(f"clause bank: {len(bank):,} distinct clauses ({len(bank) - known:,} encoded with MiniLM now, "
          f"{t_bank:.1f} s incl. lookups)")

    t0 = time.perf_counter()
    if args.model:
        model = PoseTextModel.load(args.model)
        model.bank = bank  # the cache holds every clause of this run
        print(f"loaded {args.model}")
    else:
        model = PoseTextModel(embed_dim=args.embed_dim, hidden=args.hidden, bank=bank, seed=args.seed)
        model.fit(train_poses, train_captions, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  patience=args.patience, seed=args.seed, progress=True)
        model.save(out / "model.pt")
        print(f"trained {len(model.history)} epochs in {time.perf_counter() - t0:.0f} s")
    t_train = time.perf_counter() - t0

    t0 = time.perf_counter()
    pose_e, text_e = model.embed_poses(test_poses), model.embed_texts(test_captions)
    trained = retrieval_recalls(pose_e, text_e)
    t_eval = time.perf_counter() - t0
    random_model = PoseTextModel(embed_dim=args.embed_dim, hidden=args.hidden, bank=bank, seed=args.seed + 1)
    baseline = retrieval_recalls(random_model.embed_poses(test_poses), random_model.embed_texts(test_captions))
    short = retrieval_recalls(pose_e, model.embed_texts(short_captions))
    short_words = np.mean([len(c.split()) for c in short_captions])
    own = np.sum(text_e * pose_e, 1)
    mirrored = np.sum(text_e * model.embed_poses(mirror_poses(test_poses)), 1)
    side_accuracy = float(np.mean(own > mirrored))

    keys = [f"{d}@{k}" for d in ("text_to_pose", "pose_to_text") for k in (1, 5, 10)] + ["mRecall"]
    print(f"\n{args.test_poses:,} held-out poses, one caption each (caption seed differs from training)")
    print("| encoder | " + " | ".join(k.replace("text_to_pose", "T→P").replace("pose_to_text", "P→T") for k in keys)
          + " |")
    print("|---|" + "---:|" * len(keys))
    for name, r in (("random (untrained)", baseline), ("trained", trained),
                    (f"trained, short captions ({short_words:.0f} words)", short)):
        print(f"| {name} | " + " | ".join(f"{r[k]:.1f}" for k in keys) + " |")
    print(f"\ncaption nearer its own pose than the pose's mirror image: {100 * side_accuracy:.1f} %")
    print(f"embedding + search of the test set: {t_eval:.1f} s; total {time.perf_counter() - t_start:.0f} s")

    results = {"args": vars(args), "trained": trained, "random": baseline, "short_captions": short,
               "short_words_per_caption": float(short_words), "side_accuracy": side_accuracy,
               "history": model.history, "clauses": len(bank), "words_per_caption": float(words),
               "seconds": {"generate": t_generate, "caption": t_caption, "clause_bank": t_bank, "train": t_train,
                           "eval": t_eval},
               "caption_poses_per_s": args.train_poses / t_caption}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    if model.history:
        _figure(out / "posetext.png", model.history, trained, baseline, short, keys)
    print(f"figure, results and model -> {out}/")
    return 0


def _figure(path, history, trained, baseline, short, keys):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    epochs = np.arange(1, len(history) + 1)
    lines = a.plot(epochs, [h["loss"] for h in history], "o-", color="tab:red", label="training loss (BBC)")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    if "mRecall" in history[0]:
        a2 = a.twinx()
        lines += a2.plot(epochs, [h["mRecall"] for h in history], "s-", color="tab:blue",
                         label="held-out mRecall (training captions)")
        a2.set_ylabel("held-out mRecall (%)")
    a.legend(lines, [line.get_label() for line in lines], loc="center right")
    a.set_title("training")
    x = np.arange(len(keys))
    b.bar(x - 0.27, [baseline[k] for k in keys], 0.27, label="random encoder", color="tab:gray")
    b.bar(x, [trained[k] for k in keys], 0.27, label="trained", color="tab:blue")
    b.bar(x + 0.27, [short[k] for k in keys], 0.27, label="trained, short captions", color="tab:cyan")
    b.set_xticks(x, [k.replace("text_to_pose", "T→P").replace("pose_to_text", "P→T") for k in keys], rotation=30)
    b.set_ylabel("recall (%)")
    b.set_title("held-out poses, captions from another seed")
    b.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
