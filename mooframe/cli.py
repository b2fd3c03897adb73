"""The `mooframe` command: solve, evaluate, select, export, demo, list.

A user's mistake (bad flag value, unknown option, unusable path or device, malformed run file) is one line on
stderr, `mooframe COMMAND: error: ...`, and exit status 2; argparse's own errors add the usage line above it.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mooframe.result import ParetoSetResult

#: errors that mean the input was wrong (exit status 2); ArtifactError is a ValueError.
USAGE_ERRORS = (ValueError, FileNotFoundError, KeyError, PermissionError, NotADirectoryError, IsADirectoryError)


def parse_options(pairs: Sequence[str] | None) -> dict[str, Any]:
    """`key=value` pairs as keyword arguments; values are read as JSON when they parse (numbers, lists, true)."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"option {pair!r} is not of the form key=value")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _number(kind: type, what: str, check: Callable[[Any], bool]) -> Callable[[str], Any]:
    """An argparse type: `kind(text)` satisfying `check`, else an error saying `what` the flag takes."""

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return convert


count = _number(int, "an integer >= 0", lambda v: v >= 0)
positive_int = _number(int, "an integer >= 1", lambda v: v >= 1)
finite_float = _number(float, "a finite number", math.isfinite)
positive_float = _number(float, "a finite number > 0", lambda v: math.isfinite(v) and v > 0)


def device(text: str) -> str:
    """An argparse type: a torch device that exists here (cpu, cuda, cuda:1, mps); else the ones that do."""
    if text == "cpu":
        return text
    import torch

    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a device name; available: {', '.join(available_devices())}"
        ) from None
    backend = getattr(torch, parsed.type, None) if parsed.type != "mps" else torch.backends.mps
    usable = parsed.type == "cpu" or bool(backend is not None and backend.is_available())
    if usable and parsed.type == "cuda" and parsed.index is not None:
        usable = parsed.index < torch.cuda.device_count()
    if not usable:
        raise argparse.ArgumentTypeError(
            f"device {text!r} is not available here; available: {', '.join(available_devices())}"
        )
    return text


