"""Flex template entry point: `gld curate` with the template's parameters.

The launcher runs this file (FLEX_TEMPLATE_PYTHON_PY_FILE) with the parameters as
`--name=value`; Beam options (runner, project, region, sdk_container_image, ...) pass through.
"""

import sys

from pipeline.cli.main import curate_main, from_template_args

if __name__ == "__main__":
    sys.exit(curate_main(from_template_args(sys.argv[1:])))
