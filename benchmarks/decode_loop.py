"""Token-by-token greedy generation with a GPT-style decoder (nanoGPT's shape: token and learned
position embeddings, a causal ``masked_fill`` over the scores, pre-norm blocks, tanh GELU),
exported with a dynamic batch and sequence length and fed the whole sequence at every step: ours
against onnxruntime, the same prompts generated in passes, in one process.

With ``--kv-cache`` the decoder keeps its keys and values (``KvDecoder``): the prompt is fed once,
then one token a step with the cache of every earlier position, the cache's length the dynamic
axis (how an on-device LLM generates). Each step is then a new cache length, and its token a
single value (which a replay's check must vary: ``inference.kernel_replay``); each pass starts
from another prompt. ``--size mid`` runs a 27M-weight decoder, whose step is its weights streamed
from memory, where the small default's step is mostly the runtimes' own overhead. ``--int8`` runs
both runtimes on onnxruntime's ``quantize_dynamic`` of the decoder (int8 weights, the token table too;
activations quantized each step), the usual way an LLM's weights are made 4x smaller on a device.

Each step's length is new to the first pass; a Predictor runs a shape step by step until it has
seen it (noting its shapes, then planning its arena), then captures a kernel replay, so the
passes show what a server that keeps generating pays on the way to replays and after.

Run from the project root:
  env -u OPENBLAS_CORETYPE python benchmarks/decode_loop.py [--threads 1] [--tokens 48] [--kv-cache]
      [--size small|mid] [--passes 4] [--int8]
"""
from __future__ import annotations

import argparse
import functools
import io
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference import Config, Predictor  # noqa: E402

nn = torch.nn
#: a pause between the runtimes' generations: a thread pool's workers spin for a while after a run,
#: and on two threads the one that ran last had taken the other's first steps' second core
#: (ours replayed at 1.8x onnxruntime's total right after its generation, ~0.9x alone)
SETTLE_SECONDS = 0.5
#: the decoders of ``--size``: a small one whose step is mostly the runtimes' own overhead, and one
#: whose step streams 110 MB of weights (each token reads them all once)
SIZES = {"small": dict(vocab=500, dim=128, heads=4, layers=2),
         "mid": dict(vocab=8000, dim=512, heads=8, layers=6)}


class GptDecoder(nn.Module):
    """A small nanoGPT: its next-token logits for the last position of ``ids`` (batch, length)."""

    def __init__(self, vocab: int = 500, dim: int = 128, heads: int = 4, layers: int = 2, context: int = 64):
        super().__init__()
        self.heads, self.dim = heads, dim
        self.tokens, self.positions = nn.Embedding(vocab, dim), nn.Parameter(torch.randn(1, context, dim) * 0.02)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(dict(norm1=nn.LayerNorm(dim), qkv=nn.Linear(dim, 3 * dim), out=nn.Linear(dim, dim),
                               norm2=nn.LayerNorm(dim), up=nn.Linear(dim, 4 * dim), down=nn.Linear(4 * dim, dim)))
            for _ in range(layers))
        self.register_buffer("mask", torch.tril(torch.ones(context, context)).view(1, 1, context, context))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, vocab, bias=False)

    def forward(self, ids):
        t = ids.shape[1]
        x = self.tokens(ids) + self.positions[:, :t]
        for block in self.blocks:
            x, _, _ = self.block(block, x, self.mask[:, :, :t, :t])
        return self.head(self.norm(x))[:, -1]

    def block(self, block: nn.ModuleDict, x, mask, past_k=None, past_v=None):
        """One pre-norm block on ``x`` (batch, length, dim), scores masked where ``mask`` is 0: ``x``
        after it and the block's keys and values (``past_k``/``past_v``, the cache, before them)."""
        b, t, _ = x.shape
        h, d = self.heads, self.dim // self.heads
        q, k, v = block["qkv"](block["norm1"](x)).split(self.dim, 2)
        q, k, v = (a.view(b, t, h, d).transpose(1, 2) for a in (q, k, v))
        if past_k is not None:
            k, v = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
        scores = ((q @ k.transpose(-2, -1)) * d ** -0.5).masked_fill(mask == 0, float("-inf")).softmax(-1)
        x = x + block["out"]((scores @ v).transpose(1, 2).reshape(b, t, self.dim))
        x = x + block["down"](nn.functional.gelu(block["up"](block["norm2"](x)), approximate="tanh"))
        return x, k, v


