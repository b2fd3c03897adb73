"""The `mooframe` command: solve, evaluate, list."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

USAGE_ERRORS = (ValueError, FileNotFoundError, KeyError)


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


def _cmd_solve(args: argparse.Namespace) -> None:
    from mooframe import distributed
    from mooframe.solve import solve

    distributed.init_from_environment(args.device)
    checkpoint_dir = args.checkpoint_dir or args.resume or f"{args.out}-checkpoints"
    result = solve(
        args.problem,
        model=args.model,
        solver=args.solver,
        steps=args.steps,
        lr=args.lr,
        optimizer=args.optimizer,
        lr_schedule=args.lr_schedule,
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
    )
    if distributed.is_writer():
        print(f"saved run to {result.save(args.out)}")


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
    solve.add_argument("--steps", type=int, default=1000)
    solve.add_argument("--lr", type=float, default=1e-2)
    solve.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"])
    solve.add_argument("--lr-schedule", default="cosine", choices=["cosine", "constant"])
    solve.add_argument("--alpha", type=float, default=1.0, help="Dirichlet concentration of the preferences")
    solve.add_argument("--seed", type=int, default=0)
    solve.add_argument("--device", default="cpu")
    for piece in ("problem", "model", "solver"):
        solve.add_argument(
            f"--{piece}-option", action="append", metavar="KEY=VALUE", help=f"constructor option of the {piece}"
        )
    solve.add_argument("--out", required=True, help="run directory to write")
    solve.add_argument("--quiet", action="store_true", help="no progress bar")
    solve.add_argument(
        "--checkpoint-every", type=int, default=0, metavar="N", help="checkpoint every N steps (always on Ctrl-C)"
    )
    solve.add_argument("--checkpoint-dir", help="where checkpoints go (default: OUT-checkpoints, or the --resume DIR)")
    solve.add_argument("--resume", metavar="DIR", help="continue exactly from the newest checkpoint in DIR")
    solve.add_argument(
        "--on-nonfinite", default="raise", choices=["raise", "skip"], help="stop on a NaN/inf loss or skip the step"
    )
    solve.set_defaults(run=_cmd_solve)

    listing = commands.add_parser("list", help="print the registered problems, models and solvers")
    listing.set_defaults(run=_cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad arguments or input)."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except USAGE_ERRORS as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"mooframe {args.command}: error: {message}", file=sys.stderr)
        return 2
    except FloatingPointError as error:
        print(f"mooframe {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        print(f"mooframe {args.command}: {str(error) or 'interrupted'}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
