"""``python -m pvf_core.finetune calibrate '{...}'``: the calibration process ``estimate()`` starts."""

import json
import sys

from .estimates import _calibrate_here

if len(sys.argv) == 3 and sys.argv[1] == "calibrate":
    print(json.dumps(_calibrate_here(json.loads(sys.argv[2]))))
else:
    sys.exit("usage: python -m pvf_core.finetune calibrate JSON")
