import sys

from mlpipe_jupyter.cli.entry import console_main

sys.exit(console_main())
