"""Curation methods in the benchmark grid: SemDeDup and prototypes as static pruning methods on
``pruning.embeddings``, their embedding sources (an encoder's checkpoint, a pre-run) and their
compute on the compute axis."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

import ssl_emp.benchmark.embeddings
from ssl_emp.cli import main
from ssl_emp.config import load_config
from ssl_emp.curate.clusters import normalised, spherical_kmeans
from ssl_emp.curate.embed import cached_embeddings, file_hash
from ssl_emp.curate.prototypes import prototype_ranking
from ssl_emp.curate.semdedup import find_duplicates, semdedup_keep
from ssl_emp.data.fingerprint import split_fingerprint
from ssl_emp.pruning import DynamicPruner
from tests.conftest import TINY
from tests.helpers import bench_file, benchmark, results, rows_by_id

N = 256  # the sweep's training images (digits)


def planted(n: int = 300, copies: int = 60, dim: int = 8) -> np.ndarray:
    """Unit rows: ``n - copies`` random directions and near-copies of the first ``copies``."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(n - copies, dim))
    return normalised(np.concatenate([base, base[:copies] + 0.05 * rng.normal(size=(copies, dim))]))


def _kept(method: str, emb: np.ndarray, rate: float = 0.0, **params: float) -> tuple[np.ndarray, DynamicPruner]:
    pruner = DynamicPruner(len(emb), method=method, pruning_rate=rate, epochs=2, seed=3, inputs={"embeddings": emb},
                           curate_k=4, curate_iterations=20, **params)
    pruner.set_epoch(0)
    return pruner.kept_indices().numpy(), pruner


@pytest.mark.parametrize("rate", [0.1, 0.25, 0.7])
def test_semdedup_at_a_rate_keeps_exactly_the_least_duplicated(rate):
    emb = planted()
    kept, pruner = _kept("semdedup", emb, rate)
    assert len(kept) == math.ceil((1 - Fraction(str(rate))) * len(emb))
    # Directly: each image's largest cosine to an earlier member of its cluster; the largest ones go.
    found = find_duplicates(emb, spherical_kmeans(emb, 4, 20, 3), "hard", 3)
    order = sorted(range(len(emb)), key=lambda i: (found.max_sim[i], i))
    assert kept.tolist() == sorted(order[:len(kept)])
    eps = pruner.selection_info["semdedup_eps"]  # the implied ε reproduces the set
    assert np.flatnonzero(~found.removed(eps)).tolist() == kept.tolist()


def test_the_other_curation_methods_equal_their_direct_computations():
    emb = planted()
    at_eps, pruner = _kept("semdedup-eps", emb, semdedup_eps=0.01)
    assert at_eps.tolist() == semdedup_keep(emb, 0.01, 4, 20, seed=3).tolist() and len(at_eps) < len(emb)
    assert pruner.budget is None and pruner.selection_info == {"semdedup_eps": 0.01}  # its own rate
    then_random, _ = _kept("semdedup+random", emb, 0.5, semdedup_eps=0.01)
    assert len(then_random) == 150 and set(then_random) <= set(at_eps)
    ranking = prototype_ranking(spherical_kmeans(emb, 4, 20, 3), "hard")
    assert _kept("prototypes", emb, 0.7)[0].tolist() == sorted(ranking[:90].tolist())
    assert _kept("prototypes-easy", emb, 0.7)[0].tolist() == sorted(ranking[::-1][:90].tolist())


