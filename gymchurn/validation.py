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

Batch rules that compare a month with earlier months live in ``gymchurn.batch_rules``.
All Great Expectations imports of the package live in this module.
"""

from __future__ import annotations

import datetime as dt
import functools
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
from great_expectations.core.batch_definition import BatchDefinition
from great_expectations.core.expectation_validation_result import (
    ExpectationSuiteValidationResult,
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

    Returns:
        The report with every row rule and the valid and quarantined rows.

    Raises:
        DataValidationError: When a required column is missing or has the wrong
            dtype, ``row_number`` is not unique, the batch has no rows, GX could not
            evaluate a rule, or more than ``max_invalid_share`` of the rows are
            quarantined.
        ValueError: When ``max_invalid_share`` is outside 0 to 1, or ``faults``
            lacks a column or names a column that is not parsed from the file.
    """
    if not 0.0 <= max_invalid_share <= 1.0:
        raise ValueError(f"invalid max_invalid_share {max_invalid_share!r}: expected 0 to 1")
    _check_fault_table(faults)
    started = time.perf_counter()
    column_result = _check_columns(questionnaires, dataset)
    repeats = _repeated_rows(questionnaires)
    gx_frame = _prepare_for_gx(questionnaires, keep=~repeats)
    row_result = _run_suite(gx_frame, "questionnaire_rows", dataset, _RESULT_FORMAT)
    gx_results = [column_result, row_result]
    failures = _failed_rows_by_rule(row_result, dataset, gx_results)
    failures[DUPLICATE_ROW] = questionnaires[ROW_NUMBER].to_numpy()[repeats]

    raw_values, unmatched = _match_faults(questionnaires, faults)
    if raw_values:
        fault_frame = _prepare_fault_frame(questionnaires, raw_values)
        fault_result = _run_suite(fault_frame, "questionnaire_load_faults", dataset, _RESULT_FORMAT)
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


def _repeated_rows(questionnaires: pd.DataFrame) -> np.ndarray:
    """Return a mask of the rows identical to an earlier row (see the module's policy)."""
    subset = [CLIENT_ID, MONTH, *FEATURES]
    if CHURNED in questionnaires.columns:
        subset.append(CHURNED)
    return questionnaires.duplicated(subset=subset, keep="first").to_numpy()


def _prepare_for_gx(questionnaires: pd.DataFrame, keep: np.ndarray) -> pd.DataFrame:
    """Copy the kept rows' columns GX reads, indexed by row number, with float64 values.

    Features and ``churned`` become float64 with NaN for nulls, so GX gets one dtype
    whether the caller passes int64, float64 or a nullable dtype such as ``Int64``.
    A batch without ``churned`` gets an all-null one, which passes its rule.
    """
    # Masking each column's array, not the frame, avoids a copy of the whole frame.
    selected = slice(None) if keep.all() else keep
    index = pd.Index(questionnaires[ROW_NUMBER].to_numpy()[selected], name=ROW_NUMBER)
    columns = {
        column: questionnaires[column].to_numpy(dtype="float64", na_value=np.nan)[selected]
        for column in FEATURES
    }
    if CHURNED in questionnaires.columns:
        churned = questionnaires[CHURNED].to_numpy(dtype="float64", na_value=np.nan)
        columns[CHURNED] = churned[selected]
    else:
        columns[CHURNED] = np.full(len(index), np.nan)
    for column in [CLIENT_ID, MONTH]:
        columns[column] = questionnaires[column].to_numpy()[selected]
    return pd.DataFrame(columns, index=index)


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


def _prepare_fault_frame(
    questionnaires: pd.DataFrame, raw_values: dict[str, dict[int, str]]
) -> pd.DataFrame:
    """Build the load-fault suite's frame: per parseable column, raw text or null.

    The columns are categoricals, because nearly every cell is null and their codes
    take 1 or 2 bytes a row where an object column takes 8.
    """
    columns = {}
    for column in PARSEABLE_COLUMNS:
        faults = raw_values.get(column, {})
        categories = sorted(set(faults.values()))
        code_of = {raw: code for code, raw in enumerate(categories)}
        codes = np.full(len(questionnaires), -1, dtype=np.min_scalar_type(-len(categories) - 1))
        for position, raw in faults.items():
            codes[position] = code_of[raw]
        columns[f"{column}{_RAW_SUFFIX}"] = pd.Categorical.from_codes(codes, categories)
    index = pd.Index(questionnaires[ROW_NUMBER].to_numpy(), name=ROW_NUMBER)
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
            or list fewer results.
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
