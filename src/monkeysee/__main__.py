import sys

from monkeysee.cli import main

sys.exit(main())
