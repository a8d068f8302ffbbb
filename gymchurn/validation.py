"""Validate a month of client questionnaires with Great Expectations before scoring.

Three GX suites run on each batch:

- ``questionnaire_columns``: every required column exists and has a usable dtype. A
  failure rejects the whole batch with ``DataValidationError``.
- ``questionnaire_rows``: nulls, value sets, ranges, the contract-end rule and the
  uniqueness of (client_id, month). A row that breaks any of them is quarantined, and the
  rest are returned for scoring. One warning rule (``identical_answers``) only counts.
- ``questionnaire_load_faults``: one rule ``<column>_parseable`` per feature. A row
  breaks it when the loader's fault table (the ``faults`` argument) names that cell,
  whatever the fault kind, so an empty cell the loader reports also counts. The suite
  runs only when there are faults.

Duplicate rows follow this policy:

- A row identical to an earlier row in ``client_id``, ``month``, the 13 features and
  ``churned`` (when present) is one fault: the first copy is scored, and each later
  copy is quarantined under ``duplicate_row``. GX's uniqueness expectations flag every
  copy, so the later copies are found with pandas and left out of the row suite.
- Rows with the same (client_id, month) and different values conflict, so all of them
  are quarantined under ``client_month_unique``.
- Rows of different clients with the same month and the same 13 answers are allowed,
  because two clients can answer alike. They are counted under ``identical_answers``
  (severity warning) and scored. The chain's real 4,000-row export has none, so a
  count above zero usually means that the export copied answers between clients.

With ``chunk_rows``, the row and load-fault suites run on consecutive slices of the
batch and their results are merged, so GX reads one slice's float64 copy at a time.
The uniqueness rules and ``duplicate_row`` compare rows across slices, so they are
decided for the whole batch from row hashes, and rows that share a hash are compared
by value. The outcome equals that of one run on the whole batch.

Batch rules that compare a month with earlier months live in ``gymchurn.batch_rules``.
All Great Expectations imports of the package live in this module.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.core.batch import BatchMarkers
from great_expectations.core.batch_definition import BatchDefinition
from great_expectations.core.expectation_validation_result import (
    ExpectationSuiteValidationResult,
    ExpectationValidationResult,
)
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.data_context.types.resource_identifiers import (
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)
from great_expectations.execution_engine.pandas_execution_engine import HASH_THRESHOLD
from great_expectations.validator.validation_statistics import calc_validation_statistics

from gymchurn.schema import (
    BINARY_FEATURES,
    CHURNED,
    CLIENT_ID,
    CONTRACT_PERIODS,
    FEATURES,
    MONTH,
    VALUE_RANGES,
)

if TYPE_CHECKING:
    from gymchurn.batch_rules import Finding

logger = logging.getLogger(__name__)

ROW_NUMBER = "row_number"
FAILED_RULES = "failed_rules"
FAILED_VALUES = "failed_values"
REQUIRED_COLUMNS = [CLIENT_ID, MONTH, ROW_NUMBER, *FEATURES]

# Columns of the loader's fault table: one row per cell that could not be parsed.
FAULT_COLUMNS = [CLIENT_ID, "column", "line", "raw_value", "fault"]
# Columns whose parse faults quarantine the row. A fault in client_id leaves the row
# without an id to match, so it ends up in ValidationReport.unmatched_faults.
PARSEABLE_COLUMNS = list(FEATURES)

# Severity of a row rule: "quarantine" keeps the row out of scoring and training,
# "warning" only counts the rows.
QUARANTINE = "quarantine"
WARNING = "warning"

DUPLICATE_ROW = "duplicate_row"
IDENTICAL_ANSWERS = "identical_answers"

_MAX_EXAMPLES = 5
_MAX_RULES_IN_MESSAGE = 5
_RULE_META_KEY = "gymchurn_rule"
_RAW_SUFFIX = "__raw"

_INTEGER_DTYPES = [
    *(f"int{bits}" for bits in (8, 16, 32, 64)),
    *(f"uint{bits}" for bits in (8, 16, 32, 64)),
    # GX resolves pandas extension dtypes by their class name in the pandas namespace.
    *(f"Int{bits}Dtype" for bits in (8, 16, 32, 64)),
    *(f"UInt{bits}Dtype" for bits in (8, 16, 32, 64)),
]
_NUMERIC_DTYPES = [*_INTEGER_DTYPES, "float32", "float64", "Float32Dtype", "Float64Dtype"]
_FLAG_DTYPES = [*_NUMERIC_DTYPES, "bool", "BooleanDtype"]

# Every call shares one cached context and its suites, so GX calls run one at a time
# instead of relying on GX objects being thread-safe.
_GX_LOCK = threading.Lock()


class DataValidationError(Exception):
    """A batch that must not be scored: the message names the cause and what to do.

    Attributes:
        dataset: Label of the rejected batch, as given by the caller.
        rules: Results of the row rules that failed, empty when the batch was
            rejected before the row rules ran.
        batch_rule: Name of the check that rejected the batch, for example
            ``required_columns`` or ``max_invalid_share``.
        report: The full report when the row rules ran, otherwise None.
        gx_results: GX validation results of the suites that ran, for Data Docs.
    """

    def __init__(
        self,
        message: str,
        *,
        dataset: str,
        rules: Sequence[RuleResult] = (),
        batch_rule: str = "batch",
        report: ValidationReport | None = None,
        gx_results: Sequence[ExpectationSuiteValidationResult] = (),
    ) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.rules = tuple(rules)
        self.batch_rule = batch_rule
        self.report = report
        self.gx_results = tuple(gx_results)


@dataclass(frozen=True)
class RuleResult:
    """Outcome of one row rule on one batch.

    ``examples`` holds up to five (client_id, value) pairs, in row order. The value is
    the failing value of the rule's column, a tuple for a rule of several columns, the
    raw text for a ``<column>_parseable`` rule, and the other client ids with the same
    answers for ``identical_answers``.
    """

    rule: str
    columns: tuple[str, ...]
    description: str
    n_failed: int
    examples: tuple
    severity: str = QUARANTINE


@dataclass(frozen=True, eq=False)
class ValidationReport:
    """Outcome of validating one batch: the row rules and the split of its rows.

    ``quarantined`` has the caller's columns plus ``failed_rules`` (sorted rule names)
    and ``failed_values`` (rule name to a dict of column to the failing value, with the
    raw text for parse faults).
    """

    dataset: str
    n_rows: int
    rules: tuple[RuleResult, ...]
    valid: pd.DataFrame
    quarantined: pd.DataFrame
    gx_results: tuple[ExpectationSuiteValidationResult, ...] = ()
    """GX results of the column, row and (with faults) load-fault suites."""
    unmatched_faults: pd.DataFrame | None = None
    """Load faults that name no row of the batch, for example an unparseable client id."""

    @property
    def n_valid(self) -> int:
        """Number of rows that broke no quarantine rule."""
        return len(self.valid)

    @property
    def n_quarantined(self) -> int:
        """Number of rows that broke at least one quarantine rule."""
        return len(self.quarantined)

    @property
    def n_identical_answers(self) -> int:
        """Number of rows whose month and 13 answers repeat in another row, exact repeats
        of a row left out."""
        return next(r.n_failed for r in self.rules if r.rule == IDENTICAL_ANSWERS)

    @property
    def failed_rules(self) -> tuple[RuleResult, ...]:
        """Row rules broken by at least one row, warnings included, in rule order."""
        return tuple(result for result in self.rules if result.n_failed > 0)

    def summary(self) -> str:
        """Describe the outcome in a few lines: counts, then each failed rule."""
        lines = [
            f"{self.dataset}: {self.n_rows} rows, {self.n_valid} valid, "
            f"{self.n_quarantined} quarantined"
        ]
        for result in self.failed_rules:
            examples = describe_examples(result)
            rows = "row" if result.n_failed == 1 else "rows"
            kept = ", warning only, rows kept" if result.severity == WARNING else ""
            lines.append(
                f"  {result.rule} ({result.description}{kept}): {result.n_failed} {rows},"
                f" for example client ids {examples}"
            )
        if not self.failed_rules:
            lines.append("  every row passed every rule")
        if self.unmatched_faults is not None and len(self.unmatched_faults):
            lines.append(
                f"  {len(self.unmatched_faults)} load fault(s) name no row of the batch,"
                f" for example line(s) {_fault_lines(self.unmatched_faults)}"
            )
        return "\n".join(lines)


def describe_examples(result: RuleResult) -> str:
    """Format a rule's example rows as ``11 (age=-3), 12 (age=240)``: client id and value."""
    return ", ".join(_describe_example(result, example) for example in result.examples)


