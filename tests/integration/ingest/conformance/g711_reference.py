"""An independent G.711 decoder for the tests, written from the ITU-T G.711 formulas.

Per sample, in plain Python and from the segment formula (not from ingest's lookup table):
μ-law: the code is complemented; magnitude = ((2m + 33) << e) - 33 in 14-bit units, times 4.
A-law: the code is XORed with 0x55; magnitude = 2m + 1 (e = 0) or (2m + 33) << (e - 1) in
13-bit units, times 8; the sign bit set means positive.
"""

from __future__ import annotations

import struct


def mulaw_sample(code: int) -> int:
    u = ~code & 0xFF
    sign, exponent, mantissa = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    magnitude = (((2 * mantissa + 33) << exponent) - 33) * 4
    return -magnitude if sign else magnitude


def alaw_sample(code: int) -> int:
    a = code ^ 0x55
    sign, exponent, mantissa = a & 0x80, (a >> 4) & 0x07, a & 0x0F
    if exponent == 0:
        magnitude = (2 * mantissa + 1) * 8
    else:
        magnitude = ((2 * mantissa + 33) << (exponent - 1)) * 8
    return magnitude if sign else -magnitude


def decode_mulaw(data: bytes) -> bytes:
    return struct.pack(f"<{len(data)}h", *(mulaw_sample(b) for b in data))


def decode_alaw(data: bytes) -> bytes:
    return struct.pack(f"<{len(data)}h", *(alaw_sample(b) for b in data))
