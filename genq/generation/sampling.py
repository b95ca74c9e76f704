"""Sampling shared by the torch decoding loops: per-passage random streams, top-k/top-p, log-probabilities."""

from __future__ import annotations

import hashlib

import numpy as np


class Samples:
    """What a decoding loop has sampled per row: its tokens and the log-probability they add up to."""

    def __init__(self, rows: int):
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.logprob = [0.0] * rows
        self.scored = [0] * rows
        self.ended = [False] * rows  # False: cut by the length limit

    def record(self, alive, tokens, token_logprobs, finished):
        """Append each live row's new token unless it ended the row; return the rows to keep.

        The ending token counts in the score (a model sure the query is over says so).
        ``None`` means every row goes on (nothing to drop from the batch); an empty tensor
        means every row has finished.
        """
        scores = token_logprobs.tolist() if token_logprobs is not None else None
        for i, (row, token, done) in enumerate(zip(alive.tolist(), tokens.tolist(), finished.tolist())):
            if done:
                self.ended[row] = True
            else:
                self.tokens[row].append(token)
            if scores is not None:
                self.logprob[row] += scores[i]
                self.scored[row] += 1
        if not bool(finished.any()):
            return None
        return (~finished).nonzero(as_tuple=True)[0]

    def mean_logprobs(self) -> list[float]:
        return [round(total / count, 4) if count else 0.0 for total, count in zip(self.logprob, self.scored)]


def token_logprobs(logits, tokens):
    """log p(token) under the model's own distribution (no temperature, no truncation)."""
    logits = logits.float()
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(dim=-1)


class SampleStreams:
    """One reproducible random stream per (passage, sample): the draws behind every sampled token.

    A counter-based generator (SplitMix64 over a key hashed from the run seed, the passage
    id and the sample number, advanced by the decoding step) instead of torch's global RNG:
    a passage gets the same queries whatever batch it is in, after a resume, and on any
    number of workers.
    """

    _GOLDEN = np.uint64(0x9E3779B97F4A7C15)

    def __init__(self, passage_ids: list[str], per_passage: int, seed: int):
        keys = [int.from_bytes(hashlib.blake2b(f"{seed}\x00{pid}\x00{sample}".encode(), digest_size=8).digest(),
                               "little") for pid in passage_ids for sample in range(per_passage)]
        self.keys = np.asarray(keys, dtype=np.uint64)

    def uniforms(self, rows, step: int):
        """A uniform draw in [0, 1) for each of ``rows`` (original row numbers) at decoding ``step``."""
        import torch

        rows_index = rows.cpu().numpy() if hasattr(rows, "cpu") else np.asarray(rows)
        with np.errstate(over="ignore"):
            z = self.keys[rows_index] + np.uint64(step + 1) * self._GOLDEN
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
        values = (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
        return torch.from_numpy(values).to(device=rows.device if hasattr(rows, "device") else "cpu")


def sample_top_k_top_p(logits, top_k: int, top_p: float, temperature: float, uniforms=None):
    """One token per row: top-k, then nucleus (top-p) over those k, then a draw.

    Equivalent to transformers' TopK + TopP warpers followed by multinomial sampling, but
    touches the full vocabulary only once (``topk``). ``uniforms`` (one per row, from
    :class:`SampleStreams`) make the draw by inverse CDF; without them torch's RNG draws.
    """
    import torch

    if temperature != 1.0:
        logits = logits / temperature
    k = logits.shape[-1] if not top_k else min(top_k, logits.shape[-1])
    values, indices = torch.topk(logits, k, dim=-1)
    probs = torch.softmax(values, dim=-1)
    if top_p < 1.0:
        cumulative = probs.cumsum(dim=-1)
        # drop a token when the mass before it already reaches top_p (the first always stays)
        probs = probs.masked_fill(cumulative - probs >= top_p, 0.0)
    if uniforms is None:
        choice = torch.multinomial(probs, 1)
    else:
        cumulative = probs.double().cumsum(dim=-1)
        threshold = uniforms.to(cumulative.dtype).unsqueeze(-1) * cumulative[:, -1:]
        # the first token whose cumulative mass passes the draw; a zero-mass token never does
        choice = torch.searchsorted(cumulative, threshold, right=True).clamp(max=probs.shape[-1] - 1)
    return indices.gather(-1, choice).squeeze(-1)
