"""G.711 (μ-law, A-law) to PCM16 at ingest, with a 256-entry lookup table each.

Everything downstream of ingest reads PCM16 LE; ``audioop`` is gone from Python 3.13, so the
tables are computed here once (ITU-T G.711) and applied with numpy: one fancy-index per frame.
PCM16 frames never come here (the session's fast path keeps their bytes as they are).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from schemas.exotel import Codec


def _mulaw_table() -> npt.NDArray[np.int16]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype("<i2")


def _alaw_table() -> npt.NDArray[np.int16]:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1)
    )
    return np.where(sign != 0, magnitude, -magnitude).astype("<i2")


MULAW_TO_PCM16 = _mulaw_table()
ALAW_TO_PCM16 = _alaw_table()


def mulaw_to_pcm16(data: bytes) -> bytes:
    """μ-law bytes -> PCM16 LE (twice as many bytes)."""
    return MULAW_TO_PCM16[np.frombuffer(data, dtype=np.uint8)].tobytes()


def alaw_to_pcm16(data: bytes) -> bytes:
    """A-law bytes -> PCM16 LE (twice as many bytes)."""
    return ALAW_TO_PCM16[np.frombuffer(data, dtype=np.uint8)].tobytes()


def decoder_for(codec: Codec) -> Callable[[bytes], bytes] | None:
    """The decoder of a codec; None for PCM16 (and unknown encodings, treated as PCM16)."""
    if codec == "mulaw":
        return mulaw_to_pcm16
    if codec == "alaw":
        return alaw_to_pcm16
    return None
