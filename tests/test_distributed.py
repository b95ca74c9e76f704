"""Generation as a Ray Data job on a local Ray (2 CPUs): the same pairs as one process, resumable by shard."""

from __future__ import annotations

import json
import random

import pytest

from genq.generate import GenerationConfig, QueryGenerator, generate_pairs, meta_path_for
from genq.io import GenqError

from .conftest import WORDS, StopAfter, write_jsonl

ray = pytest.importorskip("ray")

from genq.distributed import RayOptions, generate_pairs_ray, plan_shards, shard_dir_for  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def corpus(tmp_path, n=40):
    rng = random.Random(3)
    return write_jsonl(tmp_path / "passages.jsonl", [
        {"_id": f"d{i}", "title": "", "text": " ".join(rng.choice(WORDS) for _ in range(12))} for i in range(n)])


def config_for(model):
    return GenerationConfig(model=str(model), queries_per_passage=3, batch_size=4, max_length=8, dtype="float32",
                            seed=5, backend="torch")


def pairs_of(path):
    return sorted((r["passage_id"], r["query"]) for r in map(json.loads, path.read_text().splitlines()))


def test_ray_writes_the_pairs_one_process_writes(tmp_path, tiny_t5_dir):
    passages = corpus(tmp_path)
    single, distributed = tmp_path / "single.jsonl", tmp_path / "ray.jsonl"
    generate_pairs(passages, single, config_for(tiny_t5_dir), progress=False)
    summary = generate_pairs_ray(passages, distributed, config_for(tiny_t5_dir), RayOptions(workers=2, shard_size=8),
                                 progress=False)
    assert pairs_of(distributed) == pairs_of(single) and summary.pairs_in_file == len(pairs_of(single))
    assert not shard_dir_for(distributed).exists()  # merged and cleaned up
    ours, theirs = (json.loads(meta_path_for(p).read_text()) for p in (distributed, single))
    assert ours["counts"] == theirs["counts"] and ours["parameters"] == theirs["parameters"]
    assert ours["execution"]["engine"] == "ray" and ours["execution"]["shards"] == 5
    # a finished Ray output is as finished for a plain rerun, and the other way round
    assert generate_pairs(passages, distributed, config_for(tiny_t5_dir), progress=False).already_complete
    assert generate_pairs_ray(passages, single, config_for(tiny_t5_dir), RayOptions(), progress=False).already_complete


def test_a_rerun_after_a_crash_skips_finished_shards_and_resumes_the_cut_one(tmp_path, tiny_t5_dir):
    from genq.generate import identify_run

    passages = corpus(tmp_path)
    single, distributed = tmp_path / "single.jsonl", tmp_path / "ray.jsonl"
    config = config_for(tiny_t5_dir)
    generate_pairs(passages, single, config, progress=False)
    # the state a driver crash leaves: shards cut, shard 0 finished, shard 1 half done, the rest untouched
    ray_config = config_for(tiny_t5_dir)
    ray_config.device = "cpu"
    run = identify_run(passages, ray_config)
    shards = plan_shards(passages, shard_dir_for(distributed), {"settings": run.settings, "source": run.source},
                         8, None, overwrite=False)
    real = QueryGenerator(ray_config)
    generate_pairs(shards[0]["passages"], shards[0]["output"], ray_config, progress=False, generator=real)
    with pytest.raises(KeyboardInterrupt):
        generate_pairs(shards[1]["passages"], shards[1]["output"], ray_config, progress=False,
                       generator=StopAfter(real, 1))
    summary = generate_pairs_ray(passages, distributed, config_for(tiny_t5_dir), RayOptions(workers=2, shard_size=8),
                                 progress=False)
    assert summary.passages_skipped_as_done == 8 and summary.passages_generated == 32
    got = pairs_of(distributed)
    assert got == pairs_of(single) and len(got) == len(set(got))  # nothing lost, nothing doubled


def test_an_interrupted_run_with_other_settings_is_refused(tmp_path, tiny_t5_dir):
    from genq.generate import identify_run

    passages = corpus(tmp_path, n=10)
    out = tmp_path / "ray.jsonl"
    config = config_for(tiny_t5_dir)
    config.device = "cpu"
    run = identify_run(passages, config)
    plan_shards(passages, shard_dir_for(out), {"settings": {**run.settings, "top_p": 0.5}, "source": run.source},
                8, None, overwrite=False)
    with pytest.raises(GenqError, match="other settings"):
        generate_pairs_ray(passages, out, config_for(tiny_t5_dir), RayOptions(shard_size=8), progress=False)
    generate_pairs_ray(passages, out, config_for(tiny_t5_dir), RayOptions(shard_size=8), overwrite=True,
                       progress=False)
    assert len(pairs_of(out)) > 0


