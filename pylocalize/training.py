"""The one torch training layer: torch settings for small CPU models and the early-stopping loop.

Every model pylocalize trains (:mod:`pylocalize.geo.model`, :mod:`pylocalize.posetext.model`,
:mod:`pylocalize.codes.learned`) runs its epochs through :func:`train_with_early_stopping`:
one pass over the training batches, a held-out score, the best weights kept, a stop after
``patience`` epochs without a better score, and the best weights put back at the end. What
differs between the models (how batches are drawn, the loss, what the held-out score
measures) stays with the model and comes in as callables.

Importing this module needs no torch (the models' modules import it to name their
settings): torch is imported when a setting is applied or a loop runs.
"""

from __future__ import annotations

import copy
import logging
from typing import Callable, Iterable, List, Optional

from tqdm import tqdm

from pylocalize.checkpoints import import_torch

logger = logging.getLogger(__name__)


class torch_threads:
    """``with torch_threads(n):`` runs torch ops on ``n`` intra-op threads, then restores the
    previous count (``None``: leave it). Small heads gain nothing from more threads, and on a
    machine busy with other work torch's spinning worker threads can slow them many-fold
    (``benchmarks/README.md``), so training takes a ``num_threads``."""

    def __init__(self, n: Optional[int]):
        self.n, self.previous = n, None

    def __enter__(self):
        if self.n is not None:
            torch = import_torch("setting torch's threads")
            self.previous = torch.get_num_threads()
            torch.set_num_threads(max(1, int(self.n)))
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            import_torch("setting torch's threads").set_num_threads(self.previous)
        return False


class flush_denormals:
    """``with flush_denormals():`` computes denormal floats as zero, then switches back.

    Adam's second moments of small gradients fall into denormal floats, which x86 CPUs
    compute tens of times slower; flushing them to zero costs nothing in accuracy. Where
    the CPU cannot flush, nothing changes."""

    def __init__(self):
        self.flushing = False

    def __enter__(self):
        self.flushing = import_torch("training").set_flush_denormal(True)
        return self

    def __exit__(self, *exc):
        if self.flushing:
            import_torch("training").set_flush_denormal(False)
        return False


def optimizer_steps(optimizer, loss_of: Callable, batches: Iterable, after_step: Optional[Callable] = None
                    ) -> List[float]:
    """One gradient step per batch: ``loss_of(batch)`` backpropagated, ``optimizer`` stepped,
    then ``after_step()`` (a scheduler, a clamp). Returns the batches' losses."""
    losses = []
    for batch in batches:
        optimizer.zero_grad()
        loss = loss_of(batch)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        losses.append(loss.item())
    return losses


class BestWeights:
    """The best score seen so far and a copy of the weights that scored it.

    ``higher_is_better`` says which way scores improve; a score must beat the best by more
    than ``min_delta`` to count. The start (``score`` at construction, by default the worst
    possible) is the weights as they are, so a run that never improves restores them."""

    def __init__(self, net, higher_is_better: bool, min_delta: float, score: Optional[float] = None):
        self.net, self.higher_is_better, self.min_delta = net, higher_is_better, min_delta
        self.best = score if score is not None else (-float("inf") if higher_is_better else float("inf"))
        self.state = copy.deepcopy(net.state_dict())

    def offer(self, score: float) -> bool:
        """Keeps the weights if ``score`` beats the best; says whether it did."""
        better = score > self.best + self.min_delta if self.higher_is_better else score < self.best - self.min_delta
        if better:
            self.best, self.state = score, copy.deepcopy(self.net.state_dict())
        return better

    def restore(self) -> None:
        self.net.load_state_dict(self.state)


def train_with_early_stopping(net, epochs: int, train_epoch: Callable[[], object],
                              held_out_score: Callable[[object], float], *, patience: int, higher_is_better: bool,
                              min_delta: float = 1e-4,
                              start_score: Optional[float] = None, progress: bool = False, desc: str = "training",
                              postfix: Optional[Callable[[float], dict]] = None) -> List[float]:
    """Trains ``net`` for up to ``epochs`` epochs, keeping the weights of the best held-out score.

    Each epoch runs ``train_epoch()`` with ``net`` in training mode, then
    ``held_out_score(what train_epoch returned)`` with ``net`` in evaluation mode (the
    training loss is there for models with no held-out rows). Training stops after
    ``patience`` epochs in a row that do not beat the best score by ``min_delta``; the best
    weights are then loaded back and ``net`` is left in evaluation mode. ``start_score``,
    when given, is the score of the weights before training, which training must beat.

    Returns the held-out score of every epoch run. With ``progress``, a tqdm bar shows the
    epochs and ``postfix(score)`` (default: the score); each epoch's score is also logged
    at DEBUG level on the ``pylocalize.training`` logger.
    """
    best = BestWeights(net, higher_is_better, min_delta, start_score)
    history, stale = [], 0
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        net.train()
        trained = train_epoch()
        net.eval()
        score = held_out_score(trained)
        history.append(score)
        bar.set_postfix(postfix(score) if postfix is not None else {"score": f"{score:.3f}"})
        logger.debug("%s: epoch %d, held-out score %.6g", desc, epoch + 1, score)
        if best.offer(score):
            stale = 0
        else:
            stale += 1
            if stale >= patience:
                logger.debug("%s: stopped after %d epochs without a better score", desc, stale)
                break
    best.restore()
    net.eval()
    return history


__all__ = ["BestWeights", "flush_denormals", "optimizer_steps", "torch_threads", "train_with_early_stopping"]
