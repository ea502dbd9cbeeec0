"""``ssl-emp`` command line: ``pretrain``, ``eval knn|linear``, ``export``, ``benchmark``, ``curate``, ``views``.

Bad input ends with one line on stderr naming the problem and exit code 2; a run that cannot go
on (a NaN loss, a full disk) with one line and exit code 1; Ctrl-C with 130 and SIGTERM with 143,
each with one line that says what is on disk and how to continue. None overwrites anything already
written.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ssl_emp.errors import ConfigError, RunFailed, TrainingDiverged
from ssl_emp.run.files import atomic_write_text, os_error_message
from ssl_emp.run.layout import RunLayout

if TYPE_CHECKING:
    from ssl_emp.config import Config

EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention
EXIT_TERMINATED = 143  # 128 + SIGTERM


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints the usage too)
        self.exit(2, f"ssl-emp: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _devices() -> tuple[str, ...]:
    from ssl_emp.runtime import DEVICES  # torch: only once a subcommand's options are built

    return DEVICES


_THREADS_HELP = "CPU threads (default: OMP_NUM_THREADS if set, else one per core this process may use)"


def _pretrain_options(p: argparse.ArgumentParser) -> None:
    from ssl_emp.pruning.registry import METHODS

    p.add_argument("--config", metavar="FILE", help="YAML config (default: the embedded digits SimCLR run)")
    p.add_argument("--output-dir", metavar="DIR", help="run folder (default: the config's output_dir)")
    p.add_argument("--epochs", type=_positive_int, metavar="N", help="training epochs (sets epochs)")
    p.add_argument("--seed", type=int, metavar="S", help="seed of weights, views and pruning (sets seed)")
    p.add_argument("--device", choices=_devices(), help="where to train (sets device; default: the config's, auto)")
    p.add_argument("--threads", type=_positive_int, metavar="N", help=f"{_THREADS_HELP} (sets threads)")
    p.add_argument("--method", help=f"pruning method: {', '.join(METHODS)}")
    p.add_argument("--pruning-rate", type=float, metavar="R",
                   help="fraction of the data set pruned each epoch, in [0, 0.95]")
    p.add_argument("--data-dir", metavar="DIR", help="data folder (sets data.data_dir)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set optim.batch_size=256 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (sets progress=false)")


def _eval_options(e: argparse.ArgumentParser) -> None:
    e.add_argument("protocol", choices=["knn", "linear"], help="kNN classifier or linear probe on frozen features")
    e.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="a pretrain checkpoint (RUN/checkpoints/final.pt or last.pt)")
    e.add_argument("--dataset", help="data set to evaluate on (default: the checkpoint's)")
    e.add_argument("--data-dir", metavar="DIR", help="its data folder (default: the checkpoint's data.data_dir)")
    e.add_argument("--k", type=_positive_int, help="kNN neighbours (default: the checkpoint's eval.knn_k)")
    e.add_argument("--temperature", type=float,
                   help="kNN temperature (default: the checkpoint's eval.knn_temperature)")
    e.add_argument("--device", choices=_devices(), default="auto", help="where to run (default: auto)")
    e.add_argument("--threads", type=_positive_int, metavar="N", help=_THREADS_HELP)
    e.add_argument("--output", metavar="FILE", help="write the result and protocol as JSON here")


def _export_options(x: argparse.ArgumentParser) -> None:
    x.add_argument("--checkpoint", required=True, metavar="FILE", help="a pretrain checkpoint")
    x.add_argument("--output", required=True, metavar="DIR", help="folder to create (absent or empty)")
    x.add_argument("--force", action="store_true",
                   help="replace an earlier export in --output (only its own files; others stay)")


def _benchmark_options(b: argparse.ArgumentParser) -> None:
    b.add_argument("--config", required=True, metavar="FILE", help="benchmark YAML (base pretrain config, overrides, grid)")
    b.add_argument("--output-dir", metavar="DIR", help="benchmark folder (default: runs/benchmark/<config name>)")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="grid.* / linear_probe change the benchmark, other keys every run's config (repeatable)")
    b.add_argument("--merge-from", action="append", default=[], metavar="DIR",
                   help="add the finished rows of another folder of the same sweep (e.g. run with other seeds) "
                        "to --output-dir first (repeatable)")
    b.add_argument("--dry-run", action="store_true", help="print the expanded run list and exit")


def _curate_options(c: argparse.ArgumentParser) -> None:
    source = c.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="FILE", help="embed the training split with this checkpoint's backbone")
    source.add_argument("--embeddings", metavar="FILE",
                        help="your own features instead: a .npy [N, D], one row per training image")
    c.add_argument("--output-dir", required=True, metavar="DIR", help="folder for kept.txt, removed.csv, curation.json, plots")
    c.add_argument("--config", metavar="FILE", help="YAML config: data and curate sections (default: the checkpoint's run config)")
    c.add_argument("--data-dir", metavar="DIR", help="data folder (sets data.data_dir)")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set curate.eps=0.02 (repeatable)")
    c.add_argument("--against", choices=["test"], help="also list test images with a near-duplicate in the training split")
    c.add_argument("--device", choices=_devices(), default="auto", help="where to embed (default: auto)")
    c.add_argument("--threads", type=_positive_int, metavar="N", help=f"{_THREADS_HELP} (sets threads)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")


def _views_options(v: argparse.ArgumentParser) -> None:
    v.add_argument("--config", help="YAML config (default: the embedded digits SimCLR run)")
    v.add_argument("--data-dir", help="data folder (sets data.data_dir)")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set data.image_size=96 (repeatable)")
    v.add_argument("--images", type=_positive_int, default=4, help="training images, one row each (default 4)")
    v.add_argument("--views", type=_positive_int, default=6, help="augmented views per image (default 6)")
    v.add_argument("--seed", type=int, default=0, help="which images and views (default 0)")
    v.add_argument("--output", help="the PNG: each image's evaluation view, then its views")
    v.add_argument("--raw", help="a .npy of the uint8 views after crop and flip, before the colour operations "
                                 "[images, views, 3, S, S]")


def _pretrain(args: argparse.Namespace) -> int:
    from ssl_emp.config import load_config
    from ssl_emp.train import pretrain

    overrides = list(args.overrides)
    for flag, key in (("output_dir", "output_dir"), ("epochs", "epochs"), ("seed", "seed"), ("device", "device"),
                      ("threads", "threads"), ("method", "pruning.method"), ("pruning_rate", "pruning.rate"), ("data_dir", "data.data_dir")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    if args.no_progress:
        overrides.append("progress=false")
    if args.resume and not args.config and args.output_dir:
        cfg = _resume_config(RunLayout(args.output_dir), overrides)
    else:
        cfg = load_config(args.config, overrides)
    args.run_dir = cfg.output_dir  # for the Ctrl-C message
    summary = pretrain(cfg, resume=args.resume)
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_rank() != 0:
        return 0
    if summary["knn_top1"] is not None:
        test = f"test top-1 {summary['test_top1']:.4f}, " if summary.get("test_top1") is not None else ""
        print(f"final {test}kNN top-1 {summary['knn_top1']:.4f} (epoch 0: {summary['knn_top1_epoch0']:.4f}), "
              f"{summary['wall_time_s']:.0f} s, achieved pruning rate {summary['achieved_rate']:.3f}; "
              f"results in {cfg.output_dir}")
    else:
        print(f"done in {summary['wall_time_s']:.0f} s (no labelled test split: no kNN); results in {cfg.output_dir}")
    return 0


def _resume_config(layout: RunLayout, overrides: list[str]) -> Config:
    """The config ``--resume`` without ``--config`` continues: the run's config.yaml, or, if that was
    deleted, the copy every checkpoint holds (not the defaults, which would differ from it)."""
    from ssl_emp.config import load_config, save_config
    from ssl_emp.run.checkpoint import checkpoint_config, load_checkpoint

    # A run's saved config holds its input paths absolute or, written by earlier versions, as given:
    # relative to the folder the run was started from, not to the run folder.
    here = Path.cwd()
    if layout.config.is_file() or not layout.last.is_file():
        return load_config(layout.config if layout.config.is_file() else None, overrides, relative_to=here)
    with tempfile.TemporaryDirectory() as tmp:  # load_config reads a file: --set applies on top of it alike
        saved = Path(tmp) / layout.config.name
        save_config(checkpoint_config(load_checkpoint(layout.last), layout.last), saved)
        return load_config(saved, overrides, relative_to=here)


def _eval(args: argparse.Namespace) -> int:
    from ssl_emp.eval.from_checkpoint import check_output, evaluate_checkpoint
    from ssl_emp.runtime import set_threads

    set_threads(args.threads)
    if args.output:  # before the evaluation: a refused --output is found in a second, not after minutes
        check_output(args.output)
    result = evaluate_checkpoint(args.checkpoint, args.protocol, dataset=args.dataset, data_dir=args.data_dir,
                                 k=args.k, temperature=args.temperature, device=args.device)
    if args.output:
        atomic_write_text(args.output, json.dumps(result, indent=2))
    print(f"{args.protocol} top-1 {result['top1']:.4f} top-5 {result['top5']:.4f} "
          f"on {result['dataset']} ({result['num_test']} test images)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from ssl_emp.export import export_backbone, how_to_load

    backbone, cfg = export_backbone(args.checkpoint, args.output, force=args.force)
    params = sum(p.numel() for p in backbone.parameters())
    print(f"exported {cfg.model.backbone} backbone ({params:,} parameters, {backbone.num_features} features) "
          f"to {args.output}; reload with {how_to_load(cfg.model.cifar_stem)}")
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from ssl_emp.benchmark.sweep import run_benchmark

    output_dir = args.output_dir or str(Path("runs") / "benchmark" / Path(args.config).stem)
    return run_benchmark(args.config, output_dir, args.overrides, dry_run=args.dry_run, merge_from=args.merge_from)


def _curate(args: argparse.Namespace) -> int:
    from ssl_emp.curate.command import curate_command

    return curate_command(args)


def _views(args: argparse.Namespace) -> int:
    from ssl_emp.config import finalize, load_config
    from ssl_emp.data import preview
    from ssl_emp.runtime import set_threads

    if not args.output and not args.raw:
        raise ConfigError("views needs --output PNG, --raw FILE.npy or both")
    output = args.output and preview.check_output(args.output, ".png", "--output")
    raw_path = args.raw and preview.check_output(args.raw, ".npy", "--raw")
    if output and raw_path and output.resolve() == raw_path.resolve():
        raise ConfigError("views --output and --raw name the same file")
    data_dir = [f"data.data_dir={json.dumps(args.data_dir)}"] if args.data_dir else []
    cfg = finalize(load_config(args.config, [*args.overrides, *data_dir]))
    set_threads(cfg.threads)
    image, raw = preview.preview(cfg, args.images, args.views, args.seed)
    if raw_path:
        preview.write_npy(raw, raw_path)
    if output:
        preview.write_png(image, output)
    print(f"{args.images} images x {args.views} views at {cfg.data.image_size} px: "
          + " and ".join(str(p) for p in (output, raw_path) if p))
    return 0


@dataclass(frozen=True)
class Command:
    """A subcommand: its one line of help, its long description, the function adding its options and the
    one running it. Both import what they need themselves, so ``ssl-emp --help`` and a subcommand's
    parsing load no torch, timm or faiss until that subcommand's options are built."""

    help: str
    add_options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None


