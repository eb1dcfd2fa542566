"""Checkpoints as safetensors plus a JSON sidecar: snapshots for inference, training states for exact resume.

- ``network-snapshot-{kimg:06d}.safetensors`` (``{kimg:06d}_{nimg:03d}`` between whole kimg, :func:`kimg_tag`): the
  ``G_ema`` state dict (plain keys, loadable by anyone), with ``.json`` beside it holding the generator's
  architecture, the run config and the progress.
- ``training-state-{kimg:06d}.safetensors``: G, D, G_ema (keys ``G/...``, ``D/...``, ``G_ema/...``), both
  optimizers, RNG states and extra loop state; its ``.json`` holds everything that is not a tensor, including the
  critic's settings (``critic``: :class:`san_ext.critic_score.ScoreSettings`) so DOT rebuilds D's score without
  training code.

Files are written atomically (temp file, fsync, ``os.replace``, directory fsync); the tensors go first and the
sidecar last, so a file without its sidecar is an interrupted write and :func:`find_latest` skips it. The sidecar
records the tensor file's size, SHA-256 and a write id also stored in the safetensors header, checked on load and
by :func:`find_latest`. Loading never executes code from a file (no pickle): the generator is rebuilt from its
recorded config, once that config fits the file's tensors (:func:`san_ext.networks.fit.build_fitting`).
:func:`load_generator` is the one front door for networks: a snapshot, a training state, or a released StyleGAN-XL /
StyleSAN-XL ``.pkl`` read safely by :mod:`san_ext.legacy`. Used by training (``--path_stem``), ``gen_images.py``,
``calc_metrics.py`` and DOT; imports only the networks, legacy, the critic score and :mod:`san_ext.files`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import safetensors.torch
import torch
from torch import nn

from san_ext import legacy
from san_ext.critic_score import ScoreSettings
from san_ext.files import file_sha256, fsync_dir, write_atomic, write_text_atomic
from san_ext.networks import (
    DiscriminatorConfig,
    GeneratorConfig,
    ProjectedDiscriminator,
    build_generator,
    generator_spec,
)
from san_ext.networks.fit import build_fitting

__all__ = ['SNAPSHOT_PREFIX', 'STATE_PREFIX', 'CheckpointError', 'TrainingState', 'build_generator',
           'checkpoint_name', 'critic_settings', 'find_latest', 'generator_spec', 'is_network_pickle', 'kimg_tag',
           'load_discriminator', 'load_generator', 'load_training_state', 'prune_checkpoints', 'read_generator_spec',
           'read_sidecar', 'restore_rng_state', 'rng_state', 'save_snapshot', 'save_training_state',
           'scan_checkpoints']

log = logging.getLogger(__name__)

SNAPSHOT_PREFIX = 'network-snapshot-'
STATE_PREFIX = 'training-state-'
SNAPSHOT_FORMAT = 'san-ext/network-snapshot'
STATE_FORMAT = 'san-ext/training-state'
VERSION = 1
PathLike = Union[str, os.PathLike]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or of another kind; the message names the file."""


# ---------------------------------------------------------------------------------------------------------------
# Names (generator_spec and build_generator live in san_ext.networks and are re-exported here).

def kimg_tag(cur_nimg: int) -> str:
    """``{kimg:06d}`` at a whole kimg, else ``{kimg:06d}_{rest:03d}`` (8 images: ``000000_008``): one name per
    snapshot at any ``--tick``, and names sort as ``cur_nimg`` does (``000001.json`` < ``000001_004.json``, since '.'
    sorts before '_')."""
    kimg, rest = divmod(int(cur_nimg), 1000)
    return f'{kimg:06d}' if rest == 0 else f'{kimg:06d}_{rest:03d}'


def checkpoint_name(prefix: str, cur_nimg: int) -> str:
    """``{prefix}{kimg_tag(cur_nimg)}``: unique per ``cur_nimg``, so snapshots less than a kimg apart never share
    (and overwrite) a name."""
    return f'{prefix}{kimg_tag(cur_nimg)}'


