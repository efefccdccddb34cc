"""Pure parts of the ASR stage: audio helpers, WER normalisation, VAD cutting, ack ordering."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.asr.audio import chunks, float_to_pcm16, pcm16_to_float, resample, rms_dbfs
from analytics.asr.vad import Segmenter, SpeechChunk, SpeechSegment, TentativeEnd, VadConfig
from analytics.asr.wer import normalize_text, wer, word_errors
from analytics.asr.whisper import trim_repetition
from analytics.settings import WorkerSettings
from analytics.worker import OffsetTracker
from tests.unit.asr.asr_fakes import silence, tone

pytestmark = pytest.mark.unit


def test_pcm_roundtrip_and_resample() -> None:
    audio = tone(0.5, 100)
    back = pcm16_to_float(float_to_pcm16(audio))
    assert np.max(np.abs(back - audio)) < 1e-4
    assert pcm16_to_float(b"\x01").size == 0  # odd trailing byte ignored
    up = resample(audio, 8000, 16000)
    assert up.shape[0] == 2 * audio.shape[0] and up.dtype == np.float32
    assert abs(rms_dbfs(up) - rms_dbfs(audio)) < 0.5
    assert rms_dbfs(silence(10)) == float("-inf")
    assert [len(c) for c in chunks(b"\0" * 3300, 8000, 100)] == [1600, 1600, 100]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HE COULD WAIT NO LONGER", "he could wait no longer"),
        ("Lord, but I'm glad to see you again, Phil.", "lord but im glad to see you again phil"),
        ("25 to 30 percent", "twenty five to thirty percent"),
        ("In 1961, the 3rd man paid $5.", "in nineteen sixty one the third man paid five dollars"),
        ("colour-blind Mr. Smith", "color blind mister smith"),
        ("12.5% of 1,000", "twelve point five percent of one thousand"),
    ],
)
def test_normalize_text(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


def test_wer_counts_after_normalisation() -> None:
    assert word_errors("TEN OF CLUBS", "10 of clubs.") == (0, 3)
    assert word_errors("a b c d", "a x c") == (2, 4)
    assert wer([("a b", "a b"), ("c d", "")]) == 0.5


def test_trim_repetition() -> None:
    assert trim_repetition([1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5, 6, 7, 1, 2]) == [
        1,
        2,
        3,
        4,
        5,
        6,
        7,
    ]
    assert trim_repetition([9, 8, 1, 2, 1, 2, 1, 2, 1, 2]) == [9, 8, 1, 2]
    assert trim_repetition([5, 5]) == [5, 5]  # "five five" is speech, not a loop
    assert trim_repetition([1, 2, 3, 4, 5, 6, 7, 8]) == [1, 2, 3, 4, 5, 6, 7, 8]


def _feed(segmenter: Segmenter, audio: np.ndarray) -> list[SpeechChunk | SpeechSegment]:
    events: list[SpeechChunk | SpeechSegment] = []
    for i in range(0, audio.shape[0], 1600):
        events.extend(segmenter.feed(audio[i : i + 1600]).events)
    return events


def test_segmenter_cuts_utterances_by_energy() -> None:
    config = VadConfig(min_silence_ms=300, speech_pad_ms=64, min_speech_ms=150)
    segmenter = Segmenter(None, config, start_ms=1000)
    audio = np.concatenate(
        [silence(500, 16000), tone(0.3, 800, 16000), silence(600, 16000), tone(0.3, 64, 16000)]
        + [silence(600, 16000), tone(0.2, 700, 16000)]
    )
    events = _feed(segmenter, audio)
    utterances = [e for e in events if isinstance(e, SpeechSegment)]
    assert [u.keep for u in utterances] == [True, False]  # the 64 ms click is dropped
    first = utterances[0]
    # speech at 1500-2300 ms, padded by 64 ms, to 32 ms windows
    assert 1500 - 64 - 32 <= first.start_ms <= 1500
    assert 2300 <= first.end_ms <= 2300 + 64 + 32
    assert first.audio.shape[0] == (first.end_ms - first.start_ms) * 16
    chunks_before = [e for e in events[: events.index(first)] if isinstance(e, SpeechChunk)]
    assert sum(c.audio.shape[0] for c in chunks_before) >= 800 * 16
    assert segmenter.in_speech  # the last tone has no trailing silence
    last = segmenter.flush()
    assert last is not None and last.keep and 3564 - 96 <= last.start_ms <= 3564
    assert segmenter.flush() is None


def test_segmenter_forces_a_cut_at_max_length() -> None:
    segmenter = Segmenter(None, VadConfig(max_utterance_ms=1000, min_speech_ms=0))
    utterances = [
        e for e in _feed(segmenter, tone(0.3, 2500, 16000)) if isinstance(e, SpeechSegment)
    ]
    assert len(utterances) == 2 and all(u.end_ms - u.start_ms <= 1100 for u in utterances)


class _Event:
    def __init__(self, log: list[int], offset: int) -> None:
        self.log, self.offset = log, offset

    def ack(self) -> None:
        self.log.append(self.offset)


def test_offset_tracker_acks_in_offset_order_per_partition() -> None:
    log: list[int] = []
    tracker = OffsetTracker()
    done = [tracker.add("t", 0, i, _Event(log, i)) for i in range(5)]
    other = tracker.add("t", 1, 0, _Event(log, 100))
    done[2]()
    done[1]()
    assert log == []  # offset 0 still open
    other()
    assert log == [100]
    done[0]()
    assert log == [100, 0, 1, 2]
    done[4]()
    done[3]()
    assert log == [100, 0, 1, 2, 3, 4]
    assert tracker.unacked == 0


def test_worker_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSTREAM_WORKER_ASR_ENGINE", "vosk")
    monkeypatch.setenv("AGENTSTREAM_WORKER_VAD_MIN_SILENCE_MS", "250")
    monkeypatch.setenv("AGENTSTREAM_WORKER_WEB_ENABLED", "false")
    monkeypatch.setenv("AGENTSTREAM_WORKER_SCORING__ENGINE", "vader")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    settings = WorkerSettings()
    assert settings.asr_engine == "vosk" and settings.vad_min_silence_ms == 250
    assert settings.web_enabled is False and settings.scoring.engine == "vader"
    assert settings.bootstrap_servers == "kafka:9092"
    monkeypatch.setenv("AGENTSTREAM_WORKER_ASR_ENGINE", "kaldi")
    with pytest.raises(ValueError, match="asr_engine"):
        WorkerSettings()


def test_tentative_end_matches_the_final_cut_only_if_silence_lasts() -> None:
    config = VadConfig(min_silence_ms=400, speech_pad_ms=64, min_speech_ms=0, early_end_ms=150)
    segmenter = Segmenter(None, config)
    audio = np.concatenate(
        [silence(300, 16000), tone(0.3, 500, 16000), silence(250, 16000)]  # a pause
        + [tone(0.3, 500, 16000), silence(800, 16000)]
    )
    events = [e for e in _feed(segmenter, audio) if not isinstance(e, SpeechChunk)]
    tentative = [e.utterance for e in events if isinstance(e, TentativeEnd)]
    finals = [e for e in events if isinstance(e, SpeechSegment)]
    assert len(tentative) == 2 and len(finals) == 1
    final = finals[0]
    stale, last = tentative
    assert (stale.start_ms, stale.end_ms) != (final.start_ms, final.end_ms)  # speech resumed
    assert (last.start_ms, last.end_ms) == (final.start_ms, final.end_ms)
    assert np.array_equal(last.audio, final.audio)
