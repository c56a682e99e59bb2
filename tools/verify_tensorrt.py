#!/usr/bin/env python3
"""Verify the TensorRT backend on a GPU host, in one go; prints ONE JSON line and exits 0 when
every check passed, 1 when one failed, 2 when TensorRT/pycuda/a GPU are not usable here.

    . tools/env.sh && python tools/verify_tensorrt.py [--plan-cache DIR] [--timeout-s 60]

Until this has run on a GPU and passed, the backend is "not verified" (README, Inference).

What it checks, with the shipped inspection model (cellos_vision/models/inspection_cnn.onnx) on
real frames of the synthetic camera (the same preprocessing the vision node uses):
  - builds in FP32 and in FP16 (plan cache emptied first: both really build);
  - outputs against ONNX Runtime (CPU) at batch 1, 3 and 8: FP32 within atol 1e-3 + rtol 1e-3
    (TF32 is cleared, so FP32 is FP32), FP16 within atol 5e-2 + rtol 5e-2 of the logits; argmax
    equal on every frame for both;
  - latency per batch size (median and p99 of 50 runs, ms) for both precisions;
  - two threads running at once on one model (2 streams), results equal to the single-thread ones;
  - unload while a request runs: a thread keeps running batches while the model is closed; every
    run ends (a result or BackendError), close returns, all under the timeout, and a run after
    close raises BackendError;
  - a second start (a new backend, as after a restart) loads each plan from the cache.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for pkg in ('cellos_inference', 'cellos_vision', 'cellos_common'):
    sys.path.insert(0, str(ROOT / 'ros2_ws' / 'src' / pkg))

from cellos_inference.core.backends.base import BackendError  # noqa: E402
from cellos_inference.core.backends.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from cellos_inference.core.backends.selection import probe_gpu  # noqa: E402
from cellos_inference.core.model_registry import file_sha256  # noqa: E402

MODEL = ROOT / 'ros2_ws' / 'src' / 'cellos_vision' / 'cellos_vision' / 'models' / 'inspection_cnn.onnx'
TOLERANCE = {'fp32': (1e-3, 1e-3), 'fp16': (5e-2, 5e-2)}     # (atol, rtol) on the logits
BATCHES = (1, 3, 8)
MAX_BATCH = 8


def frames(n: int) -> np.ndarray:
    from cellos_vision.core.inspection_dataset import labelled_set
    from cellos_vision.core.vision_preprocess import PreprocessSpec
    meta = json.loads(MODEL.with_suffix('.json').read_text())
    x, _ = labelled_set([901, 902], max(1, n // 10 + 1), PreprocessSpec.from_meta(meta))
    return x[:n]


def latency(model, x, runs: int = 50) -> dict:
    for _ in range(5):
        model.run({'image': x})
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.run({'image': x})
        t.append(1e3 * (time.perf_counter() - t0))
    return {'p50_ms': round(float(np.median(t)), 3), 'p99_ms': round(float(np.percentile(t, 99)), 3)}


def check_precision(trt_backend, ort_model, precision: str, x: np.ndarray, out: dict, failures: list) -> object:
    from cellos_inference.core.backends.tensorrt_backend import TensorRTBackend  # noqa: F401
    mid = file_sha256(MODEL)
    t0 = time.perf_counter()
    model = trt_backend.load(str(MODEL), mid, MAX_BATCH)
    res = {'precision': model.precision, 'load_s': round(time.perf_counter() - t0, 2),
           'source': trt_backend.last_load_source, 'batches': {}}
    if model.precision != precision:
        failures.append(f'{precision}: the backend built {model.precision}')
    atol, rtol = TOLERANCE[precision]
    for b in BATCHES:
        xb = x[:b]
        got = model.run({'image': xb})[0]
        want = ort_model.run({'image': xb})[0]
        err = float(np.max(np.abs(got - want)))
        close = bool(np.allclose(got, want, atol=atol, rtol=rtol))
        argmax = bool((got.argmax(1) == want.argmax(1)).all())
        res['batches'][str(b)] = {'max_abs_err': round(err, 6), 'within_tolerance': close,
                                  'argmax_equal': argmax, **latency(model, xb)}
        if not close:
            failures.append(f'{precision} batch {b}: max |trt - ort| {err:.2e} beyond atol {atol} rtol {rtol}')
        if not argmax:
            failures.append(f'{precision} batch {b}: argmax differs from ONNX Runtime')
    out[precision] = res
    return model


def two_threads(model, x, out: dict, failures: list) -> None:
    want = model.run({'image': x[:3]})[0]
    errors, results = [], []

    def run():
        try:
            for _ in range(20):
                results.append(model.run({'image': x[:3]})[0])
        except Exception as e:
            errors.append(f'{type(e).__name__}: {e}')
    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    same = all(np.allclose(r, want, atol=1e-5) for r in results)
    out['two_threads'] = {'runs': len(results), 'errors': errors, 'equal_results': same}
    if errors or len(results) != 40 or not same:
        failures.append(f'two threads: {len(results)}/40 runs, errors {errors}, equal {same}')


def unload_during_run(trt_backend, x, timeout_s: float, out: dict, failures: list) -> None:
    model = trt_backend.load(str(MODEL), file_sha256(MODEL), MAX_BATCH)
    ran, refused, other = [0], [0], []
    stop = threading.Event()

    def keep_running():
        while not stop.is_set():
            try:
                model.run({'image': x[:8]})
                ran[0] += 1
            except BackendError:
                refused[0] += 1
                return
            except Exception as e:
                other.append(f'{type(e).__name__}: {e}')
                return
    t = threading.Thread(target=keep_running, daemon=True)
    t.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    close_error = ''
    try:
        model.close()
    except BackendError as e:
        close_error = str(e)
    close_s = time.perf_counter() - t0
    t.join(timeout_s)
    stop.set()
    try:
        model.run({'image': x[:1]})
        after = 'ran'
    except BackendError:
        after = 'BackendError'
    res = {'runs_before_close': ran[0], 'runner_ended': not t.is_alive(), 'runner_refused': refused[0],
           'other_errors': other, 'close_s': round(close_s, 3), 'close_error': close_error,
           'run_after_close': after}
    out['unload_during_run'] = res
    if t.is_alive() or other or close_error or after != 'BackendError' or close_s > timeout_s:
        failures.append(f'unload during a run: {res}')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--plan-cache', default='', help='plan cache folder (default: a fresh temporary one)')
    ap.add_argument('--timeout-s', type=float, default=60.0, help='bound of the unload-during-run check')
    args = ap.parse_args()
    probe = probe_gpu()
    out = {'check': 'verify_tensorrt', 'model': MODEL.name, 'tensorrt': probe.tensorrt_version,
           'gpu': probe.gpu_name}
    if not probe.tensorrt_usable:
        out.update(verified=False, reason=f'TensorRT not usable here: {probe.missing}')
        print(json.dumps(out))
        return 2
    from cellos_inference.core.backends.tensorrt_backend import TensorRTBackend
    failures: list[str] = []
    cache = args.plan_cache or tempfile.mkdtemp(prefix='cellos-trt-plans-')
    x = frames(8)
    ort_model = OnnxRuntimeBackend(intra_op_threads=2).load(str(MODEL), 'ort', MAX_BATCH)
    try:
        models = {}
        for precision in ('fp32', 'fp16'):
            backend = TensorRTBackend(plan_cache_dir=cache, fp16='on' if precision == 'fp16' else 'off', streams=2)
            out['compute_capability'] = backend.compute_capability
            models[precision] = (backend, check_precision(backend, ort_model, precision, x, out, failures))
        two_threads(models['fp32'][1], x, out, failures)
        unload_during_run(models['fp32'][0], x, args.timeout_s, out, failures)
        for precision, (backend, model) in models.items():
            model.close()
            again = TensorRTBackend(plan_cache_dir=cache, fp16='on' if precision == 'fp16' else 'off')
            t0 = time.perf_counter()
            again.load(str(MODEL), file_sha256(MODEL), MAX_BATCH).close()
            out[precision]['second_start'] = {'source': again.last_load_source,
                                              'load_s': round(time.perf_counter() - t0, 2)}
            if again.last_load_source != 'cache':
                failures.append(f'{precision}: second start built the plan again instead of loading it')
    except Exception as e:   # a crash is a failed check, reported in the same one line
        failures.append(f'{type(e).__name__}: {e}')
    out.update(verified=not failures, failures=failures)
    print(json.dumps(out))
    return 0 if not failures else 1


if __name__ == '__main__':
    sys.exit(main())