def _cpu_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies where needed; storages shared between entries are cloned (safetensors refuses them)."""
    out, seen = {}, set()
    for key, t in tensors.items():
        t = t.detach().to('cpu').contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel():
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def _save(path: Path, tensors: Mapping[str, torch.Tensor], sidecar: dict) -> Path:
    """Write ``path`` (.safetensors) and then its .json sidecar, both atomically; returns ``path``.

    A fresh ``write_id`` goes into the safetensors header and the sidecar: after a crash between the two renames
    an older sidecar of the same name no longer matches the new tensors, and the pair is treated as incomplete.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = _cpu_tensors(tensors)
    meta: dict[str, Any] = {'write_id': uuid.uuid4().hex}

    def write_tensors(tmp: Path) -> None:
        safetensors.torch.save_file(tensors, str(tmp), metadata={'format': sidecar['format'],
                                                                 'write_id': meta['write_id']})
        meta.update(tensor_bytes=tmp.stat().st_size, sha256=file_sha256(tmp))

    write_atomic(path, write_tensors)
    record = {**sidecar, 'tensor_file': path.name, **meta}
    write_text_atomic(path.with_suffix('.json'), json.dumps(record, indent=1))
    fsync_dir(path.parent)
    return path


def _header_write_id(tensor_file: Path) -> Optional[str]:
    """The ``write_id`` in a safetensors header (None if unreadable): 8-byte length, then a JSON header."""
    try:
        with open(tensor_file, 'rb') as f:
            n = int.from_bytes(f.read(8), 'little')
            if not 0 < n < 1 << 27:
                return None
            header = json.loads(f.read(n))
    except (OSError, ValueError):
        return None
    return (header.get('__metadata__') or {}).get('write_id') if isinstance(header, dict) else None


def _check_pair(tensor_file: Path, record: dict) -> None:
    """Raise unless ``tensor_file`` is the file its sidecar ``record`` describes (size and write id)."""
    if not tensor_file.is_file():
        raise CheckpointError(f'{tensor_file} is missing (its sidecar exists); use another checkpoint')
    size, expected = tensor_file.stat().st_size, record.get('tensor_bytes')
    if size != expected:
        raise CheckpointError(f'{tensor_file} is truncated or was overwritten after its sidecar was written: it has '
                              f'{size} bytes, its sidecar records {expected}; use another checkpoint')
    if _header_write_id(tensor_file) != record.get('write_id'):
        raise CheckpointError(f'{tensor_file} was overwritten after its sidecar was written (its write id differs '
                              f'from the sidecar\'s; the size, {size} bytes, matches); use another checkpoint')


def _tensor_and_sidecar(path: PathLike) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix == '.json':
        return path.with_suffix('.safetensors'), path
    if path.suffix != '.safetensors':
        raise CheckpointError(f'{path} is not a san-ext checkpoint: give a .safetensors file that has its .json '
                              'sidecar beside it (a network snapshot or a training state)')
    return path, path.with_suffix('.json')


def read_sidecar(path: PathLike) -> dict:
    """The JSON sidecar of a checkpoint (``path`` may name either file); fails clearly when missing or corrupt."""
    tensor_file, side = _tensor_and_sidecar(path)
    if not side.is_file():
        raise CheckpointError(f'{side} is missing: {tensor_file.name} is incomplete (an interrupted write?) or not '
                              'a san-ext checkpoint; use an earlier checkpoint')
    try:
        record = json.loads(side.read_text())
    except RecursionError as e:  # json nests one Python frame per level
        raise CheckpointError(f'{side} is corrupt (nested too deeply to be a sidecar); use another checkpoint') from e
    except (OSError, ValueError) as e:
        raise CheckpointError(f'{side} is corrupt ({e}); delete it and its .safetensors, or use another checkpoint') \
            from e
    if not isinstance(record, dict) or record.get('format') not in (SNAPSHOT_FORMAT, STATE_FORMAT):
        raise CheckpointError(f'{side} is not a san-ext checkpoint sidecar (format {record.get("format")!r})'
                              if isinstance(record, dict) else f'{side} is not a san-ext checkpoint sidecar')
    return record