class KvDecoder(GptDecoder):
    """The decoder with a key/value cache, laid out as Hugging Face's exports do: ``forward(ids,
    *past)`` -> (logits of the last position, *present), one key and one value (batch, heads,
    length, head width) per layer in :meth:`cache_names`' order, ``present`` with ``ids``'
    positions appended."""

    def forward(self, ids, *past):
        t, cached = ids.shape[1], past[0].shape[2]
        x = self.tokens(ids) + self.positions[:, cached:cached + t]
        mask = self.mask[:, :, cached:cached + t, :cached + t]
        presents = []
        for i, block in enumerate(self.blocks):
            x, k, v = self.block(block, x, mask, past[2 * i], past[2 * i + 1])
            presents += [k, v]
        return (self.head(self.norm(x))[:, -1], *presents)

    def cache_names(self, prefix: str = "past_key_values") -> list[str]:
        return [f"{prefix}.{i}.{part}" for i in range(len(self.blocks)) for part in ("key", "value")]

    def empty_cache(self, batch: int) -> dict[str, np.ndarray]:
        """The cache of a prompt's first step: no positions yet."""
        shape = (batch, self.heads, 0, self.dim // self.heads)
        return {name: np.zeros(shape, np.float32) for name in self.cache_names()}


def export(module: nn.Module, length: int = 8) -> bytes:
    """``module`` as torch.onnx writes it, ``ids`` with a dynamic batch and length."""
    buf = io.BytesIO()
    ids = torch.zeros((1, length), dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (ids,), buf, opset_version=17, input_names=["ids"], output_names=["logits"],
                          dynamic_axes={"ids": {0: "batch", 1: "length"}}, dynamo=False)
    return buf.getvalue()


def export_kv(module: KvDecoder, length: int = 3, cached: int = 5) -> bytes:
    """``module`` as torch.onnx writes it: ``ids`` (batch, length) and the cache (its
    :meth:`~KvDecoder.cache_names`, a dynamic batch and cache length) in; ``logits`` and the
    ``present.{layer}.key`` / ``.value`` out."""
    buf = io.BytesIO()
    ids = torch.zeros((1, length), dtype=torch.int64)
    past = [torch.zeros((1, module.heads, cached, module.dim // module.heads)) for _ in module.cache_names()]
    presents = module.cache_names("present")
    dynamic = {"ids": {0: "batch", 1: "length"}, **{name: {0: "batch", 2: "cached"} for name in module.cache_names()},
               **{name: {0: "batch", 2: "total"} for name in presents}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (ids, *past), buf, opset_version=17, dynamo=False, dynamic_axes=dynamic,
                          input_names=["ids", *module.cache_names()], output_names=["logits", *presents])
    return buf.getvalue()


def generate(run, prompt: np.ndarray, tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy generation of ``tokens`` after ``prompt`` (1, n) by ``run`` (ids -> logits): the
    sequence and each step's seconds."""
    ids, times = prompt, []
    for _ in range(tokens):
        start = time.perf_counter()
        logits = run(ids)
        times.append(time.perf_counter() - start)
        ids = np.concatenate([ids, logits.argmax(-1)[:, None].astype(np.int64)], axis=1)
    return ids, np.array(times)


def generate_kv(run, prompt: np.ndarray, tokens: int, empty_cache: dict[str, np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy generation with a key/value cache: ``run`` (feeds -> [logits, *present]) is fed
    ``prompt`` (batch, n) with ``empty_cache``, then each new token with the cache so far; the
    sequence and each step's seconds."""
    feeds, sequence, times = {"ids": prompt, **empty_cache}, [prompt], []
    for _ in range(tokens):
        start = time.perf_counter()
        logits, *presents = run(feeds)
        times.append(time.perf_counter() - start)
        ids = logits.argmax(-1)[:, None].astype(np.int64)
        feeds = {"ids": ids, **dict(zip(empty_cache, presents))}
        sequence.append(ids)
    return np.concatenate(sequence, axis=1), np.array(times)


#: how the titles of ``--int8`` runs say which file both runtimes ran
INT8_LABEL = ", int8 by quantize_dynamic"


def quantized(proto: bytes) -> bytes:
    """``proto`` after onnxruntime's ``quantize_dynamic`` (int8 weights, per tensor)."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp, "float.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(proto)
        quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8)
        return out.read_bytes()


def main() -> int:
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tokens", type=int, default=48)
    p.add_argument("--passes", type=int, default=4)
    p.add_argument("--kv-cache", action="store_true", help="a decoder with a key/value cache, one token a step")
    p.add_argument("--size", choices=sorted(SIZES), default="small",
                   help="small: 2 layers, 128 wide (Python-bound); mid: 6 layers, 512 wide, 27M weights (memory-bound)")
    p.add_argument("--int8", action="store_true", help="both runtimes on onnxruntime's quantize_dynamic of the decoder")
    args = p.parse_args()
    torch.manual_seed(0)
    context = max(64, 3 + args.tokens)  # positions for the prompt and every token
    size = dict(SIZES[args.size], context=context)
    module = KvDecoder(**size) if args.kv_cache else GptDecoder(**size)
    proto = export_kv(module) if args.kv_cache else export(module)
    if args.int8:
        proto = quantized(proto)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    peer = ort.InferenceSession(proto, options, providers=["CPUExecutionProvider"])
    ours = Predictor(Config(model_path=proto, num_threads=args.threads))
    if args.kv_cache:
        def peer_run(feeds):
            return peer.run(None, feeds)

        def our_run(feeds):
            return list(ours.run(feeds).values())

        # compile and load outside the timing: a 2-token prompt and a step after it (the passes' prompts have 3)
        generate_kv(our_run, np.array([[0, 0]], np.int64), 2, module.empty_cache(1))
        generation = functools.partial(generate_kv, tokens=args.tokens, empty_cache=module.empty_cache(1))
    else:
        def peer_run(ids):
            return peer.run(None, {"ids": ids})[0]

        def our_run(ids):
            return ours.run({"ids": ids})["logits"]

        generate(our_run, np.array([[0]], np.int64), 2)  # compile and load outside the timing: lengths 1 and 2
        generation = functools.partial(generate, tokens=args.tokens)
    kind = "with a key/value cache, one token a step" if args.kv_cache else "fed the whole sequence each step"
    print(f"GPT-style decoder ({size['layers']} layers, {size['dim']} wide, {size['vocab']} tokens, "
          f"{sum(t.numel() for t in module.parameters()) / 1e6:.1f}M weights{INT8_LABEL if args.int8 else ''}) "
          f"{kind}, {args.tokens} tokens greedy "
          f"after 3, {args.threads} thread(s)")
    print("| pass | ours ms | onnxruntime ms | ours / onnxruntime | ours median step ms | "
          "onnxruntime median step ms | same tokens |")
    print("|---|---|---|---|---|---|---|")
    for n in range(args.passes):  # the whole sequence fed: the same prompt; one token a step: another each pass
        prompt = np.array([[1, 2, 3 + (n if args.kv_cache else 0)]], np.int64)
        want, peer_times = generation(peer_run, prompt)
        time.sleep(SETTLE_SECONDS)
        got, our_times = generation(our_run, prompt)
        time.sleep(SETTLE_SECONDS)
        print(f"| {n + 1} | {our_times.sum() * 1e3:.1f} | {peer_times.sum() * 1e3:.1f} | "
              f"{our_times.sum() / peer_times.sum():.2f}x | {np.median(our_times) * 1e3:.3f} | "
              f"{np.median(peer_times) * 1e3:.3f} | {np.array_equal(got, want)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
