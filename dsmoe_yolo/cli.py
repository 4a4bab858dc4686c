"""The ``dsmoe`` command: DS-MoE tasks that Ultralytics' ``yolo`` has no verb for. Arguments are ``key=value``.

    dsmoe prompts   data=neu-det.yaml model=deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B [n=4 out=prompts.yaml device=cpu]
    dsmoe embed     data=neu-det.yaml [prompts=my.yaml model=auto out=neu-det_embeddings.pt device=cpu cache=True]
    dsmoe benchmark data=neu-det.yaml [models=dsmoe-yolov8n.yaml,yolov8n.yaml epochs=10 imgsz=640 seeds=0,1 jobs=2 ...]
    dsmoe bench-moe [batch=8 imgsz=640 runs=10 threads=2 models=n,s]
    dsmoe bench-models [scales=n,s runs=10 threads=1 onnx=True models=a.yaml,b.yaml nc=6]
    dsmoe app model=best.pt [port=8501 host=127.0.0.1]

`dsmoe COMMAND --help` describes one command.

Training, validation, prediction and export stay with the stock ``yolo`` command.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.names import ordered_names

__all__ = ("main", "parse_args")

COMMANDS = {
    "prompts": ("data", "model", "n", "out", "device", "max_new_tokens"),
    "embed": ("data", "prompts", "model", "out", "device", "cache"),
    "benchmark": (
        "data",
        "models",
        "epochs",
        "imgsz",
        "batch",
        "seed",
        "device",
        "workers",
        "project",
        "name",
        "fraction",
        "latency_runs",
        "optimizer",
        "lr0",
        "patience",
        "exist_ok",
        "onnx",
        "nbs",
        "seeds",
        "jobs",
        "val",
        "freeze_text",
    ),
    "bench-moe": ("batch", "imgsz", "runs", "threads", "models", "experts", "top_k"),
    "bench-models": ("scales", "runs", "threads", "onnx", "models", "nc"),
    "app": ("model", "port", "host"),
}
HELP_MODULES = {  # module whose docstring documents the command
    "prompts": "dsmoe_yolo.text.prompts",
    "embed": "dsmoe_yolo.text.embed",
    "benchmark": "dsmoe_yolo.benchmark",
    "bench-moe": "dsmoe_yolo.bench_moe",
    "bench-models": "dsmoe_yolo.bench_models",
    "app": "dsmoe_yolo.app",
}


def command_help(command: str) -> str:
    """Usage of one command: its line of the overview, its keys, and its module's description."""
    import importlib

    usage = next(
        (line.strip() for line in (__doc__ or "").splitlines() if line.strip().startswith(f"dsmoe {command} ")), ""
    )
    doc = importlib.import_module(HELP_MODULES[command]).__doc__ or ""
    return f"usage: {usage}\nkeys (key=value): {', '.join(COMMANDS[command])}\n\n{doc.strip()}\n"


def parse_args(argv: list[str], allowed: tuple[str, ...], command: str) -> dict:
    """Parse ``key=value`` tokens (values as YAML scalars), rejecting unknown keys with the valid ones listed."""
    out = {}
    for token in argv:
        if "=" not in token:
            raise ConfigError(f"dsmoe {command}: expected key=value, got '{token}'. Valid keys: {', '.join(allowed)}")
        key, value = token.split("=", 1)
        if key not in allowed:
            raise ConfigError(f"dsmoe {command}: unknown argument '{key}'. Valid keys: {', '.join(allowed)}")
        try:
            out[key] = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            out[key] = value
    return out


def _data(args: dict, command: str) -> dict:
    import dsmoe_yolo.plugin as plugin

    plugin.register()
    from ultralytics.data.utils import check_det_dataset

    if not args.get("data"):
        raise ConfigError(f"dsmoe {command}: data= is required, e.g. data=dsmoe-synth.yaml")
    return check_det_dataset(str(args["data"]))


def cmd_prompts(args: dict) -> Path:
    """Write a prompt file for the data's class names by asking an LLM."""
    from dsmoe_yolo.text.encoder import DEFAULT_LLM
    from dsmoe_yolo.text.prompts import generate_prompts, write_prompts

    data = _data(args, "prompts")
    names = ordered_names(data["names"])
    model = str(args.get("model") or DEFAULT_LLM)
    prompts, fallbacks = generate_prompts(
        names,
        model,
        n=int(args.get("n") or 4),
        device=args.get("device"),
        max_new_tokens=int(args.get("max_new_tokens") or 512),
    )
    out = Path(args.get("out") or f"{Path(str(data.get('yaml_file', 'data'))).stem}_prompts.yaml")
    write_prompts(out, prompts, model, fallbacks)
    print(
        f"dsmoe prompts: wrote {len(names)} classes to {out}{'; EDIT the template entries of ' + ', '.join(fallbacks) if fallbacks else ''}"
    )
    print(f"  review it, then add 'prompts: {out.resolve()}' to your data YAML")
    return out


def cmd_embed(args: dict) -> Path:
    """Embed the data's classes with a frozen encoder and save them (cached)."""
    from dsmoe_yolo.text.embed import embed_classes, resolve_prompts, save_embeddings_file
    from dsmoe_yolo.text.prompts import load_prompts

    data = _data(args, "embed")
    names = ordered_names(data["names"])
    if args.get("prompts"):
        prompts, source = load_prompts(args["prompts"]), str(args["prompts"])
    else:
        prompts, source = resolve_prompts(data, names, print)
    cache = args.get("cache", True) is not False
    emb, meta = embed_classes(
        names, prompts, model=str(args.get("model") or "auto"), device=args.get("device"), cache=cache, log=print
    )
    out = Path(args.get("out") or f"{Path(str(data.get('yaml_file', 'data'))).stem}_embeddings.pt")
    save_embeddings_file(out, emb, {**meta, "source": source})
    print(f"dsmoe embed: {tuple(emb.shape)} class embeddings from {meta['encoder']} saved to {out}")
    print(f"  use them with 'embeddings: {out.resolve()}' in the data YAML")
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dsmoe`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("help", "-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"dsmoe: unknown command '{command}'. Commands: {', '.join(COMMANDS)}\n{__doc__}", file=sys.stderr)
        return 2
    if any(a in ("-h", "--help", "help") for a in rest):
        print(command_help(command))
        return 0
    try:
        args = parse_args(rest, COMMANDS[command], command)
        if command == "prompts":
            cmd_prompts(args)
        elif command == "embed":
            cmd_embed(args)
        elif command == "benchmark":
            from dsmoe_yolo.benchmark import run_benchmark

            run_benchmark(**args)
        elif command == "bench-moe":
            from dsmoe_yolo.bench_moe import run as bench_moe

            bench_moe(**args)
        elif command == "bench-models":
            from dsmoe_yolo.bench_models import run as bench_models

            bench_models(**args)
        elif command == "app":
            from dsmoe_yolo.app import serve

            serve(**{k: str(v) for k, v in args.items() if v is not None})
    except ConfigError as e:
        print(f"dsmoe {command}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
