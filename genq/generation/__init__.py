"""Synthetic query generation: passages -> (query, passage) pairs, one concern per module.

* :mod:`~genq.generation.settings`: the knobs of a run and its family defaults;
* :mod:`~genq.generation.prompts`: templates, chat rendering, query clean-up (every backend's);
* :mod:`~genq.generation.family`: seq2seq or decoder-only, from the model's config;
* :mod:`~genq.generation.backend`: what backends share;
* :mod:`~genq.generation.load`: which backend a run uses, and loading it;
* :mod:`~genq.generation.torch_backend` (with :mod:`~genq.generation.sampling` and
  :mod:`~genq.generation.kv_cache`): genq's own decoding loops, any torch device;
* :mod:`~genq.generation.ct2_backend`: CTranslate2, int8 on a CPU;
* :mod:`~genq.generation.run` (with :mod:`~genq.generation.journal`): the resumable run;
* :mod:`~genq.generation.pairs_file`: reading a pairs file, for every later stage.

No module mixes a sampling loop with file writing. ``genq.generate`` is the public import path.
"""
