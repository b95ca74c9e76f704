"""Which backend a run uses, and loading a generator on it: the factory the run, the Ray actors and ``adapt`` call.

It lives apart from :mod:`genq.generation.backend` because the backends import that module's
shared base class; the factory imports the backends.

``--backend auto`` follows what ``benchmarks/generate_speed.py`` measured on this project's
2-core CPU (``benchmarks/results/generate_speed.md``, 48 passages, 2 alternating rounds): a
T5-base-shaped model sampled 4.0x faster than the sentence-transformers example loop on
CTranslate2 int8, against 3.0x for genq's torch loop in bfloat16 (1.7x in float32, the precision
of CPUs without native bf16), while for the decoder-only SmolLM2-135M genq's torch loop in
bfloat16 was 1.9x faster than CTranslate2 int8. No GPU figures exist yet, so on a GPU auto keeps
torch (whose batch sizing was measured there).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from genq.generation.backend import QueryBackend, device_kind
from genq.generation.family import detect_family, split_gguf
from genq.generation.settings import GenerationConfig
from genq.io import GenqError
from genq.models import resolve_model

logger = logging.getLogger(__name__)

# (family, device kind) -> the faster backend, as measured; anything not listed: torch. Decoder-only models stay
# on torch for quality as well as speed: SmolLM2's int8 queries round-tripped 2.9 points worse (top-3, 3 seeds,
# benchmarks/results/backend_quality.md), past the 2-point guard auto keeps.
MEASURED_FASTER = {("seq2seq", "cpu"): "ctranslate2"}


@dataclass
class BackendChoice:
    name: str  # "torch" or "ctranslate2"
    reason: str  # one line: what was asked, or why auto chose it


def ctranslate2_installed() -> bool:
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return False
    return True


def choose_backend(config: GenerationConfig, family: str) -> BackendChoice:
    """The backend ``config.backend`` names, or for "auto" the one measured faster for this family and device."""
    kind = device_kind(config.device)
    if config.backend == "torch":
        return BackendChoice("torch", "--backend torch")
    if config.backend == "ctranslate2":
        if not ctranslate2_installed():
            raise GenqError("--backend ctranslate2: the ctranslate2 package is not installed\n"
                            "  fix: pip install ctranslate2 (or --backend torch)")
        if kind not in ("cpu", "cuda"):
            raise GenqError(f"--backend ctranslate2 runs on cpu or cuda, not {kind!r}\n  fix: --device cpu, or "
                            "--backend torch")
        return BackendChoice("ctranslate2", "--backend ctranslate2")
    if config.dtype == "int8":
        if ctranslate2_installed() and kind in ("cpu", "cuda"):
            return BackendChoice("ctranslate2", "auto: --dtype int8 is CTranslate2's")
        raise GenqError("--dtype int8 needs the CTranslate2 backend (pip install ctranslate2, on cpu or cuda)")
    faster = MEASURED_FASTER.get((family, kind), "torch")
    if faster == "ctranslate2" and not ctranslate2_installed():
        return BackendChoice("torch", f"auto: CTranslate2 samples {family} models faster on {kind} but is not "
                                      "installed (pip install ctranslate2)")
    if faster == "ctranslate2" and config.dtype not in ("auto", "int8"):
        import ctranslate2

        if config.dtype not in ctranslate2.get_supported_compute_types(kind):  # e.g. bfloat16 on most CPUs
            return BackendChoice("torch", f"auto: --dtype {config.dtype} is not a CTranslate2 compute type on {kind}")
    if faster == "ctranslate2":
        return BackendChoice("ctranslate2", f"auto: measured fastest for {family} models on {kind} "
                                            "(int8: 4.0x the example loop; torch 3.0x in bfloat16, 1.7x in float32)")
    why = {"causal": "genq's torch loop measured fastest for decoder-only models",
           "seq2seq": f"no CTranslate2 measurement on {kind} yet"}[family]
    return BackendChoice("torch", f"auto: {why}")


def resolved_family(config: GenerationConfig) -> str:
    """"seq2seq" or "causal": as the config says, else as the model's own config does."""
    if config.family != "auto":
        return config.family
    model_ref, gguf = split_gguf(resolve_model(config.model, what="generator"), config.gguf_file)
    return detect_family(model_ref, gguf)


def load_generator(config: GenerationConfig) -> QueryBackend:
    """The generator of ``config`` on the backend it asks for (auto: see :func:`choose_backend`).

    A model CTranslate2 cannot convert or load falls back to torch with a one-line warning
    (under auto and under --backend ctranslate2 alike: the run goes on, and its meta says which
    backend sampled).
    """
    config.validate()
    family = resolved_family(config)
    config = replace(config, family=family)  # read once: the generator does not read the model's config again
    choice = choose_backend(config, family)
    if choice.name == "ctranslate2":
        from genq.generation.ct2_backend import CTranslate2Generator, Unavailable

        try:
            return CTranslate2Generator(config, choice.reason)
        except Unavailable as exc:
            logger.warning("CTranslate2 cannot run %s (%s); generating with torch", config.model, exc)
            choice = BackendChoice("torch", f"{choice.reason}; fell back to torch: {exc}")
    from genq.generation.torch_backend import QueryGenerator

    if config.dtype == "int8":
        config = replace(config, dtype="auto")  # int8 was CTranslate2's
    return QueryGenerator(config, backend_reason=choice.reason)
