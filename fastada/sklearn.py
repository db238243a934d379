"""scikit-learn's face of fastada: :class:`AdagradClassifier`, logistic regression learned by
per-feature Adagrad on hashed features (the estimator that ``SGDClassifier(loss="log_loss",
learning_rate="adagrad")`` would be, if scikit-learn's SGD had Adagrad).

It takes what scikit-learn users hold: pandas and polars DataFrames and Arrow tables (columns
take roles as on the command line: strings and id-like integers categorical, quantities
numeric), NumPy arrays (every column numeric) and SciPy CSR matrices (each column index a
feature whose value is the entry). ``fit`` is :func:`fastada.train` on that data; ``partial_fit``
goes on learning in the same model, one batch a call, at the rate raced on the first batch.

Pickling an estimator (for scikit-learn's own machinery: clone, joblib, GridSearchCV) keeps its
model in memory; fastada's model files, ``estimator.model_.save(path)``, are never pickles.
Needs scikit-learn >= 1.6 (``pip install fastada[sklearn]``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import assert_all_finite
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d, validate_data

from . import api
from .reader import _as_table

# Column names the estimator adds to the data it hands to fastada (not a user's column names).
_LABEL = "__fastada_label__"
_WEIGHT = "__fastada_weight__"
_INDICES, _VALUES = "features", "values"  # a CSR matrix as a weighted list column


class AdagradClassifier(ClassifierMixin, BaseEstimator):
    """Binary logistic regression by Hogwild per-feature Adagrad over 2**bits hashed slots.

    Parameters mirror :func:`fastada.train`: ``lr`` ("auto": raced on the first rows), ``l1``,
    ``l2``, ``epochs`` (passes over the data in ``fit``), ``bits``, ``learner`` ("adagrad"; "ftrl",
    whose ``lr`` is alpha and ``beta`` beta; "fm" or "ffm", with ``factors`` latent factors in
    2**``factor_bits`` slots; only "adagrad" has ``partial_fit``), ``shuffle``, ``negative_rate``,
    ``numeric_mode`` and, for frames, ``categorical``, ``numeric`` and ``crosses`` to name column
    roles, ``new_values`` (None: on for "adagrad" and "ftrl"; categorical columns learn what an
    unseen value is worth). ``n_jobs``: learning threads (None or 1: one, sequential and repeatable; -1: every core,
    Hogwild). ``random_state``: the seed of shuffling and downsampling.

    Attributes after fitting: ``model_`` (the :class:`fastada.Model`), ``classes_``,
    ``n_features_in_`` and, for frames, ``feature_names_in_``.
    """

    def __init__(self, *, lr="auto", l1=0.0, l2=0.0, epochs=1, bits=20, learner="adagrad", beta=1.0,
                 factors=4, factor_bits=18, shuffle=False, negative_rate=1.0, numeric_mode="both",
                 categorical=None, numeric=None, crosses=(), new_values=None, n_jobs=None, random_state=None):
        self.lr = lr
        self.l1 = l1
        self.l2 = l2
        self.epochs = epochs
        self.bits = bits
        self.learner = learner
        self.beta = beta
        self.factors = factors
        self.factor_bits = factor_bits
        self.shuffle = shuffle
        self.negative_rate = negative_rate
        self.numeric_mode = numeric_mode
        self.new_values = new_values
        self.categorical = categorical
        self.numeric = numeric
        self.crosses = crosses
        self.n_jobs = n_jobs
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        tags.input_tags.sparse = True
        tags.input_tags.allow_nan = True  # a missing number is a feature of its own
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        return tags

    # -- learning ------------------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Learn a new model from ``X`` and ``y`` (two classes), ``epochs`` passes."""
        table, settings = self._table(X, reset=True)
        y = self._labels(y, classes=None)
        self.model_ = api.train(self._with_targets(table, y, sample_weight), init=None,
                                **self._train_settings(settings, epochs=self.epochs))
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Learn one more batch in the same model (one pass over it); ``classes`` (the two
        labels) on the first call. The learning rate raced on the first batch is kept."""
        if self.learner != "adagrad":
            raise ValueError(f"partial_fit needs learner='adagrad' (an {self.learner} model is continued from "
                             f"its checkpoints, not from a fitted model)")
        first = not hasattr(self, "model_")
        if first and classes is None:
            raise ValueError("classes must be given on the first call to partial_fit")
        table, settings = self._table(X, reset=first)
        y = self._labels(y, classes=classes if first else self.classes_)
        init = None if first else self.model_
        if init is not None:
            settings = {k: v for k, v in settings.items() if k not in ("categorical", "numeric", "list_weights")}
        self.model_ = api.train(self._with_targets(table, y, sample_weight), init=init,
                                **self._train_settings(settings, epochs=1, continued=init is not None))
        return self

    # -- scoring -------------------------------------------------------------------------------

    def decision_function(self, X):
        """Log-odds of the second class for each row."""
        check_is_fitted(self)
        table, _ = self._table(X, reset=False)
        return self.model_.predict(table, threads=self._threads(), margin=True)

    def predict_proba(self, X):
        """(rows, 2): the probability of each class, in the order of ``classes_``."""
        check_is_fitted(self)
        table, _ = self._table(X, reset=False)
        p = self.model_.predict(table, threads=self._threads())
        return np.column_stack([1.0 - p, p])

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """The more probable class of each row."""
        check_is_fitted(self)
        return self.classes_[(self.decision_function(X) > 0).astype(np.intp)]

    # -- data ----------------------------------------------------------------------------------

    def _table(self, X, reset: bool) -> tuple[pa.Table, dict]:
        """``X`` as an Arrow table of its feature columns, and the roles fastada must give them."""
        if _is_frame(X):
            validate_data(self, X, reset=reset, skip_check_array=True)  # names and count, as scikit-learn checks them
            table = _as_table(X, spool=False)  # (a frame is in memory already)
            if not isinstance(table, pa.Table):
                raise TypeError(f"{type(X).__name__} cannot be read as a table")
            return table, {"categorical": self.categorical, "numeric": self.numeric, "crosses": self.crosses}
        if self.categorical or self.numeric or self.crosses:
            raise ValueError("categorical, numeric and crosses name columns of a DataFrame or table; "
                             "an array's columns are all numeric")
        X = validate_data(self, X, reset=reset, accept_sparse="csr", dtype=(np.float64, np.float32),
                          ensure_all_finite="allow-nan")
        if reset:  # scored later in the layout it was fitted in, whichever the rows come in
            self._sparse_input = hasattr(X, "tocsr")
        if self._sparse_input != hasattr(X, "tocsr"):
            X = sp.csr_matrix(X) if self._sparse_input else X.toarray()
        if self._sparse_input:  # each column index a feature whose value is the entry
            X = X.tocsr()
            X.sort_indices()
            offsets = pa.array(X.indptr.astype(np.int64))
            table = pa.table({_INDICES: pa.LargeListArray.from_arrays(offsets, pa.array(X.indices.astype(np.int64))),
                              _VALUES: pa.LargeListArray.from_arrays(offsets, pa.array(X.data.astype(np.float32)))})
            return table, {"categorical": [_INDICES], "numeric": [], "list_weights": {_INDICES: _VALUES}}
        names = [f"x{j}" for j in range(X.shape[1])]
        table = pa.table({name: pa.array(X[:, j]) for j, name in enumerate(names)})
        return table, {"categorical": [], "numeric": names}

    def _labels(self, y, classes) -> np.ndarray:
        """``y`` as 0/1 for ``classes_[0]``/``classes_[1]``, setting ``classes_`` when given."""
        y = column_or_1d(y, warn=True)
        if y.dtype.kind in "fc":
            assert_all_finite(y, input_name="y")
        if classes is not None:
            classes = np.unique(np.asarray(classes))
            if len(classes) != 2:
                raise ValueError(f"Only binary classification is supported; classes has {len(classes)} values")
            unknown = np.setdiff1d(np.unique(y), classes)
            if unknown.size:
                raise ValueError(f"y holds labels not in classes: {unknown[:5].tolist()}")
        else:
            kind = type_of_target(y, input_name="y", raise_unknown=True)
            if kind != "binary":
                raise ValueError(f"Only binary classification is supported. The type of the target is {kind}.")
            classes = np.unique(y)
            if len(classes) < 2:
                raise ValueError(f"y holds one class only ({classes[0]!r}); a classifier needs two")
        self.classes_ = classes
        return (y == classes[1]).astype(np.int8)

    def _with_targets(self, table: pa.Table, y: np.ndarray, sample_weight) -> pa.Table:
        if table.num_rows != len(y):
            raise ValueError(f"X has {table.num_rows} rows but y has {len(y)}")
        # always a weight column (ones without sample_weight): a model's columns are fixed by its
        # first batch, and a later batch of partial_fit may come with weights
        weights = _check_sample_weight(sample_weight, np.empty((len(y), 0)), dtype=np.float64)
        return table.append_column(_LABEL, pa.array(y)).append_column(_WEIGHT, pa.array(weights))

    def _threads(self):
        return "auto" if self.n_jobs == -1 else max(1, int(self.n_jobs or 1))

    def _train_settings(self, roles: dict, epochs: int, continued: bool = False) -> dict:
        settings = dict(label=_LABEL, lr=self.lr, l1=self.l1, l2=self.l2, epochs=epochs,
                        learner=self.learner, beta=self.beta, factors=self.factors, factor_bits=self.factor_bits,
                        shuffle=self.shuffle, negative_rate=self.negative_rate,
                        threads=self._threads(), seed=0 if self.random_state is None else int(self.random_state))
        if not continued:
            settings.update(bits=self.bits, numeric_mode=self.numeric_mode, new_values=self.new_values,
                            weight=_WEIGHT, **roles)
        return settings


def _is_frame(X) -> bool:
    """A DataFrame or table (named columns of their own types), not an array or matrix."""
    if isinstance(X, (pa.Table, pa.RecordBatch)):
        return True
    module = type(X).__module__.split(".")[0]
    return (module in ("pandas", "polars") and type(X).__name__ == "DataFrame") or (
        hasattr(X, "__arrow_c_stream__") and not isinstance(X, np.ndarray))
