"""`op-sentinel` with the client's request budget lifted: `python -m bench.cli_unlimited run --once ...`.

The command's own 590-requests-per-minute limiter would make a 2M-event run (2,000+ pages) a rate
benchmark of about 3.5 minutes. This launcher changes one thing before the command runs: the default
limits of `RateLimiter` (which `Connector.start` uses) become one billion requests per second. Everything
else is the console script: `opsentinel.cli.main`, the same process start-up and tuning.
"""

import sys

from opsentinel.source import ratelimit


def main() -> int:
    ratelimit.RateLimiter.__init__.__defaults__ = ((ratelimit.RateLimit(1_000_000_000, 1.0),),)
    from opsentinel.cli import main as command

    return command()


if __name__ == "__main__":  # not when a spawned child process imports this as its main module
    sys.exit(main())
