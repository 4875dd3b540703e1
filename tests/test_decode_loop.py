"""Greedy generation with a GPT-style decoder exported with a dynamic batch and length
(``benchmarks/decode_loop.py``): every step a new length, the sequence fed whole. The tokens are
torch's own, pass after pass while the Predictor learns each length's shapes, plans its arena,
captures its replay and replays it, its arena block replaced only a few times as lengths grow.
The same with a key/value cache, one token a step."""
from __future__ import annotations

import numpy as np
import pytest

from inference import Config, Predictor

torch = pytest.importorskip("torch")
from benchmarks.decode_loop import (GptDecoder, KvDecoder, export, export_kv, generate, generate_kv,  # noqa: E402
                                    quantized)
from tests.conftest import count_step_calls  # noqa: E402


def _tiny(cls, exporter, seed: int):
    """A one-layer, 32-wide decoder of ``cls`` and its export by ``exporter``."""
    torch.manual_seed(seed)
    module = cls(vocab=60, dim=32, heads=2, layers=1, context=24).eval()
    return module, exporter(module)


@pytest.fixture(scope="module")
def decoder():
    return _tiny(GptDecoder, export, 3)


def _torch_logits(module):
    def run(ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(ids)).numpy()

    return run


def test_generation_is_torch_s_pass_after_pass_and_ends_replayed(decoder):
    module, proto = decoder
    prompt = np.array([[5, 9]], np.int64)
    want, _ = generate(_torch_logits(module), prompt, 12)
    p = Predictor(Config(model_path=proto, num_threads=1))
    blocks = []  # the arena block after each step: replacing it drops every replay recorded on it

    def run(ids):
        logits = p.run({"ids": ids})["logits"]
        if not blocks or blocks[-1] is not p.session.arenas.block:
            blocks.append(p.session.arenas.block)
        return logits

    for _ in range(4):  # learn the shapes, plan, capture, replay
        got, _ = generate(run, prompt, 12)
        np.testing.assert_array_equal(got, want)
    report = p.replay_report()
    assert report.count("replayed") == 12, report  # lengths 2..13, each replayed on the last pass
    # planned in growing order, the block grew by half again, not a token at a time (12 blocks)
    sizes = [b.size for b in blocks if b.size]
    assert len(sizes) <= 6, sizes


def test_a_batch_of_prompts_generates_as_torch(decoder):
    module, proto = decoder
    prompt = np.array([[1, 2, 3], [7, 7, 0]], np.int64)
    p = Predictor(Config(model_path=proto, num_threads=2))
    for _ in range(3):
        got, _ = generate(lambda ids: p.run({"ids": ids})["logits"], prompt, 6)
        np.testing.assert_array_equal(got, generate(_torch_logits(module), prompt, 6)[0])


@pytest.fixture(scope="module")
def kv_decoder():
    return _tiny(KvDecoder, export_kv, 4)


def _torch_kv(module):
    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            return [o.numpy() for o in module(*(torch.from_numpy(v) for v in feeds.values()))]

    return run


def test_a_key_value_cache_generates_as_torch_and_replays_other_prompts(kv_decoder):
    """One token a step with the cache so far: every step a new cache length, its token a single
    value. After three generations (learn, plan, capture) the fourth and fifth, from other prompts,
    are torch's; the fifth runs no step at all (the fourth captured again only the first
    single-token length, pinned before any other token was seen), and no replay is pinned to the
    tokens it was captured on."""
    module, proto = kv_decoder
    p = Predictor(Config(model_path=proto, num_threads=1))
    assert p.get_input_names() == ["ids", *module.cache_names()]
    count = count_step_calls(p)

    def run(feeds):
        return list(p.run(feeds).values())

    for n, prompt in enumerate(([[5, 9, 2]], [[5, 9, 2]], [[5, 9, 2]], [[8, 1, 4]], [[3, 3, 7]])):
        prompt = np.array(prompt, np.int64)
        before = count[0]
        got, _ = generate_kv(run, prompt, 10, module.empty_cache(1))
        np.testing.assert_array_equal(got, generate_kv(_torch_kv(module), prompt, 10, module.empty_cache(1))[0])
        if n == 4:
            assert count[0] == before, p.replay_report()  # every step replayed, the prompt's too
    report = p.replay_report()
    assert report.count("replayed") == 10 and "only for" not in report, report


def test_a_decoder_quantized_by_onnxruntime_replays_other_prompts(kv_decoder):
    """onnxruntime's ``quantize_dynamic`` stores the token table int8 (Gather, then
    DequantizeLinear): its lookup must be a kernel a replay repeats, or every replay stays pinned to
    the token it was captured on and a new prompt's steps all run step by step. The replayed
    generation is a step-by-step session's, token for token."""
    pytest.importorskip("onnxruntime.quantization")
    module, proto = kv_decoder
    path = quantized(proto)
    p = Predictor(Config(model_path=path, num_threads=1))
    assert any(n.op_type == "Gather" and n.inputs[0].endswith("_quantized") for n in p.model.graph.nodes)
    stepwise = Predictor(Config(model_path=path, num_threads=1, kernel_replay=False))
    count = count_step_calls(p)
    for n, prompt in enumerate(([[5, 9, 2]], [[5, 9, 2]], [[5, 9, 2]], [[8, 1, 4]], [[3, 3, 7]])):
        prompt = np.array(prompt, np.int64)
        before = count[0]
        got, _ = generate_kv(lambda feeds: list(p.run(feeds).values()), prompt, 10, module.empty_cache(1))
        want, _ = generate_kv(lambda feeds: list(stepwise.run(feeds).values()), prompt, 10, module.empty_cache(1))
        np.testing.assert_array_equal(got, want)
        if n == 4:
            assert count[0] == before, p.replay_report()
    report = p.replay_report()
    assert report.count("replayed") == 10 and "only for" not in report, report
