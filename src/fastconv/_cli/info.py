"""python -m fastconv info: show_config() as text."""

import json

import fastconv


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print the configuration as JSON")


def run(args):
    config = fastconv.show_config()
    if args.json:
        print(json.dumps(config, indent=2))
        return 0
    width = max(map(len, config))
    for key, value in config.items():
        if key == "blas":
            value = "; ".join(
                f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')}, "
                f"{b.get('num_threads')} threads) {b.get('filepath')}"
                for b in value
            ) or "none found"
        print(f"{key:<{width}}  {value}")
    return 0