def _describe_example(result: RuleResult, example: tuple) -> str:
    """Format one example as ``11 (age=-3)``."""
    client_id, value = example
    if result.rule == IDENTICAL_ANSWERS:
        return f"{client_id} (same answers as {', '.join(map(str, value))})"
    values = (value,) if len(result.columns) == 1 else value
    pairs = zip(result.columns, values, strict=True)
    text = ", ".join(
        f"{column}={item!r}" if isinstance(item, str) else f"{column}={item}"
        for column, item in pairs
    )
    return f"{client_id} ({text})"


# ---------------------------------------------------------------------------
# Rule catalogue


@dataclass(frozen=True)
class _Rule:
    name: str
    columns: tuple[str, ...]
    description: str
    make_expectation: Callable[[dict[str, str]], gxe.Expectation] | None
    """Factory of the rule's GX expectation, or None for a rule checked with pandas."""
    severity: str = QUARANTINE


def _not_null_rule(column: str) -> _Rule:
    return _Rule(
        name=f"{column}_not_null",
        columns=(column,),
        description=f"{column} not null",
        make_expectation=lambda meta: gxe.ExpectColumnValuesToNotBeNull(
            column=column, meta=meta, description=f"{column} not null"
        ),
    )


def _in_set_rule(column: str, values: Sequence[int]) -> _Rule:
    # GX set and range expectations skip null values, so a null is reported only
    # by the column's not-null rule.
    description = f"{column} in {{{', '.join(str(value) for value in values)}}}"
    return _Rule(
        name=f"{column}_in_set",
        columns=(column,),
        description=description,
        make_expectation=lambda meta: gxe.ExpectColumnValuesToBeInSet(
            column=column, value_set=list(values), meta=meta, description=description
        ),
    )


def _in_range_rule(column: str, low: float, high: float) -> _Rule:
    description = f"{column} between {low:g} and {high:g}"
    return _Rule(
        name=f"{column}_in_range",
        columns=(column,),
        description=description,
        make_expectation=lambda meta: gxe.ExpectColumnValuesToBeBetween(
            column=column, min_value=low, max_value=high, meta=meta, description=description
        ),
    )


def _contract_end_rule() -> _Rule:
    # Rows where either value is null are skipped, because the not-null rules
    # already report them.
    description = "month_to_end_contract at most contract_period"
    return _Rule(
        name="month_to_end_contract_within_contract_period",
        columns=("contract_period", "month_to_end_contract"),
        description=description,
        make_expectation=lambda meta: gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="contract_period",
            column_B="month_to_end_contract",
            or_equal=True,
            ignore_row_if="either_value_is_missing",
            meta=meta,
            description=description,
        ),
    )


def _client_month_unique_rule() -> _Rule:
    # GX flags every row of a duplicated key, not only the second and later ones.
    # Exact repeats are removed before this rule runs, so what it finds conflicts.
    description = f"({CLIENT_ID}, {MONTH}) unique among rows with different values"
    return _Rule(
        name="client_month_unique",
        columns=(CLIENT_ID, MONTH),
        description=description,
        make_expectation=lambda meta: gxe.ExpectCompoundColumnsToBeUnique(
            column_list=[CLIENT_ID, MONTH], meta=meta, description=description
        ),
    )


def _identical_answers_rule() -> _Rule:
    description = f"{MONTH} and the 13 answers not repeated in another row"
    return _Rule(
        name=IDENTICAL_ANSWERS,
        columns=(MONTH, *FEATURES),
        description=description,
        make_expectation=lambda meta: gxe.ExpectCompoundColumnsToBeUnique(
            column_list=[MONTH, *FEATURES],
            severity="warning",
            meta=meta,
            description=description,
        ),
        severity=WARNING,
    )


def _parseable_rule(column: str) -> _Rule:
    # The fault frame contains the loader's raw text in "<column>__raw" and null where
    # the cell parsed, so a non-null value is a fault.
    description = f"{column} parsed from the source file"
    return _Rule(
        name=f"{column}_parseable",
        columns=(column,),
        description=description,
        make_expectation=lambda meta: gxe.ExpectColumnValuesToBeNull(
            column=f"{column}{_RAW_SUFFIX}", meta=meta, description=description
        ),
    )


def _build_row_rules() -> tuple[_Rule, ...]:
    rules = [_not_null_rule(column) for column in [CLIENT_ID, MONTH, *FEATURES]]
    rules += [_in_set_rule(column, [0, 1]) for column in BINARY_FEATURES]
    rules.append(_in_set_rule("contract_period", CONTRACT_PERIODS))
    rules.append(_in_set_rule(CHURNED, [0, 1]))
    rules += [_in_range_rule(column, low, high) for column, (low, high) in VALUE_RANGES.items()]
    rules.append(_contract_end_rule())
    rules.append(_client_month_unique_rule())
    rules.append(_identical_answers_rule())
    return tuple(rules)


def _build_column_rules() -> tuple[_Rule, ...]:
    # The month's type is checked with pandas (see _check_month_dtype), because GX
    # type names cannot express a column of datetime.date objects.
    rules = [
        _Rule(
            name=f"{column}_exists",
            columns=(column,),
            description=f"column {column} present",
            make_expectation=lambda meta, column=column: gxe.ExpectColumnToExist(
                column=column, meta=meta, description=f"column {column} present"
            ),
        )
        for column in REQUIRED_COLUMNS
    ]
    type_lists = {
        CLIENT_ID: _INTEGER_DTYPES,
        ROW_NUMBER: _INTEGER_DTYPES,
        **{column: _NUMERIC_DTYPES for column in FEATURES},
        **{column: _FLAG_DTYPES for column in [*BINARY_FEATURES, CHURNED]},
    }
    for column, type_list in type_lists.items():
        kind = "an integer" if type_list is _INTEGER_DTYPES else "a numeric"
        description = f"column {column} has {kind} dtype"
        rules.append(
            _Rule(
                name=f"{column}_type",
                columns=(column,),
                description=description,
                make_expectation=lambda meta, c=column, t=type_list, d=description: (
                    gxe.ExpectColumnValuesToBeInTypeList(
                        column=c, type_list=t, meta=meta, description=d
                    )
                ),
            )
        )
    return tuple(rules)


_ROW_RULES = _build_row_rules()
_FAULT_RULES = tuple(_parseable_rule(column) for column in PARSEABLE_COLUMNS)
_COLUMN_RULES = _build_column_rules()
_DUPLICATE_RULE = _Rule(
    name=DUPLICATE_ROW,
    columns=(CLIENT_ID, MONTH),
    description="not a repeat of an earlier row with the same client, month and values",
    make_expectation=None,
)
# Report order: the GX row rules except the warning, the duplicate rule, the
# parse-fault rules, then the warning.
_REPORT_RULES = (*_ROW_RULES[:-1], _DUPLICATE_RULE, *_FAULT_RULES, _ROW_RULES[-1])
RULE_NAMES = tuple(rule.name for rule in _REPORT_RULES)
"""Names of every row rule, in the order of ``ValidationReport.rules``."""
COLUMN_RULE_NAMES = tuple(rule.name for rule in _COLUMN_RULES)

# COMPLETE is the result format that lists every failing row. With row_number as
# the frame's named index and exclude_unexpected_values, GX 1.24 returns the
# failing row numbers as one list. Without them it builds one dict per failing
# row: 13 s instead of 2 s for 370,000 failing rows of 1,000,000 on a 2-core
# machine. The index query is a pandas expression naming every failing index,
# slow to build and unused here.
_RESULT_FORMAT = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": [ROW_NUMBER],
    "exclude_unexpected_values": True,
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 0,
}
_COLUMN_RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 5}


@dataclass(frozen=True)
class _GxObjects:
    batch_definition: BatchDefinition
    column_suite: gx.ExpectationSuite
    row_suite: gx.ExpectationSuite
    fault_suite: gx.ExpectationSuite


def _context_config() -> DataContextConfig:
    # Analytics and progress bars are switched off in the context's own config, so
    # the module sends nothing out and writes nothing to stderr whatever the
    # environment sets.
    return DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )


def _add_suite(context: Any, name: str, rules: Iterable[_Rule]) -> gx.ExpectationSuite:
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    for rule in rules:
        suite.add_expectation(rule.make_expectation({_RULE_META_KEY: rule.name}))
    return suite


@functools.cache
def _gx_objects() -> _GxObjects:
    """Create the ephemeral GX context, batch definition and suites, once a process."""
    context = gx.get_context(mode="ephemeral", project_config=_context_config())
    asset = context.data_sources.add_pandas("gymchurn").add_dataframe_asset("questionnaires")
    objects = _GxObjects(
        batch_definition=asset.add_batch_definition_whole_dataframe("whole_batch"),
        column_suite=_add_suite(context, "questionnaire_columns", _COLUMN_RULES),
        row_suite=_add_suite(context, "questionnaire_rows", _ROW_RULES),
        fault_suite=_add_suite(context, "questionnaire_load_faults", _FAULT_RULES),
    )
    logger.debug(
        "Created GX context with %d column, %d row and %d load-fault rules",
        len(_COLUMN_RULES),
        len(_ROW_RULES),
        len(_FAULT_RULES),
    )
    return objects


