"""Which cross-encoder recipe learns from a collection's synthetic pairs? The probe behind genq's reranker defaults.

The whole-Cranfield reranker of genq's first recipe (1 epoch, linearly decaying 2e-5) ended at
the label prior and scrambled BM25's ranking. This trains cross-encoders from all-MiniLM-L6-v2
(a new one-logit head) on the pairs and BM25 negatives a ``genq adapt --reranker`` run mined
(``RUN/pairs.reranker-negatives.jsonl``), holding out the pairs of 100 passages, and reports for
each recipe:

* the training loss curve (BCE's floor of knowing nothing at 1:3 is 0.562);
* held-out MRR: the own passage ranked among itself and its 3 BM25 negatives (chance 0.52);
* nDCG@10 of BM25's top 20 for the collection's *real* queries, reranked by the model, against
  BM25's own order.

Recipes (name: head, lr, negatives, epochs, schedule, loss): ``old`` cls 2e-5 BM25 1 linear bce;
``mean-head`` the same with a mean-pooled head; ``random-negatives`` the same with random
negatives; ``new`` cls 5e-5 BM25 3 constant_with_warmup bce (genq's default now);
``dense-negatives`` ``new`` with negatives mined by the base bi-encoder (all-MiniLM-L6-v2, the
same ranks 11-100 and margin as the run's BM25 ones; mined once into
``RUN/pairs.reranker-dense-negatives.jsonl``); ``mnrl`` ``new`` with ``--loss mnrl`` (a softmax
over the positive, its 3 negatives and 3 in-batch passages). Every recipe trains on the rows
``genq train-reranker`` builds (``genq.train_reranker.training_dataset``); the held-out MRR is
over the BM25 negatives for every recipe, so that the column compares like with like. 192
tokens, batch 32, bf16 where the CPU does it natively. About 7 minutes per epoch on a 2-core CPU
(mnrl scores 7 passages per query, not 4: about 1.7x that).

    python benchmarks/reranker_recipe.py --pairs runs/whole-cranfield/pairs.reranker-negatives.jsonl \
        --recipes old mean-head random-negatives new dense-negatives mnrl

A run over some recipes keeps the others already in the results file.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import merged_results, write_results  # noqa: E402
from genq.evaluate import bm25_candidates, load_collection, score_run  # noqa: E402
from genq.hardware import training_bf16  # noqa: E402
from genq.models import resolve_model  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"
RESULTS = ROOT / "benchmarks" / "results"
BASE = "sentence-transformers/all-MiniLM-L6-v2"
OLD = {"head": "cls", "lr": 2e-5, "negatives": "bm25", "epochs": 1.0, "schedule": "linear", "loss": "bce"}
NEW = {**OLD, "lr": 5e-5, "epochs": 3.0, "schedule": "constant_with_warmup"}
RECIPES = {
    "old": OLD,
    "mean-head": {**OLD, "head": "mean"},
    "random-negatives": {**OLD, "negatives": "random"},
    "new": NEW,
    "dense-negatives": {**NEW, "negatives": "dense"},
    "mnrl": {**NEW, "loss": "mnrl"},
}
NEGATIVES = 3


def cross_encoder(head: str, max_length: int):
    import torch
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.cross_encoder import CrossEncoder
    from sentence_transformers.sentence_transformer.modules import Pooling

    location = resolve_model(BASE)
    if head == "cls":
        return CrossEncoder(location, num_labels=1, max_length=max_length)
    modules = [Transformer(location, max_seq_length=max_length), Pooling(384, "mean"),
               Dense(384, 1, activation_function=torch.nn.Identity(), module_output_name="scores")]
    return CrossEncoder(modules=modules, max_length=max_length)


def dense_negatives(bm25_pairs: Path) -> dict[tuple[str, str], list[str]]:
    """Each (query, passage_id)'s negatives mined by the base bi-encoder, with the BM25 mining's own settings."""
    from genq.negatives import MiningConfig, mine_negatives

    run_dir = bm25_pairs.parent
    mined = run_dir / "pairs.reranker-dense-negatives.jsonl"
    if not mined.exists():
        params = json.loads((run_dir / "manifest.json").read_text())["stages"]["reranker negatives"]["params"]
        config = MiningConfig(**{k: v for k, v in params.items() if k != "pairs"})
        config.retriever = "dense"
        mine_negatives(run_dir / params["pairs"], run_dir / "passages.jsonl", mined, model=BASE, config=config,
                       cache_dir=run_dir / ".genq-cache")
    rows = [json.loads(line) for line in mined.read_text(encoding="utf-8").splitlines()]
    return {(r["query"], r["passage_id"]): [n["text"] for n in r["negatives"]] for r in rows}


def negatives_of(recipe: dict, train: list[dict], dense: dict | None) -> list[list[str]]:
    rng = random.Random(0)
    pool = [r["passage"] for r in train]
    if recipe["negatives"] == "random":
        return [[p for p in rng.sample(pool, NEGATIVES + 1) if p != row["passage"]][:NEGATIVES] for row in train]
    if recipe["negatives"] == "dense":
        return [dense[(row["query"], row["passage_id"])][:NEGATIVES] for row in train]
    return [[n["text"] for n in row["negatives"]][:NEGATIVES] for row in train]


def run_recipe(name: str, rows: list[dict], held: set[str], collection, max_length: int, work: Path,
               dense: dict | None) -> dict:
    import torch
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments

    from genq.train_reranker import training_dataset, training_loss

    recipe = RECIPES[name]
    torch.manual_seed(0)
    train = [r for r in rows if r["passage_id"] not in held]
    test = [r for r in rows if r["passage_id"] in held]
    negatives = negatives_of(recipe, train, dense)
    if recipe["loss"] == "mnrl":  # its columns need a full set of negatives on every row
        kept = [i for i, n in enumerate(negatives) if len(n) == NEGATIVES]
        train, negatives = [train[i] for i in kept], [negatives[i] for i in kept]
    dataset, _ = training_dataset(train, negatives, recipe["loss"])
    model = cross_encoder(recipe["head"], max_length)
    args = CrossEncoderTrainingArguments(
        output_dir=str(work / name), num_train_epochs=recipe["epochs"], per_device_train_batch_size=32,
        learning_rate=recipe["lr"], warmup_steps=0.1, lr_scheduler_type=recipe["schedule"], seed=0,
        bf16=training_bf16(None, "cpu"), save_strategy="no", logging_steps=10, report_to="none", use_cpu=True,
        disable_tqdm=True)
    started = time.perf_counter()
    trainer = CrossEncoderTrainer(model=model, args=args, loss=training_loss(model, recipe["loss"], NEGATIVES),
                                  train_dataset=dataset)
    trainer.train()
    seconds = time.perf_counter() - started
    reciprocal = []
    for row in test:
        candidates = [row["passage"]] + [n["text"] for n in row["negatives"]][:NEGATIVES]
        scores = np.asarray(model.predict([(row["query"], c) for c in candidates], show_progress_bar=False))
        reciprocal.append(1.0 / (1 + int((scores[1:] > scores[0]).sum())))
    bm25_scores, bm25_rows = bm25_candidates(collection, 20)
    first, reranked = {}, {}
    for number, query_id in enumerate(collection.queries):
        documents = [collection.corpus[int(i)] for i in bm25_rows[number] if i >= 0]
        first[query_id] = {d["_id"]: float(s) for d, s in zip(documents, bm25_scores[number])}
        scores = model.predict([(collection.queries[query_id], f"{d.get('title', '')} {d['text']}".strip())
                                for d in documents], show_progress_bar=False)
        reranked[query_id] = {d["_id"]: float(s) for d, s in zip(documents, scores)}
    return {"recipe": name, **recipe, "max_length": max_length, "train_rows": len(dataset),
            "steps": trainer.state.global_step, "train_seconds": round(seconds),
            "losses": [round(h["loss"], 3) for h in trainer.state.log_history if "loss" in h],
            "heldout_pairs": len(test), "heldout_mrr": round(float(np.mean(reciprocal)), 4),
            "bm25_top20_ndcg10": round(score_run(collection.qrels, first)[0]["ndcg@10"], 4),
            "reranked_top20_ndcg10": round(score_run(collection.qrels, reranked)[0]["ndcg@10"], 4)}


def merged(results: list[dict]) -> list[dict]:
    """``results`` over the recipes kept in the results file, in RECIPES' order. Rows from before the
    loss and the command were kept per row: bce, and the file's one command."""
    results_file = RESULTS / "reranker_recipe.json"
    legacy_command = json.loads(results_file.read_text()).get("command") if results_file.exists() else None
    rows = [{"command": legacy_command, "loss": "bce", **r} for r in merged_results(results_file, results, "recipe")]
    return sorted(rows, key=lambda r: list(RECIPES).index(r["recipe"]))


