"""The studies' shared cell runner: the same results in this process and in a spawn pool, in input order."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from san_ext.studies.common import run_cells


@dataclass(frozen=True)
class Cell:
    steps: int


def square_steps(cell: Cell, on_step) -> dict:
    """A module-level cell function (the pool pickles it by name); reports its steps and its thread count."""
    on_step(cell.steps)
    return {'value': cell.steps ** 2, 'threads': torch.get_num_threads()}


def test_run_cells_gives_the_same_results_in_process_and_in_a_pool():
    cells = [Cell(3), Cell(1), Cell(2)]
    here = run_cells(square_steps, cells, workers=1, desc='t', progress=False)
    pooled = run_cells(square_steps, cells, workers=2, desc='t', progress=False)
    assert [r['value'] for r in here] == [r['value'] for r in pooled] == [9, 1, 4]
    assert all(r['threads'] == 1 for r in here + pooled)  # single-threaded cells, in the pool too


def test_run_timed_records_wall_cpu_and_load_as_results_json_does():
    import logging

    from san_ext.studies.common import run_timed

    def study(cells, workers):
        return [{'train_cpu_s': 1.5, 'eval_cpu_s': 0.25} for _ in cells]

    results, timing = run_timed(study, [Cell(3), Cell(3)], 1, 'steps', logging.getLogger('t'))
    assert len(results) == 2 and timing['cells_cpu_s'] == 3.5
    assert set(timing) == {'wall_s', 'cells_cpu_s', 'load_before', 'load_after', 'cpu_count'} and timing['wall_s'] >= 0
