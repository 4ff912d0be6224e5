# Put first on PYTHONPATH by the python_client_without_numpy test: `import numpy` fails as on
# a machine without python3-numpy.
raise ImportError("numpy is hidden for this test run (clients/python/tests/numpy_hidden)")
