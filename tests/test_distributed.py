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
