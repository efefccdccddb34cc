"""``agentstream simulate``: play calls against ingest as Exotel would, then ask Passthru.

With no input it plays the demo scenarios (``demo/scenarios.yaml``) against the local stack
started by ``agentstream up``, and shows each call's transcript, sentiment and decision.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.live import Live

from agentstream.sim.settings import SimulatorSettings

if TYPE_CHECKING:
    from agentstream.sim.calls import CallRun, SimOptions
    from agentstream.sim.results import TopicWatcher


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "simulate",
        help="play WAV/FLAC files or scenarios as Exotel calls, then call Passthru",
        description=__doc__,
    )
    parser.add_argument(
        "inputs",
        nargs="*",
        type=Path,
        help="WAV/FLAC files, directories, or scenario YAML (default: demo/scenarios.yaml)",
    )
    parser.add_argument("-n", "--calls", type=int, default=0, help="calls to make (cycles inputs)")
    parser.add_argument(
        "-c", "--concurrency", type=int, default=0, help="calls at once (default: all)"
    )
    parser.add_argument(
        "--speed", type=float, default=1.0, help="x real time; 0 = as fast as possible"
    )
    parser.add_argument("--mode", choices=("stream", "voicebot", "mixed"), default="stream")
    parser.add_argument(
        "--rate",
        choices=("8000", "16000", "both"),
        default="both",
        help="sample rates to rotate through (default both)",
    )
    parser.add_argument(
        "--channel",
        choices=("none", "plain", "band", "mulaw", "telephone"),
        default="none",
        help="degrade the audio as the phone network would (telephone: 8 kHz, 300-3400 Hz, "
        "G.711 mu-law)",
    )
    parser.add_argument("--ramp-ms", type=float, default=0.0, help="delay between call starts")
    parser.add_argument("--ingest", help="ingest base URL (AGENTSTREAM_SIMULATOR_INGEST_URL)")
    parser.add_argument("--routing", help="routing base URL (AGENTSTREAM_SIMULATOR_ROUTING_URL)")
    parser.add_argument(
        "--auth", help="KEY:TOKEN for Basic auth (AGENTSTREAM_SIMULATOR_BASIC_AUTH)"
    )
    parser.add_argument("--bootstrap", help="Kafka to read results from (KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--topic-prefix", help="topic namespace prefix")
    parser.add_argument("--tenant", default="default", help="tenant for plain audio files")
    parser.add_argument("--campaign", default="default", help="campaign for plain audio files")
    parser.add_argument("--no-passthru", action="store_true", help="do not call Passthru")
    parser.add_argument("--no-results", action="store_true", help="do not read Kafka topics")
    parser.add_argument(
        "--passthru-delay-ms", type=float, default=0.0, help="pause between stop and Passthru"
    )
    parser.add_argument("--settle", type=float, help="seconds to wait for decisions at the end")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--quiet", action="store_true", help="no live display")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 unless every expected decision is met"
    )
    parser.set_defaults(func=run)


def default_scenarios(configured: Path) -> Path:
    """The configured scenario file, else the repository's demo next to this package."""
    if configured.exists():
        return configured
    bundled = Path(__file__).resolve().parents[2] / "demo" / "scenarios.yaml"
    return bundled if bundled.exists() else configured


def _streamed(runs: list[CallRun]) -> list[str]:
    """Calls that reached the server (a refused call has nothing to wait for)."""
    return [run.call_sid for run in runs if run.started_at is not None]


def run(args: argparse.Namespace) -> int:
    # The simulator (scipy, aiohttp, aiokafka) loads only when the command runs, so that
    # `agentstream --help` stays fast.
    from agentstream.sim.calls import SimOptions, plan_calls, specs_from_inputs

    overrides: dict[str, Any] = {
        key: value
        for key, value in (
            ("ingest_url", args.ingest),
            ("routing_url", args.routing),
            ("basic_auth", args.auth),
            ("bootstrap_servers", args.bootstrap),
            ("topic_prefix", args.topic_prefix),
            ("settle_timeout_s", args.settle),
        )
        if value is not None
    }
    settings = SimulatorSettings(**overrides)
    inputs = list(args.inputs) or [default_scenarios(settings.scenarios)]
    try:
        specs = specs_from_inputs(inputs, args.tenant, args.campaign)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}")
        return 2
    missing = sorted({str(s.path) for s in specs if not s.path.exists()})
    if missing:
        print("error: audio not found: " + ", ".join(missing))
        return 2
    rates = (8000, 16000) if args.rate == "both" else (int(args.rate),)
    options = SimOptions.from_settings(
        settings,
        mode=args.mode,
        speed=args.speed,
        rates=rates,
        concurrency=args.concurrency,
        ramp_ms=args.ramp_ms,
        passthru=not args.no_passthru,
        passthru_delay_ms=args.passthru_delay_ms,
        channel=args.channel,
    )
    try:
        runs = plan_calls(specs, args.calls, options)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    return asyncio.run(_main(runs, options, settings, args))


async def _main(
    runs: list[CallRun],
    options: SimOptions,
    settings: SimulatorSettings,
    args: argparse.Namespace,
) -> int:
    from agentstream.sim.calls import Simulator  # loaded on run, as in run()
    from agentstream.sim.results import (
        TopicWatcher,
        aggregate,
        render_live,
        render_summary,
        summary_rows,
    )

    console = Console(stderr=args.json)
    if not console.is_terminal:
        console = Console(stderr=args.json, width=max(console.width, 180))
    watcher: TopicWatcher | None = None
    if not args.no_results:
        watcher = TopicWatcher(settings.bootstrap_servers, settings.topic_prefix)
        watcher.watch(run.call_sid for run in runs)
        await watcher.start()
        if watcher.error:
            console.print(f"[yellow]warning:[/] {watcher.error}; showing Passthru answers only")
            watcher = None
    simulator = Simulator(runs, options)
    show_live = not args.quiet and console.is_terminal
    try:
        if show_live:
            with Live(render_live(runs, watcher), console=console, refresh_per_second=4) as live:
                task = asyncio.ensure_future(simulator.run())
                while not task.done():
                    live.update(render_live(runs, watcher))
                    await asyncio.sleep(0.25)
                await task
                if watcher is not None:
                    live.update(render_live(runs, watcher))
                    await watcher.settle(settings.settle_timeout_s, _streamed(runs))
                live.update(render_live(runs, watcher))
        else:
            await simulator.run()
            if watcher is not None:
                await watcher.settle(settings.settle_timeout_s, _streamed(runs))
    finally:
        if watcher is not None:
            await watcher.stop()
    rows = summary_rows(runs, watcher)
    totals = aggregate(rows, watcher)
    if args.json:
        print(orjson.dumps({"calls": rows, "summary": totals}, option=orjson.OPT_INDENT_2).decode())
    else:
        console.print(render_summary(rows))
        for row in rows:
            if row["error"]:
                console.print(f"[red]{row['call']}[/] ({row['call_sid']}): {row['error']}")
        console.print(
            f"{totals['calls']} calls, {totals['failed']} failed, {totals['decided']} decided"
            + (
                f", {totals['matched']}/{totals['checked']} as expected"
                if totals["checked"]
                else ""
            )
        )
    if totals["failed"]:
        return 1
    if args.check and totals["matched"] < totals["checked"]:
        return 1
    return 0
