"""`hf-unlearn` command line. Every error is one line on stderr, `hf-unlearn: error: ...`, and exit status 2
(`--debug` shows the traceback instead)."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
import tempfile
import textwrap
import traceback
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SMOKE_ROWS = 8  # --max-steps evaluates the first rows of each split only
TOFU_LOCAL = "--tofu-path ../shared/data/tofu (a folder of TOFU's JSONL files)"
CONVENTIONS = ("leaderboard", "hf-unlearn")  # evaluation.metrics.CONVENTIONS (not imported: --help stays fast)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default after its help (none for a flag or an unset option); examples kept as written."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


EXAMPLES = {
    "hf-unlearn": """examples:
  hf-unlearn run                   # the offline demo: about a minute on a laptop CPU
  hf-unlearn run --help            # one subcommand's options""",
    "run": """examples:
  hf-unlearn run                   # the offline demo
  hf-unlearn run examples/configs/tofu_npo.yaml --beta 0.2 --max-steps 2

Any field of the method's config is a flag (`hf-unlearn methods npo` lists them) that overrides the config's
`unlearn` section, e.g. --learning-rate 1e-5 --num-train-epochs 3 --beta 0.2.""",
    "methods": """examples:
  hf-unlearn methods
  hf-unlearn methods npo           # NPO's own config fields and their defaults""",
    "eval": """examples:
  hf-unlearn eval --model hf-unlearn-output --suite qa     # on the offline demo's people
  hf-unlearn eval --model M --suite qa --forget f.jsonl --retain r.jsonl --holdout h.jsonl
  hf-unlearn eval --model M --tofu-path ../shared/data/tofu --gold-model GOLD""",
    "gold": """example:
  hf-unlearn gold --model BASE --tofu-path ../shared/data/tofu --output-dir gold-model""",
    "leaderboard": """example:
  hf-unlearn leaderboard runs/npo runs/grad_diff --output leaderboard.md""",
    "card": """example:
  hf-unlearn card hf-unlearn-output --license apache-2.0 --description 'All rows about one author'""",
    "push": """example:
  hf-unlearn push hf-unlearn-output your-name/model-unlearned --private""",
    "verify": """example:
  hf-unlearn verify your-name/model-unlearned --forget my_rows.jsonl --salt _unlearning_salt.txt""",
    "condense": """example:
  hf-unlearn condense --retain retain.safetensors --forget forget.safetensors --output condensed.safetensors""",
    "audit": """example:
  hf-unlearn audit --model unlearned --reference-model original --forget forget.pt --heldout heldout.pt""",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-unlearn", description="Machine unlearning for Hugging Face models. "
                                     "An error is one line on stderr and exit status 2; --debug shows its traceback.",
                                     epilog=EXAMPLES["hf-unlearn"], formatter_class=HelpFormatter)  # fmt: skip
    parser.add_argument("--debug", action="store_true", help="On an error, show the full traceback (before or after "
                        "the subcommand).")  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, help):
        return commands.add_parser(name, help=help, description=help, epilog=EXAMPLES[name],
                                   formatter_class=HelpFormatter)  # fmt: skip

    run_parser = command("run", "Fine-tune (optional), unlearn and report; offline demo by default.")
    run_parser.add_argument("config", nargs="?", help="YAML run config; omit for the offline demo.")
    run_parser.add_argument("--config", dest="config_option", metavar="CONFIG", help="The run config, as TRL's "
                            "command lines name it (`--config config.yaml --beta 0.2`); the same as the positional.")
    run_parser.add_argument("--output-dir", help="Override the config's output_dir.")
    run_parser.add_argument("--method", help="Override the config's method (e.g. ga, grad_diff, npo, simnpo).")
    run_parser.add_argument("--overwrite-output-dir", action="store_true", help="Replace a model already saved in "
                            "output_dir (refused otherwise; the config's `overwrite_output_dir: true` does the same).")
    run_parser.add_argument("--check", action="store_true", help="Only check the config, data, model and output_dir "
                            "(seconds, nothing trained or written) and print the plan; exit 0 when valid, 2 if not.")
    run_parser.add_argument("--max-steps", type=int, metavar="N", help="Smoke mode: cap every training phase "
                            "(fine-tune, gold model, unlearning) at N optimizer steps, and evaluate the first "
                            f"{SMOKE_ROWS} rows of each split.")  # fmt: skip
    methods = command("methods", "List the registered methods, or one method's config fields.")
    methods.add_argument("method", nargs="?", help="A method name: list its config's own fields and defaults.")

    eval_parser = command("eval", "Evaluate a model with the leaderboards' metrics.")
    eval_parser.add_argument("--model", required=True, help="Model folder or id to evaluate.")
    eval_parser.add_argument("--suite", default="tofu", choices=["tofu", "qa", "muse", "classifier", "mmubench"],
                             help="Which metrics: tofu (TOFU's splits), qa (the TOFU metrics on your question/answer "
                             "JSONL files, or on the offline demo's people without them), muse (MUSE-News: VerbMem, "
                             "KnowMem, PrivLeak), classifier, mmubench.")
    eval_parser.add_argument("--forget-split", default="forget10", help="TOFU forget split (forget01/05/10).")
    eval_parser.add_argument("--original-model", help="The model before unlearning: a column of its own (qa suite), "
                             "needed by the mmubench suite.")
    eval_parser.add_argument("--mmubench-data", help="mmubench suite: JSON with concept, train_image, unseen_images, "
                             "other_concepts ({name: [image paths]}) and optionally questions.")
    eval_parser.add_argument("--gold-model", help="The retain-only model: gives forget_quality and privleak.")
    eval_parser.add_argument("--reference-model", help="A reference model for the Reference MIA (e.g. the base).")
    eval_parser.add_argument("--tofu-path", help="Local folder of TOFU JSONL files (default: the Hub).")
    eval_parser.add_argument("--muse-path", help="muse suite: local folder of MUSE-News's files, e.g. "
                             "../shared/data/muse_news (default: the Hub, muse-bench/MUSE-News).")
    eval_parser.add_argument("--output", default="eval_results.json", help="Where to write the flat JSON.")
    eval_parser.add_argument("--max-new-tokens", type=int, help="Greedy generation length for ROUGE (default: 64; "
                             "muse suite: MUSE's own, 128 for VerbMem and 32 for KnowMem).")
    eval_parser.add_argument("--batch-size", type=int, help="Rows scored per forward pass (default: 32; muse suite: 8, "
                             "its texts are up to 2,048 tokens).")
    eval_parser.add_argument("--generation-batch-size", type=int, help="Questions answered per generate call "
                             "(tofu suite; default: --batch-size). Larger is faster per token and holds a larger KV "
                             "cache.")
    eval_parser.add_argument("--limit", type=int, help="Keep the first N rows of each split (quick checks only).")
    for split in ("forget", "retain", "test", "heldout"):
        qa = {"test": "", "heldout": "; qa suite: question/answer rows never trained on (the MIAs' non-members)"}
        qa = qa.get(split, "; qa suite: the same as question/answer rows")
        eval_parser.add_argument(f"--{split}", help=f"classifier suite: JSONL of the {split} rows (text + label){qa}.")
    eval_parser.add_argument("--gold-results", help="tofu, qa and muse suites: the gold model's eval_results.json from "
                             "an earlier `hf-unlearn eval --model GOLD` with the same suite, split, --limit and "
                             "--conventions; gives forget_quality and privleak without evaluating the gold again.")
    eval_parser.add_argument("--conventions", choices=CONVENTIONS, default="leaderboard", help="How extraction "
                             "strength, exact memorisation, Min-K, Min-K++ and ZLib count tokens: the leaderboards' "
                             "(open-unlearning's) or hf-unlearn's own (docs/evaluation.md).")
    eval_parser.add_argument("--gradnorm", action="store_true", help="tofu, qa and muse suites: add the GradNorm "
                             "attack (mia_gradnorm_auc; one backward pass per forget and held-out row or text).")
    eval_parser.add_argument("--roc-plot", help="Also draw the membership-inference ROC of each evaluated model into "
                             "this PNG file (tofu and qa suites).")

    gold = command("gold", "Train the retain-only (gold) model with the run's fine-tune recipe.")
    gold.add_argument("--model", required=True, help="The base model (before fine-tuning): an id or a local path.")
    gold.add_argument("--retain-split", default="retain90", help="TOFU retain split, or a JSONL file of rows.")
    gold.add_argument("--tofu-path", help="Local folder of TOFU JSONL files (default: the Hub).")
    gold.add_argument("--config", help="Run config whose `finetune` section is the recipe (default: the demo's).")
    gold.add_argument("--output-dir", default="gold-model", help="Where to save the gold model and tokenizer.")

    board = command("leaderboard", "Rank several runs' eval_results.json in one table.")
    board.add_argument("runs", nargs="+", help="Run folders, each with eval_results.json (and summary.json).")
    board.add_argument("--output", default="leaderboard.md", help="Markdown table to write.")
    board.add_argument("--csv", default="leaderboard.csv", help="CSV table to write.")

    card = command("card", "(Re)write README.md and unlearning_manifest.json from a run's outputs.")
    card.add_argument("output_dir", help="The unlearned model's folder (holding unlearning_manifest.json).")
    card.add_argument("--language", help="Card metadata: the model's language(s).")
    card.add_argument("--license", help="Card metadata: the license, e.g. apache-2.0.")
    card.add_argument("--tags", nargs="+", help="Card metadata: extra tags.")
    card.add_argument("--description", help="What was removed, in words (public; never the content itself).")

    push = command("push", "Push an unlearned model folder to the Hub (never its salt, checkpoints).")
    push.add_argument("output_dir", help="The unlearned model's folder.")
    push.add_argument("repo_id", help="The Hub repo, e.g. your-name/model-unlearned.")
    push.add_argument("--private", action="store_true", help="Create the repo private (if it does not exist).")
    push.add_argument("--revision", help="Branch to commit to (created if missing).")
    push.add_argument("--overwrite", action="store_true", help="Write over a repo whose card names another base model.")
    push.add_argument("--token", help="Hub token (default: HF_TOKEN or `hf auth login`); never printed.")

    verify = command("verify", "Check whether a model's card fingerprints your forget set.")
    verify.add_argument("model", help="A local model folder or a Hub repo id.")
    verify.add_argument("--forget", required=True, help="Your forget rows (.jsonl, .json, .csv or .parquet).")
    verify.add_argument("--salt", required=True, help="The salt file the unlearning run wrote (_unlearning_salt.txt).")
    verify.add_argument("--revision", help="Hub revision of the model (default: main).")

    condense = command("condense", "Blend: condense image retain rows before unlearning.")
    condense.add_argument("--retain", required=True, help="Retain image rows: a safetensors file with pixel_values "
                          "[N, C, H, W] and labels [N] (hf_unlearn.preparation.save_image_rows writes one).")
    condense.add_argument("--forget", required=True, help="Forget image rows, same format.")
    condense.add_argument("--output", required=True, help="Where to write the reduced retain rows (same format).")
    condense.add_argument("--images-per-class", type=int, default=10, help="k-means clusters per class.")
    condense.add_argument("--steps", type=int, default=16, help="SGD steps on the blending weights (paper: 12-20).")
    condense.add_argument("--batch-size", type=int, default=64, help="Clusters blended together.")
    condense.add_argument("--seed", type=int, default=0)

    audit = command("audit", "Audit an encoder's forgetting from its embeddings (Forgetting Score, "
                                "EMIA, alignment heatmaps; linear probe and CMIA with labels).")  # fmt: skip
    audit.add_argument("--model", required=True, help="The audited encoder: a folder (ContrastiveEncoder, CLIPModel or "
                       "a text encoder loadable with AutoModel).")  # fmt: skip
    audit.add_argument("--reference-model", help="The original encoder before unlearning (gives the Forgetting Score).")
    audit.add_argument("--retrained-model", help="An encoder retrained without the forget set (its gap matrix too).")
    for split in ("forget", "heldout", "retain"):
        audit.add_argument(f"--{split}", required=split != "retain", help=f"The {split} examples: a .pt dict "
                           "(pixel_values [N, C, H, W] in [0, 1], labels) or .jsonl text/label rows.")  # fmt: skip
    audit.add_argument("--augmentation", default="simclr", help="Image recipe (simclr, digits, none) or 'word_dropout' "
                       "for text (the default for .jsonl data).")  # fmt: skip
    audit.add_argument("--num-views", type=int, default=10, help="Views per example (EMIA's default: 10).")
    audit.add_argument("--emia-threshold", choices=["accuracy", "logistic"], default="accuracy",
                       help="EMIA's member/non-member threshold: the balanced-accuracy argmax (EncoderMI's rule) or "
                            "a 1-D logistic regression's decision point (steadier when the two overlap a lot).")
    audit.add_argument("--output-dir", default="audit", help="Where audit.json and the heatmaps go.")
    for name in ("run", "eval", "gold"):
        commands.choices[name].add_argument("--quiet", action="store_true", help="No progress bars or training logs: "
                                            "only the results and where they were written.")  # fmt: skip
    for subparser in commands.choices.values():  # `--debug` after the subcommand too; SUPPRESS keeps one before it
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _config_flag_tokens(argv: list[str], parser) -> tuple[list[str], list[str]]:
    """Split `hf-unlearn run` arguments into its own and the method-config flags (`--beta 0.2`), so that a flag's value
    is never read as the config file: an unknown `--name` takes the next token as its value unless that is an option
    or a YAML file (a bare boolean flag, e.g. `--precompute-reference config.yaml`)."""
    if "run" not in argv:
        return argv, []
    start = argv.index("run") + 1
    run_parser = next(a for a in parser._actions if a.dest == "command").choices["run"]
    known = {option for action in run_parser._actions for option in action.option_strings}
    own, flags, tokens = argv[:start], [], iter(argv[start:])
    for token in tokens:
        if not token.startswith("--") or token.split("=", 1)[0] in known:
            own.append(token)
            continue
        flags.append(token)
        if "=" not in token:
            value = next(tokens, None)
            if value is not None and (value.startswith("-") or value.endswith((".yaml", ".yml"))):
                own.append(value)
            elif value is not None:
                flags.append(value)
    return own, flags


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv, flags = _config_flag_tokens(list(sys.argv[1:] if argv is None else argv), parser)
    args = parser.parse_args(argv)
    args.config_flags = flags
    handlers = {"run": _run, "methods": _methods, "eval": _evaluate, "gold": _gold, "leaderboard": _leaderboard,
                "card": _card, "push": _push, "verify": _verify, "condense": _condense, "audit": _audit}  # fmt: skip
    try:
        return handlers[args.command](args)
    except Exception as error:
        if args.debug:
            raise
        print(f"hf-unlearn: error: {_message(error, args)}", file=sys.stderr)
        return 2


