"""Signal processing ops (opset 17/20): DFT, STFT, Hann/Hamming/Blackman windows, MelWeightMatrix.

Signals carry a trailing axis of size 1 (real) or 2 (real, imaginary); transforms run through
numpy's FFT on the complex view and come back in that layout, in the input's dtype.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from inference.errors import KernelError
from inference.ops.registry import register


def to_complex(x: np.ndarray, op: str) -> np.ndarray:
    """[..., 1] or [..., 2] real layout -> complex array (complex64 unless double) without the trailing axis.

    Keeping single precision makes numpy's FFT round like a float32 implementation would.
    """
    real = np.float64 if x.dtype == np.float64 else np.float32
    if x.shape[-1] == 1:
        return x[..., 0].astype(real)
    if x.shape[-1] == 2:
        return x[..., 0].astype(real) + 1j * x[..., 1].astype(real)
    raise KernelError(f"{op}: last dimension must be 1 (real) or 2 (complex), got {x.shape[-1]}")


def from_complex(z: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Complex array -> [..., 2] layout in ``dtype``."""
    return np.stack([z.real, z.imag], axis=-1).astype(dtype)


def _scalar(v, default=None):
    return default if v is None else int(np.asarray(v).reshape(-1)[0])


def _dft(x: np.ndarray, dft_length, axis: int, inverse: int, onesided: int) -> np.ndarray:
    rank = x.ndim
    if not (-rank <= axis <= -2 or 0 <= axis <= rank - 2):
        raise KernelError(f"DFT: axis {axis} is outside [-{rank}, -2] U [0, {rank - 2}] for rank {rank}")
    ax = axis % rank
    z = to_complex(x, "DFT")
    if onesided and inverse:
        n = _scalar(dft_length, 2 * (z.shape[ax] - 1))
        return np.fft.irfft(z, n=n, axis=ax)[..., None].astype(x.dtype)
    n = _scalar(dft_length, z.shape[ax])
    if inverse:
        return from_complex(np.fft.ifft(z, n=n, axis=ax), x.dtype)
    out = np.fft.fft(z, n=n, axis=ax)
    if onesided:
        out = np.take(out, np.arange(n // 2 + 1), axis=ax)
    return from_complex(out, x.dtype)


@register("DFT", since=17)
def dft_17(input, dft_length=None, *, axis=1, inverse=0, onesided=0):
    return _dft(input, dft_length, axis, inverse, onesided)


@register("DFT", since=20)
def dft_20(input, dft_length=None, axis=None, *, inverse=0, onesided=0):
    return _dft(input, dft_length, _scalar(axis, -2), inverse, onesided)


@register("STFT", since=17)
def stft(signal, frame_step, window=None, frame_length=None, *, onesided=1):
    if signal.ndim != 3:
        raise KernelError(f"STFT: signal must be rank 3 [batch, length, 1|2], got rank {signal.ndim}")
    z = to_complex(signal, "STFT")
    n = _scalar(frame_length, window.shape[0] if window is not None else z.shape[1])
    if window is not None and window.shape[0] != n:
        raise KernelError(f"STFT: window length {window.shape[0]} != frame_length {n}")
    step = _scalar(frame_step)
    if step <= 0 or n > z.shape[1]:
        raise KernelError(f"STFT: need frame_step > 0 and frame_length <= signal length, got {step}, {n}")
    frames = np.lib.stride_tricks.sliding_window_view(z, n, axis=1)[:, ::step]  # (batch, frames, n)
    if window is not None:
        frames = frames * window.astype(frames.real.dtype)
    spec = np.fft.fft(frames, axis=-1)
    if onesided:
        spec = spec[..., :n // 2 + 1]
    return from_complex(spec, signal.dtype)


def _window(size, periodic: int, output_datatype: int, coeffs: tuple[float, ...]) -> np.ndarray:
    """Generalized cosine window sum_k (-1)^k a_k cos(2 pi k n / N), N = size (periodic) or size - 1."""
    size = _scalar(size)
    denom = size if periodic else size - 1
    phase = 2 * np.pi * np.arange(size) / max(denom, 1)
    w = sum((-1) ** k * a * np.cos(k * phase) for k, a in enumerate(coeffs))
    return np.asarray(w).astype(helper.tensor_dtype_to_np_dtype(output_datatype))


@register("HannWindow", since=17)
def hann_window(size, *, periodic=1, output_datatype=1):
    return _window(size, periodic, output_datatype, (0.5, 0.5))


@register("HammingWindow", since=17)
def hamming_window(size, *, periodic=1, output_datatype=1):
    return _window(size, periodic, output_datatype, (25 / 46, 21 / 46))


@register("BlackmanWindow", since=17)
def blackman_window(size, *, periodic=1, output_datatype=1):
    return _window(size, periodic, output_datatype, (0.42, 0.5, 0.08))


def _hz_to_mel(f):
    return 2595 * np.log10(1 + f / 700)


def _mel_to_hz(m):
    return 700 * (10 ** (m / 2595) - 1)


@register("MelWeightMatrix", since=17)
def mel_weight_matrix(num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz, *,
                      output_datatype=1):
    """Triangular filters (peak 1) on spectrogram bins, edges equally spaced on the mel scale."""
    mels, n_fft, rate = _scalar(num_mel_bins), _scalar(dft_length), _scalar(sample_rate)
    lo, hi = _hz_to_mel(float(lower_edge_hertz)), _hz_to_mel(float(upper_edge_hertz))
    # mels + 2 edges spaced by (hi - lo) / (mels + 2), as onnx's backend tests expect: the last
    # edge stops one step short of upper_edge_hertz.
    edges_hz = _mel_to_hz(lo + np.arange(mels + 2) * (hi - lo) / (mels + 2))
    edges = ((n_fft + 1) * edges_hz // rate).astype(np.int64)  # integer spectrogram bins
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    j = np.arange(n_fft // 2 + 1).reshape(-1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rise = np.where(center > left, (j - left) / (center - left), (j == center).astype(np.float64))
        fall = (right - j) / (right - center)
    out = np.where((j >= left) & (j <= center), rise, np.where((j > center) & (j < right), fall, 0.0))
    return out.astype(helper.tensor_dtype_to_np_dtype(output_datatype))
