"""Strict command lines: every argument is a flag of the command or an option Beam knows.

`gld` commands hand the arguments they do not define to Beam (`--runner`, `--direct_num_workers`,
Dataflow's `--project`, ...). Beam itself only logs "Unparseable argument" for anything else and
goes on, so a misspelt project flag (`--min_inliers 400`) would silently run with the default.
`parse_strictly` stops such a command line before any work, with argparse's exit status 2 and
the closest known flag.
"""

from __future__ import annotations

import argparse
import difflib
from functools import cache

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser


def _options_parser() -> argparse.ArgumentParser:
    """A parser of every option in Beam's pipeline-options registry (as `get_all_options`
    builds it: every registered `PipelineOptions` subclass adds its arguments)."""
    parser = _BeamArgumentParser(allow_abbrev=False)
    seen: dict[str, type[PipelineOptions]] = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)  # the registry's only entry point
    return parser


@cache
def beam_option_names() -> tuple[str, ...]:
    """The long option strings Beam knows (e.g. `--runner`, `--direct_num_workers`)."""
    parser = _options_parser()
    return tuple(sorted(opt for action in parser._actions for opt in action.option_strings if opt.startswith("--")))


def unknown_arguments(beam_args: list[str]) -> list[str]:
    """The arguments of `beam_args` (what a command's own parser left) that no Beam option
    takes: flags Beam does not know, and stray values."""
    _, unknown = _options_parser().parse_known_args(beam_args)
    return unknown


def suggestion(argument: str, flags: list[str]) -> str:
    """The closest of `flags` to `argument` ("" when none is close). Underscores and hyphens
    are compared alike, since `--min_inliers` is the usual slip for `--min-inliers`."""
    name = argument.split("=", 1)[0]
    if not name.startswith("--"):
        return ""
    by_spelling = {flag.replace("_", "-"): flag for flag in flags}
    close = difflib.get_close_matches(name.replace("_", "-"), list(by_spelling), n=1, cutoff=0.75)
    return by_spelling[close[0]] if close else ""


def parse_strictly(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """(the command's arguments, the Beam options) of `argv`; any other argument ends the
    program with exit status 2 (argparse's, for a usage error) and a "did you mean" line when
    a flag is close; the message alone, without the usage that would bury it."""
    parser.allow_abbrev = False  # `--min-inlier` is a slip too, not a flag of its own
    args, beam_args = parser.parse_known_args(argv)
    unknown = unknown_arguments(beam_args)
    if unknown:
        own = [opt for action in parser._actions for opt in action.option_strings if opt.startswith("--")]
        first = next((arg for arg in unknown if arg.startswith("-")), unknown[0])
        close = suggestion(first, own + list(beam_option_names()))
        hint = f"\ndid you mean {close}?" if close else ""
        what = f"neither a flag of {parser.prog} nor a Beam option"
        parser.exit(2, f"{parser.prog}: error: unrecognized arguments: {' '.join(unknown)} ({what}){hint}\n")
    return args, beam_args
