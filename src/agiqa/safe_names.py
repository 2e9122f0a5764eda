"""The one pattern every user-chosen name matches (a leaf module: everything may import it)."""

from __future__ import annotations

import re

#: Dataset, model, protocol, describer, backbone and experiment names become paths and
#: wildcards: a safe pattern keeps them out of any shell and file-system trouble.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
