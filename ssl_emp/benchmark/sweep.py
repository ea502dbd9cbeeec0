"""``ssl-emp benchmark``: expand a (method × rate × seed) grid, run it resumably, collect results.

A benchmark file names a pretrain config (``base:``, relative to the benchmark file, or an inline
``pretrain:`` mapping), optional ``overrides`` merged into it, the ``grid`` and ``linear_probe``.
Every run trains into ``DIR/runs/<id>/``; after each run ``DIR/results.json``, ``DIR/results.csv``
and the report (``DIR/report.md`` + plots) are rewritten, so a killed sweep loses at most the run
in progress and a rerun of the same command continues where it stopped. Reading the benchmark
file and expanding its grid is ``ssl_emp.benchmark.grid``.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ssl_emp.benchmark.embeddings import prepare_embeddings, train_or_resume
from ssl_emp.benchmark.grid import DEDUP, SHORTER, Benchmark, RunSpec, expand_grid, load_benchmark
from ssl_emp.benchmark.report import write_report
from ssl_emp.benchmark.results import FINISHED_FIELDS, count_histogram, load_rows, row_problem, write_results
from ssl_emp.benchmark.sources import curation_fields
from ssl_emp.config import config_diff, finalize, load_config
from ssl_emp.data.fingerprint import data_fingerprint
from ssl_emp.errors import ConfigError, TrainingDiverged
from ssl_emp.run.files import atomic_write_text
from ssl_emp.run.layout import BenchmarkLayout, RunLayout
from ssl_emp.run.lifecycle import NEUTRAL_KEYS, data_changes
from ssl_emp.run.lock import LOCK_NAME, FolderLock
from ssl_emp.run.summary import DIAGNOSTIC_KEYS

# ----------------------------------------------------------------------------- output folder


def _base_dict(bench: Benchmark) -> dict[str, Any]:
    cfg = finalize(copy.deepcopy(bench.base))
    return asdict(cfg)


def read_plan(folder: Path, what: str) -> dict[str, Any] | None:
    """A benchmark folder's benchmark.json (None if it has none), checked enough for the comparisons
    made with it; ``what`` starts the one-line error (the folder's role in the command)."""
    path = BenchmarkLayout(folder).plan
    if not path.is_file():
        return None
    try:
        plan = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what}: {path} is not valid JSON (truncated?): {exc}") from exc
    if not (isinstance(plan, dict) and isinstance(plan.get("base"), dict) and isinstance(plan.get("grid"), dict)
            and isinstance(plan["grid"].get("method_params", {}), dict)):
        raise ConfigError(f"{what}: {path} is not a benchmark plan (a mapping with 'base' and 'grid')")
    return plan


def _data_changes(plan: dict[str, Any], base: dict[str, Any], fingerprint: str) -> list[str]:
    """How a folder's recorded base config and data differ from this sweep's."""
    return config_diff(plan["base"], base, NEUTRAL_KEYS) + data_changes(plan["base"], plan.get("data_fingerprint"),
                                                                       base, fingerprint)


def check_output_dir(bench: Benchmark, runs: list[RunSpec], out: Path, fingerprint: str) -> None:
    """Refuse a folder that holds something else: another benchmark's base config or data (by its
    ``fingerprint``, not its path), a run trained with a different config, or files that are not a
    benchmark's."""
    plan = read_plan(out, "--output-dir")
    if out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()) and plan is None:
        raise ConfigError(f"{out} exists and is not a benchmark folder (no benchmark.json); choose another --output-dir")
    if plan is not None:
        diff = _data_changes(plan, _base_dict(bench), fingerprint)
        if diff:
            raise ConfigError(f"{out} holds a benchmark of a different base config: {', '.join(diff)}; "
                              "choose another --output-dir")
    for run in runs:
        saved_cfg = RunLayout(run.config.output_dir).config
        if saved_cfg.is_file():
            diff = config_diff(asdict(load_config(saved_cfg)), asdict(run.config), NEUTRAL_KEYS)
            if diff:
                raise ConfigError(f"{saved_cfg.parent} holds a run with a different config: {', '.join(diff)}; "
                                  "choose another --output-dir")


def _write_plan(bench: Benchmark, runs: list[RunSpec], out: Path, fingerprint: str) -> None:
    plan = {
        "source": str(bench.source), "base": _base_dict(bench), "data_fingerprint": fingerprint,
        "grid": {"methods": bench.methods, "rates": bench.rates, "seeds": bench.seeds,
                 "method_params": bench.method_params, "method_rates": bench.method_rates,
                 "embeddings": {name: asdict(src) for name, src in bench.embeddings.items()}},
        "linear_probe": bench.linear_probe,
        "runs": [{"run_id": r.run_id, "method": r.method, "target_rate": r.target_rate, "seed": r.seed} for r in runs],
    }
    atomic_write_text(BenchmarkLayout(out).plan, json.dumps(plan, indent=2))