def _run_suite(
    frame: pd.DataFrame, suite_name: str, dataset: str, result_format: dict
) -> ExpectationSuiteValidationResult:
    """Validate ``frame`` against one of the cached suites and stamp the run name."""
    started = time.perf_counter()
    with _GX_LOCK:
        objects = _gx_objects()
        suite = {
            "questionnaire_columns": objects.column_suite,
            "questionnaire_rows": objects.row_suite,
            "questionnaire_load_faults": objects.fault_suite,
        }[suite_name]
        batch = objects.batch_definition.get_batch(batch_parameters={"dataframe": frame})
        suite_result = batch.validate(suite, result_format=result_format)
        _release_batch(objects.batch_definition, batch.id)
    # Data Docs file a result under its run name and time: the dataset label names it.
    suite_result.meta["run_id"] = RunIdentifier(run_name=dataset, run_time=dt.datetime.now(dt.UTC))
    logger.debug(
        "GX ran %d expectations of %s on %d rows in %.2f s",
        len(suite_result.results),
        suite_name,
        len(frame),
        time.perf_counter() - started,
    )
    return suite_result


def _release_batch(batch_definition: BatchDefinition, batch_id: str) -> None:
    """Drop the references GX keeps to a validated batch, so that its frame can be freed.

    GX 1.24 keeps the last batch and its DataFrame in the data source's execution
    engine until the next batch replaces them.
    """
    manager = batch_definition.data_asset.datasource.get_execution_engine().batch_manager
    manager.batch_data_cache.pop(batch_id, None)
    manager.reset_batch_cache()


# ---------------------------------------------------------------------------
# Validation


def validate_questionnaires(
    questionnaires: pd.DataFrame,
    *,
    dataset: str,
    max_invalid_share: float = 0.5,
    faults: pd.DataFrame | None = None,
    chunk_rows: int | None = None,
) -> ValidationReport:
    """Check every questionnaire row and split the batch into valid and quarantined.

    Args:
        questionnaires: One row a client-month with ``client_id``, ``month``, the 13
            features and a unique ``row_number``, and optionally ``churned`` (0, 1 or
            null). Other columns are carried along. The frame is not modified.
        dataset: Label of the batch used in messages, for example "month 2026-11".
        max_invalid_share: Largest share of quarantined rows, from 0 to 1, that
            still lets the batch through.
        faults: The loader's cells that could not be parsed, with the columns
            ``client_id``, ``column``, ``line``, ``raw_value`` and ``fault``. The
            loader leaves those cells null. A fault is matched to rows by
            ``client_id``, and also by ``month`` when the fault table has that column.
            A matched row is quarantined under ``<column>_parseable``.
        chunk_rows: Largest number of rows that the row and load-fault suites check
            at once, or None to check the whole batch at once. GX then reads a
            float64 copy of one slice at a time, so the memory those suites use is
            bounded by the slice instead of the batch. Row hashes and positions, a
            few tens of bytes a row, and the returned frames still grow with the
            batch. The report and the GX results equal those of an unsliced run.

    Returns:
        The report with every row rule and the valid and quarantined rows.

    Raises:
        DataValidationError: When a required column is missing or has the wrong
            dtype, ``row_number`` is not unique, the batch has no rows, GX could not
            evaluate a rule, or more than ``max_invalid_share`` of the rows are
            quarantined.
        ValueError: When ``max_invalid_share`` is outside 0 to 1, ``chunk_rows`` is
            not None or a whole number of at least 1, or ``faults`` lacks a column
            or names a column that is not parsed from the file.
    """
    if not 0.0 <= max_invalid_share <= 1.0:
        raise ValueError(f"invalid max_invalid_share {max_invalid_share!r}: expected 0 to 1")
    _check_chunk_rows(chunk_rows)
    _check_fault_table(faults)
    started = time.perf_counter()
    column_result = _check_columns(questionnaires, dataset)
    if chunk_rows is not None and len(questionnaires) <= chunk_rows:
        chunk_rows = None
    keys = _BatchKeys.of(questionnaires)
    repeats = _repeated_rows(questionnaires, chunk_rows)
    row_result = _run_row_suite(questionnaires, keys, repeats, dataset, chunk_rows)
    gx_results = [column_result, row_result]
    failures = _failed_rows_by_rule(row_result, dataset, gx_results)
    failures[DUPLICATE_ROW] = keys.row_numbers[repeats]

    raw_values, unmatched = _match_faults(questionnaires, faults)
    if raw_values:
        fault_result = _run_fault_suite(keys, raw_values, dataset, chunk_rows)
        gx_results.append(fault_result)
        failures |= _failed_rows_by_rule(fault_result, dataset, gx_results)
    if unmatched is not None and len(unmatched):
        logger.warning(
            "Validation of %s: %d load fault(s) name no row of the batch, for example line(s) %s",
            dataset,
            len(unmatched),
            _fault_lines(unmatched),
        )

    report = replace(
        _build_report(questionnaires, dataset, failures, raw_values),
        gx_results=tuple(gx_results),
        unmatched_faults=unmatched,
    )
    logger.debug(
        "Validated %s: %d rows, %d valid, %d quarantined in %.2f s",
        dataset,
        report.n_rows,
        report.n_valid,
        report.n_quarantined,
        time.perf_counter() - started,
    )
    _check_invalid_share(report, max_invalid_share)
    return report


def _check_fault_table(faults: pd.DataFrame | None) -> None:
    if faults is None:
        return
    missing = [column for column in FAULT_COLUMNS if column not in faults.columns]
    if missing:
        raise ValueError(
            f"invalid faults table: missing columns {', '.join(missing)}. "
            f"Expected {', '.join(FAULT_COLUMNS)}."
        )
    unknown = sorted(set(faults["column"].dropna()) - {CLIENT_ID, *PARSEABLE_COLUMNS})
    if unknown:
        raise ValueError(
            f"invalid faults table: unknown column name(s) {', '.join(map(str, unknown))}. "
            f"Expected one of {CLIENT_ID}, {', '.join(PARSEABLE_COLUMNS)}."
        )


def _check_columns(questionnaires: pd.DataFrame, dataset: str) -> ExpectationSuiteValidationResult:
    """Run the column suite and reject a batch without usable columns or rows."""
    # Only the checked columns go to GX, because GX fingerprints every batch it gets
    # and pickles the whole frame when a carried column contains unhashable values.
    checked = [c for c in [*REQUIRED_COLUMNS, CHURNED] if c in questionnaires.columns]
    column_result = _run_suite(
        questionnaires[checked], "questionnaire_columns", dataset, _COLUMN_RESULT_FORMAT
    )
    missing, wrong_types = [], []
    for result in column_result.results:
        rule_name = result.expectation_config.meta[_RULE_META_KEY]
        column = result.expectation_config.kwargs["column"]
        if rule_name.endswith("_exists"):
            if not result.success:
                missing.append(column)
        elif column in questionnaires.columns and not result.success:
            # A type rule of an absent column fails with an exception: the _exists rule,
            # or nothing for the optional churned column, reports it instead.
            wrong_types.append(f"{column} ({questionnaires[column].dtype})")
    if missing:
        missing = [column for column in REQUIRED_COLUMNS if column in missing]
        raise DataValidationError(
            f"{dataset}: missing required columns: {', '.join(missing)}. "
            "Add them to the questionnaire export and rerun.",
            dataset=dataset,
            batch_rule="required_columns",
            gx_results=[column_result],
        )
    if wrong_types:
        raise DataValidationError(
            f"{dataset}: columns have an unusable dtype: {', '.join(wrong_types)}. "
            f"{CLIENT_ID} and {ROW_NUMBER} must be integers and the features numeric: "
            "cast them with pd.to_numeric and rerun.",
            dataset=dataset,
            batch_rule="column_types",
            gx_results=[column_result],
        )
    _check_month_dtype(questionnaires, dataset, column_result)
    if questionnaires.empty:
        raise DataValidationError(
            f"{dataset}: no data rows. Check that the export for this month ran "
            "and wrote its rows, then rerun.",
            dataset=dataset,
            batch_rule="no_rows",
            gx_results=[column_result],
        )
    row_numbers = questionnaires[ROW_NUMBER]
    if row_numbers.isna().any() or not row_numbers.is_unique:
        raise DataValidationError(
            f"{dataset}: {ROW_NUMBER} has duplicate or null values. "
            f"Number the rows 1 to N before validation.",
            dataset=dataset,
            batch_rule="row_number_unique",
            gx_results=[column_result],
        )
    return column_result