DOING = {"run": "run the pipeline", "eval": "evaluate {model}", "gold": "train the gold model from {model}",
         "leaderboard": "build the leaderboard", "card": "write the card of {output_dir}",
         "push": "push {output_dir} to {repo_id}", "verify": "verify {model}", "condense": "condense {retain}",
         "audit": "audit {model}", "methods": "list the methods"}  # fmt: skip


def _message(error: Exception, args) -> str:
    """One line: the package's own errors (a `raise` in its code) as they are; any other (a library's, or a slip such
    as a KeyError from a subscript) after what the command was doing, with the error's type."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else error
    text = " ".join(str(text).split())
    frames = traceback.extract_tb(error.__traceback__)
    own = frames and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE)
    if not (own and (frames[-1].line or "").lstrip().startswith("raise")):
        text = f"could not {DOING[args.command].format(**vars(args))} ({type(error).__name__}: {text or 'no message'})"
    return text or type(error).__name__


def _need_file(path: str | None, option: str, what: str) -> None:
    """Fail at once on an input file that is missing (`what`: what it should hold)."""
    if path is not None and not Path(path).is_file():
        problem = "is a folder" if Path(path).is_dir() else "does not exist"
        raise FileNotFoundError(f"{option} {path} {problem}: pass {what}.")


def _output_file(path: str, option: str) -> None:
    """Fail at once on an output file that cannot be written: a folder, or in a folder that does not exist."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder: pass a file path, e.g. {path / 'results.json'}.")
    if not path.absolute().parent.is_dir():
        raise FileNotFoundError(f"{option} {path}: its folder {path.absolute().parent} does not exist; create it "
                                "first, or pass another path.")  # fmt: skip


