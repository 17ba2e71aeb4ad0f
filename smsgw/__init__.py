"""smsgw: an SMS gateway daemon between business systems and carriers' SMS gateways."""

import os as _os

__version__ = "0.1.0"

# Installed, `protocol/` and `adapters/` are the subpackages smsgw.protocol and
# smsgw.adapters (setup.cfg package_dir). Run from a source checkout instead
# (`python -m smsgw` in the repo root puts the checkout first on sys.path), they
# sit beside this folder: let the subpackage search look there too.
_here = _os.path.dirname(_os.path.abspath(__file__))
_root = _os.path.dirname(_here)
if not _os.path.isdir(_os.path.join(_here, "protocol")) and _os.path.isfile(
    _os.path.join(_root, "protocol", "__init__.py")
):
    __path__.append(_root)
