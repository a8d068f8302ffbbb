"""Join frames of one row a client on ``client_id``, without copying when they line up.

The job's frames of a month (answers, scores, segments, outcomes) list the
same clients in the same order, so their columns can be put side by side
instead of joined: at ten million clients a join copies every column and
builds a hash table of the ids, a gigabyte or more for a result that only
repeats the inputs.
"""

import numpy as np
import pandas as pd

from gymchurn.schema import CLIENT_ID


def lined_up(*frames: pd.DataFrame) -> bool:
    """Return True when every frame has the same ``client_id`` values in the same order."""
    first = frames[0][CLIENT_ID].to_numpy()
    return all(np.array_equal(frame[CLIENT_ID].to_numpy(), first) for frame in frames[1:])


def by_client(base: pd.DataFrame, *others: pd.DataFrame, how: str = "left") -> pd.DataFrame:
    """Return ``base`` with the columns of ``others`` joined on ``client_id``.

    Each frame has at most one row a client. When all of them list the same
    clients in the same order, the result contains the inputs' columns side by
    side, without copying them; otherwise it is a pandas merge of kind
    ``how``, which keeps the order of ``base`` for ``left`` and ``inner``.
    """
    if lined_up(base, *others):
        columns = {column: base[column].array for column in base.columns}
        for frame in others:
            columns |= {
                column: frame[column].array for column in frame.columns if column != CLIENT_ID
            }
        return pd.DataFrame(columns, copy=False)
    joined = base
    for frame in others:
        joined = joined.merge(frame, on=CLIENT_ID, how=how, validate="one_to_one")
    return joined


def column_for(frame: pd.DataFrame, column: str, clients: pd.DataFrame):
    """Return ``frame[column]`` for each client of ``clients``, in their order.

    The column's own array when both list the same clients in the same order;
    otherwise a lookup on ``client_id``, missing for a client not in ``frame``.
    """
    if lined_up(frame, clients):
        return frame[column].array
    return frame.set_index(CLIENT_ID)[column].reindex(clients[CLIENT_ID]).array


def concat_by_column(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate ``frames`` a column at a time, deleting each column from them once copied.

    ``pandas.concat`` keeps every chunk and the whole result in memory at once.
    Here each chunk's column is freed once the result's column is made, so at
    most the result and one of its columns' chunks are in memory. Each column
    of a chunk must be a block of its own, as in a frame built column by
    column, so that deleting it frees it. The result has a new range index.
    """
    columns = {}
    for name in list(frames[0].columns):
        columns[name] = pd.concat([frame[name] for frame in frames], ignore_index=True).array
        for frame in frames:
            del frame[name]
    return pd.DataFrame(columns, copy=False)