def _output_folder(path: str, option: str) -> None:
    if Path(path).is_file():
        raise ValueError(f"{option} {path} is a file: pass a folder path (created if missing).")


def _read_json(path: Path):
    """A JSON file's content; a damaged file is an error naming it."""
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}): restore it, or delete it and write it again.") from None


def _progress(args) -> None:
    """Bars on a terminal and in a log, or none with --quiet."""
    from .progress import show_progress

    show_progress(not args.quiet)


def config_flags(tokens: list[str], config_cls) -> dict:
    """`--beta 0.2 --learning-rate 1e-5` → `{"beta": 0.2, "learning_rate": 1e-5}`: fields of the method's config, their
    values converted as `HfArgumentParser` converts them (TRL's command lines)."""
    from transformers import HfArgumentParser

    names = {f.name for f in dataclasses.fields(config_cls) if f.init}
    given = []
    for token in tokens:
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0].replace("-", "_")
            if name not in names:
                close = difflib.get_close_matches(name, sorted(names), n=1)
                hint = f"did you mean --{close[0].replace('_', '-')}? " if close else ""
                raise ValueError(f"{token.split('=')[0]} is not an option of `hf-unlearn run` nor a field of "
                                 f"{config_cls.__name__}: {hint}`hf-unlearn methods NAME` lists a method's fields.")
            given.append(name)
        elif not given:
            raise ValueError(f"{token!r}: unexpected argument (a run takes one config file; flags start with --).")
    reserved = sorted(set(given) & {"output_dir", "seed", "overwrite_output_dir"})
    if reserved:
        flag = "--" + reserved[0].replace("_", "-")
        raise ValueError(f"{flag} is a run setting: pass it as `hf-unlearn run {flag}` or set `{reserved[0]}:` at the "
                         "top level of the run config.")  # fmt: skip
    try:
        namespace, rest = HfArgumentParser(config_cls, exit_on_error=False).parse_known_args(tokens)
    except argparse.ArgumentError as error:
        raise ValueError(f"{error}: give a value of the field's type, e.g. --beta 0.2.") from None
    if rest:
        raise ValueError(f"could not read {' '.join(rest)}: give each field one value, e.g. --beta 0.2.")
    return {name: getattr(namespace, name) for name in given}


