"""The telephone channel, simulated: what the phone network does to a caller's voice.

A call reaches Exotel through the PSTN: 8 kHz sampling, a 300-3400 Hz voice band (ITU-T G.712)
and G.711 mu-law companding (8 bits per sample). :func:`apply_channel` degrades clean audio the
same way, deterministically (no dither, no randomness), with numpy/scipy only:

* ``plain``: resampled to 8 kHz (polyphase, anti-aliased), nothing else;
* ``band``: plus a linear-phase FIR band-pass, 300-3400 Hz;
* ``mulaw``: plus a G.711 mu-law encode/decode round trip (bit-exact with the ITU/Sun
  reference tables, which ``sox -e mu-law`` also uses);
* ``telephone``: band-pass, -3 dB of headroom (so the band-pass never clips), then mu-law:
  ``sox in.flac -r 8000 -e mu-law out.wav sinc 300-3400 gain -3`` without sox.

The output is float32 in [-1, 1] at 8 kHz, to be sent as PCM16 like an Exotel stream. Used by
``agentstream simulate --channel``, ``bench/e2e.py --channel`` and the ASR benchmarks; like the
rest of the simulator it does not import ``analytics`` (its resampler is the simulator's own).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray
from scipy.signal import firwin, oaconvolve

from agentstream.sim.audio import read_mono, resample
from agentstream.sim.audio import to_pcm16 as float_to_pcm16

FloatAudio = NDArray[np.float32]
Channel = Literal["none", "plain", "band", "mulaw", "telephone"]
CHANNELS: tuple[str, ...] = get_args(Channel)
RATE_HZ = 8_000
BAND_HZ = (300.0, 3400.0)
HEADROOM_DB = -3.0
_TAPS = 513  # 64 ms at 8 kHz: ~60 Hz transition bands, > 80 dB stopband (Kaiser beta 8)

_BIAS = 0x84
_CLIP_14 = 8159
_SEG_END_14 = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)


@lru_cache(maxsize=4)
def band_taps(low_hz: float = BAND_HZ[0], high_hz: float = BAND_HZ[1]) -> NDArray[np.float64]:
    """Linear-phase FIR band-pass taps at 8 kHz (odd length: the delay is a whole sample)."""
    taps: NDArray[np.float64] = firwin(
        _TAPS, [low_hz, high_hz], pass_zero=False, window=("kaiser", 8.0), fs=RATE_HZ
    )
    return taps


def band_pass(
    audio: FloatAudio, low_hz: float = BAND_HZ[0], high_hz: float = BAND_HZ[1]
) -> FloatAudio:
    """Zero-delay band-pass of 8 kHz audio (the FIR's group delay is removed)."""
    if audio.size == 0:
        return np.asarray(audio, dtype=np.float32)
    out = oaconvolve(audio.astype(np.float64), band_taps(low_hz, high_hz), mode="same")
    return np.asarray(out, dtype=np.float32)


def mulaw_encode(pcm: NDArray[np.int16]) -> NDArray[np.uint8]:
    """G.711 mu-law codes of 16-bit linear samples (the Sun/ITU reference ``linear2ulaw``).

    Like the reference (and sox, and Python's ``audioop``), the sample is first shifted to
    14 bits (an arithmetic shift, so negative values round towards minus infinity).
    """
    x = pcm.astype(np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF).astype(np.int32)
    mag = np.minimum(np.abs(x), _CLIP_14) + (_BIAS >> 2)
    seg = np.searchsorted(_SEG_END_14, mag, side="left").astype(np.int32)
    mantissa = (mag >> (np.minimum(seg, 7) + 1)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (seg << 4) | mantissa) ^ mask
    return code.astype(np.uint8)


def mulaw_decode(codes: NDArray[np.uint8]) -> NDArray[np.int16]:
    """16-bit linear samples of G.711 mu-law codes (the reconstruction at each step's middle)."""
    u = (~codes.astype(np.int32)) & 0xFF
    t = (((u & 0x0F) << 3) + _BIAS) << ((u & 0x70) >> 4)
    out = np.where(u & 0x80, _BIAS - t, t - _BIAS)
    return out.astype(np.int16)


def to_pcm16(audio: FloatAudio) -> NDArray[np.int16]:
    """float32 in [-1, 1] to int16 (rounded, clipped), as Exotel's PCM16 payload carries it."""
    return np.clip(np.round(audio.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def mulaw_round_trip(audio: FloatAudio) -> FloatAudio:
    """Encode to mu-law and back (what a G.711 leg does to the samples)."""
    decoded = mulaw_decode(mulaw_encode(to_pcm16(audio)))
    return (decoded.astype(np.float32) / np.float32(32768.0)).astype(np.float32)


def apply_channel(audio: FloatAudio, rate_hz: int, channel: Channel) -> tuple[FloatAudio, int]:
    """``audio`` at ``rate_hz`` through ``channel``: (float32 audio, its rate).

    ``none`` returns the input unchanged; every other channel returns 8 kHz audio.
    """
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}")
    if channel == "none":
        return np.asarray(audio, dtype=np.float32), rate_hz
    out = resample(np.asarray(audio, dtype=np.float32), rate_hz, RATE_HZ)
    if channel in ("band", "telephone"):
        out = band_pass(out)
    if channel == "telephone":
        out = (out * np.float32(10.0 ** (HEADROOM_DB / 20.0))).astype(np.float32)
    if channel in ("mulaw", "telephone"):
        out = mulaw_round_trip(out)
    return out, RATE_HZ


def load_channel_pcm16(path: Path, rate_hz: int, channel: Channel = "none") -> bytes:
    """The whole file through ``channel`` as mono PCM16 LE at the stream's ``rate_hz``.

    A 16 kHz stream of a telephone channel carries 8 kHz-band audio upsampled, as a wideband
    leg bridged to a narrowband one would.
    """
    mono, rate = read_mono(path)
    degraded, degraded_rate = apply_channel(mono, rate, channel)
    return float_to_pcm16(resample(degraded, degraded_rate, rate_hz))
