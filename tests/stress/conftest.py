"""Fixtures for the stress tests: the end-to-end fixtures (tests/e2e/conftest.py: a real
zmixd on stories260K, expert files, the Python client), reused rather than copied."""

import importlib.util
import os
import sys

_E2E = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e", "conftest.py")
_spec = importlib.util.spec_from_file_location("zmix_e2e_fixtures", _E2E)
e2e = importlib.util.module_from_spec(_spec)
sys.modules["zmix_e2e_fixtures"] = e2e
_spec.loader.exec_module(e2e)

experts = e2e.experts  # the session fixture: pytest collects it from here too
