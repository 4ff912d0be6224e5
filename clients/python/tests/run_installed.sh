#!/bin/sh
# Installs the Python client as a user would, offline, and runs its tests from the installed
# copy:  run_installed.sh SOURCE_DIR WORK_DIR [--without-numpy]
# A venv that sees Debian's packages (python3-msgpack, python3-pytest, and python3-setuptools
# + python3-wheel as the build backend), pip without an index and without build isolation.
set -eu
src=$1
work=$2
mode=${3:-}
py=/usr/bin/python3
rm -rf "$work"
mkdir -p "$work"
# A copy: pip builds in the source folder, and two runs must not share one.
cp -r "$src/clients/python" "$work/pkg"
rm -rf "$work/pkg/build" "$work/pkg"/*.egg-info
$py -m venv --system-site-packages --without-pip "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --no-index --no-build-isolation \
  --disable-pip-version-check "$work/pkg"
if [ "$mode" = --without-numpy ]; then
  export PYTHONPATH="$src/clients/python/tests/numpy_hidden"
  export ZMIX_EXPECT_NUMPY=0
elif "$work/venv/bin/python" -c 'import numpy' 2>/dev/null; then
  export ZMIX_EXPECT_NUMPY=1
else
  export ZMIX_EXPECT_NUMPY=0
fi
rm -rf "$work/pkg/zmix_client" # the tests import the installed copy, not this one
cd "$work"
exec "$work/venv/bin/python" -m pytest -q -p no:cacheprovider "$work/pkg/tests"
