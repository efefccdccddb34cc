"""Offline transcription of files: a failure ends the iteration instead of hanging it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from analytics.asr.offline import transcribe_files
from analytics.asr.service import ServiceConfig
from tests.unit.asr.asr_fakes import FakeRecognizer

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


def test_an_unreadable_file_yields_its_error_and_the_rest_go_on(tmp_path: Path) -> None:
    missing = tmp_path / "missing.wav"
    results = list(transcribe_files([missing, missing], FakeRecognizer(), None))
    assert len(results) == 2 and all(isinstance(r, (OSError, RuntimeError)) for r in results)


def test_an_unexpected_failure_is_raised_not_waited_for(tmp_path: Path) -> None:
    # a VadConfig where the ServiceConfig belongs (what bench/keywords.py once passed): the
    # transcriber fails before the first file; the caller used to wait for a result forever
    wrong = cast(Any, ServiceConfig().vad)
    with pytest.raises(TypeError):
        list(transcribe_files([tmp_path / "a.wav"], FakeRecognizer(), None, wrong))
