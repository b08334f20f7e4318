"""The docs' generated pages (`docs/reference/`) are what `pipeline.cli.reference` makes from the
code, and the words they take from `schemas/columns.py` cover every column and every value.

After a flag, a column or a reason changes: `.venv/bin/python -m pipeline.cli.reference docs`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow as pa
import pytest

import schemas.columns as words
import schemas.overlap
import schemas.tables
from pipeline.cli.main import PARSERS
from pipeline.cli.reference import FILES, MORE_FILES, OVERLAP_FILES, PAGES, cell, cli_reference, usage
from pipeline.curation.outputs import OUTPUT_NAMES
from pipeline.curation.overlap import OVERLAP_OUTPUTS
from schemas.vocabulary import AuditKind, EvalStatus, PairReason, Reason, ReviewIssue, Stage, Status

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize("page", sorted(PAGES))
def test_the_committed_page_is_what_the_code_makes(page: str) -> None:
    committed = (DOCS / page).read_text(encoding="utf-8")
    assert committed == PAGES[page](), f"docs/{page} is stale: run `.venv/bin/python -m pipeline.cli.reference docs`"


def test_every_column_of_every_schema_has_its_words() -> None:
    assert set(words.COLUMNS) == set(words.SCHEMAS)
    for name, schema in words.SCHEMAS.items():
        assert list(words.COLUMNS[name]) == schema.names, name  # every column, none that is gone, in order
        assert all(words.COLUMNS[name].values()), name


def test_every_written_schema_is_documented() -> None:
    """A new table schema in `schemas/` needs its words (and a row in the outputs reference)."""
    defined = [
        value
        for module in (schemas.tables, schemas.overlap)
        for value in vars(module).values()
        if isinstance(value, pa.Schema)
    ]
    assert all(any(schema.equals(known) for known in words.SCHEMAS.values()) for schema in defined)
    linked = {schema for _, schema, _ in (FILES | MORE_FILES).values()}
    linked |= {schema for schema, _ in OVERLAP_FILES.values()}
    assert linked - {""} == set(words.SCHEMAS)


def test_every_output_is_described() -> None:
    assert set(FILES) == set(OUTPUT_NAMES.values())
    assert set(OVERLAP_FILES) == set(OVERLAP_OUTPUTS.values())
    assert all(text for *_, text in (FILES | MORE_FILES | OVERLAP_FILES).values())


def test_every_value_of_the_vocabulary_has_its_words() -> None:
    assert set(words.REASONS) == set(Reason) and all(words.REASONS.values())
    outcomes = {reason: words.reason_outcome(reason) for reason in Reason}
    assert outcomes[Reason.HTTP_404] == (Status.FAILED, Stage.FETCH)
    assert outcomes[Reason.ISOLATED_COMPONENT] == (Status.REMOVED, Stage.SELECT)
    assert outcomes[Reason.REVIEWED_RELABEL] == (Status.KEPT, Stage.REVIEW)
    for reason in words.KEPT_REASONS:
        assert outcomes[reason][0] == Status.KEPT and reason.value.startswith(("verified_", "reviewed_"))
    assert set(words.PAIR_REASONS) == set(PairReason)
    assert set(words.AUDIT_KINDS) == set(AuditKind)
    assert set(words.EVAL_STATUSES) == set(EvalStatus)
    assert set(words.REVIEW_ISSUES) == set(ReviewIssue)


def test_the_cli_reference_has_every_command_and_every_flag() -> None:
    page = cli_reference()
    for name, make in PARSERS.items():
        assert f"\n## gld {name}\n" in page, name
        for action in make()._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}`" in page, (name, flag)


def test_word_tables_read_names_words_and_continued_lines() -> None:
    assert words.word_table("a: one: two\nb: three\n  four\n") == {"a": "one: two", "b": "three four"}
    with pytest.raises(ValueError):
        words.word_table("a: one\na: again")
    with pytest.raises(ValueError):
        words.word_table("no name here")


def test_usage_names_the_required_flags_and_beam_options() -> None:
    parser = argparse.ArgumentParser(description="Do it. Unknown flags go to Beam.")
    parser.add_argument("where")
    parser.add_argument("--output", required=True)
    parser.add_argument("--top", type=int, default=3)
    assert usage("x", parser) == "gld x WHERE --output OUTPUT [flags] [Beam options]"


def test_cells_escape_what_markdown_would_eat() -> None:
    assert cell("read <dir>/a/<id>.jpg, a*b|c") == "read &lt;dir&gt;/a/&lt;id&gt;.jpg, a\\*b\\|c"
    assert cell("`gnd_*.pkl` or `a|b`") == "`gnd_*.pkl` or `a\\|b`"
