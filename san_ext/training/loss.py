"""Projected-GAN loss phases of the StyleGAN-XL recipe, for any loss in ``san_ext.losses`` (and its SAN form).

StyleGAN-XL (Sauer et al. 2022) Sec. 3-4 and upstream ``training/loss.py`` (``ProjectedGANLoss``):
- D inputs (real and fake) are blurred by a Gaussian whose sigma fades from 2 to 0 over the first 300 kimg;
- the adversarial loss is applied per logit; each (image, backbone) pair is averaged over that backbone's logits,
  and the pairs are summed (``reduction='sum'``, upstream) or averaged (``'mean'``);
  both points are :mod:`san_ext.critic_score`, shared with DOT's critic;
- G may add classifier guidance, cls_weight * CE(classifier(G(z, c)), c), and the stem adds lazy path-length
  regularisation (StyleGAN2, Karras et al. 2020, Eq. 4) after 1M images.
SAN (Takida et al. 2024): D phases call ``D(x, c, flg_train=True)`` and the SAN-converted loss takes ``(fun, dir)``.
A paired loss (RpGAN, R3GAN) pairs real image i with fake image i logit by logit, in one D phase (:meth:`d_pair`);
G's phase scores its fakes against a fresh real batch, as R3GAN's loop does. R1/R2 (R3GAN Eq. 3-4,
``san_ext.penalties``) penalise the per-image score (SAN: of the ``fun`` logit), reduced over images like the
adversarial loss.

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

from san_ext import critic_score, losses, penalties
from san_ext.critic_score import ScoreSettings, backbone_logits, image_scores, per_backbone

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
                 superres: bool = False, device: Optional[torch.device] = None, total_nimg: float = 0.0) -> None:
        self.cfg, self.G, self.D, self.classifier = cfg, G, D, classifier
        self.total_nimg = total_nimg  # the run's length: the horizon of the gamma decay
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

    def penalty_gammas(self, cur_nimg: int, batch_idx: int) -> tuple[float, float]:
        """(gamma_R1, gamma_R2) of the D step ``batch_idx`` at ``cur_nimg``: cosine-decayed so that the larger one
        ends at ``gamma_end`` (the other keeps its ratio) and, lazily, ``reg_every`` times that on the steps that
        run it, 0 on the others."""
        cfg = self.cfg
        top = max(cfg.r1_gamma, cfg.r2_gamma)
        k = penalties.lazy_scale(batch_idx, cfg.reg_every)
        if top == 0 or k == 0:
            return 0.0, 0.0
        end = None if cfg.gamma_end is None else cfg.gamma_end / top
        factor = k * penalties.gamma_at(1.0, end, cur_nimg, self.total_nimg)
        return factor * cfg.r1_gamma, factor * cfg.r2_gamma

    # -- helpers ----------------------------------------------------------------------------------------------------
    def _penalty(self, outs: list, img: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """gamma/2 |grad_img score|^2 reduced over images, and the per-image penalty [B]; the score is the
        per-image D value the loss reads (SAN: the ``fun`` logit, so omega is left to the direction term)."""
        fun = [o[0] if isinstance(o, tuple) else o for o in outs]
        pen = penalties.r1_penalty(image_scores(per_backbone(fun), self.score.reduction), img)  # [B]
        return self.reduce(0.5 * gamma * pen[:, None]), pen.detach()

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
    def _score_stats(outs: list, side: str) -> dict[str, torch.Tensor]:
        """``Loss/scores/<side>`` (every logit, [B, N], detached) and ``Loss/signs/<side>`` of D's outputs."""
        scores = torch.cat([(o[0] if isinstance(o, tuple) else o).detach() for o in outs], dim=1)  # [B, N]
        return {f'Loss/scores/{side}': scores, f'Loss/signs/{side}': scores.sign()}

    # -- phases -----------------------------------------------------------------------------------------------------
    def g_main(self, z: torch.Tensor, c: Optional[torch.Tensor], cur_nimg: int,
               generator: Optional[torch.Generator] = None, real_img: Optional[torch.Tensor] = None,
               real_c: Optional[torch.Tensor] = None) -> PhaseLoss:
        """G's adversarial loss on D(G(z, c)) plus classifier guidance; a paired loss scores the fakes against
        D(real_img, real_c) (a fresh real batch, as many as z; the loop draws it), which the other losses ignore."""
        img = self.G(z, c)  # [B, C, R, R]
        outs = self.run_D(img, c, cur_nimg, flg_train=False, generator=generator)
        if self.gan.paired:
            if real_img is None:
                raise ValueError(f'{self.cfg.spec} pairs fakes with reals: pass real_img (and real_c) to g_main')
            with torch.no_grad():
                reals = self.run_D(real_img, real_c, cur_nimg, flg_train=False, generator=generator)
            adv = per_backbone([self.gan.g(f, real=r) for f, r in zip(outs, reals)])
        else:
            adv = self._per_pair(self.gan.g, outs)
        loss = self.reduce(adv)
        stats = {**self._score_stats(outs, 'fake'), 'Loss/G/adv': adv.sum(1)}
        if self.cfg.cls_weight > 0:
            ce = F.cross_entropy(self.classifier(img), c.argmax(dim=1), reduction='none')  # [B]
            loss = loss + self.cfg.cls_weight * ce.mean()
            stats['Loss/G/cls'] = ce.detach()
        stats['Loss/G/loss'] = loss.detach()
        return PhaseLoss(loss, stats)

    def d_fake(self, z: torch.Tensor, c: Optional[torch.Tensor], cur_nimg: int,
               generator: Optional[torch.Generator] = None, r2_gamma: float = 0.0) -> PhaseLoss:
        """D's loss on generated images (plus R2 when ``r2_gamma`` > 0); G runs without grad and updates its w_avg
        (``update_emas``)."""
        with torch.no_grad():
            img = self.G(z, c, update_emas=True)
        img.requires_grad_(r2_gamma > 0)
        outs = self.run_D(img, c, cur_nimg, flg_train=self.cfg.san, generator=generator)
        per_pair = self._per_pair(self.gan.d_fake, outs)
        stats = {**self._score_stats(outs, 'fake'), 'Loss/D/fake': per_pair.detach().sum(1)}
        return self._with_penalty(self.reduce(per_pair), stats, (outs, img, r2_gamma, 'Loss/D/r2'))

    def d_real(self, img: torch.Tensor, c: Optional[torch.Tensor], cur_nimg: int,
               generator: Optional[torch.Generator] = None, r1_gamma: float = 0.0) -> PhaseLoss:
        """D's loss on real images [B, C, R, R] in [-1, 1] (plus R1 when ``r1_gamma`` > 0)."""
        img = img.detach().requires_grad_(r1_gamma > 0)
        outs = self.run_D(img, c, cur_nimg, flg_train=self.cfg.san, generator=generator)
        per_pair = self._per_pair(self.gan.d_real, outs)
        stats = {**self._score_stats(outs, 'real'), 'Loss/D/real': per_pair.detach().sum(1)}
        return self._with_penalty(self.reduce(per_pair), stats, (outs, img, r1_gamma, 'Loss/D/r1'))

    def d_pair(self, z: torch.Tensor, c: Optional[torch.Tensor], real_img: torch.Tensor,
               real_c: Optional[torch.Tensor], cur_nimg: int, generator: Optional[torch.Generator] = None,
               gammas: tuple[float, float] = (0.0, 0.0)) -> PhaseLoss:
        """D's paired loss (RpGAN): fake image i against real image i, logit by logit, in one phase (fakes through
        D first, then reals, as the unpaired phases); ``gammas`` = (R1, R2) weights, 0 for none."""
        if len(z) != len(real_img):
            raise ValueError(f'{self.cfg.spec} pairs fakes with reals: got {len(z)} latents for {len(real_img)} images')
        with torch.no_grad():
            fake = self.G(z, c, update_emas=True)
        fake.requires_grad_(gammas[1] > 0)
        real = real_img.detach().requires_grad_(gammas[0] > 0)
        outs_f = self.run_D(fake, c, cur_nimg, flg_train=self.cfg.san, generator=generator)
        outs_r = self.run_D(real, real_c, cur_nimg, flg_train=self.cfg.san, generator=generator)
        per_pair = per_backbone([self.gan.d_pair(r, f) for r, f in zip(outs_r, outs_f)])
        stats = {**self._score_stats(outs_f, 'fake'), **self._score_stats(outs_r, 'real'),
                 'Loss/D/pair': per_pair.detach().sum(1)}
        out = self._with_penalty(self.reduce(per_pair), stats, (outs_r, real, gammas[0], 'Loss/D/r1'))
        return self._with_penalty(out.loss, out.stats, (outs_f, fake, gammas[1], 'Loss/D/r2'))

    def _with_penalty(self, loss: torch.Tensor, stats: dict, penalty: tuple) -> PhaseLoss:
        """``loss`` plus the R1/R2 term ``penalty`` = (outs, img, gamma, stat name) when gamma > 0."""
        outs, img, gamma, name = penalty
        if gamma > 0:
            term, per_image = self._penalty(outs, img, gamma)
            loss, stats = loss + term, {**stats, name: per_image}
        return PhaseLoss(loss, stats)

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