def _check_month_dtype(
    questionnaires: pd.DataFrame, dataset: str, column_result: ExpectationSuiteValidationResult
) -> None:
    month = questionnaires[MONTH]
    if pd.api.types.is_datetime64_any_dtype(month):
        return
    kind = pd.api.types.infer_dtype(month, skipna=True)
    if kind in {"date", "datetime", "datetime64", "empty"}:
        return
    raise DataValidationError(
        f"{dataset}: column {MONTH} must hold dates but has {month.dtype} values of "
        f"kind {kind!r}, for example {month.dropna().iloc[0]!r}. Convert it with "
        "pd.to_datetime and rerun.",
        dataset=dataset,
        batch_rule="column_types",
        gx_results=[column_result],
    )


def _check_chunk_rows(chunk_rows: int | None) -> None:
    if chunk_rows is None:
        return
    is_whole = isinstance(chunk_rows, (int, np.integer)) and not isinstance(chunk_rows, bool)
    if not is_whole or chunk_rows < 1:
        raise ValueError(
            f"invalid chunk_rows {chunk_rows!r}: expected None or a whole number of at least 1"
        )


@dataclass(frozen=True)
class _BatchKeys:
    """The batch's row numbers, client ids and months as NumPy arrays, read once.

    Every slice then gets the dtype of the whole column: ``to_numpy`` of an
    ``Int64`` column gives float64 only when the column has a null. For a
    NumPy-backed column the array is a view of the caller's data.
    """

    row_numbers: np.ndarray
    client_ids: np.ndarray
    months: np.ndarray

    @classmethod
    def of(cls, questionnaires: pd.DataFrame) -> _BatchKeys:
        return cls(
            row_numbers=questionnaires[ROW_NUMBER].to_numpy(),
            client_ids=questionnaires[CLIENT_ID].to_numpy(),
            months=questionnaires[MONTH].to_numpy(),
        )


def _repeated_rows(questionnaires: pd.DataFrame, chunk_rows: int | None) -> np.ndarray:
    """Return a mask of the rows identical to an earlier row (see the module's policy).

    With ``chunk_rows``, the rows are hashed one slice at a time and only the rows
    that share a hash are compared by value, so the batch is not copied whole.
    """
    subset = [CLIENT_ID, MONTH, *FEATURES]
    if CHURNED in questionnaires.columns:
        subset.append(CHURNED)
    if chunk_rows is None:
        return questionnaires.duplicated(subset=subset, keep="first").to_numpy()

    n_rows = len(questionnaires)
    hashes = np.empty(n_rows, dtype=np.uint64)
    for start in range(0, n_rows, chunk_rows):
        part = slice(start, start + chunk_rows)
        hashes[part] = _row_hashes(questionnaires[subset].iloc[part])
    repeated = _confirmed_duplicates(
        hashes,
        lambda positions: questionnaires[subset].iloc[positions],
        keep="first",
        chunk_rows=chunk_rows,
    )
    mask = np.zeros(n_rows, dtype=bool)
    mask[repeated] = True
    return mask


# Columns of the frame the row suite validates, in its order.
_GX_COLUMNS = (*FEATURES, CHURNED, CLIENT_ID, MONTH)


def _prepare_for_gx(
    questionnaires: pd.DataFrame,
    keys: _BatchKeys,
    rows: slice | np.ndarray,
    columns: Sequence[str] = _GX_COLUMNS,
) -> pd.DataFrame:
    """Copy the columns GX reads of the rows at ``rows``, indexed by row number.

    Features and ``churned`` become float64 with NaN for nulls, so GX gets one dtype
    whether the caller passes int64, float64 or a nullable dtype such as ``Int64``.
    A batch without ``churned`` gets an all-null one, which passes its rule.
    """
    index = pd.Index(keys.row_numbers[rows], name=ROW_NUMBER)
    values = {}
    for column in columns:
        if column == CLIENT_ID:
            values[column] = keys.client_ids[rows]
        elif column == MONTH:
            values[column] = keys.months[rows]
        elif column in questionnaires.columns:
            # Selecting the rows before converting copies only them.
            series = questionnaires[column].iloc[rows]
            values[column] = series.to_numpy(dtype="float64", na_value=np.nan)
        else:
            values[column] = np.full(len(index), np.nan)
    return pd.DataFrame(values, index=index)


def _run_row_suite(
    questionnaires: pd.DataFrame,
    keys: _BatchKeys,
    repeats: np.ndarray,
    dataset: str,
    chunk_rows: int | None,
) -> ExpectationSuiteValidationResult:
    """Run the row suite on the rows that are not exact repeats of an earlier row.

    With ``chunk_rows``, GX checks one slice of at most that many rows at a time,
    and the slices' results are merged. The uniqueness rules compare rows across
    slices, so their failing rows are found for the whole batch and replace those
    GX found within each slice.
    """
    if chunk_rows is None:
        rows = np.flatnonzero(~repeats) if repeats.any() else slice(None)
        gx_frame = _prepare_for_gx(questionnaires, keys, rows)
        return _run_suite(gx_frame, "questionnaire_rows", dataset, _RESULT_FORMAT)

    kept_positions = np.flatnonzero(~repeats)
    hashes = _UniqueRuleHashes.empty(len(kept_positions))
    results, fingerprint = _run_in_slices(
        lambda part: _prepare_for_gx(questionnaires, keys, kept_positions[part]),
        len(kept_positions),
        "questionnaire_rows",
        dataset,
        chunk_rows,
        inspect=hashes.add,
    )
    unexpected_rows = {}
    for rule in _UNIQUE_RULES:
        positions = _confirmed_duplicates(
            hashes.hashes[rule.name],
            functools.partial(_unique_rule_values, questionnaires, keys, kept_positions, rule),
            keep=False,
            chunk_rows=chunk_rows,
            considered=hashes.considered[rule.name],
        )
        unexpected_rows[rule.name] = keys.row_numbers[kept_positions[positions]]
    return _merge_suite_results(results, dataset, fingerprint, unexpected_rows)


def _unique_rule_values(
    questionnaires: pd.DataFrame,
    keys: _BatchKeys,
    kept_positions: np.ndarray,
    rule: _Rule,
    positions: np.ndarray,
) -> pd.DataFrame:
    """Return a uniqueness rule's columns as GX reads them, at ``kept_positions[positions]``."""
    return _prepare_for_gx(questionnaires, keys, kept_positions[positions], columns=rule.columns)


def _run_fault_suite(
    keys: _BatchKeys,
    raw_values: dict[str, dict[int, str]],
    dataset: str,
    chunk_rows: int | None,
) -> ExpectationSuiteValidationResult:
    """Run the load-fault suite on every row, in slices of ``chunk_rows`` when given."""
    fault_codes = _fault_codes(raw_values)
    n_rows = len(keys.row_numbers)
    if chunk_rows is None:
        fault_frame = _prepare_fault_frame(keys, fault_codes, slice(0, n_rows))
        return _run_suite(fault_frame, "questionnaire_load_faults", dataset, _RESULT_FORMAT)
    results, fingerprint = _run_in_slices(
        lambda part: _prepare_fault_frame(keys, fault_codes, part),
        n_rows,
        "questionnaire_load_faults",
        dataset,
        chunk_rows,
    )
    return _merge_suite_results(results, dataset, fingerprint, {})


def _match_faults(
    questionnaires: pd.DataFrame, faults: pd.DataFrame | None
) -> tuple[dict[str, dict[int, str]], pd.DataFrame | None]:
    """Attach load faults to row positions.

    Returns:
        Per column, the raw text of each faulty row by row position, and the faults
        that matched no row (None when no faults were given).
    """
    if faults is None:
        return {}, None
    keys = [CLIENT_ID, MONTH] if MONTH in faults.columns else [CLIENT_ID]
    rows = pd.DataFrame({key: questionnaires[key].to_numpy() for key in keys})
    rows["row_position"] = np.arange(len(questionnaires))
    table = faults[[*keys, "column", "raw_value"]].reset_index(drop=True)
    table["fault_position"] = np.arange(len(table))
    for frame in (rows, table):
        # One key dtype on both sides: ids as Float64 (exact below 2**53), months as
        # datetime64, whether they came as dates, timestamps or integers.
        frame[CLIENT_ID] = pd.to_numeric(frame[CLIENT_ID], errors="coerce").astype("Float64")
        if MONTH in keys:
            frame[MONTH] = pd.to_datetime(frame[MONTH])
    # pandas matches null keys with each other, so rows without a key are left out.
    rows = rows.dropna(subset=keys)
    matched = table.merge(rows, on=keys, how="left")
    # A row whose client id did not parse cannot be matched by id.
    matched.loc[matched["column"] == CLIENT_ID, "row_position"] = np.nan
    found = matched["row_position"].notna()
    unmatched = faults.iloc[np.unique(matched.loc[~found, "fault_position"].to_numpy())]

    raw_values: dict[str, dict[int, str]] = {}
    matched = matched[found]
    for column, position, raw in zip(
        matched["column"], matched["row_position"], matched["raw_value"], strict=True
    ):
        # An empty raw text must still count as a fault, so a null becomes "".
        text = "" if pd.isna(raw) else str(raw)
        raw_values.setdefault(column, {}).setdefault(int(position), text)
    return raw_values, unmatched


