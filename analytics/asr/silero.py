"""The Silero VAD model and its per-stream state (onnxruntime, offline): what
:mod:`analytics.asr.vad` scores windows with. Which model and why: that module's docstring.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from analytics.asr.audio import FloatAudio

RATE_HZ = 16_000
WINDOW = 512
CONTEXT = 64
WINDOW_MS = WINDOW * 1000 // RATE_HZ  # 32


class VadError(RuntimeError):
    """The VAD model is missing or failed to load."""


VadModel = Literal["silero-vad", "faster-whisper"]


def silero_package_path() -> Path:
    """``silero_vad.onnx`` of the ``silero-vad`` package (found, not imported: it imports torch)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        raise VadError(
            "Silero VAD 6.2 not found: pip install --no-deps silero-vad==6.2.3 "
            "(or AGENTSTREAM_WORKER_VAD_MODEL=faster-whisper)"
        )
    path = Path(spec.origin).parent / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise VadError(f"Silero VAD model not found at {path} (reinstall 'silero-vad')")
    return path


def default_vad_path() -> Path:
    """The Silero VAD model bundled with faster-whisper."""
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or spec.origin is None:
        raise VadError("Silero VAD model not found: install the 'faster-whisper' package")
    path = Path(spec.origin).parent / "assets" / "silero_vad_v6.onnx"
    if not path.is_file():
        raise VadError(f"Silero VAD model not found at {path} (reinstall 'faster-whisper')")
    return path


class SileroVad:
    """A shared Silero VAD session; ``probabilities`` is pure given the caller's state.

    The model's inputs tell which kind it is: (``input``, ``state``, ``sr``) for the package's
    v6.2, (``input``, ``h``, ``c``) for faster-whisper's export.
    """

    def __init__(self, path: Path | None = None, model: VadModel = "silero-vad") -> None:
        import onnxruntime  # heavy, only when a worker starts

        if path is None:
            path = silero_package_path() if model == "silero-vad" else default_vad_path()
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 4
        self._session: Any = onnxruntime.InferenceSession(
            str(path), providers=["CPUExecutionProvider"], sess_options=opts
        )
        self.stateful = "state" in {i.name for i in self._session.get_inputs()}
        self._rate = np.array(RATE_HZ, dtype=np.int64)

    def probabilities(
        self, windows: FloatAudio, state: VadState
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Speech probability per 512-sample window (``windows``: shape (n, 512)); updates state."""
        if self.stateful:
            return self._probabilities_stateful(windows, state)
        batch = np.empty((windows.shape[0], WINDOW + CONTEXT), dtype=np.float32)
        previous = state.context
        for i in range(windows.shape[0]):
            batch[i, :CONTEXT] = previous
            batch[i, CONTEXT:] = windows[i]
            previous = windows[i, -CONTEXT:]
        out, state.h, state.c = self._session.run(
            None, {"input": batch, "h": state.h, "c": state.c}
        )
        state.context = np.array(previous, dtype=np.float32)
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def probabilities_each(
        self, window: FloatAudio, states: Sequence[VadState]
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        """One 512-sample window through several independent states (v6.2: one batch, about
        1.3 times the cost of one state; the results equal one run per state)."""
        return self.probabilities_many([window], [states])

    def probabilities_many(
        self, windows: Sequence[FloatAudio], groups: Sequence[Sequence[VadState]]
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Window i through each state of ``groups[i]`` (several calls' windows at once): one
        run for all with v6.2, whose batch rows are independent streams, so each result equals
        that of a run of its own, to the bit (``tests/unit/asr/test_vad_batch.py``); in order
        of the groups' states. 16 calls' windows cost about 0.4 of one run each."""
        if not self.stateful:
            return np.array(
                [
                    self.probabilities(window[np.newaxis, :], state)[0]
                    for window, states in zip(windows, groups, strict=True)
                    for state in states
                ],
                np.float32,
            )
        rows = sum(len(states) for states in groups)
        x = np.empty((rows, WINDOW + CONTEXT), dtype=np.float32)
        flat: list[VadState] = []
        for window, states in zip(windows, groups, strict=True):
            for state in states:
                if state.h.shape != (2, 1, 128):
                    state.h = np.zeros((2, 1, 128), dtype=np.float32)
                x[len(flat), :CONTEXT] = state.context
                x[len(flat), CONTEXT:] = window
                flat.append(state)
        h = np.concatenate([state.h for state in flat], axis=1)
        prob, h = self._session.run(None, {"input": x, "state": h, "sr": self._rate})
        row = 0
        for window, states in zip(windows, groups, strict=True):
            context = np.array(window[-CONTEXT:], dtype=np.float32)
            for state in states:
                state.h = np.ascontiguousarray(h[:, row : row + 1])
                state.context = context
                row += 1
        return np.asarray(prob, dtype=np.float32).reshape(-1)

    def _probabilities_stateful(
        self, windows: FloatAudio, state: VadState
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        # v6.2 batches independent streams, not a sequence: one run per window, in order.
        # Its state is one (2, 1, 128) tensor, kept in ``state.h``.
        if state.h.shape != (2, 1, 128):
            state.h = np.zeros((2, 1, 128), dtype=np.float32)
        out = np.empty(windows.shape[0], dtype=np.float32)
        x = np.empty((1, WINDOW + CONTEXT), dtype=np.float32)
        x[0, :CONTEXT] = state.context
        for i in range(windows.shape[0]):
            x[0, CONTEXT:] = windows[i]
            prob, state.h = self._session.run(
                None, {"input": x, "state": state.h, "sr": self._rate}
            )
            out[i] = prob[0, 0]
            x[0, :CONTEXT] = windows[i, -CONTEXT:]
        state.context = np.array(x[0, :CONTEXT], dtype=np.float32)
        return out


@dataclass
class VadState:
    h: np.ndarray[Any, np.dtype[np.float32]] = field(
        default_factory=lambda: np.zeros((1, 1, 128), dtype=np.float32)
    )
    c: np.ndarray[Any, np.dtype[np.float32]] = field(
        default_factory=lambda: np.zeros((1, 1, 128), dtype=np.float32)
    )
    context: np.ndarray[Any, np.dtype[np.float32]] = field(
        default_factory=lambda: np.zeros(CONTEXT, dtype=np.float32)
    )

    def reset(self) -> None:
        fresh = VadState()
        self.h, self.c, self.context = fresh.h, fresh.c, fresh.context
