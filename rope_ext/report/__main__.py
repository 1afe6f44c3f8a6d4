"""``python -m rope_ext.report``: see ``rope_ext.report.cli``."""

from rope_ext.report.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
