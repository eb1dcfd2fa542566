"""Projected-GAN loss phases of the StyleGAN-XL recipe, for any loss in ``san_ext.losses`` (and its SAN form).

StyleGAN-XL (Sauer et al. 2022) Sec. 3-4 and upstream ``training/loss.py`` (``ProjectedGANLoss``):
- D inputs (real and fake) are blurred by a Gaussian whose sigma fades from 2 to 0 over the first 300 kimg;
- the adversarial loss is applied per logit; each (image, backbone) pair is averaged over that backbone's logits,
  and the pairs are summed (``reduction='sum'``, upstream) or averaged (``'mean'``);
  both points are :mod:`san_ext.critic_score`, shared with DOT's critic;
- G may add classifier guidance, cls_weight * CE(classifier(G(z, c)), c), and the stem adds lazy path-length
  regularisation (StyleGAN2, Karras et al. 2020, Eq. 4) after 1M images.
SAN (Takida et al. 2024): D phases call ``D(x, c, flg_train=True)`` and the SAN-converted loss takes ``(fun, dir)``.

Each phase function returns the reduced scalar loss and its statistics; the loop calls ``backward``. Our own code.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import NamedTuple, Optional

import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.spectral_norm import SpectralNorm

from san_ext import critic_score, losses
from san_ext.critic_score import ScoreSettings, backbone_logits, per_backbone

from .config import LossConfig

__all__ = ['ClassifierError', 'PhaseLoss', 'ProjectedGANLoss', 'build_classifier', 'frozen_spectral_norm',
           'refresh_spectral_norm']


class PhaseLoss(NamedTuple):
    """A phase's scalar loss (reduced; the loop calls backward on it) and per-element statistics to report."""

    loss: torch.Tensor
    stats: dict[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------------------------
# Spectral norm: one power iteration per D use and step, however the batch is split.

def _spectral_norm_hooks(module: nn.Module) -> Iterator[tuple[nn.Module, SpectralNorm]]:
    for m in module.modules():
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, SpectralNorm):
                yield m, hook


@torch.no_grad()
def refresh_spectral_norm(module: nn.Module) -> None:
    """Run one power iteration on every spectral-norm layer of ``module`` (updates ``weight_u``/``weight_v``)."""
    for m, hook in _spectral_norm_hooks(module):
        hook.compute_weight(m, do_power_iteration=True)


@contextlib.contextmanager
def frozen_spectral_norm(module: nn.Module) -> Iterator[None]:
    """Forward passes inside use the stored singular vectors without iterating (BatchNorm stays in train mode).

    PyTorch iterates once per training-mode forward, so a batch split into k accumulation chunks (or over k
    ranks) would see k different normalisations; the loop instead calls :func:`refresh_spectral_norm` once per
    phase and runs every chunk inside this context, which makes the result independent of the split.
    """
    layers = [m for m, _ in _spectral_norm_hooks(module)]
    modes = [m.training for m in layers]
    for m in layers:
        m.training = False
    try:
        yield
    finally:
        for m, mode in zip(layers, modes):
            m.training = mode


# ---------------------------------------------------------------------------------------------------------------
# Classifier guidance.

class ClassifierError(RuntimeError):
    """The guidance classifier could not be built (usually: offline without cached weights)."""


