"""Settings of the monthly job, read from the environment.

Every setting has a ``GYMCHURN_`` environment variable (``GYMCHURN_MODEL_DIR``),
except the database URL, which is the conventional ``DATABASE_URL``.
"""

from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration of one process of the job."""

    model_config = SettingsConfigDict(env_prefix="GYMCHURN_", extra="ignore")

    database_url: SecretStr | None = Field(default=None, validation_alias="DATABASE_URL")
    """PostgreSQL URL. Unset: an embedded PostgreSQL under ``home``."""

    home: Path = Path(".gymchurn")
    """Folder of local state: the embedded database and Prefect's files."""

    model_dir: Path = Path("models")
    """Folder the model files are written to and loaded from."""

    output_dir: Path = Path("output")
    """Folder of the at-risk exports."""

    risk_high_threshold: float = Field(default=0.5, gt=0, lt=1)
    """Churn probability from which a client is in the ``high`` tier."""

    risk_medium_threshold: float = Field(default=0.25, gt=0, lt=1)
    """Churn probability from which a client is in the ``medium`` tier."""

    risk_capacity: int | None = Field(default=None, ge=1)
    """When set, the high tier is the month's ``risk_capacity`` most likely leavers,
    as many as the retention team can call, instead of those above the high threshold.
    Clients below the medium threshold stay out of it even when it is not full."""
    n_clusters: int | Literal["auto"] = Field(default=5)
    """Number of client segments, 2 to 20, or ``auto``: the number from 2 to 8 with the
    highest silhouette score on the month's clients."""
    holdout_share: float = Field(default=0.10, ge=0, le=0.5)
    """Share of each risk tier and segment of the at-risk list (high and medium tiers)
    held out as the month's control group, 0 to 0.5; 0 holds nobody out."""
    measures_file: Path | None = None
    """TOML file of the measures the job may recommend; unset: the file shipped with
    the package (``gymchurn/measures.toml``)."""

    cv_folds: int = Field(default=5, ge=2, le=20)
    """Folds of the stratified cross-validation that compares the candidates."""

    random_seed: int = Field(default=42, ge=0)
    """Seed of every random step: folds, tree ensembles, k-means."""

    chunk_rows: int = Field(default=100_000, ge=1)
    """Clients scored and assigned to segments in one task; with the Dask task runner
    each chunk is one unit of work on the cluster."""

    read_chunk_rows: int = Field(default=2_000_000, ge=1)
    """Questionnaires read from the database, and checked by Great Expectations, at a
    time. A larger month is read in chunks and validated in slices whose results are
    merged into one: the same outcome, with memory for one chunk's work at a time."""

    max_training_rows: int = Field(default=50_000, ge=100)
    """Labelled rows a model is trained on at most. Past it, a seeded sample of the
    labelled rows of earlier months: the valid ones with the lowest sample keys
    (see ``gymchurn.history``)."""

    max_invalid_share: float = Field(default=0.5, gt=0, le=1)
    """Share of rows breaking a row rule above which the whole batch is rejected."""

    drift_psi_threshold: float = Field(default=0.25, gt=0)
    """PSI of a drift feature above which ``--retrain auto`` trains a challenger."""
    drift_features: list[str] = [
        "contract_period",
        "age",
        "avg_additional_charges_total",
        "avg_class_frequency_total",
        "avg_class_frequency_current_month",
        "group_visits",
        "promo_friends",
        "partner",
    ]
    """Features whose drift triggers a retrain. ``lifetime`` and ``month_to_end_contract``
    are left out by default: they move by one every month by construction, so their
    distribution shifts with every intake of new clients."""
    min_realised_roc_auc: float = Field(default=0.8, gt=0, lt=1)
    """Realised ROC-AUC on last month's outcomes below which ``auto`` retrains."""
    max_calibration_gap: float = Field(default=0.05, gt=0, lt=1)
    """Gap between last month's share of leavers and its mean probability above which
    ``auto`` retrains."""
    confirm_labels: str = ""
    """Months (``YYYY-MM``, comma-separated) whose churn share may differ from the
    history's: their labels are trained on although the label-share rule flags them."""
    row_count_error_band: tuple[float, float] = (0.5, 2.0)
    """Ratios of a month's questionnaires to the previous month's outside which the run
    stops. The environment variable is a JSON list, and [0, 1000] accepts any change."""
    timezone: str = "Europe/Moscow"
    """Business timezone: decides which month a run on a given day scores."""
    db_retry_seconds: list[float] = Field(default=[2.0, 5.0, 10.0], max_length=20)
    """Seconds to wait before each further attempt when the database cannot be reached:
    when a command connects, and when a run records its failure. The environment
    variable is a JSON list; [] makes one attempt."""

    @field_validator("home", "model_dir", "output_dir")
    @classmethod
    def _check_folder(cls, value: Path) -> Path:
        # Checked here rather than when the first file is written, which may be
        # after a run's scoring, or at its end for the model folder.
        existing = value
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if existing.exists() and not existing.is_dir():
            raise ValueError(
                f"{existing} is a file, not a folder: point the setting at a folder "
                "(one that does not exist yet is created)"
            )
        return value

    @field_validator("db_retry_seconds")
    @classmethod
    def _check_retry_seconds(cls, value: list[float]) -> list[float]:
        if any(not 0 <= seconds <= 600 for seconds in value):
            raise ValueError(f"each wait must be 0 to 600 seconds, got {value}")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; expected an IANA name such as Europe/Moscow"
            ) from None
        return value

    @field_validator("n_clusters")
    @classmethod
    def _check_clusters(cls, value: int | str) -> int | str:
        if value != "auto" and not 2 <= value <= 20:
            raise ValueError(f"{value} segments: expected 2 to 20, or auto")
        return value

    @field_validator("drift_features")
    @classmethod
    def _check_drift_features(cls, value: list[str]) -> list[str]:
        from gymchurn.schema import FEATURES

        unknown = sorted(set(value) - set(FEATURES))
        if unknown:
            raise ValueError(
                f"unknown feature(s) {', '.join(unknown)}; "
                f"expected names from: {', '.join(FEATURES)}"
            )
        return value

    @field_validator("confirm_labels")
    @classmethod
    def _check_confirm_labels(cls, value: str) -> str:
        from gymchurn.schema import parse_month

        for text in filter(None, (part.strip() for part in value.split(","))):
            parse_month(text)
        return value

    @field_validator("row_count_error_band")
    @classmethod
    def _check_band(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 <= low < high:
            raise ValueError(
                f"invalid band {list(value)}: expected [low, high] with 0 <= low < high"
            )
        return value

    @property
    def confirmed_label_months(self) -> set:
        """The months of ``confirm_labels`` as dates."""
        from gymchurn.schema import parse_month

        return {parse_month(p.strip()) for p in self.confirm_labels.split(",") if p.strip()}

    @property
    def batch_limits(self):
        """The batch rules' limits, with the row-count band of these settings."""
        from gymchurn.batch_rules import BatchRuleLimits

        return BatchRuleLimits(row_count_error_band=self.row_count_error_band)

    @model_validator(mode="after")
    def _check_tiers(self) -> "Settings":
        if self.risk_medium_threshold >= self.risk_high_threshold:
            raise ValueError(
                "GYMCHURN_RISK_MEDIUM_THRESHOLD "
                f"({self.risk_medium_threshold}) must be below "
                f"GYMCHURN_RISK_HIGH_THRESHOLD ({self.risk_high_threshold})"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return Settings()
