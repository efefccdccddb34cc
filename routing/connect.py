"""The Connect applet's answer: who to dial for an escalated call, and what the agent hears."""

from __future__ import annotations

from schemas.callbacks import (
    ConnectAnswer,
    ConnectDestination,
    ParallelRinging,
    StartCallPlayback,
)
from schemas.records import Decision
from schemas.rules import MAX_PARALLEL_RINGING, AgentGroup

PLAYBACK_LIMIT = 400


def summary(decision: Decision | None) -> str:
    """One or two sentences for the agent: why the bot handed this caller over."""
    if decision is None or decision.decision != "escalate":
        return "Call transferred from the voice bot."
    text = f"Escalated by the voice bot: {decision.reason}."
    if decision.evidence and decision.evidence[-1].text not in decision.reason:
        text += f" Caller said: {decision.evidence[-1].text}"
    text = " ".join(text.split())
    return text if len(text) <= PLAYBACK_LIMIT else text[: PLAYBACK_LIMIT - 1] + "…"


def connect_answer(group: AgentGroup, decision: Decision | None) -> ConnectAnswer:
    if group.trunk:
        destination = ConnectDestination(trunk=group.trunk)
    else:
        destination = ConnectDestination(numbers=list(group.numbers))
    parallel = None
    if group.parallel and destination.numbers and len(destination.numbers) > 1:
        parallel = ParallelRinging(
            activate=True,
            max_parallel_attempts=min(
                group.max_parallel_attempts, len(destination.numbers), MAX_PARALLEL_RINGING
            ),
        )
    playback = None
    if group.playback_to is not None:
        playback = StartCallPlayback(
            playback_to=group.playback_to, type="text", value=summary(decision)
        )
    return ConnectAnswer(
        fetch_after_attempt=False,
        destination=destination,
        outgoing_phone_number=group.caller_id,
        record=group.record,
        recording_channels=group.recording_channels,
        max_ringing_duration=group.max_ringing_s,
        max_conversation_duration=group.max_conversation_s,
        music_on_hold={"type": group.music_on_hold} if group.music_on_hold else None,
        start_call_playback=playback,
        parallel_ringing=parallel,
        custom_params=group.custom_params,
    )
