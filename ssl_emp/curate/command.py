"""``ssl-emp curate``: embed the training split, run SemDeDup or self-supervised prototypes on the
embeddings, write what to keep (``kept.txt``, for ``--set data.keep_file=...``) and why.

The data and ``curate`` settings come from ``--config`` (default: the checkpoint's run config),
then ``--data-dir`` and ``--set``; the backbone and its input normalisation from the checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ssl_emp.config import Config, config_from_dict, finalize, load_config, merge_values, parse_override
from ssl_emp.curate import outputs
from ssl_emp.curate.clusters import check_cluster_count, spherical_kmeans
from ssl_emp.curate.embed import cached_embeddings, embed, file_hash, user_embeddings
from ssl_emp.curate.prototypes import select_prototypes
from ssl_emp.curate.semdedup import find_duplicates, kept_root, plateau_eps
from ssl_emp.data import DataSplits, ImageSource, load_data, load_split
from ssl_emp.data.decode import eval_view
from ssl_emp.data.fingerprint import split_fingerprint
from ssl_emp.data.keep import write_keep_file
from ssl_emp.errors import ConfigError
from ssl_emp.eval.from_checkpoint import backbone_from_checkpoint
from ssl_emp.progress import progress_enabled
from ssl_emp.runtime import resolve_device, set_threads, versions

DUPLICATE_GROUPS, GROUP_SIZE = 8, 8  # duplicates.png: rows, images per row


@contextmanager
def _timed(times: dict[str, float], stage: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    times[stage] = round(times.get(stage, 0.0) + time.perf_counter() - t0, 3)


def _settings(args: argparse.Namespace, checkpoint_cfg: dict[str, Any] | None) -> Config:
    """The config file (or the checkpoint's run config, or the defaults), ``--data-dir``, ``--set``;
    the model and view settings stay the checkpoint's, which its weights were trained with."""
    overrides = list(args.overrides) + ([f"data.data_dir={json.dumps(args.data_dir)}"] if args.data_dir else [])
    overrides += [f"threads={args.threads}"] if args.threads else []
    if args.config or checkpoint_cfg is None:
        cfg = load_config(args.config, overrides)
    else:
        cfg = config_from_dict(checkpoint_cfg)
        for item in overrides:
            parts, nested = parse_override(item)
            for part in reversed(parts):
                nested = {part: nested}
            merge_values(cfg, nested, update_dicts=True)
    if checkpoint_cfg is not None:
        trained = config_from_dict(checkpoint_cfg)
        cfg.algorithm, cfg.model, cfg.augment = trained.algorithm, trained.model, trained.augment
    cfg.data.keep_file = None  # curate looks at the whole training split: kept.txt indexes it
    cfg.progress = cfg.progress and not args.no_progress
    return finalize(cfg)


def _check_folder(out: Path) -> None:
    """``out`` may be new, empty or curate's own (its cached embeddings are reused); anything else is refused."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output-dir {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / outputs.MARKER).is_file():
        raise ConfigError(f"--output-dir {out} holds files that ssl-emp curate did not write; choose another folder")


def _prepare_folder(out: Path) -> None:
    """Create ``out`` (checked again: time has passed since ``_check_folder``) and mark it curate's."""
    _check_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / outputs.MARKER).touch()


