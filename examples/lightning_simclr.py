"""SimCLR with dynamic data pruning in PyTorch Lightning (shape of lightly's Lightning SimCLR example).

Runs offline on CPU in well under a minute:

    python examples/lightning_simclr.py --epochs 2 --method emp --rate 0.5

Data: scikit-learn's 8×8 digits upsampled to 16 px, two random views per image (shift, scale,
noise). The backbone is a narrow timm ResNet-18 with the CIFAR stem. lightly's ``NTXentLoss`` is
logged as the reference; the training loss is the project's per-sample InfoNCE, whose mean equals
it, weighted by what the pruner returns. Under DDP: ``--devices 2`` (``Trainer`` launches the
processes) keeps ``use_distributed_sampler=False``: the pruner's sampler shards the kept set itself.
"""

from __future__ import annotations

import argparse

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from sklearn.datasets import load_digits
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ssl_emp.lightning import PruningCallback
from ssl_emp.losses import info_nce_per_sample
from ssl_emp.models import build_backbone
from ssl_emp.pruning import METHODS


class IndexedTwoViews(Dataset):
    """(index, view1, view2): the index is what the pruner keys its per-sample statistics on."""

    def __init__(self, size: int = 16) -> None:
        x = torch.from_numpy(load_digits().data).to(torch.float32).view(-1, 1, 8, 8) / 16.0
        self.images = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    def __len__(self) -> int:
        return self.images.shape[0]

    @staticmethod
    def augment(img: Tensor) -> Tensor:
        # Random shift by up to 2 px (pad + crop), random contrast, Gaussian noise.
        size = img.shape[-1]
        padded = F.pad(img, (2, 2, 2, 2))
        dy, dx = torch.randint(0, 5, (2,)).tolist()
        out = padded[:, dy:dy + size, dx:dx + size]
        out = out * (0.6 + 0.8 * torch.rand(1))
        return (out + 0.1 * torch.randn_like(out) - 0.5) / 0.5

    def __getitem__(self, i: int) -> tuple[int, Tensor, Tensor]:
        img = self.images[i]
        return i, self.augment(img), self.augment(img)


class SimCLR(pl.LightningModule):
    def __init__(self, pruning: PruningCallback, batch_size: int = 128, lr: float = 0.06) -> None:
        super().__init__()
        self.pruning = pruning
        self.batch_size = batch_size
        self.lr = lr
        self.backbone = build_backbone("resnet18", cifar_stem=True, in_chans=1, channels=[8, 16, 32, 64])
        self.projection_head = SimCLRProjectionHead(64, 64, 32)
        self.reference_loss = NTXentLoss(temperature=0.5)  # lightly's batch-mean NT-Xent

    def forward(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x))

    def train_dataloader(self) -> DataLoader:
        # The pruner's batch sampler serves this epoch's kept set (this rank's share under DDP).
        return DataLoader(IndexedTwoViews(), batch_sampler=self.pruning.batch_sampler(self.batch_size))

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        idx, x0, x1 = batch
        z0, z1 = self(x0), self(x1)
        loss_i, align_i = info_nce_per_sample(z0, z1, temperature=0.5)  # per sample, [B]
        weights = self.pruning.update(idx, loss=loss_i.detach(), align=align_i)  # 1 except InfoBatch
        loss = (weights * loss_i).mean()
        self.log("train_loss", loss, prog_bar=True)
        self.log("ntxent_reference", self.reference_loss(z0, z1).detach())
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--method", default="emp", choices=METHODS)
    parser.add_argument("--rate", type=float, default=0.5, help="pruning rate (ignored by infobatch / scan)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--devices", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(1)
    pl.seed_everything(args.seed, verbose=False)  # the example's own model init and augmentations
    num_samples = len(IndexedTwoViews())
    rate = 0.0 if args.method in ("infobatch", "scan", "full") else args.rate
    pruning = PruningCallback(num_samples=num_samples, method=args.method, pruning_rate=rate,
                              epochs=args.epochs, seed=args.seed)
    model = SimCLR(pruning, batch_size=args.batch_size)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=args.devices,
        callbacks=[pruning],
        use_distributed_sampler=False,  # keep the pruner's sampler
        # InfoBatch and SCAN change the epoch size: Lightning must re-measure the DataLoader.
        reload_dataloaders_every_n_epochs=1 if args.method in ("infobatch", "scan") else 0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model)
    if trainer.is_global_zero:
        stats = pruning.pruner.stats()
        keys = ("method", "target_rate", "achieved_rate", "sample_visits", "optimizer_steps", "visits_per_epoch")
        for key in keys:
            print(f"{key}: {stats[key]}")
        print(f"train_loss: {float(trainer.callback_metrics['train_loss']):.4f}")


if __name__ == "__main__":
    main()
