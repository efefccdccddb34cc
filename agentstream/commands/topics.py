"""``agentstream topics create|list|describe``: manage the catalogue's topics."""

from __future__ import annotations

import argparse

import orjson
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentstream.stack.topics import create_topics, describe_topics, list_topics
from schemas.settings import KafkaFields
from schemas.topics import ALL_TOPICS, prefixed


class TopicsSettings(KafkaFields, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTSTREAM_", frozen=True, populate_by_name=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("topics", help="create, list or describe the Kafka topics")
    parser.add_argument("action", choices=("create", "list", "describe"))
    parser.add_argument("names", nargs="*", help="topics to describe (default: all of ours)")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--partitions", type=int, help="override partitions when creating")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = TopicsSettings(**({"bootstrap_servers": args.bootstrap} if args.bootstrap else {}))
    bootstrap = settings.bootstrap_servers
    if args.action == "create":
        created = create_topics(bootstrap, settings.topic_prefix, partitions=args.partitions)
        for name in created:
            print(f"created {name}")
        print(f"{len(created)} created, {len(ALL_TOPICS) - len(created)} already existed")
    elif args.action == "list":
        for name in list_topics(bootstrap):
            print(name)
    else:
        names = args.names or [prefixed(spec, settings.topic_prefix) for spec in ALL_TOPICS]
        for topic in describe_topics(bootstrap, names):
            parts = topic.get("partitions", [])
            print(orjson.dumps({"name": topic.get("name"), "partitions": len(parts)}).decode())
    return 0