@dataclass(frozen=True)
class _FaultCodes:
    """One parseable column's load faults as categorical codes, sorted by row position."""

    categories: list[str]
    positions: np.ndarray
    codes: np.ndarray


def _fault_codes(raw_values: dict[str, dict[int, str]]) -> dict[str, _FaultCodes]:
    """Encode each parseable column's raw texts by row position, for the fault frames."""
    table = {}
    for column in PARSEABLE_COLUMNS:
        faults = raw_values.get(column, {})
        categories = sorted(set(faults.values()))
        code_of = {raw: code for code, raw in enumerate(categories)}
        dtype = np.min_scalar_type(-len(categories) - 1)
        positions = np.fromiter(faults.keys(), dtype=np.int64, count=len(faults))
        codes = np.fromiter((code_of[raw] for raw in faults.values()), dtype=dtype)
        order = np.argsort(positions)
        table[column] = _FaultCodes(categories, positions[order], codes[order])
    return table


def _prepare_fault_frame(
    keys: _BatchKeys, fault_codes: dict[str, _FaultCodes], rows: slice
) -> pd.DataFrame:
    """Build the load-fault suite's frame of the rows in ``rows``: per parseable column,
    raw text or null, indexed by row number.

    The columns are categoricals, because nearly every cell is null and their codes
    take 1 or 2 bytes a row where an object column takes 8.
    """
    start, stop, _ = rows.indices(len(keys.row_numbers))
    columns = {}
    for column, faults in fault_codes.items():
        codes = np.full(stop - start, -1, dtype=faults.codes.dtype)
        low, high = np.searchsorted(faults.positions, [start, stop])
        codes[faults.positions[low:high] - start] = faults.codes[low:high]
        columns[f"{column}{_RAW_SUFFIX}"] = pd.Categorical.from_codes(codes, faults.categories)
    index = pd.Index(keys.row_numbers[start:stop], name=ROW_NUMBER)
    return pd.DataFrame(columns, index=index)


def _failed_rows_by_rule(
    suite_result: ExpectationSuiteValidationResult,
    dataset: str,
    gx_results: Sequence[ExpectationSuiteValidationResult],
) -> dict[str, np.ndarray]:
    """Return, per rule of the suite, the row numbers that broke it.

    ``suite_result.results`` is not in suite order in GX 1.24, so each result is
    matched to its rule by the rule name stored in the expectation's meta.
    """
    failures = {}
    for result in suite_result.results:
        rule_name = result.expectation_config.meta[_RULE_META_KEY]
        failures[rule_name] = _failed_row_numbers(result, rule_name, dataset, gx_results)
    return failures


def _failed_row_numbers(
    result: Any,
    rule_name: str,
    dataset: str,
    gx_results: Sequence[ExpectationSuiteValidationResult],
) -> np.ndarray:
    error = _gx_exception_message(result.exception_info)
    if error is not None:
        raise DataValidationError(
            f"{dataset}: rule {rule_name} could not be evaluated: {error}. "
            "Check the dtypes of its columns and rerun.",
            dataset=dataset,
            batch_rule="rule_evaluation",
            gx_results=gx_results,
        )
    if result.success:
        return np.empty(0, dtype="int64")
    row_numbers = _row_numbers_from_index_list(result.result.get("unexpected_index_list", []))
    # A shorter index list than the count would let failing rows through as valid.
    if len(row_numbers) != result.result.get("unexpected_count"):
        raise RuntimeError(
            f"GX listed {len(row_numbers)} failing rows for rule {rule_name} "
            f"but counted {result.result.get('unexpected_count')}"
        )
    return row_numbers


def _row_numbers_from_index_list(index_list: list[dict[str, Any]]) -> np.ndarray:
    """Collect the row numbers of GX's ``unexpected_index_list``.

    GX 1.24 returns one dict holding a list of row numbers when unexpected values
    are excluded, and one dict per failing row otherwise, so both shapes are read.
    """
    row_numbers: list[Any] = []
    for entry in index_list:
        value = entry[ROW_NUMBER]
        if isinstance(value, list):
            row_numbers.extend(value)
        else:
            row_numbers.append(value)
    return np.asarray(row_numbers, dtype="int64")


def _gx_exception_message(exception_info: Any) -> str | None:
    """Return the message of an exception GX caught while evaluating a rule.

    GX 1.24 stores ``exception_info`` either flat or keyed by metric, so both
    shapes are searched.
    """
    if not exception_info:
        return None
    candidates = [exception_info, *exception_info.values()]
    for info in candidates:
        if isinstance(info, dict) and info.get("raised_exception", True):
            message = info.get("exception_message")
            if message:
                return str(message)
    return None


# ---------------------------------------------------------------------------
# Validation in slices

# The compound uniqueness rules compare each row with every other row of the
# batch, so they are decided for the whole batch, not within a slice.
_UNIQUE_RULES = tuple(
    rule for rule in _ROW_RULES if rule.name in {"client_month_unique", IDENTICAL_ANSWERS}
)

# Fields of a rule's GX result under _RESULT_FORMAT, by how the slices' values combine.
_SUMMED_FIELDS = ("element_count", "unexpected_count", "missing_count")
_PERCENT_FIELDS = (
    "unexpected_percent",
    "missing_percent",
    "unexpected_percent_total",
    "unexpected_percent_nonmissing",
)
_SHARED_FIELDS = ("unexpected_index_column_names",)
_INDEX_LIST_FIELD = "unexpected_index_list"
_FINGERPRINT_KEY = "pandas_data_fingerprint"


def _run_in_slices(
    build_frame: Callable[[slice], pd.DataFrame],
    n_rows: int,
    suite_name: str,
    dataset: str,
    chunk_rows: int,
    inspect: Callable[[pd.DataFrame, slice], None] | None = None,
) -> tuple[list[ExpectationSuiteValidationResult], _Fingerprint]:
    """Run a suite on consecutive slices of at most ``chunk_rows`` of ``n_rows`` rows.

    ``build_frame`` makes a slice's frame just before its GX run, and the frame is
    dropped after the run, so one slice's copy exists at a time. ``inspect`` gets
    each frame after its run.

    Returns:
        The slices' GX results in row order, and the fingerprint of their frames.
    """
    results = []
    fingerprint = _Fingerprint()
    for start in range(0, n_rows, chunk_rows):
        part = slice(start, min(start + chunk_rows, n_rows))
        frame = build_frame(part)
        results.append(_run_suite(frame, suite_name, dataset, _RESULT_FORMAT))
        fingerprint.update(frame)
        if inspect is not None:
            inspect(frame, part)
        # Without this the next slice's frame is built while this one is alive.
        del frame
    return results, fingerprint


@dataclass(frozen=True)
class _UniqueRuleHashes:
    """Per uniqueness rule, a hash of each row's values and whether GX compares the row."""

    hashes: dict[str, np.ndarray]
    considered: dict[str, np.ndarray]

    @classmethod
    def empty(cls, n_rows: int) -> _UniqueRuleHashes:
        return cls(
            hashes={rule.name: np.empty(n_rows, dtype=np.uint64) for rule in _UNIQUE_RULES},
            considered={rule.name: np.empty(n_rows, dtype=bool) for rule in _UNIQUE_RULES},
        )

    def add(self, frame: pd.DataFrame, part: slice) -> None:
        """Fill in the rows of ``part`` from their row-suite frame."""
        for rule in _UNIQUE_RULES:
            values = frame[list(rule.columns)]
            # GX leaves out of a compound rule the rows whose values are all missing.
            self.considered[rule.name][part] = values.notna().any(axis=1).to_numpy()
            self.hashes[rule.name][part] = _row_hashes(values)


def _row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """Hash each row so that rows which ``DataFrame.duplicated`` finds equal hash equal.

    Rows with different values can share a hash, so equal hashes only mark
    candidates to compare.
    """
    comparable = {column: _comparable_values(frame[column]) for column in frame.columns}
    return pd.util.hash_pandas_object(pd.DataFrame(comparable), index=False).to_numpy()


def _comparable_values(column: pd.Series) -> np.ndarray:
    """Map a column to an array in which the values pandas finds equal are equal.

    ``DataFrame.duplicated`` of several columns treats every null of a column as
    one value, and 0.0 as equal to -0.0, so these get one representation each.
    """
    if pd.api.types.is_bool_dtype(column.dtype) or pd.api.types.is_numeric_dtype(column.dtype):
        values = column.to_numpy(dtype="float64", na_value=np.nan)
        return np.where(np.isnan(values), np.nan, values + 0.0)
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        # NaT is one fixed integer.
        return column.array.asi8
    # duplicated() compares a column through pd.factorize, which codes every null
    # -1. Python's hash of each distinct value is the same in every slice.
    codes, uniques = pd.factorize(column.to_numpy(dtype=object))
    keys = np.array([*(hash(value) for value in uniques), 0], dtype=np.int64)
    return keys[codes]


