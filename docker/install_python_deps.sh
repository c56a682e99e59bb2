#!/bin/bash
# pip packages of tools/requirements-py.txt that the distro does not ship, into the system
# Python of the image. numpy, PyYAML, OpenCV and pytest come from apt (rosdep keys in
# package.xml): the distro's message packages and cv_bridge are compiled against the apt
# numpy, so pip must not replace it (a numpy 2 over an apt numpy 1.x breaks their import).
set -euo pipefail
req="$1"
python3 -c 'import numpy; print(f"numpy=={numpy.__version__}")' > /tmp/constraints.txt
grep -vE '^(numpy|pyyaml|opencv-python-headless|pytest|hypothesis)==' "$req" > /tmp/requirements.txt
pip3 install --break-system-packages --no-cache-dir -c /tmp/constraints.txt -r /tmp/requirements.txt
