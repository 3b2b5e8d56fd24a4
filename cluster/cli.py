"""`reasoning-cluster`: run the local cluster, ask it questions, prepare the default model."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import asdict
from types import FrameType

from cluster.client import LOCAL_URL, ProgressEvent, ReasoningAnswer, ReasoningClient
from cluster.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # `up` narrates what it starts; `ask` prints only its own display.
    level = logging.INFO if args.run is _up else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.run(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reasoning-cluster", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="start the local cluster in the foreground (Ctrl-C stops it)")
    up.add_argument("--config", help="cluster config YAML (default: the shipped default)")
    up.add_argument("--port", type=int, help="HTTP port (default: the config's, 8000)")
    up.set_defaults(run=_up)

    ask = commands.add_parser("ask", help="ask the running cluster a question")
    ask.add_argument("question")
    ask.add_argument("--effort", choices=("low", "medium", "high"), default="medium")
    ask.add_argument("--task", choices=("general", "math", "game24"), default="general")
    ask.add_argument("--url", default=LOCAL_URL)
    ask.add_argument("--api-key", default="local")
    ask.add_argument("--json", action="store_true", help="print the result as JSON, without progress")
    ask.set_defaults(run=_ask)

    model = commands.add_parser("prepare-model", help="convert the embedded default model once")
    model.set_defaults(run=_prepare_model)
    return parser


def _up(args: argparse.Namespace) -> int:
    from cluster.local import LocalCluster

    config = load_config(args.config)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    with LocalCluster(config, port=args.port) as cluster:
        print(f"reasoning-cluster is serving on {cluster.url} (Ctrl-C stops it)", flush=True)
        stop.wait()
        print("stopping...", flush=True)
    return 0


def _ask(args: argparse.Namespace) -> int:
    client = ReasoningClient(args.url, args.api_key)
    request_id = client.new_request_id()
    outcome: dict[str, ReasoningAnswer | BaseException] = {}

    def _request() -> None:
        try:
            outcome["answer"] = client.ask(args.question, args.effort, task=args.task, request_id=request_id)
        except BaseException as exc:  # handed to the main thread, which reports it
            outcome["error"] = exc

    worker = threading.Thread(target=_request, daemon=True)
    worker.start()
    if not args.json:
        _show_progress(client, request_id, worker)
    worker.join()
    client.close()
    if "error" in outcome:
        print(f"error: {outcome['error']}", file=sys.stderr)
        return 1
    answer = outcome["answer"]
    assert isinstance(answer, ReasoningAnswer)
    print(json.dumps(asdict(answer), indent=2) if args.json else _format_answer(answer))
    return 0


def _show_progress(client: ReasoningClient, tree_id: str, worker: threading.Thread) -> None:
    started = time.monotonic()
    chains = tokens = 0
    after = "0"
    while worker.is_alive():
        _status, events = client.events(tree_id, after)
        for event in events:
            after = event.event_id
            chains, tokens = _tally(event, chains, tokens)
        line = f"thinking... {time.monotonic() - started:5.1f}s  chains {chains}  tokens {tokens}"
        print(f"\r{line}", end="", file=sys.stderr, flush=True)
        if not events:
            time.sleep(0.2)
    print("\r" + " " * 60 + "\r", end="", file=sys.stderr, flush=True)


def _tally(event: ProgressEvent, chains: int, tokens: int) -> tuple[int, int]:
    if event.kind != "chains":
        return chains, tokens
    return chains + int(event.data.get("count", 0)), tokens + int(event.data.get("tokens", 0))


def _format_answer(answer: ReasoningAnswer) -> str:
    return "\n".join(
        [
            f"Answer:   {answer.answer}",
            f"Summary:  {answer.summary}",
            f"Usage:    prompt {answer.prompt_tokens}, reasoning {answer.reasoning_tokens}, "
            f"cached {answer.cached_tokens} tokens; {answer.branches} chains ({answer.strategy}, "
            f"effort {answer.effort})",
            f"Time:     {answer.elapsed_s:.1f} s",
            f"Tree:     {answer.tree_id}",
        ]
    )


def _prepare_model(_: argparse.Namespace) -> int:
    from cluster.models import ensure_default_model

    print(ensure_default_model())
    return 0


if __name__ == "__main__":
    sys.exit(main())
