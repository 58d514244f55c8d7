"""Token datasets in a PyTorch training loop: `TokenDataset` reads them, `collate` pads a batch,
`delay` / `undelay` shift codebooks for delay-pattern LMs (docs/training.md)."""
from .batching import PAD_ID, collate, delay, undelay
from .reader import TokenDataset

__all__ = ["PAD_ID", "TokenDataset", "collate", "delay", "undelay"]
