"""`reasoning-cluster`: run the local cluster, ask it questions, prepare the default model."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from types import FrameType
from typing import TYPE_CHECKING

from cluster.client import LOCAL_URL, ProgressEvent, ReasoningAnswer, ReasoningClient
from cluster.config import ClusterConfig, load_config
from cluster.models import NAMED_MODELS, ensure_model, named_model, resolve_model_dir
from cluster.search import strategy_names
from cluster.tasks import task_names
from cluster.types import Effort

if TYPE_CHECKING:
    from cluster import evaluation
    from cluster.evaluation import Record


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
    up.add_argument(
        "--model", choices=sorted(NAMED_MODELS), help="serve this named model (default: the config's)"
    )
    up.add_argument("--grpc-port", type=int, help="gRPC port (default: the config's, 9000)")
    up.set_defaults(run=_up)

    ask = commands.add_parser("ask", help="ask the running cluster a question")
    ask.add_argument("question")
    ask.add_argument("--effort", choices=[e.value for e in Effort], default="medium")
    ask.add_argument("--task", choices=task_names(), default="general")
    ask.add_argument("--url", default=LOCAL_URL)
    ask.add_argument("--api-key", default="local")
    ask.add_argument("--json", action="store_true", help="print the result as JSON, without progress")
    ask.set_defaults(run=_ask)

    evaluate = commands.add_parser(
        "eval",
        help="run a dataset through the running cluster, grade it, write a table and a plot",
        description="Every item at each effort's own strategy, at each --strategies strategy, "
        "and best-of-N at an equal token budget as the baseline; writes results.jsonl, table.md "
        "and plot.png to --out.",
    )
    evaluate.add_argument("--dataset", choices=("gsm8k", "game24", "humaneval"), required=True)
    evaluate.add_argument(
        "--split",
        choices=("dev", "report"),
        help="humaneval only: dev (the even-numbered tasks, to develop on) or report (the "
        "odd-numbered ones, the default; never tune on them)",
    )
    evaluate.add_argument("--efforts", default="low,medium,high", help="comma-separated efforts")
    evaluate.add_argument(
        "--strategies",
        default="",
        help="comma-separated strategies to run at each effort besides its own: "
        + ", ".join(strategy_names()),
    )
    evaluate.add_argument(
        "--limit",
        type=_positive,
        help="a seeded sample of this many items (default: 50 for game24, all of the others)",
    )
    evaluate.add_argument(
        "--seed", type=int, default=0, help="seed of the sample and of the control (default 0)"
    )
    evaluate.add_argument("--data", help="a file in the shipped file's format instead of the shipped copy")
    evaluate.add_argument("--url", default=LOCAL_URL)
    evaluate.add_argument("--api-key", default="local")
    evaluate.add_argument("--concurrency", type=_positive, default=1, help="requests in flight (default 1)")
    evaluate.add_argument("--no-baseline", action="store_true", help="skip best-of-N at equal token budgets")
    evaluate.add_argument(
        "--no-control", action="store_true", help="game24: skip the model-free control of each point"
    )
    evaluate.add_argument(
        "--config",
        help="the cluster's config YAML: the control's budgets, the sandbox's limits "
        "(default: the shipped one)",
    )
    evaluate.add_argument(
        "--resume",
        action="store_true",
        help="keep the results.jsonl in --out and run only the items it does not hold",
    )
    evaluate.add_argument(
        "--out",
        help="directory for results.jsonl, table.md and plot.png (default: eval-results/DATASET[-SPLIT])",
    )
    evaluate.set_defaults(run=_eval)

    auth = commands.add_parser("auth", help="API keys for the config's auth section")
    auth_commands = auth.add_subparsers(required=True, metavar="ACTION")
    hash_key = auth_commands.add_parser(
        "hash-key",
        help="print a new API key and its api_key_sha256 (--stdin: hash a key read from stdin)",
        description="The config stores only api_key_sha256; give the key to the tenant and put "
        "the hash under auth.tenants.<name> or auth.ops.<name>.",
    )
    hash_key.add_argument("--stdin", action="store_true", help="hash the key on stdin instead of making one")
    hash_key.set_defaults(run=_hash_key)

    _add_config_commands(commands)

    model = commands.add_parser("prepare-model", help="verify and convert a named model once")
    model.add_argument("--model", choices=sorted(NAMED_MODELS), help="default: the default config's model")
    model.set_defaults(run=_prepare_model)

    simulate = commands.add_parser(
        "simulate", help="replay a request trace through the autoscaling policies (autoscale/)"
    )
    simulate.add_argument("--trace", required=True, help="trace JSON, e.g. autoscale/traces/bursty-high.json")
    simulate.add_argument("--out", help="directory for the comparison JSON and the replica-timeline PNG")
    simulate.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="policies simulated at once, one process each (default: the number of CPUs)",
    )
    simulate.set_defaults(run=_simulate)

    dashboards = commands.add_parser("dashboards", help="Grafana dashboards (monitoring/)")
    dashboard_commands = dashboards.add_subparsers(required=True, metavar="ACTION")
    push = dashboard_commands.add_parser(
        "push", help="create or update the Prometheus datasource and the dashboards in Grafana"
    )
    push.add_argument("--grafana-url", required=True, help="e.g. http://grafana:3000")
    credentials = push.add_mutually_exclusive_group()
    credentials.add_argument("--api-key", help="service-account token (default: $GRAFANA_API_KEY)")
    credentials.add_argument("--user", help="basic-auth user (with --password)")
    push.add_argument("--password", help="basic-auth password")
    push.add_argument(
        "--prometheus-url",
        default="http://prometheus:9090",
        help="the Prometheus that Grafana queries (default: http://prometheus:9090)",
    )
    push.add_argument(
        "--explorer-url",
        help="where browsers reach the gateway, for the dashboards' explorer links "
        "(default: http://127.0.0.1:8000)",
    )
    push.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP call (default 10)")
    push.set_defaults(run=_dashboards("monitoring.grafana:push_command"))
    export = dashboard_commands.add_parser("export", help="write the dashboards' JSON files")
    export.add_argument("directory", nargs="?", help="default: monitoring/dashboards")
    export.set_defaults(run=_dashboards("monitoring.dashboards:export_command"))
    return parser


def _add_config_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = commands.add_parser("config", help="the cluster config: show it merged, or the chart's schema")
    actions = config.add_subparsers(required=True, metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="print the config a file gives once merged over the packaged defaults and validated, "
        "as YAML with keys and passwords redacted",
    )
    show.add_argument("--config", help="cluster config YAML (default: the packaged defaults alone)")
    show.set_defaults(run=_config_show)
    schema = actions.add_parser(
        "schema", help="the Helm chart's values.schema.json, its `config` part generated from the model"
    )
    schema.add_argument("--write", action="store_true", help="write it into the chart instead of printing it")
    schema.set_defaults(run=_config_schema)


def _config_show(args: argparse.Namespace) -> int:
    import yaml

    from cluster.config import redacted_data

    try:
        config = load_config(args.config)
    except (ValueError, FileNotFoundError) as exc:  # pydantic.ValidationError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(yaml.safe_dump(redacted_data(config), sort_keys=False), end="")
    return 0


def _config_schema(args: argparse.Namespace) -> int:
    from cluster.config_schema import VALUES_SCHEMA, render_values_schema

    text = render_values_schema()
    if args.write:
        VALUES_SCHEMA.write_text(text)
        print(f"wrote {VALUES_SCHEMA}")
    else:
        print(text, end="")
    return 0


def _dashboards(path: str) -> Callable[[argparse.Namespace], int]:
    # Named by import path: `cluster` imports nothing from `monitoring` (as with the app builder).
    def run(args: argparse.Namespace) -> int:
        import importlib

        module, _, function = path.partition(":")
        return int(getattr(importlib.import_module(module), function)(args))

    return run


def _hash_key(args: argparse.Namespace) -> int:
    from cluster.auth import hash_key, new_key

    if args.stdin:
        key = sys.stdin.read().strip()
        if not key:
            print("error: no key on stdin", file=sys.stderr)
            return 1
        # The key itself is never echoed: only what the config needs.
        print(f"api_key_sha256: {hash_key(key)}")
        return 0
    key = new_key()
    print(f"api_key: {key}")
    print(f"api_key_sha256: {hash_key(key)}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    # Named by import path: `cluster` imports nothing from `autoscale`.
    import importlib

    run_cli = importlib.import_module("autoscale.sim.cli").run_cli
    return int(run_cli(args.trace, args.out, args.jobs))


def _up(args: argparse.Namespace) -> int:
    from cluster.local import LocalCluster

    config = load_config(args.config)
    if args.model:
        config = config.with_overrides({"model": {"name": args.model, "path": None}})
    # Convert the model here, once, before replicas start and look for it.
    resolve_model_dir(config.model)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    with LocalCluster(config, port=args.port, grpc_port=args.grpc_port) as cluster:
        print(f"reasoning-cluster is serving on {cluster.url} (Ctrl-C stops it)", flush=True)
        if cluster.grpc_target is not None:
            print(f"gRPC (reasoning.v1.Reasoning): {cluster.grpc_target}", flush=True)
        print(f"Prometheus metrics: {cluster.metrics_url}", flush=True)
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


def _eval(args: argparse.Namespace) -> int:
    from contextlib import ExitStack
    from pathlib import Path

    from cluster import evaluation

    efforts, strategies = _names(args.efforts), _names(args.strategies)
    problems = [f"unknown effort {e!r}" for e in efforts if e not in evaluation.EFFORT_ORDER]
    problems += [f"unknown strategy {s!r}" for s in strategies if s not in strategy_names()]
    if args.split is not None and args.dataset != "humaneval":
        problems.append("--split applies to humaneval only")
    if problems or not efforts:
        print(f"error: {'; '.join(problems) or 'no efforts given'}", file=sys.stderr)
        return 2
    which = args.split or evaluation.DEFAULT_SPLIT[args.dataset]
    limit = args.limit if args.limit is not None else evaluation.DEFAULT_LIMIT[args.dataset]
    loaded = evaluation.split(evaluation.load_items(args.dataset, args.data), which)
    items = evaluation.sample(loaded, limit, args.seed)
    config = load_config(args.config)
    out = Path(args.out or f"eval-results/{args.dataset}{f'-{which}' if which else ''}")
    name = f"{args.dataset} ({which} split)" if which else args.dataset
    client = ReasoningClient(args.url, args.api_key)
    try:
        with ExitStack() as stack:
            grader = stack.enter_context(evaluation.Grader(args.dataset, config.sandbox))
            control = None
            if args.dataset == "game24" and not args.no_control:
                control = stack.enter_context(_model_free_control(client, config, args.seed))
            outcome = evaluation.run_session(
                client,
                args.dataset,
                items,
                efforts,
                strategies,
                out=out,
                title=f"{name}: accuracy vs reasoning tokens ({len(items)} items, seed {args.seed})",
                resume=args.resume,
                baseline=not args.no_baseline,
                concurrency=args.concurrency,
                grader=grader,
                control=control,
                progress=_eval_progress(),
            )
    except evaluation.ControlMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
    if outcome.table is not None:
        print(outcome.table)
        print(f"results.jsonl, table.md and plot.png in {out}/")
    if outcome.interrupted:
        print(
            f"interrupted: {outcome.records} results kept in {out}/results.jsonl; the same command "
            "with --resume runs the rest",
            file=sys.stderr,
        )
        return 130
    return 0


def _model_free_control(
    client: ReasoningClient, config: ClusterConfig, seed: int
) -> evaluation.ModelFreeControl:
    """The control on the model the cluster serves: its tokenizer prices the random steps."""
    import httpx

    from cluster.engine.tokenizer import load_tokenizer
    from cluster.evaluation import ControlMismatch, ModelFreeControl

    try:
        served = client.served_model()
    except httpx.HTTPError as exc:
        raise ControlMismatch(
            f"cannot ask the cluster which model it serves ({exc}); is it running?"
        ) from exc
    if served != config.model.name:
        if served not in NAMED_MODELS:
            raise ControlMismatch(
                f"the cluster serves {served!r}, which is not a named model: pass the cluster's "
                "config with --config, so that the control counts tokens with its tokenizer"
            )
        config = config.with_overrides({"model": {"name": served, "path": None}})
    return ModelFreeControl(config, load_tokenizer(config.model), seed)


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {value}")
    return value


def _eval_progress() -> Callable[[Record], None]:
    """One stderr line per graded request."""
    done = 0

    def report(record: Record) -> None:
        nonlocal done
        done += 1
        outcome = "error" if record.error else "right" if record.correct else "wrong"
        kinds = (("baseline", record.baseline), ("control", record.control))
        tags = "".join(f" {tag}" for tag, on in kinds if on)
        print(
            f"[{done}] {record.effort} {record.strategy}{tags} #{record.index}: {outcome}, "
            f"{record.reasoning_tokens} tokens, {record.proposals} proposals, {record.latency_s:.1f} s",
            file=sys.stderr,
            flush=True,
        )

    return report


def _prepare_model(args: argparse.Namespace) -> int:
    print(ensure_model(named_model(args.model or load_config().model.name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
