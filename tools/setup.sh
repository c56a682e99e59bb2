#!/usr/bin/env bash
# Set up the build/run environment for cellos; idempotent, fast when already done.
#   - ROS 2 distro sourced (ROS_DISTRO set, /opt/ros/$ROS_DISTRO present): after `rosdep install`,
#     a venv that sees the distro's Python packages (--system-site-packages), plus only what has no
#     rosdep key (tools/requirements-distro.txt), with numpy held at the distro's version: the
#     distro's message modules and cv_bridge are built against it, and a pip numpy 2 breaks them.
#     The one pip-type rosdep key (python3-onnxruntime-pip) goes into the venv too when rosdep was
#     told to skip it (`--skip-keys python3-onnxruntime-pip`: no sudo pip into the system Python).
#   - No ROS install: ROS 2 Kilted from the ros-* wheels into .venv, plus the CMake fix-up.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
venv="$root/.venv"
python="${PYTHON:-python3}"

if [ -n "${ROS_DISTRO:-}" ] && [ -d "/opt/ros/${ROS_DISTRO}" ]; then
  mode="distro-${ROS_DISTRO}"
  reqs=("$here/requirements-distro.txt" "$here/requirements-py.txt")
else
  mode="wheels"
  reqs=("$here/requirements.txt" "$here/requirements-py.txt")
fi

# libfaketime steps one process's clock in the clock-step and hosts tests (Debian package faketime,
# the version pinned here where the archive has it). Installed where this user may (root with
# apt-get); elsewhere those tests skip and say why.
faketime_lib=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
if [ ! -e "$faketime_lib" ] && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
  echo "[setup] installing libfaketime (apt-get install faketime)"
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get install -y -q faketime=0.9.10-2.1 > /dev/null 2>&1 \
    || timeout 300 apt-get install -y -q faketime > /dev/null 2>&1 \
    || echo "[setup] apt-get install faketime failed: the clock-step and hosts tests will skip"
fi

stamp="$venv/.cellos-setup"
want="$mode $(cat "${reqs[@]}" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi


# pip's own output, one line per 10 packages: a first set-up takes about a minute
pip_progress() {
  awk '/^(Collecting|Requirement already satisfied)/ { if (++n % 10 == 0) { printf "[setup]   %d packages resolved\n", n; fflush() } }
       /^Installing collected packages/ { printf "[setup]   installing %d packages\n", n; fflush() }
       /^Successfully installed/ { print "[setup]   installed"; fflush() }'
}

echo "[setup] preparing $venv ($mode); pinned in ${reqs[*]#$root/}"
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] 1/3 creating the virtual environment"
  if [ "$mode" = wheels ]; then
    "$python" -m venv "$venv"
  else
    "$python" -m venv --system-site-packages "$venv"
  fi
fi
touch "$venv/COLCON_IGNORE"
if [ "$mode" = wheels ]; then
  args=()
  for r in "${reqs[@]}"; do args+=(-r "$r"); done
  echo "[setup] 2/3 installing ROS 2 Kilted (ros-* wheels) and the Python libraries into .venv"
  "$venv/bin/python" -m pip install --disable-pip-version-check "${args[@]}" \
    2> >(grep -v "is ignored: it is neither" >&2) | pip_progress
else
  if ! "$venv/bin/python" -c 'import numpy; print(f"numpy=={numpy.__version__}")' > "$venv/constraints.txt"; then
    echo "[setup] the distro's numpy is missing: run 'rosdep install --from-paths msg ros2_ws/src -y -i' first" >&2
    exit 1
  fi
  pip_only=(-r "$here/requirements-distro.txt")
  # rosdep pip keys: onnxruntime (python3-onnxruntime-pip) and mcap-ros2-support (with mcap), when
  # rosdep did not install them
  if ! "$venv/bin/python" -c 'import onnxruntime' 2>/dev/null; then
    pip_only+=("$(grep -E '^onnxruntime==' "$here/requirements-py.txt")")
  fi
  if ! "$venv/bin/python" -c 'import mcap_ros2' 2>/dev/null; then
    pip_only+=("$(grep -E '^mcap-ros2-support==' "$here/requirements-py.txt")")
  fi
  echo "[setup] 2/3 installing the Python libraries without a rosdep key into .venv (the distro provides ROS 2)"
  "$venv/bin/python" -m pip install --disable-pip-version-check -c "$venv/constraints.txt" "${pip_only[@]}" | pip_progress
fi

if [ "$mode" = wheels ]; then
  echo "[setup] 3/3 pointing the wheels' CMake files at this Python"
  # The ros-* wheels' CMake exports name the wheel builder's Python headers; point them at ours.
  "$venv/bin/python" - "$venv" <<'PY'
import pathlib, re, sys, sysconfig
import numpy
venv = pathlib.Path(sys.argv[1])
inc = sysconfig.get_paths()["include"]
np_inc = numpy.get_include()
pat_np = re.compile(r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/_core/include")
pat_py = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")
n = 0
for f in (venv / "share").glob("**/*.cmake"):
    text = f.read_text()
    if "/opt/python/" not in text:
        continue
    f.write_text(pat_py.sub(inc, pat_np.sub(np_inc, text)))
    n += 1
print(f"[setup] CMake fix-up applied to {n} files")
PY
fi
# an empty local_setup.sh marks the venv as an ament prefix for colcon
touch "$venv/local_setup.sh"
echo "$want" > "$stamp"
echo "[setup] done"