# ----------------------------------------------------------------------------- one run


def _versions(v: dict[str, str] | str | None) -> str:
    if isinstance(v, dict):
        return " ".join(f"{k}={val}" for k, val in v.items())
    return v or ""


def make_row(run: RunSpec, summary: dict[str, Any], linear: dict[str, Any] | None) -> dict[str, Any]:
    """One result row: the ``COLUMNS`` plus a few extras kept in results.json only.

    The training-count histogram travels in the row so that the report survives the deletion of
    the bulky per-run folders (checkpoints, tables). Keys a summary may lack (``test_top1``: supervised
    runs only; the selection diagnostics) are None then.
    """
    achieved = summary["achieved_rate"]
    # Their pruners saw full data, `shorter`'s for E' epochs, dedup's of the U unique images; the
    # budget is the grid's E epochs of the (redundant) training set's N.
    if run.method in (SHORTER, DEDUP):
        n = run.budget_samples or summary["num_samples"]
        achieved = 1.0 - summary["images_seen"] / (n * run.budget_epochs)
    return {
        "run_id": run.run_id, "method": run.method, "target_rate": run.target_rate,
        "achieved_rate": achieved, "seed": run.seed, "knn_top1": summary["knn_top1"],
        "linear_top1": linear["top1"] if linear else None, "test_top1": summary.get("test_top1"),
        "wall_time_s": summary["wall_time_s"],
        "train_time_s": summary["train_time_s"], "optimizer_steps": summary["optimizer_steps"],
        "sample_visits": summary["images_seen"], "epochs": summary["epochs"], "num_samples": summary["num_samples"],
        "versions": _versions(summary.get("versions")), "machine": summary.get("machine", ""),
        "knn_top5": summary.get("knn_top5"), "knn_top1_epoch0": summary.get("knn_top1_epoch0"),
        "linear_top5": linear["top5"] if linear else None, "linear_time_s": linear.get("time_s") if linear else None,
        "eval_time_s": summary.get("eval_time_s"), "pruner_time_s": summary.get("pruner_time_s"),
        "device": summary.get("device"), "dataset": run.config.data.dataset, "algorithm": run.config.algorithm,
        "count_histogram": count_histogram(RunLayout(run.config.output_dir).pruning_table),
        "pruning_params": _json(run.config.pruning.params),  # what ran: checked against the grid on every rerun
        **{k: summary.get(k) for k in DIAGNOSTIC_KEYS},
        **curation_fields(run.config.output_dir, summary),  # the compute axis, curation's cost included
    }


def execute_run(run: RunSpec, linear_probe: bool) -> dict[str, Any]:
    """Train (or resume, or reuse a finished) run and evaluate it; returns its result row."""
    from ssl_emp.eval.from_checkpoint import evaluate_checkpoint

    layout = RunLayout(run.config.output_dir)
    summary = train_or_resume(run.config)
    linear = None
    if linear_probe:
        linear_path = layout.linear
        if linear_path.is_file():
            linear = json.loads(linear_path.read_text())
        else:
            t0 = time.perf_counter()
            linear = evaluate_checkpoint(str(layout.final), "linear",
                                         device=run.config.device, seed=run.seed)
            linear["time_s"] = time.perf_counter() - t0
            atomic_write_text(linear_path, json.dumps(linear, indent=2))
    return make_row(run, summary, linear)


# ----------------------------------------------------------------------------- the sweep


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def format_plan(runs: list[RunSpec], done: set[str]) -> str:
    """The expanded grid, one line per run, for ``--dry-run``."""
    lines = [f"{len(runs)} runs ({len(done & {r.run_id for r in runs})} already in results.json):"]
    width = max(len(r.run_id) for r in runs)
    for i, r in enumerate(runs, 1):
        rate = "own" if r.target_rate is None else f"{r.target_rate:g}"
        state = "done" if r.run_id in done else "todo"
        lines.append(f"{i:4d}  {r.run_id:<{width}}  method={r.method} rate={rate} seed={r.seed} "
                     f"epochs={r.config.epochs}  [{state}]")
    return "\n".join(lines)


# Row fields that say how long a run took and where, not what it computed: an identical rerun
# (another machine, a busier one, a later library version) differs in these alone.
CIRCUMSTANCE_KEYS = ("wall_time_s", "train_time_s", "eval_time_s", "pruner_time_s", "linear_time_s",
                     "machine", "versions", "device")


