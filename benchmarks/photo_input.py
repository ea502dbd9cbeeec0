"""Photographs: fidelity of the crops, speed of the input path per worker core, SimCLR end to end
against lightly's recipe, memory of the stored images. CPU, one thread, about 10 minutes.

    OMP_NUM_THREADS=1 python benchmarks/photo_input.py [--out benchmarks/results/photo_input]
        [--photos 2000] [--speed-images 400] [--rounds 2] [--train 512] [--parts fidelity,speed,train,memory]

Needs scikit-image (``pip install scikit-image``) for its sample photographs; the photo folder
(JPEGs at 300-600 px made from them, varied by crop, scale, flip and quality, one class per sample
photograph) is built in a temporary folder and deleted, never committed.

(i) fidelity: views of coordinate-encoded images (red = column, green = row; 4:3, 3:4, 1:1, larger
than the view) read back to their crop box; the two-sample KS test of the area fraction and the log
aspect ratio against ``torchvision.transforms.RandomResizedCrop.get_params``, for ``raw_views`` (the
training path) and for the squashed path every image took before (resize to a square, then crop).
(ii) speed: images/s of one DataLoader worker (2 views of 96 px per image, crop scale 0.08-1):
ssl-emp from the files (decode with Pillow's draft, crop, resize), ssl-emp from the decoded images in
memory, torchvision (PIL decode, RandomResizedCrop x2, PILToTensor), lightly's whole
``SimCLRTransform(input_size=96)`` (colour operations included: ssl-emp makes those on the device).
Interleaved rounds. (iii) SimCLR end to end, ResNet-18 (ImageNet stem), 96 px, batch 64, one worker,
one epoch over ``--train`` photos: ssl-emp's ``pretrain`` against lightly's SimCLR example loop, kNN
top-1 of both (the same kNN, ``ssl_emp.eval.knn_accuracy``). (iv) bytes of the stored images per
1,000 photos at the default ``data.store_size`` and at 256.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ssl_emp.runtime import versions  # noqa: E402

SIZE, SCALE, RATIO = 96, (0.08, 1.0), (3 / 4, 4 / 3)
# scikit-image's bundled sample photographs (no download); gray ones are repeated into RGB.
SAMPLES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "camera", "coins",
           "brick", "grass", "gravel", "cat", "moon", "page")


# ----------------------------------------------------------------------------- the photo folder
def build_photos(root: Path, n_train: int, n_test: int = 200, seed: int = 0, classes: int = 8) -> Path:
    """``root/train/<sample>/*.jpg`` and ``root/test/...``: JPEGs of 300-600 px (longer side) cut
    from scikit-image's sample photographs (area 50-100 %, aspect 3:4-4:3, flipped half the time,
    quality 80-95)."""
    import skimage.data
    from PIL import Image

    bases = []
    for name in SAMPLES:
        try:
            image = np.asarray(getattr(skimage.data, name)())
        except Exception:  # noqa: BLE001 - a sample that needs a download: skipped
            continue
        image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
        bases.append((name, image.astype(np.uint8)))
        if len(bases) == classes:
            break
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("test", n_test)):
        for i in range(count):
            name, base = bases[i % len(bases)]
            h, w = base.shape[:2]
            area, aspect = rng.uniform(0.5, 1.0) * h * w, math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw, ch = min(w, int(math.sqrt(area * aspect))), min(h, int(math.sqrt(area / aspect)))
            x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            img = Image.fromarray(base[y0:y0 + ch, x0:x0 + cw])
            longer = rng.integers(300, 601)
            img = img.resize((round(cw * longer / max(cw, ch)), round(ch * longer / max(cw, ch))), Image.BILINEAR)
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            img.save(folder / f"{i:05d}.jpg", quality=int(rng.integers(80, 96)))
    return root


def jpeg_files(root: Path, split: str = "train") -> list[str]:
    return sorted(str(p) for p in (root / split).rglob("*.jpg"))


# ----------------------------------------------------------------------------- (i) fidelity
def _coordinates(height: int, width: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([x, y, torch.zeros_like(x)]).to(torch.uint8)


def _read_boxes(views: torch.Tensor, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(w, h) in the original's pixels of views [M, 3, S, S] of a coordinate image: the slopes of
    red across and green down, fitted on the interior."""
    v = views.double()
    j = torch.arange(size, dtype=torch.float64)[2:-2]
    jc = j - j.mean()

    def slope(profile: torch.Tensor) -> torch.Tensor:
        p = profile[:, 2:-2]
        return ((p - p.mean(1, keepdim=True)) * jc).sum(1) / (jc * jc).sum()

    return (slope(v[:, 0].mean(1)).abs() * size).round().numpy(), (slope(v[:, 1].mean(2)).abs() * size).round().numpy()


def fidelity(n: int = 4000, size: int = 64) -> list[dict[str, Any]]:
    """KS statistics and p-values of the crops' area fraction and log aspect ratio against torchvision."""
    from scipy.stats import ks_2samp
    from torchvision.transforms import RandomResizedCrop

    from ssl_emp.augment import view_augmentation
    from ssl_emp.data.datasets import IndexedImages
    from ssl_emp.data.decode import resize_square
    from ssl_emp.data.source import SubsetSource
    from ssl_emp.data.views import geometric_ops, raw_views
    from ssl_emp.settings import AugmentConfig

    cfg = AugmentConfig(preset="simclr", min_scale=SCALE[0])
    rows = []
    for height, width in ((192, 256), (256, 192), (224, 224)):
        image = _coordinates(height, width)
        torch.manual_seed(0)
        ref = np.array([RandomResizedCrop.get_params(image, list(SCALE), list(RATIO)) for _ in range(n)], float)
        ref_w, ref_h = ref[:, 3], ref[:, 2]
        new = raw_views(SubsetSource(IndexedImages(image[None]), torch.zeros(n, dtype=torch.long)), list(range(n)), 1,
                        cfg, size, seed=0)[:, 0]
        torch.manual_seed(0)
        ops = geometric_ops(view_augmentation(cfg, size))
        old = ops(resize_square(image[None], size).expand(n, -1, -1, -1)).mul(255).round().clamp(0, 255).to(torch.uint8)
        for path, views in (("ssl-emp (crop from the original)", new), ("squashed to a square, then cropped", old)):
            w, h = _read_boxes(views, size)
            area = ks_2samp(w * h / (width * height), ref_w * ref_h / (width * height))
            aspect = ks_2samp(np.log(w / h), np.log(ref_w / ref_h))
            rows.append({"image (H x W)": f"{height} x {width}", "path": path, "views": n,
                         "area_ks": round(float(area.statistic), 4), "area_p": float(f"{area.pvalue:.3g}"),
                         "log_aspect_ks": round(float(aspect.statistic), 4), "log_aspect_p": float(f"{aspect.pvalue:.3g}")})
    return rows


# ----------------------------------------------------------------------------- (ii) speed per worker core
class _TorchvisionViews(torch.utils.data.Dataset):
    """PIL decode, then two views each by ``transform`` (torchvision's or lightly's)."""

    def __init__(self, files: list[str], transform: Any, two: bool = True):
        self.files, self.transform, self.two = files, transform, two

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        with Image.open(self.files[i]) as img:
            img = img.convert("RGB")
        return torch.stack([self.transform(img), self.transform(img)]) if self.two else self.transform(img)


def _keys(n: int, batch: int) -> list[list[tuple[int, int]]]:
    """``CroppedViews`` keys (epoch 0, index) in batches."""
    return [[(0, i) for i in range(start, min(start + batch, n))] for start in range(0, n, batch)]


def _pipelines(files: list[str]) -> dict[str, tuple[torch.utils.data.Dataset, Any]]:
    """name -> (dataset, batch sampler or None), each making 2 views of SIZE px per image."""
    from lightly.transforms import SimCLRTransform
    from torchvision.transforms import v2

    from ssl_emp.data.datasets import IndexedImageFiles, PackedImages
    from ssl_emp.data.views import CroppedViews

    n = len(files)
    files_source = IndexedImageFiles(files, None, None, SIZE)
    stored = IndexedImageFiles(files, None, None, SIZE, store_size=256)
    memory = PackedImages.pack([files_source.read(i) for i in range(n)])  # decoded once, as the in-memory cache
    rrc = v2.Compose([v2.RandomResizedCrop(SIZE, SCALE, antialias=True), v2.PILToTensor()])
    return {
        "ssl-emp, from the files (store_size null)": (CroppedViews(files_source, 2, SIZE, SCALE, 0), _keys(n, 32)),
        "ssl-emp, from the files (store_size 256)": (CroppedViews(stored, 2, SIZE, SCALE, 0), _keys(n, 32)),
        "ssl-emp, decoded images in memory": (CroppedViews(memory, 2, SIZE, SCALE, 0), _keys(n, 32)),
        "torchvision: decode, RandomResizedCrop x2": (_TorchvisionViews(files, rrc), None),
        "lightly: decode, SimCLRTransform(96)": (_TorchvisionViews(files, SimCLRTransform(input_size=SIZE), two=False), None),
    }


def _images_per_s(dataset: torch.utils.data.Dataset, sampler: Any, n: int) -> float:
    """Images per second of one worker over ``n`` images, after its first batch (start-up left out)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=1 if sampler else 32, batch_sampler=sampler,
                                         num_workers=1, prefetch_factor=4)
    it = iter(loader)
    next(it)
    t0, seen = time.perf_counter(), 0
    for batch in it:
        seen += (batch if isinstance(batch, torch.Tensor) else batch[0]).shape[0]  # views, or (indices, views)
    return seen / (time.perf_counter() - t0)


DALI = "NVIDIA DALI, CPU mode, 1 thread: decode the crop (decoders.image_random_crop), resize"


def _dali_images_per_s(files: list[str]) -> float:
    """Images per second of ``data.backend=dali``'s input (``DaliViews``) in DALI's CPU mode with one
    thread, after its first batch (the pipeline's build left out), batches of 32, 2 views each."""
    from ssl_emp.data.dali import DaliViews
    from ssl_emp.data.views import EpochTagged

    batches = [list(range(start, min(start + 32, len(files)))) for start in range(0, len(files), 32)]
    views = iter(DaliViews(files, EpochTagged(batches, lambda: 0), 2, SIZE, SCALE, 0, torch.device("cpu"), threads=1))
    next(views)
    t0, seen = time.perf_counter(), 0
    for _, batch in views:
        seen += batch.shape[0]
    return seen / (time.perf_counter() - t0)


def speed(files: list[str], rounds: int) -> list[dict[str, Any]]:
    """Interleaved rounds (A B C ... A B C ...) of every pipeline: the machine's load falls on all alike.
    DALI's input runs in each round too where NVIDIA DALI is installed."""
    pipelines = _pipelines(files)
    try:
        import nvidia.dali  # noqa: F401
        dali = True
    except ImportError:
        dali = False
    results: dict[str, list[float]] = {name: [] for name in [*pipelines, *([DALI] if dali else [])]}
    for _ in range(rounds):
        for name, (dataset, sampler) in pipelines.items():
            results[name].append(_images_per_s(dataset, sampler, len(files)))
        if dali:
            results[DALI].append(_dali_images_per_s(files))
    return [{"pipeline": name, "images_per_s": [round(v, 1) for v in values],
             "median": round(float(np.median(values)), 1)} for name, values in results.items()]


# ----------------------------------------------------------------------------- (iii) SimCLR end to end
BATCH, LR, TEMPERATURE, KNN_K, KNN_T = 64, 0.06, 0.5, 20, 0.1  # lightly's SimCLR example: SGD 0.06, NTXent 0.5


def _ssl_emp_run(root: Path, n_train: int, out: Path) -> dict[str, Any]:
    """``pretrain`` of ResNet-18 (ImageNet stem) SimCLR at 96 px, one epoch, one worker."""
    from ssl_emp.config import load_config
    from ssl_emp.train import pretrain

    # The model section from a file: ``--set model.backbone_kwargs={}`` would merge into the
    # default narrow ResNet's kwargs, not replace them.
    config = out.with_name(out.name + ".yaml")
    config.write_text(json.dumps({"model": {"backbone": "resnet18", "backbone_kwargs": {}, "cifar_stem": False}}))
    overrides = ["algorithm=simclr", "epochs=1", "progress=false", f"output_dir={json.dumps(str(out))}",
                 "data.dataset=imagefolder", f"data.data_dir={json.dumps(str(root))}", f"data.image_size={SIZE}",
                 f"data.train_subset={n_train}", "data.num_workers=1", f"data.cache_dir={json.dumps(str(out) + '-cache')}",
                 "augment.preset=simclr", "model.proj_hidden_dim=512", "model.proj_out_dim=128", f"model.temperature={TEMPERATURE}",
                 "model.channels_last=false", "optim.name=sgd", f"optim.lr={LR * 256 / BATCH}", f"optim.batch_size={BATCH}",
                 "eval.eval_every=0", f"eval.knn_k={KNN_K}", f"eval.knn_temperature={KNN_T}"]
    t0 = time.perf_counter()
    cfg = load_config(config, overrides)
    assert cfg.model.backbone_kwargs == {}, cfg.model.backbone_kwargs  # torchvision's ResNet-18, as lightly's
    summary = pretrain(cfg)
    wall = time.perf_counter() - t0
    epoch = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"images_per_s"' in line][-1]
    return {"recipe": "ssl-emp pretrain", "train_images_per_s": round(epoch["images_per_s"], 2),
            "epoch_s": round(epoch["epoch_time_s"], 1), "knn_top1": round(summary["knn_top1"], 4), "wall_s": round(wall, 1)}


def _lightly_run(root: Path, files: list[str], labels: list[int]) -> dict[str, Any]:
    """lightly's SimCLR example loop (torchvision ResNet-18 backbone, SimCLRProjectionHead, NTXentLoss,
    SimCLRTransform in one worker, SGD), one epoch; kNN on the eval transform's features."""
    import torchvision
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
    from torch import nn
    from torchvision.transforms import v2

    from ssl_emp.eval import extract_features, knn_accuracy

    torch.manual_seed(0)
    backbone = nn.Sequential(*list(torchvision.models.resnet18().children())[:-1], nn.Flatten())
    model = nn.Sequential(backbone, SimCLRProjectionHead(512, 512, 128))
    criterion, optimizer = NTXentLoss(temperature=TEMPERATURE), torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9,
                                                                              weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(_TorchvisionViews(files, SimCLRTransform(input_size=SIZE), two=False),
                                         batch_size=BATCH, shuffle=True, drop_last=True, num_workers=1)
    t0 = time.perf_counter()
    model.train()
    seen = 0
    for x0, x1 in loader:
        loss = criterion(model(x0), model(x1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(x0)
    epoch_s = time.perf_counter() - t0
    norm = v2.Compose([v2.Resize(SIZE, antialias=True), v2.CenterCrop(SIZE), v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    test = jpeg_files(root, "test")
    classes = sorted({Path(f).parent.name for f in files})
    test_labels = [classes.index(Path(f).parent.name) for f in test]
    feats = [extract_features(backbone, torch.utils.data.DataLoader(_TorchvisionViews(fs, norm, two=False), batch_size=128))[0]
             for fs in (files, test)]
    knn = knn_accuracy(feats[0], torch.tensor(labels), feats[1], torch.tensor(test_labels), k=KNN_K, temperature=KNN_T)
    return {"recipe": "lightly SimCLR example", "train_images_per_s": round(seen / epoch_s, 2), "epoch_s": round(epoch_s, 1),
            "knn_top1": round(knn["top1"], 4), "wall_s": round(time.perf_counter() - t0, 1)}


def end_to_end(root: Path, n_train: int, tmp: Path, rounds: int) -> list[dict[str, Any]]:
    """Both recipes on the same ``n_train`` photos (ssl-emp's fixed subset), one epoch each, in
    interleaved rounds (A B A B)."""
    from ssl_emp.data import load_data
    from ssl_emp.settings import DataConfig

    train = load_data(DataConfig(dataset="imagefolder", data_dir=str(root), image_size=SIZE, train_subset=n_train,
                                 in_memory=False)).train
    rows = []
    for r in range(rounds):
        rows.append({"round": r, **_ssl_emp_run(root, n_train, tmp / f"ssl-emp-run-{r}")})
        rows.append({"round": r, **_lightly_run(root, list(train.files), train.labels.tolist())})
    return rows


# ----------------------------------------------------------------------------- (iv) memory
def memory(root: Path, tmp: Path) -> list[dict[str, Any]]:
    """Bytes of the decoded training images as held (and cached) per 1,000 photos, and of the JPEGs."""
    from ssl_emp.data import load_data
    from ssl_emp.settings import DataConfig

    files = jpeg_files(root)
    rows = [{"stored as": "the JPEG files", "MiB_per_1000": round(sum(os.path.getsize(f) for f in files) / len(files) / 2**20 * 1000, 1)}]
    for store in (None, 256):
        train = load_data(DataConfig(dataset="imagefolder", data_dir=str(root), image_size=SIZE, store_size=store,
                                     cache_dir=str(tmp / f"cache-{store}"))).train
        stored = train.stacked() if train.stacked() is not None else train.data
        sides = [min(train.read(i).shape[-2:]) for i in range(len(train))]
        rows.append({"stored as": f"decoded, data.store_size={'null (default)' if store is None else store}",
                     "MiB_per_1000": round(stored.numel() / len(train) / 2**20 * 1000, 1),
                     "median_shorter_side_px": int(np.median(sides))})
    return rows


# ----------------------------------------------------------------------------- the record
def machine() -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "load_average": load,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "photo_input"))
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--speed-images", type=int, default=400, help="images per speed measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the speed and end-to-end runs")
    parser.add_argument("--train", type=int, default=512, help="photos of the end-to-end run")
    parser.add_argument("--parts", default="fidelity,speed,train,memory")
    args = parser.parse_args()
    torch.set_num_threads(1)
    parts = args.parts.split(",")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    record: dict[str, Any] = {"command": " ".join(["OMP_NUM_THREADS=1", "python", *sys.argv]), "commit": commit,
                              "machine": machine(), "versions": versions(), "settings": vars(args)}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "fidelity" in parts:
            record["fidelity"] = fidelity()
            print(json.dumps(record["fidelity"], indent=1), flush=True)
        if {"speed", "train", "memory"} & set(parts):
            root = build_photos(tmp / "photos", args.photos)
            record["photos"] = {"train": args.photos, "test": len(jpeg_files(root, "test")),
                                "classes": sorted(p.name for p in (root / "train").iterdir())}
        if "speed" in parts:
            record["speed"] = speed(jpeg_files(root)[:args.speed_images], args.rounds)
            print(json.dumps(record["speed"], indent=1), flush=True)
        if "memory" in parts:
            record["memory"] = memory(root, tmp)
            print(json.dumps(record["memory"], indent=1), flush=True)
        if "train" in parts:
            record["end_to_end"] = end_to_end(root, args.train, tmp, args.rounds)
            print(json.dumps(record["end_to_end"], indent=1), flush=True)
    record["machine"]["load_average_end"] = machine()["load_average"]
    record["total_s"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out / 'results.json'} ({record['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
