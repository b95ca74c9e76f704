"""Rates measured on this machine, kept between runs: a short ``--time-budget`` is not spent measuring again.

A plan needs three numbers (seconds per passage generating, per training step, per passage
encoding) and measuring them costs minutes on a CPU: for a 3-minute budget that was 80% of
the run. They depend on the machine (CPU model, threads, device), the models (their files'
fingerprint, precision, backend), the knobs that set the work per item (batch size, lengths)
and the corpus's passage length; under all of those as one key they are kept in
``~/.cache/genq/rates.json`` (``$GENQ_CACHE_DIR``), reused for ``MAX_AGE_DAYS``, and corrected
by what a run's generate and train stages really took. A damaged file is set aside and the
rates measured again: it is a cache, never a reason to fail.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path

from genq.hardware import cpu_description, cpu_flags
from genq.io import cache_root, write_json_atomic

logger = logging.getLogger(__name__)

RATES_FILE = "rates.json"
MAX_AGE_DAYS = 30  # a driver, library or BIOS update changes rates; a month-old measurement is taken again
FORMAT = 1
# the instruction sets that decide which kernels torch and CTranslate2 run, so what a step costs
KERNEL_FLAGS = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8"})


def rates_path() -> Path:
    return cache_root() / RATES_FILE


def machine_facts() -> dict:
    """What makes one machine's rates differ from another's: CPU, the instruction sets that pick its
    kernels, threads torch uses, GPU name.

    The model name alone does not tell CPUs apart: this project's machines all call themselves
    "AMD EPYC", some with AVX512-BF16 (bf16 native, chosen by --dtype auto) and some without
    (float32 then, and every rate differs).
    """
    import torch

    cpu = cpu_description()
    family_model = f"{cpu['cpu family']}/{cpu.get('model', '')}" if "cpu family" in cpu else ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu.get("model name") or os.uname().machine, "cpu_family_model": family_model,
            "isa": sorted(cpu_flags() & KERNEL_FLAGS), "threads": torch.get_num_threads(), "gpu": gpu}


def length_bucket(passages: list[dict]) -> int:
    """The corpus's mean passage length in characters, in steps of about 40% (rates scale with it)."""
    if not passages:
        return 0
    mean = sum(len(p.get("text") or "") + len(p.get("title") or "") for p in passages) / len(passages)
    return round(math.log(max(mean, 1.0), 1.4))


def rate_key(parts: dict) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()


def _read() -> dict:
    path = rates_path()
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("the rate cache %s is unreadable (%s); measuring again", path, exc)
        return {}
    if not isinstance(stored, dict) or stored.get("format") != FORMAT or not isinstance(stored.get("rates"), dict):
        logger.warning("the rate cache %s is not one genq wrote; measuring again", path)
        return {}
    return stored["rates"]


def load_rates(key: str, max_age_days: float = MAX_AGE_DAYS) -> dict | None:
    """The rates kept under ``key`` with when they were measured, or None (missing, stale or damaged)."""
    entry = _read().get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("rates"), dict):
        return None
    measured = entry.get("measured_at")
    if not isinstance(measured, int | float) or time.time() - measured > max_age_days * 86_400:
        return None
    rates = entry["rates"]
    if not all(isinstance(value, int | float) and value >= 0 for value in rates.values()):
        return None
    return entry


def save_rates(key: str, rates: dict, described: dict | None = None) -> None:
    """Keep ``rates`` under ``key`` (a read, change and atomic rewrite of the whole small file)."""
    try:
        stored = _read()
        previous = stored.get(key) if isinstance(stored.get(key), dict) else {}
        stored[key] = {"rates": {**(previous.get("rates") or {}), **rates}, "measured_at": time.time(),
                       "described": described or previous.get("described")}
        write_json_atomic(rates_path(), {"format": FORMAT, "rates": stored})
    except OSError as exc:  # a read-only or full cache costs a measurement next time, nothing more
        logger.warning("could not keep the measured rates in %s: %s", rates_path(), exc)


def correct_rates(key: str, **actual: float) -> None:
    """Replace kept rates by what a stage of a real run took (a probe is a few batches; a stage is the rate)."""
    entry = load_rates(key, max_age_days=math.inf)
    if entry is None:
        return
    measured = {name: round(value, 5) for name, value in actual.items() if value and value > 0}
    if measured:
        save_rates(key, measured)
