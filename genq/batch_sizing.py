"""How many at once: batch sizes that fill a GPU, a small batch on a CPU, and halving on out-of-memory.

On a GPU a decoding step at a small batch is bound by kernel-launch latency, not arithmetic:
one H200 generated 21 passages/s at genq's old fixed batch of 16 and 302 at 512 (issue 25's
sweep). The right batch depends on the card's free memory, the model and the lengths, so it is
estimated from those (the KV cache and logits a passage's samples hold at the longest point of
decoding), capped where the sweep stopped gaining, and corrected at run time: a batch that does
not fit is split in halves and each half run again (the samples are seeded per passage, so the
output is the same), and later batches use the smaller size. Nothing is lost, nothing crashes.

On a CPU the batch stays small: there is no launch latency to hide, and this project's 2-core
CPU measured flat throughput from 8 to 32 (``benchmarks/results/generate_speed.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

logger = logging.getLogger(__name__)

CPU_GENERATION_BATCH = 16
CPU_ENCODE_BATCH = 64
MAX_GENERATION_BATCH = 1024  # passages; the H200 sweep gained 6% from 512 to 1024 and nothing is known past it
MAX_ENCODE_BATCH = 1024  # texts
GPU_MEMORY_SHARE = 0.6  # of the free memory, leaving room for the allocator's fragmentation and other processes

Item = TypeVar("Item")
Result = TypeVar("Result")


def is_out_of_memory(exc: BaseException) -> bool:
    """A device out of memory, however the backend words it (CUDA, MPS, XPU)."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_device_memory(device: str) -> int | None:
    """Bytes free on a CUDA device right now; None elsewhere."""
    if not str(device).startswith("cuda"):
        return None
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


def release_cached_memory(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def generation_bytes_per_passage(model_config, family: str, queries_per_passage: int, input_tokens: int,
                                 new_tokens: int, dtype_bytes: int) -> int:
    """What one passage's samples hold at the longest point of decoding: KV cache, logits, the input's activations.

    A deliberate over-estimate (every row at full length, float32 logits with a few temporaries);
    the run-time halving catches what an estimate cannot know.
    """
    text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    hidden = getattr(text, "hidden_size", None) or getattr(text, "d_model", 768)
    heads = getattr(text, "num_attention_heads", None) or getattr(text, "num_heads", 12)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or getattr(text, "d_kv", None) or hidden // heads
    layers = getattr(text, "num_hidden_layers", None) or getattr(text, "num_layers", 12)
    decoder_layers = getattr(text, "num_decoder_layers", None) or layers
    vocab = getattr(text, "vocab_size", 32000)
    per_token = 2 * kv_heads * head_dim * dtype_bytes  # one layer's keys and values
    rows = queries_per_passage
    if family == "seq2seq":  # self-attention cache over the query, cross-attention cache over the passage
        kv = rows * decoder_layers * per_token * (new_tokens + input_tokens)
    else:
        kv = rows * layers * per_token * (input_tokens + new_tokens)
    logits = rows * vocab * 4 * 3
    activations = input_tokens * hidden * dtype_bytes * 16
    return kv + logits + activations


def auto_generation_batch(device: str, bytes_per_passage: int) -> int:
    """The batch for ``device``: sized by free memory on CUDA (multiple of 8, capped), small on a CPU."""
    free = free_device_memory(device)
    if free is None:
        return CPU_GENERATION_BATCH
    batch = int(free * GPU_MEMORY_SHARE // max(bytes_per_passage, 1))
    batch = min(MAX_GENERATION_BATCH, batch)
    return max(1, batch // 8 * 8 or batch)


def auto_encode_batch(device: str, max_tokens: int, hidden: int, layers: int, dtype_bytes: int) -> int:
    """Texts per encoder call: by free memory on CUDA (activations of one layer at a time), 64 on a CPU."""
    free = free_device_memory(device)
    if free is None:
        return CPU_ENCODE_BATCH
    per_text = max_tokens * hidden * dtype_bytes * 24 + max_tokens * max_tokens * 4 * 4
    batch = min(MAX_ENCODE_BATCH, int(free * GPU_MEMORY_SHARE // max(per_text, 1)))
    return max(1, batch // 8 * 8 or batch)


def smaller_after(exc: BaseException, size: int, device: str, what: str) -> int:
    """The batch size to retry with after ``exc``: half of ``size`` after an out-of-memory; anything else, or
    a batch of one that still does not fit, is raised again."""
    if not is_out_of_memory(exc) or size <= 1:
        raise exc
    release_cached_memory(device)
    smaller = max(1, size // 2)
    logger.warning("%s: a batch of %d did not fit in %s memory; continuing with %d", what, size, device, smaller)
    return smaller


class HalvingBatches:
    """Runs batches through ``work``; a batch that runs out of memory is split in halves, and later batches shrink.

    ``size`` is the batch size to use for the next batch (callers cut their batches with it).
    """

    def __init__(self, size: int, device: str, what: str):
        self.size, self.device, self.what = size, device, what
        self.halvings = 0

    def run(self, work: Callable[[Sequence[Item]], list[Result]], batch: Sequence[Item]) -> list[Result]:
        try:
            return list(work(batch))
        except Exception as exc:
            half = smaller_after(exc, len(batch), self.device, self.what)
        if half < self.size:
            self.size = half
            self.halvings += 1
        return self.run(work, batch[:half]) + self.run(work, batch[half:])
