import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(autouse=True)
def _seed_and_cpu():
    import decaf
    decaf.set_mode_cpu()
    decaf.set_random_seed(1701)
    np.random.seed(0)
    yield


@pytest.fixture
def golden_dir():
    from decaf.testing.golden import require_golden
    return require_golden()