def _load_tensors(path: PathLike, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    tensor_file, side = _tensor_and_sidecar(path)
    record = read_sidecar(path)
    _check_pair(tensor_file, record)
    if verify and record.get('sha256') and file_sha256(tensor_file) != record['sha256']:
        raise CheckpointError(f'{tensor_file} is corrupt: its SHA-256 differs from the one in {side.name}')
    try:
        tensors = safetensors.torch.load_file(str(tensor_file), device='cpu')
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f'{tensor_file} is not a readable safetensors file ({e})') from e
    return tensors, record


# ---------------------------------------------------------------------------------------------------------------
# JSON trees with tensors (optimizer state dicts, RNG states): tensors go to the safetensors file by name.

def _encode(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj
        return {'__tensor__': key}
    if isinstance(obj, np.ndarray):
        tensors[key] = torch.from_numpy(obj.astype(np.int64) if obj.dtype == np.uint32 else obj)
        return {'__ndarray__': key, 'dtype': str(obj.dtype)}
    if isinstance(obj, Mapping):
        return {'__dict__': [[k, _encode(v, f'{key}/{k}', tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {'__tuple__': [_encode(v, f'{key}/{i}', tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f'{key}/{i}', tensors) for i, v in enumerate(obj)]
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f'cannot store {type(obj).__name__} at {key!r} in a checkpoint')


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if '__tensor__' in obj:
        return tensors[obj['__tensor__']]
    if '__ndarray__' in obj:
        return tensors[obj['__ndarray__']].numpy().astype(obj['dtype'])
    if '__tuple__' in obj:
        return tuple(_decode(v, tensors) for v in obj['__tuple__'])
    if '__dict__' in obj:
        return {k: _decode(v, tensors) for k, v in obj['__dict__']}
    raise CheckpointError(f'unexpected entry {sorted(obj)} in a checkpoint sidecar')


def rng_state() -> dict:
    """The global RNG states: torch CPU, every CUDA device (when initialised), numpy and Python ``random``."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return {'torch': torch.get_rng_state(), 'cuda': cuda, 'numpy': np.random.get_state(),
            'python': random.getstate()}


def restore_rng_state(state: Mapping) -> None:
    """Inverse of :func:`rng_state` (CUDA states only when the device count matches)."""
    torch.set_rng_state(state['torch'])
    cuda = state.get('cuda')
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(tuple(state['numpy']))
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))


# ---------------------------------------------------------------------------------------------------------------
# Snapshots (inference).

def save_snapshot(run_dir: PathLike, G_ema: nn.Module, config: Optional[Mapping], cur_nimg: int,
                  name: Optional[str] = None, extra: Optional[Mapping] = None) -> Path:
    """Write ``G_ema``'s weights as ``network-snapshot-{kimg:06d}.safetensors`` (or ``{name}.safetensors``) plus
    its sidecar (architecture, the run's ``config`` as a dict, progress, ``extra`` such as metric values); returns
    the tensor file."""
    stem = name or checkpoint_name(SNAPSHOT_PREFIX, cur_nimg)
    sidecar = {'format': SNAPSHOT_FORMAT, 'version': VERSION, 'generator': generator_spec(G_ema),
               'progress': {'cur_nimg': int(cur_nimg), 'kimg': cur_nimg / 1000}, 'config': config,
               'extra': dict(extra or {})}
    return _save(Path(run_dir) / f'{stem}.safetensors', G_ema.state_dict(), sidecar)


def is_network_pickle(path: PathLike) -> bool:
    """Whether ``path`` names a released network pickle (``.pkl``, or a file starting with a pickle opcode) rather
    than one of our safetensors checkpoints."""
    path = Path(path)
    if path.suffix.lower() == '.pkl':
        return True
    try:
        with open(path, 'rb') as f:
            return f.read(1) == b'\x80'  # PROTO opcode: pickle protocol 2+; a safetensors file starts with a length
    except OSError:
        return False


def _network_file(path: PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f'{path} does not exist; give a network-snapshot-*.safetensors, a training state or a '
                              'released StyleGAN-XL / StyleSAN-XL .pkl')
    if path.is_dir():
        raise CheckpointError(f'{path} is a directory; give a network-snapshot-*.safetensors file in it, a training '
                              'state or a released .pkl')
    return path


def _not_a_network(path: Path) -> CheckpointError:
    return CheckpointError(f'{path} holds no network: give a san-ext checkpoint (.safetensors with its .json sidecar: '
                           'a network snapshot or a training state) or a released StyleGAN-XL / StyleSAN-XL .pkl')


def _legacy(path: Path, read: Callable[[Path], Any]) -> Any:
    """``read(path)`` through san_ext.legacy, its errors (refused, not a pickle, unmappable) as CheckpointError."""
    try:
        return read(path)
    except ValueError as e:  # LegacyPickleError, RefusedError, ConversionError
        raise CheckpointError(f'{path} is not a usable StyleGAN-XL / StyleSAN-XL network pickle: {e}') from e


def read_generator_spec(path: PathLike) -> dict:
    """The generator architecture ``{'cfg', 'stages'}`` of a snapshot, training state or released ``.pkl``, without
    loading its weights (e.g. to check ``--path_stem`` against the data)."""
    path = _network_file(path)
    if is_network_pickle(path):
        return _legacy(path, legacy.read_generator_spec)
    if path.suffix not in ('.safetensors', '.json'):
        raise _not_a_network(path)
    return _current_spec(read_sidecar(path)['generator'])


def _current_spec(spec: Optional[dict]) -> Optional[dict]:
    """A recorded generator spec in today's field names (sidecars written before ``GeneratorConfig.synthesis`` was
    called ``cfg`` compare equal to a fresh :func:`generator_spec`)."""
    return spec and {**spec, 'cfg': GeneratorConfig.upgrade(spec['cfg'])}


def load_generator(path: PathLike, device: Union[str, torch.device] = 'cpu') -> nn.Module:
    """The one front door for generators, in eval mode and frozen: a snapshot, the ``G_ema`` of a training state,
    or the ``G_ema`` of a released StyleGAN-XL / StyleSAN-XL ``.pkl`` (:mod:`san_ext.legacy`, which runs no code
    from the pickle). Raises :class:`CheckpointError` naming the file when it is missing or holds no network."""
    path = _network_file(path)
    if is_network_pickle(path):
        G = _legacy(path, lambda p: legacy.load(p, components=('G_ema',)).G_ema)
        return G.eval().requires_grad_(False).to(device)
    if path.suffix not in ('.safetensors', '.json'):
        raise _not_a_network(path)
    tensors, record = _load_tensors(path)
    if record['format'] == STATE_FORMAT:
        tensors = {k[len('G_ema/'):]: v for k, v in tensors.items() if k.startswith('G_ema/')}
    try:
        G = build_fitting(lambda: build_generator(record['generator']), record['generator'], tensors)
        G.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f'{path}: the weights do not fit the recorded generator ({e})') from e
    return G.eval().requires_grad_(False).to(device)


# ---------------------------------------------------------------------------------------------------------------
# Training states (exact resume).

@dataclass
class TrainingState:
    """A loaded training state: module and optimizer state dicts, RNG states, progress and extra loop state."""

    path: Path
    modules: dict[str, dict[str, torch.Tensor]]
    optimizers: dict[str, dict]
    rng: dict
    progress: dict
    extra: dict = field(default_factory=dict)
    config: Optional[dict] = None
    generator: Optional[dict] = None


def save_training_state(run_dir: PathLike, *, G: nn.Module, D: nn.Module, G_ema: nn.Module,
                        opt_G: torch.optim.Optimizer, opt_D: torch.optim.Optimizer, config: Optional[Mapping],
                        progress: Mapping[str, Any], extra: Optional[Mapping] = None,
                        critic: Optional[ScoreSettings] = None) -> Path:
    """Write ``training-state-{kimg:06d}.safetensors`` + sidecar (``config``: the run's config as a dict);
    ``progress`` must hold ``cur_nimg``; ``critic``: how the loss read D's score (blur schedule, reduction), for DOT
    (:func:`critic_settings`)."""
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in (('G', G), ('D', D), ('G_ema', G_ema)):
        tensors.update({f'{prefix}/{k}': v for k, v in module.state_dict().items()})
    tree = {'optimizers': {'G': opt_G.state_dict(), 'D': opt_D.state_dict()}, 'rng': rng_state(),
            'extra': dict(extra or {})}
    encoded = {k: _encode(v, k, tensors) for k, v in tree.items()}
    sidecar = {'format': STATE_FORMAT, 'version': VERSION, 'generator': generator_spec(G),
               'progress': dict(progress), 'config': config, 'tree': encoded,
               'critic': None if critic is None else critic.to_dict()}
    path = Path(run_dir) / f'{checkpoint_name(STATE_PREFIX, progress["cur_nimg"])}.safetensors'
    return _save(path, tensors, sidecar)


def load_training_state(path: PathLike, verify: bool = True) -> TrainingState:
    """Read a training state (either file of the pair); corrupt or partial files raise :class:`CheckpointError`."""
    tensors, record = _load_tensors(path, verify=verify)
    if record['format'] != STATE_FORMAT:
        raise CheckpointError(f'{path} is a network snapshot, not a training state; resume needs a '
                              f'{STATE_PREFIX}*.safetensors file (or --resume latest)')
    modules: dict[str, dict[str, torch.Tensor]] = {'G': {}, 'D': {}, 'G_ema': {}}
    for key, value in tensors.items():
        prefix, _, rest = key.partition('/')
        if prefix in modules:
            modules[prefix][rest] = value
    try:
        tree = {k: _decode(v, tensors) for k, v in record['tree'].items()}
    except (RecursionError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f'{path}: its sidecar\'s state tree is malformed ({type(e).__name__}); use another '
                              'checkpoint') from e
    return TrainingState(path=_tensor_and_sidecar(path)[0], modules=modules, optimizers=tree['optimizers'],
                         rng=tree['rng'], progress=record['progress'], extra=tree.get('extra', {}),
                         config=record.get('config'), generator=_current_spec(record.get('generator')))


def load_discriminator(path: PathLike, device: Union[str, torch.device] = 'cpu') -> nn.Module:
    """Rebuild the discriminator of a training state in eval mode, frozen (e.g. as the critic of DOT).

    The state holds every tensor of D, the frozen backbones and projections included, so the backbones are built
    with random weights (``pretrained=False``, no ``checkpoint_paths``) and then overwritten: nothing is downloaded
    and no local weight file is needed. Fails when ``path`` is a snapshot (those hold G_ema only).
    """
    tensors, record = _load_tensors(path)
    if record['format'] != STATE_FORMAT:
        raise CheckpointError(f'{path} is a network snapshot, which holds only G_ema; the discriminator is in the '
                              f'run\'s {STATE_PREFIX}*.safetensors files')
    cfg = (record.get('config') or {}).get('D')
    if not isinstance(cfg, Mapping):
        raise CheckpointError(f'{path}: the sidecar has no discriminator config (config.D); cannot rebuild D')
    weights = {k[len('D/'):]: v for k, v in tensors.items() if k.startswith('D/')}
    try:
        D = build_fitting(lambda: ProjectedDiscriminator(DiscriminatorConfig(
            **{**cfg, 'pretrained': False, 'checkpoint_paths': ()})), cfg, weights)
        D.load_state_dict(weights, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f'{path}: the D weights do not fit the recorded discriminator config ({e})') from e
    return D.eval().requires_grad_(False).to(device)


def critic_settings(path: PathLike) -> ScoreSettings:
    """How the run's loss read D's score (input blur schedule, per-backbone reduction), from a training state.

    Sidecars written before the ``critic`` field existed fall back to the run config's loss section (``config.loss``:
    ``blur_init_sigma``, ``blur_fade_kimg``, ``reduction``; a missing key takes StyleGAN-XL's default, as parsing
    the whole training config did).
    """
    record = read_sidecar(path)
    if record['format'] != STATE_FORMAT:
        raise CheckpointError(f'{path} is a network snapshot; the critic\'s settings are in the run\'s '
                              f'{STATE_PREFIX}*.safetensors files')
    try:
        if isinstance(record.get('critic'), Mapping):
            return ScoreSettings.from_dict(record['critic'])
        loss = (record.get('config') or {}).get('loss')
        if not isinstance(loss, Mapping):
            raise CheckpointError(f'{path}: the sidecar has neither critic settings nor a run config with a loss '
                                  'section; cannot rebuild the critic\'s score')
        names = [f.name for f in dataclasses.fields(ScoreSettings)]
        return ScoreSettings.from_dict({k: loss[k] for k in names if k in loss})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f'{path}: bad critic settings in the sidecar ({e})') from e


def _scan(prefix: str, run_dir: Path) -> tuple[list[tuple[int, float, Path, dict]], list[tuple[Path, str]]]:
    """The checkpoints in ``run_dir`` whose sidecar and tensor file agree (cur_nimg, mtime, tensor file, sidecar),
    and (tensor file, reason naming it) for every other file of that prefix: sidecar or tensors missing, unreadable,
    of another size or write id."""
    stems = {f.name[:-len(f.suffix)] for f in run_dir.glob(f'{prefix}*') if f.suffix in ('.json', '.safetensors')}
    good, bad = [], []
    for stem in sorted(stems):
        tensor_file = run_dir / f'{stem}.safetensors'
        try:
            record = read_sidecar(tensor_file)
            _check_pair(tensor_file, record)
            good.append((int(record['progress']['cur_nimg']), tensor_file.with_suffix('.json').stat().st_mtime,
                         tensor_file, record))
        except (CheckpointError, OSError, KeyError, TypeError, ValueError) as e:
            reason = str(e) if isinstance(e, CheckpointError) else f'{tensor_file}: bad sidecar ({e!r})'
            bad.append((tensor_file, reason))
    return good, bad


def scan_checkpoints(run_dir: PathLike, prefix: str = STATE_PREFIX) -> tuple[Optional[Path], list[tuple[Path, str]]]:
    """(the newest valid checkpoint in ``run_dir`` or None, (file, reason) of every invalid one seen).

    Valid means what loading verifies: sidecar readable, tensor file of the recorded size and write id, SHA-256
    equal to the recorded one. Newest first, so only the newer files and the chosen one are hashed; a corrupt newest
    state is passed over for the previous good one, and the caller can say which files were skipped and why.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None, []
    good, bad = _scan(prefix, run_dir)
    for _, _, tensor_file, record in sorted(good, key=lambda g: g[:2], reverse=True):
        if record.get('sha256') and file_sha256(tensor_file) != record['sha256']:
            bad.append((tensor_file, f'{tensor_file} is corrupt: its SHA-256 differs from the one in its sidecar'))
            continue
        return tensor_file, bad
    return None, bad


def find_latest(run_dir: PathLike, prefix: str = STATE_PREFIX) -> Optional[Path]:
    """The valid checkpoint with the most images seen in ``run_dir`` (None if there is none; see
    :func:`scan_checkpoints`); each file passed over is logged with the reason."""
    latest, bad = scan_checkpoints(run_dir, prefix)
    for _, reason in bad:
        log.warning('skipping: %s', reason)
    return latest


def prune_checkpoints(run_dir: PathLike, keep: int, prefix: str = STATE_PREFIX) -> list[Path]:
    """Delete all but the ``keep`` newest complete checkpoints (sidecar first); ``keep=0`` keeps all."""
    if keep <= 0:
        return []
    doomed = [g[2] for g in sorted(_scan(prefix, Path(run_dir))[0], key=lambda g: g[:2])[:-keep]]
    for tensor_file in doomed:
        tensor_file.with_suffix('.json').unlink(missing_ok=True)
        tensor_file.unlink(missing_ok=True)
    return doomed
