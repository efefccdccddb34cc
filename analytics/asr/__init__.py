"""The ASR stage: audio frames of a call -> VAD-cut utterances -> recognised Transcript records.

``base`` is the recogniser interface (imports no engine), ``engines`` picks an implementation
(``whisper``, ``vosk``), ``service`` is the per-call streaming loop of the worker, ``offline``
transcribes whole files, ``wer`` scores transcripts against references.

May import :mod:`schemas` and its own modules; no faust (the worker wires it into faust) and
nothing from :mod:`analytics.scoring` (redaction is handed in as a callable).
"""
