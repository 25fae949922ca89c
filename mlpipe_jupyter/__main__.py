import sys

from mlpipe_jupyter.cli.main import main

sys.exit(main())
