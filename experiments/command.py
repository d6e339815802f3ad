"""Running an absl command so a user mistake ends in one line on stderr and exit code 2.

Flag errors, and ValueError / FileNotFoundError raised by the command, are
printed as `error: ...`; a `--debug` flag, if the command defines one, shows
the traceback instead.
"""

import sys

from absl import app, flags, logging

from emoflow import host_memory


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with a flag error reported in one line (exit 2)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def run(main) -> None:
  """app.run(main) with one-line errors; absl's INFO logs (orbax, TFDS) off unless --verbosity."""
  def reporting(argv) -> None:
    if len(argv) > 1:
      print(f"error: unexpected arguments: {' '.join(argv[1:])}", file=sys.stderr)
      sys.exit(2)
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    try:
      main()
    except (ValueError, FileNotFoundError) as e:
      if "debug" in flags.FLAGS and flags.FLAGS.debug:
        raise
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  host_memory.keep_freed_memory()
  app.run(reporting, flags_parser=parse_flags)