def _outcome_diff(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """``key (ours -> theirs)`` for each outcome field in which two rows of one run differ."""
    keys = sorted((set(ours) | set(theirs)) - set(CIRCUMSTANCE_KEYS))
    return [f"{k} ({ours.get(k)!r} -> {theirs.get(k)!r})" for k in keys if ours.get(k) != theirs.get(k)]


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))  # as results.json and benchmark.json hold it


def _recorded_rows(folder: Path, plan: dict[str, Any] | None, what: str) -> list[dict[str, Any]]:
    """A benchmark folder's rows, each checked to be a finished run's and carrying the pruning
    params it ran with: a row written before rows recorded them takes them from the folder's plan,
    the base config's updated by the method's grid.method_params (as ``expand_grid`` builds them)."""
    try:
        rows = load_rows(folder)
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from exc
    for i, row in enumerate(rows):
        problem = row_problem(row, FINISHED_FIELDS)
        if problem:
            raise ConfigError(f"{what}: {BenchmarkLayout(folder).results} row {i} ({row['run_id']}) {problem}; "
                              "a finished run's row has " + ", ".join(FINISHED_FIELDS))
    if plan is None:
        return rows
    base = plan["base"].get("pruning", {}).get("params", {})
    grid = plan["grid"].get("method_params", {})
    return [row if "pruning_params" in row else
            {**row, "pruning_params": {**base, **({} if row["method"] in (SHORTER, DEDUP) else grid.get(row["method"], {}))}}
            for row in rows]


def merged_rows(bench: Benchmark, runs: list[RunSpec], out: Path, sources: list[Path],
                fingerprint: str) -> list[dict[str, Any]]:
    """The rows of ``out`` plus those of each source folder: the same sweep split by seed (or method)
    over processes or machines, each part in its own folder, joined here.

    A source must be a benchmark folder of the same base config and data (``fingerprint``); only its
    rows of runs in this grid are taken (so a sub-grid can be pooled from a bigger sweep), and each
    must be a finished run's (``FINISHED_FIELDS``, fields of the right kind). A run found in two
    folders with different results is refused; the same results twice are not, whatever their
    timings and machine (``CIRCUMSTANCE_KEYS``), and the row met first is kept: a merge can be
    repeated while a part is still running, or a part rerun elsewhere. Only rows move; run folders
    stay where they ran. Nothing is written here.
    """
    rows = {row["run_id"]: row for row in _recorded_rows(out, read_plan(out, "--output-dir"), "--output-dir")}
    found_in = dict.fromkeys(rows, out)
    in_grid = {r.run_id for r in runs}
    base = _base_dict(bench)
    params = _json(bench.method_params)
    for src in sources:
        taken = 0
        what = f"--merge-from {src}"
        saved = read_plan(src, what)
        if saved is None:
            raise ConfigError(f"{what}: not a benchmark folder (no benchmark.json)")
        diff = _data_changes(saved, base, fingerprint)
        if diff:
            raise ConfigError(f"{what}: a benchmark of a different base config: {', '.join(diff)}")
        src_rows = _recorded_rows(src, saved, what)
        for row in src_rows:
            rid, method = row["run_id"], row["method"]
            if rid not in in_grid:
                continue
            theirs = saved["grid"].get("method_params", {}).get(method, {})
            if theirs != params.get(method, {}):
                raise ConfigError(f"{what}: {method} ran with grid.method_params {theirs}, not {params.get(method, {})}")
            if rid in rows:
                diff = _outcome_diff(rows[rid], row)
                if diff:
                    raise ConfigError(f"{what}: run {rid} is also in {found_in[rid]} with different "
                                      f"results: {', '.join(diff)}")
            else:  # the row already here stays: the same results, its own timings
                rows[rid], found_in[rid] = row, src
            taken += 1
        _say(f"{what}: {taken} of {len(src_rows)} rows are runs of this grid")
    return list(rows.values())


def runs_to_do(bench: Benchmark, runs: list[RunSpec], rows: dict[str, dict[str, Any]]) -> list[RunSpec]:
    """The runs without a row and, with ``linear_probe``, those whose row has no linear result (its
    finished run is probed). A row must describe what this grid runs: one trained with other pruning
    params (grid.method_params changed since) is refused in one line, never reused or replaced."""
    todo = []
    for run in runs:
        row = rows.get(run.run_id)
        if row is None:
            todo.append(run)
            continue
        wanted = _json(run.config.pruning.params)
        if "pruning_params" in row and row["pruning_params"] != wanted:
            raise ConfigError(f"results.json holds run {run.run_id} trained with pruning params {row['pruning_params']}, "
                              f"not {wanted} (grid.method_params changed); choose another --output-dir")
        if bench.linear_probe and row.get("linear_top1") is None:
            final = RunLayout(run.config.output_dir).final
            if not final.is_file():
                raise ConfigError(f"linear_probe is on but run {run.run_id} has no linear result and no {final} to "
                                  "probe; set linear_probe: false or choose another --output-dir")
            todo.append(run)
    return todo


