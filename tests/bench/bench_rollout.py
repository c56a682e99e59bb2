"""BENCH rollout: a bad candidate on canary, and a bad candidate in shadow, on a 2-cell line
(tests/rollout_line.py: executor, per cell an arbiter and a vision node on an 8 Hz timer, the
line's review queue and rollout controller; real DDS, real ONNX Runtime).

The bad candidate is the shipped network with its classes rotated: confident and wrong on every
part (a broken label map).

1. scenario=shadow: the candidate in shadow on both cells, every frame (shadow_share 1), the
   controller's automatic rollback off, SHADOW_PARTS verdicts per cell. verdicts_changed: the
   verdicts the cells published that are not production's own, computed here offline with ONNX
   Runtime on the same frame (found by its sha256); not_production: results served by another
   model. shadow_disagreed: parts the shadow verdict differs from the served one.
2. scenario=bad_candidate: TRIALS times, another bad candidate on canary on cell_02 (shadow on
   cell_01), the controller rolling back on its thresholds (defaults: accuracy 0.9 with a Wilson
   bound, 10 decisions). rollback_cycles: the longest time from the cell's figures that crossed
   the threshold (their stamp) to the rollback (the registry change's stamp), in cycles of the
   canary cell (one part per 1/RATE_HZ). served_after_trigger: the most canary verdicts a trial
   served from frames captured after the trigger. bad_verdicts_served: wrong decided verdicts the
   candidates served on cell_02, all trials; candidate_verdicts: all they served there.
"""
from __future__ import annotations

import time

from conftest import wait_for
from rollout_line import (EXECUTOR, LINE, PRODUCTION, bad_candidate, call_ok, canary_check, set_param, sha256_file,
                          shadow_check, start_line, subscribe_cells, t_s)

from cellos_common.nodes import qos
from cellos_interfaces.msg import Inspection, ModelAlias, ModelRegistryChange, RolloutStats
from cellos_interfaces.srv import LoadModel, RolloutStep, SetCandidate

CELLS = ('cell_01', 'cell_02')
RATE_HZ = 8.0
SHADOW_PARTS = 60
TRIALS = 3


def test_bench_rollout(processes, ros_probe, tmp_path):
    probe = ros_probe
    prod_id = sha256_file(PRODUCTION)
    start_line(processes, tmp_path, CELLS, rate_hz=RATE_HZ, vision={'shadow_share': 1.0},
               controller={'auto_rollback': False})
    subscribe_cells(probe, CELLS)
    probe.subscribe(ModelRegistryChange, f'{EXECUTOR}/registry', qos.audit_event(), key='registry')
    probe.subscribe(RolloutStats, f'/{LINE}/rollout/stats', qos.status(), key='stats')
    for c in CELLS:
        wait_for(lambda c=c: [m for m in probe.received(f'insp {c}') if m.verdict != Inspection.VERDICT_UNDECIDED],
                 90.0, what=f'{c}: first decided inspection')
    bad = {}
    for shift in range(1, TRIALS + 2):
        path = bad_candidate(tmp_path / f'inspection_bad{shift}.onnx', shift)
        call_ok(probe, LoadModel, f'{EXECUTOR}/load_model', LoadModel.Request(name=f'inspection_bad{shift}',
                                                                              path=str(path)))
        bad[shift] = sha256_file(path)

    # 1. shadow
    t0 = time.time()
    call_ok(probe, SetCandidate, f'{EXECUTOR}/set_candidate', SetCandidate.Request(
        task='inspection', model='inspection_bad1', mode=ModelAlias.MODE_SHADOW, reason='bench: shadow',
        operator_name='bench'))
    for c in CELLS:
        wait_for(lambda c=c: len([m for m in probe.received(f'insp {c}') if t_s(m.header.stamp) > t0])
                 >= SHADOW_PARTS, 120.0, what=f'{c}: {SHADOW_PARTS} verdicts in shadow')
    t1 = time.time()
    call_ok(probe, RolloutStep, f'{EXECUTOR}/rollback', RolloutStep.Request(
        task='inspection', reason='bench: shadow over', operator_name='bench'))
    shadow = shadow_check(probe, CELLS, t0, t1, prod_id)

    # 2. bad candidates on canary, rolled back by the controller
    set_param(probe, f'/{LINE}/rollout_controller', 'auto_rollback', True)
    trials = []
    for shift in range(2, TRIALS + 2):
        n = len(probe.received('registry'))
        t0 = time.time()
        call_ok(probe, SetCandidate, f'{EXECUTOR}/set_candidate', SetCandidate.Request(
            task='inspection', model=f'inspection_bad{shift}', mode=ModelAlias.MODE_CANARY,
            canary_cells=[f'{LINE}/cell_02'], reason='bench: canary', operator_name='bench'))
        rolled = wait_for(lambda: [ch for ch in probe.received('registry')[n:]
                                   if ch.change == ModelRegistryChange.CHANGE_ROLLED_BACK], 90.0,
                          what='the controller rolling the canary back')[0]
        assert rolled.operator_name == 'rollout_controller' and rolled.model.id == bad[shift], rolled
        time.sleep(1.0)   # results of requests made before the rollback come in
        trials.append(canary_check(probe, 'cell_02', t0, rolled, bad[shift]))
    missed = [t for t in trials if t['rollback_s'] is None]
    rollback_s = max(t['rollback_s'] for t in trials if t['rollback_s'] is not None)
    print(f'BENCH rollout scenario=bad_candidate trials={TRIALS} rollback_cycles={rollback_s * RATE_HZ:.2f} '
          f'rollback_s_max={rollback_s:.3f} served_after_trigger={max(t["after_trigger"] for t in trials)} '
          f'bad_verdicts_served={sum(t["wrong"] for t in trials)} '
          f'candidate_verdicts={sum(t["served"] for t in trials)} triggers_missed={len(missed)} '
          f'cycle_s={1 / RATE_HZ:.3f} scenario=shadow verdicts_compared={shadow["compared"]} '
          f'verdicts_changed={shadow["changed"]} not_production={shadow["not_production"]} '
          f'shadow_disagreed={shadow["disagree"]}/{shadow["shadowed"]}')
    assert shadow['compared'] >= SHADOW_PARTS and len(missed) < TRIALS