def _run(args) -> int:
    from .pipeline import METHODS, check_run_config, load_run_config, run

    _progress(args)
    if args.config_option:
        if args.config and args.config != args.config_option:
            raise ValueError(f"two run configs: {args.config} and --config {args.config_option}; pass one.")
        args.config = args.config_option
    config = load_run_config(args.config)
    if args.output_dir:
        config["output_dir"] = args.output_dir
    if args.method:
        config["method"] = args.method
    if args.config_flags:
        config_cls = METHODS[config["method"]][0] if config["method"] in METHODS else None
        if config_cls is None:
            raise KeyError(f"method {config['method']!r} is unknown: `hf-unlearn methods` lists them.")
        config["unlearn"] = {**(config.get("unlearn") or {}), **config_flags(args.config_flags, config_cls)}
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise ValueError(f"--max-steps {args.max_steps}: give a number of optimizer steps of at least 1.")
        for phase in ("finetune", "unlearn"):
            if phase == "unlearn" or config.get(phase):
                config[phase] = {**(config.get(phase) or {}), "max_steps": args.max_steps}
        if config["evaluate"]:  # and the evaluation on the first rows of each split
            config["evaluate"] = {"limit": SMOKE_ROWS, **(config["evaluate"] if isinstance(config["evaluate"], dict)
                                                          else {})}  # fmt: skip
    if args.overwrite_output_dir or (args.config is None and _holds_demo_output(config["output_dir"])):
        config["overwrite_output_dir"] = True  # the demo replaces its own earlier output, never a user's model
    plan = check_run_config(config, source=args.config)
    if args.check:
        print(f"hf-unlearn: {args.config or 'the offline demo'} is a valid run (checked; nothing trained or written):")
        print(plan.describe())
        return 0
    run(plan, log=print if not args.quiet else _last_words)
    return 0


def _last_words(message: str) -> None:
    """--quiet: only the run's closing lines (what it wrote, where)."""
    if message.startswith("done in "):
        print(message)


def _holds_demo_output(folder: str) -> bool:
    """Whether `folder` holds an earlier run of the offline demo (its summary names the demo's built-in model)."""
    summary = Path(folder) / "summary.json"
    return summary.is_file() and '"model": "tiny Llama built from a config' in summary.read_text(errors="replace")


def _methods(args) -> int:
    from . import METHODS

    if args.method:
        return _method_fields(args.method, METHODS)
    rows = [(name, trainer.__name__, config.__name__) for name, (config, trainer) in sorted(METHODS.items())]
    widths = [max(len(row[i]) for row in rows) + 2 for i in range(2)]
    for name, trainer, config in rows:
        print(f"{name:<{widths[0]}}{trainer:<{widths[1]}}{config}")
    return 0


def _method_fields(name: str, methods) -> int:
    """A method's own config fields (beyond `TrainingArguments`) with their defaults and help."""
    from transformers import TrainingArguments

    if name not in methods:
        close = difflib.get_close_matches(name, sorted(methods), n=1)
        raise KeyError(f"method {name!r} is unknown: {f'did you mean {close[0]!r}? ' if close else ''}"
                       "`hf-unlearn methods` lists them.")  # fmt: skip
    config_cls, trainer_cls = methods[name]
    common = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
    print(f"{name}: {trainer_cls.__name__} with {config_cls.__name__}. Its own fields and changed defaults (flags of "
          "`hf-unlearn run`, keys of a run config's `unlearn` section); every TrainingArguments field works too:")
    for item in dataclasses.fields(config_cls):
        own = item.name not in common or common[item.name] != item.default
        if item.init and own and item.name not in ("output_dir", "overwrite_output_dir", "remove_unused_columns"):
            flag = "--" + item.name.replace("_", "-")
            text = f"{item.metadata.get('help', '')} (default: {item.default!r})"
            print(textwrap.fill(text, 116, initial_indent=f"  {flag:<26}", subsequent_indent=" " * 28))
    return 0


