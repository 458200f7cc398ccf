"""Run the GitLab test server with the sample data until interrupted:
``python -m tests.gitlabsim [--tls] [--token TOKEN]``."""

import argparse
import signal
import sys
import time

from tests.gitlabsim.server import sample_server


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a generated CA")
    parser.add_argument("--token", default="glpat-test-token-0123456789")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sim = sample_server(token=args.token, tls=args.tls).start()
    print("url=%s" % sim.url, flush=True)
    if sim.ca_path:
        print("ca_path=%s" % sim.ca_path, flush=True)
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
