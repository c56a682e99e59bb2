#!/bin/bash
# The Python libraries without a rosdep key (tools/requirements-distro.txt) into the system
# Python of the image, after `rosdep install` has put in everything with a key. numpy is held
# at the apt version: the distro's message packages and cv_bridge are compiled against it, so
# pip must not replace it (a numpy 2 over an apt numpy 1.x breaks their import).
set -euo pipefail
req="$1"
python3 -c 'import numpy; print(f"numpy=={numpy.__version__}")' > /tmp/constraints.txt
pip3 install --break-system-packages --no-cache-dir -c /tmp/constraints.txt -r "$req"