def _semdedup(out: Path, emb: np.ndarray, data: DataSplits, cfg: Config, times: dict[str, float]) -> dict[str, Any]:
    """SemDeDup at curate.eps (unset: the end of the ε curve's flattest stretch): kept mask,
    removed.csv, the ε curve and the picture of the groups."""
    c = cfg.curate
    with _timed(times, "cluster"):
        clusters = spherical_kmeans(emb, c.k, c.iterations, c.seed)
    with _timed(times, "deduplicate"):
        found = find_duplicates(emb, clusters, c.keep, c.seed, c.block_size)
        fractions = found.kept_fraction(c.eps_range)
        plateau = plateau_eps(c.eps_range, fractions)
        eps = plateau if c.eps is None else c.eps
        removed = found.removed(eps)
        root = kept_root(found, removed)
        cosine = np.einsum("ij,ij->i", emb, emb[root])  # to the kept image it leads to
    index = np.flatnonzero(removed)
    index = index[np.argsort(-cosine[index], kind="stable")]
    outputs.write_csv(out / outputs.REMOVED, ["index", "duplicate_of", "cosine", "cluster"],
                      [(i, root[i], f"{cosine[i]:.6f}", clusters.assign[i]) for i in index.tolist()])
    outputs.write_curve(out, c.eps_range, fractions, len(emb), eps, plateau)
    groups = outputs.duplicate_groups(root, removed, cosine, DUPLICATE_GROUPS, GROUP_SIZE)
    if groups:
        # Each tile through the evaluation view: photographs differ in size (and may be large).
        size = cfg.data.image_size
        outputs.write_duplicates(out / outputs.DUPLICATES_PNG, groups, lambda i: eval_view(data.train[i][1], size))
    curve = [{"eps": e, "kept_fraction": f} for e, f in zip(c.eps_range, fractions, strict=True)]
    files = [outputs.REMOVED, outputs.CURVE_CSV, outputs.CURVE_PNG, *([outputs.DUPLICATES_PNG] if groups else [])]
    return {"kept_mask": ~removed, "eps": eps, "eps_chosen": "plateau_eps" if c.eps is None else "curate.eps",
            "plateau_eps": plateau, "eps_curve": curve, "duplicate_groups": len(groups), "files": files}


def _prototypes(out: Path, emb: np.ndarray, cfg: Config, times: dict[str, float]) -> dict[str, Any]:
    """Self-supervised prototypes at curate.rate: kept mask and removed.csv (cosine to the centroid)."""
    c = cfg.curate
    with _timed(times, "cluster"):
        clusters = spherical_kmeans(emb, c.k, c.iterations, c.seed)
    with _timed(times, "select"):
        kept = select_prototypes(clusters, c.rate, c.keep, c.quota)
    index = np.flatnonzero(~kept)
    outputs.write_csv(out / outputs.REMOVED, ["index", "duplicate_of", "cosine", "cluster"],
                      [(i, "", f"{clusters.cos_to_centroid[i]:.6f}", clusters.assign[i]) for i in index.tolist()])
    return {"kept_mask": kept, "target_rate": c.rate, "quota": c.quota, "files": [outputs.REMOVED]}


def _contamination(out: Path, emb: np.ndarray, test_emb: np.ndarray, eps: float) -> dict[str, Any]:
    """Test images whose nearest training image has cosine > 1 − ε: contamination.csv and the count."""
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    sim, nearest = index.search(test_emb, 1)
    sim, nearest = sim[:, 0], nearest[:, 0]
    hit = np.flatnonzero(sim > np.float32(1 - eps))
    hit = hit[np.argsort(-sim[hit], kind="stable")]
    outputs.write_csv(out / outputs.CONTAMINATION, ["test_index", "train_index", "cosine"],
                      [(i, nearest[i], f"{sim[i]:.6f}") for i in hit.tolist()])
    return {"eps": eps, "test_images": len(test_emb), "with_near_duplicate": len(hit),
            "share": len(hit) / len(test_emb), "file": outputs.CONTAMINATION}


def _embeddings(out: Path, backbone: Any, data: DataSplits, test: ImageSource | None, cfg: Config,
                key: dict[str, str], device: str | None, times: dict[str, float]) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """The backbone's training (and, given ``test``, test) embeddings, cached in ``out``; whether the
    training ones were reused."""
    with _timed(times, "embed"), progress_enabled(cfg.progress):
        dev = resolve_device(device)
        emb, reused = cached_embeddings(out, "train", key, lambda: embed(backbone, data.train, cfg, dev, "train"))
        test_emb = None
        if test is not None:
            test_emb, _ = cached_embeddings(out, "test", key, lambda: embed(backbone, test, cfg, dev, "test"))
    return emb, test_emb, reused


def _test_split(data: DataSplits, cfg: Config) -> ImageSource:
    """``--against test``'s images: the data set's test split, refused in one line where it has none."""
    if data.test_is_validation:  # data.test is then part of the training split, not the test set
        raise ConfigError("--against test with data.val_fraction > 0 would compare against training images "
                          "held out for validation: add --set data.val_fraction=0")
    test = data.test if data.test is not None else load_split(cfg.data, "test", data.train.classes)
    if test is None:
        raise ConfigError(f"--against test: data set '{cfg.data.dataset}' has no test split")
    return test


