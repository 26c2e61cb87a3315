"""What the table models share: a context read as one row number, and the cap on a table's size."""

from __future__ import annotations

import math

import torch

from makemore.errors import MakemoreError

# Refuse tables above this many entries: 50M float32 is 200 MB, and an optimizer keeps up to 3 more copies.
MAX_TABLE_ENTRIES = 50_000_000


def context_index(context: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Row of a V^n-row table for each context: the context read as a base-V number (Horner's rule)."""
    index = torch.zeros_like(context[:, 0])
    for column in context.unbind(1):
        index = index * vocab_size + column
    return index


def check_table_size(name: str, vocab_size: int, block_size: int) -> None:
    """Refuse, in one line with its size, a table of V^(block_size+1) entries above MAX_TABLE_ENTRIES."""
    digits = (block_size + 1) * math.log10(vocab_size)
    if digits > math.log10(MAX_TABLE_ENTRIES):  # compared in logs: V^(n+1) can have thousands of digits
        entries = f"{vocab_size ** (block_size + 1):,}" if digits < 16 else f"{vocab_size}^{block_size + 1}"
        memory = (
            f"about {vocab_size ** (block_size + 1) * 16 / 2**30:,.1f} GiB"
            if digits < 16
            else "more memory than exists"
        )
        raise MakemoreError(  # weights, gradient and two optimizer moments: 16 bytes an entry
            f"{name} with block_size {block_size} over {vocab_size} tokens needs {entries} entries "
            f"({memory} to train), "
            f"above the cap of {MAX_TABLE_ENTRIES:,}; use a smaller block_size"
        )