def _confirmed_duplicates(
    hashes: np.ndarray,
    rows_at: Callable[[np.ndarray], pd.DataFrame],
    *,
    keep: str | bool,
    chunk_rows: int,
    considered: np.ndarray | None = None,
) -> np.ndarray:
    """Return the positions ``DataFrame.duplicated(keep=keep)`` flags, found through hashes.

    Rows with equal values share a hash, so a row whose hash no other row has is
    no duplicate. The rows that share a hash are read back with ``rows_at`` and
    compared by pandas, whole groups of equal hashes at a time, so a hash
    collision flags no row. A read-back contains the groups that start within
    ``chunk_rows`` candidates, so it exceeds that only by its last group.

    Args:
        hashes: One hash a row, from ``_row_hashes``.
        rows_at: Returns the compared columns of the rows at the sorted positions given.
        keep: As in ``DataFrame.duplicated``.
        chunk_rows: Number of candidate rows read back at a time.
        considered: Mask of the rows to compare, or None for every row.

    Returns:
        The flagged positions, sorted.
    """
    positions = np.arange(len(hashes)) if considered is None else np.flatnonzero(considered)
    positions = positions[np.argsort(hashes[positions], kind="stable")]
    sorted_hashes = hashes[positions]
    same_as_next = sorted_hashes[1:] == sorted_hashes[:-1]
    shared = np.zeros(len(positions), dtype=bool)
    shared[1:] |= same_as_next
    shared[:-1] |= same_as_next
    positions, sorted_hashes = positions[shared], sorted_hashes[shared]
    if len(positions) == 0:
        return np.empty(0, dtype=np.int64)

    group_starts = np.flatnonzero(np.r_[True, sorted_hashes[1:] != sorted_hashes[:-1]])
    window = group_starts // chunk_rows
    batch_starts = group_starts[np.r_[True, window[1:] != window[:-1]]]
    flagged = []
    for low, high in zip(batch_starts, [*batch_starts[1:], len(positions)], strict=True):
        batch = np.sort(positions[low:high])
        flagged.append(batch[rows_at(batch).duplicated(keep=keep).to_numpy()])
    return np.sort(np.concatenate(flagged))


class _Fingerprint:
    """The ``pandas_data_fingerprint`` GX gives a whole frame, computed slice by slice.

    GX 1.24 stores in a batch's markers the MD5 of ``hash_pandas_object(frame,
    index=True)`` when the frame's shallow size is under ``HASH_THRESHOLD`` bytes.
    Row hashes do not depend on the other rows, so the slices' hashes fed in row
    order give the whole frame's digest.
    """

    def __init__(self) -> None:
        self._digest = hashlib.md5(usedforsecurity=False)
        self._n_bytes = 0

    def update(self, frame: pd.DataFrame) -> None:
        self._digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy())
        # NOTE: a load-fault frame's categories are counted once a slice, so the
        # size is a little over what GX counts for the whole frame.
        self._n_bytes += int(frame.memory_usage().sum())

    def markers(self, slice_markers: BatchMarkers) -> BatchMarkers:
        """Return a slice's batch markers with the whole frame's fingerprint."""
        markers = {key: value for key, value in slice_markers.items() if key != _FINGERPRINT_KEY}
        if self._n_bytes < HASH_THRESHOLD:
            markers[_FINGERPRINT_KEY] = self._digest.hexdigest()
        return BatchMarkers(markers)


def _merge_suite_results(
    results: Sequence[ExpectationSuiteValidationResult],
    dataset: str,
    fingerprint: _Fingerprint,
    unexpected_rows: dict[str, np.ndarray],
) -> ExpectationSuiteValidationResult:
    """Merge one suite's results on consecutive slices into the whole batch's result.

    Args:
        results: The slices' results, in row order.
        dataset: Label of the batch, the run name of the merged result.
        fingerprint: Fingerprint of the slices' frames.
        unexpected_rows: Per rule name, the failing row numbers found across the
            whole batch, which replace those GX found within the slices.
    """
    first = results[0]
    by_rule = [{_rule_name(result): result for result in suite.results} for suite in results]
    merged = []
    for result in first.results:
        name = _rule_name(result)
        parts = [results_of_slice[name] for results_of_slice in by_rule]
        merged.append(_merge_expectation_results(parts, unexpected_rows.get(name)))
    statistics = calc_validation_statistics(merged)
    meta = {key: value for key, value in first.meta.items() if key != "run_id"}
    meta["batch_markers"] = fingerprint.markers(first.meta["batch_markers"])
    suite_result = ExpectationSuiteValidationResult(
        success=statistics.success,
        results=merged,
        suite_name=first.suite_name,
        suite_parameters=first.suite_parameters,
        statistics={
            "evaluated_expectations": statistics.evaluated_expectations,
            "successful_expectations": statistics.successful_expectations,
            "unsuccessful_expectations": statistics.unsuccessful_expectations,
            "success_percent": statistics.success_percent,
        },
        meta=meta,
        batch_id=first.batch_id,
        result_url=first.result_url,
        id=first.id,
    )
    suite_result.meta["run_id"] = RunIdentifier(run_name=dataset, run_time=dt.datetime.now(dt.UTC))
    logger.debug(
        "Merged %d slices' results of %s: %d failed expectations",
        len(results),
        first.suite_name,
        statistics.unsuccessful_expectations,
    )
    return suite_result


def _merge_expectation_results(
    parts: Sequence[ExpectationValidationResult], unexpected_rows: np.ndarray | None
) -> ExpectationValidationResult:
    """Merge one rule's results on consecutive slices, as GX reports the whole batch.

    A slice where GX could not evaluate the rule makes the whole batch's rule
    fail to evaluate, so that slice's result is returned.
    """
    for part in parts:
        if _gx_exception_message(part.exception_info) is not None:
            return part
    first = parts[0]
    known = {*_SUMMED_FIELDS, *_PERCENT_FIELDS, *_SHARED_FIELDS, _INDEX_LIST_FIELD}
    unknown = sorted(set(first.result) - known)
    if unknown:
        raise RuntimeError(
            f"cannot merge the GX result fields {', '.join(unknown)} of rule "
            f"{_rule_name(first)} across slices: validate without chunk_rows"
        )

    counts = {
        field: sum(part.result[field] for part in parts)
        for field in _SUMMED_FIELDS
        if field in first.result
    }
    if unexpected_rows is None:
        index_list = _merge_index_lists([part.result[_INDEX_LIST_FIELD] for part in parts])
    else:
        counts["unexpected_count"] = len(unexpected_rows)
        index_list = [{ROW_NUMBER: unexpected_rows.tolist()}] if len(unexpected_rows) else []
    result = dict(first.result)
    result.update(counts)
    result.update(_map_percentages(counts))
    result[_INDEX_LIST_FIELD] = index_list
    return ExpectationValidationResult(
        success=_map_success(first.expectation_config.kwargs, counts),
        expectation_config=first.expectation_config,
        result=result,
        meta=first.meta,
        exception_info=first.exception_info,
        rendered_content=first.rendered_content,
    )


def _merge_index_lists(index_lists: Sequence[list[dict[str, list]]]) -> list[dict[str, list]]:
    """Concatenate the slices' ``unexpected_index_list`` in row order.

    With ``exclude_unexpected_values``, GX 1.24 lists a slice's failing row
    numbers in one dict, or returns an empty list when no row failed.
    """
    merged: dict[str, list] = {}
    for index_list in index_lists:
        for entry in index_list:
            for column, values in entry.items():
                merged.setdefault(column, []).extend(values)
    return [merged] if merged else []


def _map_percentages(counts: dict[str, int]) -> dict[str, float | None]:
    """Compute the percent fields of a map rule's result from its counts, as GX 1.24 does.

    Rules that count missing values (all but the null rules) give the unexpected
    share of the rows that are not missing.
    """
    n_elements = counts["element_count"]
    n_unexpected = counts["unexpected_count"]
    share_of_all = n_unexpected / n_elements * 100 if n_elements > 0 else None
    if "missing_count" not in counts:
        return {"unexpected_percent": share_of_all}
    n_missing = counts["missing_count"]
    n_present = n_elements - n_missing
    share_of_present = n_unexpected / n_present * 100 if n_elements > 0 and n_present > 0 else None
    return {
        "unexpected_percent": share_of_present,
        "missing_percent": n_missing / n_elements * 100 if n_elements > 0 else None,
        "unexpected_percent_total": share_of_all,
        "unexpected_percent_nonmissing": share_of_present,
    }


def _map_success(kwargs: dict[str, Any], counts: dict[str, int]) -> bool:
    """Decide a map rule's success from its counts and ``mostly``, as GX 1.24 does."""
    n_considered = counts["element_count"] - counts.get("missing_count", 0)
    if n_considered == 0:
        return True
    mostly = kwargs.get("mostly", 1)
    return (n_considered - counts["unexpected_count"]) / n_considered >= mostly