def available_devices() -> list[str]:
    """The torch devices of this machine by name: cpu, then cuda:0 ... and mps where present."""
    import torch

    names = ["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0))]
    return names + (["mps"] if torch.backends.mps.is_available() else [])


def _run_reading_options(args: argparse.Namespace) -> dict[str, Any]:
    """How `ParetoSetResult.load` may rebuild a run's problem: re-supplied path options, or trust in the run's."""
    return {"problem_options": parse_options(args.problem_option), "trust_paths": args.trust_run_paths}


def _cmd_solve(args: argparse.Namespace) -> None:
    from mooframe import distributed
    from mooframe.atomic import locked

    out, checkpoint_dir = _solve_outputs(args)  # checked before anything is built or trained
    joined = distributed.init_from_environment(args.device)
    with locked(out) if distributed.is_writer() else nullcontext():  # a second solve to OUT is refused at its start
        result = _solve(args, checkpoint_dir)
        if distributed.is_writer():
            print(f"saved run to {result.save(out)}")
    if joined:
        distributed.shutdown()


def _solve_outputs(args: argparse.Namespace) -> tuple[Path, str | Path]:
    """The run folder and the checkpoint directory of `solve`, checked: where a resumed run checkpoints is the
    directory holding the checkpoint it resumed from."""
    from mooframe.atomic import CHECKPOINTS, RUN, check_output
    from mooframe.checkpoint import checkpoint_directory

    if args.checkpoint_dir is not None:
        checkpoint_dir = args.checkpoint_dir
    else:
        checkpoint_dir = checkpoint_directory(args.resume) if args.resume else f"{args.out}-checkpoints"
    out = check_output(args.out, RUN, inputs=[checkpoint_dir, *([args.resume] if args.resume else [])])
    check_output(checkpoint_dir, CHECKPOINTS, inputs=[out])
    return out, checkpoint_dir


def _solve(args: argparse.Namespace, checkpoint_dir: str | Path) -> ParetoSetResult:
    from mooframe.solve import solve

    return solve(
        args.problem,
        model=args.model,
        solver=args.solver,
        steps=args.steps,
        lr=args.lr,
        optimizer=args.optimizer,
        lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps,
        alpha=args.alpha,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
        problem_kwargs=parse_options(args.problem_option),
        model_kwargs=parse_options(args.model_option),
        solver_kwargs=parse_options(args.solver_option),
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        on_nonfinite=args.on_nonfinite,
        prefs_per_step=args.prefs_per_step,
        grad_clip=args.grad_clip,
    )


def _cmd_select(args: argparse.Namespace) -> None:
    result = _loaded(args.run_dir, args)
    selection = result.select(args.rule, n=args.n, refine=args.refine, max_preferences=args.max_preferences)
    print(selection.summary(args.runners_up))


def _cmd_export(args: argparse.Namespace) -> None:
    from mooframe.atomic import EXPORT, check_output
    from mooframe.selection import parse_vector

    check_output(args.out, EXPORT, inputs=[args.run_dir], replace=args.force)  # before evaluating anything
    result = _loaded(args.run_dir, args)
    if args.select is not None:
        target = result.select(args.select, n=args.n, refine=args.refine, max_preferences=args.max_preferences)
        print(target.summary(args.runners_up))
        pref = target.pref
    else:
        target = pref = parse_vector(args.pref)
    path = result.export(args.out, target, force=args.force)
    print(f"exported the model at preference {','.join(f'{v:.6g}' for v in pref)} to {path}")


def _add_run_reading_options(parser: argparse.ArgumentParser) -> None:
    """Options of the commands that load runs: re-supplied path options, and the preference budget."""
    parser.add_argument(
        "--problem-option",
        action="append",
        metavar="KEY=VALUE",
        help="re-supply a path option (model paths, data sources) or a runtime option (cache folders, progress) "
        "of the runs' problem",
    )
    parser.add_argument(
        "--trust-run-paths", action="store_true", help="use the path options recorded in the run files as they are"
    )
    parser.add_argument(
        "--max-preferences",
        type=positive_int,
        metavar="N",
        help="evaluate up to N preferences (default 1000; a larger grid is refused with its size)",
    )


def _loaded(path: str | Path, args: argparse.Namespace) -> Any:
    """The run at `path` on `--device`, its problem loading with `--workers` and evaluating under `--autocast`."""
    from mooframe.result import ParetoSetResult

    result = ParetoSetResult.load(path, device=args.device, **_run_reading_options(args))
    if hasattr(result.problem, "workers"):
        result.problem.workers, result.problem.eval_autocast = args.workers, args.autocast
    return result


def _add_evaluation_options(parser: argparse.ArgumentParser) -> None:
    """Options of the commands that evaluate runs: where, with how many loader processes, at what precision."""
    parser.add_argument("--device", type=device, default="cpu", help="where to evaluate, e.g. cuda (default cpu)")
    parser.add_argument("--workers", type=count, help="data loader processes (default: a share of the cores)")
    parser.add_argument("--autocast", choices=["bfloat16", "float16"], help="evaluate under autocast (CUDA)")
    _add_run_reading_options(parser)


def _add_selection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n",
        type=positive_int,
        help="grid points per simplex edge to evaluate (default 11 up to 3 objectives, else 2: T + 1 preferences)",
    )
    parser.add_argument(
        "--refine",
        type=positive_int,
        default=1,
        metavar="K",
        help="then evaluate K-1 more preferences between the choice and each grid neighbour and choose again",
    )
    parser.add_argument("--runners-up", type=count, default=3, help="how many runners-up to print")
    _add_evaluation_options(parser)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from mooframe.atomic import REPORT, check_output
    from mooframe.report import compare_fronts, evaluation_preferences, write_report

    paths = [Path(run) for run in args.runs]
    if len(set(paths)) != len(paths):
        raise ValueError(f"a run is given twice in {args.runs}; pass each run directory once")
    out = check_output(args.out, REPORT, inputs=paths)  # before evaluating anything
    # label runs by folder name where those are unique, else by the path given
    labels = [p.name for p in paths] if len({p.name for p in paths}) == len(paths) else [str(p) for p in paths]
    results = {label: _loaded(path, args) for label, path in zip(labels, paths, strict=True)}
    problems = {label: result.problem.spec() for label, result in results.items()}
    first = labels[0]
    for label, spec in problems.items():
        if spec != problems[first]:
            raise ValueError(f"runs solve different problems: {first} has {problems[first]}, {label} has {spec}")
    problem = results[first].problem
    prefs = evaluation_preferences(problem.n_objectives, args.n, args.max_preferences)
    fronts = {label: result.front(prefs, progress=not args.quiet) for label, result in results.items()}
    true_front = problem.true_front()
    comparison = compare_fronts(fronts, true_front=true_front, ref=args.ref)
    write_report(comparison, fronts, out, true_front=true_front, title=problem.registry_name or "runs", inputs=paths)
    print(comparison.text())
    print(f"\nwrote report.md, report.json, fronts.png and one front.csv per run to {out}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from mooframe.demo import run_demo

    report = run_demo(
        args.out, steps=args.steps, seed=args.seed, progress=not args.quiet, workers=args.workers, device=args.device,
        family=args.family,
    )  # fmt: skip
    print(f"report written to {report}")


def _cmd_reproduce(args: argparse.Namespace) -> None:
    from mooframe.reproduce import reproduce

    methods = [m for m in args.methods.split(",") if m] if args.methods else None
    options = parse_options(args.problem_option)
    reproduce(args.experiment, args.out, methods, args.smoke, args.dry_run, args.device, options, args.experts,
              progress=not args.quiet)  # fmt: skip


def _cmd_list(args: argparse.Namespace) -> None:
    from mooframe.registry import registered

    for kind, names in registered().items():
        print(f"{kind}s: {', '.join(names)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mooframe", description="Learn and compare Pareto sets of neural networks.")
    commands = parser.add_subparsers(dest="command", required=True)

    solve = commands.add_parser("solve", help="train a Pareto set model on a problem and save the run")
    solve.add_argument("--problem", required=True, help="registered problem name (see `mooframe list`)")
    solve.add_argument("--model", default="hypernet", help="registered Pareto set model name")
    solve.add_argument("--solver", default="ls", help="registered solver name")
    solve.add_argument("--steps", type=count, default=1000)
    solve.add_argument("--lr", type=positive_float, default=None, help="default: the model's (1e-2; hypernet 1e-3)")
    solve.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"])
    solve.add_argument("--lr-schedule", default="cosine", choices=["cosine", "constant"])
    solve.add_argument(
        "--warmup-steps", type=count, default=None, help="linear lr warm-up steps (default: the model's; PWE-MoE 100)"
    )
    solve.add_argument("--alpha", type=positive_float, default=1.0, help="Dirichlet concentration of the preferences")
    solve.add_argument(
        "--prefs-per-step", type=positive_int, default=1, metavar="K", help="preferences a step, updates averaged"
    )
    solve.add_argument("--grad-clip", type=positive_float, metavar="MAX", help="max gradient norm (default: no clip)")
    solve.add_argument("--seed", type=count, default=0)
    solve.add_argument("--device", type=device, default="cpu")
    for piece in ("problem", "model", "solver"):
        solve.add_argument(
            f"--{piece}-option", action="append", metavar="KEY=VALUE", help=f"constructor option of the {piece}"
        )
    solve.add_argument("--out", required=True, help="run directory to write")
    solve.add_argument("--quiet", action="store_true", help="no progress bar")
    solve.add_argument(
        "--checkpoint-every", type=count, default=0, metavar="N", help="checkpoint every N steps (always on Ctrl-C)"
    )
    solve.add_argument(
        "--checkpoint-dir", help="where checkpoints go (default: OUT-checkpoints, or where the --resume checkpoint is)"
    )
    solve.add_argument(
        "--resume",
        metavar="DIR",
        help="continue exactly from the checkpoint folder DIR, or the newest in the checkpoint directory DIR",
    )
    solve.add_argument(
        "--on-nonfinite", default="raise", choices=["raise", "skip"], help="stop on a NaN/inf loss or skip the step"
    )
    solve.set_defaults(run=_cmd_solve)

    select = commands.add_parser("select", help="choose a preference from a run's evaluated front by a rule")
    select.add_argument("run_dir", metavar="RUN", help="run directory written by `mooframe solve`")
    select.add_argument(
        "rule", help="e.g. 'max accuracy[a] subject to accuracy[b] >= 0.8', 'knee', 'ideal', 'pref 0.3,0.7'"
    )
    _add_selection_options(select)
    select.set_defaults(run=_cmd_select)

    export = commands.add_parser("export", help="write the model at a preference as its family's checkpoint")
    export.add_argument("run_dir", metavar="RUN", help="run directory written by `mooframe solve`")
    target = export.add_mutually_exclusive_group(required=True)
    target.add_argument("--pref", help="preference, comma-separated, e.g. 0.3,0.7")
    target.add_argument("--select", metavar="RULE", help="choose the preference by a rule (see `mooframe select`)")
    export.add_argument(
        "--out", required=True, help="directory to write (new or empty; an export of mooframe's with --force)"
    )
    export.add_argument(
        "--force", action="store_true", help="replace an export mooframe wrote at --out (never anything else)"
    )
    _add_selection_options(export)
    export.set_defaults(run=_cmd_export)

    evaluate = commands.add_parser("evaluate", help="compare saved runs: HV / IGD table, report files and a plot")
    evaluate.add_argument("runs", nargs="+", metavar="RUN", help="run directories written by `mooframe solve`")
    evaluate.add_argument("--out", default="runs/report", help="directory for the report (default runs/report)")
    evaluate.add_argument(
        "--n",
        type=positive_int,
        help="preferences per simplex edge of the grid (default 11 up to 3 objectives, else 2)",
    )
    evaluate.add_argument(
        "--ref", type=finite_float, nargs="+", help="hypervolume reference point (default: nadir of all fronts + 10%%)"
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_evaluation_options(evaluate)
    evaluate.set_defaults(run=_cmd_evaluate)

    demo = commands.add_parser(
        "demo", help="PWE-MoE vs merging baselines on multi-task digits or language-model tasks: report and plots"
    )
    demo.add_argument(
        "--family", choices=("digits", "lm"), default="digits",
        help="digits (vision, default) or lm (digit-string tasks on a tiny decoder)",
    )  # fmt: skip
    demo.add_argument("--out", default="runs/demo", help="report directory (default runs/demo)")
    demo.add_argument(
        "--steps",
        type=count,
        default=None,
        help="training steps per trained method, per dimension of the preference simplex (T - 1); "
        "default 1000 (digits), 400 (lm)",
    )
    demo.add_argument("--seed", type=count, default=0)
    demo.add_argument("--workers", type=positive_int, help="processes running the methods (default: one per CPU core)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument(
        "--device", type=device, default="cpu", help="where each method trains and is evaluated (default cpu)"
    )
    demo.set_defaults(run=_cmd_demo)

    from mooframe.reproduce.experiments import experiment_names

    reproduce = commands.add_parser("reproduce", help="run one of the PWE-MoE paper's experiments and report")
    reproduce.add_argument("experiment", choices=experiment_names(), help="the paper's table or figure")
    reproduce.add_argument("--out", help="folder for runs and report (default runs/reproduce/EXPERIMENT[-smoke])")
    reproduce.add_argument("--methods", help="comma-separated methods of the experiment (default: all)")
    reproduce.add_argument("--dry-run", action="store_true", help="list the runs, done or not, and their cost")
    reproduce.add_argument("--smoke", action="store_true", help="every step on a few examples (a quick check)")
    reproduce.add_argument("--device", type=device, default="cpu")
    reproduce.add_argument("--problem-option", action="append", metavar="KEY=VALUE", help="override a problem option")
    reproduce.add_argument("--experts", metavar="TEMPLATE", help="expert path per task, with {task} (e.g. open_clip)")
    reproduce.add_argument("--quiet", action="store_true", help="no progress bars")
    reproduce.set_defaults(run=_cmd_reproduce)

    listing = commands.add_parser("list", help="print the registered problems, models and solvers")
    listing.set_defaults(run=_cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status: 2 for bad arguments or input, 1 for a failure during the work,
    128 + the signal number when a signal stopped it (130 for Ctrl-C, 143 for SIGTERM)."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except USAGE_ERRORS as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"mooframe {args.command}: error: {message}", file=sys.stderr)
        return 2
    except (FloatingPointError, OSError, ImportError) as error:
        print(f"mooframe {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        print(f"mooframe {args.command}: {str(error) or 'interrupted'}", file=sys.stderr)
        return 128 + getattr(error, "signum", signal.SIGINT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
