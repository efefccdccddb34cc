"""``agentstream transcribe FILE...``: check the ASR model on your own audio.

Prints ``PATH<TAB>TRANSCRIPT`` per file (the whole file's final text), or with ``--json`` the
Transcript records the worker would publish. ``--rate 8000`` simulates the telephone path.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from analytics.asr.offline import FileResult


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("transcribe", help="transcribe WAV/FLAC files with the ASR engine")
    parser.add_argument("files", nargs="+", metavar="FILE", help="WAV or FLAC files, any rate")
    parser.add_argument(
        "--rate", type=int, help="resample to this rate first (8000 = the telephone path)"
    )
    parser.add_argument("--json", action="store_true", help="print the Transcript records")
    parser.add_argument(
        "--engine", choices=["whisper", "vosk"], help="ASR engine (AGENTSTREAM_WORKER_ASR_ENGINE)"
    )
    parser.add_argument("--model", help="model directory for the chosen engine")
    parser.add_argument(
        "--tier",
        choices=["fast", "accurate"],
        help="Whisper model tier (AGENTSTREAM_WORKER_WHISPER_TIER): fast = tiny.en, "
        "accurate = base (multilingual)",
    )
    parser.add_argument(
        "--language",
        help="what the speakers speak, for the accurate tier: a Whisper code (en, hi, ...) or "
        "auto (AGENTSTREAM_WORKER_WHISPER_LANGUAGE; the worker takes it per tenant from the "
        "rules file)",
    )
    parser.add_argument(
        "--words",
        action=argparse.BooleanOptionalAction,
        help="word timings on the --json records (AGENTSTREAM_WORKER_WHISPER_WORD_TIMESTAMPS, "
        "on by default)",
    )
    parser.add_argument("--no-redact", action="store_true", help="print text without redaction")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The worker stack (faust, torch, the recogniser) loads only when this command runs, so
    # `agentstream --help` and the other commands stay fast.
    from analytics.asr.base import AsrError
    from analytics.asr.engines import load_recognizer
    from analytics.asr.offline import transcribe_files
    from analytics.asr.vad import SileroVad
    from analytics.settings import WorkerSettings
    from analytics.worker import load_rules, make_redactor, service_config

    overrides: dict[str, object] = {}
    if args.engine:
        overrides["asr_engine"] = args.engine
    engine = args.engine or WorkerSettings().asr_engine
    if args.model:
        overrides["vosk_model_path" if engine == "vosk" else "whisper_model_path"] = args.model
    if args.tier:
        overrides["whisper_tier"] = args.tier
    if args.language:
        from analytics.asr.whisper import unsupported_languages

        if unsupported_languages([args.language]):
            print(f"error: Whisper knows no language {args.language!r}", file=sys.stderr)
            return 2
        overrides["whisper_language"] = args.language
    if args.words is not None:
        overrides["whisper_word_timestamps"] = args.words
    settings = WorkerSettings(**overrides)  # type: ignore[arg-type]
    redact = None if args.no_redact else make_redactor(load_rules(settings))
    code = 0
    try:
        recognizer = load_recognizer(settings)
        vad = SileroVad(model=settings.vad_model)
        # The worker's own path: each file is one call through the TranscriptionService.
        results = transcribe_files(
            args.files, recognizer, vad, service_config(settings), args.rate, redact
        )
        for path, result in zip(args.files, results, strict=True):
            code = max(code, _print(path, result, args.json))
    except AsrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


def _print(path: str, result: FileResult | Exception, as_json: bool) -> int:
    if isinstance(result, Exception):
        print(f"{path}\terror: {result}", file=sys.stderr)
        return 1
    if as_json:
        for transcript in result.transcripts:
            sys.stdout.write(transcript.to_bytes().decode() + "\n")
    else:
        sys.stdout.write(f"{path}\t{result.text}\n")
    sys.stdout.flush()
    return 0