def _rule_name(result: ExpectationValidationResult) -> str:
    return result.expectation_config.meta[_RULE_META_KEY]


# ---------------------------------------------------------------------------
# Report


def _build_report(
    questionnaires: pd.DataFrame,
    dataset: str,
    failures: dict[str, np.ndarray],
    raw_values: dict[str, dict[int, str]],
) -> ValidationReport:
    positions = pd.Index(questionnaires[ROW_NUMBER].to_numpy())
    quarantine_rules = [rule for rule in _REPORT_RULES if rule.severity == QUARANTINE]
    rule_positions = {}
    results = []
    for rule in _REPORT_RULES:
        found = failures.get(rule.name, np.empty(0, dtype="int64"))
        rule_positions[rule.name] = np.sort(positions.get_indexer(found))
        results.append(_rule_result(questionnaires, rule, rule_positions[rule.name], raw_values))
    is_quarantined = np.zeros(len(questionnaires), dtype=bool)
    for rule in quarantine_rules:
        is_quarantined[rule_positions[rule.name]] = True
    quarantined_positions = np.flatnonzero(is_quarantined)
    # The matrix has a row for each quarantined row only, because most rows pass
    # every rule.
    failed = np.zeros((len(quarantined_positions), len(quarantine_rules)), dtype=bool)
    for column_index, rule in enumerate(quarantine_rules):
        rows = np.searchsorted(quarantined_positions, rule_positions[rule.name])
        failed[rows, column_index] = True

    # With copy-on-write, adding columns to this selection leaves the caller's frame
    # unchanged, so no copy is needed.
    quarantined = questionnaires.iloc[quarantined_positions]
    names = [rule.name for rule in quarantine_rules]
    quarantined[FAILED_RULES] = _failed_rule_lists(failed, names, quarantined)
    quarantined[FAILED_VALUES] = _failed_value_dicts(
        questionnaires, quarantine_rules, rule_positions, quarantined_positions, raw_values
    )
    return ValidationReport(
        dataset=dataset,
        n_rows=len(questionnaires),
        rules=tuple(results),
        valid=_valid_rows(questionnaires, is_quarantined),
        quarantined=quarantined,
    )


def _valid_rows(questionnaires: pd.DataFrame, is_quarantined: np.ndarray) -> pd.DataFrame:
    """Return the rows no quarantine rule flagged, without copying their data.

    With pandas' copy-on-write (always on from pandas 3), a shallow copy shares the
    caller's columns until either frame changes, so a clean month of a million rows
    is not held twice. ``iloc`` with positions makes the new arrays itself.
    """
    if not is_quarantined.any():
        return questionnaires.copy(deep=False)
    return questionnaires.iloc[np.flatnonzero(~is_quarantined)]


def _rule_result(
    questionnaires: pd.DataFrame,
    rule: _Rule,
    positions: np.ndarray,
    raw_values: dict[str, dict[int, str]],
) -> RuleResult:
    if rule.name == IDENTICAL_ANSWERS:
        examples = _identical_answer_examples(questionnaires, positions)
    else:
        examples = []
        for position in positions[:_MAX_EXAMPLES]:
            values = _failing_values(questionnaires, rule, int(position), raw_values)
            value = next(iter(values.values())) if len(values) == 1 else tuple(values.values())
            client_id = _python_scalar(questionnaires[CLIENT_ID].iat[position])
            examples.append((client_id, value))
    return RuleResult(
        rule=rule.name,
        columns=rule.columns,
        description=rule.description,
        n_failed=len(positions),
        examples=tuple(examples),
        severity=rule.severity,
    )


def _failing_values(
    questionnaires: pd.DataFrame,
    rule: _Rule,
    position: int,
    raw_values: dict[str, dict[int, str]],
) -> dict[str, Any]:
    if rule.name.endswith("_parseable"):
        column = rule.columns[0]
        return {column: raw_values[column][position]}
    return {column: _python_scalar(questionnaires[column].iat[position]) for column in rule.columns}


def _identical_answer_examples(questionnaires: pd.DataFrame, positions: np.ndarray) -> list:
    """Pair up to five flagged rows with the other client ids that gave the same answers."""
    if len(positions) == 0:
        return []
    answers = questionnaires[[MONTH, *FEATURES]].iloc[positions]
    hashes = pd.util.hash_pandas_object(answers, index=False).to_numpy()
    client_ids = questionnaires[CLIENT_ID].iloc[positions].to_numpy()
    examples = []
    for offset in range(min(_MAX_EXAMPLES, len(positions))):
        same = np.flatnonzero(hashes == hashes[offset])
        others = [_python_scalar(client_ids[i]) for i in same if i != offset][:_MAX_EXAMPLES]
        examples.append((_python_scalar(client_ids[offset]), tuple(others)))
    return examples


def _python_scalar(value: Any) -> Any:
    """Convert a numpy scalar to Python, and any null (NaN, NA, NaT) to None."""
    if value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _failed_rule_lists(
    failed: np.ndarray, names: list[str], quarantined: pd.DataFrame
) -> pd.Series:
    """Turn the failed-rule matrix of quarantined rows into sorted name lists."""
    if len(failed) == 0:
        return pd.Series([], index=quarantined.index, dtype=object)
    order = np.argsort(names)
    sorted_names = np.array(names, dtype=object)[order]
    rows, columns = np.nonzero(failed[:, order])
    # np.nonzero walks the matrix row by row, so each row's names come out in
    # sorted order and contiguous.
    boundaries = np.cumsum(np.bincount(rows, minlength=len(failed)))[:-1]
    lists = [list(names) for names in np.split(sorted_names[columns], boundaries)]
    return pd.Series(lists, index=quarantined.index, dtype=object)


def _failed_value_dicts(
    questionnaires: pd.DataFrame,
    rules: Sequence[_Rule],
    rule_positions: dict[str, np.ndarray],
    quarantined_positions: np.ndarray,
    raw_values: dict[str, dict[int, str]],
) -> pd.Series:
    """Build, per quarantined row, rule name -> {column: failing value}, rules sorted."""
    dicts: list[dict[str, dict[str, Any]]] = [{} for _ in quarantined_positions]
    for rule in sorted(rules, key=lambda rule: rule.name):
        positions = rule_positions[rule.name]
        if len(positions) == 0:
            continue
        targets = np.searchsorted(quarantined_positions, positions)
        if rule.name.endswith("_parseable"):
            column = rule.columns[0]
            for target, position in zip(targets, positions, strict=True):
                dicts[target][rule.name] = {column: raw_values[column][int(position)]}
            continue
        per_column = []
        for column in rule.columns:
            values = questionnaires[column].iloc[positions].to_numpy(dtype=object)
            per_column.append([_python_scalar(value) for value in values])
        for target, row_values in zip(targets, zip(*per_column, strict=True), strict=True):
            dicts[target][rule.name] = dict(zip(rule.columns, row_values, strict=True))
    index = questionnaires.index[quarantined_positions]
    return pd.Series(dicts, index=index, dtype=object)


def _check_invalid_share(report: ValidationReport, max_invalid_share: float) -> None:
    share = report.n_quarantined / report.n_rows
    if share <= max_invalid_share:
        return
    failed = [result for result in report.failed_rules if result.severity == QUARANTINE]
    failed.sort(key=lambda result: -result.n_failed)
    top = ", ".join(f"{result.rule} {result.n_failed}" for result in failed[:_MAX_RULES_IN_MESSAGE])
    raise DataValidationError(
        f"{report.dataset}: {share:.1%} of rows ({report.n_quarantined} of "
        f"{report.n_rows}) broke a row rule, more than the allowed "
        f"{max_invalid_share:.1%}. Top failing rules: {top}. Fix the export and "
        "rerun, or raise GYMCHURN_MAX_INVALID_SHARE if this share is expected.",
        dataset=report.dataset,
        rules=report.failed_rules,
        batch_rule="max_invalid_share",
        report=report,
        gx_results=report.gx_results,
    )


def _fault_lines(faults: pd.DataFrame) -> str:
    return ", ".join(str(_python_scalar(line)) for line in faults["line"].head(_MAX_EXAMPLES))


# ---------------------------------------------------------------------------
# Data Docs


