"""`ssl-emp curate` (SemDeDup, self-supervised prototypes) and training on its kept file."""

from __future__ import annotations

import csv
import json
import math
import shutil
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

import ssl_emp.train
from ssl_emp.cli import main
from ssl_emp.config import load_config
from ssl_emp.curate.clusters import normalised, spherical_kmeans
from ssl_emp.curate.prototypes import select_prototypes
from ssl_emp.curate.semdedup import find_duplicates, semdedup_keep, sort_order
from ssl_emp.data import load_data
from ssl_emp.data.fingerprint import split_fingerprint
from ssl_emp.data.keep import write_keep_file
from ssl_emp.errors import ConfigError

DIGITS_TRAIN = 1437  # the digits training split


def planted(n_unique: int = 80, copies: int = 40, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Unit rows: ``n_unique`` random directions, then ``copies`` near-copies of the first ones."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_unique, dim))
    near = base[:copies] + 0.03 * rng.normal(size=(copies, dim))
    return normalised(np.concatenate([base, near]))


# --------------------------------------------------------------------------- the algorithms against direct computations
def _official_order(members: list[int], cos: np.ndarray, keep: str) -> list[int]:
    """sort_clusters.py: sorted by cosine distance to the centroid, descending (stable), for
    keep_hard; semdedup.py reverses that list for keep=easy."""
    hard = sorted(members, key=lambda i: 1 - float(cos[i]), reverse=True)
    return hard[::-1] if keep == "easy" else hard


@pytest.mark.parametrize("keep", ["hard", "easy", "random"])
def test_semdedup_equals_all_pairs_in_sort_order(keep):
    x = planted()
    clusters = spherical_kmeans(x, 4, 20, seed=0)
    eps = 0.01
    sim = x @ x.T  # all pairs, the whole set at once
    expected = np.ones(len(x), dtype=bool)
    for c in range(clusters.k):
        members = np.flatnonzero(clusters.assign == c).tolist()
        if keep == "random":  # the shuffle is the code's own; what follows from the order is checked
            order = [i for i in sort_order(clusters, keep, seed=0).tolist() if clusters.assign[i] == c]
        else:
            order = _official_order(members, clusters.cos_to_centroid, keep)
        m = np.triu(sim[np.ix_(order, order)], k=1)  # semdedup.py: upper triangle, column max
        expected[order] = ~(m.max(axis=0) > np.float32(1 - eps))
    kept = ~find_duplicates(x, clusters, keep, seed=0).removed(eps)
    assert np.array_equal(kept, expected)
    assert 0 < (~kept).sum() <= 40  # near-copies found, nothing else
    # Which member of a planted pair survives: the one earlier in the sort order.
    rank = {i: r for r, i in enumerate(sort_order(clusters, keep, seed=0).tolist())}
    pairs = [(i, 80 + i) for i in range(40) if clusters.assign[i] == clusters.assign[80 + i] and not (kept[i] and kept[80 + i])]
    assert pairs and all(kept[min(p, key=rank.get)] and not kept[max(p, key=rank.get)] for p in pairs)


def test_hard_and_easy_keep_opposite_members():
    x = planted()
    hard, easy = semdedup_keep(x, 0.01, 4, 20, keep="hard"), semdedup_keep(x, 0.01, 4, 20, keep="easy")
    assert len(hard) == len(easy) and set(hard) != set(easy)


def test_blocked_clusters_equal_unblocked():
    x = planted(n_unique=150, copies=70)
    clusters = spherical_kmeans(x, 2, 20, seed=1)  # two large clusters, many tiles each
    for keep in ("hard", "easy", "random"):
        whole = find_duplicates(x, clusters, keep, seed=3, block_size=10_000)
        tiled = find_duplicates(x, clusters, keep, seed=3, block_size=7)
        assert np.array_equal(whole.removed(0.01), tiled.removed(0.01)) and np.array_equal(whole.match, tiled.match)
        np.testing.assert_allclose(whole.max_sim, tiled.max_sim, atol=1e-6)


@pytest.mark.parametrize("keep", ["hard", "easy"])
def test_prototypes_equal_a_direct_sort(keep):
    x = planted()
    clusters = spherical_kmeans(x, 5, 20, seed=0)
    distance = 1 - clusters.cos_to_centroid.astype(np.float64)
    for rate in (0.0, 0.3, 0.7):
        budget = math.ceil((1 - Fraction(repr(rate))) * len(x))  # the decimal typed: 0.7 of 120 keeps 36
        ranked = sorted(range(len(x)), key=lambda i: -distance[i] if keep == "hard" else distance[i])
        kept = select_prototypes(clusters, rate, keep)
        assert sorted(ranked[:budget]) == np.flatnonzero(kept).tolist()
    # A quota: each cluster's top 3 first, then the global ranking fills the budget.
    forced = {i for c in range(clusters.k) for i in [j for j in ranked if clusters.assign[j] == c][:3]}
    expected = forced | set([i for i in ranked if i not in forced][:24 - len(forced)])
    assert np.flatnonzero(select_prototypes(clusters, 0.8, keep, quota=3)).tolist() == sorted(expected)
    with pytest.raises(ConfigError, match="curate.quota=3 keeps 15 images in 5 clusters, more than the 12"):
        select_prototypes(clusters, 0.9, keep, quota=3)


# --------------------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from tests.conftest import TINY

    out = tmp_path_factory.mktemp("pretrain") / "run"
    assert main(["pretrain", "--output-dir", str(out), *TINY, "--epochs", "1", "--set", "eval.eval_every=0"]) == 0
    return out / "checkpoints" / "final.pt"


def curate(*argv: object) -> int:
    return main(["curate", "--no-progress", *map(str, argv)])


def record(out) -> dict:
    return json.loads((out / "curation.json").read_text())


@pytest.mark.slow
def test_seeded_curate_writes_identical_kept_files(tmp_path):
    emb = tmp_path / "emb.npy"
    np.save(emb, planted(n_unique=DIGITS_TRAIN - 300, copies=300, dim=8))
    for method in ("semdedup", "prototypes"):
        flags = ["--embeddings", emb, "--set", f"curate.method={method}", "--set", "curate.eps=0.005"]
        assert curate(*flags, "--output-dir", tmp_path / f"{method}1") == 0
        assert curate(*flags, "--output-dir", tmp_path / f"{method}2") == 0
        first, second = (tmp_path / f"{method}{i}" / "kept.txt" for i in (1, 2))
        assert first.read_text() == second.read_text()
        assert (tmp_path / f"{method}1" / "removed.csv").read_text() == (tmp_path / f"{method}2" / "removed.csv").read_text()
    assert record(tmp_path / "semdedup1")["removed"] > 0 and record(tmp_path / "prototypes1")["kept"] == 719


@pytest.mark.slow
def test_curate_outputs(tmp_path, checkpoint):
    out = tmp_path / "c"
    assert curate("--checkpoint", checkpoint, "--output-dir", out, "--set", "curate.eps=0.01") == 0
    rec = record(out)
    lines = (out / "kept.txt").read_text().splitlines()
    kept = [int(v) for v in lines[1:]]
    assert lines[0].startswith("# ") and rec["data"]["fingerprint"] in lines[0]
    assert kept == sorted(kept) and len(kept) == rec["kept"] and rec["n"] == DIGITS_TRAIN
    with open(out / "removed.csv") as handle:
        removed = list(csv.DictReader(handle))
    assert len(removed) == rec["removed"] > 0 and not {int(r["index"]) for r in removed} & set(kept)
    assert {int(r["duplicate_of"]) for r in removed} <= set(kept)  # the kept image each removed one leads to
    assert all(float(r["cosine"]) > 0.9 for r in removed)
    assert [e["eps"] for e in rec["eps_curve"]] == load_config().curate.eps_range
    assert (out / "eps_curve.csv").is_file() and (out / "eps_curve.png").is_file() and (out / "duplicates.png").is_file()
    assert set(rec["time_s"]) >= {"embed", "cluster", "deduplicate"} and "torch" in rec["versions"]
    # A rerun into the same folder replaces the files and leaves none of the earlier run's behind.
    assert curate("--checkpoint", checkpoint, "--output-dir", out, "--set", "curate.method=prototypes") == 0
    assert record(out)["embeddings"]["reused"] and record(out)["files"] == ["kept.txt", "removed.csv", "curation.json"]
    assert not (out / "eps_curve.png").exists() and not (out / "duplicates.png").exists()


@pytest.mark.slow
def test_embeddings_cache_is_rebuilt_when_checkpoint_or_data_change(tmp_path, checkpoint):
    out = tmp_path / "c"

    def run(ckpt, *flags) -> bool:  # prototypes: no plots to draw, the embeddings are what is tested
        assert curate("--checkpoint", ckpt, "--output-dir", out, "--set", "curate.method=prototypes", *flags) == 0
        return record(out)["embeddings"]["reused"]

    assert run(checkpoint) is False
    assert run(checkpoint, "--set", "curate.rate=0.2") is True
    other = tmp_path / "other.pt"
    saved = torch.load(checkpoint, weights_only=True)
    key = next(k for k in saved["model"] if k.startswith("backbone.") and saved["model"][k].is_floating_point())
    saved["model"][key] = saved["model"][key] + 0.01
    torch.save(saved, other)
    assert run(other) is False
    assert run(other) is True
    assert run(other, "--set", "data.train_subset=1000") is False
    assert record(out)["n"] == 1000
    assert run(other, "--set", "data.train_subset=1000", "--set", "data.image_size=24") is False  # another view


def _table_indices(run) -> list[int]:
    with open(run / "pruning_table.csv") as handle:
        return [int(row["index"]) for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_pretrain_on_a_kept_file_trains_exactly_those_images(tmp_path, checkpoint, monkeypatch):
    from tests.conftest import TINY

    out = tmp_path / "c"
    assert curate("--checkpoint", checkpoint, "--output-dir", out, "--set", "curate.eps=0.01") == 0
    kept = [int(v) for v in (out / "kept.txt").read_text().splitlines()[1:]]
    assert 0 < len(kept) < DIGITS_TRAIN
    seen = {}
    real = ssl_emp.train.load_data
    monkeypatch.setattr(ssl_emp.train, "load_data", lambda cfg: seen.setdefault("data", real(cfg)))
    run = tmp_path / "run"
    assert main(["pretrain", "--output-dir", str(run), *TINY, "--epochs", "1", "--set", "eval.eval_every=0",
                 "--method", "random-dynamic", "--pruning-rate", "0.3", "--set", f"data.keep_file={out / 'kept.txt'}"]) == 0
    full = load_config(None, ["data.image_size=16"])
    everything = load_data(full.data)
    assert torch.equal(seen["data"].train.images, everything.train.images[kept])
    assert torch.equal(seen["data"].train.labels, everything.train.labels[kept])
    assert len(seen["data"].bank) == DIGITS_TRAIN  # the kNN bank stays the whole labelled split
    assert _table_indices(run) == list(range(len(kept)))  # the pruner ranks the kept images only
    assert json.loads((run / "summary.json").read_text())["num_samples"] == len(kept)


def _refused(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_kept_file_of_other_data_or_with_bad_indices_is_refused(tmp_path, capsys):
    from tests.conftest import TINY

    cfg = load_config(None, ["data.image_size=16"])
    fingerprint = split_fingerprint(cfg.data)
    pretrain = ["pretrain", *TINY, "--epochs", "1"]
    other = tmp_path / "other.txt"
    write_keep_file(other, [0, 1, 2], 1000, split_fingerprint(cfg.data)[::-1])
    err = _refused(capsys, [*pretrain, "--output-dir", str(tmp_path / "a"), "--set", f"data.keep_file={other}"])
    assert "made from other data" in err
    for bad, words in (([0, DIGITS_TRAIN], f"is not a training index in [0, {DIGITS_TRAIN})"),
                       ([3, 5, 3], "index 3 appears twice"), ([0, -1], "is not a training index")):
        path = tmp_path / "bad.txt"
        path.write_text(f"# ssl-emp kept training indices (2 of {DIGITS_TRAIN}); data fingerprint {fingerprint}\n"
                        + "".join(f"{i}\n" for i in bad))
        err = _refused(capsys, [*pretrain, "--output-dir", str(tmp_path / f"r{len(bad)}{bad[-1]}"),
                                "--set", f"data.keep_file={path}"])
        assert words in err


@pytest.mark.slow
def test_a_kept_file_counts_by_its_bytes_on_resume_and_is_not_needed_to_evaluate(tmp_path, capsys):
    """A kept file edited between a run and its --resume is other data (it trained silently on the new
    indices); a copy of the same file elsewhere is the same data; eval reads none (it failed without it)."""
    from tests.conftest import TINY

    cfg = load_config(None, ["data.image_size=16"])
    kept = tmp_path / "kept.txt"
    write_keep_file(kept, list(range(0, 400, 2)), DIGITS_TRAIN, split_fingerprint(cfg.data))
    run = tmp_path / "run"
    args = ["pretrain", "--output-dir", str(run), *TINY, "--epochs", "1", "--set", "eval.eval_every=0"]
    assert main([*args, "--set", f"data.keep_file={kept}"]) == 0, capsys.readouterr().err
    moved = tmp_path / "elsewhere" / "kept.txt"
    moved.parent.mkdir()
    shutil.copy(kept, moved)
    assert main([*args, "--resume", "--set", f"data.keep_file={moved}"]) == 0, capsys.readouterr().err
    write_keep_file(kept, [1, *range(2, 400, 2)], DIGITS_TRAIN, split_fingerprint(cfg.data))  # same count, index 0 -> 1
    err = _refused(capsys, [*args, "--resume", "--set", f"data.keep_file={kept}"])
    assert "the data (fingerprint" in err
    kept.unlink()
    moved.unlink()  # evaluation needs no kept file: its bank is the whole labelled split
    assert main(["eval", "knn", "--checkpoint", str(run / "checkpoints" / "final.pt")]) == 0, capsys.readouterr().err


def test_curate_bad_inputs(tmp_path, capsys):
    emb = tmp_path / "emb.npy"
    np.save(emb, np.ones((10, 4), dtype=np.float32))
    err = _refused(capsys, ["curate", "--embeddings", str(emb), "--output-dir", str(tmp_path / "o")])
    assert err.endswith(f"has 10 rows but the training split has {DIGITS_TRAIN} images")
    zero = planted(n_unique=DIGITS_TRAIN, copies=0, dim=4)
    zero[7] = 0
    np.save(tmp_path / "zero.npy", zero)
    err = _refused(capsys, ["curate", "--embeddings", str(tmp_path / "zero.npy"), "--output-dir", str(tmp_path / "o")])
    assert err.endswith("has 1 all-zero rows (first: row 7); cosine similarity needs a non-zero feature vector per image")
    err = _refused(capsys, ["curate", "--embeddings", str(emb), "--output-dir", str(tmp_path / "o"), "--set", "curate.eps=1.5"])
    assert "curate.eps must be null or in (0, 1)" in err
    err = _refused(capsys, ["curate", "--embeddings", str(emb), "--output-dir", str(tmp_path / "o"), "--set",
                            "curate.method=prototypes", "--set", "curate.keep=random"])
    assert "curate.keep must be one of hard, easy for prototypes" in err
    np.save(emb, planted(n_unique=DIGITS_TRAIN, copies=0, dim=4))
    err = _refused(capsys, ["curate", "--embeddings", str(emb), "--output-dir", str(tmp_path / "o"),
                            "--set", f"curate.k={DIGITS_TRAIN + 1}"])
    assert err.endswith(f"curate.k={DIGITS_TRAIN + 1} clusters is more than the {DIGITS_TRAIN} images")
    assert not (tmp_path / "o").exists()  # every refusal above came before anything was written
    assert main(["curate", "--embeddings", str(emb), "--output-dir", str(tmp_path / "t"), "--threads", "1"]) == 0
    assert json.loads((tmp_path / "t" / "curation.json").read_text())["threads"] == 1  # its timings' threads
    assert _refused(capsys, ["curate", "--embeddings", str(emb), "--output-dir", str(tmp_path / "t"), "--threads", "0"])
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    err = _refused(capsys, ["curate", "--embeddings", str(emb), "--output-dir", str(tmp_path / "taken")])
    assert "did not write" in err and (tmp_path / "taken" / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_against_test_finds_planted_test_copies(tmp_path, checkpoint):
    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    for split, n in (("train", 24), ("test", 6)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):  # a bright square somewhere on a dark background, each its own
                image = rng.integers(0, 40, size=(16, 16, 3), dtype=np.uint8)
                y, x, s = *rng.integers(0, 10, size=2), rng.integers(3, 7)
                image[y:y + s, x:x + s] = rng.integers(150, 256, size=3, dtype=np.uint8)
                Image.fromarray(image).save(root / split / cls / f"{i:02d}.png")
    sources = [("a", "03.png", 3), ("b", "10.png", 24 + 10), ("b", "17.png", 24 + 17)]  # train index: sorted order
    for k, (cls, name, _) in enumerate(sources):
        shutil.copy(root / "train" / cls / name, root / "test" / cls / f"copy{k}.png")
    out = tmp_path / "c"
    assert curate("--checkpoint", checkpoint, "--output-dir", out, "--data-dir", root, "--against", "test",
                  "--set", "data.dataset=imagefolder", "--set", f"data.cache_dir={tmp_path / 'cache'}",
                  "--set", "curate.k=2", "--set", "curate.eps=0.00001") == 0
    contamination = record(out)["contamination"]
    assert contamination["test_images"] == 15 and contamination["with_near_duplicate"] == 3
    with open(out / "contamination.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(int(r["train_index"]) for r in rows) == sorted(index for _, _, index in sources)


def test_plateau_eps_is_the_end_of_the_flattest_stretch():
    from ssl_emp.curate.semdedup import plateau_eps

    eps = [0.001, 0.002, 0.005, 0.01, 0.1, 0.3]
    # exact copies: every ε up to 0.005 removes the same 60 %, then other images go
    assert plateau_eps(eps, [0.4, 0.4, 0.4, 0.39, 0.1, 0.0]) == 0.005
    # no plateau (copies no closer than similar images): the conservative end
    assert plateau_eps(eps, [0.99, 0.97, 0.9, 0.7, 0.2, 0.0]) == 0.002
    assert plateau_eps(list(reversed(eps)), [0.0, 0.1, 0.39, 0.4, 0.4, 0.4]) == 0.005  # order does not matter
    # the tail where almost everything is gone flattens in absolute terms, not in relative ones
    assert plateau_eps(eps, [0.99, 0.9, 0.5, 0.1, 0.012, 0.01]) == 0.002


@pytest.mark.slow
def test_without_eps_curate_removes_the_copies_at_the_curves_plateau(tmp_path):
    """The default (curate.eps unset): the end of the ε curve's flattest stretch, which on copies that
    stand apart removes exactly them; said in curation.json."""
    emb = tmp_path / "emb.npy"
    vectors = planted(n_unique=DIGITS_TRAIN - 200, copies=200, dim=32)
    vectors[-200:] = vectors[:200]  # exact copies
    np.save(emb, vectors)
    assert curate("--embeddings", emb, "--output-dir", tmp_path / "o") == 0
    rec = record(tmp_path / "o")
    assert rec["eps_chosen"] == "plateau_eps" and rec["eps"] == rec["plateau_eps"]
    kept = {int(line) for line in (tmp_path / "o" / "kept.txt").read_text().splitlines() if not line.startswith("#")}
    first_copy = DIGITS_TRAIN - 200
    assert len(kept) == first_copy and set(range(200, first_copy)) <= kept  # every image without a copy stays
    assert all((i in kept) != (first_copy + i in kept) for i in range(200))  # one of each pair


@pytest.mark.slow
def test_duplicates_picture_of_photographs_of_several_sizes(tmp_path):
    """duplicates.png shows each image through the evaluation view, whatever its size."""
    from PIL import Image

    for cls, sizes in (("a", [(40, 30), (30, 40), (50, 50)]), ("b", [(36, 24), (24, 36), (45, 30)])):
        (tmp_path / "d" / "train" / cls).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            pixels = np.random.default_rng(i + len(cls)).integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "d" / "train" / cls / f"{i}.png")
    emb = tmp_path / "emb.npy"
    vectors = planted(n_unique=6, copies=0, dim=8)
    vectors[3:] = vectors[:3]  # each image of b a copy of one of a
    np.save(emb, vectors)
    flags = ["--embeddings", emb, "--set", "data.dataset=imagefolder", "--data-dir", tmp_path / "d",
             "--set", "data.image_size=16", "--set", "curate.k=1", "--set", "curate.eps=0.01"]
    assert curate(*flags, "--output-dir", tmp_path / "o") == 0
    assert record(tmp_path / "o")["removed"] == 3 and (tmp_path / "o" / "duplicates.png").stat().st_size > 0


def test_curate_refuses_what_it_cannot_do_right(tmp_path, checkpoint, capsys):
    err = _refused(capsys, ["curate", "--checkpoint", str(checkpoint), "--output-dir", str(tmp_path / "o"),
                            "--set", "curate.eps_range=[0.01,0.01,0.05]"])
    assert "curate.eps_range must be a non-empty list of distinct numbers" in err
    err = _refused(capsys, ["curate", "--checkpoint", str(checkpoint), "--output-dir", str(tmp_path / "v"),
                            "--set", "data.val_fraction=0.2", "--against", "test"])
    assert "data.val_fraction=0" in err and not (tmp_path / "v").exists()  # refused before embedding anything