def _leaderboard(args) -> int:
    from .leaderboard import leaderboard

    _output_file(args.output, "--output")
    _output_file(args.csv, "--csv")
    for file in (Path(run) / name for run in args.runs for name in ("eval_results.json", "summary.json")):
        if file.is_file():
            _read_json(file)  # a damaged file is named
    markdown, table = leaderboard(args.runs)
    print(markdown)
    Path(args.output).write_text(markdown)
    Path(args.csv).write_text(table)
    return 0


def _card(args) -> int:
    from .hub import write_card_files
    from .manifest import MANIFEST_NAME, read_manifest
    from .plots import loss_curves

    folder = Path(args.output_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: pass the unlearned model's folder (with {MANIFEST_NAME}).")
    manifest = read_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(
            f"{folder / MANIFEST_NAME} does not exist. It is written by an UnlearningTrainer's save_model(), which "
            "alone holds the forget set needed for the fingerprint: save the model with one (or `hf-unlearn run`)."
        )
    current = manifest["requests"][0]
    results = folder / "eval_results.json"
    if results.is_file():  # `hf-unlearn eval --output <folder>/eval_results.json`, run after the unlearning
        from .evaluation.report import flat_numbers

        current.setdefault("metrics", {})["unlearned"] = flat_numbers(_read_json(results))  # not its settings
    state = folder / "trainer_state.json"
    if not current.get("curves") and state.is_file():
        current["curves"] = loss_curves(_read_json(state).get("log_history", []))
    card = manifest.setdefault("card", {})
    for key in ("language", "license", "tags"):
        if getattr(args, key) is not None:
            card[key] = getattr(args, key)
    if args.description is not None:
        current["description"] = args.description
    if current.get("kind") == "preparation":  # a Ready2Unlearn model: nothing removed yet, its own card
        from .manifest import write_manifest
        from .preparation.ready2unlearn import render_prepared_card

        write_manifest(folder, manifest)
        render_prepared_card(manifest).save(folder / "README.md")
    else:
        write_card_files(folder, manifest)
    print(f"wrote {folder / 'README.md'} and {folder / MANIFEST_NAME} (request {current['request']}, "
          f"{len(manifest['requests'])} in the lineage)")  # fmt: skip
    return 0


def _push(args) -> int:
    from huggingface_hub.utils import logging as hub_logging

    from .hub import push_folder

    hub_logging.set_verbosity_error()  # the client's retry notes: the outcome is one line, success or PushError
    info = push_folder(args.output_dir, args.repo_id, token=args.token, private=args.private or None,
                       revision=args.revision, overwrite=args.overwrite)  # fmt: skip
    print(f"pushed {args.output_dir} to {args.repo_id}: {getattr(info, 'commit_url', info)}")
    return 0


def _verify(args) -> int:
    from .hub import verify
    from .manifest import is_hub_id

    if not Path(args.model).exists() and not is_hub_id(args.model):
        raise FileNotFoundError(f"model {args.model} does not exist: pass the unlearned model's folder or Hub repo id.")
    _need_file(args.forget, "--forget", "your forget rows (.jsonl, .json, .csv or .parquet)")
    _need_file(args.salt, "--salt", "the _unlearning_salt.txt the unlearning run wrote")
    manifest, request = verify(args.model, args.forget, args.salt, revision=args.revision)
    if request is None:
        count = len(manifest.get("requests", []))
        print(f"NO MATCH: none of the {count} deletion request(s) in {args.model}'s lineage has the fingerprint of "
              f"these rows with this salt (a different set, an edited row, or another run's salt).")  # fmt: skip
        return 1
    fingerprint = request["fingerprint"]
    print(f"MATCH: {args.model} served your deletion request: request {request['request']} of "
          f"{len(manifest['requests'])}, unlearned on {request.get('date', 'an unrecorded date')} with "
          f"{request.get('method_name', request['method'])}, {fingerprint['num_examples']} examples, "
          f"fingerprint {fingerprint['hmac_sha256']}.")  # fmt: skip
    return 0


def _load_examples(path: str) -> tuple[object, list[int] | None]:
    """Examples and labels from a .pt file (images) or a .jsonl file (texts)."""
    import torch

    from .data import read_jsonl

    if path.endswith(".pt"):
        data = torch.load(path)
        if not isinstance(data, dict) or "pixel_values" not in data:
            raise ValueError(f"{path} must hold a dict with 'pixel_values' [N, C, H, W] (and optional 'labels').")
        labels = data.get("labels")
        return torch.as_tensor(data["pixel_values"]).float(), (None if labels is None else list(map(int, labels)))
    if path.endswith(".jsonl"):
        rows = read_jsonl(path)
        if not rows or "text" not in rows[0]:
            raise ValueError(f"{path}: rows need a 'text' column (and an optional 'label').")
        labels = [int(row["label"]) for row in rows] if "label" in rows[0] else None
        return [row["text"] for row in rows], labels
    raise ValueError(f"{path}: use a .pt file of images or a .jsonl file of texts.")


def _audit(args) -> int:
    from .sources import check_model_source, load_pretrained

    for name in ("forget", "heldout", "retain"):
        _need_file(getattr(args, name), f"--{name}", "a .pt dict of images or a .jsonl file of text rows")
    for option in ("model", "reference_model", "retrained_model"):
        if getattr(args, option):
            check_model_source(getattr(args, option), "--" + option.replace("_", "-"))
    _output_folder(args.output_dir, "--output-dir")
    import torch
    from transformers import AutoModel

    from .augmentations import TextViews, image_augmentation
    from .encoders import image_embeddings, sentence_embeddings
    from .evaluation.audit import audit_encoder

    examples = {name: _load_examples(getattr(args, name)) if getattr(args, name) else (None, None)
                for name in ("forget", "heldout", "retain")}  # fmt: skip
    texts = isinstance(examples["forget"][0], list)

    def embedder(name):
        if name is None:
            return None
        model = load_pretrained(AutoModel, name).eval()
        if texts:
            from transformers import AutoTokenizer

            tokenizer = load_pretrained(AutoTokenizer, name, "tokenizer")
            return lambda batch: sentence_embeddings(model, tokenizer, batch)
        return lambda batch: image_embeddings(model, batch)

    if texts:
        augment = TextViews(0.1) if args.augmentation in ("word_dropout", "simclr") else None
    else:
        augment = image_augmentation(args.augmentation, tuple(examples["forget"][0].shape[-2:]))
    labels = {name: value[1] for name, value in examples.items()}
    with_labels = all(labels[name] is not None for name in labels) and examples["retain"][0] is not None
    with torch.no_grad():
        result = audit_encoder(
            embedder(args.model), examples["forget"][0], examples["heldout"][0],
            reference_embed_fn=embedder(args.reference_model), retrained_embed_fn=embedder(args.retrained_model),
            augment=augment, num_views=args.num_views, retain_examples=examples["retain"][0],
            labels=labels if with_labels else None, output_dir=args.output_dir, emia_threshold=args.emia_threshold,
        )  # fmt: skip
    interval = result["forgetting_score_ci"]
    score = result["forgetting_score"]
    print("Forgetting Score: " + (f"{score:.3f} (95% interval {interval[0]:.3f} to {interval[1]:.3f})"
                                  if interval else f"n/a ({result['missing'].get('forgetting_score')})"))  # fmt: skip
    print("EMIA: " + (f"{result['emia']:.1f}% of forget examples judged non-members" if result["emia"] is not None
                      else f"n/a ({result['missing'].get('emia')})"))  # fmt: skip
    for key in ("retain_accuracy", "test_accuracy", "forget_accuracy", "cmia"):
        if key in result:
            print(f"{key}: {result[key]:.1f}%")
    print(f"written to {args.output_dir}: audit.json, " + ", ".join(f"{n}.png" for n in result["plots"]))
    return 0


def _gold(args) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .data import read_jsonl
    from .pipeline import check_finetune, finetune, load_run_config, tofu_split
    from .sources import check_model_source, load_pretrained

    check_model_source(args.model, "--model")
    _output_folder(args.output_dir, "--output-dir")
    recipe = load_run_config(args.config).get("finetune") or load_run_config(None)["finetune"]
    check_finetune(recipe, at=f"{args.config}: " if args.config else "")
    if args.retain_split.endswith(".jsonl"):
        rows = read_jsonl(args.retain_split)
    else:
        rows = [dict(row) for row in tofu_split(args.retain_split, args.tofu_path, TOFU_LOCAL)]
    tokenizer = load_pretrained(AutoTokenizer, args.model, "tokenizer")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_pretrained(AutoModelForCausalLM, args.model)
    print(f"training the gold model on {len(rows)} retain rows with {recipe}")
    with tempfile.TemporaryDirectory() as scratch:
        seconds = finetune(model, tokenizer, rows, scratch, name="gold model", **recipe)
    model.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    print(f"gold model written to {args.output_dir} ({seconds:.1f} s)")
    return 0


def _condense(args) -> int:
    import time

    from .preparation import blend_condense, load_image_rows, save_image_rows

    _need_file(args.retain, "--retain", "a safetensors file of image rows (save_image_rows)")
    _need_file(args.forget, "--forget", "a safetensors file of image rows (save_image_rows)")
    _output_file(args.output, "--output")
    retain, forget = load_image_rows(args.retain), load_image_rows(args.forget)
    start = time.perf_counter()
    rows, clusters = blend_condense(retain, forget, images_per_class=args.images_per_class, steps=args.steps,
                                    batch_size=args.batch_size, seed=args.seed, return_clusters=True)  # fmt: skip
    seconds = time.perf_counter() - start
    save_image_rows(rows, args.output)
    blended = sum(not c.kept for c in clusters)
    print(f"condensed {len(retain)} retain rows to {len(rows)} ({len(rows) - blended} kept from clusters holding "
          f"forget rows, {blended} blended) in {seconds:.2f} s; wrote {args.output}")  # fmt: skip
    return 0


def _evaluate(args) -> int:
    from .sources import check_model_source

    _output_file(args.output, "--output")
    for option in ("model", "gold_model", "reference_model", "original_model"):
        if getattr(args, option):
            check_model_source(getattr(args, option), "--" + option.replace("_", "-"))
    if args.suite == "classifier":
        return _evaluate_classifier(args)
    if args.suite == "mmubench":
        return _evaluate_mmubench(args)
    if args.roc_plot:
        _output_file(args.roc_plot, "--roc-plot")
    _progress(args)
    if args.suite == "qa":
        return _evaluate_qa(args)
    if args.suite == "muse":
        return _evaluate_muse(args)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .evaluation import evaluate_tofu
    from .evaluation.tofu import score_gold
    from .pipeline import tofu_split
    from .progress import phase
    from .sources import load_pretrained

    tofu_split(args.forget_split, args.tofu_path, TOFU_LOCAL)  # the data is there, before any model loads

    def load(name):
        return load_pretrained(AutoModelForCausalLM, name)

    tokenizer = load_pretrained(AutoTokenizer, args.model, "tokenizer")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    options = {"forget_split": args.forget_split, "path": args.tofu_path, "max_new_tokens": args.max_new_tokens or 64,
               "batch_size": args.batch_size or 32, "limit": args.limit, "gradnorm": args.gradnorm,
               "generation_batch_size": args.generation_batch_size, "conventions": args.conventions}  # fmt: skip
    settings = {"suite": "tofu", "forget_split": args.forget_split, "limit": args.limit,
                "conventions": args.conventions}  # fmt: skip
    columns, gold_args = {}, {}
    reference = load(args.reference_model) if args.reference_model else None
    if args.gold_results:
        columns["gold"] = _stored_gold(args, settings)
    elif args.gold_model:
        with phase("evaluate gold"):
            columns["gold"] = evaluate_tofu(load(args.gold_model), tokenizer, reference_model=reference, **options)
    if columns:
        gold_args = score_gold(columns["gold"])
    with phase("evaluate model"):
        results = evaluate_tofu(load(args.model), tokenizer, reference_model=reference, **gold_args, **options)
    columns = {"model": results, **columns}
    return _write_evaluation(args, columns, settings=settings)


def _stored_gold(args, settings: dict) -> dict:
    """The gold model's results from `--gold-results` (an earlier `hf-unlearn eval` of it), checked to have been
    computed with this evaluation's settings, ready for `score_gold`."""
    what = "the gold model's eval_results.json, written by `hf-unlearn eval --model GOLD --output FILE`"
    _need_file(args.gold_results, "--gold-results", what)
    if args.gold_model:
        raise ValueError("--gold-model and --gold-results both give the gold model: pass one (--gold-results reuses "
                         "its stored evaluation; --gold-model evaluates it again).")  # fmt: skip
    stored = _read_json(Path(args.gold_results))
    if not isinstance(stored, dict) or not isinstance(stored.get("evaluation"), dict):
        raise ValueError(f"--gold-results {args.gold_results} holds no 'evaluation' settings: it is not {what} (this "
                         f"version writes them); evaluate the gold model again with --output {args.gold_results}.")
    theirs = stored["evaluation"]
    differ = [key for key in settings if theirs.get(key) != settings[key]]
    if differ:
        raise ValueError(f"--gold-results {args.gold_results} was evaluated with "
                         f"{', '.join(f'{k}={theirs.get(k)!r}' for k in differ)}, this evaluation uses "
                         f"{', '.join(f'{k}={settings[k]!r}' for k in differ)}: the gold and the model must be scored "
                         "alike; evaluate the gold model again with these options, or pass its options here.")
    stored["missing"] = {}
    if settings["suite"] != "muse" and "forget_truth_ratios" not in stored:  # the gold's rows had no wrong answers
        stored["forget_truth_ratios"] = [float("nan")]
        stored["missing"]["forget_quality"] = f"--gold-results {args.gold_results} holds no forget_truth_ratios"
    return stored


def _write_evaluation(args, columns: dict, rows=None, settings: dict | None = None) -> int:
    """Print the columns side by side; write the evaluated model's numbers (and the ROC plot when asked). With the
    suite's `settings`, the file also holds them and the per-question forget truth ratios, so that it can serve as a
    later evaluation's `--gold-results`."""
    import json

    from .evaluation.report import TOFU_ROWS, flat_numbers, format_table
    from .plots import plot_mia_roc

    print(format_table(columns, rows or TOFU_ROWS))
    stored = flat_numbers(columns["model"])
    if settings is not None:
        if "forget_truth_ratios" in columns["model"]:
            stored["forget_truth_ratios"] = columns["model"]["forget_truth_ratios"]
        stored["evaluation"] = settings
    with open(args.output, "w") as handle:
        json.dump(stored, handle, indent=2)
    written = [args.output]
    if args.roc_plot and plot_mia_roc({name: result.get("mia_roc") or {} for name, result in columns.items()},
                                      args.roc_plot):  # fmt: skip
        written.append(args.roc_plot)
    print(f"written to {' and '.join(written)}")
    return 0


def _evaluate_qa(args) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .evaluation import evaluate_qa_suite
    from .evaluation.tofu import score_gold
    from .progress import phase
    from .sources import load_pretrained

    forget, retain, holdout = _qa_rows(args)
    tokenizer = load_pretrained(AutoTokenizer, args.model, "tokenizer")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    options = {"max_new_tokens": args.max_new_tokens or 64, "batch_size": args.batch_size or 32,
               "gradnorm": args.gradnorm, "generation_batch_size": args.generation_batch_size,
               "conventions": args.conventions}  # fmt: skip
    settings = {"suite": "qa", "forget_rows": len(forget), "limit": args.limit, "conventions": args.conventions}

    reference = load_pretrained(AutoModelForCausalLM, args.reference_model) if args.reference_model else None

    def suite(name, model_name, **gold):
        with phase(f"evaluate {name}"):
            model = load_pretrained(AutoModelForCausalLM, model_name)
            return evaluate_qa_suite(model, tokenizer, forget, holdout, {"retain": retain}, reference_model=reference,
                                     **gold, **options)  # fmt: skip

    columns, gold = {}, {}
    if args.gold_results or args.gold_model:
        columns["gold"] = _stored_gold(args, settings) if args.gold_results else suite("gold", args.gold_model)
        gold = score_gold(columns["gold"])
    if args.original_model:
        columns["original"] = suite("original", args.original_model, **gold)
    columns = {"model": suite("model", args.model, **gold), **columns}
    return _write_evaluation(args, columns, settings=settings)


def _evaluate_muse(args) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .evaluation import evaluate_muse, score_muse_gold
    from .evaluation.report import MUSE_ROWS
    from .progress import phase
    from .sources import load_pretrained

    tokenizer = load_pretrained(AutoTokenizer, args.model, "tokenizer")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    options = {"path": args.muse_path, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size or 8,
               "generation_batch_size": args.generation_batch_size, "limit": args.limit,
               "conventions": args.conventions, "gradnorm": args.gradnorm}  # fmt: skip
    settings = {"suite": "muse", "limit": args.limit, "conventions": args.conventions}
    columns, gold = {}, {}
    if args.gold_results:
        columns["gold"] = _stored_gold(args, settings)
        gold = score_muse_gold(columns["gold"])
    for name, model_name in (("gold", args.gold_model), ("original", args.original_model), ("model", args.model)):
        if model_name:
            with phase(f"evaluate {name}"):
                columns[name] = evaluate_muse(load_pretrained(AutoModelForCausalLM, model_name), tokenizer,
                                              **(gold if name != "gold" else {}), **options)  # fmt: skip
            if name == "gold":
                gold = score_muse_gold(columns["gold"])
    columns = {"model": columns.pop("model"), **columns}
    return _write_evaluation(args, columns, MUSE_ROWS, settings)


def _qa_rows(args) -> tuple[list[dict], list[dict], list[dict]]:
    """The qa suite's forget, retain and held-out rows: three JSONL files, or the offline demo's people (with the
    wrong answers the truth ratio needs) when none is given."""
    from .data import read_jsonl

    files = {name: getattr(args, name) for name in ("forget", "retain", "heldout")}
    if not any(files.values()):
        from .pipeline import DEFAULT_RUN, _evaluation_holdout, load_data
        from .synthetic import add_truth_ratio_fields

        data = DEFAULT_RUN["data"]
        forget, retain = load_data(data, DEFAULT_RUN["seed"])
        holdout = _evaluation_holdout(data, forget, retain)
        rows = add_truth_ratio_fields(forget), add_truth_ratio_fields(retain), holdout
        print(f"the offline demo's people: {len(forget)} forget, {len(retain)} retain, {len(holdout)} held-out rows")
    else:
        missing = [f"--{name}" for name, path in files.items() if not path]
        if missing:
            raise ValueError(f"--suite qa needs --forget, --retain and --heldout together (JSONL files of question/"
                             f"answer rows), or none of them for the offline demo's people: {missing} missing.")
        for name, path in files.items():
            _need_file(path, f"--{name}", "a JSONL file of question/answer rows")
        rows = tuple(read_jsonl(path) for path in files.values())
    return tuple(part[: args.limit] for part in rows) if args.limit else rows


def _evaluate_classifier(args) -> int:
    import json

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .data import read_jsonl
    from .evaluation import evaluate_classifier
    from .evaluation.report import CLASSIFIER_ROWS, format_table
    from .sources import load_pretrained

    missing = [f"--{name}" for name in ("forget", "retain", "test") if getattr(args, name) is None]
    if missing:
        raise ValueError(f"--suite classifier needs {missing}: JSONL files with a text column and a label column.")
    for name in ("forget", "retain", "test", "heldout"):
        _need_file(getattr(args, name), f"--{name}", "a JSONL file of text/label rows")
    tokenizer = load_pretrained(AutoTokenizer, args.model, "tokenizer")
    model = load_pretrained(AutoModelForSequenceClassification, args.model)

    def rows(path):
        data = read_jsonl(path)[: args.limit] if args.limit else read_jsonl(path)
        text_key = next((k for k in ("text", "sentence") if data and k in data[0]), None)
        label_key = next((k for k in ("label", "labels") if data and k in data[0]), None)
        if text_key is None or label_key is None:
            raise ValueError(f"{path}: rows need a 'text' (or 'sentence') and a 'label' column.")
        encoded = tokenizer([row[text_key] for row in data], truncation=True, max_length=512)
        return [{**{k: v[i] for k, v in encoded.items()}, "labels": int(row[label_key])} for i, row in enumerate(data)]

    heldout = rows(args.heldout) if args.heldout else None
    results = evaluate_classifier(model, rows(args.forget), rows(args.retain), rows(args.test), heldout,
                                  args.batch_size or 32, tokenizer.pad_token_id or 0)  # fmt: skip
    print(format_table({"model": results}, CLASSIFIER_ROWS))
    with open(args.output, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"written to {args.output}")
    return 0


def _load_llava(path: str, base: str | None = None):
    """A LLaVA model folder, or a PEFT adapter folder merged into `base` (its base model)."""
    import os

    from transformers import LlavaForConditionalGeneration

    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        from peft import PeftModel

        if base is None:
            raise ValueError(f"{path} holds a LoRA adapter: pass --original-model (its base model) to load it.")
        return PeftModel.from_pretrained(LlavaForConditionalGeneration.from_pretrained(base), path).merge_and_unload()
    return LlavaForConditionalGeneration.from_pretrained(path)


def _evaluate_mmubench(args) -> int:
    import json

    from PIL import Image
    from transformers import AutoProcessor

    from .evaluation.mmubench import WHO_PROMPT, evaluate_mmubench

    if not args.original_model or not args.mmubench_data:
        raise ValueError("--suite mmubench needs --original-model (the model before unlearning) and --mmubench-data.")
    _need_file(args.mmubench_data, "--mmubench-data", "a JSON file (see `hf-unlearn eval --help`)")
    spec = _read_json(Path(args.mmubench_data))
    missing = sorted({"concept", "train_image", "unseen_images", "other_concepts"} - set(spec))
    if missing:
        raise ValueError(f"{args.mmubench_data} has no {missing}: see `hf-unlearn eval --help`.")
    results = evaluate_mmubench(
        _load_llava(args.model, args.original_model), _load_llava(args.original_model),
        AutoProcessor.from_pretrained(args.original_model), spec["concept"], Image.open(spec["train_image"]),
        [Image.open(p) for p in spec["unseen_images"]],
        {name: [Image.open(p) for p in paths] for name, paths in spec["other_concepts"].items()},
        questions=spec.get("questions", [WHO_PROMPT]), max_new_tokens=args.max_new_tokens or 64,
    )  # fmt: skip
    width = max(map(len, results))
    for name, value in results.items():
        print(f"{name:<{width}}  {value:.2f}" if value is not None else f"{name:<{width}}  -")
    with open(args.output, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