def build_data_docs(
    sources: Iterable[ValidationReport | DataValidationError | ExpectationSuiteValidationResult],
    folder: str | Path,
    *,
    site_name: str = "gymchurn_validation",
) -> Path:
    """Write GX Data Docs HTML for a run's validation results into ``folder``.

    Each source contributes its GX results: a report and a rejected batch's error
    carry them in ``gx_results``. A fresh ephemeral context holds only these results,
    so the site's index lists this run alone: pages of an earlier build into the same
    folder stay on disk, unlisted. The pages load their CSS and JavaScript from public
    CDNs, so offline they show unstyled.

    Returns:
        The path of the site's ``index.html``.

    Raises:
        ValueError: When the sources hold no GX result.
        DataDocsError: When GX failed to write a page; the index may be missing
            or list fewer results. Also when ``folder`` cannot be written, for
            example because it is a file.
    """
    results = []
    for source in sources:
        if isinstance(source, ExpectationSuiteValidationResult):
            results.append(source)
        else:
            results.extend(source.gx_results)
    if not results:
        raise ValueError("no GX validation results to build Data Docs from")
    folder = Path(folder).resolve()
    context = gx.get_context(mode="ephemeral", project_config=_context_config())
    context.add_data_docs_site(
        site_name=site_name,
        site_config={
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(folder),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    suites = {suite.name: suite for suite in _cached_suites()}
    for result in results:
        _store_for_docs(context, result)
        # The suite pages list every rule with its description, also those that passed.
        suite = suites.pop(result.suite_name, None)
        if suite is not None:
            configurations = [expectation.configuration for expectation in suite.expectations]
            context.suites.add(gx.ExpectationSuite(name=suite.name, expectations=configurations))
    render_errors = []
    collect = _collect_errors(render_errors)
    site_builder_logger = logging.getLogger(_GX_SITE_BUILDER_LOGGER)
    site_builder_logger.addFilter(collect)
    try:
        context.build_data_docs(site_names=[site_name])
    except OSError as error:
        raise DataDocsError(
            f"cannot write Data Docs to {folder}: {error.strerror}: "
            f"{error.filename or folder}; give a folder that can be created and written to"
        ) from error
    finally:
        site_builder_logger.removeFilter(collect)
    index = folder / "index.html"
    if render_errors:
        for record in render_errors:
            logger.debug("GX Data Docs error: %s", record.getMessage())
        raise DataDocsError(
            f"Data Docs in {folder} are incomplete: Great Expectations failed to write "
            f"{len(render_errors)} page(s): {_render_error_reason(render_errors[0])}"
        )
    logger.info("Built Data Docs of %d validation result(s) at %s", len(results), index)
    return index


class DataDocsError(RuntimeError):
    """Great Expectations failed to write a page of the Data Docs."""


# GX logs a page it fails to render at ERROR on this logger and goes on.
_GX_SITE_BUILDER_LOGGER = "great_expectations.render.renderer.site_builder"

# GX rejects a store key that contains a path separator, and each key part
# becomes a folder name, so a run or batch name keeps only these characters.
_UNSAFE_KEY_CHARACTERS = re.compile(r"[^A-Za-z0-9 ._-]+")


def _collect_errors(records: list[logging.LogRecord]) -> Callable[[logging.LogRecord], bool]:
    """Return a logging filter that moves ERROR records into ``records`` and drops them."""

    def keep(record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            records.append(record)
            return False
        return True

    return keep


def _render_error_reason(record: logging.LogRecord) -> str:
    # The message is a fixed preamble, then 'ValueError: "...".  Traceback: "..."'.
    detail = record.getMessage().split("Detailed information follows:", 1)[-1]
    return detail.split(".  Traceback:", 1)[0].strip()


def _safe_key(name: str | None, default: str) -> str:
    """Turn a run or batch name, perhaps a file path, into a Data Docs key part.

    Returns:
        The base name of the path with every character other than letters,
        digits, space, ``.``, ``_`` and ``-`` replaced by ``_``; ``default``
        when nothing is left.
    """
    base = (name or "").replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    safe = _UNSAFE_KEY_CHARACTERS.sub("_", base).strip(" .")
    return safe or default


def _store_for_docs(context: Any, result: ExpectationSuiteValidationResult) -> None:
    suite_identifier = ExpectationSuiteIdentifier(name=result.suite_name)
    run_id = result.meta.get("run_id")
    if not isinstance(run_id, RunIdentifier):
        run_id = RunIdentifier(run_name="validation", run_time=dt.datetime.now(dt.UTC))
    key = ValidationResultIdentifier(
        expectation_suite_identifier=suite_identifier,
        run_id=RunIdentifier(
            run_name=_safe_key(run_id.run_name, "validation"), run_time=run_id.run_time
        ),
        batch_identifier=_safe_key(result.batch_id, "batch"),
    )
    context.validation_results_store.set(key, result)


def _cached_suites() -> tuple[gx.ExpectationSuite, ...]:
    with _GX_LOCK:
        objects = _gx_objects()
    return objects.column_suite, objects.row_suite, objects.fault_suite


# ---------------------------------------------------------------------------
# Results table


RESULT_COLUMNS = (
    "run_id",
    "month",
    "dataset",
    "kind",
    "rule",
    "severity",
    "n_failed",
    "share",
    "message",
    "examples",
    "numbers",
)


def validation_result_rows(
    month: dt.date,
    *,
    run_id: uuid.UUID | None = None,
    reports: Sequence[ValidationReport] = (),
    findings: Sequence[Finding] = (),
    findings_dataset: str | None = None,
    error: DataValidationError | None = None,
) -> list[dict[str, Any]]:
    """Turn a run's validation outcome into rows for ``churn.validation_results``.

    One row per row rule of each report (passed or not), one per batch finding and
    one for a batch rejected with ``DataValidationError`` (with its report's rules
    when the row rules ran). Columns, in ``RESULT_COLUMNS`` order:

    - ``run_id`` uuid, null when not given; ``month`` date; ``dataset`` text: the
      report's or error's label, ``findings_dataset`` for findings.
    - ``kind`` text: ``row`` for a row rule, ``batch`` for a finding or a rejection.
    - ``rule`` text: the rule name, for example ``age_in_range``, ``row_count``,
      ``required_columns``.
    - ``severity`` text: ``quarantine`` or ``warning`` for row rules, the finding's
      ``error``, ``warning`` or ``block_training``, and ``error`` for a rejection.
    - ``n_failed`` integer and ``share`` double precision (of the batch's rows),
      null where they do not apply.
    - ``message`` text: what was checked and found.
    - ``examples`` jsonb and ``numbers`` jsonb, as JSON text: a list of
      ``{"client_id": ..., "values": {...}}`` for row rules, the finding's examples
      and numbers otherwise. Dates are ISO strings and nulls are JSON null.
    """
    rows: list[dict[str, Any]] = []
    reports = list(reports)
    if error is not None and error.report is not None and error.report not in reports:
        reports.append(error.report)
    for report in reports:
        rows.extend(_report_rows(month, run_id, report))
    dataset = findings_dataset or f"questionnaires of {month:%Y-%m}"
    for finding in findings:
        rows.append(
            {
                "run_id": run_id,
                "month": month,
                "dataset": dataset,
                "kind": "batch",
                "rule": finding.rule,
                "severity": finding.severity,
                "n_failed": finding.count,
                "share": finding.share,
                "message": finding.message,
                "examples": _to_json(list(finding.examples)),
                "numbers": _to_json(dict(finding.numbers)),
            }
        )
    if error is not None:
        rows.append(
            {
                "run_id": run_id,
                "month": month,
                "dataset": error.dataset,
                "kind": "batch",
                "rule": error.batch_rule,
                "severity": "error",
                "n_failed": None,
                "share": None,
                "message": str(error),
                "examples": _to_json([]),
                "numbers": _to_json({}),
            }
        )
    return rows


def _report_rows(
    month: dt.date, run_id: uuid.UUID | None, report: ValidationReport
) -> list[dict[str, Any]]:
    rows = []
    for result in report.rules:
        if result.n_failed:
            action = "kept" if result.severity == WARNING else "quarantined"
            message = f"{result.description}: {result.n_failed} row(s) {action}"
        else:
            message = f"{result.description}: passed"
        rows.append(
            {
                "run_id": run_id,
                "month": month,
                "dataset": report.dataset,
                "kind": "row",
                "rule": result.rule,
                "severity": result.severity,
                "n_failed": result.n_failed,
                "share": result.n_failed / report.n_rows,
                "message": message,
                "examples": _to_json([_example_record(result, e) for e in result.examples]),
                "numbers": _to_json({"n_rows": report.n_rows}),
            }
        )
    return rows


def _example_record(result: RuleResult, example: tuple) -> dict[str, Any]:
    client_id, value = example
    if result.rule == IDENTICAL_ANSWERS:
        return {"client_id": client_id, "same_answers_as": list(value)}
    if len(result.columns) == 1:
        return {"client_id": client_id, "values": {result.columns[0]: value}}
    return {"client_id": client_id, "values": dict(zip(result.columns, value, strict=True))}


def _to_json(value: Any) -> str:
    return json.dumps(_json_safe(value), allow_nan=False)


def _json_safe(value: Any) -> Any:
    """Convert nested values to JSON types: dates to ISO text, NaN and NA to None."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    value = _python_scalar(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot encode {type(value).__name__} value {value!r} as JSON")