def test_ray_encoding_gives_the_same_index_filter_and_negatives(tmp_path, tiny_t5_dir, tiny_encoder_dir):
    """`genq index/filter/mine-negatives --ray`: the corpus encoded in shards by 2 workers, results unchanged."""
    import numpy as np
    from click.testing import CliRunner

    from genq.cli import main

    passages = corpus(tmp_path)
    pairs = tmp_path / "pairs.jsonl"
    generate_pairs(passages, pairs, config_for(tiny_t5_dir), progress=False)
    ray_args = ["--ray", "--workers", "2", "--shard-size", "8", "--dtype", "float32"]
    runner = CliRunner()
    for name, args in (("index", ["index", passages, "-m", tiny_encoder_dir, "-o", "{out}", "--save-embeddings"]),
                       ("filter", ["filter", pairs, "--corpus", passages, "-m", tiny_encoder_dir, "-o", "{out}"]),
                       ("negatives", ["mine-negatives", pairs, "--corpus", passages, "-m", tiny_encoder_dir,
                                      "-o", "{out}"])):
        outputs = []
        for suffix, extra in (("plain", ["--dtype", "float32"]), ("ray", ray_args)):
            out = tmp_path / f"{name}-{suffix}" / ("index" if name == "index" else "out.jsonl")
            result = runner.invoke(main, [str(a).replace("{out}", str(out)) for a in args] + extra)
            assert result.exit_code == 0, result.output
            outputs.append(out)
        if name == "index":
            plain, distributed = (np.load(o / "embeddings.npy") for o in outputs)
            assert np.allclose(plain, distributed, atol=1e-6)
            assert (outputs[0] / "passages.jsonl").read_text() == (outputs[1] / "passages.jsonl").read_text()
            assert not (tmp_path / "index-ray" / "index.shards").exists()
        else:
            assert outputs[0].read_text() == outputs[1].read_text()


def test_adapt_with_ray_runs_its_jobs_in_one_resumable_run(tmp_path, raw_corpus, tiny_t5_dir, tiny_encoder_dir,
                                                          monkeypatch):
    """`adapt --ray`: generate, filter, mine-negatives and index as Ray Data jobs, the same files as a plain run;
    a driver interrupted in the index stage resumes there, reusing the shards Ray had encoded."""
    import numpy as np
    from click.testing import CliRunner

    import genq.pipeline.stages as stages
    from genq.cli import main

    from .test_pipeline import adapt_args, stage_status

    # torch samples each passage from its own seed, so shards and batches draw the same queries (CTranslate2
    # seeds a whole process: another batching draws others)
    extra = ("--filter-top-k", "5", "--hard-negatives", "1", "--epochs", "1", "--queries-per-passage", "2",
             "--backend", "torch")
    runner = CliRunner()
    plain = runner.invoke(main, adapt_args(raw_corpus, tmp_path / "plain", tiny_t5_dir, tiny_encoder_dir, *extra))
    assert plain.exit_code == 0, plain.output
    ray_args = adapt_args(raw_corpus, tmp_path / "ray", tiny_t5_dir, tiny_encoder_dir, *extra, "--ray", "--workers",
                          "2", "--shard-size", "4")
    real_build = stages.build_index
    shards_seen = []

    def killed(*args, **kwargs):  # the driver stops once Ray has encoded the corpus for the index
        shards_seen.extend(sorted((tmp_path / "ray" / ".genq-cache" / "ray-index").glob("*.npy")))
        raise KeyboardInterrupt

    monkeypatch.setattr(stages, "build_index", killed)
    interrupted = runner.invoke(main, ray_args)
    assert interrupted.exit_code != 0 and shards_seen
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["stages"]["index"]["status"] == "interrupted"
    assert manifest["stages"]["generate"]["params"]["engine"] == "ray"
    monkeypatch.setattr(stages, "build_index", real_build)
    mtimes = {path: path.stat().st_mtime_ns for path in shards_seen}
    resumed = runner.invoke(main, ray_args)
    assert resumed.exit_code == 0, resumed.output
    assert stage_status(resumed.output) == {"prepare": "skipped", "generate": "skipped", "filter": "skipped",
                                            "negatives": "skipped", "train": "skipped", "index": "ran"}
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in mtimes.items() if path.exists())
    for name in ("pairs.jsonl", "pairs.filtered.jsonl", "pairs.negatives.jsonl"):
        ours, theirs = ((tmp_path / run / name).read_text().splitlines() for run in ("ray", "plain"))
        assert sorted(ours) == sorted(theirs) and ours, name
    ours = json.loads((tmp_path / "ray" / "pairs.meta.json").read_text())
    assert ours["execution"]["engine"] == "ray"
    assert not (tmp_path / "ray" / ".genq-cache" / "ray-index").exists()
    from genq.search import Searcher

    # the Ray job writes the same pairs in another order, so the two runs train two models: the Ray index is
    # compared with one built in this process from the Ray run's own model
    ray_run = tmp_path / "ray"
    rebuilt = runner.invoke(main, ["index", str(ray_run / "passages.jsonl"), "-m", str(ray_run / "model"),
                                   "-o", str(tmp_path / "plain-index"), "--dtype", "float32"])
    assert rebuilt.exit_code == 0, rebuilt.output
    plain_hits = Searcher.load(tmp_path / "plain-index", dtype="float32").search("brake pad", k=3, mode="dense")
    ray_hits = Searcher.load(tmp_path / "ray" / "index", dtype="float32").search("brake pad", k=3, mode="dense")
    assert [h.id for h in plain_hits] == [h.id for h in ray_hits]
    assert np.allclose([h.score for h in plain_hits], [h.score for h in ray_hits], atol=1e-5)


def test_adapt_refuses_ray_with_a_time_budget(tmp_path, raw_corpus, tiny_t5_dir, tiny_encoder_dir):
    from click.testing import CliRunner

    from genq.cli import main

    from .test_pipeline import adapt_args

    result = CliRunner().invoke(main, adapt_args(raw_corpus, tmp_path / "run", tiny_t5_dir, tiny_encoder_dir, "--ray",
                                                 "--time-budget", "5m"))
    assert result.exit_code == 2 and "--time-budget" in result.output and "--ray" in result.output