class _Classifier(nn.Module):
    """Frozen timm ImageNet classifier on G's images: [-1, 1] -> [0, 1] -> 224 px -> normalise -> logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
        self.size = int(cfg.get('input_size', (3, 224, 224))[-1])
        mean = cfg.get('mean', timm.data.IMAGENET_DEFAULT_MEAN)
        std = cfg.get('std', timm.data.IMAGENET_DEFAULT_STD)
        self.register_buffer('mean', torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> _Classifier:
        return super().train(False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = (img.expand(-1, 3, -1, -1) + 1) / 2
        x = F.interpolate(x, size=(self.size, self.size), mode='bilinear', align_corners=False)
        return self.model((x - self.mean) / self.std)  # [B, num_classes]


def build_classifier(name: str, pretrained: bool = True, device: Optional[torch.device] = None) -> nn.Module:
    """The classifier of ``--cls_weight`` (StyleGAN-XL: deit_small_distilled_patch16_224), frozen, in eval mode."""
    try:
        model = timm.create_model(name, pretrained=pretrained)
    except Exception as e:
        cfg = timm.models.get_pretrained_cfg(name) if timm.is_model(name) else None
        repo = getattr(cfg, 'hf_hub_id', None)
        where = f' (Hugging Face repo {repo!r}: run `hf download {repo}` on a connected machine and copy the ' \
                f'cache over)' if repo else ''
        raise ClassifierError(f'--cls_weight needs the pretrained classifier {name!r}, which could not be loaded '
                              f'({type(e).__name__}: {e}){where}; or train with --cls_weight 0') from e
    return _Classifier(model).to(device or 'cpu')


# ---------------------------------------------------------------------------------------------------------------
# The loss.

class ProjectedGANLoss:
    """Per-phase losses for G and a projected D (``forward_per_backbone``); holds the path-length mean."""

    def __init__(self, cfg: LossConfig, G: nn.Module, D: nn.Module, classifier: Optional[nn.Module] = None,
                 superres: bool = False, device: Optional[torch.device] = None) -> None:
        self.cfg, self.G, self.D, self.classifier = cfg, G, D, classifier
        self.gan = losses.get(cfg.name, san=cfg.san, dir_weight=cfg.dir_weight)
        self.score = ScoreSettings.from_config(cfg)  # how D's score is read: blur schedule, reduction
        self.pl_weight = 0.0 if superres else cfg.pl_weight
        self.pl_mean = torch.zeros([], device=device or 'cpu')
        if cfg.cls_weight > 0 and classifier is None:
            raise ValueError('cls_weight > 0 needs a classifier (build_classifier)')

    # -- schedule ---------------------------------------------------------------------------------------------------
    def blur_sigma(self, cur_nimg: int) -> float:
        """The blur sigma of D's inputs at ``cur_nimg`` (:func:`san_ext.critic_score.blur_sigma`)."""
        return critic_score.blur_sigma(self.score, cur_nimg)

    def pl_due(self, cur_nimg: int, batch_idx: int) -> bool:
        """Whether this step runs the lazy path-length phase."""
        return (self.pl_weight > 0 and cur_nimg >= self.cfg.pl_start_kimg * 1e3
                and batch_idx % self.cfg.pl_interval == 0)

    # -- helpers ----------------------------------------------------------------------------------------------------
    def run_D(self, img: torch.Tensor, c: Optional[torch.Tensor], cur_nimg: int, flg_train: bool,
              generator: Optional[torch.Generator]) -> list:
        """Blurred images through D: one logit tensor [B, N_b] (or ``(fun, dir)``) per backbone."""
        return backbone_logits(self.D, img, c, sigma=self.blur_sigma(cur_nimg), flg_train=flg_train,
                               generator=generator)

    def reduce(self, per_pair: torch.Tensor) -> torch.Tensor:
        """[B, n_backbones] -> scalar: sum (StyleGAN-XL) or mean (:func:`san_ext.critic_score.reduce`)."""
        return critic_score.reduce(per_pair, self.score.reduction)

    @staticmethod
    def _per_pair(fn, outs: list) -> torch.Tensor:
        """Apply a per-logit loss to each backbone's logits and average over them: [B, n_backbones]."""
        return per_backbone(outs, fn)

    @staticmethod
    def _scores(outs: list) -> torch.Tensor:
        return torch.cat([(o[0] if isinstance(o, tuple) else o).detach() for o in outs], dim=1)  # [B, N]

    # -- phases -----------------------------------------------------------------------------------------------------
    def g_main(self, z: torch.Tensor, c: Optional[torch.Tensor], cur_nimg: int,
               generator: Optional[torch.Generator] = None) -> PhaseLoss:
        """G's adversarial loss on D(G(z, c)) plus classifier guidance."""
        img = self.G(z, c)  # [B, C, R, R]
        outs = self.run_D(img, c, cur_nimg, flg_train=False, generator=generator)
        adv = self._per_pair(self.gan.g, outs)
        loss = self.reduce(adv)
        scores = self._scores(outs)
        stats = {'Loss/scores/fake': scores, 'Loss/signs/fake': scores.sign(), 'Loss/G/adv': adv.sum(1)}
        if self.cfg.cls_weight > 0:
            ce = F.cross_entropy(self.classifier(img), c.argmax(dim=1), reduction='none')  # [B]
            loss = loss + self.cfg.cls_weight * ce.mean()
            stats['Loss/G/cls'] = ce.detach()
        stats['Loss/G/loss'] = loss.detach()
        return PhaseLoss(loss, stats)

    def d_fake(self, z: torch.Tensor, c: Optional[torch.Tensor], cur_nimg: int,
               generator: Optional[torch.Generator] = None) -> PhaseLoss:
        """D's loss on generated images; G runs without grad and updates its w_avg (``update_emas``)."""
        with torch.no_grad():
            img = self.G(z, c, update_emas=True)
        outs = self.run_D(img, c, cur_nimg, flg_train=self.cfg.san, generator=generator)
        per_pair = self._per_pair(self.gan.d_fake, outs)
        scores = self._scores(outs)
        return PhaseLoss(self.reduce(per_pair), {'Loss/scores/fake': scores, 'Loss/signs/fake': scores.sign(),
                                                 'Loss/D/fake': per_pair.detach().sum(1)})

    def d_real(self, img: torch.Tensor, c: Optional[torch.Tensor], cur_nimg: int,
               generator: Optional[torch.Generator] = None) -> PhaseLoss:
        """D's loss on real images [B, C, R, R] in [-1, 1]."""
        outs = self.run_D(img, c, cur_nimg, flg_train=self.cfg.san, generator=generator)
        per_pair = self._per_pair(self.gan.d_real, outs)
        scores = self._scores(outs)
        return PhaseLoss(self.reduce(per_pair), {'Loss/scores/real': scores, 'Loss/signs/real': scores.sign(),
                                                 'Loss/D/real': per_pair.detach().sum(1)})

    def g_pl(self, z: torch.Tensor, c: Optional[torch.Tensor],
             generator: Optional[torch.Generator] = None) -> tuple[PhaseLoss, torch.Tensor]:
        """Path-length penalty pl_weight * mean (|J_w^T y| - a)^2 (StyleGAN2 Eq. 4) and the lengths [B].

        ``a`` (``pl_mean``) is the value before this step; the loop moves it once per step with the lengths of all
        chunks and ranks (:meth:`update_pl_mean`), so the result does not depend on how the batch is split.
        """
        ws = self.G.mapping(z, c)  # [B, num_ws, w_dim]
        img = self.G.synthesis(ws)  # [B, C, H, W]
        noise = torch.randn(img.shape, generator=generator).to(img.device) / math.sqrt(img.shape[2] * img.shape[3])
        grads, = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grads.square().sum(dim=2).mean(dim=1).sqrt()  # [B]
        penalty = (lengths - self.pl_mean).square()
        loss = penalty.mean() * self.pl_weight
        return PhaseLoss(loss, {'Loss/pl_penalty': penalty.detach(), 'Loss/pl_length': lengths.detach()}), \
            lengths.detach()

    @torch.no_grad()
    def update_pl_mean(self, mean_length: torch.Tensor) -> None:
        """pl_mean <- lerp(pl_mean, mean_length, pl_decay)."""
        self.pl_mean.copy_(self.pl_mean.lerp(mean_length.to(self.pl_mean), self.cfg.pl_decay))
