"""``python -m rope_ext.dashboard``: see ``rope_ext.dashboard.cli``."""

from rope_ext.dashboard.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