_EXPORT_LOADS = ("A standard-stem backbone (model.cifar_stem: false) loads with "
                 "timm.create_model('local-dir:DIR', pretrained=True). A CIFAR-stem one (3x3 stride-1 stem, the "
                 "default) has no timm architecture: load it with ssl_emp.models.load_backbone(DIR). DIR/README.md "
                 "says which applies.")

#: The subcommands, in the order ``--help`` lists them.
COMMANDS: dict[str, Command] = {
    "pretrain": Command("pretrain an encoder (default: digits, SimCLR, CPU)", _pretrain_options, _pretrain),
    "eval": Command("evaluate a checkpoint's backbone: kNN or linear probe", _eval_options, _eval),
    "export": Command("write a checkpoint's backbone as a model folder (safetensors + config.json)",
                      _export_options, _export, description=_EXPORT_LOADS),
    "benchmark": Command("run a method x rate x seed grid resumably; results table, report, plots",
                         _benchmark_options, _benchmark),
    "curate": Command("find redundant training images with an encoder (SemDeDup, prototypes); "
                      "writes kept.txt for --set data.keep_file=...", _curate_options, _curate),
    "views": Command("a PNG grid of training images beside their augmented views (and the raw crops)",
                     _views_options, _views),
}


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``ssl-emp`` parser; the options of ``commands`` only (default: every subcommand's)."""
    parser = _Parser(prog="ssl-emp", description="Contrastive SSL pretraining with dynamic data pruning (EMP).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, command in COMMANDS.items():
        about = f"{command.help[0].upper()}{command.help[1:]}."
        p = sub.add_parser(name, help=command.help, description=f"{about} {command.description or ''}".strip())
        if commands is None or name in commands:
            command.add_options(p)
    return parser


def _interrupted_hint(args: argparse.Namespace) -> str:
    """What the user can do after Ctrl-C, true to what is on disk."""
    if args.command == "benchmark":
        return "finished runs and the last checkpoint of the current one are kept (rerun the same command to continue)"
    if args.command == "curate":
        return "rerun the same command: embeddings it had finished saving in --output-dir are reused"
    if args.command != "pretrain":
        return "nothing was written"
    run_dir = getattr(args, "run_dir", None)
    if run_dir is not None and RunLayout(run_dir).last.is_file():
        return "the last checkpoint is intact (continue with --resume)"
    return "no checkpoint was written yet (rerun the same command to start again)"


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM and Kubernetes send before preemption), handled like Ctrl-C."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    named = [a for a in argv if not a.startswith("-")][:1]  # the subcommand: only its options are built
    try:
        args = build_parser(named).parse_args(argv)
    except SystemExit as exc:  # argparse: bad arguments (2) or --help (0)
        return int(exc.code or 0)
    from ssl_emp.distributed import init, teardown

    started = args.command == "pretrain" and init()
    # Only the main thread may set handlers; a library caller on another thread keeps its own.
    previous = (signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread()
                else None)
    try:
        return COMMANDS[args.command].run(args)
    except ConfigError as exc:
        print(f"ssl-emp: error: {exc}", file=sys.stderr)
        return 2
    except (TrainingDiverged, RunFailed) as exc:
        print(f"ssl-emp: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a write not routed through ssl_emp.run.files (e.g. a full disk): still one line
        print(f"ssl-emp: error: {os_error_message(exc, exc.filename or 'a file')}", file=sys.stderr)
        return 1
    except Terminated:
        print(f"ssl-emp: terminated (SIGTERM); {_interrupted_hint(args)}", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"ssl-emp: interrupted; {_interrupted_hint(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        teardown(started)


if __name__ == "__main__":
    sys.exit(main())
