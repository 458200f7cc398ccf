"""Stand-in for the pip bootstrap script that ansible-test downloads from the
internet: installs pip from Python's bundled wheel (ensurepip), then installs
the requested packages from the configured package index. ansible-test runs
it with pip install arguments (``pip==X`` and options)."""

import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q"] + args)
