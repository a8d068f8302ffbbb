"""The control holdout: a reproducible random share of the at-risk list left uncontacted.

Each month a share of the clients of the high and medium tiers is held out of
the at-risk list, stratified by risk tier and segment. Their churn is what the
list would have shown without a campaign, so comparing it with the churn of the
contacted clients measures what the contacts achieved (see
:mod:`gymchurn.campaigns`).

The choice depends only on (seed, month, client id) and the client's stratum,
never on row order: every client gets a uniform number from a hash of the
three, and in each stratum of n clients the share * n lowest numbers are held
out. share * n is rounded down or up at random, up with a probability equal
to its fraction (from a hash of the seed, month and stratum), so that every
client of the month has the same chance of being held out. Rounding every
stratum the same way would hold out, say, one client in five of a small
segment and one in ten of a large one, and the held-out group would lean
towards the small segments. A rerun of the month with the same tiers and
segments holds out the same clients.
"""

import datetime as dt
import logging
import math

import numpy as np
import pandas as pd

from gymchurn.joins import by_client
from gymchurn.schema import CLIENT_ID, format_month
from gymchurn.segments import CLUSTER_ID

logger = logging.getLogger(__name__)

HOLDOUT = "holdout"
# The tiers of the at-risk list: the high tier is the list marketers call, and the
# measures of gymchurn/measures.toml target the high and medium tiers.
HOLDOUT_TIERS = ("high", "medium")

_MASK_64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """Scramble 64-bit integers with the SplitMix64 finaliser (Steele, Lea and Flood, 2014)."""
    # uint64 arithmetic wraps around modulo 2**64, which the finaliser relies on.
    z = (values + np.uint64(0x9E3779B97F4A7C15)) & _MASK_64
    z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK_64
    z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK_64
    return z ^ (z >> np.uint64(31))


def uniform_draws(client_ids, month: dt.date, seed: int) -> np.ndarray:
    """Return a number in [0, 1) for each client, fixed by (seed, month, client id).

    The same three inputs give the same number on any machine and in any row
    order; another month or seed gives unrelated numbers.
    """
    month_index = np.uint64(month.year * 12 + month.month - 1)
    key = _splitmix64(_splitmix64(np.array([seed], dtype=np.uint64)) ^ month_index)
    ids = np.asarray(client_ids, dtype=np.int64).astype(np.uint64)
    bits = _splitmix64(ids ^ key)
    # The top 53 bits fill a double's mantissa exactly.
    return (bits >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def held_out_count(n_clients: int, share: float, draw: float) -> int:
    """Return share * n_clients, rounded up when ``draw`` (in [0, 1)) is below its fraction.

    Over draws the count averages exactly share * n_clients.
    """
    # Rounded first, so that 0.1 * 30 = 3.0000000000000004 counts as 3.
    exact = round(share * n_clients, 9)
    whole = math.floor(exact)
    return whole + int(draw < exact - whole)


# Stratum keys hashed for the rounding draws start above every client id.
_STRATUM_KEY_BASE = 1 << 62


def select_holdout(clients: pd.DataFrame, month: dt.date, share: float, seed: int) -> np.ndarray:
    """Choose the month's held-out clients.

    Args:
        clients: one row a scored client with ``client_id``, ``risk_tier`` and
            ``cluster_id``.
        share: share of each stratum held out, 0 to 1.

    Returns:
        A boolean array in the order of ``clients``: True for a held-out
        client. Only clients of :data:`HOLDOUT_TIERS` can be held out.
    """
    if not 0 <= share <= 1:
        raise ValueError(f"invalid holdout share {share}: expected a number from 0 to 1")
    held_out = np.zeros(len(clients), dtype=bool)
    if share == 0 or clients.empty:
        return held_out
    client_ids = clients[CLIENT_ID].to_numpy()
    draws = uniform_draws(client_ids, month, seed)
    clusters = clients[CLUSTER_ID].to_numpy()
    # Positions rather than copies of each stratum's rows: a tier can hold millions.
    for tier_index, tier in enumerate(HOLDOUT_TIERS):
        in_tier = np.flatnonzero((clients["risk_tier"] == tier).to_numpy())
        tier_clusters = clusters[in_tier]
        for cluster in np.unique(tier_clusters):
            at = in_tier[tier_clusters == cluster]
            key = _STRATUM_KEY_BASE + tier_index * (1 << 32) + int(cluster)
            (rounding,) = uniform_draws([key], month, seed)
            # Ties of the draws are all but impossible; the client id breaks them.
            order = np.lexsort((client_ids[at], draws[at]))
            held_out[at[order[: held_out_count(len(at), share, rounding)]]] = True
    return held_out


def mark_holdout(
    scores: pd.DataFrame, assignments: pd.DataFrame, month: dt.date, share: float, seed: int
) -> pd.DataFrame:
    """Add the ``holdout`` flag to the month's scores, and log how many were held out.

    Args:
        scores: one row a client with ``client_id`` and ``risk_tier``.
        assignments: ``client_id`` and ``cluster_id`` of every scored client.

    Returns:
        A copy of ``scores`` with a boolean ``holdout`` column.
    """
    clients = by_client(scores[[CLIENT_ID, "risk_tier"]], assignments[[CLIENT_ID, CLUSTER_ID]])
    flags = select_holdout(clients, month, share, seed)
    marked = scores.assign(**{HOLDOUT: flags})
    listed = clients["risk_tier"].isin(HOLDOUT_TIERS).to_numpy()
    by_tier = ", ".join(
        f"{int(flags[(clients['risk_tier'] == tier).to_numpy()].sum())} of "
        f"{int((clients['risk_tier'] == tier).sum())} {tier}"
        for tier in HOLDOUT_TIERS
    )
    logger.info(
        "holdout: %d of %d listed clients of %s held out as the control group "
        "(share %g of each tier and segment): %s",
        int(flags.sum()),
        int(listed.sum()),
        format_month(month),
        share,
        by_tier,
    )
    return marked
