"""Small models for examples, tests and benchmarks (like ``lightning.pytorch.demos``).

Nothing here is imported by ``import normguard``; :func:`tiny_bert` imports Hugging Face
``transformers`` only when called (``pip install 'normguard[transformers]'``), and builds
its model from a config: nothing is downloaded.

Example:
    >>> import torch
    >>> from normguard.demos import tiny_bert
    >>> model = tiny_bert(num_labels=2, seed=0)
    >>> out = model(input_ids=torch.randint(0, 100, (4, 16)), labels=torch.tensor([0, 1, 1, 0]))
    >>> tuple(out.logits.shape), out.loss.ndim
    ((4, 2), 0)
    >>> model.config.num_hidden_layers, model.config.hidden_size
    (2, 32)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import BertForSequenceClassification

__all__ = ["tiny_bert"]


def tiny_bert(
    num_labels: int = 2,
    seed: int | None = None,
    *,
    vocab_size: int = 100,
    seq_len: int = 16,
    dropout: float = 0.1,
    **config: Any,
) -> BertForSequenceClassification:
    """A ``BertForSequenceClassification`` built from a config (no hub): 2 layers, hidden 32,
    2 heads, feed-forward 64 (about 30 k parameters at vocabulary 100), fast on a CPU.

    Args:
        num_labels: classes of the classification head.
        seed: if given, ``torch.manual_seed(seed)`` is called first (the global generator), so
            the same seed gives the same initial weights; ``None`` draws from the current state.
        vocab_size: token ids are ``0 .. vocab_size - 1``.
        seq_len: the longest sequence (``max_position_embeddings``).
        dropout: ``hidden_dropout_prob`` and ``attention_probs_dropout_prob`` (BERT's 0.1 by
            default; 0.0 for a deterministic forward).
        **config: any other ``transformers.BertConfig`` field, overriding the sizes above
            (e.g. ``num_hidden_layers=1``, ``type_vocab_size=1``).

    Raises:
        ImportError: ``transformers`` is not installed.
    """
    try:
        from transformers import BertConfig, BertForSequenceClassification
    except ImportError as exc:
        raise ImportError(
            "normguard.demos.tiny_bert needs Hugging Face transformers: pip install 'normguard[transformers]'"
        ) from exc
    if seed is not None:
        torch.manual_seed(seed)
    fields: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": seq_len,
        "hidden_dropout_prob": dropout,
        "attention_probs_dropout_prob": dropout,
        "num_labels": num_labels,
    }
    fields.update(config)
    return BertForSequenceClassification(BertConfig(**fields))
