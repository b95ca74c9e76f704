"""The torch decoding loops' KV caches: one that grows in place, and the name ``forward`` takes it by."""

from __future__ import annotations

import functools


@functools.cache
def _cache_argument_of(model_class: type) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def cache_argument(model) -> str:
    """The name forward() takes the KV cache by: transformers 5 renamed ``past_key_values`` to ``cache`` and
    warns on every call that uses the old name; older versions know only the old one."""
    return _cache_argument_of(type(model))


def growing_cache(prefix=None, batch: int = 1, extra: int = 0):
    """A KV cache whose layers append in place (see :func:`_growing_layer_class`), optionally holding
    ``prefix``'s keys and values copied for ``batch`` rows with room for ``extra`` more positions."""
    from transformers.cache_utils import Cache

    layer_class = _growing_layer_class()
    if prefix is None:
        return Cache(layer_class_to_replicate=layer_class)
    return Cache(layers=[layer.expanded(batch, extra) for layer in prefix.layers])


@functools.cache
def _growing_layer_class():
    """transformers' DynamicLayer concatenates the whole cache at every step (O(length) copies per
    token: a quarter of SmolLM2's decoding time measured here); this one writes into a buffer with
    spare room, so a step copies only the new position."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        def lazy_initialization(self, key_states, value_states) -> None:
            super().lazy_initialization(key_states, value_states)
            self.length = 0
            self.key_buffer = self.value_buffer = None

        def _reserve(self, needed: int, like_keys, like_values) -> None:
            capacity = 0 if self.key_buffer is None else self.key_buffer.shape[2]
            if needed <= capacity:
                return
            capacity = max(needed + 64, capacity * 2)
            keys = like_keys.new_empty((*like_keys.shape[:2], capacity, like_keys.shape[3]))
            values = like_values.new_empty((*like_values.shape[:2], capacity, like_values.shape[3]))
            if self.length:
                keys[:, :, :self.length] = self.key_buffer[:, :, :self.length]
                values[:, :, :self.length] = self.value_buffer[:, :, :self.length]
            self.key_buffer, self.value_buffer = keys, values

        def _views(self):
            self.keys = self.key_buffer[:, :, :self.length]
            self.values = self.value_buffer[:, :, :self.length]

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            new = key_states.shape[-2]
            self._reserve(self.length + new, key_states, value_states)
            self.key_buffer[:, :, self.length:self.length + new] = key_states
            self.value_buffer[:, :, self.length:self.length + new] = value_states
            self.length += new
            self._views()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length if self.is_initialized else 0

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.get_seq_length() > 0:
                self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
                self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
                self._views()

        def batch_select_indices(self, indices) -> None:
            if self.get_seq_length() > 0:
                self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
                self._views()

        def reorder_cache(self, beam_idx) -> None:
            self.batch_select_indices(beam_idx)

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove < 0 and self.is_initialized:
                self.length = max(0, self.length + tokens_to_remove)
                self._views()
            else:
                super().crop(tokens_to_remove)

        def expanded(self, batch: int, extra: int):
            """A copy of this (one-row) layer for ``batch`` rows, with room for ``extra`` more positions."""
            copy = GrowingLayer()
            copy.lazy_initialization(self.keys, self.values)
            copy._reserve(self.length + extra, self.keys.expand(batch, -1, -1, -1),
                          self.values.expand(batch, -1, -1, -1))
            copy.key_buffer[:, :, :self.length] = self.keys
            copy.value_buffer[:, :, :self.length] = self.values
            copy.length = self.length
            copy._views()
            return copy

    return GrowingLayer
