import sys

from mlpipe_jupyter.cli.main import console_main

sys.exit(console_main())
