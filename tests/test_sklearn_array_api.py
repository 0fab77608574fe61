"""A real Array API client: scikit-learn estimators with ``array_api_dispatch=True`` on tracejit
arrays give what they give on NumPy arrays.

Runs in a child process: scikit-learn's dispatch needs ``SCIPY_ARRAY_API=1`` set before SciPy is
first imported, and other tests (through jax) import SciPy earlier in this one.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("sklearn", reason="scikit-learn is not installed (the 'array-api' extra)")
pytest.importorskip("array_api_compat", reason="array-api-compat is not installed (the 'array-api' extra)")

CLIENT = textwrap.dedent("""
    import numpy as np
    import sklearn
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    import tracejit as tj

    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 5))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)
    with sklearn.config_context(array_api_dispatch=True):
        lda = LinearDiscriminantAnalysis().fit(tj.asarray(X), tj.asarray(y))
        pred = lda.predict(tj.asarray(X))
        proba = lda.predict_proba(tj.asarray(X))
        pca = PCA(n_components=3, svd_solver="full").fit(tj.asarray(X))
        projected = pca.transform(tj.asarray(X))
    for out in (pred, proba, lda.coef_, pca.components_, projected):
        assert isinstance(out, tj.Tensor), type(out)
    ref = LinearDiscriminantAnalysis().fit(X, y)
    np.testing.assert_array_equal(np.asarray(pred), ref.predict(X))
    np.testing.assert_allclose(np.asarray(proba), ref.predict_proba(X), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(lda.coef_), ref.coef_, rtol=1e-9, atol=1e-12)
    ref_pca = PCA(n_components=3, svd_solver="full").fit(X)
    np.testing.assert_allclose(np.asarray(pca.explained_variance_), ref_pca.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(pca.components_), ref_pca.components_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(projected), ref_pca.transform(X), rtol=1e-9, atol=1e-12)
    print("client ok")
""")


def test_lda_and_pca_on_tracejit_arrays_match_numpy_inputs():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, SCIPY_ARRAY_API="1",
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-c", CLIENT], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "client ok" in run.stdout
