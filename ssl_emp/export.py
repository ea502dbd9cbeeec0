"""``ssl-emp export``: a checkpoint's backbone alone, as a timm / Hugging Face model folder.

The folder holds ``model.safetensors`` and ``config.json``, both written by timm's ``save_for_hf``:
the architecture name, its arguments (``model_args``: the run's ``model.backbone_kwargs`` with
``num_classes=0``) and the preprocessing of ``ssl-emp eval`` (input size, mean, std). An
``ssl_emp`` section adds what timm's config cannot say, above all ``cifar_stem``: timm has no 3×3
stride-1 ResNet stem, so such a backbone reloads only with :func:`ssl_emp.models.load_backbone`;
any other reloads with ``timm.create_model("local-dir:DIR", pretrained=True)`` as well. A
``README.md`` in the folder says which applies and shows the code.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import timm
from safetensors import SafetensorError
from torch import nn

from ssl_emp import __version__
from ssl_emp.config import Config
from ssl_emp.errors import ConfigError, RunFailed
from ssl_emp.eval.from_checkpoint import backbone_from_checkpoint
from ssl_emp.run.files import os_error_message

#: Files of an export are for others to read (numpy, timm and tempfile-based writers leave 0600).
FILE_MODE = 0o644

# Failures of the machine, not of the --output given: exit 1 (RunFailed), not 2.
_RUNTIME_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO)


def _is_export(folder: Path) -> bool:
    try:
        return "ssl_emp" in json.loads((folder / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def _check_output(out: Path, force: bool) -> None:
    """An absent or empty folder is written; an earlier export only with ``force`` (the user's files beside
    it stay); a folder without an earlier export never."""
    try:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"export output {out} exists and is not a folder")
        if not out.is_dir() or not any(out.iterdir()):
            return
    except OSError as exc:  # a name too long, a folder that cannot be read: the --output's fault
        raise ConfigError(os_error_message(exc, out, "use")) from exc
    if not _is_export(out):
        raise ConfigError(f"export output {out} is not empty and holds no earlier export; choose another --output")
    if not force:
        raise ConfigError(f"export output {out} already holds an export; pass --force to replace it")


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` folder's files into ``out``: an absent or empty ``out`` becomes ``tmp``;
    in an earlier export only the files an export writes are replaced, the user's other files stay.
    A failed move puts the earlier export's files back."""
    if not out.is_dir() or not any(out.iterdir()):
        os.replace(tmp, out)  # rename(2) replaces an empty folder in one step
        return
    old = out.with_name(f".{out.name}.old{os.getpid()}")
    old.mkdir()
    names = sorted(p.name for p in tmp.iterdir())
    moved: list[str] = []
    try:
        for name in names:
            if (out / name).exists():
                os.replace(out / name, old / name)
                moved.append(name)
        for name in names:
            os.replace(tmp / name, out / name)
    except OSError:
        for name in moved:  # should this fail too, the earlier files stay in ``old``, not deleted
            os.replace(old / name, out / name)
        old.rmdir()
        raise
    shutil.rmtree(old)


def _make_tmp(out: Path) -> Path:
    """The empty temporary sibling of ``out`` the export is written to, created before the checkpoint
    is read: an ``--output`` that cannot be written is refused at once."""
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as exc:
        if exc.errno in _RUNTIME_ERRNOS:
            raise RunFailed(os_error_message(exc, out, "create")) from exc
        # A parent that is a file, a name too long, no permission: the --output's fault.
        raise ConfigError(os_error_message(exc, out, "create")) from exc
    return tmp


def _configs(cfg: Config, checkpoint: Path) -> tuple[dict, dict, dict]:
    """``(model_config, model_args, data_config)`` for timm's ``save_for_hf``."""
    size = cfg.data.image_size
    model_config = {
        "ssl_emp": {"cifar_stem": cfg.model.cifar_stem, "algorithm": cfg.algorithm, "dataset": cfg.data.dataset,
                    "image_size": size, "checkpoint": str(checkpoint), "version": __version__},
        # timm copies the architecture's default pretrained tag, licence and paper; these weights are ours.
        "pretrained_cfg": {"tag": f"ssl-emp-{cfg.algorithm}", "license": None, "paper_ids": None, "origin_url": None},
    }
    model_args = {**cfg.model.backbone_kwargs, "num_classes": 0}
    # ssl-emp eval's preprocessing: the shorter side resized to size (bilinear), the centre crop (crop_pct 1), normalised.
    data_config = {"input_size": (3, size, size), "interpolation": "bilinear", "crop_pct": 1.0,
                   "mean": tuple(cfg.augment.mean), "std": tuple(cfg.augment.std)}
    return model_config, model_args, data_config


