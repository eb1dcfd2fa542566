"""Why a run stopped, as exceptions whose message alone tells the user what happened and what to do.

``train.py`` prints a :class:`TrainingError` as one line (``Error: ...``, exit status 1) instead of a traceback;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from san_ext import dist

__all__ = ['DiskFullError', 'NonFiniteLossError', 'PeerFailureError', 'ResumeError', 'TrainingError', 'peer_failure']


class TrainingError(RuntimeError):
    """A stop the user can act on; the message names the file, flag or rank and the fix."""


class ResumeError(TrainingError, ValueError):
    """``--resume`` found nothing usable: not a training state, none valid, or another architecture."""


class DiskFullError(TrainingError):
    """A snapshot could not be written for lack of space; the message names the file and the free space."""


class PeerFailureError(TrainingError):
    """Another rank died or stopped answering; the message names it."""


class NonFiniteLossError(TrainingError, FloatingPointError):
    """A phase loss became NaN or infinite; the message names the step, the phase and the last good checkpoint."""


def peer_failure(env: dist.DistEnv, e: BaseException, timeout: float) -> PeerFailureError:
    """After collective ``e`` failed on this rank: the error naming the ranks that did not check in within
    ``timeout`` seconds (:func:`san_ext.dist.silent_ranks`), i.e. the ones that died or hang."""
    silent = dist.silent_ranks(env, timeout)
    text = str(e).strip()
    first = text.splitlines()[0][:300] if text else type(e).__name__
    who = (f'rank{"s" if len(silent) > 1 else ""} {", ".join(map(str, silent))} did not answer within {timeout:g} s: '
           'it died or hangs (its log, or torchrun\'s summary on its node, says why)'
           if silent else 'every other rank answered, so the connection itself failed')
    return PeerFailureError(f'rank {env.rank}: a collective operation with the other ranks failed ({first}); {who}. '
                            'Stopping; continue with --resume latest')
