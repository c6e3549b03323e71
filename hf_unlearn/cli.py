"""`hf-unlearn` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hf-unlearn", description="Machine unlearning for Hugging Face models.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="Fine-tune (optional), unlearn and report; offline demo by default.")
    run_parser.add_argument("config", nargs="?", help="YAML run config; omit for the offline demo.")
    run_parser.add_argument("--output-dir", help="Override the config's output_dir.")
    run_parser.add_argument("--method", help="Override the config's method (e.g. ga, grad_diff, npo, simnpo).")
    commands.add_parser("methods", help="List the registered methods.")
    args = parser.parse_args(argv)

    from . import METHODS
    from .pipeline import load_run_config, run

    if args.command == "methods":
        for name, (config_cls, trainer_cls) in sorted(METHODS.items()):
            print(f"{name:<12}{trainer_cls.__name__:<22}{config_cls.__name__}")
        return 0
    try:
        config = load_run_config(args.config)
        if args.output_dir:
            config["output_dir"] = args.output_dir
        if args.method:
            METHODS[args.method]
            config["method"] = args.method
        run(config)
    except (ValueError, KeyError, FileNotFoundError) as error:
        print(f"hf-unlearn: error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