def how_to_load(cifar_stem: bool) -> str:
    """How an export with (or without) the CIFAR stem reloads, in words for one line (the CLI prints it)."""
    if cifar_stem:
        return ("ssl_emp.models.load_backbone(folder) (CIFAR stem: timm.create_model alone cannot rebuild it; "
                "the folder's README.md shows the timm code)")
    return "timm.create_model('local-dir:FOLDER', pretrained=True) or ssl_emp.models.load_backbone(folder)"


_TIMM_CIFAR = """```python
import json, timm, torch
from safetensors.torch import load_file

config = json.load(open("{dir}/config.json"))
args = {{**config["model_args"], "num_classes": 0}}
model = timm.create_model(config["architecture"], pretrained=False, **args)
# the CIFAR stem: a 3x3 stride-1 convolution and no max-pool
model.conv1 = torch.nn.Conv2d(3, model.conv1.out_channels, 3, 1, 1, bias=False)
model.maxpool = torch.nn.Identity()
model.load_state_dict(load_file("{dir}/model.safetensors"))
model.eval()
```"""


def _readme(cfg: Config, checkpoint: Path, folder: Path) -> str:
    """The export's README.md: what it is and how to load it, with and without ssl-emp."""
    d, stem = str(folder), cfg.model.cifar_stem
    loaders = [f"With ssl-emp installed (either stem):\n\n```python\nfrom ssl_emp.models import load_backbone\n\n"
               f"backbone = load_backbone(\"{d}\")  # eval mode\n```"]
    if stem:
        loaders.append("With timm alone: this backbone has the CIFAR stem (3x3 stride-1, no max-pool), which no "
                       "timm architecture has, so `timm.create_model(\"local-dir:...\", pretrained=True)` refuses its "
                       "weights (size mismatch). Build the model and load the state dict:\n\n" + _TIMM_CIFAR.format(dir=d))
    else:
        loaders.append(f"With timm alone:\n\n```python\nimport timm\n\nbackbone = timm.create_model("
                       f"\"local-dir:{d}\", pretrained=True)\n```")
    size, mean, std = cfg.data.image_size, cfg.augment.mean, cfg.augment.std
    return (f"# {cfg.model.backbone} backbone, pretrained with ssl-emp {__version__}\n\n"
            f"{cfg.algorithm} on {cfg.data.dataset} ({size} px), from `{checkpoint}`; "
            f"{'CIFAR' if stem else 'standard timm'} stem. `model.safetensors` holds the backbone alone (no "
            f"projection head, `num_classes=0`: images -> pooled features), `config.json` its timm config.\n\n"
            f"## Load it\n\n" + "\n\n".join(loaders) + "\n\n"
            f"## Inputs\n\nAs `ssl-emp eval` fed it: RGB with its shorter side resized to {size} (bilinear) and the centre {size}x{size} crop, scaled to "
            f"[0, 1], normalised with mean {mean} and std {std} (`timm.data.resolve_data_config(model=...)` reads them "
            f"from config.json).\n")


def export_backbone(checkpoint: str | Path, output: str | Path, force: bool = False) -> tuple[nn.Module, Config]:
    """Write the backbone of an ``ssl-emp pretrain`` checkpoint to ``output`` (see the module doc).

    The files are written to a temporary sibling folder (created before the checkpoint is read, so an
    ``output`` that cannot be written is refused at once) and moved to ``output`` once complete: a
    failed export leaves neither half a folder nor a damaged earlier export. ``output`` may be absent
    or empty; an earlier export's files there are replaced only with ``force``, nothing else in it.
    Returns the exported backbone (eval mode) and the run's config.
    """
    checkpoint, out = Path(checkpoint), Path(output).resolve()  # resolved: "." or "dir/" have a name
    _check_output(out, force)
    tmp = _make_tmp(out)
    try:
        backbone, cfg = backbone_from_checkpoint(str(checkpoint))
        backbone.eval()
        model_config, model_args, data_config = _configs(cfg, checkpoint)
        timm.models.save_for_hf(backbone, str(tmp), model_config=model_config, model_args=model_args,
                                safe_serialization=True, data_config=data_config)
        (tmp / "README.md").write_text(_readme(cfg, checkpoint, out))
        for path in tmp.iterdir():
            path.chmod(FILE_MODE)
        _replace_dir(tmp, out)
    except OSError as exc:  # the folder was writable: a full disk or an I/O error, not bad input (exit 1)
        raise RunFailed(os_error_message(exc, f"export to {out}")) from exc
    except SafetensorError as exc:  # safetensors' own write errors (a full disk among them)
        raise RunFailed(_safetensors_message(exc, f"export to {out}")) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return backbone, cfg


def _safetensors_message(exc: Exception, what: str) -> str:
    """``cannot write WHAT: REASON``; safetensors wraps the OS error in Rust debug text
    (``IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })``)."""
    text = str(exc).strip()
    found = re.search(r'code: (\d+), kind: \w+, message: "([^"]+)"', text)
    if found:
        return os_error_message(OSError(int(found.group(1)), found.group(2)), what)
    return f"cannot write {what}: {text.splitlines()[0] if text else type(exc).__name__}"