def write(results: list[dict], collection: str) -> None:
    lines = [f"# Reranker recipes on the whole-{collection} synthetic pairs (all-MiniLM-L6-v2, new one-logit head)", "",
             "Commands: " + "; ".join(sorted({f"`{r['command']}`" for r in results})) + "  ",
             "Pairs of 100 passages held out; each pair and its 3 negatives (bce: binary cross-entropy over each; "
             "mnrl: a softmax over them and 3 in-batch passages, so its loss has another scale); 192 tokens, "
             "batch 32. Held-out MRR: the own passage among itself and its 3 BM25 negatives (chance 0.52). Last "
             "column: BM25's top 20 for the collection's real queries, reranked.", "",
             "| recipe | head | lr | negatives | epochs | schedule | loss | steps | final loss | held-out MRR | "
             "BM25 top 20 | reranked |", "|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['recipe']} | {r['head']} | {r['lr']} | {r['negatives']} | {r['epochs']:g} | "
                     f"{r['schedule']} | {r['loss']} | {r['steps']} | {r['losses'][-1] if r['losses'] else ''} | "
                     f"{r['heldout_mrr']} | {r['bm25_top20_ndcg10']} | {r['reranked_top20_ndcg10']} |")
    lines += ["", "Loss curves (every 10 steps): " + "; ".join(f"{r['recipe']}: {r['losses']}" for r in results)]
    write_results("reranker_recipe", {"results": results}, "\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, default=ROOT / "runs" / "whole-cranfield" /
                        "pairs.reranker-negatives.jsonl")
    parser.add_argument("--collection", default="cranfield")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--work", type=Path, default=Path("/tmp/genq-reranker-recipe"))
    args = parser.parse_args()
    if not args.pairs.exists():
        raise SystemExit(f"{args.pairs} is missing: run benchmarks/whole_collection.py (or genq adapt --reranker) "
                         "first, or pass --pairs")
    rows = [json.loads(line) for line in args.pairs.read_text(encoding="utf-8").splitlines()]
    passage_ids = sorted({r["passage_id"] for r in rows})
    random.Random(0).shuffle(passage_ids)
    held = set(passage_ids[:100])
    collection = load_collection(SHARED / args.collection)
    command = "python benchmarks/reranker_recipe.py " + " ".join(sys.argv[1:])
    dense = dense_negatives(args.pairs) if any(RECIPES[n]["negatives"] == "dense" for n in args.recipes) else None
    results = []
    for name in args.recipes:
        results.append({"command": command, **run_recipe(name, rows, held, collection, args.max_length, args.work,
                                                         dense)})
        write(merged(results), args.collection)


if __name__ == "__main__":
    main()
