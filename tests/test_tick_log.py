"""The progress bar of a training run: it ends exactly at the total, without tqdm's clamping warning."""

from __future__ import annotations

import json
import warnings

from san_ext.training.stats import TickLog


def test_bar_stops_at_the_total_when_steps_overshoot_it(tmp_path):
    log = TickLog(tmp_path, total_kimg=1.0, start_kimg=0.0, enabled=True)
    kimg = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # tqdm warns 'clamping frac' when n passes total
        for _ in range(126):  # 126 x 0.008 kimg = 1.008 kimg, and summed floats that are not exact
            kimg += 0.008
            log.advance(kimg)
        assert log._bar.n == log._bar.total == 1.0
        log.tick(kimg, {'Loss/G/loss': 0.5})
        log.close()
    (record,) = [json.loads(line) for line in (tmp_path / 'stats.jsonl').read_text().splitlines()]
    assert record['Loss/G/loss'] == 0.5