# --------------------------------------------------------------------------- pruning.embeddings in pretrain
def _refused(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_pretrain_refuses_embeddings_of_other_data_or_size(tmp_path, capsys):
    cfg = load_config(None, ["data.image_size=16", f"data.train_subset={N}"])
    good = split_fingerprint(cfg.data)
    pretrain = ["pretrain", *TINY, "--epochs", "1", "--set", f"data.train_subset={N}", "--method", "semdedup",
                "--pruning-rate", "0.5"]

    def saved(name: str, rows: int, fingerprint: str):
        folder = tmp_path / name
        folder.mkdir()
        cached_embeddings(folder, "train", {"data_fingerprint": fingerprint}, lambda: planted(rows, 10))
        return folder / "embeddings_train.npy"

    err = _refused(capsys, [*pretrain, "--output-dir", str(tmp_path / "a"), "--set",
                            f"pruning.embeddings={saved('other', N, good[::-1])}"])
    assert "was made from other data" in err
    err = _refused(capsys, [*pretrain, "--output-dir", str(tmp_path / "b"), "--set",
                            f"pruning.embeddings={saved('size', 100, good)}"])
    assert f"has 100 rows but the training split has {N} images" in err
    err = _refused(capsys, [*pretrain, "--output-dir", str(tmp_path / "c")])
    assert "reads per-sample embeddings: set pruning.embeddings" in err
    err = _refused(capsys, ["pretrain", *TINY, "--output-dir", str(tmp_path / "d"), "--set",
                            f"pruning.embeddings={saved('emp', N, good)}"])
    assert "reads no embeddings" in err
    assert not any((tmp_path / x).exists() for x in "abcd")


# --------------------------------------------------------------------------- the grid
@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """A tiny SimCLR encoder trained on digits images disjoint from the sweep's (offset N)."""
    out = tmp_path_factory.mktemp("encoder") / "run"
    assert main(["pretrain", "--output-dir", str(out), *TINY, "--epochs", "1", "--set", "eval.eval_every=0",
                 "--set", f"data.train_subset={N}", "--set", f"data.train_subset_offset={N}"]) == 0
    return out / "checkpoints" / "final.pt"


def test_grid_methods_expand_run_and_report_with_both_sources(tmp_path, encoder, monkeypatch, capsys):
    grid = {"methods": ["random-dynamic", "semdedup@disjoint", "semdedup@prerun", "prototypes@prerun"],
            "rates": [0.5], "seeds": [0],
            "embeddings": {"disjoint": {"checkpoint": str(encoder)}, "prerun": {"prerun_epochs": 1}},
            "method_params": {"semdedup@disjoint": {"curate_k": 4}, "semdedup@prerun": {"curate_k": 4},
                              "prototypes@prerun": {"curate_k": 4}}}
    config = bench_file(tmp_path, grid, epochs=1, data={"train_subset": N})
    out = tmp_path / "bench"
    assert benchmark(config, out) == 0
    rows = rows_by_id(out)
    assert set(rows) == {"random-dynamic_r0.5_s0", "semdedup@disjoint_r0.5_s0", "semdedup@prerun_r0.5_s0",
                         "prototypes@prerun_r0.5_s0"}
    plain, disjoint, prerun = (rows[f"{m}_r0.5_s0"] for m in ("random-dynamic", "semdedup@disjoint", "semdedup@prerun"))
    assert plain["compute_visits"] == plain["sample_visits"] and plain.get("embed_source") is None
    assert disjoint["embed_source"] == "disjoint" and disjoint["prerun_visits"] == 0
    assert disjoint["compute_visits"] == disjoint["sample_visits"] + N  # one forward pass per image
    assert disjoint["encoder_visits"] == N  # named: the encoder's one epoch
    assert prerun["embed_source"] == "prerun" and prerun["prerun_visits"] == N  # one full-data epoch, added
    assert prerun["compute_visits"] == prerun["sample_visits"] + N + N
    assert 0 < prerun["semdedup_eps"] <= 1 and prerun["achieved_rate"] == pytest.approx(0.5)
    # The run folder records the embeddings it read, by sha1.
    cached = out / "embeddings" / "prerun_s0" / "embeddings_train.npy"
    record = json.loads((out / "runs" / "semdedup@prerun_r0.5_s0" / "embeddings.json").read_text())
    assert record["sha1"] == file_hash(cached) and record["selection"]["semdedup_eps"] == prerun["semdedup_eps"]
    report = (out / "report.md").read_text()
    assert "## Curation" in report and "| semdedup@prerun | 0.5 | prerun |" in report
    assert "| semdedup@disjoint | 0.5 | disjoint |" in report
    # Killed before its last run: the rerun trains that run only, reusing the cached pre-run and embeddings.
    stamp = {p: p.stat().st_mtime_ns for p in (cached, out / "embeddings" / "disjoint" / "embeddings_train.npy")}
    (out / "results.json").write_text(json.dumps([r for r in results(out) if r["method"] != "prototypes@prerun"]))
    monkeypatch.setattr(ssl_emp.benchmark.embeddings, "embed", lambda *a, **k: pytest.fail("embedded again"))
    capsys.readouterr()
    assert benchmark(config, out) == 0
    assert "1 to run" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp
    assert rows_by_id(out)["prototypes@prerun_r0.5_s0"]["prerun_visits"] == N


def test_a_grid_method_that_reads_embeddings_names_its_source(tmp_path, capsys):
    for methods, sources, words in (
            (["semdedup"], {}, "grid method 'semdedup' reads per-sample embeddings: list it as semdedup@SOURCE"),
            (["semdedup@x"], {"y": {"prerun_epochs": 1}}, "no source 'x' in grid.embeddings (y)"),
            (["emp@y"], {"y": {"prerun_epochs": 1}}, "only methods that read embeddings take @SOURCE"),
            (["semdedup@y"], {"y": {"prerun_epochs": 0}}, "grid.embeddings.y.prerun_epochs must be an integer >= 1"),
            (["semdedup@a_b"], {"a_b": {"prerun_epochs": 1}}, "a source name is lower-case letters")):
        config = bench_file(tmp_path, {"methods": methods, "rates": [0.5], "embeddings": sources})
        err = _refused(capsys, ["benchmark", "--config", str(config), "--output-dir", str(tmp_path / "o"), "--dry-run"])
        assert words in err, err
    config = bench_file(tmp_path, {"methods": ["semdedup@d"], "rates": [0.5],
                                   "embeddings": {"d": {"checkpoint": str(tmp_path / "none.pt")}}})
    assert "grid.embeddings.d.checkpoint not found" in _refused(
        capsys, ["benchmark", "--config", str(config), "--output-dir", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()



def test_a_diverged_pre_run_fails_its_runs_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    """Like a run's own divergence: no row for the runs that needed the pre-run, the others run, exit 1."""
    import ssl_emp.benchmark.sweep
    from ssl_emp.errors import TrainingDiverged

    def diverged(*args, **kwargs):
        raise TrainingDiverged("loss is nan at epoch 1 (the pre-run)")

    monkeypatch.setattr(ssl_emp.benchmark.sweep, "prepare_embeddings", diverged)
    grid = {"methods": ["random-dynamic", "semdedup@prerun"], "rates": [0.5], "seeds": [0],
            "embeddings": {"prerun": {"prerun_epochs": 1}}, "method_params": {"semdedup@prerun": {"curate_k": 4}}}
    out = tmp_path / "bench"
    assert benchmark(bench_file(tmp_path, grid, epochs=1, data={"train_subset": N}), out) == 1
    assert set(rows_by_id(out)) == {"random-dynamic_r0.5_s0"}
    assert "semdedup@prerun_r0.5_s0" in capsys.readouterr().out.split("diverged and have no row:")[-1]