def run_curate(args: argparse.Namespace) -> dict[str, Any]:
    """Everything ``ssl-emp curate`` does; returns what curation.json records."""
    times: dict[str, float] = {}
    if args.against == "test" and args.embeddings:
        raise ConfigError("--against test embeds the test split with the checkpoint's backbone: pass --checkpoint, "
                          "not --embeddings")
    backbone, checkpoint_cfg = None, None
    if args.checkpoint:
        backbone, trained = backbone_from_checkpoint(args.checkpoint)
        checkpoint_cfg = dataclasses.asdict(trained)
    cfg = _settings(args, checkpoint_cfg)
    set_threads(cfg.threads)  # faiss and torch at the configured threads, as in pretrain
    if args.against == "test" and cfg.curate.method == "prototypes" and cfg.curate.eps is None:
        raise ConfigError("--against test with curate.method=prototypes needs curate.eps (the similarity that "
                          "counts as a near-duplicate), e.g. --set curate.eps=0.01")
    out = Path(args.output_dir)
    _check_folder(out)  # before the data are read and embedded, which can take minutes
    with _timed(times, "load_data"), progress_enabled(cfg.progress):
        data = load_data(cfg.data)
        fingerprint = split_fingerprint(cfg.data)
        test = _test_split(data, cfg) if args.against == "test" else None
    # What can be refused is checked before the folder is made and anything is embedded: a user's bad
    # embeddings file or k leaves nothing behind.
    user_emb = None
    if backbone is None:
        with _timed(times, "embed"):
            user_emb = user_embeddings(args.embeddings, len(data.train))
    check_cluster_count(cfg.curate.k, len(data.train))
    _prepare_folder(out)
    # The evaluation view depends on image_size and store_size: embeddings made at others are not reused.
    key = {"data_fingerprint": fingerprint, "checkpoint_sha1": file_hash(args.checkpoint) if args.checkpoint else "",
           "view": f"image_size={cfg.data.image_size} store_size={cfg.data.store_size}"}
    emb, test_emb, reused = ((user_emb, None, False) if user_emb is not None
                             else _embeddings(out, backbone, data, test, cfg, key, args.device, times))
    c = cfg.curate
    found = _semdedup(out, emb, data, cfg, times) if c.method == "semdedup" else _prototypes(out, emb, cfg, times)
    kept = np.flatnonzero(found.pop("kept_mask"))
    write_keep_file(out / outputs.KEPT, kept.tolist(), len(emb), fingerprint)
    contamination = None
    if test_emb is not None:
        with _timed(times, "contamination"):
            contamination = _contamination(out, emb, test_emb, found.get("eps", c.eps))
        found["files"].append(outputs.CONTAMINATION)
    found["files"] = [outputs.KEPT, *found["files"], outputs.RECORD]
    record = {
        "n": len(emb), "kept": len(kept), "removed": len(emb) - len(kept), "rate": 1 - len(kept) / len(emb),
        "method": c.method, "keep": c.keep, "k": c.k, "iterations": c.iterations, "seed": c.seed, **found,
        "data": {"dataset": cfg.data.dataset, "data_dir": cfg.data.data_dir, "fingerprint": fingerprint},
        "embeddings": {"source": "checkpoint" if args.checkpoint else "file", "path": args.checkpoint or args.embeddings,
                       "dim": emb.shape[1], "reused": reused, **key},
        "contamination": contamination, "time_s": times, "threads": cfg.threads, "versions": versions(),
    }
    outputs.write_record(out / outputs.RECORD, record)
    outputs.remove_stale(out, record["files"])
    return record


def curate_command(args: argparse.Namespace) -> int:
    """``ssl-emp curate``: run, then one line on what was kept and where the files are."""
    record = run_curate(args)
    how = f"eps={record['eps']:g}" if record["method"] == "semdedup" else f"rate={record['target_rate']:g}"
    line = (f"{record['method']} ({how}, k={record['k']}, keep {record['keep']}): kept {record['kept']} of "
            f"{record['n']} images ({record['kept'] / record['n']:.1%})")
    if record["contamination"] is not None:
        cont = record["contamination"]
        line += f"; {cont['with_near_duplicate']} of {cont['test_images']} test images have a near-duplicate in train"
    print(f"{line}; train on them with --set data.keep_file={Path(args.output_dir) / outputs.KEPT}")
    return 0
