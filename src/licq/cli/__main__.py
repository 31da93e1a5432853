import os
import sys

from licq.cli import main

os.environ.setdefault("PYTHONUNBUFFERED", "1")
sys.exit(main())