def run_benchmark(config: str | Path, output_dir: str | Path, overrides: list[str] | None = None,
                  dry_run: bool = False, merge_from: list[str | Path] | None = None) -> int:
    """Run (or continue) a benchmark sweep; returns the exit code (1 if a run diverged).

    ``merge_from``: other folders of the same sweep whose finished rows join this one first. Every
    check (config, data, rows, merged folders) passes before anything is written.
    """
    bench = load_benchmark(config, overrides)
    out = Path(output_dir)
    runs = expand_grid(bench, out)
    sources = [Path(s) for s in merge_from or []]
    if any(s.resolve() == out.resolve() for s in sources):
        raise ConfigError(f"--merge-from {out} is the output folder itself")
    try:
        fingerprint = data_fingerprint(bench.base.data)  # the data, wherever it lies: what folders are compared by
    except ConfigError:
        if not dry_run or out.exists() or sources:
            raise
        fingerprint = ""  # listing the grid of a new folder needs no data; running it does
    if dry_run:
        print(format_plan(runs, {row["run_id"] for row in merged_rows(bench, runs, out, sources, fingerprint)}))
        return 0
    for source in bench.embeddings.values():  # before anything is written
        if source.checkpoint is not None and not Path(source.checkpoint).expanduser().is_file():
            raise ConfigError(f"grid.embeddings.{source.name}.checkpoint not found: {source.checkpoint}")
    with FolderLock(out):  # one writer per benchmark folder; each run also locks its own folder
        check_output_dir(bench, runs, out, fingerprint)
        rows = {row["run_id"]: row for row in merged_rows(bench, runs, out, sources, fingerprint)}
        todo = runs_to_do(bench, runs, rows)
        _write_plan(bench, runs, out, fingerprint)
        return _run_grid(bench, runs, out, rows, todo)


def _run_grid(bench: Benchmark, runs: list[RunSpec], out: Path, rows: dict[str, dict[str, Any]],
              todo: list[RunSpec]) -> int:
    # Rows of runs outside the current grid (e.g. a grid since narrowed) are kept, after the grid's.
    order = {r.run_id: i for i, r in enumerate(runs)}

    def save() -> None:
        write_results(out, sorted(rows.values(), key=lambda r: (order.get(r["run_id"], len(order)), r["run_id"])))

    if rows:
        save()  # merged rows, and a results.csv that a kill left missing or stale
    _say(f"benchmark {bench.source} -> {out}: {len(runs)} runs, {len(runs) - len(todo)} done, {len(todo)} to run")
    durations: list[float] = []
    failed: list[str] = []
    for k, run in enumerate(todo):
        index = f"[{order[run.run_id] + 1}/{len(runs)}]"
        t0 = time.perf_counter()
        try:
            if run.embed_source is not None:  # once per (source, seed): cached in the folder, so cheap to ask again
                _say(f"{index} embeddings {run.embed_source} for seed {run.seed}")
                # a pre-run that diverges fails the runs that need it, like their own divergence
                prepare_embeddings(bench.embeddings[run.embed_source], bench.base, run.seed, out)
            _say(f"{index} start {run.run_id}")
            row = execute_run(run, bench.linear_probe)
        except TrainingDiverged as exc:
            failed.append(run.run_id)
            _say(f"{index} FAILED {run.run_id}: {exc}")
            continue
        rows[run.run_id] = row
        save()
        write_report(out)
        durations.append(time.perf_counter() - t0)
        left = len(todo) - k - 1
        test = f"test top-1 {_pct(row['test_top1'])}, " if row.get("test_top1") is not None else ""
        _say(f"{index} done {run.run_id}: {test}kNN top-1 {_pct(row['knn_top1'])}, linear top-1 {_pct(row['linear_top1'])}, "
             f"achieved rate {row['achieved_rate']:.3f}, {_duration(durations[-1])}; "
             f"{left} left, ETA {_duration(statistics.mean(durations) * left)}")
    if not todo:
        write_report(out)  # refresh the report (e.g. after an edit of report.py)
    if failed:
        _say(f"{len(failed)} run(s) diverged and have no row: {', '.join(failed)} (rerun to retry them)")
        return 1
    _say(f"all {len(runs)} runs done: {out / 'results.csv'}, {out / 'report.md'}")
    return 0


def _say(message: str) -> None:
    print(message, flush=True)
